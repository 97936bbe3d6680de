//! The beam model: central wavelength, direction, polarization, fluence, the
//! resolution cut and water background, and the sources that sample
//! divergence and dispersion or come from a source file (spec-a-core
//! "Sources, Divergence & Dispersion", "Auto-selection rules").

use super::convention::ConventionAxes;
use super::sampling::auto_steps;
use crate::physics::budget::RenderBudget;
use crate::physics::config::BeamConfig;
use crate::physics::error::{finite, invalid, positive, unit_vec, SetupError};
use crate::physics::inputs::{contents, InputFile};
use crate::physics::rotation::rotate_axis;
use crate::physics::scalar::{cross_product, unitize, Vec3};

/// nanoBragg's default fluence (photons/m^2).
pub const DEFAULT_FLUENCE: f64 = 125932015286227086360700780544.0;
/// Distance (m) of a generated source from the sample (C's `source_distance`).
const SOURCE_DISTANCE: f64 = 10.0;

/// One source: direction from sample toward the source (unit) and its wavelength.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Source {
    /// Unit vector from the sample toward the source (C's source_X, source_Y, source_Z).
    pub dir: [f64; 3],
    /// λ = λ0 * factor (generated sources) ...
    pub lambda_factor: f64,
    /// ... or a fixed λ (m) from a source file.
    pub lambda_fixed: Option<f64>,
}

/// A resolved beam (SI units).
#[derive(Clone, Debug, PartialEq)]
pub struct Beam {
    /// Central wavelength λ0 (m).
    pub wavelength: f64,
    /// Beam propagation direction, from the source through the sample (unit),
    /// C's beam_vector.
    pub direction: [f64; 3],
    /// The incident E-vector (unit).
    pub polar_vector: [f64; 3],
    /// Kahn polarization factor K.
    pub polarization: f64,
    /// Polarization correction off (C's nopolar): the factor is 1.
    pub nopolar: bool,
    /// Photons/m^2.
    pub fluence: f64,
    /// Beam size (m), which clips the crystal size.
    pub beamsize: f64,
    /// Resolution cut d-min (m); 0 = none.
    pub dmin: f64,
    /// Water background thickness (m).
    pub water_size: f64,
    /// The sources in C's loop order (divergence grid by dispersion, or the source file's).
    pub sources: Vec<Source>,
}

/// Resolve `bm` with the convention's default direction and E-vector; the
/// source count is checked against `budget` before any source exists.
pub fn resolve(
    bm: &BeamConfig,
    axes: &ConventionAxes,
    source_file: Option<InputFile<Vec<[f64; 5]>>>,
    budget: &RenderBudget,
) -> Result<Beam, SetupError> {
    let wavelength = match bm.energy_ev {
        Some(e) => (12398.42 / positive("beam.energy_ev", e)?) / 1.0e10,
        None => positive("beam.wavelength_a", bm.wavelength_a)? / 1.0e10,
    };
    let (fluence, beamsize) = fluence(bm)?;
    let polarization = finite("beam.polarization", bm.polarization)?;
    let dmin = finite("beam.dmin_a", bm.dmin_a)? * 1e-10;
    if dmin < 0.0 {
        return Err(invalid(
            "beam.dmin_a",
            format!("must be >= 0 (got {})", bm.dmin_a),
        ));
    }
    let water_size = finite("beam.water_um", bm.water_um)? / 1e6;
    let direction = unit_vec("beam.beam_vector", bm.beam_vector.unwrap_or(axes.beam))?;
    let polar_vector = unit_vec("beam.polar_vector", bm.polar_vector.unwrap_or(axes.polar))?;
    let grid = divergence_grid(bm)?;
    let rows = contents("beam.source_file", bm.source_file.as_ref(), source_file)?;
    let sources = match rows {
        Some((_, rows)) => sources_from_file(bm, &rows, direction)?,
        None => {
            match grid.count() {
                Some(n) if n <= 10_000_000 => {
                    budget.check("beam", n, 0, 0, 0)?;
                }
                _ => {
                    let (h, v, d) = (grid.h.0, grid.v.0, grid.disp.0);
                    return Err(invalid(
                        "beam",
                        format!(
                            "{h} x {v} x {d} sources (hdivsteps x vdivsteps x dispsteps) is too many (at most 10000000)"
                        ),
                    ));
                }
            }
            grid.sources(direction, polar_vector, bm.round_div)
        }
    };
    if sources.is_empty() {
        return Err(invalid(
            "beam",
            "no sources: the divergence grid and dispersion leave nothing to sample",
        ));
    }
    Ok(Beam {
        wavelength,
        direction,
        polar_vector,
        polarization,
        nopolar: bm.nopolar,
        fluence,
        beamsize,
        dmin,
        water_size,
        sources,
    })
}

/// The fluence (photons/m^2) and the beam size (m): flux x exposure /
/// beamsize^2 when a flux is given, else the given or default fluence.
fn fluence(bm: &BeamConfig) -> Result<(f64, f64), SetupError> {
    finite("beam.flux", bm.flux)?;
    finite("beam.exposure", bm.exposure)?;
    finite("beam.beamsize_mm", bm.beamsize_mm)?;
    let beamsize = bm.beamsize_mm / 1000.0;
    let mut fluence = match bm.fluence {
        Some(f) => positive("beam.fluence", f)?,
        None => DEFAULT_FLUENCE,
    };
    if bm.flux != 0.0 && bm.exposure > 0.0 && beamsize >= 0.0 {
        if beamsize == 0.0 {
            return Err(invalid(
                "beam.beamsize_mm",
                "must be > 0 when beam.flux is given (got 0)",
            ));
        }
        fluence = bm.flux * bm.exposure / beamsize / beamsize;
    }
    Ok((fluence, beamsize))
}

/// Sources listed in a file: a missing position is along the beam, a
/// missing wavelength is the central one.
fn sources_from_file(
    bm: &BeamConfig,
    rows: &[[f64; 5]],
    beam: [f64; 3],
) -> Result<Vec<Source>, SetupError> {
    let mut sources = Vec::with_capacity(rows.len());
    for r in rows {
        let xyz = [0, 1, 2].map(|i| {
            if r[i].is_nan() {
                -SOURCE_DISTANCE * beam[i]
            } else {
                r[i]
            }
        });
        let (u, m) = unitize(&Vec3::<f64>::cst(xyz));
        if m == 0.0 {
            let shown = bm.source_file.as_ref().map(|p| p.display().to_string());
            return Err(invalid(
                "beam.source_file",
                format!(
                    "{}: a source at the sample position has no direction",
                    shown.unwrap_or_default()
                ),
            ));
        }
        sources.push(Source {
            dir: u.0,
            lambda_factor: 1.0,
            lambda_fixed: if r[4].is_nan() { None } else { Some(r[4]) },
        });
    }
    Ok(sources)
}

/// The divergence and dispersion sampling: (count, range, step) each, in
/// radians and relative wavelength.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DivergenceGrid {
    /// Horizontal divergence: (hdivsteps, hdivrange, hdivstep), angles in rad.
    pub h: (i64, f64, f64),
    /// Vertical divergence: (vdivsteps, vdivrange, vdivstep), angles in rad.
    pub v: (i64, f64, f64),
    /// Dispersion: (dispsteps, dispersion, dispstep) as fractions of λ0.
    pub disp: (i64, f64, f64),
}

/// The auto-selected divergence and dispersion steps; a count (given or
/// derived) above 100000 is refused.
pub fn divergence_grid(bm: &BeamConfig) -> Result<DivergenceGrid, SetupError> {
    let mrad = |key: &str, v: Option<f64>| -> Result<f64, SetupError> {
        match v {
            Some(x) => Ok(finite(key, x)? / 1000.0),
            None => Ok(-1.0),
        }
    };
    let count = |key: &str, v: Option<i64>| -> Result<i64, SetupError> {
        match v {
            Some(n) if n > 100_000 => Err(invalid(key, format!("{n} is too many steps"))),
            Some(n) => Ok(n),
            None => Ok(-1),
        }
    };
    // Counts derived from range / step obey the same cap as given ones.
    let capped = |key: &str, (n, r, st): (i64, f64, f64)| -> Result<(i64, f64, f64), SetupError> {
        if n > 100_000 {
            Err(invalid(
                key,
                format!("{n} steps (derived from the range and step) is too many (at most 100000)"),
            ))
        } else {
            Ok((n, r, st))
        }
    };
    // One divergence axis: its range and step (mrad) and step count.
    let axis = |name: &str, range: Option<f64>, step: Option<f64>, steps: Option<i64>| {
        let key = |k: &str| format!("beam.{name}{k}");
        capped(
            &key("steps"),
            auto_steps(
                mrad(&key("range_mrad"), range)?,
                mrad(&key("step_mrad"), step)?,
                count(&key("steps"), steps)?,
                1.0,
            ),
        )
    };
    let h = axis("hdiv", bm.hdivrange_mrad, bm.hdivstep_mrad, bm.hdivsteps)?;
    let v = axis("vdiv", bm.vdivrange_mrad, bm.vdivstep_mrad, bm.vdivsteps)?;
    let dispersion = match bm.dispersion_pct {
        Some(d) => finite("beam.dispersion_pct", d)? / 100.0,
        None => 0.0,
    };
    let dispstep = match bm.dispstep_pct {
        Some(d) => finite("beam.dispstep_pct", d)? / 100.0,
        None => -1.0,
    };
    let disp = capped(
        "beam.dispsteps",
        auto_steps(
            dispersion,
            dispstep,
            count("beam.dispsteps", bm.dispsteps)?,
            1.0,
        ),
    )?;
    Ok(DivergenceGrid { h, v, disp })
}

impl DivergenceGrid {
    /// hdivsteps x vdivsteps x dispsteps, None on overflow.
    pub fn count(&self) -> Option<u64> {
        (self.h.0 as u64)
            .checked_mul(self.v.0 as u64)
            .and_then(|x| x.checked_mul(self.disp.0 as u64))
    }

    /// The sources, in C's loop order (horizontal, vertical, dispersion): the
    /// beam direction rotated by the vertical angle about the E-vector, then
    /// by the horizontal angle about beam x E-vector; with `round_div` the
    /// grid is trimmed to an ellipse.
    pub fn sources(&self, beam: [f64; 3], polar: [f64; 3], round_div: bool) -> Vec<Source> {
        let (hdivsteps, hdivrange, hdivstep) = self.h;
        let (vdivsteps, vdivrange, vdivstep) = self.v;
        let (dispsteps, dispersion, dispstep) = self.disp;
        let vert = unitize(&cross_product(&Vec3::<f64>::cst(beam), &Vec3::cst(polar))).0;
        let polar_v = Vec3::<f64>::cst(polar);
        let mut sources = vec![];
        for h in 0..hdivsteps {
            for v in 0..vdivsteps {
                let hdiv = hdivstep * h as f64 - hdivrange / 2.0;
                let vdiv = vdivstep * v as f64 - vdivrange / 2.0;
                let mut test = (hdiv * hdiv
                    - hdivstep * hdivstep / 4.0 * (1 - hdivsteps % 2) as f64)
                    / hdivrange
                    / hdivrange;
                test += (vdiv * vdiv - vdivstep * vdivstep / 4.0 * (1 - vdivsteps % 2) as f64)
                    / vdivrange
                    / vdivrange;
                if round_div && test * 4.0 > 1.1 {
                    continue;
                }
                let start = Vec3::<f64>::cst(beam).scale(-SOURCE_DISTANCE);
                let r1 = rotate_axis(&start, &polar_v, vdiv);
                let r2 = rotate_axis(&r1, &vert, hdiv);
                let dir = unitize(&r2).0 .0;
                for d in 0..dispsteps {
                    sources.push(Source {
                        dir,
                        lambda_factor: 1.0 + dispstep * d as f64 - dispersion / 2.0,
                        lambda_fixed: None,
                    });
                }
            }
        }
        sources
    }
}

#[cfg(test)]
mod tests {
    use super::super::convention::axes;
    use super::*;
    use crate::physics::config::Convention;

    fn resolve_ok(bm: &BeamConfig, file: Option<InputFile<Vec<[f64; 5]>>>) -> Beam {
        let limit = (1 << 40, String::new());
        let budget = RenderBudget::new(8, 8, false, &limit);
        resolve(bm, &axes(Convention::Mosflm), file, &budget).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-14 * b.abs()
    }

    /// spec-a-core "Units & Conversions": λ = 12398.42 / E(eV) Å; fluence =
    /// flux · exposure / beamsize^2.
    #[test]
    fn wavelength_and_fluence() {
        let b = resolve_ok(&BeamConfig::default(), None);
        assert_eq!(b.wavelength, 1e-10);
        assert_eq!(b.fluence, DEFAULT_FLUENCE);
        assert_eq!(b.direction, [1.0, 0.0, 0.0]);
        assert_eq!(b.sources.len(), 1);
        let bm = BeamConfig {
            energy_ev: Some(12398.42),
            flux: 1e12,
            exposure: 2.0,
            beamsize_mm: 0.01,
            ..Default::default()
        };
        let b = resolve_ok(&bm, None);
        assert!(close(b.wavelength, 1e-10));
        assert!(close(b.fluence, 1e12 * 2.0 / 1e-5 / 1e-5), "{}", b.fluence);
        assert!(close(b.beamsize, 1e-5));
    }

    /// A 3 x 3 divergence grid trimmed to the ellipse keeps the centre and
    /// the four edge midpoints (corners: normalised radius^2 0.5 > 0.275);
    /// each direction is rotated by the grid angles about the E-vector and
    /// beam x E-vector; dispersion spreads λ over [1 - d/2, 1 + d/2].
    #[test]
    fn divergence_and_dispersion_sources() {
        let bm = BeamConfig {
            hdivrange_mrad: Some(2.0),
            hdivsteps: Some(3),
            vdivrange_mrad: Some(2.0),
            vdivsteps: Some(3),
            dispersion_pct: Some(10.0),
            dispsteps: Some(3),
            ..Default::default()
        };
        let b = resolve_ok(&bm, None);
        assert_eq!(b.sources.len(), 5 * 3);
        let factors: Vec<f64> = b.sources[..3].iter().map(|s| s.lambda_factor).collect();
        assert!(close(factors[0], 0.95) && close(factors[1], 1.0) && close(factors[2], 1.05));
        // The first kept point is (h, v) = (-1 mrad, 0): -10 m along the MOSFLM
        // beam (+X) rotated by -1 mrad about beam x E-vector = X x Z = -Y.
        let d = b.sources[0].dir;
        let a = 1e-3f64;
        assert!(
            close(d[0], -a.cos()) && d[1].abs() < 1e-18 && close(d[2], a.sin()),
            "{d:?}"
        );
        let square = BeamConfig {
            round_div: false,
            ..bm
        };
        assert_eq!(resolve_ok(&square, None).sources.len(), 9 * 3);
    }

    /// Source file rows: a missing position is along the beam, a missing λ
    /// is the central one.
    #[test]
    fn sources_from_a_file() {
        let bm = BeamConfig {
            source_file: Some("s.txt".into()),
            ..Default::default()
        };
        let rows = vec![
            [0.0, 3.0, 4.0, 1.0, 2e-10],
            [f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN],
        ];
        let b = resolve_ok(&bm, Some(InputFile::data("/x/s.txt", rows)));
        assert_eq!(b.sources[0].dir, [0.0, 0.6, 0.8]);
        assert_eq!(b.sources[0].lambda_fixed, Some(2e-10));
        assert_eq!(b.sources[1].dir, [-1.0, 0.0, 0.0]);
        assert_eq!(b.sources[1].lambda_fixed, None);
    }

    #[test]
    fn refusals_name_the_key() {
        let limit = (1 << 40, String::new());
        let budget = RenderBudget::new(8, 8, false, &limit);
        let refuse = |bm: &BeamConfig, file| {
            resolve(bm, &axes(Convention::Mosflm), file, &budget)
                .unwrap_err()
                .to_string()
        };
        let bm = BeamConfig {
            flux: 1e12,
            beamsize_mm: 0.0,
            ..Default::default()
        };
        assert!(refuse(&bm, None).starts_with("beam.beamsize_mm: must be > 0 when beam.flux"));
        let bm = BeamConfig {
            hdivsteps: Some(100_000),
            vdivsteps: Some(100_000),
            ..Default::default()
        };
        assert!(refuse(&bm, None).contains("too many (at most 10000000)"));
        let bm = BeamConfig {
            hdivrange_mrad: Some(1.0),
            hdivstep_mrad: Some(1e-6),
            ..Default::default()
        };
        let e = refuse(&bm, None);
        assert!(
            e.starts_with("beam.hdivsteps: 100000") && e.contains("steps (derived"),
            "{e}"
        );
        let bm = BeamConfig {
            source_file: Some("s.txt".into()),
            ..Default::default()
        };
        let at_sample = vec![[0.0, 0.0, 0.0, 1.0, 1e-10]];
        let e = refuse(&bm, Some(InputFile::data("/x/s.txt", at_sample)));
        assert_eq!(
            e,
            "beam.source_file: s.txt: a source at the sample position has no direction"
        );
        let bm = BeamConfig {
            dmin_a: -1.0,
            ..Default::default()
        };
        assert_eq!(refuse(&bm, None), "beam.dmin_a: must be >= 0 (got -1)");
    }
}
