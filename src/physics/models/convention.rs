//! What a detector convention fixes (spec-a-core "Geometry & Conventions"):
//! the lab-frame beam direction, detector axes, two-theta axis, polarization
//! vector and spindle axis, before any user override. The beam centre and
//! pivot rules of each convention are in [`super::detector`].

use crate::physics::config::Convention;

/// The unit vectors a convention starts from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConventionAxes {
    /// Beam propagation direction, from the source through the sample, C's beam_vector.
    pub beam: [f64; 3],
    /// Fast detector axis, C's fdet_vector.
    pub fdet: [f64; 3],
    /// Slow detector axis, C's sdet_vector.
    pub sdet: [f64; 3],
    /// Detector normal, C's odet_vector.
    pub odet: [f64; 3],
    /// Axis of the two-theta swing, C's twotheta_axis.
    pub twotheta_axis: [f64; 3],
    /// Incident E-vector, C's polar_vector.
    pub polar: [f64; 3],
    /// Phi rotation axis, C's spindle_vector.
    pub spindle: [f64; 3],
}

/// The axes of `conv`. CUSTOM starts from nanoBragg.c's initial values (its
/// MOSFLM-like vectors with two-theta about +Y), which the user's vectors
/// then replace.
pub fn axes(conv: Convention) -> ConventionAxes {
    let x = [1.0, 0.0, 0.0];
    let y = [0.0, 1.0, 0.0];
    let z = [0.0, 0.0, 1.0];
    match conv {
        Convention::Adxv => ConventionAxes {
            beam: z,
            fdet: x,
            sdet: [0.0, -1.0, 0.0],
            odet: z,
            twotheta_axis: [-1.0, 0.0, 0.0],
            polar: x,
            spindle: x,
        },
        Convention::Mosflm | Convention::Denzo => ConventionAxes {
            beam: x,
            fdet: z,
            sdet: [0.0, -1.0, 0.0],
            odet: x,
            twotheta_axis: [0.0, 0.0, -1.0],
            polar: z,
            spindle: z,
        },
        Convention::Xds => ConventionAxes {
            beam: z,
            fdet: x,
            sdet: y,
            odet: z,
            twotheta_axis: x,
            polar: x,
            spindle: x,
        },
        Convention::Dials => ConventionAxes {
            beam: z,
            fdet: x,
            sdet: y,
            odet: z,
            twotheta_axis: y,
            polar: y,
            spindle: y,
        },
        Convention::Custom => ConventionAxes {
            beam: x,
            fdet: z,
            sdet: [0.0, -1.0, 0.0],
            odet: x,
            twotheta_axis: y,
            polar: z,
            spindle: z,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physics::scalar::{cross_product, dot_product, Vec3};

    /// Every convention's detector frame is orthonormal, its
    /// normal points along the beam (the detector faces the sample), and the
    /// beam is perpendicular to the spindle (spec-a-core conventions table).
    #[test]
    fn frames_are_orthonormal_and_face_the_beam() {
        use Convention::*;
        for conv in [Adxv, Mosflm, Denzo, Xds, Dials, Custom] {
            let a = axes(conv);
            let (f, s, o) = (Vec3::cst(a.fdet), Vec3::cst(a.sdet), Vec3::cst(a.odet));
            let fxs = cross_product::<f64>(&f, &s);
            // ADXV's frame is left-handed (its slow axis points down): o = -(f x s).
            let sign = if conv == Adxv { -1.0 } else { 1.0 };
            assert_eq!(fxs.0.map(|v| v * sign), a.odet, "{conv:?}");
            assert_eq!(dot_product::<f64>(&o, &Vec3::cst(a.beam)), 1.0, "{conv:?}");
            assert_eq!(
                dot_product::<f64>(&Vec3::cst(a.spindle), &Vec3::cst(a.beam)),
                0.0
            );
        }
    }

    #[test]
    fn mosflm_and_xds_axes_are_the_specs() {
        let m = axes(Convention::Mosflm);
        assert_eq!(
            (m.beam, m.fdet, m.sdet),
            ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0])
        );
        let x = axes(Convention::Xds);
        assert_eq!(
            (x.beam, x.fdet, x.sdet),
            ([0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        );
        assert_eq!(x.spindle, [1.0, 0.0, 0.0]);
    }
}
