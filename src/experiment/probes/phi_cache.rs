//! The `phi-cache` probe: the published M2h.3 phi-carryover cache
//! arithmetic, with dual numbers on the CPU or in the CUDA kernel, against
//! the published loss and gradient and a central difference.

// NaN must fail a check: `!(x <= tol)` is deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::{checked, ok_within, rel, PResult, Stop};
use crate::engine::{self, Device, Dtype};
use crate::experiment::config::PhiCacheProbe;
use crate::experiment::matrix::Cell;
use crate::experiment::result::{details_map, Log, Outcome, PhiCacheDetails};
use crate::physics::cell::cell_vectors;
use crate::physics::scalar::{Real, Vec3};

/// The M2h.3 phi-carryover cache arithmetic (docs/experiments.md, "phi-cache"), on the cell
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

/// (loss, d loss / d cell_a, loss at +h, loss at -h, engine) on the cell's device.
fn evaluate(
    cell: &Cell,
    p: &PhiCacheProbe,
    c0: [f64; 6],
    h: f64,
) -> PResult<(f64, f64, f64, f64, String)> {
    let shifted = |d: f64| {
        let mut c = c0;
        c[0] += d;
        c
    };
    Ok(match cell.device {
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
        d => {
            // the kernel computes what the probe configures (cuda:all: on
            // the first GPU; the probe is one thread)
            let ord = d.cuda_ordinal();
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
    })
}

pub(crate) fn run(cell: &Cell, p: &PhiCacheProbe, log: &mut Log) -> PResult<Outcome> {
    let c0 = cell
        .model
        .crystal
        .cell
        .ok_or_else(|| Stop::Error("model.crystal.cell is not set".into()))?;
    let h = p.eps * c0[0].abs().max(f64::MIN_POSITIVE);
    let (loss, grad_ad, lp, lm, engine_name) = evaluate(cell, p, c0, h)?;
    let grad_fd = (lp - lm) / (2.0 * h);
    let abs_err = (grad_ad - grad_fd).abs();
    let rel_err = rel(abs_err, grad_fd);
    log.line(format!("engine: {engine_name}"));
    log.line(format!(
        "cell {:?}: loss {loss:.12e}, d loss/d cell_a {grad_ad:.12e}, central difference {grad_fd:.12e} (h = {h:e})",
        c0
    ));
    let mut failures = Vec::new();
    let mut details = PhiCacheDetails {
        cell: c0,
        stored_scale: p.stored_scale,
        fresh_scale: p.fresh_scale,
        steps: p.steps,
        step: h,
        rtol: p.rtol,
        fd_atol: p.fd_atol,
        fd_rtol: p.fd_rtol,
        expected_loss: None,
        loss_rel_err: None,
        expected_grad: None,
        grad_rel_err: None,
    };
    if !(loss.is_finite() && grad_ad.is_finite()) {
        failures.push("non-finite loss or gradient".to_string());
    }
    if let Some(e) = p.expected_loss {
        let r = rel((loss - e).abs(), e);
        details.expected_loss = Some(e);
        details.loss_rel_err = Some(r);
        if !(r <= p.rtol) {
            failures.push(format!(
                "loss {loss:.12e} differs from the expected {e} (relative {r:e} > {:e})",
                p.rtol
            ));
        }
    }
    if let Some(e) = p.expected_grad {
        let r = rel((grad_ad - e).abs(), e);
        details.expected_grad = Some(e);
        details.grad_rel_err = Some(r);
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
    let mut o = checked(&failures, log);
    o.loss = Some(loss);
    o.grad_ad = Some(grad_ad);
    o.grad_fd = Some(grad_fd);
    o.abs_err = Some(abs_err);
    o.rel_err = Some(rel_err);
    o.details = details_map(&details);
    o.engine = Some(engine_name);
    Ok(o)
}
