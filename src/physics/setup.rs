//! Resolving a [`SimConfig`] the way nanoBragg.c does before its pixel loop:
//! auto-selected step counts, conventions and beam centres, pivots, sources,
//! mosaic domains, oversampling (spec-a-core "Auto-selection rules",
//! "Geometry & Conventions", "Sources, Divergence & Dispersion").
//!
//! Everything discrete is decided here, once, from the base parameter values;
//! the continuous values that can carry derivatives are kept as
//! (C's exact internal value, user value, d internal / d user) triples so a
//! dual or shifted parameter reproduces C's numbers bit for bit at the base
//! point and moves smoothly around it.

use super::cell::{edge_lengths, finish_cell, reciprocal_from_cell};
use super::config::*;
use super::params::{Param, ParamValues};
use super::rng::{umat2misset, Ran1, UmatDeviates};
use super::scalar::{c, cross_product, unitize, Real, Vec3, RTD};
use super::structure_factors::HklGrid;
use crate::io::IoError;
use std::path::{Path, PathBuf};

/// A configuration problem, naming the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{key}: {msg}")]
    Invalid { key: String, msg: String },
    #[error(transparent)]
    Io(#[from] IoError),
}

pub(crate) fn invalid(key: &str, msg: impl Into<String>) -> SetupError {
    SetupError::Invalid {
        key: key.to_string(),
        msg: msg.into(),
    }
}

/// Thomson cross section r_e^2 (m^2).
pub const R_E_SQR: f64 = 7.94079248018965e-30;
/// nanoBragg's default fluence (photons/m^2).
pub const DEFAULT_FLUENCE: f64 = 125932015286227086360700780544.0;
const AVOGADRO: f64 = 6.02214179e23;

/// Where the unit cell comes from.
#[derive(Clone, Debug)]
pub enum CellSource {
    Cell,
    /// MOSFLM A matrix: [a*, b*, c*] in Å^-1 · λ(Å).
    Matrix([[f64; 3]; 3]),
}

/// One source: direction from sample toward the source (unit) and its wavelength.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub dir: [f64; 3],
    /// λ = λ0 * factor (generated sources) ...
    pub lambda_factor: f64,
    /// ... or a fixed λ (m) from a source file.
    pub lambda_fixed: Option<f64>,
}

/// Everything resolved; see the module doc.
#[derive(Clone, Debug)]
pub struct Setup {
    pub fpixels: usize,
    pub spixels: usize,
    pub roi: [u32; 4],
    pub pixel_size: f64,
    pub detsize_f: f64,
    pub detsize_s: f64,
    pub convention: Convention,
    pub pivot: Pivot,
    /// Unrotated detector axes and lab vectors (unit).
    pub fdet0: [f64; 3],
    pub sdet0: [f64; 3],
    pub odet0: [f64; 3],
    pub beam: [f64; 3],
    pub polar: [f64; 3],
    pub spindle: [f64; 3],
    pub twotheta_axis: [f64; 3],
    /// close_distance given by the user (else derived from distance).
    pub close_distance_given: bool,
    pub xbeam: f64,
    pub ybeam: f64,
    pub oversample: usize,
    /// The oversampling was C's recommendation (no `detector.oversample`).
    pub oversample_auto: bool,
    pub oversample_thick: bool,
    pub oversample_polar: bool,
    pub oversample_omega: bool,
    pub point_pixel: bool,
    pub curved: bool,
    pub thicksteps: usize,
    pub thickstep: f64,
    pub thick: f64,
    pub mu: f64,
    pub sources: Vec<Source>,
    pub nopolar: bool,
    pub dmin: f64,
    pub water_size: f64,
    pub cell_source: CellSource,
    pub n_gt1: [bool; 3],
    pub shape: LatticeShape,
    pub fudge: f64,
    pub mosaic_on: bool,
    pub mosaic_deviates: Vec<UmatDeviates>,
    /// With a spread of 0: the domains a spread just above 0 would use (the
    /// domain edge of mosaic_spread); else empty.
    pub mosaic_deviates_edge: Vec<UmatDeviates>,
    pub phisteps: usize,
    /// phi step i is exactly 0.0 at the base point (C's `phi != 0.0` test).
    pub phi_zero: Vec<bool>,
    pub interpolate: bool,
    pub carryover: PhiCarryover,
    pub steps: usize,
    /// Parameter values: user units, C's internal value, and d internal / d user.
    pub user: [f64; 26],
    pub internal: [f64; 26],
    pub scale: [f64; 26],
    /// Which parameters have a meaning here (cell_* not with a matrix).
    pub applicable: [bool; 26],
    pub notes: Vec<String>,
}

impl Setup {
    /// The internal value of parameter `p` (radians, metres, ...) in scalar T.
    #[inline(always)]
    pub fn iv<T: Real>(&self, p: Param, pv: &ParamValues<T>) -> T {
        let i = p as usize;
        c::<T>(self.internal[i]) + (pv.get(p) - c::<T>(self.user[i])) * c::<T>(self.scale[i])
    }

    pub fn base_values(&self) -> ParamValues<f64> {
        ParamValues {
            v: self.user,
            live: [false; 26],
            exact: self.user,
        }
    }
}

fn finite(key: &str, x: f64) -> Result<f64, SetupError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(invalid(key, format!("must be a finite number (got {x})")))
    }
}

fn positive(key: &str, x: f64) -> Result<f64, SetupError> {
    finite(key, x)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(invalid(key, format!("must be > 0 (got {x})")))
    }
}

fn unit_vec(key: &str, v: [f64; 3]) -> Result<[f64; 3], SetupError> {
    for x in v {
        finite(key, x)?;
    }
    let (u, m) = unitize(&Vec3::<f64>::cst(v));
    if m == 0.0 {
        return Err(invalid(key, "must not be the zero vector"));
    }
    Ok(u.0)
}

/// nanoBragg's rule for a (range, step, count) triple; -1 means "not given".
/// Returns (count, range, step). `nominal` is the range used when only a count
/// is given. Each sampled quantity in C has this shape; thickness and phi
/// differ in small ways and have their own code below.
fn auto_steps(mut range: f64, mut step: f64, mut count: i64, nominal: f64) -> (i64, f64, f64) {
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

/// A resolved setup with its HKL grid and detector mask.
pub type Resolved = (Setup, Option<HklGrid>, Option<Vec<u16>>);

/// Resolve a configuration. Files are read relative to `base_dir`.
pub fn resolve(cfg: &SimConfig, base_dir: &Path) -> Result<Resolved, SetupError> {
    let path = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base_dir.join(p)
        }
    };
    let cr = &cfg.crystal;
    let bm = &cfg.beam;
    let det = &cfg.detector;
    let gon = &cfg.goniometer;
    let mut notes = vec![];

    // ---- beam ----
    let lambda0 = match bm.energy_ev {
        Some(e) => (12398.42 / positive("beam.energy_ev", e)?) / 1.0e10,
        None => positive("beam.wavelength_a", bm.wavelength_a)? / 1.0e10,
    };
    let wavelength_user = lambda0 * 1e10;
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
    let polarization = finite("beam.polarization", bm.polarization)?;
    let dmin = finite("beam.dmin_a", bm.dmin_a)? * 1e-10;
    if dmin < 0.0 {
        return Err(invalid(
            "beam.dmin_a",
            format!("must be >= 0 (got {})", bm.dmin_a),
        ));
    }
    let water_size = finite("beam.water_um", bm.water_um)? / 1e6;

    // ---- detector basics ----
    let pixel_size = positive("detector.pixel_size_mm", det.pixel_size_mm)? / 1000.0;
    let mut detsize_f = positive("detector.detsize_f_mm", det.detsize_f_mm)? / 1000.0;
    let mut detsize_s = positive("detector.detsize_s_mm", det.detsize_s_mm)? / 1000.0;
    if let Some(n) = det.fpixels {
        if n == 0 {
            return Err(invalid("detector.fpixels", "must be >= 1 (got 0)"));
        }
        detsize_f = pixel_size * n as f64;
    }
    if let Some(n) = det.spixels {
        if n == 0 {
            return Err(invalid("detector.spixels", "must be >= 1 (got 0)"));
        }
        detsize_s = pixel_size * n as f64;
    }
    // Pixel counts in f64 first: a huge detector size or a tiny pixel must
    // not saturate or wrap an integer before the size check.
    let fpix = (detsize_f / pixel_size - 0.5).ceil();
    let spix = (detsize_s / pixel_size - 0.5).ceil();
    if !(fpix >= 1.0 && spix >= 1.0) {
        return Err(invalid(
            "detector",
            format!(
                "detector has no pixels ({} x {})",
                super::budget::num(fpix),
                super::budget::num(spix)
            ),
        ));
    }
    if fpix * spix > (1u64 << 28) as f64 {
        return Err(invalid(
            "detector",
            format!(
                "{} x {} pixels (detsize {} x {} mm, pixel {} mm) is too large (at most 2^28 pixels)",
                super::budget::num(fpix),
                super::budget::num(spix),
                super::budget::num(detsize_f * 1000.0),
                super::budget::num(detsize_s * 1000.0),
                super::budget::num(pixel_size * 1000.0)
            ),
        ));
    }
    let (fpixels, spixels) = (fpix as usize, spix as usize);
    let mask_given = det.mask_file.is_some();
    let need_so_far = |sources: u64, phisteps: u64, domains: u64, hkl: u64| {
        super::budget::render_need(
            fpixels as u64,
            spixels as u64,
            0,
            sources,
            phisteps,
            domains,
            hkl,
            mask_given,
            false,
            0,
        )
    };
    need_so_far(0, 0, 0, 0).check("detector")?;
    let roi = match det.roi {
        Some([f0, f1, s0, s1]) => {
            if f0 > f1 || s0 > s1 || f1 as usize >= fpixels || s1 as usize >= spixels {
                return Err(invalid(
                    "detector.roi",
                    format!("[{f0}, {f1}, {s0}, {s1}] is not inside the {fpixels} x {spixels} detector (fast 0..{}, slow 0..{}, min <= max)", fpixels - 1, spixels - 1),
                ));
            }
            [f0, f1, s0, s1]
        }
        None => [0, fpixels as u32 - 1, 0, spixels as u32 - 1],
    };
    let distance = positive("detector.distance_mm", det.distance_mm)? / 1000.0;
    let close_distance = match det.close_distance_mm {
        Some(d) => Some(positive("detector.close_distance_mm", d)? / 1000.0),
        None => None,
    };
    for (i, r) in det.rot_deg.iter().enumerate() {
        finite(&format!("detector.rot_deg[{i}]"), *r)?;
    }
    finite("detector.twotheta_deg", det.twotheta_deg)?;
    let opt_mm = |key: &str, v: Option<f64>| -> Result<f64, SetupError> {
        match v {
            Some(x) => Ok(finite(key, x)? / 1000.0),
            None => Ok(f64::NAN),
        }
    };
    let mut xbeam = opt_mm("detector.xbeam_mm", det.xbeam_mm)?;
    let mut ybeam = opt_mm("detector.ybeam_mm", det.ybeam_mm)?;
    let xclose_user = opt_mm("detector.xclose_mm", det.xclose_mm)?;
    let yclose_user = opt_mm("detector.yclose_mm", det.yclose_mm)?;

    // beam-centre defaults (C lines after "fill in blanks")
    let mut fclose = match det.orgx {
        Some(o) => (finite("detector.orgx", o)? - 0.5) * pixel_size,
        None => detsize_f / 2.0,
    };
    let mut sclose = match det.orgy {
        Some(o) => (finite("detector.orgy", o)? - 0.5) * pixel_size,
        None => detsize_s / 2.0,
    };
    let xclose = if xclose_user.is_nan() {
        fclose
    } else {
        xclose_user
    };
    let yclose = if yclose_user.is_nan() {
        sclose
    } else {
        yclose_user
    };

    // conventions
    let conv = det.convention;
    let (mut beam, mut fdet, mut sdet, mut odet, mut tt_axis, mut polar, mut spindle) = (
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.0, -1.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.0, 0.0, 1.0],
    );
    let (fbeam, sbeam);
    let pivot;
    match conv {
        Convention::Adxv => {
            if xbeam.is_nan() {
                xbeam = (detsize_f + pixel_size) / 2.0;
            }
            if ybeam.is_nan() {
                ybeam = (detsize_s - pixel_size) / 2.0;
            }
            (beam, fdet, sdet, odet) = (
                [0.0, 0.0, 1.0],
                [1.0, 0.0, 0.0],
                [0.0, -1.0, 0.0],
                [0.0, 0.0, 1.0],
            );
            (tt_axis, polar, spindle) = ([-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]);
            fbeam = xbeam;
            sbeam = detsize_s - ybeam;
            pivot = Pivot::Beam;
        }
        Convention::Mosflm | Convention::Denzo => {
            if xbeam.is_nan() {
                xbeam = (detsize_s + pixel_size) / 2.0;
            }
            if ybeam.is_nan() {
                ybeam = (detsize_f + pixel_size) / 2.0;
            }
            (beam, odet, fdet, sdet) = (
                [1.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0],
                [0.0, -1.0, 0.0],
            );
            (tt_axis, polar, spindle) = ([0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]);
            let half = if conv == Convention::Mosflm {
                0.5 * pixel_size
            } else {
                0.0
            };
            fbeam = ybeam + half;
            sbeam = xbeam + half;
            pivot = Pivot::Beam;
        }
        Convention::Xds | Convention::Dials => {
            if xbeam.is_nan() {
                xbeam = xclose;
            }
            if ybeam.is_nan() {
                ybeam = yclose;
            }
            (beam, fdet, sdet, odet) = (
                [0.0, 0.0, 1.0],
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [0.0, 0.0, 1.0],
            );
            if conv == Convention::Xds {
                (tt_axis, polar, spindle) = ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]);
            } else {
                (tt_axis, polar, spindle) = ([0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]);
            }
            fbeam = xbeam;
            sbeam = ybeam;
            pivot = Pivot::Sample;
        }
        Convention::Custom => {
            if xbeam.is_nan() {
                xbeam = xclose;
            }
            if ybeam.is_nan() {
                ybeam = yclose;
            }
            fbeam = xbeam;
            sbeam = ybeam;
            fclose = xbeam;
            sclose = ybeam;
            pivot = det
                .pivot
                .unwrap_or(if close_distance.is_some() || det.twotheta_deg != 0.0 {
                    Pivot::Sample
                } else {
                    Pivot::Beam
                });
        }
    }
    // user axes override the convention's (C reaches these only through CUSTOM)
    if let Some(v) = bm.beam_vector {
        beam = v;
    }
    if let Some(v) = det.fdet_vector {
        fdet = v;
    }
    if let Some(v) = det.sdet_vector {
        sdet = v;
    }
    if let Some(v) = bm.polar_vector {
        polar = v;
    }
    if let Some(v) = gon.spindle_axis {
        spindle = v;
    }
    if let Some(v) = det.twotheta_axis {
        tt_axis = v;
    }
    let beam = unit_vec("beam.beam_vector", beam)?;
    let fdet = unit_vec("detector.fdet_vector", fdet)?;
    let sdet = unit_vec("detector.sdet_vector", sdet)?;
    let odet = match det.odet_vector {
        Some(v) => {
            let (u, m) = unitize(&Vec3::<f64>::cst(v));
            if m != 1.0 {
                // C: a non-unit normal is regenerated from fast x slow
                notes.push("auto-generating odet_vector = fdet x sdet".into());
                unitize(&cross_product(&Vec3::cst(fdet), &Vec3::cst(sdet)))
                    .0
                     .0
            } else {
                u.0
            }
        }
        None => odet,
    };
    let polar = unit_vec("beam.polar_vector", polar)?;
    let spindle = unit_vec("goniometer.spindle_axis", spindle)?;
    let tt_axis = unit_vec("detector.twotheta_axis", tt_axis)?;

    // ---- sampling: phi ----
    let phi0 = finite("goniometer.phi_start_deg", gon.phi_start_deg)? / RTD;
    let mut osc = match gon.osc_deg {
        Some(o) => finite("goniometer.osc_deg", o)? / RTD,
        None => -1.0,
    };
    let mut phistep = match gon.phistep_deg {
        Some(o) => finite("goniometer.phistep_deg", o)? / RTD,
        None => -1.0,
    };
    let mut phisteps = match gon.phisteps {
        Some(n) if n < 0 => {
            return Err(invalid(
                "goniometer.phisteps",
                format!("must be >= 0 (got {n})"),
            ))
        }
        Some(n) => n,
        None => -1,
    };
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
    if cfg.phi_carryover == PhiCarryover::Spec && phisteps > 1 && phi_zero.iter().any(|z| *z) {
        notes.push(format!(
            "note: phi step {} is exactly 0 with {} phi steps; nanoBragg.c would reuse the previous rotation there (its phi-carryover quirk). Add -phi_carryover c-parity (TOML: phi_carryover = \"c-parity\") to reproduce C's image.",
            phi_zero.iter().position(|z| *z).unwrap(),
            phisteps
        ));
    }

    // ---- sampling: divergence and dispersion ----
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
    let (hdivsteps, hdivrange, hdivstep) = capped(
        "beam.hdivsteps",
        auto_steps(
            mrad("beam.hdivrange_mrad", bm.hdivrange_mrad)?,
            mrad("beam.hdivstep_mrad", bm.hdivstep_mrad)?,
            count("beam.hdivsteps", bm.hdivsteps)?,
            1.0,
        ),
    )?;
    let (vdivsteps, vdivrange, vdivstep) = capped(
        "beam.vdivsteps",
        auto_steps(
            mrad("beam.vdivrange_mrad", bm.vdivrange_mrad)?,
            mrad("beam.vdivstep_mrad", bm.vdivstep_mrad)?,
            count("beam.vdivsteps", bm.vdivsteps)?,
            1.0,
        ),
    )?;
    let dispersion = match bm.dispersion_pct {
        Some(d) => finite("beam.dispersion_pct", d)? / 100.0,
        None => 0.0,
    };
    let dispstep = match bm.dispstep_pct {
        Some(d) => finite("beam.dispstep_pct", d)? / 100.0,
        None => -1.0,
    };
    let (dispsteps, dispersion, dispstep) = capped(
        "beam.dispsteps",
        auto_steps(
            dispersion,
            dispstep,
            count("beam.dispsteps", bm.dispsteps)?,
            1.0,
        ),
    )?;
    // The product of the three counts, checked, before any source exists.
    let generated = (hdivsteps as u64)
        .checked_mul(vdivsteps as u64)
        .and_then(|x| x.checked_mul(dispsteps as u64));
    if bm.source_file.is_none() {
        match generated {
            Some(n) if n <= 10_000_000 => {
                need_so_far(n, phisteps as u64, 0, 0).check("beam")?;
            }
            _ => {
                return Err(invalid(
                    "beam",
                    format!(
                        "{hdivsteps} x {vdivsteps} x {dispsteps} sources (hdivsteps x vdivsteps x dispsteps) is too many (at most 10000000)"
                    ),
                ))
            }
        }
    }

    let source_distance = 10.0;
    let mut sources = vec![];
    if let Some(sf) = &bm.source_file {
        let rows = crate::io::sources::read_sources(&path(sf))
            .map_err(|e| invalid("beam.source_file", e.to_string()))?;
        for r in rows {
            let x = if r[0].is_nan() {
                -source_distance * beam[0]
            } else {
                r[0]
            };
            let y = if r[1].is_nan() {
                -source_distance * beam[1]
            } else {
                r[1]
            };
            let z = if r[2].is_nan() {
                -source_distance * beam[2]
            } else {
                r[2]
            };
            let (u, m) = unitize(&Vec3::<f64>::cst([x, y, z]));
            if m == 0.0 {
                return Err(invalid(
                    "beam.source_file",
                    format!(
                        "{}: a source at the sample position has no direction",
                        sf.display()
                    ),
                ));
            }
            sources.push(Source {
                dir: u.0,
                lambda_factor: 1.0,
                lambda_fixed: if r[4].is_nan() { None } else { Some(r[4]) },
            });
        }
    } else {
        let vert = unitize(&cross_product(&Vec3::<f64>::cst(beam), &Vec3::cst(polar))).0;
        let polar_v = Vec3::<f64>::cst(polar);
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
                if bm.round_div && test * 4.0 > 1.1 {
                    continue;
                }
                let start = Vec3::<f64>::cst(beam).scale(-source_distance);
                let r1 = super::rotation::rotate_axis(&start, &polar_v, vdiv);
                let r2 = super::rotation::rotate_axis(&r1, &vert, hdiv);
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
    }
    if sources.is_empty() {
        return Err(invalid(
            "beam",
            "no sources: the divergence grid and dispersion leave nothing to sample",
        ));
    }

    // ---- detector thickness ----
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

    // ---- mosaic ----
    let mut mosaic_spread = match cr.mosaic_spread_deg {
        Some(s) => finite("crystal.mosaic_spread_deg", s)? / RTD,
        None => -1.0,
    };
    let mut domains = match cr.mosaic_domains {
        Some(n) if n > 100_000 => {
            return Err(invalid(
                "crystal.mosaic_domains",
                format!("{n} is too many"),
            ))
        }
        Some(n) => n,
        None => -1,
    };
    if domains <= 0 {
        if mosaic_spread < 0.0 {
            domains = 1;
            mosaic_spread = 0.0;
        } else if mosaic_spread == 0.0 {
            domains = 1;
        } else {
            notes.push("finite mosaicity with only one domain: using 10 mosaic domains".into());
            domains = 10;
        }
    } else if mosaic_spread < 0.0 {
        notes.push("no mosaic spread given: using 1 mosaic domain".into());
        mosaic_spread = 0.0;
        domains = 1;
    } else if mosaic_spread == 0.0 {
        domains = 1;
    }
    need_so_far(
        sources.len() as u64,
        phisteps as u64,
        domains.max(1) as u64,
        0,
    )
    .check("crystal.mosaic_domains")?;
    let mut mrng = Ran1::new(-cr.mosaic_seed);
    let mosaic_deviates: Vec<UmatDeviates> = (0..domains)
        .map(|_| UmatDeviates::draw(&mut mrng))
        .collect();
    // At spread 0 C uses one domain; a spread just above 0 would use the
    // requested count (10 when none is given). Those domains' deviates let a
    // derivative at the edge be the one-sided one (simulator Model::build).
    let mosaic_deviates_edge: Vec<UmatDeviates> = if mosaic_spread == 0.0 {
        let edge_domains = match cr.mosaic_domains {
            Some(n) if n > 0 => n,
            _ => 10,
        };
        let mut erng = Ran1::new(-cr.mosaic_seed);
        (0..edge_domains)
            .map(|_| UmatDeviates::draw(&mut erng))
            .collect()
    } else {
        vec![]
    };

    // ---- crystal ----
    let cell_source = match (&cr.cell, &cr.mosflm_matrix) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "crystal",
                "give either crystal.cell or crystal.mosflm_matrix, not both",
            ));
        }
        (None, None) => {
            return Err(invalid(
                "crystal.cell",
                "no unit cell: give crystal.cell (a b c alpha beta gamma) or crystal.mosflm_matrix",
            ));
        }
        (Some(cell), None) => {
            for (i, name) in ["a", "b", "c"].iter().enumerate() {
                if !(cell[i].is_finite() && cell[i] > 0.0) {
                    return Err(invalid(
                        "crystal.cell",
                        format!("edge {name} must be > 0 (got {})", cell[i]),
                    ));
                }
            }
            for (i, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
                let a = cell[3 + i];
                if !(a.is_finite() && a > 0.0 && a < 180.0) {
                    return Err(invalid(
                        "crystal.cell",
                        format!("angle {name} must be in (0, 180) degrees (got {a})"),
                    ));
                }
            }
            let (al, be, ga) = (cell[3], cell[4], cell[5]);
            if al + be + ga >= 360.0 || al >= be + ga || be >= al + ga || ga >= al + be {
                return Err(invalid(
                    "crystal.cell",
                    format!("angles {al} {be} {ga} make no cell (each must be less than the sum of the other two, and the sum less than 360)"),
                ));
            }
            CellSource::Cell
        }
        (None, Some(m)) => {
            let a = crate::io::mosflm::read_matrix(&path(m))
                .map_err(|e| invalid("crystal.mosflm_matrix", e.to_string()))?;
            let det3 = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
                - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
                + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
            if !(det3.is_finite() && det3 != 0.0) {
                return Err(invalid(
                    "crystal.mosflm_matrix",
                    format!(
                        "{}: the matrix is singular (determinant {det3}): its rows are not three independent reciprocal vectors",
                        m.display()
                    ),
                ));
            }
            CellSource::Matrix(a)
        }
    };
    let misset_rad: [f64; 3] = if cr.misset_random {
        if cr.misset_deg.is_some() {
            return Err(invalid(
                "crystal.misset_deg",
                "give either misset_deg or misset_random, not both",
            ));
        }
        let seed = cr.misset_seed.or(cfg.seed).ok_or_else(|| {
            invalid(
                "crystal.misset_seed",
                "misset_random needs crystal.misset_seed (or seed) for a reproducible orientation",
            )
        })?;
        let mut r = Ran1::new(-seed);
        let u = super::rng::mosaic_rotation_umat(90.0, &mut r);
        let m = umat2misset(&u);
        notes.push(format!(
            "random misset angles: {} {} {} deg",
            m[0] * RTD,
            m[1] * RTD,
            m[2] * RTD
        ));
        m
    } else {
        let m = cr.misset_deg.unwrap_or([0.0; 3]);
        for (i, x) in m.iter().enumerate() {
            finite(&format!("crystal.misset_deg[{i}]"), *x)?;
        }
        [m[0] / RTD, m[1] / RTD, m[2] / RTD]
    };
    for (i, n) in cr.n_cells.iter().enumerate() {
        if !(n.is_finite() && *n > 0.0) {
            return Err(invalid(
                &format!("crystal.n_cells[{i}]"),
                format!("must be > 0 (got {n})"),
            ));
        }
    }
    let fudge = finite("crystal.fudge", cr.fudge)?;
    let default_f = finite("crystal.default_f", cr.default_f)?;

    // ---- parameter table ----
    let mut user = [0.0; 26];
    let mut internal = [0.0; 26];
    let mut scale = [1.0; 26];
    let mut applicable = [true; 26];
    let mut set = |p: Param, u: f64, i: f64, s: f64| {
        user[p as usize] = u;
        internal[p as usize] = i;
        scale[p as usize] = s;
    };
    if let (CellSource::Cell, Some(cell)) = (&cell_source, &cr.cell) {
        for (i, p) in Param::CELL.into_iter().enumerate() {
            set(p, cell[i], cell[i], 1.0);
        }
    }
    let misset_deg_user = match cr.misset_deg {
        Some(m) if !cr.misset_random => m,
        _ => [
            misset_rad[0] * RTD,
            misset_rad[1] * RTD,
            misset_rad[2] * RTD,
        ],
    };
    set(Param::MissetX, misset_deg_user[0], misset_rad[0], 1.0 / RTD);
    set(Param::MissetY, misset_deg_user[1], misset_rad[1], 1.0 / RTD);
    set(Param::MissetZ, misset_deg_user[2], misset_rad[2], 1.0 / RTD);
    set(Param::PhiStart, gon.phi_start_deg, phi0, 1.0 / RTD);
    // internal value of osc_range is the phi step; d step / d osc = 1/phisteps
    set(
        Param::OscRange,
        osc * RTD,
        phistep,
        1.0 / RTD / phisteps as f64,
    );
    set(
        Param::MosaicSpread,
        mosaic_spread * RTD,
        mosaic_spread,
        1.0 / RTD,
    );
    set(Param::NA, cr.n_cells[0], cr.n_cells[0], 1.0);
    set(Param::NB, cr.n_cells[1], cr.n_cells[1], 1.0);
    set(Param::NC, cr.n_cells[2], cr.n_cells[2], 1.0);
    match close_distance {
        Some(cd) => set(Param::Distance, det.close_distance_mm.unwrap(), cd, 1e-3),
        None => set(Param::Distance, det.distance_mm, distance, 1e-3),
    }
    let (pf, ps) = if pivot == Pivot::Beam {
        (fbeam, sbeam)
    } else {
        (fclose, sclose)
    };
    set(Param::BeamCenterF, pf * 1000.0, pf, 1e-3);
    set(Param::BeamCenterS, ps * 1000.0, ps, 1e-3);
    set(
        Param::DetectorRotX,
        det.rot_deg[0],
        det.rot_deg[0] / RTD,
        1.0 / RTD,
    );
    set(
        Param::DetectorRotY,
        det.rot_deg[1],
        det.rot_deg[1] / RTD,
        1.0 / RTD,
    );
    set(
        Param::DetectorRotZ,
        det.rot_deg[2],
        det.rot_deg[2] / RTD,
        1.0 / RTD,
    );
    set(
        Param::Twotheta,
        det.twotheta_deg,
        det.twotheta_deg / RTD,
        1.0 / RTD,
    );
    set(Param::Wavelength, wavelength_user, lambda0, 1e-10);
    set(Param::Fluence, fluence, fluence, 1.0);
    set(Param::Polarization, polarization, polarization, 1.0);
    set(Param::DefaultF, default_f, default_f, 1.0);
    if matches!(cell_source, CellSource::Matrix(_)) {
        for p in Param::CELL {
            applicable[p as usize] = false;
        }
    }

    let mut setup = Setup {
        fpixels,
        spixels,
        roi,
        pixel_size,
        detsize_f,
        detsize_s,
        convention: conv,
        pivot,
        fdet0: fdet,
        sdet0: sdet,
        odet0: odet,
        beam,
        polar,
        spindle,
        twotheta_axis: tt_axis,
        close_distance_given: close_distance.is_some(),
        xbeam,
        ybeam,
        oversample: 1,
        oversample_auto: false,
        oversample_thick: det.oversample_thick,
        oversample_polar: det.oversample_polar,
        oversample_omega: det.oversample_omega,
        point_pixel: det.point_pixel,
        curved: det.curved,
        thicksteps: thicksteps as usize,
        thickstep,
        thick,
        mu,
        sources,
        nopolar: bm.nopolar,
        dmin,
        water_size,
        cell_source,
        n_gt1: [false; 3],
        shape: cr.shape,
        fudge,
        mosaic_on: mosaic_spread > 0.0,
        mosaic_deviates,
        mosaic_deviates_edge,
        phisteps,
        phi_zero,
        interpolate: false,
        carryover: cfg.phi_carryover,
        steps: 1,
        user,
        internal,
        scale,
        applicable,
        notes,
    };

    // ---- crystal size -> N (needs the cell in metres) ----
    let base = setup.base_values();
    let cell = crystal_cell::<f64>(&setup, &base);
    let lengths_m = edge_lengths(&cell).map(|x| x * 1e-10);
    let mut n = cr.n_cells;
    if let Some(size) = cr.size_mm {
        let mut sample = [0.0; 3];
        for i in 0..3 {
            sample[i] = finite(&format!("crystal.size_mm[{i}]"), size[i])? / 1000.0;
        }
        if beamsize >= 0.0 {
            for (i, axis) in [(1, "high"), (2, "wide")] {
                if beamsize < sample[i] {
                    setup.notes.push(format!(
                        "clipping sample ({} m {axis}) with beam ({beamsize} m)",
                        sample[i]
                    ));
                    sample[i] = beamsize;
                }
            }
        }
        for i in 0..3 {
            if sample[i] > 0.0 {
                n[i] = (sample[i] / lengths_m[i]).ceil();
            }
        }
    }
    for x in n.iter_mut() {
        if *x <= 1.0 {
            *x = 1.0;
        }
    }
    for (i, p) in [Param::NA, Param::NB, Param::NC].iter().enumerate() {
        setup.user[*p as usize] = n[i];
        setup.internal[*p as usize] = n[i];
        setup.n_gt1[i] = n[i] > 1.0;
    }

    // ---- oversampling (C's recommendation uses the resolved distance) ----
    let recommended = recommended_oversample(&setup, &setup.base_values());
    setup.oversample_auto = !matches!(det.oversample, Some(o) if o > 0);
    let oversample = match det.oversample {
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
    setup.oversample = oversample as usize;

    // ---- structure factors ----
    let hkl = match &cr.hkl_file {
        Some(f) => {
            let p = path(f);
            let file_err = |e: IoError| invalid("crystal.hkl_file", e.to_string());
            let text = crate::io::read_text(&p).map_err(file_err)?;
            let lines = crate::io::hkl::parse_hkl_text(&p, &text).map_err(file_err)?;
            // The grid's extent, checked, before the grid is allocated.
            let points = crate::io::hkl::grid_points(&lines);
            need_so_far(
                setup.sources.len() as u64,
                phisteps as u64,
                setup.mosaic_deviates.len() as u64,
                points,
            )
            .check("crystal.hkl_file")?;
            Some(crate::io::hkl::grid_from_lines(&p, &lines, default_f).map_err(file_err)?)
        }
        None => None,
    };
    if hkl.is_none() && default_f == 0.0 {
        return Err(invalid(
            "crystal.default_f",
            "is 0 and no crystal.hkl_file is given: every structure factor would be 0",
        ));
    }
    let auto_interp = n.iter().any(|x| *x <= 2.0);
    setup.interpolate =
        hkl.as_ref().map(|h| h.count > 0).unwrap_or(false) && cr.interpolate.unwrap_or(auto_interp);

    // ---- mask ----
    let mask = match &det.mask_file {
        Some(m) => {
            let img = crate::io::smv::read_smv(&path(m))
                .map_err(|e| invalid("detector.mask_file", e.to_string()))?;
            if img.fpixels != fpixels || img.spixels != spixels {
                return Err(invalid(
                    "detector.mask_file",
                    format!(
                        "{}: mask is {} x {} but the detector is {fpixels} x {spixels}",
                        m.display(),
                        img.fpixels,
                        img.spixels
                    ),
                ));
            }
            Some(img.data)
        }
        None => None,
    };

    // The water background must be a finite number (an all-inf image is no image).
    let bg = water_background::<f64>(&setup, fluence);
    if !bg.is_finite() {
        return Err(invalid(
            "beam.water_um",
            format!(
                "{} um of water gives a background of {bg} photons per pixel: not a finite image",
                super::budget::num(bm.water_um)
            ),
        ));
    }
    setup.steps = setup
        .sources
        .len()
        .saturating_mul(setup.mosaic_deviates.len())
        .saturating_mul(phisteps)
        .saturating_mul(setup.oversample)
        .saturating_mul(setup.oversample);
    Ok((setup, hkl, mask))
}

/// Cell vectors (Å, lab frame, after misset) from parameter values.
/// C's recommended subpixels per side at parameter values `pv`:
/// ceil(3 x largest crystal edge (N x cell edge) / (λ distance / pixel)),
/// at least 1 and (ours) at most 64. A step function of cell, N, λ and
/// distance, so an automatic oversampling makes the image jump where it
/// switches.
pub fn recommended_oversample(s: &Setup, pv: &ParamValues<f64>) -> i64 {
    let cell = crystal_cell::<f64>(s, pv);
    let lengths_m = edge_lengths(&cell).map(|x| x * 1e-10);
    let n = [Param::NA, Param::NB, Param::NC].map(|p| s.iv(p, pv).max(1.0));
    let xtalsize_max = (0..3).map(|i| lengths_m[i] * n[i]).fold(0.0, f64::max);
    let geo = detector_geometry::<f64>(s, pv);
    let reciprocal_pixel_size = s.iv(Param::Wavelength, pv) * geo.distance / s.pixel_size;
    let recommended = (3.0 * xtalsize_max / reciprocal_pixel_size).ceil();
    if recommended.is_nan() || recommended < 1.0 {
        1
    } else {
        recommended.min(64.0) as i64
    }
}

pub fn crystal_cell<T: Real>(s: &Setup, pv: &ParamValues<T>) -> super::cell::CellVectors<T> {
    let misset = [
        s.iv(Param::MissetX, pv),
        s.iv(Param::MissetY, pv),
        s.iv(Param::MissetZ, pv),
    ];
    match &s.cell_source {
        CellSource::Cell => {
            let cell = Param::CELL.map(|p| s.iv(p, pv));
            let (recip, v_cell) = reciprocal_from_cell(cell);
            finish_cell(recip, misset, Some(([cell[0], cell[1], cell[2]], v_cell)))
        }
        CellSource::Matrix(m) => {
            // remove λ from the A matrix: scale by 1e-10/λ0 (λ0 in metres)
            let k = c::<T>(1e-10) / s.iv(Param::Wavelength, pv);
            let recip = [
                Vec3::<T>::cst(m[0]).scale(k),
                Vec3::cst(m[1]).scale(k),
                Vec3::cst(m[2]).scale(k),
            ];
            finish_cell(recip, misset, None)
        }
    }
}

/// The detector after rotations, pivot and two-theta.
#[derive(Clone, Copy, Debug)]
pub struct DetectorGeometry<T> {
    pub fdet: Vec3<T>,
    pub sdet: Vec3<T>,
    pub odet: Vec3<T>,
    pub pix0: Vec3<T>,
    pub close_distance: T,
    pub distance: T,
    pub fbeam: T,
    pub sbeam: T,
    pub fclose: T,
    pub sclose: T,
}

/// Detector orientation and origin (spec-a-core "Detector rotations and pivot").
pub fn detector_geometry<T: Real>(s: &Setup, pv: &ParamValues<T>) -> DetectorGeometry<T> {
    use super::rotation::{rotate_axis, rotate_xyz};
    use super::scalar::dot_product;
    let (rx, ry, rz) = (
        s.iv(Param::DetectorRotX, pv),
        s.iv(Param::DetectorRotY, pv),
        s.iv(Param::DetectorRotZ, pv),
    );
    let twotheta = s.iv(Param::Twotheta, pv);
    let beam = Vec3::<T>::cst(s.beam);
    let tt_axis = Vec3::<T>::cst(s.twotheta_axis);
    let (f0, s0, o0) = (
        Vec3::<T>::cst(s.fdet0),
        Vec3::<T>::cst(s.sdet0),
        Vec3::<T>::cst(s.odet0),
    );
    let mut ratio = dot_product(&beam, &rotate_xyz(&o0, rx, ry, rz));
    if ratio.val() == 0.0 {
        ratio = c(f64::MIN_POSITIVE);
    }
    let d = s.iv(Param::Distance, pv);
    let close_distance = if s.close_distance_given {
        d
    } else if (ratio * d).val() < 0.0 {
        -(ratio * d)
    } else {
        ratio * d
    };
    let distance = close_distance / ratio;
    let pf = s.iv(Param::BeamCenterF, pv);
    let ps = s.iv(Param::BeamCenterS, pv);
    let mut pix0 = Vec3::<T>::zero();
    if s.pivot == Pivot::Sample {
        pix0 = f0.scale(-pf) + s0.scale(-ps) + o0.scale(close_distance);
        pix0 = rotate_xyz(&pix0, rx, ry, rz);
        pix0 = rotate_axis(&pix0, &tt_axis, twotheta);
    }
    let fdet = rotate_axis(&rotate_xyz(&f0, rx, ry, rz), &tt_axis, twotheta);
    let sdet = rotate_axis(&rotate_xyz(&s0, rx, ry, rz), &tt_axis, twotheta);
    let odet = rotate_axis(&rotate_xyz(&o0, rx, ry, rz), &tt_axis, twotheta);
    if s.pivot == Pivot::Beam {
        pix0 = fdet.scale(-pf) + sdet.scale(-ps) + beam.scale(distance);
    }
    let fclose = -dot_product(&pix0, &fdet);
    let sclose = -dot_product(&pix0, &sdet);
    let close_distance = dot_product(&pix0, &odet);
    let newv = beam.scale(close_distance / ratio) - pix0;
    DetectorGeometry {
        fdet,
        sdet,
        odet,
        pix0,
        close_distance,
        distance: close_distance / ratio,
        fbeam: dot_product(&fdet, &newv),
        sbeam: dot_product(&sdet, &newv),
        fclose,
        sclose,
    }
}

/// I_bg: constant water background per pixel (spec-a-core "Background").
pub fn water_background<T: Real>(s: &Setup, fluence: T) -> T {
    let f_bg = 2.57;
    let w = s.water_size;
    c::<T>(f_bg * f_bg * R_E_SQR) * fluence * c::<T>(w * w * w * 1e6 * AVOGADRO / 18.0)
}
