//! The `parity` probe: a render against a reference float image (e.g. one
//! nanoBragg.c wrote): correlation, sum ratio and largest relative
//! difference over the ROI.

// NaN must fail a check: `!(x <= tol)` is deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::{checked, difference_png, float_file, image_png, npy_image, prepare, render, Detector};
use super::{PResult, Stop};
use crate::engine::RenderOptions;
use crate::experiment::config::ParityProbe;
use crate::experiment::load::Experiment;
use crate::experiment::matrix::Cell;
use crate::experiment::metrics::compare_images;
use crate::experiment::result::{details_map, Log, Outcome, ParityDetails};
use crate::io::picture::Scale;
use std::path::Path;

/// Colour scale of diff.png (in units of max|reference|) when the probe
/// allows no difference at all.
const DEFAULT_DIFF_SCALE: f64 = 1e-6;

pub(crate) fn run(
    exp: &Experiment,
    cell: &Cell,
    p: &ParityProbe,
    dir: &Path,
    log: &mut Log,
) -> PResult<Outcome> {
    let sim = prepare(exp, cell, log)?;
    let path = exp.base_dir.join(&p.reference);
    let reference: Vec<f64> = crate::io::float_image::read_float_image(&path, None)?
        .into_iter()
        .map(f64::from)
        .collect();
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
    let m = compare_images(&sim_v, &ref_v);
    let (corr, ratio, max_rel) = (m.correlation, m.sum_ratio, m.max_rel_diff);
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
    let det = Detector::of(cell);
    let what = format!("{} {}", cell.dtype, cell.device);
    let mut files = vec![];
    let mut arrays = vec![];
    if p.save_images {
        files.push(float_file(dir, "image.bin", &r.image)?);
        files.push(npy_image(dir, "image.npy", &r.image, det, &mut arrays)?);
    }
    let log5 = Scale::Log { decades: 5.0 };
    // The render exists in the ROI only (grey elsewhere); the reference is
    // shown whole, the ROI outlined.
    let sim_full = det.in_context(&sim_v)?;
    let ref_full = det.in_context(&ref_v)?;
    files.push(image_png(
        dir,
        "image.png",
        format!("{}: render ({what})", cell.id),
        &sim_full,
        det,
        log5,
    )?);
    files.push(image_png(
        dir,
        "reference.png",
        format!("{}: reference {}", cell.id, p.reference),
        &reference,
        det,
        log5,
    )?);
    // Full colour at the pass limit: a map with any saturated pixel fails.
    let full_scale = if p.max_rel_diff > 0.0 {
        p.max_rel_diff
    } else {
        DEFAULT_DIFF_SCALE
    };
    files.push(difference_png(
        dir,
        "diff.png",
        format!("{}: render - reference", cell.id),
        &sim_full,
        &ref_full,
        det,
        full_scale,
    )?);
    let details = ParityDetails {
        reference: p.reference.clone(),
        correlation: Some(corr),
        sum_ratio: Some(ratio),
        max_abs_diff: Some(m.max_abs_diff),
        reference_max: Some(m.reference_max),
        max_rel_diff: Some(max_rel),
        min_correlation: p.min_correlation,
        max_sum_ratio_err: p.max_sum_ratio_err,
        max_rel_diff_limit: p.max_rel_diff,
        arrays,
    };
    log.line(format!(
        "correlation {corr:.9}, sum ratio {ratio:.9}, max rel diff {max_rel:e}"
    ));
    let mut o = checked(&failures, log);
    o.loss = Some(m.sum);
    o.abs_err = Some(m.max_abs_diff);
    o.rel_err = Some(max_rel);
    o.details = details_map(&details);
    o.files = files;
    o.engine = Some(r.device);
    Ok(o)
}
