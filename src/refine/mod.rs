//! Refinement: recover parameters of an observed image by
//! Levenberg-Marquardt on the engine's forward-mode Jacobian (issue 14).
//!
//! - Observed image ([`observed`]): a nanoBragg float file, an SMV image, a
//!   `.npy` array (read by [`crate::io::npy`]), or a synthetic image rendered
//!   at the configured (true) values with optional seeded Poisson noise and a
//!   scale.
//! - Parameters ([`ParamSpec`]): any of the 26 [`Param`]s, each with a start
//!   (absolute, or an offset / relative perturbation of the configured
//!   value), optional bounds and a scale. More than
//!   [`crate::engine::values::MAX_DIRECTIONS`] (8) parameters: both engines
//!   split the derivative directions into passes of at most 8
//!   (`engine::cpu::render`, `engine::cuda::render`); [`FitSummary::dual_passes`]
//!   counts them. `fluence` and `default_f` together are refused: the image
//!   is proportional to fluence x F², so they are degenerate.
//! - Objective ([`Objective`]): least squares, or the Poisson negative
//!   log-likelihood (reported as the deviance 2 Σ [m - y + y ln(y/m)]),
//!   minimised by Fisher scoring: weighted least squares with weights 1/m
//!   from the current model (IRLS). Over the ROI (the configuration's, or
//!   [`RefineOptions::roi`]) less masked pixels (the configuration's mask and
//!   [`RefineOptions::mask`]).
//! - Method: a Levenberg-Marquardt of our own on nalgebra 0.35 ([`lm`]).
//!   The `levenberg-marquardt` crate (0.15) was considered: it depends on
//!   nalgebra 0.34 (a second nalgebra in the tree), has no bounds, no weights
//!   that change with the model (IRLS), and no view of the damping per
//!   iteration (for the trajectory); argmin's Gauss-Newton / LM solvers have
//!   no bounds either and a far larger dependency tree. The one here:
//!   Marquardt-scaled damping (invariant to parameter units), box bounds by
//!   clamping the trial point, the gain ratio for acceptance, and
//!   convergence when the Gauss-Newton step is within 0.01 standard errors
//!   of the local optimum (`decrement_tol`), or predicts a relative loss
//!   reduction below `ftol`, or changes no parameter by more than `xtol`
//!   relative (also when a step that small fails: the loss floor of float32
//!   renders); an iteration cap. Each iteration is one render with
//!   derivatives at the trial point (an accepted step already has its
//!   Jacobian). λ follows Marquardt's rule (÷10 after a success, ×10 after a
//!   failure) by default: on the golden recoveries (tests/refine_recovery.rs)
//!   it needed 8, 8, 17 and 5 iterations where Nielsen's smoother rule
//!   ([`Damping::Nielsen`]) needed 13, 13, 38 and 8 (narrow curved valleys:
//!   two-theta against beam centre and cell scale against distance are
//!   correlated to 1 - 1e-8). Geodesic acceleration ([`Geodesic`], one
//!   render without derivatives per step) is available; it did not help
//!   there.
//! - N: with the square lattice factor (nanoBragg's default),
//!   sin(Nπh)/sin(πh) has a pole at every whole h ≠ 0 once N is not a whole
//!   number, so N is a continuous parameter only on the Gaussian and round
//!   shapes (the Gaussian one depends on Na Nb Nc alone).
//! - Uncertainties: the covariance is (Jᵀ W J)⁻¹ at the solution times a
//!   dispersion. Least squares: the reduced χ² = loss / (n - k). Poisson
//!   NLL: 1, since W = 1/m already gives each pixel its Poisson variance
//!   (the inverse Fisher information); the Pearson χ² / (n - k) is reported
//!   as the goodness of fit (≈ 1 when the model and the scale are right).
//!   Standard errors are its diagonal's square roots; the correlation matrix
//!   is the covariance normalised by them. Calibration, measured on the
//!   synthetic Poisson case of tests/refine_recovery.rs (64², 2.2e5 counts,
//!   median pixel 0.46 counts; 6 parameters from the perturbed
//!   start; nanoBragg's `poidev`, seeds 1-1000): the pulls
//!   (estimate - truth) / SE have mean within ±0.05 and standard deviation
//!   0.98-1.05 for every parameter. A noise-free image is refitted to the
//!   truth within 5e-15 relative; the fits' pulls match those of the
//!   linearised estimate at the truth (median difference 0.03), so neither
//!   the stop (0.01 standard errors: no change at 1e-14) nor the curvature
//!   biases them. The deviance is not convex: from the perturbed start 3
//!   fits in 1000 (seeds 10, 208, 670) stop in a local minimum 14-20
//!   deviance units above the one found from the truth.
//! - Device: any device and dtype the engine offers ([`RefineOptions::device`],
//!   [`RefineOptions::dtype`]), through [`crate::engine::render`].

pub mod lm;
pub mod observed;

pub use lm::{Damping, Geodesic, LmSettings, TrajectoryRow};
pub use observed::{load_observed, Observed, ObservedSource, ObservedSpec};

use crate::engine::roi::roi_pixels;
use crate::engine::{render, Device, Dtype, EngineError, RenderOptions, Rendered};
use crate::physics::params::Param;
use crate::physics::Simulation;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Instant;

/// Why a refinement did not run or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum RefineError {
    /// The specification is not usable (unknown or inapplicable parameter,
    /// degenerate set, bad bounds, wrong image size).
    #[error("refine: {0}")]
    Invalid(String),
    /// A render (or the ROI check) failed in the engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The observed image could not be read (float file, SMV or `.npy`).
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    /// The numbers went wrong (a parameter the region does not constrain, a
    /// non-finite model).
    #[error("refine: {0}")]
    Numeric(String),
}

/// Where a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Start {
    /// This value.
    Absolute(f64),
    /// The configured value plus this (in the parameter's unit).
    Offset(f64),
    /// The configured value times (1 + this).
    Relative(f64),
}

/// A parameter to refine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// The parameter to refine (one of the 26 [`Param`]s, by name).
    pub param: Param,
    /// Start (the configured value when None).
    #[serde(default)]
    pub start: Option<Start>,
    /// Lower bound in the parameter's unit (None: none given); the tighter of
    /// this and [`natural_bounds`] applies.
    #[serde(default)]
    pub lower: Option<f64>,
    /// Upper bound in the parameter's unit (None: none given); the tighter of
    /// this and [`natural_bounds`] applies.
    #[serde(default)]
    pub upper: Option<f64>,
    /// The parameter's typical size: relative changes are measured against
    /// max(|value|, scale), and the step norm is in these units. Default:
    /// |configured value|, or 1 (its unit) when that is 0.
    #[serde(default)]
    pub scale: Option<f64>,
}

impl ParamSpec {
    /// Refine `param` from `start`, with only the natural bounds and the
    /// default scale.
    pub fn new(param: Param, start: Start) -> Self {
        ParamSpec {
            param,
            start: Some(start),
            lower: None,
            upper: None,
            scale: None,
        }
    }
}

/// What is minimised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Σ (observed - model)².
    LeastSquares,
    /// Poisson negative log-likelihood (as the deviance), by IRLS.
    PoissonNll,
}

/// How to fit.
#[derive(Debug, Clone)]
pub struct RefineOptions {
    /// Where every render of the fit runs (CPU, one GPU or all GPUs).
    pub device: Device,
    /// Precision of the renders (`float32` or `float64`); the fit itself is
    /// in f64.
    pub dtype: Dtype,
    /// What is minimised: least squares or the Poisson deviance (IRLS).
    pub objective: Objective,
    /// Region to fit (fast min, fast max, slow min, slow max, inclusive);
    /// the configuration's ROI when None.
    pub roi: Option<[u32; 4]>,
    /// Whole-detector mask, true = fit the pixel (on top of the
    /// configuration's mask).
    pub mask: Option<Vec<bool>>,
    /// The Levenberg-Marquardt settings: stopping tests, initial damping λ,
    /// the λ rule and geodesic acceleration.
    pub lm: LmSettings,
}

impl RefineOptions {
    /// Fit on `device` in `dtype` by `objective`, over the configuration's ROI
    /// and mask alone, with the default [`LmSettings`].
    pub fn new(device: Device, dtype: Dtype, objective: Objective) -> Self {
        RefineOptions {
            device,
            dtype,
            objective,
            roi: None,
            mask: None,
            lm: LmSettings::default(),
        }
    }
}

/// One parameter's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ParamResult {
    /// The parameter's name, e.g. `distance`.
    pub name: String,
    /// The parameter's unit (e.g. `mm`, `deg`, `Å`): the unit of `start`,
    /// `final`, `truth`, `se`, the bounds and `scale`.
    pub unit: String,
    /// The value the fit started from (after any offset or relative
    /// perturbation).
    pub start: f64,
    /// The refined value (`final` in the JSON).
    #[serde(rename = "final")]
    pub value: f64,
    /// The configured value when it is the truth.
    pub truth: Option<f64>,
    /// Standard error (NaN, written null, when the covariance is singular).
    pub se: f64,
    /// Lower bound in effect (the given one or the natural one, the tighter);
    /// null when unbounded.
    pub lower: Option<f64>,
    /// Upper bound in effect (the given one or the natural one, the tighter);
    /// null when unbounded.
    pub upper: Option<f64>,
    /// The parameter's scale: relative changes are measured against
    /// max(|value|, scale), the step norm in these units.
    pub scale: f64,
    /// |final - truth| / |truth| (or / scale when truth is 0).
    pub rel_error: Option<f64>,
    /// (final - truth) / se.
    pub pull: Option<f64>,
}

/// How a refinement's iteration went: whether and why it stopped, what it
/// cost, the loss before and after. Flattened into [`RefineResult`] and into
/// a `refine` cell's details (`experiment::result::RefineDetails`), whose
/// JSON keys these are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitSummary {
    /// Whether a convergence test stopped the fit (false: the iteration cap,
    /// or λ grew past 1e16 without lowering the loss).
    pub converged: bool,
    /// Why the iteration stopped, in words.
    pub stop_reason: String,
    /// LM steps tried (each one render with derivatives).
    pub iterations: usize,
    /// Renders with derivatives (the start plus one per step rendered).
    pub renders: usize,
    /// Renders without derivatives (geodesic acceleration).
    pub value_renders: usize,
    /// Forward-mode passes (renders x ceil(k / 8)).
    pub dual_passes: usize,
    /// The loss at the start: Σ (y - m)² in counts² (least squares) or the
    /// Poisson deviance 2 Σ [m - y + y ln(y/m)].
    pub loss_start: f64,
    /// The loss at the solution (as `loss_start`).
    pub loss_final: f64,
    /// loss / (n - k): χ² per degree of freedom (least squares: residual
    /// variance; Poisson: deviance per degree of freedom).
    pub reduced_loss: f64,
}

/// The outcome of a refinement (serialises to result.json).
#[derive(Debug, Clone, Serialize)]
pub struct RefineResult {
    /// What the observed image is, e.g. "synthetic x 1 (noise-free)".
    pub observed: String,
    /// The engine that rendered, e.g. "cpu (2 threads)".
    pub engine: String,
    /// Precision of the renders.
    pub dtype: Dtype,
    /// What was minimised.
    pub objective: Objective,
    /// The fitted region: fast min, fast max, slow min, slow max (inclusive
    /// pixels).
    pub roi: [u32; 4],
    /// Pixels fitted (ROI less masked).
    pub pixels: usize,
    /// One outcome per parameter, in the order they were given.
    pub params: Vec<ParamResult>,
    /// Correlation matrix (k x k, parameter order), null entries when singular.
    pub correlation: Vec<Vec<f64>>,
    /// How the iteration went: convergence, counts, losses (flattened: its
    /// keys sit in the JSON object itself).
    #[serde(flatten)]
    pub fit: FitSummary,
    /// Pearson χ² / (n - k), Σ (y - m)² / m (Poisson only).
    pub pearson_reduced_chi2: Option<f64>,
    /// Factor on (Jᵀ W J)⁻¹ in the covariance (module doc: the rule).
    pub dispersion: f64,
    /// Largest rel_error over the parameters, when truth is known.
    pub worst_rel_error: Option<f64>,
    /// Wall-clock seconds of the refinement, renders and uncertainties
    /// included (loading the observed image not).
    pub wall_s: f64,
    /// Every step tried, row 0 the start ([`TrajectoryRow`]).
    pub trajectory: Vec<TrajectoryRow>,
    /// The model (scale x render) at the solution, whole detector, 0
    /// outside the fitted pixels (for pictures; not in the JSON).
    #[serde(skip)]
    pub model_image: Vec<f64>,
}

impl RefineResult {
    /// One line on how the fit went: whether it converged and why it
    /// stopped, the iterations, renders and dual passes, the wall time and
    /// the loss before and after, as `converged true (<stop reason>),
    /// 7 iterations, 8 renders (8 dual passes), 0.412 s, loss 1.2345e6 ->
    /// 3.4567e-9` (the probe's log and tests/refine_recovery.rs print it).
    pub fn summary_line(&self) -> String {
        let f = &self.fit;
        format!(
            "converged {} ({}), {} iterations, {} renders ({} dual passes), {:.3} s, loss {:.4e} -> {:.4e}",
            f.converged,
            f.stop_reason,
            f.iterations,
            f.renders,
            f.dual_passes,
            self.wall_s,
            f.loss_start,
            f.loss_final
        )
    }

    /// The outcome for parameter `p`, if it was refined.
    pub fn param(&self, p: Param) -> Option<&ParamResult> {
        self.params.iter().find(|r| r.name == p.name())
    }

    /// Write the trajectory as CSV: iteration, accepted, loss, one column per
    /// parameter, damping, step_norm.
    pub fn write_trajectory_csv<W: Write>(&self, w: W) -> Result<(), csv::Error> {
        let mut wr = csv::Writer::from_writer(w);
        let mut head = vec!["iteration".to_string(), "accepted".into(), "loss".into()];
        head.extend(self.params.iter().map(|p| p.name.clone()));
        head.extend(["damping".to_string(), "step_norm".into()]);
        wr.write_record(&head)?;
        for r in &self.trajectory {
            let mut row = vec![
                r.iteration.to_string(),
                r.accepted.to_string(),
                fmt_f(r.loss),
            ];
            row.extend(r.params.iter().map(|v| fmt_f(*v)));
            row.extend([fmt_f(r.damping), fmt_f(r.step_norm)]);
            wr.write_record(&row)?;
        }
        wr.flush()?;
        Ok(())
    }
}

/// Shortest text that reads back to the same f64.
fn fmt_f(x: f64) -> String {
    format!("{x:e}")
}

/// The start, bounds and scale of each parameter, checked.
struct Resolved {
    params: Vec<Param>,
    base: Vec<f64>,
    start: Vec<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
    scale: Vec<f64>,
}

fn resolve(sim: &Simulation, specs: &[ParamSpec]) -> Result<Resolved, RefineError> {
    if specs.is_empty() {
        return Err(RefineError::Invalid("no parameters to refine".into()));
    }
    let mut r = Resolved {
        params: vec![],
        base: vec![],
        start: vec![],
        lower: vec![],
        upper: vec![],
        scale: vec![],
    };
    for s in specs {
        let p = s.param;
        if r.params.contains(&p) {
            return Err(RefineError::Invalid(format!("'{p}' is listed twice")));
        }
        let base = sim
            .base_value(p)
            .map_err(|e| RefineError::Invalid(e.to_string()))?;
        let start = match s.start {
            None => base,
            Some(Start::Absolute(v)) => v,
            Some(Start::Offset(d)) => base + d,
            Some(Start::Relative(f)) => base * (1.0 + f),
        };
        let (nat_lo, nat_hi) = natural_bounds(p);
        let lower = s.lower.unwrap_or(f64::NEG_INFINITY).max(nat_lo);
        let upper = s.upper.unwrap_or(f64::INFINITY).min(nat_hi);
        let scale = s
            .scale
            .unwrap_or(if base != 0.0 { base.abs() } else { 1.0 });
        if !start.is_finite() || lower.is_nan() || upper.is_nan() || lower >= upper {
            return Err(RefineError::Invalid(format!(
                "'{p}': start {start}, bounds [{lower}, {upper}] are not a usable interval"
            )));
        }
        if start < lower || start > upper {
            return Err(RefineError::Invalid(format!(
                "'{p}': start {start} is outside its bounds [{lower}, {upper}]"
            )));
        }
        if !(scale.is_finite() && scale > 0.0) {
            return Err(RefineError::Invalid(format!(
                "'{p}': scale must be a positive number, not {scale}"
            )));
        }
        r.params.push(p);
        r.base.push(base);
        r.start.push(start);
        r.lower.push(lower);
        r.upper.push(upper);
        r.scale.push(scale);
    }
    if r.params.contains(&Param::Fluence) && r.params.contains(&Param::DefaultF) {
        return Err(RefineError::Invalid(
            "'fluence' and 'default_f' together are degenerate (the image is proportional to \
             fluence x default_f²): refine one of them"
                .into(),
        ));
    }
    Ok(r)
}

/// Bounds the model imposes: N below 1 is taken as 1 and a negative mosaic
/// spread has no meaning (spec-a-core), so the fit stays at or above those.
pub fn natural_bounds(p: Param) -> (f64, f64) {
    match p {
        Param::NA | Param::NB | Param::NC => (1.0, f64::INFINITY),
        Param::MosaicSpread => (0.0, f64::INFINITY),
        _ => (f64::NEG_INFINITY, f64::INFINITY),
    }
}

/// The engine as the LM's model: scale x render over the fitted pixels.
struct EngineModel<'a> {
    sim: &'a Simulation,
    opts: &'a RefineOptions,
    roi: [u32; 4],
    params: &'a [Param],
    base: &'a [f64],
    pixels: &'a [usize],
    scale: f64,
    renders: usize,
    value_renders: usize,
    engine: String,
}

impl EngineModel<'_> {
    fn render(&mut self, x: &[f64], derivatives: bool) -> Result<Rendered, RefineError> {
        let ro = RenderOptions {
            dtype: self.opts.dtype,
            roi: Some(self.roi),
            derivatives: if derivatives {
                self.params.to_vec()
            } else {
                vec![]
            },
            shifts: self
                .params
                .iter()
                .zip(x.iter().zip(self.base))
                .map(|(p, (x, b))| (*p, x - b))
                .collect(),
        };
        let r = render(self.sim, self.opts.device, &ro)?;
        self.engine.clone_from(&r.device);
        Ok(r)
    }
}

impl lm::Evaluator for EngineModel<'_> {
    fn eval(&mut self, x: &[f64]) -> Result<lm::Eval, RefineError> {
        use rayon::prelude::*;
        let r = self.render(x, true)?;
        self.renders += 1;
        let (pixels, scale) = (&self.pixels, self.scale);
        // Gathered on rayon's threads: a 1024^2 image with 10 parameters is
        // 11 planes of 8 MB each per iteration.
        let model = pixels.par_iter().map(|&i| scale * r.image[i]).collect();
        let jac = self
            .params
            .iter()
            .map(|p| {
                let d = r.derivative(*p).ok_or_else(|| {
                    RefineError::Numeric(format!("the engine returned no derivative for '{p}'"))
                })?;
                Ok(pixels.par_iter().map(|&i| scale * d[i]).collect())
            })
            .collect::<Result<Vec<Vec<f64>>, RefineError>>()?;
        Ok(lm::Eval { model, jac })
    }
    fn value(&mut self, x: &[f64]) -> Result<Vec<f64>, RefineError> {
        let r = self.render(x, false)?;
        self.value_renders += 1;
        Ok(self
            .pixels
            .iter()
            .map(|&i| self.scale * r.image[i])
            .collect())
    }
}

/// Refine `specs` of `sim` against `observed`.
pub fn refine(
    sim: &Simulation,
    observed: &Observed,
    specs: &[ParamSpec],
    opts: &RefineOptions,
) -> Result<RefineResult, RefineError> {
    let t0 = Instant::now();
    let (fp, sp) = (sim.fpixels(), sim.spixels());
    if observed.image.len() != fp * sp {
        return Err(RefineError::Invalid(format!(
            "observed image has {} pixels, the detector {fp} x {sp}",
            observed.image.len()
        )));
    }
    let rs = resolve(sim, specs)?;
    let k = rs.params.len();
    let roi = crate::engine::roi::check_roi(sim, opts.roi)?;
    if let Some(m) = &opts.mask {
        if m.len() != fp * sp {
            return Err(RefineError::Invalid(format!(
                "mask has {} pixels, the detector {fp} x {sp}",
                m.len()
            )));
        }
    }
    let pixels: Vec<usize> = roi_pixels(sim, roi)
        .into_iter()
        .map(|(f, s)| s * fp + f)
        .filter(|&i| opts.mask.as_ref().map(|m| m[i]).unwrap_or(true))
        .collect();
    if pixels.len() <= k {
        return Err(RefineError::Invalid(format!(
            "{} pixels to fit {k} parameters",
            pixels.len()
        )));
    }
    let y: Vec<f64> = pixels.iter().map(|&i| observed.image[i]).collect();
    if opts.objective == Objective::PoissonNll {
        if let Some(j) = y.iter().position(|v| *v < 0.0) {
            let i = pixels[j];
            return Err(RefineError::Invalid(format!(
                "Poisson objective: observed pixel (fast {}, slow {}) is negative ({})",
                i % fp,
                i / fp,
                y[j]
            )));
        }
    }

    let mut model = EngineModel {
        sim,
        opts,
        roi,
        params: &rs.params,
        base: &rs.base,
        pixels: &pixels,
        scale: observed.scale,
        renders: 0,
        value_renders: 0,
        engine: String::new(),
    };
    let prob = lm::Problem {
        y: &y,
        objective: opts.objective,
        names: rs.params.iter().map(|p| p.name().to_string()).collect(),
        lower: rs.lower.clone(),
        upper: rs.upper.clone(),
        scale: rs.scale.clone(),
    };
    let out = lm::levenberg_marquardt(&prob, &rs.start, &opts.lm, &mut model)?;
    let (renders, value_renders, engine) = (model.renders, model.value_renders, model.engine);

    // Uncertainties at the solution.
    let n = y.len();
    let dof = (n - k) as f64;
    let (a, _) = lm::normal_equations(opts.objective, &y, &out.eval);
    let pearson = match opts.objective {
        Objective::LeastSquares => None,
        Objective::PoissonNll => {
            let w = lm::weights(opts.objective, &out.eval.model);
            Some(
                y.iter()
                    .zip(&out.eval.model)
                    .zip(&w)
                    .map(|((y, m), w)| (y - m) * (y - m) * w)
                    .sum::<f64>()
                    / dof,
            )
        }
    };
    let dispersion = match opts.objective {
        Objective::LeastSquares => out.loss / dof,
        Objective::PoissonNll => 1.0,
    };
    let cov = lm::inverse(&a).map(|c| c * dispersion);
    let se: Vec<f64> = (0..k)
        .map(|j| cov.as_ref().map(|c| c[(j, j)].sqrt()).unwrap_or(f64::NAN))
        .collect();
    let correlation: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            (0..k)
                .map(|j| {
                    cov.as_ref()
                        .map(|c| c[(i, j)] / (se[i] * se[j]))
                        .unwrap_or(f64::NAN)
                })
                .collect()
        })
        .collect();
    let params: Vec<ParamResult> = (0..k)
        .map(|j| {
            let truth = observed.truth_known.then_some(rs.base[j]);
            let v = out.x[j];
            ParamResult {
                name: rs.params[j].name().to_string(),
                unit: rs.params[j].unit().to_string(),
                start: rs.start[j],
                value: v,
                truth,
                se: se[j],
                lower: rs.lower[j].is_finite().then_some(rs.lower[j]),
                upper: rs.upper[j].is_finite().then_some(rs.upper[j]),
                scale: rs.scale[j],
                rel_error: truth
                    .map(|t| (v - t).abs() / if t != 0.0 { t.abs() } else { rs.scale[j] }),
                pull: truth.map(|t| (v - t) / se[j]),
            }
        })
        .collect();
    let worst_rel_error = params
        .iter()
        .filter_map(|p| p.rel_error)
        .fold(None, |a: Option<f64>, e| Some(a.map_or(e, |a| a.max(e))));
    let mut model_image = vec![0.0; fp * sp];
    for (&i, &m) in pixels.iter().zip(&out.eval.model) {
        model_image[i] = m;
    }
    let passes = k.div_ceil(crate::engine::values::MAX_DIRECTIONS);
    Ok(RefineResult {
        observed: observed.description.clone(),
        engine,
        dtype: opts.dtype,
        objective: opts.objective,
        roi,
        pixels: n,
        params,
        correlation,
        fit: FitSummary {
            converged: out.converged,
            stop_reason: out.reason,
            iterations: out.iterations,
            renders,
            value_renders,
            dual_passes: renders * passes,
            loss_start: out.loss_start,
            loss_final: out.loss,
            reduced_loss: out.loss / dof,
        },
        pearson_reduced_chi2: pearson,
        dispersion,
        worst_rel_error,
        wall_s: t0.elapsed().as_secs_f64(),
        trajectory: out.trajectory,
        model_image,
    })
}
