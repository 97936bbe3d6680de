//! The `simulate` probe: render the cell's model and keep the float image
//! (`image.bin`), PNGs and, with a parameter, its derivative image.

use super::{diverging_png, float_file, log_png, prepare, render, PResult};
use crate::engine::RenderOptions;
use crate::experiment::config::{PngScale, SimulateProbe};
use crate::experiment::load::Experiment;
use crate::experiment::matrix::Cell;
use crate::experiment::result::{details_map, Log, Outcome, SimulateDetails};
use std::path::Path;

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
        derivatives: cell.param.into_iter().collect(),
        shifts: vec![],
    };
    let r = render(&sim, cell.device, &opts, log, "image")?;
    let mut files = vec![];
    if p.save_images {
        files.push(float_file(dir, "image.bin", &r.image)?);
        let png =
            png_bytes(&r.image, r.fpixels, r.spixels, p.png_scale).map_err(super::Stop::Error)?;
        crate::io::write_atomic(&dir.join("image.png"), &png)?;
        files.push("image.png".to_string());
    }
    let vals = r.roi_values(&r.image);
    let loss: f64 = vals.iter().sum();
    let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let nonzero = vals.iter().filter(|v| **v != 0.0).count();
    let details = SimulateDetails {
        fpixels: r.fpixels,
        spixels: r.spixels,
        max: Some(max),
        mean: Some(loss / vals.len().max(1) as f64),
        nonzero_pixels: nonzero,
        format: "image.bin: raw little-endian float32, fast index innermost".into(),
    };
    let mut grad_ad = None;
    if let Some(param) = cell.param {
        if let Some(d) = r.derivative(param) {
            grad_ad = Some(r.roi_values(d).iter().sum::<f64>());
            if p.save_images {
                files.push(float_file(dir, &format!("d_{}.bin", param.name()), d)?);
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
    // (the log has the numbers; no separate verdict line)
    let mut o = Outcome::checked(&failures);
    o.loss = Some(loss);
    o.grad_ad = grad_ad;
    o.details = details_map(&details);
    o.files = files;
    o.engine = Some(r.device);
    Ok(o)
}
