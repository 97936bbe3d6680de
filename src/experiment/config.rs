//! The experiment file's types: what a user writes in `experiments/*.toml`.
//!
//! Loading happens in two phases (see `load.rs`): figment extracts
//! [`RawExperiment`] (the `[model]` table and every `[[probe]]` stay generic
//! values, so that `nanobragg_args` can be merged and each probe's `kind`
//! selects its settings type); the second phase turns them into the typed
//! [`RawExperiment`]. The JSON schema is generated from these types.

use crate::physics::config::SimConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An experiment file as figment extracts it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "braggrun experiment")]
pub struct RawExperiment {
    /// `[experiment]`: the id, title and description.
    pub experiment: ExperimentMeta,
    /// The simulator configuration (the Rust `SimConfig` names), or
    /// `nanobragg_args = "..."` (nanoBragg command-line flags), optionally
    /// with further keys that override what the flags set.
    #[serde(default)]
    #[schemars(with = "ModelSchema")]
    pub model: toml::Table,
    /// `[matrix]`: the axes whose product, times the probes, gives the cells.
    #[serde(default)]
    pub matrix: MatrixSection,
    /// One or more probes; each matrix combination runs every probe.
    #[serde(default)]
    #[schemars(with = "Vec<ProbeSpec>")]
    pub probe: Vec<toml::Table>,
}

/// `[experiment]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentMeta {
    /// Identifier: letters, digits, '.', '_' and '-' (it names the bundle folder).
    pub id: String,
    /// One-line title (summary.md heading).
    #[serde(default)]
    pub title: String,
    /// What the experiment shows and why (summary.md).
    #[serde(default)]
    pub description: String,
}

/// Only for the schema: `[model]` is a `SimConfig` plus `nanobragg_args`.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ModelSchema {
    /// nanoBragg command-line flags (whitespace separated); keys given next
    /// to it override what the flags set.
    nanobragg_args: Option<String>,
    #[serde(flatten)]
    config: SimConfig,
}

/// `[matrix]`: axes whose Cartesian product (times the probes) gives the
/// cells, with GitHub Actions `include`/`exclude` semantics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MatrixSection {
    /// Devices: "cpu", "cuda" or "cuda:N". Default ["cpu"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Vec<String>>,
    /// Precisions: "float32", "float64". Default ["float64"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Vec<String>>,
    /// Differentiable parameters (names as in `Param`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<Vec<String>>,
    /// Regions of interest: [fast min, fast max, slow min, slow max], inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi: Option<Vec<[u32; 4]>>,
    /// Extra combinations (GitHub Actions semantics): keys are axis names
    /// (`probe`, `device`, `dtype`, `param`, `roi`, `model.<key path>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<BTreeMap<String, serde_json::Value>>")]
    pub include: Vec<toml::Table>,
    /// Combinations to remove: every cell matching all of an entry's keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<BTreeMap<String, serde_json::Value>>")]
    pub exclude: Vec<toml::Table>,
    /// Model axes: `"model.<key path>" = [value, value, ...]`, e.g.
    /// `"model.crystal.n_cells" = [[3,3,3],[5,5,5]]`.
    #[serde(flatten)]
    #[schemars(with = "BTreeMap<String, Vec<serde_json::Value>>")]
    pub model_axes: BTreeMap<String, toml::Value>,
}

/// How the gradient check reduces the ROI to a scalar loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// Loss = the sum of the ROI pixel intensities.
    #[default]
    Sum,
    /// Loss = the mean of the ROI pixel intensities.
    Mean,
}

/// Whether the finite-difference step is relative to the parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum EpsMode {
    /// h = eps * max(|value|, 1 unit): relative to the value, never below
    /// eps of the parameter's unit (Å, deg, mm, cells; so a value of 0 gets
    /// a step on the scale of its unit); the mosaic spread, which C rounds
    /// through float32, at least 1e-3 of its value.
    #[default]
    Auto,
    /// h = eps * |value| (eps itself when the value is 0).
    Relative,
    /// h = eps.
    Absolute,
}

/// One `[[probe]]` table; `kind` selects the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProbeSpec {
    /// Forward-mode derivative of the ROI loss against a central difference.
    Gradcheck(GradcheckProbe),
    /// The published M2h.3 phi-carryover cache arithmetic, with dual numbers.
    PhiCache(PhiCacheProbe),
    /// Compare a render with a reference float image.
    Parity(ParityProbe),
    /// Render and save the float image and a PNG.
    Simulate(SimulateProbe),
    /// Time warm renders: median/min/max seconds and pixel-samples per second.
    Benchmark(BenchmarkProbe),
    /// Fit parameters to an observed image by Levenberg-Marquardt on the
    /// forward-mode Jacobian.
    Refine(RefineProbe),
}

impl ProbeSpec {
    /// The `kind` key of this probe (`gradcheck`, `phi-cache`, `parity`,
    /// `simulate`, `benchmark`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeSpec::Gradcheck(_) => "gradcheck",
            ProbeSpec::PhiCache(_) => "phi-cache",
            ProbeSpec::Parity(_) => "parity",
            ProbeSpec::Simulate(_) => "simulate",
            ProbeSpec::Benchmark(_) => "benchmark",
            ProbeSpec::Refine(_) => "refine",
        }
    }
    /// The `name` the file gives the probe, if any.
    pub fn explicit_name(&self) -> Option<&str> {
        match self {
            ProbeSpec::Gradcheck(p) => p.name.as_deref(),
            ProbeSpec::PhiCache(p) => p.name.as_deref(),
            ProbeSpec::Parity(p) => p.name.as_deref(),
            ProbeSpec::Simulate(p) => p.name.as_deref(),
            ProbeSpec::Benchmark(p) => p.name.as_deref(),
            ProbeSpec::Refine(p) => p.name.as_deref(),
        }
    }
    /// The name used in cell ids (default: the kind).
    pub fn name(&self) -> String {
        self.explicit_name().unwrap_or(self.kind()).to_string()
    }
    /// Whether cells of this probe differ along matrix axis `axis`
    /// (`device`, `dtype`, `param`, `roi`; `model.*` always). An axis a
    /// probe does not use is not crossed with it: the cells would repeat the
    /// same work. A simulate cell differentiates by every matrix parameter
    /// at once (one render, one derivative stack); parity and benchmark
    /// take no parameter (nor does refine: its parameters are its own
    /// list); phi-cache has no ROI.
    pub fn uses_axis(&self, axis: &str) -> bool {
        match (self, axis) {
            (ProbeSpec::Gradcheck(_), _) => true,
            (ProbeSpec::PhiCache(_), "roi") => false,
            (
                ProbeSpec::Simulate(_)
                | ProbeSpec::Parity(_)
                | ProbeSpec::Benchmark(_)
                | ProbeSpec::Refine(_),
                "param",
            ) => false,
            _ => true,
        }
    }
    /// Every probe kind, in the order of [`ProbeSpec`]'s variants.
    pub const KINDS: &'static [&'static str] = &[
        "gradcheck",
        "phi-cache",
        "parity",
        "simulate",
        "benchmark",
        "refine",
    ];

    /// The probe's settings in one line (summary.md).
    pub fn settings_summary(&self) -> String {
        match self {
        ProbeSpec::Gradcheck(g) => format!(
            "reduction {:?}, eps {} ({:?}), atol {}, rtol {}, float32: atol {}, rtol {}, require_nonzero {}",
            g.reduction, g.eps, g.eps_mode, g.atol, g.rtol, g.f32_atol, g.f32_rtol, g.require_nonzero
        ),
        ProbeSpec::PhiCache(c) => format!(
            "expected loss {}, expected grad {}, rtol {}, stored x{}, fresh x{}, {} steps",
            c.expected_loss.map(|x| x.to_string()).unwrap_or_else(|| "–".into()),
            c.expected_grad.map(|x| x.to_string()).unwrap_or_else(|| "–".into()),
            c.rtol,
            c.stored_scale,
            c.fresh_scale,
            c.steps
        ),
        ProbeSpec::Parity(c) => format!(
            "reference {}, correlation >= {}, |sum ratio - 1| <= {}, max rel diff <= {}",
            c.reference, c.min_correlation, c.max_sum_ratio_err, c.max_rel_diff
        ),
        ProbeSpec::Simulate(c) => format!("png scale {:?}", c.png_scale),
        ProbeSpec::Benchmark(b) => format!(
            "{} warm-up render(s), {} timed repeat(s), {} derivative direction(s), threads {}",
            b.warmup,
            b.repeats,
            b.derivative_params().len(),
            b.threads.map(|t| t.to_string()).unwrap_or_else(|| "every core".into())
        ),
        ProbeSpec::Refine(r) => format!(
            "observed {}, {} parameter(s), {:?}, at most {} iterations, ftol {}, xtol {}, tolerance {}{}",
            r.observed,
            r.params.len(),
            r.objective,
            r.max_iterations,
            r.ftol,
            r.xtol,
            r.tolerance,
            r.float32_tolerance
                .map(|t| format!(", float32 tolerance {t}"))
                .unwrap_or_default()
        ),
    }
    }
}

/// `kind = "gradcheck"`: the forward-mode derivative of the ROI loss by a
/// parameter against a Richardson-extrapolated central difference, per
/// pixel and for the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GradcheckProbe {
    /// Name used in cell ids (default: the kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Loss = sum or mean of the ROI intensity.
    pub reduction: Reduction,
    /// Finite-difference step (see `eps_mode`).
    pub eps: f64,
    /// How `eps` scales with the parameter's value.
    pub eps_mode: EpsMode,
    /// Per-parameter steps overriding `eps` (same `eps_mode`), e.g.
    /// `{ mosaic_spread = 1e-3 }` where the model rounds through float32.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub eps_by_param: BTreeMap<String, f64>,
    /// float64 cells pass when |ad - fd| <= atol + scale_rtol * scale + rtol |fd|,
    /// where scale is max |fd| over the ROI's pixels for a pixel, and the sum
    /// of |fd| over the pixels for the loss: the tolerance follows the size of
    /// the derivative image, whatever the parameter's units.
    pub atol: f64,
    /// Relative tolerance against |fd| (see `atol`).
    pub rtol: f64,
    /// Tolerance relative to the derivative image's scale (see `atol`).
    pub scale_rtol: f64,
    /// Report NONSMOOTH where left and right differences disagree at two
    /// steps (h and h/2) by more than the tolerance: a kink or jump.
    pub detect_nonsmooth: bool,
    /// float32 cells: pass when |ad32 - ad64| <= f32_atol + f32_rtol |ad64|
    /// (plus, for pixels, f32_max_rtol times the largest |ad64| of the ROI:
    /// float32 cancellation scales with the largest derivative).
    pub f32_atol: f64,
    /// float32 cells: relative tolerance against |ad64| (see `f32_atol`).
    pub f32_rtol: f64,
    /// float32 pixels: tolerance relative to the largest |ad64| of the ROI
    /// (see `f32_atol`).
    pub f32_max_rtol: f64,
    /// Fail when the ROI image or its derivative is all zero (a vacuous check).
    pub require_nonzero: bool,
}

impl Default for GradcheckProbe {
    fn default() -> Self {
        GradcheckProbe {
            name: None,
            reduction: Reduction::Sum,
            // with Richardson extrapolation (error O(h^4)) a step of 1e-4 of the
            // scale keeps truncation and rounding both far below the tolerance
            eps: 1e-4,
            eps_mode: EpsMode::Auto,
            eps_by_param: BTreeMap::new(),
            atol: 0.0,
            rtol: 1e-3,
            scale_rtol: 1e-5,
            detect_nonsmooth: true,
            f32_atol: 1e-5,
            f32_rtol: 1e-2,
            f32_max_rtol: 1e-4,
            require_nonzero: true,
        }
    }
}

/// `kind = "phi-cache"`: the published M2h.3 phi-carryover cache arithmetic
/// (loss and d loss/d cell_a with dual numbers against a central
/// difference and the published values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PhiCacheProbe {
    /// Name used in cell ids (default: the kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Published loss to compare with (absent: not compared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_loss: Option<f64>,
    /// Published d loss / d cell_a to compare with (absent: not compared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_grad: Option<f64>,
    /// Relative tolerance against the expected values.
    pub rtol: f64,
    /// Relative central-difference step on cell_a.
    pub eps: f64,
    /// Pass when |ad - fd| <= fd_atol + fd_rtol |fd|.
    pub fd_atol: f64,
    /// Relative tolerance of the central-difference check (see `fd_atol`).
    pub fd_rtol: f64,
    /// Scale of the stored ("phi-final") vectors.
    pub stored_scale: f64,
    /// Scale of the fresh stack.
    pub fresh_scale: f64,
    /// Phi steps in the fresh stack.
    pub steps: u32,
}

impl Default for PhiCacheProbe {
    fn default() -> Self {
        PhiCacheProbe {
            name: None,
            expected_loss: None,
            expected_grad: None,
            rtol: 1e-9,
            eps: 1e-6,
            fd_atol: 1e-8,
            fd_rtol: 1e-6,
            stored_scale: 1.001,
            fresh_scale: 0.999,
            steps: 4,
        }
    }
}

/// `kind = "parity"`: a render compared with a reference float image over
/// the ROI (correlation, sum ratio, largest difference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ParityProbe {
    /// Name used in cell ids (default: the kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Reference image: raw little-endian float32, fast index innermost;
    /// relative paths are relative to the experiment file.
    pub reference: String,
    /// Pass when the Pearson correlation is at least this.
    pub min_correlation: f64,
    /// Pass when |sum(sim)/sum(ref) - 1| is at most this.
    pub max_sum_ratio_err: f64,
    /// Pass when max |sim - ref| / max |ref| is at most this.
    pub max_rel_diff: f64,
    /// Also save the rendered float image (image.bin, image.npy) in the
    /// cell folder; the PNGs are always written.
    pub save_images: bool,
}

impl Default for ParityProbe {
    fn default() -> Self {
        ParityProbe {
            name: None,
            reference: String::new(),
            min_correlation: 0.999999,
            max_sum_ratio_err: 1e-5,
            max_rel_diff: 1e-5,
            save_images: false,
        }
    }
}

/// Colour scale of image.png: log10 over 5 decades below the maximum
/// (diffraction spots on a faint background), or linear from the minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum PngScale {
    /// Linear from the image's minimum to its maximum.
    Linear,
    /// log10 over 5 decades below the maximum.
    #[default]
    Log,
}

/// `kind = "simulate"`: render the image (and its derivatives by the
/// cell's parameters) and save it as float images and PNGs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateProbe {
    /// Name used in cell ids (default: the kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Colour scale of image.png.
    pub png_scale: PngScale,
    /// Fail when the image is all zero.
    pub require_nonzero: bool,
    /// Write the float images and PNGs (false: numbers only, for big sweeps).
    pub save_images: bool,
}

impl Default for SimulateProbe {
    fn default() -> Self {
        SimulateProbe {
            name: None,
            png_scale: PngScale::Log,
            require_nonzero: false,
            save_images: true,
        }
    }
}

/// `kind = "benchmark"`: time warm renders (median, min and max seconds,
/// pixel-samples per second), the cell alone on the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BenchmarkProbe {
    /// Name used in cell ids (default: the kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Timed warm renders (after the first, untimed-for-median, render).
    pub repeats: usize,
    /// Renders before timing, the first included (it pays any kernel compile).
    pub warmup: usize,
    /// Parameters to carry as derivative directions ...
    pub derivatives: Vec<crate::physics::params::Param>,
    /// ... or the first N of the parameter list.
    pub derivative_count: usize,
    /// CPU threads for this cell (default: every core; a benchmark cell runs alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// FAIL below this throughput (absent: measurement only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_pixel_samples_per_s: Option<f64>,
}

impl BenchmarkProbe {
    /// The parameters a benchmark differentiates by: its list, or the first N.
    pub fn derivative_params(&self) -> Vec<crate::physics::params::Param> {
        if !self.derivatives.is_empty() {
            self.derivatives.clone()
        } else {
            crate::physics::params::Param::ALL
                .iter()
                .copied()
                .take(self.derivative_count)
                .collect()
        }
    }
}

impl Default for BenchmarkProbe {
    fn default() -> Self {
        BenchmarkProbe {
            name: None,
            repeats: 5,
            warmup: 1,
            derivatives: vec![],
            derivative_count: 0,
            threads: None,
            min_pixel_samples_per_s: None,
        }
    }
}

/// The format of a `refine` probe's observed image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ObservedFormat {
    /// Raw little-endian float32 pixels (nanoBragg `-floatfile`).
    Float,
    /// An SMV image (`-intfile`, `-noisefile`), less `adc`.
    Smv,
    /// A NumPy array of shape (spixels, fpixels), float64 or float32.
    Npy,
}

impl ObservedFormat {
    /// The format a file name implies: `.npy`, `.smv`/`.img`, else float.
    pub fn of_path(path: &str) -> ObservedFormat {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".npy") {
            ObservedFormat::Npy
        } else if lower.ends_with(".smv") || lower.ends_with(".img") {
            ObservedFormat::Smv
        } else {
            ObservedFormat::Float
        }
    }
}

/// How close a refined parameter must come to its known truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Tolerance {
    /// |final - truth| <= this x |truth| (x the parameter's scale when the
    /// truth is 0).
    Relative(f64),
    /// |final - truth| <= this, in the parameter's unit.
    Absolute(f64),
    /// |final - truth| <= this many standard errors (noisy data).
    StandardErrors(f64),
}

impl Tolerance {
    /// The number.
    pub fn value(self) -> f64 {
        match self {
            Tolerance::Relative(v) | Tolerance::Absolute(v) | Tolerance::StandardErrors(v) => v,
        }
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tolerance::Relative(v) => write!(f, "{v:e} relative"),
            Tolerance::Absolute(v) => write!(f, "{v:e} absolute"),
            Tolerance::StandardErrors(v) => write!(f, "{v} standard errors"),
        }
    }
}

/// `kind = "refine"`: recover parameters of an observed image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RefineProbe {
    /// Name used in cell ids (default: the kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The observed image: `"synthetic"` (rendered in float64 at the
    /// configured parameters, times `scale`, optionally with Poisson noise),
    /// or a file relative to the experiment file (see `observed_format`).
    pub observed: String,
    /// The file's format; default from its name (`.npy`, `.smv`/`.img`,
    /// otherwise a float file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_format: Option<ObservedFormat>,
    /// Synthetic only: draw each ROI pixel from a Poisson distribution about
    /// the rendered value (nanoBragg's generator with this seed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_seed: Option<i64>,
    /// Observed = scale x the engine's intensity (the model is multiplied by
    /// it; a synthetic image is rendered with it).
    pub scale: f64,
    /// SMV only: the offset subtracted from each pixel (nanoBragg's `-adc`).
    pub adc: f64,
    /// Whether the configured values are the truth (e.g. the configuration
    /// made a file's image). Always true for `synthetic`; default false
    /// for a file (then nothing is compared with a truth).
    pub truth_is_config: bool,
    /// Optional mask: a `.npy` of shape (spixels, fpixels); pixels equal to
    /// 0 are not fitted (on top of the ROI and the model's mask).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// The parameters to refine: `{ param = "cell_a", start = { relative =
    /// 0.003 } }`; `start` is `{ absolute = v }`, `{ offset = d }` (the
    /// configured value + d) or `{ relative = f }` (the configured value x
    /// (1 + f)), the configured value when absent; optional `lower`,
    /// `upper` bounds and `scale` (the parameter's typical size: relative
    /// changes and the step norm are measured in it).
    pub params: Vec<crate::refine::ParamSpec>,
    /// `least_squares`, or `poisson_nll` (Poisson negative log-likelihood
    /// by IRLS, weights from the model).
    pub objective: crate::refine::Objective,
    /// Iteration cap (each iteration is one render with derivatives).
    pub max_iterations: usize,
    /// Converged when the loss reduction a step predicts is at most `ftol`
    /// x the loss ...
    pub ftol: f64,
    /// ... or no parameter moves by more than `xtol` of max(|value|, scale)
    /// (or the step is within 0.01 standard errors of the optimum).
    pub xtol: f64,
    /// PASS needs every parameter with a known truth within this
    /// (float64 cells, and float32 cells without `float32_tolerance`).
    pub tolerance: Tolerance,
    /// The tolerance of float32 cells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub float32_tolerance: Option<Tolerance>,
    /// Write observed/model/residual images (PNG) and the convergence plot.
    pub save_images: bool,
}

impl RefineProbe {
    /// Whether the observed image is rendered rather than read.
    pub fn is_synthetic(&self) -> bool {
        self.observed == "synthetic"
    }
}

impl Default for RefineProbe {
    fn default() -> Self {
        let lm = crate::refine::LmSettings::default();
        RefineProbe {
            name: None,
            observed: String::new(),
            observed_format: None,
            noise_seed: None,
            scale: 1.0,
            adc: 40.0,
            truth_is_config: false,
            mask: None,
            params: vec![],
            objective: crate::refine::Objective::LeastSquares,
            max_iterations: 30,
            ftol: lm.ftol,
            xtol: lm.xtol,
            tolerance: Tolerance::Relative(1e-5),
            float32_tolerance: None,
            save_images: true,
        }
    }
}

/// The fully resolved experiment (what `experiment.toml` in a bundle holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedExperiment {
    /// `[experiment]`: id, title and description.
    pub experiment: ExperimentMeta,
    /// `[model]` as a typed configuration: `nanobragg_args` applied, the keys
    /// beside it merged, defaults filled in.
    pub model: SimConfig,
    /// `[matrix]` as given, after `--set` and environment layers.
    pub matrix: MatrixSection,
    /// Every `[[probe]]` with its settings typed and defaults filled in.
    pub probe: Vec<ProbeSpec>,
}
