//! What a cell produces: its [`Verdict`], the probe's [`Outcome`], the
//! deterministic record (`result.json`, [`CellRecord`]), the timing
//! (`timing.json`, [`Timing`]), the per-cell log, and the typed details of
//! each probe kind. The scheduler builds these; the evidence layer writes
//! and reads them.

use super::config::{EpsMode, Reduction};
use super::matrix::Cell;
use crate::refine::FitSummary;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;

/// A cell's verdict (serialised as `PASS`, `FAIL`, `ERROR`, `SKIPPED`,
/// `NONSMOOTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Every check passed.
    Pass,
    /// A check failed.
    Fail,
    /// The probe could not run (setup, engine failure, panic).
    Error,
    /// Not run: the device is absent, or `--fail-fast` stopped the run.
    Skipped,
    /// The check met a point where the image is not differentiable (a kink,
    /// a jump, a flat piece): neither a pass nor a wrong number.
    #[serde(rename = "NONSMOOTH")]
    NonSmooth,
}

impl Verdict {
    /// The word in reports (`PASS`, ...), as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
            Verdict::Skipped => "SKIPPED",
            Verdict::NonSmooth => "NONSMOOTH",
        }
    }

    /// The verdict rule of a probe's checks: PASS when no check failed,
    /// else FAIL.
    pub fn of_checks(failures: &[String]) -> Verdict {
        if failures.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    /// FAIL, ERROR and NONSMOOTH: a cell to run again on `--resume`, and one
    /// that stops a `--fail-fast` run.
    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Error | Verdict::NonSmooth)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a probe found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The verdict.
    pub status: Verdict,
    /// Why, when not PASS.
    pub reason: Option<String>,
    /// The checked loss (or the probe's main number).
    pub loss: Option<f64>,
    /// The derivative by forward-mode dual numbers.
    pub grad_ad: Option<f64>,
    /// The derivative by finite differences.
    pub grad_fd: Option<f64>,
    /// |grad_ad - reference|, or the probe's absolute error.
    pub abs_err: Option<f64>,
    /// The relative error.
    pub rel_err: Option<f64>,
    /// Probe-specific numbers (one of the `*Details` types, as a JSON map).
    pub details: Map<String, Value>,
    /// Files the probe wrote into the cell folder (names).
    pub files: Vec<String>,
    /// The engine's description of the device (timing.json, log; not result.json).
    pub engine: Option<String>,
    /// True when the device was absent.
    pub unavailable: bool,
}

impl Outcome {
    /// An outcome with this verdict and nothing else.
    pub fn empty(status: Verdict) -> Self {
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
    /// An ERROR outcome with its message.
    pub fn error(msg: impl Into<String>) -> Self {
        let mut o = Outcome::empty(Verdict::Error);
        o.reason = Some(msg.into());
        o
    }
    /// The outcome of checks: PASS, or FAIL with the failures as the reason
    /// (see [`Verdict::of_checks`]).
    pub fn checked(failures: &[String]) -> Self {
        let mut o = Outcome::empty(Verdict::of_checks(failures));
        o.reason = (!failures.is_empty()).then(|| failures.join("; "));
        o
    }
}

/// Typed details as the JSON map of a record (keys sorted, as written).
pub fn details_map<T: Serialize>(d: &T) -> Map<String, Value> {
    match serde_json::to_value(d) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// A per-cell log, written to `log.txt`.
#[derive(Debug)]
pub struct Log {
    start: Instant,
    /// The log so far.
    pub text: String,
}

impl Default for Log {
    fn default() -> Self {
        Self::new()
    }
}

impl Log {
    /// An empty log; times count from now.
    pub fn new() -> Self {
        Log {
            start: Instant::now(),
            text: String::new(),
        }
    }
    /// Append a line (each line of `s`) with the elapsed time.
    pub fn line(&mut self, s: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        for l in s.as_ref().lines() {
            self.text.push_str(&format!("[{t:9.3}s] {l}\n"));
        }
    }
    /// Log a verdict of checks: the word, and the failures when there are any.
    pub fn verdict(&mut self, status: Verdict, failures: &[String]) {
        if failures.is_empty() {
            self.line(status.as_str());
        } else {
            self.line(format!("{}: {}", status.as_str(), failures.join("; ")));
        }
    }
}

/// `result.json` of a cell: the deterministic record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// The cell id.
    pub id: String,
    /// The experiment id.
    pub experiment: String,
    /// The probe's name.
    pub probe: String,
    /// The probe's kind.
    pub kind: String,
    /// The verdict.
    pub status: Verdict,
    /// Why, when not PASS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The device (`cpu`, `cuda`, `cuda:N`).
    pub device: String,
    /// The scalar type (`float64`, `float32`).
    pub dtype: String,
    /// The parameter differentiated by, if any.
    pub param: Option<String>,
    /// The region of interest the probe used (fast min, fast max, slow min, slow max).
    pub roi: [u32; 4],
    /// See [`Outcome::loss`].
    pub loss: Option<f64>,
    /// See [`Outcome::grad_ad`].
    pub grad_ad: Option<f64>,
    /// See [`Outcome::grad_fd`].
    pub grad_fd: Option<f64>,
    /// See [`Outcome::abs_err`].
    pub abs_err: Option<f64>,
    /// See [`Outcome::rel_err`].
    pub rel_err: Option<f64>,
    /// The axis values that define the cell.
    pub axes: BTreeMap<String, Value>,
    /// Probe-specific numbers (tolerances, worst pixel, published values, ...).
    pub details: Map<String, Value>,
    /// Files the probe wrote next to result.json.
    pub files: Vec<String>,
    /// The device was absent (SKIPPED, or FAIL under --require-device).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub device_unavailable: bool,
    /// Not run (--fail-fast stopped the run first); `--resume` runs it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_run: bool,
    /// The cell had the machine to itself: no other cell ran while it did
    /// (benchmark cells, whatever `--jobs`; see
    /// [`runs_alone`](crate::experiment::run::runs_alone)).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ran_alone: bool,
}

impl CellRecord {
    /// The record of a cell's outcome.
    pub fn of(experiment: &str, cell: &Cell, o: &Outcome) -> CellRecord {
        CellRecord {
            id: cell.id.clone(),
            experiment: experiment.to_string(),
            probe: cell.probe_name.clone(),
            kind: cell.kind.to_string(),
            status: o.status,
            reason: o.reason.clone(),
            device: cell.device.to_string(),
            dtype: cell.dtype.to_string(),
            param: cell.param.map(|p| p.name().to_string()),
            roi: cell.effective_roi,
            loss: o.loss,
            grad_ad: o.grad_ad,
            grad_fd: o.grad_fd,
            abs_err: o.abs_err,
            rel_err: o.rel_err,
            axes: cell.plan_row().axes,
            details: o.details.clone(),
            files: o.files.clone(),
            device_unavailable: o.unavailable,
            not_run: false,
            ran_alone: false,
        }
    }

    /// The record of a cell that `--fail-fast` kept from starting.
    pub fn not_run(experiment: &str, cell: &Cell) -> CellRecord {
        let mut o = Outcome::empty(Verdict::Skipped);
        o.reason = Some("not run: --fail-fast stopped the run after a failure".into());
        let mut rec = CellRecord::of(experiment, cell, &o);
        rec.not_run = true;
        rec
    }

    /// The details as a probe's typed details (None when they are another
    /// kind's, or from an older format).
    pub fn details_as<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(Value::Object(self.details.clone())).ok()
    }
}

/// `timing.json` of a cell: what varies between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timing {
    /// Seconds the cell took.
    pub seconds: f64,
    /// UTC start, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub started: String,
    /// UTC end.
    pub finished: String,
    /// The engine's description of the device.
    pub engine: Option<String>,
    /// Rayon threads the cell had.
    pub threads: usize,
}

/// A finished cell: its record and timing (what the reports show).
#[derive(Debug, Clone)]
pub struct Row {
    /// `result.json`.
    pub record: CellRecord,
    /// `timing.json`.
    pub timing: Timing,
}

// ---- Typed details of each probe kind (the `details` of result.json) ----

/// The pixel whose derivative is furthest outside its tolerance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorstPixel {
    /// Fast index on the detector.
    pub fast: usize,
    /// Slow index on the detector.
    pub slow: usize,
    /// The pixel's intensity.
    pub intensity: Option<f64>,
    /// Its derivative by dual numbers.
    pub d_ad: Option<f64>,
    /// The reference derivative.
    pub d_ref: Option<f64>,
    /// |d_ad - d_ref|.
    pub abs_err: Option<f64>,
    /// abs_err / |d_ref|.
    pub rel_err: Option<f64>,
    /// abs_err / the pixel's limit.
    pub err_over_limit: Option<f64>,
}

/// The smoothness check of a gradient check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Smoothness {
    /// Whether left and right differences were compared.
    pub checked: bool,
    /// The loss's left/right asymmetry at the step h.
    pub asymmetry_h: Option<f64>,
    /// ... and at h/2.
    pub asymmetry_h2: Option<f64>,
    /// Pixels found not smooth.
    pub nonsmooth_pixels: usize,
    /// Features of the configuration that can make the image non-smooth.
    pub features: Vec<String>,
}

/// Details of a `gradcheck` cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GradcheckDetails {
    /// The parameter's value.
    pub param_value: f64,
    /// Its unit.
    pub param_unit: String,
    /// How the ROI is reduced to the loss.
    pub reduction: Reduction,
    /// The step setting used.
    pub eps: f64,
    /// How the step follows the value.
    pub eps_mode: EpsMode,
    /// The first finite-difference step h.
    pub step: f64,
    /// The finest step taken.
    pub finest_step: f64,
    /// `interior`, or `boundary` (one-sided differences).
    pub domain: String,
    /// The domain edge, when one-sided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary: Option<String>,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Tolerance relative to the largest derivative.
    pub scale_rtol: f64,
    /// scale_rtol times the largest reference derivative.
    pub pixel_scale_tol: f64,
    /// The limit on the loss gradient's error.
    pub loss_limit: Option<f64>,
    /// What the reference is.
    pub reference: String,
    /// The reference gradient.
    pub grad_ref: Option<f64>,
    /// The plain difference quotient at step h.
    pub grad_fd_step_h: Option<f64>,
    /// The finite difference's error estimate.
    pub fd_error_estimate: Option<f64>,
    /// The float64 loss (float32 cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_float64: Option<f64>,
    /// The loss at +h.
    pub loss_plus: Option<f64>,
    /// The loss at -h (central differences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_minus: Option<f64>,
    /// The smoothness check.
    pub smoothness: Smoothness,
    /// Pixels in the ROI.
    pub pixels: usize,
    /// Non-zero pixels.
    pub nonzero_pixels: usize,
    /// Pixels with a non-zero derivative.
    pub nonzero_derivative_pixels: usize,
    /// Whether an all-zero image or derivative fails.
    pub require_nonzero: bool,
    /// The worst pixel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_pixel: Option<WorstPixel>,
}

/// Details of a `phi-cache` cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhiCacheDetails {
    /// The unit cell (Å, degrees).
    pub cell: [f64; 6],
    /// Scale of the stored vectors.
    pub stored_scale: f64,
    /// Scale of the fresh vectors.
    pub fresh_scale: f64,
    /// Phi steps.
    pub steps: u32,
    /// The central-difference step.
    pub step: f64,
    /// Relative tolerance against the published values.
    pub rtol: f64,
    /// Absolute tolerance against the central difference.
    pub fd_atol: f64,
    /// Relative tolerance against the central difference.
    pub fd_rtol: f64,
    /// The published loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_loss: Option<f64>,
    /// Relative error of the loss (with `expected_loss`; null when not
    /// finite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_rel_err: Option<f64>,
    /// The published gradient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_grad: Option<f64>,
    /// Relative error of the gradient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_rel_err: Option<f64>,
}

/// Details of a `parity` cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParityDetails {
    /// The reference image file.
    pub reference: String,
    /// Pearson correlation of the ROI.
    pub correlation: Option<f64>,
    /// sum(render) / sum(reference).
    pub sum_ratio: Option<f64>,
    /// max |render - reference|.
    pub max_abs_diff: Option<f64>,
    /// max |reference|.
    pub reference_max: Option<f64>,
    /// max_abs_diff / reference_max.
    pub max_rel_diff: Option<f64>,
    /// The correlation limit.
    pub min_correlation: f64,
    /// The sum-ratio limit.
    pub max_sum_ratio_err: f64,
    /// The relative-difference limit.
    pub max_rel_diff_limit: f64,
    /// The .npy files written, with shape and dtype.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrays: Vec<ArrayFile>,
}

/// Details of a `simulate` cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimulateDetails {
    /// Detector width.
    pub fpixels: usize,
    /// Detector height.
    pub spixels: usize,
    /// Largest ROI pixel.
    pub max: Option<f64>,
    /// Mean ROI pixel.
    pub mean: Option<f64>,
    /// Non-zero ROI pixels.
    pub nonzero_pixels: usize,
    /// The layout of image.bin.
    pub format: String,
    /// The parameters of the derivative images, in the stack's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derivative_params: Vec<String>,
    /// The .npy files written, with shape and dtype.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrays: Vec<ArrayFile>,
}

/// A NumPy array a probe wrote (listed under `arrays` in the details).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayFile {
    /// The file name in the cell folder.
    pub file: String,
    /// The element type as numpy names it.
    pub dtype: String,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// What each index is (`param`, `slow`, `fast`).
    pub axes: Vec<String>,
    /// For a derivative stack: the parameter of each plane, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
}

/// Details of a `benchmark` cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchmarkDetails {
    /// The engine's device description.
    pub device_name: String,
    /// CPU threads (0 on a GPU).
    pub threads: usize,
    /// The parameters differentiated by.
    pub derivatives: Vec<String>,
    /// ROI pixels.
    pub pixels: u64,
    /// Pixel-samples of one render.
    pub pixel_samples: f64,
    /// Timed repeats.
    pub repeats: usize,
    /// Seconds of the first (cold) render.
    pub first_s: f64,
    /// Median seconds of the repeats.
    pub median_s: f64,
    /// Fastest repeat.
    pub min_s: f64,
    /// Slowest repeat.
    pub max_s: f64,
    /// Pixel-samples per second at the median.
    pub pixel_samples_per_s: f64,
    /// ... per thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_samples_per_s_per_thread: Option<f64>,
    /// Median GPU seconds of the kernels alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_median_s: Option<f64>,
    /// Pixel-samples per kernel second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_pixel_samples_per_s: Option<f64>,
    /// Peak resident memory (KiB).
    pub peak_rss_kib: Option<u64>,
    /// Sum of the image (every repeat must give it).
    pub image_sum: f64,
    /// Seconds of the whole benchmark.
    pub wall_s: f64,
}

/// One refined parameter of a `refine` cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefinedParam {
    /// The parameter's name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// Where the fit started.
    pub start: f64,
    /// Where it ended.
    #[serde(rename = "final")]
    pub value: f64,
    /// The true value, when known (the configured value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth: Option<f64>,
    /// final - truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<f64>,
    /// |final - truth| / |truth| (the parameter's scale when the truth is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_error: Option<f64>,
    /// Standard error (null when the normal matrix is singular).
    pub se: Option<f64>,
    /// (final - truth) / se.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<f64>,
    /// Lower bound, when one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// Upper bound, when one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// The parameter's scale.
    pub scale: f64,
    /// Whether it is within the tolerance of its truth (None: no truth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_tolerance: Option<bool>,
}

/// Details of a `refine` cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefineDetails {
    /// What the observed image is.
    pub observed: String,
    /// `least_squares` or `poisson_nll`.
    pub objective: String,
    /// Pixels fitted (ROI less masked).
    pub pixels: usize,
    /// Every parameter: start, final, truth, error, standard error.
    pub params: Vec<RefinedParam>,
    /// Correlation matrix of the estimates (parameter order as `params`;
    /// null entries where the normal matrix is singular).
    pub correlation: Vec<Vec<Option<f64>>>,
    /// Convergence, iterations, renders, losses: the fit's own summary
    /// (flattened: its keys sit in the details object itself).
    #[serde(flatten)]
    pub fit: FitSummary,
    /// The iteration cap.
    pub max_iterations: usize,
    /// Poisson fits: Pearson chi² / (pixels - parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pearson_reduced_chi2: Option<f64>,
    /// The dispersion the covariance is scaled by.
    pub dispersion: f64,
    /// The largest relative error against the truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_rel_error: Option<f64>,
    /// The largest |pull|.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_pull: Option<f64>,
    /// The tolerance the parameters were held to (as written in the probe).
    pub tolerance: String,
    /// Seconds the fit took (observed image excluded; varies between runs).
    pub wall_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_serialises_as_the_published_words() {
        for (v, s) in [
            (Verdict::Pass, "\"PASS\""),
            (Verdict::Fail, "\"FAIL\""),
            (Verdict::Error, "\"ERROR\""),
            (Verdict::Skipped, "\"SKIPPED\""),
            (Verdict::NonSmooth, "\"NONSMOOTH\""),
        ] {
            assert_eq!(serde_json::to_string(&v).unwrap(), s);
            assert_eq!(format!("\"{v}\""), s);
            assert_eq!(serde_json::from_str::<Verdict>(s).unwrap(), v);
        }
        assert_eq!(Verdict::of_checks(&[]), Verdict::Pass);
        assert_eq!(Verdict::of_checks(&["x".into()]), Verdict::Fail);
    }

    #[test]
    fn published_refine_details_read_back_and_write_the_same_json() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runs/published");
        let mut seen = 0;
        for device in std::fs::read_dir(&root).unwrap().flatten() {
            let Ok(runs) = std::fs::read_dir(device.path().join("refine-recovery")) else {
                continue;
            };
            for run in runs.flatten() {
                for cell in std::fs::read_dir(run.path().join("cells"))
                    .unwrap()
                    .flatten()
                {
                    let text = std::fs::read_to_string(cell.path().join("result.json")).unwrap();
                    let rec: Value = serde_json::from_str(&text).unwrap();
                    let Value::Object(details) = &rec["details"] else {
                        panic!("{}: no details", cell.path().display());
                    };
                    if rec["status"] == "SKIPPED" {
                        continue;
                    }
                    let d: RefineDetails = serde_json::from_value(Value::Object(details.clone()))
                        .unwrap_or_else(|e| panic!("{}: {e}", cell.path().display()));
                    let again = details_map(&d);
                    assert_eq!(
                        serde_json::to_string_pretty(&again).unwrap(),
                        serde_json::to_string_pretty(details).unwrap(),
                        "{}",
                        cell.path().display()
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen >= 10, "only {seen} published refine cells");
    }

    #[test]
    fn details_leave_absent_keys_out_and_write_non_finite_as_null() {
        let mut d = PhiCacheDetails {
            cell: [1.0; 6],
            stored_scale: 1.0,
            fresh_scale: 1.0,
            steps: 2,
            step: 1e-6,
            rtol: 1e-6,
            fd_atol: 0.0,
            fd_rtol: 1e-6,
            expected_loss: None,
            loss_rel_err: None,
            expected_grad: Some(2.0),
            grad_rel_err: Some(f64::NAN),
        };
        let m = details_map(&d);
        assert!(!m.contains_key("loss_rel_err"));
        assert_eq!(m["grad_rel_err"], Value::Null);
        d.grad_rel_err = Some(0.5);
        let m = details_map(&d);
        let back: PhiCacheDetails = serde_json::from_value(Value::Object(m)).unwrap();
        assert_eq!(back.grad_rel_err, Some(0.5));
        assert_eq!(back.loss_rel_err, None);
    }
}
