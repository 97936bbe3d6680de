//! The `simulate` probe: render the cell's model with the derivative of
//! every matrix parameter and keep the image and derivatives as float32
//! `.bin` (nanoBragg's floatimage layout), float64 `.npy` (the image
//! `(slow, fast)`, the derivatives as one `(param, slow, fast)` stack) and
//! PNGs.

use super::{
    derivative_png, float_file, image_png, npy_image, npy_stack, prepare, render, Detector, PResult,
};
use crate::engine::RenderOptions;
use crate::experiment::config::{PngScale, SimulateProbe};
use crate::experiment::load::Experiment;
use crate::experiment::matrix::Cell;
use crate::experiment::result::{details_map, Log, Outcome, SimulateDetails};
use crate::io::picture::Scale;
use crate::physics::params::Param;
use std::path::Path;

/// Decades a log-scale image shows below its maximum.
const LOG_DECADES: f64 = 5.0;

pub(crate) fn run(
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
        derivatives: cell.derivatives.clone(),
        shifts: vec![],
    };
    let r = render(&sim, cell.device, &opts, log, "image")?;
    let det = Detector {
        fpixels: r.fpixels,
        spixels: r.spixels,
        roi: cell.effective_roi,
    };
    let vals = r.roi_values(&r.image);
    let mut planes: Vec<(Param, &[f64])> = Vec::new();
    for &param in &cell.derivatives {
        let d = r.derivative(param).ok_or_else(|| {
            super::Stop::Error(format!("the engine returned no derivative by {param}"))
        })?;
        planes.push((param, d));
    }
    let mut files = vec![];
    let mut arrays = vec![];
    if p.save_images {
        let what = format!("{} {}", cell.dtype, cell.device);
        files.push(float_file(dir, "image.bin", &r.image)?);
        files.push(npy_image(dir, "image.npy", &r.image, det, &mut arrays)?);
        // Outside the ROI nothing was rendered: grey, not zero.
        let shown = det.in_context(&vals)?;
        let scale = match p.png_scale {
            PngScale::Log => Scale::Log {
                decades: LOG_DECADES,
            },
            PngScale::Linear => Scale::Linear,
        };
        let title = format!("{}: image ({what})", cell.id);
        files.push(image_png(
            dir,
            "image.png",
            title.clone(),
            &shown,
            det,
            scale,
        )?);
        if p.png_scale != PngScale::Log {
            files.push(image_png(
                dir,
                "image_log.png",
                title,
                &shown,
                det,
                Scale::Log {
                    decades: LOG_DECADES,
                },
            )?);
        }
        if !planes.is_empty() {
            files.push(npy_stack(dir, "d_stack.npy", &planes, det, &mut arrays)?);
        }
        for (param, d) in &planes {
            let name = param.name();
            files.push(float_file(dir, &format!("d_{name}.bin"), d)?);
            files.push(derivative_png(
                dir,
                &format!("d_{name}.png"),
                format!("{}: dI/d {name} ({what})", cell.id),
                *param,
                &det.in_context(&r.roi_values(d))?,
                det,
            )?);
        }
    }
    let loss: f64 = vals.iter().sum();
    let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let nonzero = vals.iter().filter(|v| **v != 0.0).count();
    let details = SimulateDetails {
        fpixels: r.fpixels,
        spixels: r.spixels,
        max: Some(max),
        mean: Some(loss / vals.len().max(1) as f64),
        nonzero_pixels: nonzero,
        format: "image.bin, d_<param>.bin: raw little-endian float32, fast index innermost; \
                 image.npy: float64 (slow, fast); d_stack.npy: float64 (param, slow, fast)"
            .into(),
        derivative_params: planes.iter().map(|(p, _)| p.name().to_string()).collect(),
        arrays,
    };
    // The loss gradient of each parameter, in the stack's order, in the log;
    // with one parameter it is the cell's grad_ad.
    let grads: Vec<f64> = planes
        .iter()
        .map(|(_, d)| r.roi_values(d).iter().sum::<f64>())
        .collect();
    for ((param, _), g) in planes.iter().zip(&grads) {
        log.line(format!("d sum / d {}: {g:e}", param.name()));
    }
    let grad_ad = (grads.len() == 1).then(|| grads[0]);
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
    // (the log has the numbers; no separate verdict line)
    let mut o = Outcome::checked(&failures);
    o.loss = Some(loss);
    o.grad_ad = grad_ad;
    o.details = details_map(&details);
    o.files = files;
    o.engine = Some(r.device);
    Ok(o)
}
