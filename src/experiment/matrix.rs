//! Matrix expansion: axes x probes, GitHub Actions `include`/`exclude`
//! semantics, stable cell ids, and per-cell validation.

use super::config::*;
use super::load::{deep_merge, safe_id, split_key, typed, Experiment};
use super::InputError;
use crate::engine::{Device, Dtype};
use crate::physics::config::SimConfig;
use crate::physics::params::Param;
use crate::physics::Simulation;
use serde::Serialize;
use std::collections::BTreeMap;

/// Cells above this count need `--allow-large`.
pub(crate) const MAX_CELLS: usize = 256;

/// No more cells than this are planned, even with `--allow-large`: each
/// cell carries its own model, and planning is about 0.1 ms a cell, so the
/// largest plan takes seconds; a larger matrix is refused before any cell
/// is built.
pub(crate) const MAX_PLANNED_CELLS: usize = 100_000;

/// One cell: a combination of axis values and one probe.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Position in the plan (0-based).
    pub index: usize,
    /// Stable cell id: the axis values joined by '-' (see the module doc).
    pub id: String,
    /// Index of the cell's probe in the experiment's `[[probe]]` list.
    pub probe_index: usize,
    /// The probe's name (its `name`, default its kind).
    pub probe_name: String,
    /// The probe's kind (`gradcheck`, `phi-cache`, ...).
    pub kind: &'static str,
    /// The axis values that define the cell, in canonical key order.
    pub values: Vec<(String, toml::Value)>,
    /// The engine the cell renders on.
    pub device: Device,
    /// The precision the cell renders in.
    pub dtype: Dtype,
    /// The cell's `param` axis value (none for a probe that takes no
    /// parameter).
    pub param: Option<Param>,
    /// The derivative directions a simulate cell renders: its parameter, or
    /// every parameter of the matrix (simulate is not crossed with `param`).
    pub derivatives: Vec<Param>,
    /// ROI from the matrix (None: the model's ROI, or the whole detector).
    pub roi: Option<[u32; 4]>,
    /// The simulator configuration of this cell (`[model]` with the cell's
    /// `model.*` axis values applied).
    pub model: SimConfig,
    /// Filled by validation: detector size and the ROI the probe uses.
    pub fpixels: usize,
    /// Detector height in pixels along the slow axis (C's spixels).
    pub spixels: usize,
    /// The ROI the probe uses: fast min, fast max, slow min, slow max
    /// (inclusive pixels).
    pub effective_roi: [u32; 4],
    /// Filled by validation: the memory a render of this cell needs (bytes).
    pub mem_bytes: u64,
}

/// A row of `runner plan --format json`.
#[derive(Debug, Serialize)]
pub(crate) struct PlanRow {
    /// The cell's position in the plan (0-based).
    pub index: usize,
    /// The cell's stable id.
    pub id: String,
    /// The probe's name.
    pub probe: String,
    /// The probe's kind.
    pub kind: String,
    /// The device (`cpu`, `cuda`, `cuda:N`).
    pub device: String,
    /// The precision (`float32`, `float64`).
    pub dtype: String,
    /// The differentiable parameter, if the cell has one.
    pub param: Option<String>,
    /// The ROI the probe uses: fast min, fast max, slow min, slow max.
    pub roi: [u32; 4],
    /// The cell's `model.*` axis values.
    pub axes: BTreeMap<String, serde_json::Value>,
}

impl Cell {
    /// The cell as a row of `runner plan --format json`.
    pub(crate) fn plan_row(&self) -> PlanRow {
        PlanRow {
            index: self.index,
            id: self.id.clone(),
            probe: self.probe_name.clone(),
            kind: self.kind.to_string(),
            device: self.device.to_string(),
            dtype: self.dtype.to_string(),
            param: self.param.map(|p| p.name().to_string()),
            roi: self.effective_roi,
            axes: self
                .values
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect(),
        }
    }

    /// The value this cell has for an axis key (for `--only`).
    pub(crate) fn value_of(&self, key: &str) -> Option<toml::Value> {
        match key {
            "id" => Some(self.id.clone().into()),
            "probe" => Some(self.probe_name.clone().into()),
            "kind" => Some(self.kind.to_string().into()),
            "device" => Some(self.device.to_string().into()),
            "dtype" => Some(self.dtype.to_string().into()),
            "param" => self.param.map(|p| p.name().to_string().into()),
            "roi" => Some(toml::Value::Array(
                self.effective_roi
                    .iter()
                    .map(|x| toml::Value::Integer(*x as i64))
                    .collect(),
            )),
            k => self
                .values
                .iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.clone()),
        }
    }
}

fn key_rank(k: &str) -> (u8, String) {
    let r = match k {
        "probe" => 0,
        "device" => 1,
        "dtype" => 2,
        "param" => 3,
        "roi" => 4,
        _ => 5,
    };
    (r, k.to_string())
}

/// Numeric-aware equality (3 == 3.0).
pub(crate) fn value_eq(a: &toml::Value, b: &toml::Value) -> bool {
    use toml::Value::*;
    match (a, b) {
        (Integer(x), Float(y)) | (Float(y), Integer(x)) => (*x as f64) == *y,
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| value_eq(p, q)),
        (Table(x), Table(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).map(|w| value_eq(v, w)).unwrap_or(false))
        }
        _ => a == b,
    }
}

/// A value as it appears in a cell id.
fn token(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => format!("{f}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(a) => a.iter().map(token).collect::<Vec<_>>().join("_"),
        toml::Value::Table(t) => t
            .iter()
            .map(|(k, v)| format!("{k}_{}", token(v)))
            .collect::<Vec<_>>()
            .join("_"),
        toml::Value::Datetime(d) => d.to_string(),
    }
}

/// Replace every character outside [A-Za-z0-9._-] by '_'.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A token of at most 40 characters: long values keep a prefix and a digest.
fn short_token(t: String) -> String {
    if t.chars().count() <= 40 {
        return t;
    }
    use sha2::Digest;
    let d = hex::encode(sha2::Sha256::digest(t.as_bytes()));
    let head: String = t.chars().take(24).collect();
    format!("{head}~{}", &d[..8])
}

/// The stable id of a combination: its values in canonical key order
/// (`id_keys`: the keys that make the id; None: all).
pub(crate) fn cell_id(values: &[(String, toml::Value)], id_keys: Option<&[String]>) -> String {
    let parts: Vec<String> = values
        .iter()
        .filter(|(k, _)| id_keys.map(|ks| ks.contains(k)).unwrap_or(true))
        .map(|(k, v)| match k.as_str() {
            "probe" | "device" | "dtype" | "param" => short_token(token(v)),
            "roi" => format!("roi_{}", token(v)),
            other => {
                let last = other.rsplit('.').next().unwrap_or(other);
                format!("{last}_{}", short_token(token(v)))
            }
        })
        .collect();
    let mut id = sanitize(&parts.join("-"));
    while id.starts_with('.') {
        id.replace_range(0..1, "_");
    }
    id
}

fn valid_key(k: &str) -> bool {
    matches!(k, "probe" | "device" | "dtype" | "param" | "roi")
        || (k.starts_with("model.") && k.len() > 6)
}

const VALID_KEYS: &str = "probe, device, dtype, param, roi, \"model.<key path>\"";

fn to_vals<T: Serialize>(v: &[T]) -> Vec<toml::Value> {
    v.iter()
        .map(|x| toml::Value::try_from(x).unwrap_or(toml::Value::String("?".into())))
        .collect()
}

type Combo = Vec<(String, toml::Value)>;

fn get<'a>(c: &'a Combo, k: &str) -> Option<&'a toml::Value> {
    c.iter().find(|(kk, _)| kk == k).map(|(_, v)| v)
}

fn set(c: &mut Combo, k: &str, v: toml::Value) {
    if let Some(e) = c.iter_mut().find(|(kk, _)| kk == k) {
        e.1 = v;
    } else {
        c.push((k.to_string(), v));
    }
}

/// Expand the matrix into cells (without preparing simulations).
/// The axes, in canonical order (probe, device, dtype, param, roi, model.*),
/// with the include and exclude entries checked against them.
fn axes_of(exp: &Experiment) -> Result<Vec<(String, Vec<toml::Value>)>, InputError> {
    let shown = exp.file.display().to_string();
    let src = |k: &str| exp.source_of(k);
    let m = &exp.resolved.matrix;
    let probes = &exp.resolved.probe;

    // Axes, canonical order.
    let mut axes: Vec<(String, Vec<toml::Value>)> = vec![(
        "probe".into(),
        probes
            .iter()
            .map(|p| toml::Value::String(p.name()))
            .collect(),
    )];
    let mut push_axis = |name: &str, vals: Option<Vec<toml::Value>>| -> Result<(), InputError> {
        if let Some(v) = vals {
            if v.is_empty() {
                return Err(InputError(format!(
                    "{}: matrix.{name}: empty axis (give at least one value, or remove the key)",
                    src(&format!("matrix.{name}"))
                )));
            }
            axes.push((name.to_string(), v));
        }
        Ok(())
    };
    push_axis("device", m.device.as_ref().map(|v| to_vals(v)))?;
    push_axis("dtype", m.dtype.as_ref().map(|v| to_vals(v)))?;
    push_axis("param", m.param.as_ref().map(|v| to_vals(v)))?;
    push_axis("roi", m.roi.as_ref().map(|v| to_vals(v)))?;
    for (k, v) in &m.model_axes {
        if !(k.starts_with("model.") && k.len() > 6) {
            return Err(InputError(format!(
                "{shown}: matrix.{k}: unknown matrix key; valid: {VALID_KEYS}, include, exclude"
            )));
        }
        match v {
            toml::Value::Array(a) if a.is_empty() => {
                return Err(InputError(format!(
                "{shown}: matrix.\"{k}\": empty axis (give at least one value, or remove the key)"
            )))
            }
            toml::Value::Array(a) => axes.push((k.clone(), a.clone())),
            other => {
                return Err(InputError(format!(
                    "{shown}: matrix.\"{k}\": expected a list of values, found {other}"
                )))
            }
        }
    }

    for (what, list) in [("include", &m.include), ("exclude", &m.exclude)] {
        for (i, entry) in list.iter().enumerate() {
            if entry.is_empty() {
                return Err(InputError(format!(
                    "{shown}: matrix.{what}.{i}: empty entry"
                )));
            }
            for k in entry.keys() {
                if !valid_key(k) {
                    return Err(InputError(format!(
                        "{shown}: matrix.{what}.{i}.{k}: unknown key; valid: {VALID_KEYS}"
                    )));
                }
                if what == "exclude" && !axes.iter().any(|(a, _)| a == k) {
                    return Err(InputError(format!(
                        "{shown}: matrix.exclude.{i}.{k}: '{k}' is not a matrix axis, so this entry can never match"
                    )));
                }
            }
        }
    }

    Ok(axes)
}

/// The Cartesian product of the axes (first axis outermost), less the
/// exclude entries; refused when it would be too large.
fn product(
    exp: &Experiment,
    axes: &[(String, Vec<toml::Value>)],
) -> Result<Vec<Combo>, InputError> {
    let shown = exp.file.display().to_string();
    let m = &exp.resolved.matrix;
    // The product's size first (checked), so a huge matrix is refused
    // before any combination is built.
    let product = axes
        .iter()
        .map(|(_, v)| v.len() as u128)
        .try_fold(1u128, |a, n| a.checked_mul(n));
    if product.is_none_or(|n| n > MAX_PLANNED_CELLS as u128) {
        return Err(InputError(format!(
            "{shown}: matrix: the axes multiply to {} combinations, more than {MAX_PLANNED_CELLS}; refusing to expand (split the experiment)",
            product
                .map(|n| n.to_string())
                .unwrap_or_else(|| "more than 2^128".into())
        )));
    }
    // Cartesian product, deterministic (first axis outermost).
    let mut combos: Vec<Combo> = vec![vec![]];
    for (k, vals) in axes {
        let mut next = Vec::with_capacity(combos.len() * vals.len());
        for c in &combos {
            for v in vals {
                let mut c2 = c.clone();
                c2.push((k.clone(), v.clone()));
                next.push(c2);
            }
        }
        combos = next;
        if combos.len() > MAX_PLANNED_CELLS {
            return Err(InputError(format!(
                "{shown}: matrix: more than {MAX_PLANNED_CELLS} combinations (the axes multiply to {}); refusing to expand (split the experiment)",
                axes.iter()
                    .map(|(_, v)| v.len() as u128)
                    .try_fold(1u128, |a, n| a.checked_mul(n))
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "more than 2^128".into())
            )));
        }
    }
    let before = combos.len();
    combos.retain(|c| {
        !m.exclude.iter().any(|e| {
            e.iter()
                .all(|(k, v)| get(c, k).map(|cv| value_eq(cv, v)).unwrap_or(false))
        })
    });
    if combos.is_empty() && !m.exclude.is_empty() && m.include.is_empty() {
        return Err(InputError(format!(
            "{shown}: matrix.exclude: the {} exclude entries remove every one of the {before} cells",
            m.exclude.len()
        )));
    }
    Ok(combos)
}

/// GitHub Actions `include` semantics: an entry extends every original
/// combination it is compatible with, or adds a combination of its own.
/// Returns the original axis keys and the number of original combinations.
fn include(
    combos: &mut Vec<Combo>,
    axes: &[(String, Vec<toml::Value>)],
    m: &MatrixSection,
    probes: &[ProbeSpec],
) -> (Vec<String>, usize) {
    // include: GitHub Actions semantics.
    let original_keys: Vec<String> = axes.iter().map(|(k, _)| k.clone()).collect();
    let n_original = combos.len();
    for entry in &m.include {
        let mut matched = false;
        for c in combos.iter_mut().take(n_original) {
            let compatible = entry.iter().all(|(k, v)| {
                if original_keys.contains(k) {
                    get(c, k).map(|cv| value_eq(cv, v)).unwrap_or(false)
                } else {
                    true
                }
            });
            if compatible {
                for (k, v) in entry {
                    set(c, k, v.clone());
                }
                matched = true;
            }
        }
        if !matched {
            let c: Combo = entry.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if get(&c, "probe").is_some() {
                combos.push(c);
            } else {
                for p in probes {
                    let mut c2 = c.clone();
                    c2.push(("probe".into(), toml::Value::String(p.name())));
                    combos.push(c2);
                }
            }
        }
    }
    (original_keys, n_original)
}

/// Drop from each combination the axes its probe does not use
/// ([`ProbeSpec::uses_axis`]) and keep the first of the combinations that
/// become equal, in order: the same work is planned once. Combinations that
/// lose nothing are kept as they are (a repeated axis value stays an error).
/// Returns the new count of original (non-include) combinations.
fn project(combos: &mut Vec<Combo>, n_original: usize, probes: &[ProbeSpec]) -> usize {
    let mut seen: Vec<Combo> = Vec::new();
    let mut kept = Vec::with_capacity(combos.len());
    let mut n_kept_original = 0;
    for (i, mut c) in std::mem::take(combos).into_iter().enumerate() {
        let probe = get(&c, "probe")
            .and_then(str_of)
            .and_then(|n| probes.iter().find(|p| p.name() == n));
        let before = c.len();
        if let Some(p) = probe {
            c.retain(|(k, _)| k.starts_with("model.") || k == "probe" || p.uses_axis(k));
        }
        if c.len() < before {
            let same = |s: &Combo| {
                s.len() == c.len()
                    && s.iter()
                        .all(|(k, v)| get(&c, k).map(|w| value_eq(v, w)).unwrap_or(false))
            };
            if seen.iter().any(same) {
                continue;
            }
            seen.push(c.clone());
        }
        if i < n_original {
            n_kept_original += 1;
        }
        kept.push(c);
    }
    *combos = kept;
    n_kept_original
}

/// Expand an experiment into its cells: the probes times the matrix axes
/// (an axis a probe does not use is not crossed with it), with `include`
/// and `exclude` applied, each cell given its id and model. Refused: no
/// cells, more than [`MAX_PLANNED_CELLS`], more than [`MAX_CELLS`] unless
/// `allow_large`, and ids that are too long, unusable as folder names or
/// repeated.
pub(crate) fn expand(exp: &Experiment, allow_large: bool) -> Result<Vec<Cell>, InputError> {
    let shown = exp.file.display().to_string();
    let m = &exp.resolved.matrix;
    let probes = &exp.resolved.probe;
    let axes = axes_of(exp)?;
    let mut combos = product(exp, &axes)?;
    let (original_keys, mut n_original) = include(&mut combos, &axes, m, probes);
    n_original = project(&mut combos, n_original, probes);
    if combos.is_empty() {
        return Err(InputError(format!("{shown}: matrix: no cells to run")));
    }
    if combos.len() > MAX_PLANNED_CELLS {
        return Err(InputError(format!(
            "{shown}: matrix: {} cells (with include entries); at most {MAX_PLANNED_CELLS} are planned (split the experiment)",
            combos.len()
        )));
    }
    if combos.len() > MAX_CELLS && !allow_large {
        return Err(InputError(format!(
            "{shown}: matrix: {} cells exceed the limit of {MAX_CELLS}; pass --allow-large to run them anyway",
            combos.len()
        )));
    }

    let base = toml::Table::try_from(&exp.resolved.model)
        .map_err(|e| InputError(format!("{shown}: model: {e}")))?;
    let mut cells = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, mut c) in combos.into_iter().enumerate() {
        c.sort_by_key(|(k, _)| key_rank(k));
        // Original combinations are named by the axes (values an include
        // adds to them are not part of the id); include-made ones by all keys.
        let id = if index < n_original {
            cell_id(&c, Some(&original_keys))
        } else {
            cell_id(&c, None)
        };
        if id.len() > 100 {
            let head: String = id.chars().take(60).collect();
            return Err(InputError(format!(
                "{shown}: matrix: cell id '{head}...' is {} characters long, more than 100; shorten the probe names or axis values",
                id.len()
            )));
        }
        if !safe_id(&id) {
            return Err(InputError(format!(
                "{shown}: matrix: cell id '{id}' is not usable as a folder name"
            )));
        }
        if let Some(prev) = seen.get(&id) {
            return Err(InputError(format!(
                "{shown}: matrix: duplicate cell id '{id}' (cells {prev} and {index}); \
                 remove the repeated axis value or give the probes distinct `name`s"
            )));
        }
        seen.insert(id.clone(), index);
        let cell = build_cell(exp, index, id, c, probes, &base)?;
        cells.push(cell);
    }
    Ok(cells)
}

fn str_of(v: &toml::Value) -> Option<&str> {
    v.as_str()
}

fn build_cell(
    exp: &Experiment,
    index: usize,
    id: String,
    values: Combo,
    probes: &[ProbeSpec],
    base: &toml::Table,
) -> Result<Cell, InputError> {
    let shown = exp.file.display().to_string();
    let key_of = |k: &str| -> String {
        // Where the value came from (file, --set or environment), for messages.
        format!(
            "{}: cell {id}: matrix.{k}",
            exp.source_of(&format!("matrix.{}", k.trim_matches('"')))
        )
    };
    let probe_name = get(&values, "probe")
        .and_then(str_of)
        .ok_or_else(|| InputError(format!("{}: expected a probe name string", key_of("probe"))))?
        .to_string();
    let probe_index = probes
        .iter()
        .position(|p| p.name() == probe_name)
        .ok_or_else(|| {
            InputError(format!(
                "{}: no probe named '{probe_name}'; probes: {}",
                key_of("probe"),
                probes
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let device = match get(&values, "device") {
        None => Device::Cpu,
        Some(v) => str_of(v)
            .ok_or_else(|| format!("expected a string, found {v}"))
            .and_then(|s| s.parse::<Device>())
            .map_err(|e| InputError(format!("{}: {e}", key_of("device"))))?,
    };
    let dtype = match get(&values, "dtype") {
        None => Dtype::F64,
        Some(v) => str_of(v)
            .ok_or_else(|| format!("expected a string, found {v}"))
            .and_then(|s| s.parse::<Dtype>())
            .map_err(|e| InputError(format!("{}: {e}", key_of("dtype"))))?,
    };
    let param = match get(&values, "param") {
        None => None,
        Some(v) => Some(
            str_of(v)
                .ok_or_else(|| format!("expected a string, found {v}"))
                .and_then(|s| s.parse::<Param>())
                .map_err(|e| InputError(format!("{}: {e}", key_of("param"))))?,
        ),
    };
    let derivatives = match (param, &probes[probe_index]) {
        (Some(p), _) => vec![p],
        (None, ProbeSpec::Simulate(_)) => {
            let mut v: Vec<Param> = Vec::new();
            for s in exp.resolved.matrix.param.iter().flatten() {
                let p = s
                    .parse::<Param>()
                    .map_err(|e| InputError(format!("{}: {e}", key_of("param"))))?;
                if !v.contains(&p) {
                    v.push(p);
                }
            }
            v
        }
        (None, _) => vec![],
    };
    let roi = match get(&values, "roi") {
        None => None,
        Some(v) => {
            let r: [u32; 4] = v.clone().try_into().map_err(|_| {
                InputError(format!(
                    "{}: expected [fmin, fmax, smin, smax] (non-negative integers), found {v}",
                    key_of("roi")
                ))
            })?;
            if r[0] > r[1] || r[2] > r[3] {
                return Err(InputError(format!(
                    "{}: {v}: min greater than max (order is fast min, fast max, slow min, slow max)",
                    key_of("roi")
                )));
            }
            Some(r)
        }
    };
    // A cell's own `model.nanobragg_args` replaces the [model] section as its base.
    let mut table = match get(&values, "model.nanobragg_args") {
        None => base.clone(),
        Some(args) => super::nanobragg_flags::config_table(args)
            .map_err(|e| InputError(format!("{}: {e}", key_of("\"model.nanobragg_args\""))))?,
    };
    for (k, v) in &values {
        if k == "model.nanobragg_args" {
            continue;
        }
        if let Some(rest) = k.strip_prefix("model.") {
            let mut over = toml::Table::new();
            let path = split_key(rest);
            let mut cur = &mut over;
            for (i, seg) in path.iter().enumerate() {
                if i + 1 == path.len() {
                    cur.insert(seg.clone(), v.clone());
                } else {
                    cur = cur
                        .entry(seg.clone())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                        .as_table_mut()
                        .expect("fresh table");
                }
            }
            deep_merge(&mut table, &over);
        }
    }
    let model: SimConfig = typed(&table, &format!("{shown}: cell {id}"), "model")?;
    let kind = probes[probe_index].kind();
    Ok(Cell {
        index,
        id,
        probe_index,
        probe_name,
        kind,
        values,
        device,
        dtype,
        param,
        derivatives,
        roi,
        model,
        fpixels: 0,
        spixels: 0,
        effective_roi: [0; 4],
        mem_bytes: 0,
    })
}

/// A prepared model: detector size, ROI, every parameter's value and the
/// figures of the memory budget.
struct Prepared {
    nf: usize,
    ns: usize,
    model_roi: [u32; 4],
    vals: Vec<(Param, Result<f64, String>)>,
    sources: u64,
    phisteps: u64,
    domains: u64,
    hkl_points: u64,
    mask: bool,
}

/// Prepare every distinct model once (looked up by its serialised form, so
/// the time is linear in cells); check ROIs, parameters, probe needs and
/// each cell's memory budget (its scalar type and derivative directions).
pub(crate) fn validate(exp: &Experiment, cells: &mut [Cell]) -> Result<(), InputError> {
    let shown = exp.file.display().to_string();
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut by_model: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for cell in cells.iter_mut() {
        let key =
            serde_json::to_string(&cell.model).unwrap_or_else(|_| format!("{:?}", cell.model));
        let idx = match by_model.get(&key) {
            Some(i) => *i,
            None => {
                let sim = Simulation::prepare(&cell.model, &exp.base_dir)
                    .map_err(|e| InputError(format!("{shown}: cell {}: model.{e}", cell.id)))?;
                let vals = Param::ALL
                    .iter()
                    .map(|p| (*p, sim.base_value(*p).map_err(|e| e.to_string())))
                    .collect();
                prepared.push(Prepared {
                    nf: sim.fpixels(),
                    ns: sim.spixels(),
                    model_roi: sim.roi(),
                    vals,
                    sources: sim.setup.sources.len() as u64,
                    phisteps: sim.setup.phisteps as u64,
                    domains: sim.setup.mosaic_deviates.len() as u64,
                    hkl_points: sim.hkl.as_ref().map(|h| h.data.len() as u64).unwrap_or(0),
                    mask: sim.mask.is_some(),
                });
                by_model.insert(key, prepared.len() - 1);
                prepared.len() - 1
            }
        };
        let pr = &prepared[idx];
        let (nf, ns, model_roi, vals) = (&pr.nf, &pr.ns, &pr.model_roi, &pr.vals);
        cell.fpixels = *nf;
        cell.spixels = *ns;
        let roi = cell.roi.unwrap_or(*model_roi);
        if roi[1] as usize >= *nf || roi[3] as usize >= *ns || roi[0] > roi[1] || roi[2] > roi[3] {
            return Err(InputError(format!(
                "{shown}: cell {}: {}roi: [{}, {}, {}, {}] is outside the {nf}x{ns} detector (fast 0..{}, slow 0..{})",
                cell.id,
                if cell.roi.is_some() { "matrix." } else { "model.detector." },
                roi[0],
                roi[1],
                roi[2],
                roi[3],
                nf.saturating_sub(1),
                ns.saturating_sub(1)
            )));
        }
        cell.effective_roi = roi;
        let dirs = match &exp.resolved.probe[cell.probe_index] {
            ProbeSpec::Gradcheck(_) => 1,
            ProbeSpec::Benchmark(b) => b.derivative_params().len(),
            ProbeSpec::Simulate(_) => cell.derivatives.len(),
            // the engine carries at most 8 directions per pass
            ProbeSpec::Refine(r) => r.params.len().min(crate::engine::values::MAX_DIRECTIONS),
            _ => 0,
        };
        let roi_pixels = (roi[1] - roi[0] + 1) as u64 * (roi[3] - roi[2] + 1) as u64;
        let need = crate::physics::budget::render_need(
            *nf as u64,
            *ns as u64,
            roi_pixels,
            pr.sources,
            pr.phisteps,
            pr.domains,
            pr.hkl_points,
            pr.mask,
            cell.dtype == Dtype::F32,
            dirs,
        );
        cell.mem_bytes = need
            .check("model")
            .map_err(|e| InputError(format!("{shown}: cell {}: {e}", cell.id)))?;
        for p in cell.param.iter().chain(&cell.derivatives) {
            if let Some((_, Err(e))) = vals.iter().find(|(q, _)| q == p) {
                return Err(InputError(format!(
                    "{shown}: cell {}: matrix.param: '{p}' does not apply to this model: {e}",
                    cell.id
                )));
            }
        }
        let probe = &exp.resolved.probe[cell.probe_index];
        let pfx = format!(
            "{shown}: cell {}: probe.{} ({})",
            cell.id,
            cell.probe_index,
            probe.kind()
        );
        match probe {
            ProbeSpec::Gradcheck(_) => {
                if cell.param.is_none() {
                    return Err(InputError(format!(
                        "{pfx}: a gradient check needs a parameter: add `param = [\"cell_a\", ...]` to [matrix]"
                    )));
                }
            }
            ProbeSpec::PhiCache(_) => {
                if cell.model.crystal.cell.is_none() {
                    return Err(InputError(format!(
                        "{pfx}: the phi-cache probe needs model.crystal.cell (the cell is its input)"
                    )));
                }
                if let Some(p) = cell.param {
                    if p != Param::CellA {
                        return Err(InputError(format!(
                            "{pfx}: matrix.param: the phi-cache probe differentiates by cell_a only (got '{p}')"
                        )));
                    }
                }
            }
            ProbeSpec::Parity(pp) => {
                let path = exp.base_dir.join(&pp.reference);
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let want = (*nf as u64) * (*ns as u64) * 4;
                if len != want {
                    return Err(InputError(format!(
                        "{pfx}.reference: '{}' has {len} bytes; a {nf}x{ns} float32 image has {want}",
                        pp.reference
                    )));
                }
            }
            ProbeSpec::Refine(r) => {
                for (j, ps) in r.params.iter().enumerate() {
                    if let Some((_, Err(e))) = vals.iter().find(|(q, _)| *q == ps.param) {
                        return Err(InputError(format!(
                            "{pfx}.params.{j}.param: '{}' does not apply to this model: {e}",
                            ps.param
                        )));
                    }
                }
                let format = r
                    .observed_format
                    .unwrap_or_else(|| super::config::ObservedFormat::of_path(&r.observed));
                if !r.is_synthetic() && format == super::config::ObservedFormat::Float {
                    let path = exp.base_dir.join(&r.observed);
                    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    let want = (*nf as u64) * (*ns as u64) * 4;
                    if len != want {
                        return Err(InputError(format!(
                            "{pfx}.observed: '{}' has {len} bytes; a {nf}x{ns} float32 image has {want}",
                            r.observed
                        )));
                    }
                }
            }
            ProbeSpec::Simulate(_) | ProbeSpec::Benchmark(_) => {}
        }
    }
    Ok(())
}

/// Keep the cells matching every `--only key=value` (repeating a key ORs its values).
pub(crate) fn filter_only(
    shown: &str,
    cells: Vec<Cell>,
    only: &[String],
) -> Result<Vec<Cell>, InputError> {
    if only.is_empty() {
        return Ok(cells);
    }
    let mut by_key: BTreeMap<String, Vec<toml::Value>> = BTreeMap::new();
    for o in only {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| InputError(format!("--only '{o}': expected key=value")))?;
        let k = k.trim().to_string();
        if !(valid_key(&k) || k == "id" || k == "kind") {
            return Err(InputError(format!(
                "--only '{o}': unknown key '{k}'; valid: id, kind, {VALID_KEYS}"
            )));
        }
        by_key
            .entry(k)
            .or_default()
            .push(super::load::parse_loose_value(v.trim()));
    }
    let kept: Vec<Cell> = cells
        .into_iter()
        .filter(|c| {
            by_key.iter().all(|(k, vals)| {
                c.value_of(k)
                    .map(|cv| {
                        vals.iter().any(|v| {
                            value_eq(&cv, v)
                                || matches!((&cv, v), (toml::Value::String(a), b) if *a == token(b))
                        })
                    })
                    .unwrap_or(false)
            })
        })
        .collect();
    if kept.is_empty() {
        return Err(InputError(format!(
            "{shown}: --only {}: no cell matches",
            only.join(" --only ")
        )));
    }
    Ok(kept)
}
