//! Probes: what a cell measures, one file each. Each returns an
//! [`Outcome`](super::result::Outcome); the scheduler records it in
//! `result.json` (deterministic: no timings) and the timing in
//! `timing.json`. A probe writes its own files (images, pixel tables) into
//! the cell folder it is given, through [`crate::io`].

// NaN must fail a check: `!(x <= tol)` is deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod benchmark;
pub mod gradcheck;
pub mod parity;
pub mod phi_cache;
pub mod refine;
pub mod simulate;

pub use gradcheck::gradcheck_step;
pub use phi_cache::{phi_cache_cpu, phi_cache_loss};

use super::config::{ProbeSpec, Reduction};
use super::load::Experiment;
use super::matrix::Cell;
use super::result::{ArrayFile, Log, Outcome, Verdict};
use crate::engine::{self, Device, EngineError, RenderOptions, Rendered};
use crate::physics::params::Param;
use crate::physics::Simulation;
use std::path::Path;
use std::time::Instant;

/// How a probe stops early.
pub(crate) enum Stop {
    /// The device is absent: SKIPPED.
    Skip(String),
    /// ERROR with this message.
    Error(String),
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Unavailable(r) => Stop::Skip(r),
            EngineError::Failed(m) => Stop::Error(m),
        }
    }
}

impl From<crate::io::IoError> for Stop {
    fn from(e: crate::io::IoError) -> Self {
        Stop::Error(e.to_string())
    }
}

pub(crate) type PResult<T> = Result<T, Stop>;

/// Test hook: a cell with this id panics (to exercise panic capture).
pub const PANIC_CELL_ENV: &str = "RUNNER_TEST_PANIC_CELL";

/// Run the cell's probe, writing its files into `dir`.
pub fn run_probe(exp: &Experiment, cell: &Cell, dir: &Path, log: &mut Log) -> Outcome {
    let probe = &exp.resolved.probe[cell.probe_index];
    log.line(format!(
        "cell {} probe {} ({}) device {} dtype {} param {} roi {:?}",
        cell.id,
        cell.probe_name,
        probe.kind(),
        cell.device,
        cell.dtype,
        cell.param.map(|p| p.name()).unwrap_or("-"),
        cell.effective_roi
    ));
    if std::env::var(PANIC_CELL_ENV).ok().as_deref() == Some(cell.id.as_str()) {
        panic!("{PANIC_CELL_ENV}: test panic in cell {}", cell.id);
    }
    let r = match probe {
        ProbeSpec::Gradcheck(g) => gradcheck::run(exp, cell, g, dir, log),
        ProbeSpec::PhiCache(p) => phi_cache::run(cell, p, log),
        ProbeSpec::Parity(p) => parity::run(exp, cell, p, dir, log),
        ProbeSpec::Simulate(p) => simulate::run(exp, cell, p, dir, log),
        ProbeSpec::Benchmark(b) => prepare(exp, cell, log)
            .and_then(|sim| benchmark::run(&sim, cell, b, log).map_err(Stop::from)),
        ProbeSpec::Refine(p) => refine::run(exp, cell, p, dir, log),
    };
    match r {
        Ok(o) => o,
        Err(Stop::Skip(reason)) => {
            log.line(format!("SKIPPED: {reason}"));
            let mut o = Outcome::empty(Verdict::Skipped);
            o.reason = Some(format!("device {} unavailable: {reason}", cell.device));
            o.unavailable = true;
            o
        }
        Err(Stop::Error(m)) => {
            log.line(format!("ERROR: {m}"));
            Outcome::error(m)
        }
    }
}

/// The outcome of a probe's checks, logged: PASS, or FAIL with the failures.
pub(crate) fn checked(failures: &[String], log: &mut Log) -> Outcome {
    let o = Outcome::checked(failures);
    log.verdict(o.status, failures);
    o
}

pub(crate) fn prepare(exp: &Experiment, cell: &Cell, log: &mut Log) -> PResult<Simulation> {
    let sim = Simulation::prepare(&cell.model, &exp.base_dir)
        .map_err(|e| Stop::Error(format!("setup: {e}")))?;
    log.line(format!(
        "prepared: {}x{} pixels",
        sim.fpixels(),
        sim.spixels()
    ));
    for n in sim.notes() {
        log.line(format!("note: {}", n.strip_prefix("note: ").unwrap_or(n)));
    }
    Ok(sim)
}

pub(crate) fn render(
    sim: &Simulation,
    device: Device,
    opts: &RenderOptions,
    log: &mut Log,
    what: &str,
) -> PResult<Rendered> {
    let t = Instant::now();
    let r = engine::render(sim, device, opts)?;
    log.line(format!(
        "render {what}: {} on {} in {:.3} s",
        opts.dtype,
        r.device,
        t.elapsed().as_secs_f64()
    ));
    if r.image.len() != r.fpixels * r.spixels {
        return Err(Stop::Error(format!(
            "engine returned {} pixels for a {}x{} image",
            r.image.len(),
            r.fpixels,
            r.spixels
        )));
    }
    Ok(r)
}

pub(crate) fn reduce(v: &[f64], red: Reduction) -> f64 {
    let s: f64 = v.iter().sum();
    match red {
        Reduction::Sum => s,
        Reduction::Mean => s / v.len().max(1) as f64,
    }
}

pub(crate) fn ok_within(ad: f64, reference: f64, atol: f64, rtol: f64) -> bool {
    (ad - reference).abs() <= atol + rtol * reference.abs()
}

/// `abs / |reference|`; 0 when both are 0, infinite when only the reference is.
pub(crate) fn rel(abs: f64, reference: f64) -> f64 {
    if reference != 0.0 {
        abs / reference.abs()
    } else if abs == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// The detector a cell's pictures show: its size and the cell's ROI.
#[derive(Clone, Copy)]
pub(crate) struct Detector {
    pub fpixels: usize,
    pub spixels: usize,
    pub roi: [u32; 4],
}

impl Detector {
    pub(crate) fn of(cell: &Cell) -> Self {
        Detector {
            fpixels: cell.fpixels,
            spixels: cell.spixels,
            roi: cell.effective_roi,
        }
    }

    /// The ROI to outline: none when it is the whole detector.
    fn outline(&self) -> Option<[u32; 4]> {
        let whole = [0, self.fpixels as u32 - 1, 0, self.spixels as u32 - 1];
        (self.roi != whole).then_some(self.roi)
    }

    /// Values known only in the ROI (row-major over it, fast innermost) as
    /// a full-detector image, NaN (drawn grey) outside: a region is always
    /// drawn in its detector, never alone.
    pub(crate) fn in_context(&self, roi_values: &[f64]) -> PResult<Vec<f64>> {
        crate::io::picture::embed_roi(self.fpixels, self.spixels, self.roi, roi_values)
            .map_err(Stop::Error)
    }

    fn frame<'a>(&self, data: &'a [f64]) -> PResult<crate::io::picture::Frame<'a>> {
        crate::io::picture::Frame::new(data, self.fpixels, self.spixels).map_err(Stop::Error)
    }
}

/// Write PNG bytes (or the drawing error) as `dir/name`.
fn write_png(dir: &Path, name: &str, png: Result<Vec<u8>, String>) -> PResult<String> {
    let png = png.map_err(|e| Stop::Error(format!("{name}: {e}")))?;
    crate::io::write_atomic(&dir.join(name), &png)?;
    Ok(name.to_string())
}

/// An intensity image (full detector, fast innermost; NaN = no value) as a
/// PNG with axes, colour bar and the ROI outlined.
pub(crate) fn image_png(
    dir: &Path,
    name: &str,
    title: String,
    data: &[f64],
    det: Detector,
    scale: crate::io::picture::Scale,
) -> PResult<String> {
    use crate::io::picture::{detector_png, DetectorOptions};
    let opts = DetectorOptions {
        title,
        scale,
        roi: det.outline(),
        ..DetectorOptions::default()
    };
    write_png(dir, name, detector_png(det.frame(data)?, &opts))
}

/// A derivative image dI/dp (full detector) as a PNG on a symmetric
/// blue-white-red scale over ±max|value|, with its colour bar.
pub(crate) fn derivative_png(
    dir: &Path,
    name: &str,
    title: String,
    param: Param,
    data: &[f64],
    det: Detector,
) -> PResult<String> {
    use crate::io::picture::{derivative_png, SignedOptions};
    let opts = SignedOptions {
        title,
        units: format!("dI/d {} (photons/pixel per {})", param.name(), param.unit()),
        roi: det.outline(),
        ..SignedOptions::default()
    };
    write_png(dir, name, derivative_png(det.frame(data)?, &opts))
}

/// `(image - reference) / max|reference|` (full detector) as a PNG whose
/// colours saturate at ±`full_scale`, the scale stated in the picture.
pub(crate) fn difference_png(
    dir: &Path,
    name: &str,
    title: String,
    image: &[f64],
    reference: &[f64],
    det: Detector,
    full_scale: f64,
) -> PResult<String> {
    use crate::io::picture::{difference_png, DifferenceOptions};
    let opts = DifferenceOptions {
        title,
        full_scale,
        roi: det.outline(),
    };
    write_png(
        dir,
        name,
        difference_png(det.frame(image)?, det.frame(reference)?, &opts),
    )
}

/// A float64 image as `(spixels, fpixels)` .npy.
pub(crate) fn npy_image(
    dir: &Path,
    name: &str,
    data: &[f64],
    det: Detector,
    arrays: &mut Vec<ArrayFile>,
) -> PResult<String> {
    crate::io::npy::write_image(&dir.join(name), data, det.spixels, det.fpixels)?;
    arrays.push(ArrayFile {
        file: name.to_string(),
        dtype: "float64".into(),
        shape: vec![det.spixels, det.fpixels],
        axes: vec!["slow".into(), "fast".into()],
        params: vec![],
    });
    Ok(name.to_string())
}

/// Derivative images as one float64 `(param, spixels, fpixels)` .npy, the
/// parameter order recorded with it.
pub(crate) fn npy_stack(
    dir: &Path,
    name: &str,
    planes: &[(Param, &[f64])],
    det: Detector,
    arrays: &mut Vec<ArrayFile>,
) -> PResult<String> {
    let data: Vec<&[f64]> = planes.iter().map(|(_, d)| *d).collect();
    crate::io::npy::write_stack(&dir.join(name), &data, det.spixels, det.fpixels)?;
    arrays.push(ArrayFile {
        file: name.to_string(),
        dtype: "float64".into(),
        shape: vec![planes.len(), det.spixels, det.fpixels],
        axes: vec!["param".into(), "slow".into(), "fast".into()],
        params: planes.iter().map(|(p, _)| p.name().to_string()).collect(),
    });
    Ok(name.to_string())
}

/// Write an image as raw little-endian float32 (`image.bin`, `d_<param>.bin`).
pub(crate) fn float_file(dir: &Path, name: &str, data: &[f64]) -> PResult<String> {
    crate::io::float_image::write_float_image_f64(&dir.join(name), data)?;
    Ok(name.to_string())
}
