//! Probes: what a cell measures. Each returns an [`Outcome`]; the runner
//! writes it to `result.json` (deterministic: no timings) and the timing to
//! `timing.json`.

// NaN must fail a check: `!(x <= tol)` is deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::config::*;
use super::load::Experiment;
use super::matrix::Cell;
use crate::engine::{self, Device, Dtype, EngineError, RenderOptions, Rendered};
use crate::physics::cell::cell_vectors;
use crate::physics::params::Param;
use crate::physics::scalar::{Real, Vec3};
use crate::physics::Simulation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Instant;

/// A cell's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Error,
    Skipped,
    /// The check met a point where the image is not differentiable (a kink,
    /// a jump, a flat piece): neither a pass nor a wrong number.
    #[serde(rename = "NONSMOOTH")]
    NonSmooth,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
            Status::Skipped => "SKIPPED",
            Status::NonSmooth => "NONSMOOTH",
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub reason: Option<String>,
    pub loss: Option<f64>,
    pub grad_ad: Option<f64>,
    pub grad_fd: Option<f64>,
    pub abs_err: Option<f64>,
    pub rel_err: Option<f64>,
    pub details: Map<String, Value>,
    /// Files the probe wrote into the cell folder (names).
    pub files: Vec<String>,
    /// The engine's description of the device (timing.json, log; not result.json).
    pub engine: Option<String>,
    /// True when the device was absent.
    pub unavailable: bool,
}

impl Outcome {
    pub fn empty(status: Status) -> Self {
        Outcome {
            status,
            reason: None,
            loss: None,
            grad_ad: None,
            grad_fd: None,
            abs_err: None,
            rel_err: None,
            details: Map::new(),
            files: vec![],
            engine: None,
            unavailable: false,
        }
    }
    pub fn error(msg: impl Into<String>) -> Self {
        let mut o = Outcome::empty(Status::Error);
        o.reason = Some(msg.into());
        o
    }
}

/// A per-cell log, written to `log.txt`.
#[derive(Debug)]
pub struct Log {
    start: Instant,
    pub text: String,
}

impl Default for Log {
    fn default() -> Self {
        Self::new()
    }
}

impl Log {
    pub fn new() -> Self {
        Log {
            start: Instant::now(),
            text: String::new(),
        }
    }
    pub fn line(&mut self, s: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        for l in s.as_ref().lines() {
            self.text.push_str(&format!("[{t:9.3}s] {l}\n"));
        }
    }
}

/// How a probe stops early.
enum Stop {
    Skip(String),
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

type PResult<T> = Result<T, Stop>;

/// Test hook: a cell with this id panics (to exercise panic capture).
pub const PANIC_CELL_ENV: &str = "RUNNER_TEST_PANIC_CELL";

/// PASS when no check failed, else FAIL; logged with the failures.
fn verdict(failures: &[String], log: &mut Log) -> Status {
    let status = if failures.is_empty() {
        Status::Pass
    } else {
        Status::Fail
    };
    if failures.is_empty() {
        log.line(status.as_str());
    } else {
        log.line(format!("{}: {}", status.as_str(), failures.join("; ")));
    }
    status
}

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
        ProbeSpec::Gradcheck(g) => gradcheck(exp, cell, g, dir, log),
        ProbeSpec::PhiCache(p) => phi_cache(cell, p, log),
        ProbeSpec::Parity(p) => parity(exp, cell, p, dir, log),
        ProbeSpec::Simulate(p) => simulate(exp, cell, p, dir, log),
        ProbeSpec::Benchmark(b) => prepare(exp, cell, log)
            .and_then(|sim| super::bench::benchmark(&sim, cell, b, log).map_err(Stop::from)),
    };
    match r {
        Ok(o) => o,
        Err(Stop::Skip(reason)) => {
            log.line(format!("SKIPPED: {reason}"));
            let mut o = Outcome::empty(Status::Skipped);
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

fn prepare(exp: &Experiment, cell: &Cell, log: &mut Log) -> PResult<Simulation> {
    let sim = Simulation::prepare(&cell.model, &exp.base_dir)
        .map_err(|e| Stop::Error(format!("setup: {e}")))?;
    log.line(format!(
        "prepared: {}x{} pixels",
        sim.fpixels(),
        sim.spixels()
    ));
    for n in sim.notes() {
        log.line(format!("note: {n}"));
    }
    Ok(sim)
}

fn render(
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

fn reduce(v: &[f64], red: Reduction) -> f64 {
    let s: f64 = v.iter().sum();
    match red {
        Reduction::Sum => s,
        Reduction::Mean => s / v.len().max(1) as f64,
    }
}

fn ok_within(ad: f64, reference: f64, atol: f64, rtol: f64) -> bool {
    (ad - reference).abs() <= atol + rtol * reference.abs()
}

fn rel(abs: f64, reference: f64) -> f64 {
    if reference != 0.0 {
        abs / reference.abs()
    } else if abs == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

fn finite_or_null(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

/// The finite-difference step of parameter `p` at value `x0` (see [`EpsMode`]).
pub fn gradcheck_step(p: Param, x0: f64, eps: f64, mode: EpsMode) -> f64 {
    match mode {
        EpsMode::Absolute => eps,
        EpsMode::Relative if x0 != 0.0 => eps * x0.abs(),
        EpsMode::Relative => eps,
        EpsMode::Auto => {
            let h = eps * x0.abs().max(1.0);
            if p == Param::MosaicSpread {
                // C passes the spread through float32: a step must span many
                // of its ulps for a difference quotient to mean anything
                h.max(1e-3 * x0.abs())
            } else {
                h
            }
        }
    }
}

/// Finite differences of the ROI, per pixel and of the loss: the reference
/// (Richardson-extrapolated from two successive steps h/2^j, h/2^(j+1),
/// the pair with the smallest error estimate), that estimate, and the
/// left/right asymmetry at the two finest steps (central differences only).
struct FiniteDifferences {
    one_sided: bool,
    pix: Vec<f64>,
    err_pix: Vec<f64>,
    loss: f64,
    /// The plain difference quotient at step h.
    loss_h: f64,
    err_loss: f64,
    /// (fp - 2 f0 + fm) / step at the two finest steps, per pixel and of the loss.
    asym_pix: Vec<(f64, f64)>,
    asym_loss: (f64, f64),
    /// Rounding noise of a difference quotient at the finest step.
    noise_pix: Vec<f64>,
    noise_loss: f64,
    loss_plus: f64,
    loss_minus: Option<f64>,
    finest_step: f64,
}

/// `plus[j]` (and `minus[j]`, away from a domain edge) are the ROI values at
/// +-h/2^j; at least two levels.
fn finite_differences(
    f0: &[f64],
    plus: &[Vec<f64>],
    minus: Option<&[Vec<f64>]>,
    h: f64,
    red: Reduction,
) -> FiniteDifferences {
    // the loss as one more "pixel"
    let ext = |v: &[f64]| {
        let mut e = v.to_vec();
        e.push(reduce(v, red));
        e
    };
    let f0 = ext(f0);
    let plus: Vec<Vec<f64>> = plus.iter().map(|v| ext(v)).collect();
    let minus: Option<Vec<Vec<f64>>> = minus.map(|m| m.iter().map(|v| ext(v)).collect());
    let (n, nl) = (f0.len(), plus.len());
    let step = |j: usize| h / 2f64.powi(j as i32);
    let order = if minus.is_some() { 4.0 } else { 2.0 };
    let d: Vec<Vec<f64>> = (0..nl)
        .map(|j| {
            (0..n)
                .map(|i| match &minus {
                    Some(m) => (plus[j][i] - m[j][i]) / (2.0 * step(j)),
                    None => (plus[j][i] - f0[i]) / step(j),
                })
                .collect()
        })
        .collect();
    let mut best = vec![0.0; n];
    let mut err = vec![f64::INFINITY; n];
    for j in 1..nl {
        for i in 0..n {
            let e = (d[j][i] - d[j - 1][i]).abs() / (order - 1.0);
            if e < err[i] || (j == 1 && e.is_nan()) {
                best[i] = (order * d[j][i] - d[j - 1][i]) / (order - 1.0);
                err[i] = e;
            }
        }
    }
    let last = nl - 1;
    // rounding floor of a difference quotient at the finest step: a few
    // hundred ulps of the image values (sums over many samples)
    let noise = |i: usize| {
        let other = match &minus {
            Some(m) => m[last][i].abs(),
            None => plus[last - 1][i].abs(),
        };
        256.0 * f64::EPSILON * (f0[i].abs() + plus[last][i].abs() + other) / step(last)
    };
    let asym: Vec<(f64, f64)> = match &minus {
        Some(m) => (0..n)
            .map(|i| {
                let a = |j: usize| (plus[j][i] - 2.0 * f0[i] + m[j][i]) / step(j);
                (a(last - 1), a(last))
            })
            .collect(),
        None => vec![(0.0, 0.0); n],
    };
    FiniteDifferences {
        one_sided: minus.is_none(),
        pix: best[..n - 1].to_vec(),
        err_pix: err[..n - 1].to_vec(),
        loss: best[n - 1],
        loss_h: d[0][n - 1],
        err_loss: err[n - 1],
        asym_pix: asym[..n - 1].to_vec(),
        asym_loss: asym[n - 1],
        noise_pix: (0..n - 1).map(noise).collect(),
        noise_loss: noise(n - 1),
        loss_plus: plus[0][n - 1],
        loss_minus: minus.as_ref().map(|m| m[0][n - 1]),
        finest_step: step(last),
    }
}

/// Left and right differences disagree, at h and at h/2, by more than the
/// tolerance: a kink (the asymmetry stays) or a jump (it doubles), where a
/// smooth function's asymmetry halves with the step.
fn asymmetric(a: (f64, f64), limit: f64, noise: f64) -> bool {
    let (a1, a2) = (a.0.abs(), a.1.abs());
    a2 > limit + noise && a2 > 0.75 * a1
}

fn gradcheck(
    exp: &Experiment,
    cell: &Cell,
    g: &GradcheckProbe,
    dir: &Path,
    log: &mut Log,
) -> PResult<Outcome> {
    let p: Param = cell
        .param
        .ok_or_else(|| Stop::Error("no parameter".into()))?;
    let sim = prepare(exp, cell, log)?;
    let roi = cell.effective_roi;
    let x0 = sim.base_value(p).map_err(|e| Stop::Error(e.to_string()))?;
    let eps = g.eps_by_param.get(p.name()).copied().unwrap_or(g.eps);
    let h = gradcheck_step(p, x0, eps, g.eps_mode);
    let boundary = sim.domain_edge(p);
    log.line(format!(
        "parameter {p} = {x0} {}; finite-difference steps h = {h:e} and h/2{}",
        p.unit(),
        if boundary.is_some() {
            " (one-sided: domain edge)"
        } else {
            ""
        }
    ));
    if let Some(b) = &boundary {
        log.line(format!("boundary: {b}"));
    }
    let opts = |dtype: Dtype, derivs: Vec<Param>, shifts: Vec<(Param, f64)>| RenderOptions {
        dtype,
        roi: Some(roi),
        derivatives: derivs,
        shifts,
    };

    let r = render(
        &sim,
        cell.device,
        &opts(cell.dtype, vec![p], vec![]),
        log,
        "with derivative",
    )?;
    let engine_name = r.device.clone();
    let img = r.roi_values(&r.image);
    let d = r
        .derivative(p)
        .ok_or_else(|| Stop::Error(format!("engine returned no derivative image for {p}")))?;
    let dimg = r.roi_values(d);
    let loss = reduce(&img, g.reduction);
    let grad_ad = reduce(&dimg, g.reduction);

    // float64 renders for the finite differences: base, +h, +h/2 (and -h,
    // -h/2 away from a domain edge)
    let mut fd_render = |shift: f64, what: &str| -> PResult<Vec<f64>> {
        let shifts = if shift == 0.0 {
            vec![]
        } else {
            vec![(p, shift)]
        };
        let r = render(
            &sim,
            cell.device,
            &opts(Dtype::F64, vec![], shifts),
            log,
            what,
        )?;
        Ok(r.roi_values(&r.image))
    };
    let f0 = fd_render(0.0, "base (float64)")?;
    let mut plus = vec![fd_render(h, "+h")?, fd_render(h / 2.0, "+h/2")?];
    let mut minus = match boundary {
        None => Some(vec![fd_render(-h, "-h")?, fd_render(-h / 2.0, "-h/2")?]),
        Some(_) => None,
    };
    let mut fd = finite_differences(&f0, &plus, minus.as_deref(), h, g.reduction);
    // Halve the step (down to h/65536) while the differences have not settled
    // within a quarter of the tolerance: a steep flank, or a jump within the
    // step that a smaller step leaves outside.
    let settled = |fd: &FiniteDifferences| {
        let max_fd = fd.pix.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        (0..fd.pix.len()).all(|i| {
            fd.err_pix[i]
                <= 0.25 * (g.atol + g.rtol * fd.pix[i].abs() + g.scale_rtol * max_fd)
                    + fd.noise_pix[i]
        })
    };
    while !settled(&fd) && plus.len() < 17 {
        let hj = h / 2f64.powi(plus.len() as i32);
        plus.push(fd_render(hj, &format!("+{hj:e}"))?);
        if let Some(m) = minus.as_mut() {
            m.push(fd_render(-hj, &format!("-{hj:e}"))?);
        }
        fd = finite_differences(&f0, &plus, minus.as_deref(), h, g.reduction);
    }
    let grad_fd = fd.loss;

    // The reference: the finite difference (float64 cells) or the float64
    // forward-mode derivative (float32 cells).
    let (ref_pix, ref_grad, ref_loss, atol, rtol, reference) = match cell.dtype {
        Dtype::F64 => (
            fd.pix.clone(),
            grad_fd,
            None,
            g.atol,
            g.rtol,
            if fd.one_sided {
                "one-sided difference into the domain, Richardson (h, h/2), float64"
            } else {
                "central difference, Richardson (h, h/2), float64"
            },
        ),
        Dtype::F32 => {
            let r64 = render(
                &sim,
                cell.device,
                &opts(Dtype::F64, vec![p], vec![]),
                log,
                "float64 reference",
            )?;
            let d64 = r64.derivative(p).ok_or_else(|| {
                Stop::Error(format!(
                    "engine returned no float64 derivative image for {p}"
                ))
            })?;
            let dpix = r64.roi_values(d64);
            let g64 = reduce(&dpix, g.reduction);
            let l64 = reduce(&r64.roi_values(&r64.image), g.reduction);
            (
                dpix,
                g64,
                Some(l64),
                g.f32_atol,
                g.f32_rtol,
                "float64 forward-mode derivative",
            )
        }
    };

    // Tolerances follow the size of the derivative image.
    let max_ref = ref_pix.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let abs_ref: Vec<f64> = ref_pix.iter().map(|v| v.abs()).collect();
    let loss_scale = reduce(&abs_ref, g.reduction);
    let scale_rtol = match cell.dtype {
        Dtype::F32 => g.f32_max_rtol,
        Dtype::F64 => g.scale_rtol,
    };
    let pix_floor = scale_rtol * max_ref;
    let abs_err = (grad_ad - ref_grad).abs();
    let rel_err = rel(abs_err, ref_grad);
    let loss_limit = atol
        + scale_rtol * loss_scale
        + rtol * ref_grad.abs()
        + if cell.dtype == Dtype::F64 {
            fd.noise_loss
        } else {
            0.0
        };
    let loss_ok = abs_err <= loss_limit;

    // Smoothness: the float64 differences' own tolerance, whatever the dtype.
    let fd_max = fd.pix.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let fd_abs: Vec<f64> = fd.pix.iter().map(|v| v.abs()).collect();
    let smooth_limit = |v: f64, scale: f64| g.atol + g.rtol * v.abs() + g.scale_rtol * scale;

    let [f0_, f1, s0, _] = roi;
    let width = (f1 - f0_ + 1) as usize;
    let mut worst: Option<(usize, f64)> = None;
    let mut pixels_ok = true;
    let mut nonsmooth_pixels = 0usize;
    let mut csv = String::from(
        "fast,slow,intensity,d_ad,d_ref,d_fd,abs_err,limit,ok,asym_h,asym_h2,smooth\n",
    );
    for (i, (&ad, &rf)) in dimg.iter().zip(&ref_pix).enumerate() {
        let err = (ad - rf).abs();
        // float64 cells: below the differences' rounding floor nothing can be
        // resolved (a derivative that is 0 up to rounding)
        let fd_floor = match cell.dtype {
            Dtype::F64 => fd.noise_pix.get(i).copied().unwrap_or(0.0),
            Dtype::F32 => 0.0,
        };
        let lim = atol + rtol * rf.abs() + pix_floor + fd_floor;
        let ok = err <= lim;
        pixels_ok &= ok;
        let (a1, a2) = fd.asym_pix.get(i).copied().unwrap_or((0.0, 0.0));
        let smooth = (fd.one_sided || !asymmetric((a1, a2), smooth_limit(fd.pix[i], fd_max), fd.noise_pix[i]))
                // and the differences settled as the step shrank
                && fd.err_pix[i] <= smooth_limit(fd.pix[i], fd_max) + fd.noise_pix[i];
        if !smooth {
            nonsmooth_pixels += 1;
        }
        let score = if lim > 0.0 {
            err / lim
        } else if err > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        if worst.map(|(_, s)| score > s).unwrap_or(true) || score.is_nan() {
            worst = Some((i, score));
        }
        let (fx, sx) = (f0_ as usize + i % width, s0 as usize + i / width);
        csv.push_str(&format!(
            "{fx},{sx},{:e},{ad:e},{rf:e},{:e},{err:e},{lim:e},{ok},{a1:e},{a2:e},{smooth}\n",
            img[i], fd.pix[i]
        ));
    }
    let loss_nonsmooth = !fd.one_sided
        && asymmetric(
            fd.asym_loss,
            smooth_limit(fd.loss, reduce(&fd_abs, g.reduction)),
            fd.noise_loss,
        );
    crate::evidence::write_atomic(&dir.join("pixels.csv"), csv.as_bytes()).map_err(Stop::Error)?;
    let roi_h = img.len() / width.max(1);
    let mut files = vec!["pixels.csv".to_string()];
    files.push(log_png(dir, "image.png", &img, width, roi_h)?);
    files.push(diverging_png(
        dir,
        &format!("d_{}.png", p.name()),
        &dimg,
        width,
        roi_h,
    )?);

    let nonzero_pixels = img.iter().filter(|v| **v != 0.0).count();
    let nonzero_derivs = dimg.iter().filter(|v| **v != 0.0).count();
    let features = sim.nonsmooth_features(p, h);
    let mut failures = Vec::new();
    let finite = img.iter().chain(dimg.iter()).all(|v| v.is_finite());
    if !finite {
        failures.push("non-finite intensity or derivative".to_string());
    }
    if !loss_ok {
        failures.push(format!(
            "loss gradient: |ad - ref| = {abs_err:e} > limit {loss_limit:e}"
        ));
    }
    if !pixels_ok {
        failures.push("a pixel derivative is outside the tolerance (see worst_pixel)".into());
    }
    if g.require_nonzero {
        if nonzero_pixels == 0 {
            failures.push("vacuous check: the ROI image is all zero".into());
        }
        if nonzero_derivs == 0 || grad_ad == 0.0 {
            failures.push("vacuous check: the derivative is zero".into());
        }
    }
    if let Some(l64) = ref_loss {
        if !ok_within(loss, l64, g.f32_atol, g.f32_rtol) {
            failures.push(format!(
                "float32 loss {loss:e} differs from float64 loss {l64:e}"
            ));
        }
    }
    // Non-differentiable points are reported as such, never as PASS: left and
    // right differences that disagree, a flat piece (TOPHAT: a zero derivative
    // everywhere), or an automatic oversampling that switches within the step.
    let mut nonsmooth = Vec::new();
    if g.detect_nonsmooth && finite {
        let tophat = sim.setup.shape == crate::physics::config::LatticeShape::Tophat;
        if nonsmooth_pixels > 0 || loss_nonsmooth {
            nonsmooth.push(format!(
                "finite differences show a kink or a jump: left and right differences \
                 disagree, or do not settle down to a step of {:e} ({} of {} pixels{}): \
                 the image is not differentiable in {p} here",
                fd.finest_step,
                nonsmooth_pixels,
                img.len(),
                if loss_nonsmooth { ", and the loss" } else { "" }
            ));
        } else if nonzero_derivs == 0 && tophat {
            nonsmooth.push(format!(
                "the derivative is 0 in every pixel: the image is piecewise constant in {p}"
            ));
        } else if features
            .iter()
            .any(|f| f.starts_with("automatic oversampling"))
        {
            nonsmooth.push(
                "the image jumps within the step: the automatic oversampling changes there".into(),
            );
        }
        if !nonsmooth.is_empty() && !features.is_empty() {
            nonsmooth.push(format!("possible causes: {}", features.join("; ")));
        }
    }

    let mut details = Map::new();
    details.insert("param_value".into(), json!(x0));
    details.insert("param_unit".into(), json!(p.unit()));
    details.insert("reduction".into(), json!(g.reduction));
    details.insert("eps".into(), json!(eps));
    details.insert("eps_mode".into(), json!(g.eps_mode));
    details.insert("step".into(), json!(h));
    details.insert("finest_step".into(), json!(fd.finest_step));
    details.insert(
        "domain".into(),
        json!(if boundary.is_some() {
            "boundary"
        } else {
            "interior"
        }),
    );
    if let Some(b) = &boundary {
        details.insert("boundary".into(), json!(b));
    }
    details.insert("atol".into(), json!(atol));
    details.insert("rtol".into(), json!(rtol));
    details.insert("scale_rtol".into(), json!(scale_rtol));
    details.insert("pixel_scale_tol".into(), json!(pix_floor));
    details.insert("loss_limit".into(), finite_or_null(loss_limit));
    details.insert("reference".into(), json!(reference));
    details.insert("grad_ref".into(), finite_or_null(ref_grad));
    details.insert("grad_fd_step_h".into(), finite_or_null(fd.loss_h));
    details.insert("fd_error_estimate".into(), finite_or_null(fd.err_loss));
    if let Some(l64) = ref_loss {
        details.insert("loss_float64".into(), finite_or_null(l64));
    }
    details.insert("loss_plus".into(), finite_or_null(fd.loss_plus));
    if let Some(lm) = fd.loss_minus {
        details.insert("loss_minus".into(), finite_or_null(lm));
    }
    details.insert(
        "smoothness".into(),
        json!({
            "checked": g.detect_nonsmooth && !fd.one_sided,
            "asymmetry_h": finite_or_null(fd.asym_loss.0),
            "asymmetry_h2": finite_or_null(fd.asym_loss.1),
            "nonsmooth_pixels": nonsmooth_pixels,
            "features": features,
        }),
    );
    details.insert("pixels".into(), json!(img.len()));
    details.insert("nonzero_pixels".into(), json!(nonzero_pixels));
    details.insert("nonzero_derivative_pixels".into(), json!(nonzero_derivs));
    details.insert("require_nonzero".into(), json!(g.require_nonzero));
    if let Some((i, score)) = worst {
        let (fx, sx) = (f0_ as usize + i % width, s0 as usize + i / width);
        let err = (dimg[i] - ref_pix[i]).abs();
        details.insert(
            "worst_pixel".into(),
            json!({
                "fast": fx, "slow": sx,
                "intensity": finite_or_null(img[i]),
                "d_ad": finite_or_null(dimg[i]),
                "d_ref": finite_or_null(ref_pix[i]),
                "abs_err": finite_or_null(err),
                "rel_err": finite_or_null(rel(err, ref_pix[i])),
                "err_over_limit": finite_or_null(score),
            }),
        );
    }
    log.line(format!(
        "loss {loss:e}; grad_ad {grad_ad:e}; grad_fd {grad_fd:e} (error estimate {:e}); reference {ref_grad:e}; abs_err {abs_err:e}; rel_err {rel_err:e}",
        fd.err_loss
    ));
    let (status, reason) = if !nonsmooth.is_empty() {
        let r = nonsmooth.join("; ");
        log.line(format!("NONSMOOTH: {r}"));
        (Status::NonSmooth, Some(r))
    } else {
        if !failures.is_empty() && !features.is_empty() {
            failures.push(format!(
                "features of this configuration: {}",
                features.join("; ")
            ));
        }
        let st = verdict(&failures, log);
        let reason = (!failures.is_empty()).then(|| failures.join("; "));
        (st, reason)
    };
    Ok(Outcome {
        status,
        reason,
        loss: Some(loss),
        grad_ad: Some(grad_ad),
        grad_fd: Some(grad_fd),
        abs_err: Some(abs_err),
        rel_err: Some(rel_err),
        details,
        files,
        engine: Some(engine_name),
        unavailable: false,
    })
}

/// The M2h.3 phi-carryover cache arithmetic (REFERENCE.md), on the cell
/// vectors built exactly as the physics builds them.
pub fn phi_cache_loss<T: Real>(
    cell: [T; 6],
    stored_scale: f64,
    fresh_scale: f64,
    steps: usize,
) -> T {
    let v = cell_vectors(cell);
    let six = [v.a, v.b, v.c, v.a_star, v.b_star, v.c_star];
    let stored: Vec<Vec3<T>> = six.iter().map(|x| x.scale(T::cst(stored_scale))).collect();
    let fresh: Vec<Vec3<T>> = six.iter().map(|x| x.scale(T::cst(fresh_scale))).collect();
    let mut stack: Vec<Vec<Vec3<T>>> = vec![fresh; steps];
    stack[0] = stored;
    let mut loss = T::cst(0.0);
    for step in &stack {
        for vec in step {
            for comp in vec.0 {
                loss += comp;
            }
        }
    }
    loss
}

/// (loss, d loss / d cell_a) on the CPU with dual numbers.
pub fn phi_cache_cpu(cell: [f64; 6], p: &PhiCacheProbe, dtype: Dtype) -> (f64, f64) {
    match dtype {
        Dtype::F64 => {
            let mut c = cell.map(|x| num_dual::Dual64::new(x, 0.0));
            c[0].eps = 1.0;
            let l = phi_cache_loss(c, p.stored_scale, p.fresh_scale, p.steps as usize);
            (l.re, l.eps)
        }
        Dtype::F32 => {
            let mut c = cell.map(|x| num_dual::Dual32::new(x as f32, 0.0));
            c[0].eps = 1.0;
            let l = phi_cache_loss(c, p.stored_scale, p.fresh_scale, p.steps as usize);
            (l.re as f64, l.eps as f64)
        }
    }
}

fn phi_cache(cell: &Cell, p: &PhiCacheProbe, log: &mut Log) -> PResult<Outcome> {
    let c0 = cell
        .model
        .crystal
        .cell
        .ok_or_else(|| Stop::Error("model.crystal.cell is not set".into()))?;
    let h = p.eps * c0[0].abs().max(f64::MIN_POSITIVE);
    let shifted = |d: f64| {
        let mut c = c0;
        c[0] += d;
        c
    };
    let (loss, grad_ad, lp, lm, engine_name) = match cell.device {
        Device::Cpu => {
            let (l, g) = phi_cache_cpu(c0, p, cell.dtype);
            let (lp, _) = phi_cache_cpu(shifted(h), p, cell.dtype);
            let (lm, _) = phi_cache_cpu(shifted(-h), p, cell.dtype);
            (
                l,
                g,
                lp,
                lm,
                format!(
                    "cpu (num-dual {})",
                    if cell.dtype == Dtype::F32 {
                        "Dual32"
                    } else {
                        "Dual64"
                    }
                ),
            )
        }
        Device::Cuda(ord) => {
            // the kernel computes what the probe configures
            let settings = engine::cuda::PhiCacheSettings {
                stored_scale: p.stored_scale,
                fresh_scale: p.fresh_scale,
                steps: p.steps as u64,
                dtype: cell.dtype,
            };
            let (l, g, name) = engine::cuda::phi_cache_probe(c0, ord, settings)?;
            let (lp, _, _) = engine::cuda::phi_cache_probe(shifted(h), ord, settings)?;
            let (lm, _, _) = engine::cuda::phi_cache_probe(shifted(-h), ord, settings)?;
            (l, g, lp, lm, name)
        }
    };
    let grad_fd = (lp - lm) / (2.0 * h);
    let abs_err = (grad_ad - grad_fd).abs();
    let rel_err = rel(abs_err, grad_fd);
    log.line(format!("engine: {engine_name}"));
    log.line(format!(
        "cell {:?}: loss {loss:.12e}, d loss/d cell_a {grad_ad:.12e}, central difference {grad_fd:.12e} (h = {h:e})",
        c0
    ));
    let mut failures = Vec::new();
    let mut details = Map::new();
    details.insert("cell".into(), json!(c0));
    details.insert("stored_scale".into(), json!(p.stored_scale));
    details.insert("fresh_scale".into(), json!(p.fresh_scale));
    details.insert("steps".into(), json!(p.steps));
    details.insert("step".into(), json!(h));
    details.insert("rtol".into(), json!(p.rtol));
    details.insert("fd_atol".into(), json!(p.fd_atol));
    details.insert("fd_rtol".into(), json!(p.fd_rtol));
    if !(loss.is_finite() && grad_ad.is_finite()) {
        failures.push("non-finite loss or gradient".to_string());
    }
    if let Some(e) = p.expected_loss {
        let r = rel((loss - e).abs(), e);
        details.insert("expected_loss".into(), json!(e));
        details.insert("loss_rel_err".into(), finite_or_null(r));
        if !(r <= p.rtol) {
            failures.push(format!(
                "loss {loss:.12e} differs from the expected {e} (relative {r:e} > {:e})",
                p.rtol
            ));
        }
    }
    if let Some(e) = p.expected_grad {
        let r = rel((grad_ad - e).abs(), e);
        details.insert("expected_grad".into(), json!(e));
        details.insert("grad_rel_err".into(), finite_or_null(r));
        if !(r <= p.rtol) {
            failures.push(format!(
                "grad_ad {grad_ad:.12e} differs from the expected {e} (relative {r:e} > {:e})",
                p.rtol
            ));
        }
    }
    if !ok_within(grad_ad, grad_fd, p.fd_atol, p.fd_rtol) {
        failures.push(format!(
            "grad_ad {grad_ad:e} and central difference {grad_fd:e} disagree (|diff| {abs_err:e} > {:e})",
            p.fd_atol + p.fd_rtol * grad_fd.abs()
        ));
    }
    let status = verdict(&failures, log);
    Ok(Outcome {
        status,
        reason: if failures.is_empty() {
            None
        } else {
            Some(failures.join("; "))
        },
        loss: Some(loss),
        grad_ad: Some(grad_ad),
        grad_fd: Some(grad_fd),
        abs_err: Some(abs_err),
        rel_err: Some(rel_err),
        details,
        files: vec![],
        engine: Some(engine_name),
        unavailable: false,
    })
}

/// Read a raw little-endian float32 image.
pub fn read_f32_image(path: &Path) -> Result<Vec<f64>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "{}: size {} is not a multiple of 4",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect())
}

/// Write `data` (width x height, fast index innermost) as a log-scale PNG.
fn log_png(dir: &Path, name: &str, data: &[f64], w: usize, h: usize) -> PResult<String> {
    crate::io::png_image::write_log_png(data, w, h, &dir.join(name))
        .map_err(|e| Stop::Error(e.to_string()))?;
    Ok(name.to_string())
}

/// Write a signed image as a PNG on a diverging scale centred on 0.
fn diverging_png(dir: &Path, name: &str, data: &[f64], w: usize, h: usize) -> PResult<String> {
    crate::io::png_image::write_diverging_png(data, w, h, &dir.join(name))
        .map_err(|e| Stop::Error(e.to_string()))?;
    Ok(name.to_string())
}

fn roi_dims(roi: [u32; 4]) -> (usize, usize) {
    (
        (roi[1] - roi[0] + 1) as usize,
        (roi[3] - roi[2] + 1) as usize,
    )
}

fn f32_bytes(img: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(img.len() * 4);
    for v in img {
        out.extend_from_slice(&(*v as f32).to_le_bytes());
    }
    out
}

fn parity(
    exp: &Experiment,
    cell: &Cell,
    p: &ParityProbe,
    dir: &Path,
    log: &mut Log,
) -> PResult<Outcome> {
    let sim = prepare(exp, cell, log)?;
    let path = exp.base_dir.join(&p.reference);
    let reference = read_f32_image(&path).map_err(Stop::Error)?;
    let opts = RenderOptions {
        dtype: cell.dtype,
        roi: Some(cell.effective_roi),
        derivatives: vec![],
        shifts: vec![],
    };
    let r = render(&sim, cell.device, &opts, log, "image")?;
    if reference.len() != r.image.len() {
        return Err(Stop::Error(format!(
            "reference {} has {} pixels, the render {}",
            path.display(),
            reference.len(),
            r.image.len()
        )));
    }
    let sim_v = r.roi_values(&r.image);
    let ref_v = r.roi_values(&reference);
    let n = sim_v.len() as f64;
    let (ms, mr) = (sim_v.iter().sum::<f64>() / n, ref_v.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    let mut max_abs: f64 = 0.0;
    let mut ref_max: f64 = 0.0;
    for (x, y) in sim_v.iter().zip(&ref_v) {
        sxy += (x - ms) * (y - mr);
        sxx += (x - ms) * (x - ms);
        syy += (y - mr) * (y - mr);
        max_abs = max_abs.max((x - y).abs());
        ref_max = ref_max.max(y.abs());
    }
    let corr = if sxx > 0.0 && syy > 0.0 {
        sxy / (sxx * syy).sqrt()
    } else if sxx == 0.0 && syy == 0.0 && max_abs == 0.0 {
        1.0
    } else {
        0.0
    };
    let (ssum, rsum) = (sim_v.iter().sum::<f64>(), ref_v.iter().sum::<f64>());
    let ratio = if rsum != 0.0 {
        ssum / rsum
    } else if ssum == 0.0 {
        1.0
    } else {
        f64::INFINITY
    };
    let max_rel = if ref_max > 0.0 {
        max_abs / ref_max
    } else if max_abs == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    let mut failures = Vec::new();
    if !(corr >= p.min_correlation) {
        failures.push(format!("correlation {corr:.9} < {}", p.min_correlation));
    }
    if !((ratio - 1.0).abs() <= p.max_sum_ratio_err) {
        failures.push(format!(
            "sum ratio {ratio:.9} is more than {:e} from 1",
            p.max_sum_ratio_err
        ));
    }
    if !(max_rel <= p.max_rel_diff) {
        failures.push(format!(
            "max |sim - ref| / max |ref| = {max_rel:e} > {:e}",
            p.max_rel_diff
        ));
    }
    let mut details = Map::new();
    details.insert("reference".into(), json!(p.reference));
    details.insert("correlation".into(), finite_or_null(corr));
    details.insert("sum_ratio".into(), finite_or_null(ratio));
    details.insert("max_abs_diff".into(), finite_or_null(max_abs));
    details.insert("reference_max".into(), finite_or_null(ref_max));
    details.insert("max_rel_diff".into(), finite_or_null(max_rel));
    details.insert("min_correlation".into(), json!(p.min_correlation));
    details.insert("max_sum_ratio_err".into(), json!(p.max_sum_ratio_err));
    details.insert("max_rel_diff_limit".into(), json!(p.max_rel_diff));
    let mut files = vec![];
    if p.save_image {
        crate::evidence::write_atomic(&dir.join("image.bin"), &f32_bytes(&r.image))
            .map_err(Stop::Error)?;
        files.push("image.bin".to_string());
    }
    let (rw, rh) = roi_dims(cell.effective_roi);
    if sim_v.len() == rw * rh {
        let diff: Vec<f64> = sim_v.iter().zip(&ref_v).map(|(a, b)| a - b).collect();
        files.push(log_png(dir, "image.png", &sim_v, rw, rh)?);
        files.push(log_png(dir, "reference.png", &ref_v, rw, rh)?);
        files.push(diverging_png(dir, "diff.png", &diff, rw, rh)?);
    }
    log.line(format!(
        "correlation {corr:.9}, sum ratio {ratio:.9}, max rel diff {max_rel:e}"
    ));
    let status = verdict(&failures, log);
    Ok(Outcome {
        status,
        reason: if failures.is_empty() {
            None
        } else {
            Some(failures.join("; "))
        },
        loss: Some(ssum),
        grad_ad: None,
        grad_fd: None,
        abs_err: Some(max_abs),
        rel_err: Some(max_rel),
        details,
        files,
        engine: Some(r.device),
        unavailable: false,
    })
}

/// 8-bit grayscale PNG of an image, scaled to its maximum.
pub fn png_bytes(img: &[f64], w: usize, h: usize, scale: PngScale) -> Result<Vec<u8>, String> {
    let max = img
        .iter()
        .cloned()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let map = |v: f64| -> u8 {
        if !(v.is_finite()) || v <= 0.0 || max <= 0.0 {
            return 0;
        }
        let x = match scale {
            PngScale::Linear => v / max,
            PngScale::Sqrt => (v / max).sqrt(),
            PngScale::Log => (1.0 + 1000.0 * v / max).ln() / (1001.0f64).ln(),
        };
        (x.clamp(0.0, 1.0) * 255.0).round() as u8
    };
    let data: Vec<u8> = img.iter().map(|v| map(*v)).collect();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| e.to_string())?;
        wr.write_image_data(&data).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn simulate(
    exp: &Experiment,
    cell: &Cell,
    p: &SimulateProbe,
    dir: &Path,
    log: &mut Log,
) -> PResult<Outcome> {
    let sim = prepare(exp, cell, log)?;
    let opts = RenderOptions {
        dtype: cell.dtype,
        roi: Some(cell.effective_roi),
        derivatives: cell.param.into_iter().collect(),
        shifts: vec![],
    };
    let r = render(&sim, cell.device, &opts, log, "image")?;
    let mut files = vec![];
    if p.save_images {
        crate::evidence::write_atomic(&dir.join("image.bin"), &f32_bytes(&r.image))
            .map_err(Stop::Error)?;
        let png = png_bytes(&r.image, r.fpixels, r.spixels, p.png_scale).map_err(Stop::Error)?;
        crate::evidence::write_atomic(&dir.join("image.png"), &png).map_err(Stop::Error)?;
        files.extend(["image.bin".to_string(), "image.png".to_string()]);
    }
    let vals = r.roi_values(&r.image);
    let loss: f64 = vals.iter().sum();
    let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let nonzero = vals.iter().filter(|v| **v != 0.0).count();
    let mut details = Map::new();
    details.insert("fpixels".into(), json!(r.fpixels));
    details.insert("spixels".into(), json!(r.spixels));
    details.insert("max".into(), finite_or_null(max));
    details.insert(
        "mean".into(),
        finite_or_null(loss / vals.len().max(1) as f64),
    );
    details.insert("nonzero_pixels".into(), json!(nonzero));
    details.insert(
        "format".into(),
        json!("image.bin: raw little-endian float32, fast index innermost"),
    );
    let mut grad_ad = None;
    if let Some(param) = cell.param {
        if let Some(d) = r.derivative(param) {
            grad_ad = Some(r.roi_values(d).iter().sum::<f64>());
            if !p.save_images {
                // numbers only
            } else {
                crate::evidence::write_atomic(
                    &dir.join(format!("d_{}.bin", param.name())),
                    &f32_bytes(d),
                )
                .map_err(Stop::Error)?;
                files.push(format!("d_{}.bin", param.name()));
                files.push(diverging_png(
                    dir,
                    &format!("d_{}.png", param.name()),
                    d,
                    r.fpixels,
                    r.spixels,
                )?);
            }
        }
    }
    if p.save_images && p.png_scale != PngScale::Log {
        files.push(log_png(
            dir,
            "image_log.png",
            &r.image,
            r.fpixels,
            r.spixels,
        )?);
    }
    let mut failures = Vec::new();
    if vals.iter().any(|v| !v.is_finite()) {
        failures.push("non-finite pixel values".to_string());
    }
    if p.require_nonzero && nonzero == 0 {
        failures.push("the image is all zero".to_string());
    }
    log.line(format!(
        "sum {loss:e}, max {max:e}, {nonzero} non-zero pixels"
    ));
    let status = if failures.is_empty() {
        Status::Pass
    } else {
        Status::Fail
    };
    Ok(Outcome {
        status,
        reason: if failures.is_empty() {
            None
        } else {
            Some(failures.join("; "))
        },
        loss: Some(loss),
        grad_ad,
        grad_fd: None,
        abs_err: None,
        rel_err: None,
        details,
        files,
        engine: Some(r.device),
        unavailable: false,
    })
}
