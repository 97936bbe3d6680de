//! How the pixel loop samples each pixel: subpixels (oversampling) and
//! their per-subpixel rules, and layers through the sensor thickness
//! (spec-a-core "Sampling & Accumulation", "Auto-selection rules"). Also
//! nanoBragg's generic (range, step, count) rule that divergence and
//! dispersion sampling use.

use crate::physics::config::DetectorConfig;
use crate::physics::error::{finite, invalid, positive, SetupError};

/// Layers through the sensor: its thickness and attenuation are resolved
/// with them, as C's rule changes the thickness with the layer count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thickness {
    /// Sensor thickness (m); 0 = none.
    pub thick: f64,
    /// Attenuation coefficient (1/m).
    pub mu: f64,
    /// Layers through the sensor, C's detector_thicksteps.
    pub steps: usize,
    /// Layer thickness (m).
    pub step: f64,
}

/// A resolved sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Subpixels per pixel side.
    pub oversample: usize,
    /// The oversampling is C's recommendation (no `detector.oversample`).
    pub oversample_auto: bool,
    /// Sensor absorption per subpixel rather than per pixel (C's oversample_thick).
    pub oversample_thick: bool,
    /// Polarization factor per subpixel rather than per pixel (C's oversample_polar).
    pub oversample_polar: bool,
    /// Solid angle per subpixel rather than per pixel (C's oversample_omega).
    pub oversample_omega: bool,
    /// The layers through the sensor.
    pub thickness: Thickness,
}

/// nanoBragg's rule for a (range, step, count) triple; -1 means "not given".
/// Returns (count, range, step). `nominal` is the range used when only a count
/// is given. Each sampled quantity in C has this shape; thickness and phi
/// differ in small ways and have their own rules.
pub fn auto_steps(mut range: f64, mut step: f64, mut count: i64, nominal: f64) -> (i64, f64, f64) {
    if count <= 0 {
        if range < 0.0 {
            if step <= 0.0 {
                count = 1;
                range = 0.0;
                step = 0.0;
            } else {
                range = step;
                count = 2;
            }
        } else if step <= 0.0 {
            step = range;
            count = 2;
        } else {
            count = (range / step).ceil() as i64;
        }
    } else if range < 0.0 {
        if step <= 0.0 {
            range = nominal;
            step = range / count as f64;
        } else {
            range = step;
            count = 2;
        }
    } else if step <= 0.0 {
        if count <= 1 {
            count = 2;
        }
        step = range / (count - 1) as f64;
    }
    // sanity checks (C zeroes any degenerate sampling)
    if range <= 0.0 || step <= 0.0 || count <= 0 {
        (1, 0.0, 0.0)
    } else {
        (count, range, step)
    }
}

/// Sensor thickness, attenuation and layers (`detector.thickness_um`,
/// `attenuation_depth_um`, `thicksteps`) by C's rule: a thickness alone is
/// sampled in 2 layers; a thickness without an attenuation depth gets
/// mu = 1/thickness (noted).
pub fn thickness(det: &DetectorConfig, notes: &mut Vec<String>) -> Result<Thickness, SetupError> {
    let mut thick = finite("detector.thickness_um", det.thickness_um)? * 1e-6;
    let mut mu = -1.0;
    if let Some(depth) = det.attenuation_depth_um {
        if depth == 0.0 || depth.is_infinite() {
            thick = 0.0;
            mu = 0.0;
        } else {
            mu = 1.0 / (positive("detector.attenuation_depth_um", depth)? * 1e-6);
        }
    }
    let mut thicksteps = det.thicksteps.unwrap_or(-1);
    let mut thickstep;
    if thicksteps <= 0 {
        if thick < 0.0 {
            thicksteps = 1;
            thick = 0.0;
            thickstep = 0.0;
        } else {
            thicksteps = 2;
            thickstep = thick / thicksteps as f64;
        }
    } else if thick < 0.0 {
        thick = 0.5e-6;
        thickstep = thick / thicksteps as f64;
    } else {
        if thicksteps <= 1 {
            thicksteps = 2;
        }
        thickstep = thick / (thicksteps - 1) as f64;
    }
    if thick > 0.0 && mu < 0.0 {
        mu = 1.0 / thick;
        notes.push(format!("setting detector attenuation depth to {mu} m^-1"));
    }
    if thick <= 0.0 || thickstep <= 0.0 || thicksteps <= 0 {
        thicksteps = 1;
        thick = 0.0;
        thickstep = 0.0;
    }
    if thicksteps > 10_000 {
        return Err(invalid(
            "detector.thicksteps",
            format!("{thicksteps} is too many"),
        ));
    }
    Ok(Thickness {
        thick,
        mu,
        steps: thicksteps as usize,
        step: thickstep,
    })
}

/// The subpixels per side: `detector.oversample` (1 to 64), else C's
/// recommendation `recommended` (at most 64).
pub fn oversample(det: &DetectorConfig, recommended: i64) -> Result<usize, SetupError> {
    let o = match det.oversample {
        Some(o) if o > 64 => {
            return Err(invalid(
                "detector.oversample",
                format!("{o} is too many subpixels per side (max 64)"),
            ))
        }
        Some(o) if o > 0 => o,
        Some(o) if o < 0 => {
            return Err(invalid(
                "detector.oversample",
                format!("must be >= 1 (got {o})"),
            ))
        }
        _ => recommended.min(64),
    };
    Ok(o as usize)
}

/// The sampling of `det`, with its thickness layers and the oversampling
/// resolved by [`thickness`] and [`oversample`].
pub fn resolve(det: &DetectorConfig, thickness: Thickness, oversample: usize) -> Sampling {
    Sampling {
        oversample,
        oversample_auto: !matches!(det.oversample, Some(o) if o > 0),
        oversample_thick: det.oversample_thick,
        oversample_polar: det.oversample_polar,
        oversample_omega: det.oversample_omega,
        thickness,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spec-a-core "Auto-selection rules", each branch (-1: not given).
    #[test]
    fn auto_steps_rules() {
        assert_eq!(auto_steps(-1.0, -1.0, -1, 1.0), (1, 0.0, 0.0));
        assert_eq!(auto_steps(-1.0, 0.5, -1, 1.0), (2, 0.5, 0.5));
        assert_eq!(auto_steps(2.0, -1.0, -1, 1.0), (2, 2.0, 2.0));
        assert_eq!(auto_steps(2.0, 0.3, -1, 1.0), (7, 2.0, 0.3));
        assert_eq!(auto_steps(-1.0, -1.0, 4, 1.0), (4, 1.0, 0.25));
        assert_eq!(auto_steps(-1.0, 0.5, 4, 1.0), (2, 0.5, 0.5));
        assert_eq!(auto_steps(2.0, -1.0, 5, 1.0), (5, 2.0, 0.5));
        assert_eq!(auto_steps(2.0, -1.0, 1, 1.0), (2, 2.0, 2.0));
        // a zero range is no sampling at all
        assert_eq!(auto_steps(0.0, -1.0, 5, 1.0), (1, 0.0, 0.0));
    }

    fn det(thick_um: f64, depth_um: Option<f64>, steps: Option<i64>) -> DetectorConfig {
        DetectorConfig {
            thickness_um: thick_um,
            attenuation_depth_um: depth_um,
            thicksteps: steps,
            ..Default::default()
        }
    }

    #[test]
    fn sensor_layers() {
        let mut notes = vec![];
        // none: one layer of nothing
        let t = thickness(&det(0.0, None, None), &mut notes).unwrap();
        assert_eq!((t.thick, t.steps, t.step), (0.0, 1, 0.0));
        assert!(notes.is_empty());
        // 100 um alone: two layers of thick/2, mu = 1/thick (noted)
        let t = thickness(&det(100.0, None, None), &mut notes).unwrap();
        assert!((t.thick - 1e-4).abs() < 1e-18 && t.steps == 2);
        assert!((t.step - 5e-5).abs() < 1e-18 && (t.mu - 1e4).abs() < 1e-9);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("setting detector attenuation depth to 10000"));
        // 90 um in 3 layers: thick / (3 - 1); an attenuation depth sets mu
        let t = thickness(&det(90.0, Some(50.0), Some(3)), &mut notes).unwrap();
        assert!((t.step - 4.5e-5).abs() < 1e-18 && (t.mu - 2e4).abs() < 1e-9);
        assert_eq!(notes.len(), 1);
        // an attenuation depth of 0 switches the sensor off
        let t = thickness(&det(90.0, Some(0.0), Some(3)), &mut notes).unwrap();
        assert_eq!((t.thick, t.mu, t.steps), (0.0, 0.0, 1));
        let e = thickness(&det(90.0, Some(-1.0), None), &mut notes).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("detector.attenuation_depth_um: must be > 0"));
        let e = thickness(&det(90.0, None, Some(20_000)), &mut notes).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("detector.thicksteps: 20000 is too many"));
    }

    #[test]
    fn oversampling() {
        let with = |o| DetectorConfig {
            oversample: o,
            ..Default::default()
        };
        assert_eq!(oversample(&with(Some(3)), 7).unwrap(), 3);
        assert_eq!(oversample(&with(None), 7).unwrap(), 7);
        assert_eq!(oversample(&with(Some(0)), 100).unwrap(), 64);
        assert!(oversample(&with(Some(65)), 1).is_err());
        let e = oversample(&with(Some(-2)), 1).unwrap_err().to_string();
        assert_eq!(e, "detector.oversample: must be >= 1 (got -2)");
        let t = Thickness {
            thick: 0.0,
            mu: 0.0,
            steps: 1,
            step: 0.0,
        };
        assert!(resolve(&with(None), t, 7).oversample_auto);
        assert!(!resolve(&with(Some(3)), t, 3).oversample_auto);
    }
}
