//! The scan: the phi angles the crystal turns through during the exposure
//! (start, oscillation range, step and count by nanoBragg's auto-selection
//! rule, spec-a-core "Auto-selection rules"). The axis is the
//! [`super::goniometer`]'s.

use crate::physics::config::{GoniometerConfig, PhiCarryover};
use crate::physics::error::{finite, invalid, SetupError};
use crate::physics::scalar::RTD;

/// A resolved scan (radians).
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    /// Start angle (rad), C's phi0.
    pub phi0: f64,
    /// Oscillation range.
    pub osc: f64,
    /// Phi step (rad), C's phistep.
    pub phistep: f64,
    /// Phi steps per image, C's phisteps.
    pub phisteps: usize,
    /// phi step i is exactly 0.0 (C's `phi != 0.0` test).
    pub phi_zero: Vec<bool>,
}

/// Resolve the phi sampling of `gon`. In spec mode a step exactly at 0 with
/// several steps gets a note (C would reuse the previous rotation there).
pub fn resolve(
    gon: &GoniometerConfig,
    carryover: PhiCarryover,
    notes: &mut Vec<String>,
) -> Result<Scan, SetupError> {
    let phi0 = finite("goniometer.phi_start_deg", gon.phi_start_deg)? / RTD;
    let osc = match gon.osc_deg {
        Some(o) => finite("goniometer.osc_deg", o)? / RTD,
        None => -1.0,
    };
    let phistep = match gon.phistep_deg {
        Some(o) => finite("goniometer.phistep_deg", o)? / RTD,
        None => -1.0,
    };
    let phisteps = match gon.phisteps {
        Some(n) if n < 0 => {
            return Err(invalid(
                "goniometer.phisteps",
                format!("must be >= 0 (got {n})"),
            ))
        }
        Some(n) => n,
        None => -1,
    };
    let (osc, phistep, phisteps) = phi_steps(osc, phistep, phisteps);
    if phisteps > 100_000 {
        return Err(invalid(
            "goniometer.phisteps",
            format!("{phisteps} phi steps is too many"),
        ));
    }
    let phisteps = phisteps.max(1) as usize;
    let phi_zero: Vec<bool> = (0..phisteps)
        .map(|i| phi0 + phistep * i as f64 == 0.0)
        .collect();
    if carryover == PhiCarryover::Spec && phisteps > 1 && phi_zero.iter().any(|z| *z) {
        notes.push(format!(
            "note: phi step {} is exactly 0 with {} phi steps; nanoBragg.c would reuse the previous rotation there (its phi-carryover quirk). Add -phi_carryover c-parity (TOML: phi_carryover = \"c-parity\") to reproduce C's image.",
            phi_zero.iter().position(|z| *z).unwrap(),
            phisteps
        ));
    }
    Ok(Scan {
        phi0,
        osc,
        phistep,
        phisteps,
        phi_zero,
    })
}

/// nanoBragg.c's rule for (osc, phistep, phisteps); negative means "not
/// given". Returns (osc, phistep, phisteps). Unlike the generic rule it
/// halves an oscillation given alone, and defaults the range to 1 degree.
fn phi_steps(mut osc: f64, mut phistep: f64, mut phisteps: i64) -> (f64, f64, i64) {
    if phisteps < 0 {
        if osc < 0.0 {
            if phistep <= 0.0 {
                phisteps = 1;
                osc = 0.0;
                phistep = 0.0;
            } else {
                osc = phistep;
                phisteps = 2;
            }
        } else if phistep <= 0.0 {
            phisteps = 2;
            phistep = osc / 2.0;
        } else {
            phisteps = (osc / phistep).ceil() as i64;
        }
    } else {
        if phisteps == 0 {
            phisteps = 1;
        }
        if osc < 0.0 {
            if phistep <= 0.0 {
                osc = 1.0 / RTD;
                phistep = osc / phisteps as f64;
            } else {
                osc = phistep;
                phisteps = 2;
            }
        } else if phistep < 0.0 {
            phistep = osc / phisteps as f64;
        }
    }
    (osc, phistep, phisteps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gon(osc: Option<f64>, step: Option<f64>, n: Option<i64>) -> GoniometerConfig {
        GoniometerConfig {
            phi_start_deg: 10.0,
            osc_deg: osc,
            phistep_deg: step,
            phisteps: n,
            spindle_axis: None,
        }
    }

    fn deg(s: &Scan) -> (f64, f64, usize) {
        (s.osc * RTD, s.phistep * RTD, s.phisteps)
    }

    #[test]
    fn auto_selection_of_the_phi_steps() {
        let mut notes = vec![];
        let mut scan = |g| resolve(&g, PhiCarryover::Spec, &mut notes).unwrap();
        // nothing given: one still exposure
        assert_eq!(deg(&scan(gon(None, None, None))), (0.0, 0.0, 1));
        // an oscillation alone: two steps of half of it
        let (o, st, n) = deg(&scan(gon(Some(0.5), None, None)));
        assert!((o - 0.5).abs() < 1e-12 && (st - 0.25).abs() < 1e-12 && n == 2);
        // range and step: ceil(range / step) steps
        let (_, st, n) = deg(&scan(gon(Some(1.0), Some(0.3), None)));
        assert!((st - 0.3).abs() < 1e-12 && n == 4);
        // range and count: the step is range / count
        let (_, st, n) = deg(&scan(gon(Some(0.1), None, Some(10))));
        assert!((st - 0.01).abs() < 1e-12 && n == 10);
        // a count alone: 1 degree
        let (o, st, n) = deg(&scan(gon(None, None, Some(4))));
        assert!((o - 1.0).abs() < 1e-12 && (st - 0.25).abs() < 1e-12 && n == 4);
        let s = scan(gon(None, None, None));
        assert!((s.phi0 - 10.0 / RTD).abs() < 1e-15);
        assert!(notes.is_empty());
    }

    #[test]
    fn a_step_at_zero_is_noted_in_spec_mode_only() {
        let g = GoniometerConfig {
            phi_start_deg: -0.5,
            osc_deg: Some(1.0),
            phisteps: Some(4),
            ..Default::default()
        };
        let mut notes = vec![];
        let s = resolve(&g, PhiCarryover::Spec, &mut notes).unwrap();
        // -0.5 + 0.25 * 2 = 0 exactly in binary
        assert_eq!(s.phi_zero, [false, false, true, false]);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("phi step 2 is exactly 0 with 4 phi steps"));
        let mut notes = vec![];
        resolve(&g, PhiCarryover::CParity, &mut notes).unwrap();
        assert!(notes.is_empty());
    }

    #[test]
    fn bad_counts_name_the_key() {
        let mut notes = vec![];
        let e = resolve(&gon(None, None, Some(-1)), PhiCarryover::Spec, &mut notes).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("goniometer.phisteps: must be >= 0"));
        let e = resolve(
            &gon(None, None, Some(100_001)),
            PhiCarryover::Spec,
            &mut notes,
        )
        .unwrap_err();
        assert!(e.to_string().contains("too many"), "{e}");
        let e = resolve(
            &gon(Some(f64::INFINITY), None, None),
            PhiCarryover::Spec,
            &mut notes,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("goniometer.osc_deg:"), "{e}");
    }
}
