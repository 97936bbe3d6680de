//! Loading an experiment file: figment layers (built-in defaults < the file <
//! `--set key=value` < `RUNNER_*` environment variables), then the typed
//! second phase (model, probes). Every error names the file (or layer), the
//! key path and the value.

use super::config::*;
use super::InputError;
use crate::physics::config::SimConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A loaded, typed experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The experiment file (absolute).
    pub file: PathBuf,
    /// Relative paths in the experiment resolve against this folder.
    pub base_dir: PathBuf,
    /// The experiment after every layer (defaults, file, `--set`,
    /// environment): bundles record it as experiment.toml.
    pub resolved: ResolvedExperiment,
    /// `--set` overrides as given (recorded in commands.txt).
    pub sets: Vec<String>,
    /// The layered configuration (to name the layer that set a key).
    pub figment: Option<Figment>,
}

impl Experiment {
    /// The experiment's id (`[experiment] id`; it names the bundle folder).
    pub(crate) fn id(&self) -> &str {
        &self.resolved.experiment.id
    }
    /// The file or layer (--set, environment) that set a key.
    pub(crate) fn source_of(&self, key: &str) -> String {
        match self.figment.as_ref().and_then(|f| f.find_metadata(key)) {
            Some(md) if !matches!(md.source, Some(figment::Source::File(_))) => {
                source_name(Some(md))
            }
            _ => self.file.display().to_string(),
        }
    }
    /// `experiment.toml` of a bundle: the fully resolved configuration.
    pub(crate) fn resolved_toml(&self) -> String {
        let body = toml::to_string_pretty(&self.resolved)
            .unwrap_or_else(|e| format!("# could not serialise: {e}\n"));
        format!(
            "# Fully resolved configuration (built-in defaults < file < --set < RUNNER_* environment).\n\
             # Source: {}\n\
             # Relative paths resolve against: {}\n\n{}",
            self.file.display(),
            self.base_dir.display(),
            body
        )
    }
}

/// A provider with a readable name in error messages ("--set", environment).
struct Named {
    name: String,
    table: toml::Table,
}

impl Provider for Named {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(&self.table).data()
    }
}

/// Parse a `--set`/`--only` value: TOML if it parses, else a plain string.
pub(crate) fn parse_loose_value(s: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {s}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(s.to_string())),
        Err(_) => toml::Value::String(s.to_string()),
    }
}

/// Split a dotted key path; `matrix.model.<path>` keeps the model path whole
/// (it is one key of `[matrix]`).
pub(crate) fn split_key(key: &str) -> Vec<String> {
    if let Some(rest) = key.strip_prefix("matrix.model.") {
        vec!["matrix".into(), format!("model.{rest}")]
    } else {
        key.split('.').map(|s| s.to_string()).collect()
    }
}

fn insert_path(table: &mut toml::Table, path: &[String], v: toml::Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty key")?;
    if first.is_empty() {
        return Err("empty key segment".into());
    }
    if rest.is_empty() {
        table.insert(first.clone(), v);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => insert_path(t, rest, v),
        _ => Err(format!("'{first}' is already set to a non-table value")),
    }
}

/// Deep merge: values of `over` replace those of `base`; tables merge.
pub(crate) fn deep_merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Deepest `--set` or `RUNNER_*` key nesting accepted.
pub(crate) const MAX_KEY_DEPTH: usize = 16;

/// Most CPU threads a benchmark probe may ask for.
pub(crate) const MAX_BENCH_THREADS: usize = 1024;

/// The layer that set `key`, or of the nearest enclosing table that has
/// one (array elements and include entries have none of their own), else
/// `default`.
fn find_source(fig: &Figment, key: &str, default: &str) -> String {
    let mut k = key;
    loop {
        if let Some(md) = fig.find_metadata(k) {
            return source_name(Some(md));
        }
        match k.rsplit_once('.') {
            Some((parent, _)) => k = parent,
            None => return default.to_string(),
        }
    }
}

fn source_name(md: Option<&Metadata>) -> String {
    match md {
        Some(m) => match &m.source {
            Some(figment::Source::File(p)) => p.display().to_string(),
            Some(figment::Source::Custom(s)) => s.clone(),
            _ => m.name.to_string(),
        },
        None => "configuration".into(),
    }
}

/// Render a figment error: `<source>: <key path>: <what>` per error.
pub(crate) fn figment_message(err: figment::Error, default_source: &str, prefix: &str) -> String {
    figment_message_with(err, default_source, prefix, None)
}

/// As [`figment_message`]; `origin` (the layered figment) names the layer
/// that set each key (file, --set, environment).
pub(crate) fn figment_message_with(
    err: figment::Error,
    default_source: &str,
    prefix: &str,
    origin: Option<&Figment>,
) -> String {
    let mut lines = Vec::new();
    for e in err {
        let mut path: Vec<String> = Vec::new();
        if !prefix.is_empty() {
            path.push(prefix.to_string());
        }
        path.extend(e.path.iter().cloned());
        let what = match &e.kind {
            figment::error::Kind::UnknownField(name, expected) => {
                if path.last() != Some(name) {
                    path.push(name.clone());
                }
                if expected.is_empty() {
                    format!("unknown key `{name}`")
                } else {
                    format!("unknown key `{name}`; valid keys: {}", expected.join(", "))
                }
            }
            figment::error::Kind::MissingField(name) => {
                path.push(name.to_string());
                format!("missing key `{name}`")
            }
            k => k.to_string(),
        };
        let key = if path.is_empty() {
            "(top level)".to_string()
        } else {
            path.join(".")
        };
        let src = match (origin, &e.metadata) {
            (Some(f), _) => find_source(f, &key, default_source),
            (None, Some(md)) => source_name(Some(md)),
            (None, None) => default_source.to_string(),
        };
        lines.push(format!("{src}: {key}: {what}"));
    }
    lines.join("\n")
}

/// Deserialize a generic table into a typed value with path-tracked errors.
pub(crate) fn typed<T: DeserializeOwned>(
    table: &toml::Table,
    source: &str,
    prefix: &str,
) -> Result<T, InputError> {
    typed_with(table, source, prefix, None)
}

fn typed_with<T: DeserializeOwned>(
    table: &toml::Table,
    source: &str,
    prefix: &str,
    origin: Option<&Figment>,
) -> Result<T, InputError> {
    let named = Named {
        name: source.to_string(),
        table: table.clone(),
    };
    Figment::from(named)
        .extract::<T>()
        .map_err(|e| InputError(figment_message_with(e, source, prefix, origin)))
}

fn builtin_defaults() -> toml::Table {
    let mut t = toml::Table::new();
    let mut m = toml::Table::new();
    m.insert("device".into(), toml::Value::Array(vec!["cpu".into()]));
    m.insert("dtype".into(), toml::Value::Array(vec!["float64".into()]));
    t.insert("matrix".into(), toml::Value::Table(m));
    t
}

/// Walk a value tree; every float must be finite.
fn check_finite(
    v: &Value,
    path: &mut Vec<String>,
    fig: &Figment,
    shown: &str,
) -> Result<(), InputError> {
    match v {
        Value::Num(_, n) => {
            if let Some(x) = n.to_f64() {
                if !x.is_finite() {
                    let key = path.join(".");
                    let src = find_source(fig, &key, shown);
                    return Err(InputError(format!(
                        "{src}: {key}: value {x} is not a finite number (NaN and inf are not allowed)"
                    )));
                }
            }
        }
        Value::Dict(_, d) => {
            for (k, x) in d {
                path.push(k.clone());
                check_finite(x, path, fig, shown)?;
                path.pop();
            }
        }
        Value::Array(_, a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(i.to_string());
                check_finite(x, path, fig, shown)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// Characters allowed in ids (experiment, probe names, cell ids).
pub(crate) fn safe_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Load an experiment file with `--set` overrides and (if `use_env`) RUNNER_* variables.
pub(crate) fn load(file: &Path, sets: &[String], use_env: bool) -> Result<Experiment, InputError> {
    let shown = file.display().to_string();
    if !file.exists() {
        return Err(InputError(format!("{shown}: file not found")));
    }
    if !file.is_file() {
        return Err(InputError(format!("{shown}: not a regular file")));
    }
    if let Err(e) = std::fs::read_to_string(file) {
        return Err(InputError(format!("{shown}: cannot read: {e}")));
    }
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let base_dir = abs
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."));

    let mut set_table = toml::Table::new();
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| InputError(format!("--set '{s}': expected key=value")))?;
        let key = k.trim();
        let depth = split_key(key).len();
        if depth > MAX_KEY_DEPTH {
            return Err(InputError(format!(
                "--set '{}': the key is nested {depth} levels deep; at most {MAX_KEY_DEPTH}",
                s.chars().take(80).collect::<String>()
            )));
        }
        insert_path(&mut set_table, &split_key(key), parse_loose_value(v.trim()))
            .map_err(|e| InputError(format!("--set '{s}': {key}: {e}")))?;
    }

    if use_env {
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("RUNNER_") && k.contains("__") {
                let depth = k.split("__").count();
                if depth > MAX_KEY_DEPTH {
                    return Err(InputError(format!(
                        "environment variable {}...: nested {depth} levels deep; at most {MAX_KEY_DEPTH}",
                        k.chars().take(60).collect::<String>()
                    )));
                }
            }
        }
    }
    let mut fig = Figment::from(Named {
        name: "built-in defaults".into(),
        table: builtin_defaults(),
    })
    .merge(Toml::file_exact(&abs))
    .merge(Named {
        name: "--set".into(),
        table: set_table,
    });
    if use_env {
        fig = fig.merge(
            Env::prefixed("RUNNER_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
    }

    let all: Dict = fig
        .extract()
        .map_err(|e| InputError(figment_message(e, &shown, "")))?;
    for (k, v) in &all {
        let mut path = vec![k.clone()];
        check_finite(v, &mut path, &fig, &shown)?;
    }
    let raw: RawExperiment = fig
        .extract()
        .map_err(|e| InputError(figment_message(e, &shown, "")))?;
    resolve(raw, abs, base_dir, sets.to_vec(), Some(&fig))
}

/// Phase two: ids, model (with nanobragg_args), probes.
pub(crate) fn resolve(
    raw: RawExperiment,
    file: PathBuf,
    base_dir: PathBuf,
    sets: Vec<String>,
    origin: Option<&Figment>,
) -> Result<Experiment, InputError> {
    let shown = file.display().to_string();
    let id = &raw.experiment.id;
    if !safe_id(id) {
        return Err(InputError(format!(
            "{shown}: experiment.id: '{id}' is not a safe id (letters, digits, '.', '_', '-'; no path separators; not starting with '.'; at most 100 characters)"
        )));
    }

    // [model]
    let mut model_table = raw.model.clone();
    let model: SimConfig = if let Some(args) = model_table.remove("nanobragg_args") {
        let mut base = super::nanobragg_flags::config_table(&args)
            .map_err(|e| InputError(format!("{shown}: model.nanobragg_args: {e}")))?;
        deep_merge(&mut base, &model_table);
        typed_with(&base, &shown, "model", origin)?
    } else {
        typed_with(&model_table, &shown, "model", origin)?
    };

    // [[probe]]
    if raw.probe.is_empty() {
        return Err(InputError(format!(
            "{shown}: probe: at least one [[probe]] table is required (kind = {})",
            ProbeSpec::KINDS.join(", ")
        )));
    }
    let mut probes = Vec::new();
    for (i, t) in raw.probe.iter().enumerate() {
        let mut t = t.clone();
        let prefix = format!("probe.{i}");
        let kind = match t.remove("kind") {
            Some(toml::Value::String(k)) => k,
            Some(other) => {
                return Err(InputError(format!(
                    "{shown}: {prefix}.kind: expected a string, found {other}"
                )))
            }
            None => {
                return Err(InputError(format!(
                    "{shown}: {prefix}.kind: missing (one of {})",
                    ProbeSpec::KINDS.join(", ")
                )))
            }
        };
        // An error rather than a serde alias: one spelling in files, schema
        // and docs, and the old one fails loudly instead of lingering.
        if t.contains_key("save_image") {
            return Err(InputError(format!(
                "{shown}: {prefix}.save_image: this key is now called `save_images`; rename it"
            )));
        }
        let spec = match kind.as_str() {
            "gradcheck" => ProbeSpec::Gradcheck(typed_with(&t, &shown, &prefix, origin)?),
            "phi-cache" => ProbeSpec::PhiCache(typed_with(&t, &shown, &prefix, origin)?),
            "parity" => ProbeSpec::Parity(typed_with(&t, &shown, &prefix, origin)?),
            "simulate" => ProbeSpec::Simulate(typed_with(&t, &shown, &prefix, origin)?),
            "benchmark" => ProbeSpec::Benchmark(typed_with(&t, &shown, &prefix, origin)?),
            "refine" => ProbeSpec::Refine(typed_with(&t, &shown, &prefix, origin)?),
            other => {
                return Err(InputError(format!(
                    "{shown}: {prefix}.kind: unknown probe kind '{other}'; valid: {}",
                    ProbeSpec::KINDS.join(", ")
                )))
            }
        };
        if let Some(n) = spec.explicit_name() {
            if !safe_id(n) {
                return Err(InputError(format!(
                    "{shown}: {prefix}.name: '{n}' is not a safe name (letters, digits, '.', '_', '-')"
                )));
            }
        }
        check_probe_settings(&spec, &shown, &prefix, &base_dir)?;
        probes.push(spec);
    }

    Ok(Experiment {
        file,
        base_dir,
        resolved: ResolvedExperiment {
            experiment: raw.experiment,
            model,
            matrix: raw.matrix,
            probe: probes,
        },
        sets,
        figment: origin.cloned(),
    })
}

fn check_probe_settings(
    spec: &ProbeSpec,
    shown: &str,
    prefix: &str,
    base_dir: &Path,
) -> Result<(), InputError> {
    let pos = |name: &str, v: f64, allow_zero: bool| -> Result<(), InputError> {
        if v < 0.0 || (!allow_zero && v == 0.0) {
            Err(InputError(format!(
                "{shown}: {prefix}.{name}: must be {} (got {v})",
                if allow_zero { ">= 0" } else { "> 0" }
            )))
        } else {
            Ok(())
        }
    };
    match spec {
        ProbeSpec::Gradcheck(g) => {
            pos("eps", g.eps, false)?;
            pos("atol", g.atol, true)?;
            pos("rtol", g.rtol, true)?;
            pos("f32_atol", g.f32_atol, true)?;
            pos("f32_rtol", g.f32_rtol, true)?;
            pos("f32_max_rtol", g.f32_max_rtol, true)?;
            for (k, v) in &g.eps_by_param {
                k.parse::<crate::physics::params::Param>()
                    .map_err(|e| InputError(format!("{shown}: {prefix}.eps_by_param.{k}: {e}")))?;
                pos(&format!("eps_by_param.{k}"), *v, false)?;
            }
        }
        ProbeSpec::PhiCache(p) => {
            pos("rtol", p.rtol, true)?;
            pos("eps", p.eps, false)?;
            pos("fd_atol", p.fd_atol, true)?;
            pos("fd_rtol", p.fd_rtol, true)?;
            if p.steps == 0 {
                return Err(InputError(format!(
                    "{shown}: {prefix}.steps: must be >= 1 (got 0)"
                )));
            }
            // The probe keeps a stack of `steps` sets of six dual vectors.
            let mut need = crate::physics::budget::Need::default();
            need.add("phi-cache stack", p.steps as u64, 512);
            need.check(&format!("{prefix}.steps"))
                .map_err(|e| InputError(format!("{shown}: {e}")))?;
        }
        ProbeSpec::Parity(p) => {
            if p.reference.is_empty() {
                return Err(InputError(format!(
                    "{shown}: {prefix}.reference: missing (a float image file)"
                )));
            }
            let path = base_dir.join(&p.reference);
            if !path.is_file() {
                return Err(InputError(format!(
                    "{shown}: {prefix}.reference: file '{}' not found (resolved to {})",
                    p.reference,
                    path.display()
                )));
            }
            pos("max_sum_ratio_err", p.max_sum_ratio_err, true)?;
            pos("max_rel_diff", p.max_rel_diff, true)?;
        }
        ProbeSpec::Simulate(_) => {}
        ProbeSpec::Benchmark(b) => {
            if b.repeats == 0 || b.warmup == 0 {
                return Err(InputError(format!(
                    "{shown}: {prefix}.repeats and warmup: must be >= 1 (got {} and {})",
                    b.repeats, b.warmup
                )));
            }
            if b.threads == Some(0) {
                return Err(InputError(format!(
                    "{shown}: {prefix}.threads: must be >= 1 (got 0)"
                )));
            }
            if let Some(t) = b.threads.filter(|t| *t > MAX_BENCH_THREADS) {
                return Err(InputError(format!(
                    "{shown}: {prefix}.threads: at most {MAX_BENCH_THREADS} (got {t})"
                )));
            }
            if b.derivative_count > crate::physics::params::Param::ALL.len() {
                return Err(InputError(format!(
                    "{shown}: {prefix}.derivative_count: at most {} (got {})",
                    crate::physics::params::Param::ALL.len(),
                    b.derivative_count
                )));
            }
            if let Some(r) = b.min_pixel_samples_per_s {
                pos("min_pixel_samples_per_s", r, false)?;
            }
        }
        ProbeSpec::Refine(r) => check_refine(r, shown, prefix, base_dir)?,
    }
    Ok(())
}

/// The settings of a `refine` probe that can be checked without the model
/// (the parameters' applicability and the image size are checked per cell,
/// in `matrix::validate`).
fn check_refine(
    r: &super::config::RefineProbe,
    shown: &str,
    prefix: &str,
    base_dir: &Path,
) -> Result<(), InputError> {
    use crate::refine::Start;
    let err = |key: &str, msg: String| InputError(format!("{shown}: {prefix}.{key}: {msg}"));
    let file_exists = |key: &str, f: &str| -> Result<(), InputError> {
        let path = base_dir.join(f);
        if path.is_file() {
            Ok(())
        } else {
            Err(err(
                key,
                format!("file '{f}' not found (resolved to {})", path.display()),
            ))
        }
    };
    if r.observed.is_empty() {
        return Err(err(
            "observed",
            "missing (\"synthetic\", or an image file: float, SMV or .npy)".into(),
        ));
    }
    if r.is_synthetic() {
        if r.observed_format.is_some() {
            return Err(err(
                "observed_format",
                "only for an observed file (observed is \"synthetic\")".into(),
            ));
        }
    } else {
        file_exists("observed", &r.observed)?;
        if r.noise_seed.is_some() {
            return Err(err(
                "noise_seed",
                format!(
                    "only for observed = \"synthetic\" (observed is the file '{}')",
                    r.observed
                ),
            ));
        }
    }
    if let Some(m) = &r.mask {
        file_exists("mask", m)?;
    }
    if !(r.scale.is_finite() && r.scale > 0.0) {
        return Err(err("scale", format!("must be > 0 (got {})", r.scale)));
    }
    if !r.adc.is_finite() {
        return Err(err("adc", format!("must be a number (got {})", r.adc)));
    }
    if r.max_iterations == 0 {
        return Err(err("max_iterations", "must be >= 1 (got 0)".into()));
    }
    for (key, v) in [("ftol", r.ftol), ("xtol", r.xtol)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(err(key, format!("must be >= 0 (got {v})")));
        }
    }
    for (key, t) in [
        ("tolerance", Some(r.tolerance)),
        ("float32_tolerance", r.float32_tolerance),
    ] {
        if let Some(t) = t {
            if !(t.value().is_finite() && t.value() > 0.0) {
                return Err(err(key, format!("must be > 0 (got {t})")));
            }
        }
    }
    if r.params.is_empty() {
        return Err(err(
            "params",
            "at least one parameter to refine, e.g. params = [{ param = \"cell_a\", start = { relative = 0.003 } }]".into(),
        ));
    }
    let mut seen = Vec::new();
    for (j, p) in r.params.iter().enumerate() {
        let key = |k: &str| format!("params.{j}.{k}");
        if seen.contains(&p.param) {
            return Err(err(&key("param"), format!("'{}' is listed twice", p.param)));
        }
        seen.push(p.param);
        for (k, v) in [("lower", p.lower), ("upper", p.upper), ("scale", p.scale)] {
            if let Some(v) = v {
                if !v.is_finite() {
                    return Err(err(&key(k), format!("must be a finite number (got {v})")));
                }
            }
        }
        if let Some(sc) = p.scale {
            if sc <= 0.0 {
                return Err(err(&key("scale"), format!("must be > 0 (got {sc})")));
            }
        }
        if let (Some(lo), Some(hi)) = (p.lower, p.upper) {
            if lo >= hi {
                return Err(err(
                    &key("lower"),
                    format!("{lo} is not below upper {hi} ('{}')", p.param),
                ));
            }
        }
        match p.start {
            Some(Start::Absolute(v)) | Some(Start::Offset(v)) | Some(Start::Relative(v))
                if !v.is_finite() =>
            {
                return Err(err(&key("start"), format!("must be finite (got {v})")));
            }
            Some(Start::Absolute(v))
                if p.lower.is_some_and(|lo| v < lo) || p.upper.is_some_and(|hi| v > hi) =>
            {
                return Err(err(
                    &key("start"),
                    format!(
                        "absolute start {v} is outside the bounds [{}, {}] of '{}'",
                        p.lower.map(|x| x.to_string()).unwrap_or("-inf".into()),
                        p.upper.map(|x| x.to_string()).unwrap_or("inf".into()),
                        p.param
                    ),
                ));
            }
            _ => {}
        }
    }
    use crate::physics::params::Param;
    if seen.contains(&Param::Fluence) && seen.contains(&Param::DefaultF) {
        return Err(err(
            "params",
            "'fluence' and 'default_f' together are degenerate (the image is proportional to fluence x default_f²): refine one of them".into(),
        ));
    }
    Ok(())
}
