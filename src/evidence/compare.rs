//! `runner compare A B`: two bundles of one experiment, cell by cell: status
//! and the numbers of result.json (loss, grad_ad, grad_fd, abs_err, rel_err)
//! side by side with their absolute and relative change; cells whose status
//! changed come first. Exit 1 when a status got worse (PASS to
//! FAIL/ERROR/SKIPPED, SKIPPED to FAIL/ERROR, a cell of A missing from B) or a
//! value moved past the tolerance (|b - a| > atol + rtol |a|, or a value
//! appeared or vanished); 0 otherwise; 2 when the bundles cannot be compared.
//!
//! The first line names the configuration keys (of the bundles'
//! `experiment.toml`) that differ, or says the configurations are the same.
//! The table lists changed cells and values only; `--all` lists every one.

use super::CellRecord;
use crate::experiment::result::Verdict;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How a comparison is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// The [`Comparison`] as JSON.
    Json,
    /// A Markdown report.
    Markdown,
}

/// Two bundles that cannot be compared (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A negative or NaN tolerance.
    #[error("--rtol {rtol} --atol {atol}: tolerances must be >= 0")]
    Tolerance {
        /// --rtol.
        rtol: f64,
        /// --atol.
        atol: f64,
    },
    /// Bundles of two experiments.
    #[error("bundles of different experiments: {a} is '{ea}', {b} is '{eb}'")]
    DifferentExperiments {
        /// Bundle A.
        a: String,
        /// Its experiment.
        ea: String,
        /// Bundle B.
        b: String,
        /// Its experiment.
        eb: String,
    },
    /// A bundle (or one of its records) could not be read.
    #[error("{0}")]
    Unreadable(String),
}

const QUANTITIES: [&str; 5] = ["loss", "grad_ad", "grad_fd", "abs_err", "rel_err"];

fn value(c: &CellRecord, q: &str) -> Option<f64> {
    match q {
        "loss" => c.loss,
        "grad_ad" => c.grad_ad,
        "grad_fd" => c.grad_fd,
        "abs_err" => c.abs_err,
        "rel_err" => c.rel_err,
        _ => None,
    }
}

fn rank(s: Verdict) -> u8 {
    match s {
        Verdict::Pass => 2,
        Verdict::Skipped | Verdict::NonSmooth => 1,
        Verdict::Fail | Verdict::Error => 0,
    }
}

/// One quantity of a cell in both bundles.
#[derive(Debug, Clone, Serialize)]
pub struct ValueChange {
    /// loss, grad_ad, grad_fd, abs_err or rel_err.
    pub quantity: String,
    /// In bundle A.
    pub a: Option<f64>,
    /// In bundle B.
    pub b: Option<f64>,
    /// b - a.
    pub abs_change: Option<f64>,
    /// (b - a) / |a|.
    pub rel_change: Option<f64>,
    /// Moved past the tolerance (or appeared / vanished).
    pub moved: bool,
}

/// One cell in both bundles.
#[derive(Debug, Clone, Serialize)]
pub struct CellChange {
    /// The cell id.
    pub id: String,
    /// Its status in A.
    pub status_a: Option<String>,
    /// Its status in B.
    pub status_b: Option<String>,
    /// same, better, worse, added (only in B), removed (only in A).
    pub status_change: String,
    /// The quantities either bundle has.
    pub values: Vec<ValueChange>,
    /// Worse, removed, or a value moved.
    pub regression: bool,
}

/// Two bundles compared.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The experiment id.
    pub experiment: String,
    /// Bundle A.
    pub a: String,
    /// Bundle B.
    pub b: String,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Cells that regressed.
    pub regressions: usize,
    /// Cells whose status changed.
    pub status_changes: usize,
    /// Values that moved past the tolerance.
    pub moved_values: usize,
    /// Keys of the resolved configuration (experiment.toml) that differ,
    /// with both values; empty when the configurations are the same.
    pub configuration_differences: Vec<ConfigDifference>,
    /// Every cell, status changes first.
    pub cells: Vec<CellChange>,
}

/// A key of experiment.toml that differs between the bundles.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigDifference {
    /// Dotted key (`model.detector.distance_mm`, `probe.0.eps`).
    pub key: String,
    /// Its value in A (TOML), absent when A does not set it.
    pub a: Option<String>,
    /// Its value in B.
    pub b: Option<String>,
}

/// Every leaf of a TOML table as dotted key = TOML value.
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        toml::Value::Array(a) if a.iter().any(|x| x.is_table()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn configuration(bundle: &Path) -> Result<BTreeMap<String, String>, CompareError> {
    let p = bundle.join("experiment.toml");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| CompareError::Unreadable(format!("{}: {e}", p.display())))?;
    let t: toml::Table = toml::from_str(&text)
        .map_err(|e| CompareError::Unreadable(format!("{}: {e}", p.display())))?;
    let mut out = BTreeMap::new();
    flatten("", &toml::Value::Table(t), &mut out);
    Ok(out)
}

/// The keys of the two bundles' resolved configurations that differ.
pub fn configuration_differences(
    a: &Path,
    b: &Path,
) -> Result<Vec<ConfigDifference>, CompareError> {
    let (ca, cb) = (configuration(a)?, configuration(b)?);
    let mut keys: Vec<&String> = ca.keys().chain(cb.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| ca.get(*k) != cb.get(*k))
        .map(|k| ConfigDifference {
            key: k.clone(),
            a: ca.get(k).cloned(),
            b: cb.get(k).cloned(),
        })
        .collect())
}

/// One line about the configurations: the same, or the keys that differ.
pub fn configuration_line(d: &[ConfigDifference]) -> String {
    if d.is_empty() {
        return "configuration: the same (experiment.toml of A and B resolve to the same values)"
            .into();
    }
    const SHOWN: usize = 6;
    let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "(unset)".into());
    let mut parts: Vec<String> = d
        .iter()
        .take(SHOWN)
        .map(|x| format!("{} {} -> {}", x.key, v(&x.a), v(&x.b)))
        .collect();
    if d.len() > SHOWN {
        parts.push(format!(
            "and {} more (--format json lists them)",
            d.len() - SHOWN
        ));
    }
    format!(
        "configuration: {} key(s) differ: {}",
        d.len(),
        parts.join("; ")
    )
}

fn experiment_id(bundle: &Path) -> Result<String, CompareError> {
    let bad = |m: String| CompareError::Unreadable(m);
    let p = bundle.join("experiment.toml");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| bad(format!("{}: not a bundle ({e})", bundle.display())))?;
    let t: toml::Table = toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", p.display())))?;
    t.get("experiment")
        .and_then(|e| e.get("id"))
        .and_then(|v| v.as_str())
        .map(|s| s.to_string())
        .ok_or_else(|| bad(format!("{}: no experiment.id", p.display())))
}

fn records(bundle: &Path) -> Result<BTreeMap<String, CellRecord>, CompareError> {
    let bad = |m: String| CompareError::Unreadable(m);
    let mut out = BTreeMap::new();
    let dir = bundle.join("cells");
    let rd = std::fs::read_dir(&dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path().join("result.json");
        if let Ok(text) = std::fs::read_to_string(&p) {
            let r: CellRecord =
                serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", p.display())))?;
            out.insert(e.file_name().to_string_lossy().to_string(), r);
        }
    }
    Ok(out)
}

/// Compare two bundles.
pub fn compare_bundles(
    a: &Path,
    b: &Path,
    rtol: f64,
    atol: f64,
) -> Result<Comparison, CompareError> {
    if rtol.is_nan() || atol.is_nan() || rtol < 0.0 || atol < 0.0 {
        return Err(CompareError::Tolerance { rtol, atol });
    }
    let (ea, eb) = (experiment_id(a)?, experiment_id(b)?);
    if ea != eb {
        return Err(CompareError::DifferentExperiments {
            a: a.display().to_string(),
            ea,
            b: b.display().to_string(),
            eb,
        });
    }
    let configuration_differences = configuration_differences(a, b)?;
    let (ra, rb) = (records(a)?, records(b)?);
    let mut ids: Vec<&String> = ra.keys().chain(rb.keys()).collect();
    ids.sort();
    ids.dedup();
    let mut cells = Vec::new();
    for id in ids {
        let (ca, cb) = (ra.get(id), rb.get(id));
        let status_change = match (ca, cb) {
            (Some(x), Some(y)) if x.status == y.status => "same",
            (Some(x), Some(y)) if rank(y.status) < rank(x.status) => "worse",
            (Some(_), Some(_)) => "better",
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (None, None) => "same",
        };
        let mut values = Vec::new();
        for q in QUANTITIES {
            let (va, vb) = (ca.and_then(|c| value(c, q)), cb.and_then(|c| value(c, q)));
            if va.is_none() && vb.is_none() {
                continue;
            }
            let (abs_change, rel_change, moved) = match (va, vb) {
                (Some(x), Some(y)) => {
                    let d = y - x;
                    let rel = if x != 0.0 {
                        Some(d / x.abs())
                    } else if d == 0.0 {
                        Some(0.0)
                    } else {
                        None
                    };
                    let same = x == y || (x.is_nan() && y.is_nan());
                    // NaN beyond the tolerance counts as moved.
                    let within = d.abs() <= atol + rtol * x.abs();
                    (Some(d), rel, !same && !within)
                }
                // Only in one bundle: moved if both cells exist.
                _ => (None, None, ca.is_some() && cb.is_some()),
            };
            values.push(ValueChange {
                quantity: q.to_string(),
                a: va,
                b: vb,
                abs_change,
                rel_change,
                moved,
            });
        }
        let regression =
            matches!(status_change, "worse" | "removed") || values.iter().any(|v| v.moved);
        cells.push(CellChange {
            id: id.clone(),
            status_a: ca.map(|c| c.status.as_str().to_string()),
            status_b: cb.map(|c| c.status.as_str().to_string()),
            status_change: status_change.to_string(),
            values,
            regression,
        });
    }
    // Status changes first (worse, removed, better, added), then the rest; by id within.
    let order = |c: &CellChange| match c.status_change.as_str() {
        "worse" => 0,
        "removed" => 1,
        "better" => 2,
        "added" => 3,
        _ => 4,
    };
    cells.sort_by(|x, y| order(x).cmp(&order(y)).then(x.id.cmp(&y.id)));
    Ok(Comparison {
        experiment: ea,
        a: a.display().to_string(),
        b: b.display().to_string(),
        rtol,
        atol,
        configuration_differences,
        regressions: cells.iter().filter(|c| c.regression).count(),
        status_changes: cells.iter().filter(|c| c.status_change != "same").count(),
        moved_values: cells
            .iter()
            .map(|c| c.values.iter().filter(|v| v.moved).count())
            .sum(),
        cells,
    })
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(v) => format!("{v:.9e}"),
        None => "-".into(),
    }
}

fn change(x: Option<f64>) -> String {
    match x {
        Some(v) => format!("{v:+.3e}"),
        None => "-".into(),
    }
}

/// Whether a value differs at all between the bundles (NaN equals NaN).
fn differs(v: &ValueChange) -> bool {
    match (v.a, v.b) {
        (Some(x), Some(y)) => !(x == y || (x.is_nan() && y.is_nan())),
        (None, None) => false,
        _ => true,
    }
}

/// Whether anything of a cell differs between the bundles.
pub fn cell_changed(cell: &CellChange) -> bool {
    cell.status_change != "same" || cell.values.iter().any(differs)
}

fn rows_of(c: &Comparison, all: bool) -> Vec<[String; 7]> {
    let mut rows = Vec::new();
    for cell in c.cells.iter().filter(|x| all || cell_changed(x)) {
        let flag = |m: bool| if m { "MOVED" } else { "" };
        let st = format!(
            "{} -> {}",
            cell.status_a.as_deref().unwrap_or("(absent)"),
            cell.status_b.as_deref().unwrap_or("(absent)")
        );
        rows.push([
            cell.id.clone(),
            "status".into(),
            cell.status_a.clone().unwrap_or_else(|| "(absent)".into()),
            cell.status_b.clone().unwrap_or_else(|| "(absent)".into()),
            if cell.status_change == "same" {
                String::new()
            } else {
                st
            },
            String::new(),
            match cell.status_change.as_str() {
                "worse" | "removed" => "WORSE".into(),
                "same" => String::new(),
                other => other.to_uppercase(),
            },
        ]);
        for v in cell.values.iter().filter(|v| all || differs(v)) {
            rows.push([
                String::new(),
                v.quantity.clone(),
                num(v.a),
                num(v.b),
                change(v.abs_change),
                change(v.rel_change),
                flag(v.moved).into(),
            ]);
        }
    }
    rows
}

const HEAD: [&str; 7] = [
    "cell",
    "quantity",
    "A",
    "B",
    "abs change",
    "rel change",
    "flag",
];

/// Render a comparison: changed cells and values only, or (`all`) every
/// one. JSON always holds every cell.
pub fn render(c: &Comparison, format: Format, all: bool) -> String {
    let config = configuration_line(&c.configuration_differences);
    let unchanged = c.cells.iter().filter(|x| !cell_changed(x)).count();
    let unchanged_line = if all || unchanged == 0 {
        String::new()
    } else if unchanged == c.cells.len() {
        format!("all {unchanged} cell(s) unchanged: the same status and bit-identical values (--all lists them)")
    } else {
        format!("{unchanged} unchanged cell(s) not listed (--all lists them)")
    };
    let verdict = if c.regressions > 0 {
        format!(
            "REGRESSION: {} cell(s) got worse or moved past atol {:e} + rtol {:e} |A| ({} status change(s), {} moved value(s))",
            c.regressions, c.atol, c.rtol, c.status_changes, c.moved_values
        )
    } else {
        format!(
            "OK: no status got worse and no value moved past atol {:e} + rtol {:e} |A| ({} cell(s), {} status change(s))",
            c.atol,
            c.rtol,
            c.cells.len(),
            c.status_changes
        )
    };
    let worse: Vec<&str> = c
        .cells
        .iter()
        .filter(|x| x.regression)
        .map(|x| x.id.as_str())
        .collect();
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(c).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Markdown => {
            let mut s = format!(
                "# Compare `{}`: {}\n\n- {}\n- A: `{}`\n- B: `{}`\n",
                c.experiment, verdict, config, c.a, c.b
            );
            if !worse.is_empty() {
                s.push_str(&format!("- regressions: `{}`\n", worse.join("`, `")));
            }
            let rows = rows_of(c, all);
            if !unchanged_line.is_empty() {
                s.push_str(&format!("- {unchanged_line}\n"));
            }
            if rows.is_empty() {
                return s;
            }
            s.push_str(&format!(
                "\n| {} |\n|{}\n",
                HEAD.join(" | "),
                "---|".repeat(7)
            ));
            for r in rows {
                let cells: Vec<String> = r
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        if i == 0 && !x.is_empty() {
                            format!("`{x}`")
                        } else {
                            x.replace('|', "\\|")
                        }
                    })
                    .collect();
                s.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
            s
        }
        Format::Table => {
            let rows = rows_of(c, all);
            let mut table = vec![HEAD.map(|h| h.to_string())];
            table.extend(rows.iter().cloned());
            let mut w = [0usize; 7];
            for r in &table {
                for (i, x) in r.iter().enumerate() {
                    w[i] = w[i].max(x.chars().count());
                }
            }
            let mut s = format!(
                "{config}\ncompare {} (experiment {}):\n  A {}\n  B {}\n",
                verdict, c.experiment, c.a, c.b
            );
            if !worse.is_empty() {
                s.push_str(&format!("regressions: {}\n", worse.join(", ")));
            }
            if !unchanged_line.is_empty() {
                s.push_str(&format!("{unchanged_line}\n"));
            }
            if rows.is_empty() {
                return s;
            }
            for r in &table {
                let mut line = String::new();
                for (i, x) in r.iter().enumerate() {
                    line.push_str(&format!("{:<width$}  ", x, width = w[i]));
                }
                s.push_str(line.trim_end());
                s.push('\n');
            }
            s
        }
    }
}
