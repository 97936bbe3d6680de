//! The `gradcheck` probe: the forward-mode derivative of the ROI loss (and
//! of every ROI pixel) against finite differences of float64 renders
//! (float64 cells) or the float64 forward-mode derivative (float32 cells),
//! with a smoothness check that reports non-differentiable points as
//! NONSMOOTH rather than PASS or FAIL.

// NaN must fail a check: `!(x <= tol)` is deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::{
    checked, derivative_png, image_png, ok_within, prepare, reduce, rel, render, Detector,
};
use super::{PResult, Stop};
use crate::engine::{Dtype, RenderOptions};
use crate::experiment::config::{EpsMode, GradcheckProbe, Reduction};
use crate::experiment::load::Experiment;
use crate::experiment::matrix::Cell;
use crate::experiment::result::{
    details_map, GradcheckDetails, Log, Outcome, Smoothness, Verdict, WorstPixel,
};
use crate::io::picture::Scale;
use crate::physics::params::Param;
use crate::physics::Simulation;
use std::path::Path;

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

/// The parameter, its value and the finite-difference step of a cell.
struct Setting {
    p: Param,
    x0: f64,
    eps: f64,
    h: f64,
    /// The domain edge near which differences are one-sided.
    boundary: Option<String>,
    roi: [u32; 4],
}

impl Setting {
    fn opts(&self, dtype: Dtype, derivs: Vec<Param>, shifts: Vec<(Param, f64)>) -> RenderOptions {
        RenderOptions {
            dtype,
            roi: Some(self.roi),
            derivatives: derivs,
            shifts,
        }
    }
}

/// The render with the derivative, reduced to the ROI.
struct Forward {
    img: Vec<f64>,
    dimg: Vec<f64>,
    loss: f64,
    grad_ad: f64,
    engine: String,
}

/// What the derivative is compared with.
struct Reference {
    pix: Vec<f64>,
    grad: f64,
    /// The float64 loss (float32 cells).
    loss64: Option<f64>,
    atol: f64,
    rtol: f64,
    name: &'static str,
}

/// The per-pixel comparison.
struct PixelCheck {
    /// Pixels checked.
    total: usize,
    ok: bool,
    nonsmooth: usize,
    /// (index, error / limit) of the worst pixel.
    worst: Option<(usize, f64)>,
    csv: String,
}

pub(crate) fn run(
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
    let x0 = sim.base_value(p).map_err(|e| Stop::Error(e.to_string()))?;
    let eps = g.eps_by_param.get(p.name()).copied().unwrap_or(g.eps);
    let s = Setting {
        p,
        x0,
        eps,
        h: gradcheck_step(p, x0, eps, g.eps_mode),
        boundary: sim.domain_edge(p),
        roi: cell.effective_roi,
    };
    log.line(format!(
        "parameter {p} = {x0} {}; finite-difference steps h = {:e} and h/2{}",
        p.unit(),
        s.h,
        if s.boundary.is_some() {
            " (one-sided: domain edge)"
        } else {
            ""
        }
    ));
    if let Some(b) = &s.boundary {
        log.line(format!("boundary: {b}"));
    }
    let fwd = forward(&sim, cell, g, &s, log)?;
    let fd = settled_differences(&sim, cell, g, &s, log)?;
    let reference = reference_of(&sim, cell, g, &s, &fd, log)?;
    judge(&sim, cell, g, &s, &fwd, &fd, &reference, dir, log)
}

fn forward(
    sim: &Simulation,
    cell: &Cell,
    g: &GradcheckProbe,
    s: &Setting,
    log: &mut Log,
) -> PResult<Forward> {
    let p = s.p;
    let r = render(
        sim,
        cell.device,
        &s.opts(cell.dtype, vec![p], vec![]),
        log,
        "with derivative",
    )?;
    let img = r.roi_values(&r.image);
    let d = r
        .derivative(p)
        .ok_or_else(|| Stop::Error(format!("engine returned no derivative image for {p}")))?;
    let dimg = r.roi_values(d);
    Ok(Forward {
        loss: reduce(&img, g.reduction),
        grad_ad: reduce(&dimg, g.reduction),
        img,
        dimg,
        engine: r.device.clone(),
    })
}

/// float64 renders for the finite differences: base, +h, +h/2 (and -h,
/// -h/2 away from a domain edge); then the step is halved (down to
/// h/65536) while the differences have not settled within a quarter of the
/// tolerance: a steep flank, or a jump within the step that a smaller step
/// leaves outside.
fn settled_differences(
    sim: &Simulation,
    cell: &Cell,
    g: &GradcheckProbe,
    s: &Setting,
    log: &mut Log,
) -> PResult<FiniteDifferences> {
    let (p, h) = (s.p, s.h);
    let mut fd_render = |shift: f64, what: &str| -> PResult<Vec<f64>> {
        let shifts = if shift == 0.0 {
            vec![]
        } else {
            vec![(p, shift)]
        };
        let r = render(
            sim,
            cell.device,
            &s.opts(Dtype::F64, vec![], shifts),
            log,
            what,
        )?;
        Ok(r.roi_values(&r.image))
    };
    let f0 = fd_render(0.0, "base (float64)")?;
    let mut plus = vec![fd_render(h, "+h")?, fd_render(h / 2.0, "+h/2")?];
    let mut minus = match s.boundary {
        None => Some(vec![fd_render(-h, "-h")?, fd_render(-h / 2.0, "-h/2")?]),
        Some(_) => None,
    };
    let mut fd = finite_differences(&f0, &plus, minus.as_deref(), h, g.reduction);
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
    Ok(fd)
}

/// The reference: the finite difference (float64 cells) or the float64
/// forward-mode derivative (float32 cells).
fn reference_of(
    sim: &Simulation,
    cell: &Cell,
    g: &GradcheckProbe,
    s: &Setting,
    fd: &FiniteDifferences,
    log: &mut Log,
) -> PResult<Reference> {
    let p = s.p;
    Ok(match cell.dtype {
        Dtype::F64 => Reference {
            pix: fd.pix.clone(),
            grad: fd.loss,
            loss64: None,
            atol: g.atol,
            rtol: g.rtol,
            name: if fd.one_sided {
                "one-sided difference into the domain, Richardson (h, h/2), float64"
            } else {
                "central difference, Richardson (h, h/2), float64"
            },
        },
        Dtype::F32 => {
            let r64 = render(
                sim,
                cell.device,
                &s.opts(Dtype::F64, vec![p], vec![]),
                log,
                "float64 reference",
            )?;
            let d64 = r64.derivative(p).ok_or_else(|| {
                Stop::Error(format!(
                    "engine returned no float64 derivative image for {p}"
                ))
            })?;
            let dpix = r64.roi_values(d64);
            Reference {
                grad: reduce(&dpix, g.reduction),
                loss64: Some(reduce(&r64.roi_values(&r64.image), g.reduction)),
                pix: dpix,
                atol: g.f32_atol,
                rtol: g.f32_rtol,
                name: "float64 forward-mode derivative",
            }
        }
    })
}

/// Each pixel's derivative against the reference, and its smoothness;
/// the rows of pixels.csv.
fn check_pixels(
    cell: &Cell,
    g: &GradcheckProbe,
    fwd: &Forward,
    fd: &FiniteDifferences,
    reference: &Reference,
    pix_floor: f64,
) -> PixelCheck {
    let fd_max = fd.pix.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let smooth_limit = |v: f64, scale: f64| g.atol + g.rtol * v.abs() + g.scale_rtol * scale;
    let [f0_, f1, s0, _] = cell.effective_roi;
    let width = (f1 - f0_ + 1) as usize;
    let mut out = PixelCheck {
        total: fwd.img.len(),
        ok: true,
        nonsmooth: 0,
        worst: None,
        csv: String::from(
            "fast,slow,intensity,d_ad,d_ref,d_fd,abs_err,limit,ok,asym_h,asym_h2,smooth\n",
        ),
    };
    for (i, (&ad, &rf)) in fwd.dimg.iter().zip(&reference.pix).enumerate() {
        let err = (ad - rf).abs();
        // float64 cells: below the differences' rounding floor nothing can be
        // resolved (a derivative that is 0 up to rounding)
        let fd_floor = match cell.dtype {
            Dtype::F64 => fd.noise_pix.get(i).copied().unwrap_or(0.0),
            Dtype::F32 => 0.0,
        };
        let lim = reference.atol + reference.rtol * rf.abs() + pix_floor + fd_floor;
        let ok = err <= lim;
        out.ok &= ok;
        let (a1, a2) = fd.asym_pix.get(i).copied().unwrap_or((0.0, 0.0));
        let smooth = (fd.one_sided || !asymmetric((a1, a2), smooth_limit(fd.pix[i], fd_max), fd.noise_pix[i]))
                // and the differences settled as the step shrank
                && fd.err_pix[i] <= smooth_limit(fd.pix[i], fd_max) + fd.noise_pix[i];
        if !smooth {
            out.nonsmooth += 1;
        }
        let score = if lim > 0.0 {
            err / lim
        } else if err > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        if out.worst.map(|(_, s)| score > s).unwrap_or(true) || score.is_nan() {
            out.worst = Some((i, score));
        }
        let (fx, sx) = (f0_ as usize + i % width, s0 as usize + i / width);
        out.csv.push_str(&format!(
            "{fx},{sx},{:e},{ad:e},{rf:e},{:e},{err:e},{lim:e},{ok},{a1:e},{a2:e},{smooth}\n",
            fwd.img[i], fd.pix[i]
        ));
    }
    out
}

/// Non-differentiable points are reported as such, never as PASS: left and
/// right differences that disagree, a flat piece (TOPHAT: a zero derivative
/// everywhere), or an automatic oversampling that switches within the step.
fn nonsmooth_reasons(
    sim: &Simulation,
    s: &Setting,
    fd: &FiniteDifferences,
    pixels: &PixelCheck,
    loss_nonsmooth: bool,
    nonzero_derivs: usize,
    features: &[String],
) -> Vec<String> {
    let p = s.p;
    let mut nonsmooth = Vec::new();
    let tophat = sim.setup.shape == crate::physics::config::LatticeShape::Tophat;
    if pixels.nonsmooth > 0 || loss_nonsmooth {
        nonsmooth.push(format!(
            "finite differences show a kink or a jump: left and right differences \
             disagree, or do not settle down to a step of {:e} ({} of {} pixels{}): \
             the image is not differentiable in {p} here",
            fd.finest_step,
            pixels.nonsmooth,
            pixels.total,
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
    nonsmooth
}

/// The limits, the checks, the files and the verdict.
#[allow(clippy::too_many_arguments)]
fn judge(
    sim: &Simulation,
    cell: &Cell,
    g: &GradcheckProbe,
    s: &Setting,
    fwd: &Forward,
    fd: &FiniteDifferences,
    reference: &Reference,
    dir: &Path,
    log: &mut Log,
) -> PResult<Outcome> {
    let p = s.p;
    let (img, dimg, loss, grad_ad) = (&fwd.img, &fwd.dimg, fwd.loss, fwd.grad_ad);
    // Tolerances follow the size of the derivative image.
    let max_ref = reference.pix.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let abs_ref: Vec<f64> = reference.pix.iter().map(|v| v.abs()).collect();
    let loss_scale = reduce(&abs_ref, g.reduction);
    let scale_rtol = match cell.dtype {
        Dtype::F32 => g.f32_max_rtol,
        Dtype::F64 => g.scale_rtol,
    };
    let pix_floor = scale_rtol * max_ref;
    let abs_err = (grad_ad - reference.grad).abs();
    let rel_err = rel(abs_err, reference.grad);
    let loss_limit = reference.atol
        + scale_rtol * loss_scale
        + reference.rtol * reference.grad.abs()
        + if cell.dtype == Dtype::F64 {
            fd.noise_loss
        } else {
            0.0
        };
    let pixels = check_pixels(cell, g, fwd, fd, reference, pix_floor);
    // Smoothness of the loss: the float64 differences' own tolerance.
    let fd_abs: Vec<f64> = fd.pix.iter().map(|v| v.abs()).collect();
    let loss_nonsmooth = !fd.one_sided
        && asymmetric(
            fd.asym_loss,
            g.atol + g.rtol * fd.loss.abs() + g.scale_rtol * reduce(&fd_abs, g.reduction),
            fd.noise_loss,
        );
    let files = write_files(cell, p, fwd, &pixels, dir)?;

    let nonzero_pixels = img.iter().filter(|v| **v != 0.0).count();
    let nonzero_derivs = dimg.iter().filter(|v| **v != 0.0).count();
    let features = sim.nonsmooth_features(p, s.h);
    let mut failures = Vec::new();
    let finite = img.iter().chain(dimg.iter()).all(|v| v.is_finite());
    if !finite {
        failures.push("non-finite intensity or derivative".to_string());
    }
    if !(abs_err <= loss_limit) {
        failures.push(format!(
            "loss gradient: |ad - ref| = {abs_err:e} > limit {loss_limit:e}"
        ));
    }
    if !pixels.ok {
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
    if let Some(l64) = reference.loss64 {
        if !ok_within(loss, l64, g.f32_atol, g.f32_rtol) {
            failures.push(format!(
                "float32 loss {loss:e} differs from float64 loss {l64:e}"
            ));
        }
    }
    let nonsmooth = if g.detect_nonsmooth && finite {
        nonsmooth_reasons(
            sim,
            s,
            fd,
            &pixels,
            loss_nonsmooth,
            nonzero_derivs,
            &features,
        )
    } else {
        vec![]
    };
    let details = details_of(
        g,
        s,
        fd,
        reference,
        &pixels,
        fwd,
        cell.effective_roi,
        Limits {
            scale_rtol,
            pix_floor,
            loss_limit,
        },
        &features,
    );
    log.line(format!(
        "loss {loss:e}; grad_ad {grad_ad:e}; grad_fd {:e} (error estimate {:e}); reference {:e}; abs_err {abs_err:e}; rel_err {rel_err:e}",
        fd.loss, fd.err_loss, reference.grad
    ));
    let mut o = if !nonsmooth.is_empty() {
        let r = nonsmooth.join("; ");
        log.line(format!("NONSMOOTH: {r}"));
        let mut o = Outcome::empty(Verdict::NonSmooth);
        o.reason = Some(r);
        o
    } else {
        if !failures.is_empty() && !features.is_empty() {
            failures.push(format!(
                "features of this configuration: {}",
                features.join("; ")
            ));
        }
        checked(&failures, log)
    };
    o.loss = Some(loss);
    o.grad_ad = Some(grad_ad);
    o.grad_fd = Some(fd.loss);
    o.abs_err = Some(abs_err);
    o.rel_err = Some(rel_err);
    o.details = details_map(&details);
    o.files = files;
    o.engine = Some(fwd.engine.clone());
    Ok(o)
}

/// The tolerances a cell's checks used.
struct Limits {
    scale_rtol: f64,
    pix_floor: f64,
    loss_limit: f64,
}

/// The details of result.json.
#[allow(clippy::too_many_arguments)]
fn details_of(
    g: &GradcheckProbe,
    s: &Setting,
    fd: &FiniteDifferences,
    reference: &Reference,
    pixels: &PixelCheck,
    fwd: &Forward,
    roi: [u32; 4],
    lim: Limits,
    features: &[String],
) -> GradcheckDetails {
    let p = s.p;
    GradcheckDetails {
        param_value: s.x0,
        param_unit: p.unit().to_string(),
        reduction: g.reduction,
        eps: s.eps,
        eps_mode: g.eps_mode,
        step: s.h,
        finest_step: fd.finest_step,
        domain: if s.boundary.is_some() {
            "boundary"
        } else {
            "interior"
        }
        .into(),
        boundary: s.boundary.clone(),
        atol: reference.atol,
        rtol: reference.rtol,
        scale_rtol: lim.scale_rtol,
        pixel_scale_tol: lim.pix_floor,
        loss_limit: Some(lim.loss_limit),
        reference: reference.name.into(),
        grad_ref: Some(reference.grad),
        grad_fd_step_h: Some(fd.loss_h),
        fd_error_estimate: Some(fd.err_loss),
        loss_float64: reference.loss64,
        loss_plus: Some(fd.loss_plus),
        loss_minus: fd.loss_minus,
        smoothness: Smoothness {
            checked: g.detect_nonsmooth && !fd.one_sided,
            asymmetry_h: Some(fd.asym_loss.0),
            asymmetry_h2: Some(fd.asym_loss.1),
            nonsmooth_pixels: pixels.nonsmooth,
            features: features.to_vec(),
        },
        pixels: fwd.img.len(),
        nonzero_pixels: fwd.img.iter().filter(|v| **v != 0.0).count(),
        nonzero_derivative_pixels: fwd.dimg.iter().filter(|v| **v != 0.0).count(),
        require_nonzero: g.require_nonzero,
        worst_pixel: pixels.worst.map(|(i, score)| {
            let [f0_, f1, s0, _] = roi;
            let width = (f1 - f0_ + 1) as usize;
            let err = (fwd.dimg[i] - reference.pix[i]).abs();
            WorstPixel {
                fast: f0_ as usize + i % width,
                slow: s0 as usize + i / width,
                intensity: Some(fwd.img[i]),
                d_ad: Some(fwd.dimg[i]),
                d_ref: Some(reference.pix[i]),
                abs_err: Some(err),
                rel_err: Some(rel(err, reference.pix[i])),
                err_over_limit: Some(score),
            }
        }),
    }
}

/// pixels.csv, the ROI image and its derivative as PNGs of the whole
/// detector (grey outside the ROI, which is all the probe renders).
fn write_files(
    cell: &Cell,
    p: Param,
    fwd: &Forward,
    pixels: &PixelCheck,
    dir: &Path,
) -> PResult<Vec<String>> {
    crate::io::write_atomic(&dir.join("pixels.csv"), pixels.csv.as_bytes())?;
    let det = Detector::of(cell);
    let what = format!("{} {}", cell.dtype, cell.device);
    Ok(vec![
        "pixels.csv".to_string(),
        image_png(
            dir,
            "image.png",
            format!("{}: image ({what})", cell.id),
            &det.in_context(&fwd.img)?,
            det,
            Scale::Log { decades: 5.0 },
        )?,
        derivative_png(
            dir,
            &format!("d_{}.png", p.name()),
            format!("{}: dI/d {} ({what})", cell.id, p.name()),
            p,
            &det.in_context(&fwd.dimg)?,
            det,
        )?,
    ])
}
