//! The goniometer model: the spindle (rotation) axis, the convention's unless
//! the user gives one. The angles it turns through are the [`super::scan`].

use super::convention::ConventionAxes;
use crate::physics::config::GoniometerConfig;
use crate::physics::error::{unit_vec, SetupError};

/// A resolved goniometer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Goniometer {
    /// Unit rotation axis (lab frame).
    pub spindle: [f64; 3],
}

/// The spindle axis of `gon`, or the convention's, as a unit vector.
pub fn resolve(gon: &GoniometerConfig, axes: &ConventionAxes) -> Result<Goniometer, SetupError> {
    let spindle = unit_vec(
        "goniometer.spindle_axis",
        gon.spindle_axis.unwrap_or(axes.spindle),
    )?;
    Ok(Goniometer { spindle })
}

#[cfg(test)]
mod tests {
    use super::super::convention::axes;
    use super::*;
    use crate::physics::config::Convention;

    #[test]
    fn convention_axis_or_the_users_normalised() {
        let gon = GoniometerConfig::default();
        let g = resolve(&gon, &axes(Convention::Xds)).unwrap();
        assert_eq!(g.spindle, [1.0, 0.0, 0.0]);
        let g = resolve(&gon, &axes(Convention::Dials)).unwrap();
        assert_eq!(g.spindle, [0.0, 1.0, 0.0]);
        let gon = GoniometerConfig {
            spindle_axis: Some([0.0, -3.0, 4.0]),
            ..Default::default()
        };
        let g = resolve(&gon, &axes(Convention::Mosflm)).unwrap();
        assert_eq!(g.spindle, [0.0, -0.6, 0.8]);
        let gon = GoniometerConfig {
            spindle_axis: Some([0.0, 0.0, 0.0]),
            ..Default::default()
        };
        let e = resolve(&gon, &axes(Convention::Mosflm)).unwrap_err();
        assert!(e.to_string().starts_with("goniometer.spindle_axis:"), "{e}");
    }
}
