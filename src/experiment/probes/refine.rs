//! The `refine` probe: fit parameters of the model to an observed image by
//! Levenberg-Marquardt on the engine's forward-mode Jacobian
//! ([`crate::refine`]), and check that the fit converged and, where the
//! truth is known, recovered it within the tolerance.

// NaN must fail a check: `!(x <= tol)` is deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::{checked, image_png, prepare, write_png, Detector};
use super::{PResult, Stop};
use crate::engine::Dtype;
use crate::experiment::config::{ObservedFormat, RefineProbe, Tolerance};
use crate::experiment::load::Experiment;
use crate::experiment::matrix::Cell;
use crate::experiment::result::{details_map, Log, Outcome, RefineDetails, RefinedParam};
use crate::io::picture::Scale;
use crate::refine::{
    load_observed, refine, LmSettings, ObservedSource, ObservedSpec, RefineError, RefineOptions,
    RefineResult,
};
use std::path::Path;

impl From<RefineError> for Stop {
    fn from(e: RefineError) -> Self {
        match e {
            RefineError::Engine(e) => Stop::from(e),
            other => Stop::Error(other.to_string()),
        }
    }
}

/// The observed image's source as the library takes it.
fn observed_spec(p: &RefineProbe) -> ObservedSpec {
    let source = if p.is_synthetic() {
        ObservedSource::Synthetic {
            noise_seed: p.noise_seed,
        }
    } else {
        let path = p.observed.clone().into();
        match p
            .observed_format
            .unwrap_or_else(|| ObservedFormat::of_path(&p.observed))
        {
            ObservedFormat::Float => ObservedSource::FloatFile { path },
            ObservedFormat::Smv => ObservedSource::Smv { path, adc: p.adc },
            ObservedFormat::Npy => ObservedSource::Npy { path },
        }
    };
    ObservedSpec {
        source,
        scale: p.scale,
        truth_is_config: p.truth_is_config || p.is_synthetic(),
    }
}

/// The mask file (a `.npy` of shape (spixels, fpixels), float64, float32
/// or int32): true = fit the pixel.
fn read_mask(path: &Path, det: Detector) -> PResult<Vec<bool>> {
    use crate::io::npy::read_image;
    let a: ndarray::Array2<f64> = match read_image::<f64>(path) {
        Ok(a) => a,
        Err(e) => match read_image::<f32>(path) {
            Ok(a) => a.mapv(f64::from),
            Err(_) => match read_image::<i32>(path) {
                Ok(a) => a.mapv(f64::from),
                Err(_) => return Err(Stop::Error(format!("mask: {e}"))),
            },
        },
    };
    if a.dim() != (det.spixels, det.fpixels) {
        return Err(Stop::Error(format!(
            "mask {}: shape {:?}, the detector is (slow, fast) = ({}, {})",
            path.display(),
            a.shape(),
            det.spixels,
            det.fpixels
        )));
    }
    Ok(a.iter().map(|v| *v != 0.0).collect())
}

/// Whether a parameter is within the tolerance of its truth.
fn within(t: Tolerance, p: &crate::refine::ParamResult) -> Option<bool> {
    let truth = p.truth?;
    let err = (p.value - truth).abs();
    Some(match t {
        Tolerance::Relative(tol) => p.rel_error.is_some_and(|e| e <= tol),
        Tolerance::Absolute(tol) => err <= tol,
        Tolerance::StandardErrors(tol) => p.pull.is_some_and(|x| x.abs() <= tol),
    })
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

pub(crate) fn run(
    exp: &Experiment,
    cell: &Cell,
    p: &RefineProbe,
    dir: &Path,
    log: &mut Log,
) -> PResult<Outcome> {
    let sim = prepare(exp, cell, log)?;
    let det = Detector::of(cell);
    let spec = observed_spec(p);
    let observed = load_observed(
        &sim,
        &spec,
        &exp.base_dir,
        cell.device,
        Some(cell.effective_roi),
    )?;
    log.line(format!("observed: {}", observed.description));
    let mask = match &p.mask {
        Some(m) => Some(read_mask(&exp.base_dir.join(m), det)?),
        None => None,
    };
    let opts = RefineOptions {
        device: cell.device,
        dtype: cell.dtype,
        objective: p.objective,
        roi: Some(cell.effective_roi),
        mask,
        lm: LmSettings {
            max_iterations: p.max_iterations,
            ftol: p.ftol,
            xtol: p.xtol,
            ..LmSettings::default()
        },
    };
    let r = refine(&sim, &observed, &p.params, &opts)?;
    log_fit(&r, log);

    let tol = match (cell.dtype, p.float32_tolerance) {
        (Dtype::F32, Some(t)) => t,
        _ => p.tolerance,
    };
    let mut failures = Vec::new();
    if !r.fit.converged {
        failures.push(format!(
            "did not converge in {} iterations: {}",
            r.fit.iterations, r.fit.stop_reason
        ));
    }
    let mut params = Vec::new();
    for q in &r.params {
        let ok = within(tol, q);
        if ok == Some(false) {
            let truth = q.truth.unwrap_or(f64::NAN);
            let how = match tol {
                Tolerance::Relative(_) => {
                    format!("relative error {:.3e}", q.rel_error.unwrap_or(f64::NAN))
                }
                Tolerance::Absolute(_) => format!("error {:.3e}", q.value - truth),
                Tolerance::StandardErrors(_) => {
                    format!("{:.2} standard errors", q.pull.unwrap_or(f64::NAN))
                }
            };
            failures.push(format!(
                "{}: final {} vs truth {truth}: {how} (tolerance {tol})",
                q.name, q.value
            ));
        }
        params.push(RefinedParam {
            name: q.name.clone(),
            unit: q.unit.clone(),
            start: q.start,
            value: q.value,
            truth: q.truth,
            error: q.truth.map(|t| q.value - t),
            rel_error: q.rel_error.and_then(finite),
            se: finite(q.se),
            pull: q.pull.and_then(finite),
            lower: q.lower,
            upper: q.upper,
            scale: q.scale,
            within_tolerance: ok,
        });
    }
    if !observed.truth_known {
        log.line("no truth known (truth_is_config = false): only convergence is checked");
    }
    let max_abs_pull = params
        .iter()
        .filter_map(|q| q.pull.map(f64::abs))
        .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));

    // trajectory.csv, pictures
    let mut files = Vec::new();
    let mut csv = Vec::new();
    r.write_trajectory_csv(&mut csv)
        .map_err(|e| Stop::Error(format!("trajectory.csv: {e}")))?;
    crate::io::write_atomic(&dir.join("trajectory.csv"), &csv)?;
    files.push("trajectory.csv".to_string());
    if p.save_images {
        pictures(cell, &observed.image, &r, det, dir, &mut files)?;
    }

    let details = RefineDetails {
        observed: observed.description.clone(),
        objective: serde_json::to_value(p.objective)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        pixels: r.pixels,
        params,
        correlation: r
            .correlation
            .iter()
            .map(|row| row.iter().map(|x| finite(*x)).collect())
            .collect(),
        fit: r.fit.clone(),
        max_iterations: p.max_iterations,
        pearson_reduced_chi2: r.pearson_reduced_chi2,
        dispersion: r.dispersion,
        worst_rel_error: r.worst_rel_error.and_then(finite),
        max_abs_pull,
        tolerance: tol.to_string(),
        wall_s: r.wall_s,
    };
    let mut o = checked(&failures, log);
    o.loss = Some(r.fit.loss_final);
    o.rel_err = details.worst_rel_error;
    o.details = details_map(&details);
    o.files = files;
    o.engine = Some(r.engine.clone());
    Ok(o)
}

fn log_fit(r: &RefineResult, log: &mut Log) {
    log.line(format!(
        "fit on {} ({}): {}",
        r.engine,
        r.dtype,
        r.summary_line()
    ));
    for q in &r.params {
        log.line(format!(
            "  {:<14} start {:<16} final {:<22} truth {:<16} rel err {:.2e} se {:.2e}",
            q.name,
            q.start,
            q.value,
            q.truth.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            q.rel_error.unwrap_or(f64::NAN),
            q.se
        ));
    }
}

/// observed.png, model.png, residual.png (observed - model over the fitted
/// pixels) and convergence.png (loss of each accepted step).
fn pictures(
    cell: &Cell,
    observed: &[f64],
    r: &RefineResult,
    det: Detector,
    dir: &Path,
    files: &mut Vec<String>,
) -> PResult<()> {
    use crate::io::picture::{derivative_png, line_plot_png, LinePlot, Series, SignedOptions};
    let log5 = Scale::Log { decades: 5.0 };
    let what = format!("{} {}", cell.dtype, cell.device);
    files.push(image_png(
        dir,
        "observed.png",
        format!("{}: observed ({})", cell.id, r.observed),
        observed,
        det,
        log5,
    )?);
    // The model exists on the fitted pixels only (NaN, drawn grey, elsewhere).
    let mut fitted = vec![false; r.model_image.len()];
    let roi = r.roi;
    for s in roi[2] as usize..=roi[3] as usize {
        for f in roi[0] as usize..=roi[1] as usize {
            fitted[s * det.fpixels + f] = true;
        }
    }
    let model: Vec<f64> = r
        .model_image
        .iter()
        .zip(&fitted)
        .map(|(m, ok)| if *ok { *m } else { f64::NAN })
        .collect();
    files.push(image_png(
        dir,
        "model.png",
        format!("{}: refined model ({what})", cell.id),
        &model,
        det,
        log5,
    )?);
    let residual: Vec<f64> = observed
        .iter()
        .zip(&model)
        .map(|(y, m)| if m.is_nan() { f64::NAN } else { y - m })
        .collect();
    let opts = SignedOptions {
        title: format!("{}: observed - model ({what})", cell.id),
        units: "observed - model (photons/pixel)".into(),
        roi: det.outline(),
        ..SignedOptions::default()
    };
    files.push(write_png(
        dir,
        "residual.png",
        derivative_png(det.frame(&residual)?, &opts),
    )?);
    let accepted: Vec<(f64, f64)> = r
        .trajectory
        .iter()
        .filter(|t| t.accepted || t.iteration == 0)
        .map(|t| (t.iteration as f64, t.loss))
        .collect();
    let trials: Vec<(f64, f64)> = r
        .trajectory
        .iter()
        .map(|t| (t.iteration as f64, t.loss))
        .collect();
    let plot = LinePlot {
        title: format!("{}: convergence ({what})", cell.id),
        x_label: "iteration".into(),
        y_label: format!("loss ({:?})", r.objective),
        log_x: false,
        log_y: true,
        series: vec![
            Series {
                name: "accepted steps".into(),
                points: accepted,
            },
            Series {
                name: "every trial step".into(),
                points: trials,
            },
        ],
    };
    files.push(write_png(dir, "convergence.png", line_plot_png(&plot))?);
    Ok(())
}
