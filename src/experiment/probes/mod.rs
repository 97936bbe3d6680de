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
pub mod simulate;

pub use gradcheck::gradcheck_step;
pub use phi_cache::{phi_cache_cpu, phi_cache_loss};
pub use simulate::png_bytes;

use super::config::{ProbeSpec, Reduction};
use super::load::Experiment;
use super::matrix::Cell;
use super::result::{Log, Outcome, Verdict};
use crate::engine::{self, Device, EngineError, RenderOptions, Rendered};
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

/// Write `data` (width x height, fast index innermost) as a log-scale PNG.
pub(crate) fn log_png(dir: &Path, name: &str, data: &[f64], w: usize, h: usize) -> PResult<String> {
    crate::io::png_image::write_log_png(data, w, h, &dir.join(name))?;
    Ok(name.to_string())
}

/// Write a signed image as a PNG on a diverging scale centred on 0.
pub(crate) fn diverging_png(
    dir: &Path,
    name: &str,
    data: &[f64],
    w: usize,
    h: usize,
) -> PResult<String> {
    crate::io::png_image::write_diverging_png(data, w, h, &dir.join(name))?;
    Ok(name.to_string())
}

/// Write an image as raw little-endian float32 (`image.bin`, `d_<param>.bin`).
pub(crate) fn float_file(dir: &Path, name: &str, data: &[f64]) -> PResult<String> {
    crate::io::float_image::write_float_image_f64(&dir.join(name), data)?;
    Ok(name.to_string())
}

/// Width and height of a ROI.
pub(crate) fn roi_dims(roi: [u32; 4]) -> (usize, usize) {
    (
        (roi[1] - roi[0] + 1) as usize,
        (roi[3] - roi[2] + 1) as usize,
    )
}
