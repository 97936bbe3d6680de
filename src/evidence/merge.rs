//! `runner merge OUT SHARD...`: combine the shard bundles of one experiment
//! (`runner run FILE --shard K/N`) into one bundle at OUT, with one
//! summary.md, results.csv/json, junit.xml, env.json (each shard's
//! environment under `shards`), merge.json (where every cell came from) and
//! the manifest. Refused (exit 2, nothing written): a shard that is not a
//! complete, verified shard bundle; shards of different experiments or
//! configurations (digest); a shard given twice or a cell in two shards; a
//! planned cell missing unless `--allow-partial`; an OUT that already exists
//! (checked first: a second merge says so at once).
//!
//! `--latest`: a shard found more than once (a retried or requeued task that
//! started a new bundle) is taken from its newest complete bundle (newest by
//! the last start or resume the bundle records); the others are named on
//! stderr and left out. Incomplete bundles of a shard that has a complete one
//! are left out too.
//!
//! Also here: the pictures a bundle's summary links (cell PNGs, and plots of
//! the checked quantities along a swept model axis).

use super::{json_bytes, list_files, read_row, report, write_atomic, Row, MANIFEST};
use crate::experiment::config::ResolvedExperiment;
use crate::experiment::load::Experiment;
use crate::experiment::shard::{Shard, ShardRecord, SHARD_FILE};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct MergeArgs {
    pub out: PathBuf,
    pub shards: Vec<PathBuf>,
    pub allow_partial: bool,
    /// Take the newest complete bundle of a shard found more than once.
    pub latest: bool,
    pub argv: Vec<String>,
}

struct ShardBundle {
    path: PathBuf,
    record: ShardRecord,
    shard: Shard,
    /// Cells with a result.json.
    present: Vec<String>,
}

/// Folders under `p` (itself included) that hold a shard.json, sorted.
fn find_bundles(p: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if p.join(SHARD_FILE).is_file() || p.join("experiment.toml").is_file() {
        out.push(p.to_path_buf());
        return;
    }
    if depth == 0 {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(p) {
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|d| d.is_dir())
            .collect();
        dirs.sort();
        for d in dirs {
            find_bundles(&d, depth - 1, out);
        }
    }
}

fn load_shard(path: &Path) -> Result<ShardBundle, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path.join(SHARD_FILE)).map_err(|_| {
        format!("{shown}: not a shard bundle (no {SHARD_FILE}; run it with `runner run FILE --shard K/N`)")
    })?;
    if !path.join(MANIFEST).is_file() {
        return Err(format!(
            "{shown}: incomplete shard: no {MANIFEST} (the run did not finish; `runner run FILE --shard K/N --resume {shown}` completes it)"
        ));
    }
    let rep = super::verify(path)?;
    if !rep.ok() {
        return Err(format!(
            "{shown}: the shard fails verification ({} missing, {} modified, {} unlisted, {} malformed file(s); see `runner verify {shown}`)",
            rep.missing.len(),
            rep.modified.len(),
            rep.unlisted.len(),
            rep.malformed.len()
        ));
    }
    let record: ShardRecord =
        serde_json::from_str(&text).map_err(|e| format!("{shown}/{SHARD_FILE}: {e}"))?;
    let shard: Shard = record
        .shard
        .parse()
        .map_err(|e| format!("{shown}/{SHARD_FILE}: {e}"))?;
    let mut present = Vec::new();
    if let Ok(rd) = std::fs::read_dir(path.join("cells")) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.path().join("result.json").is_file() {
                present.push(e.file_name().to_string_lossy().to_string());
            }
        }
    }
    present.sort();
    Ok(ShardBundle {
        path: path.to_path_buf(),
        record,
        shard,
        present,
    })
}

/// When a bundle last started or resumed: the UTC timestamp of its folder
/// name and of its env-resume-*.json files, the latest (`YYYYMMDDTHHMMSSZ`
/// strings compare in time order); then the folder name's `-N` suffix
/// (bundles started in the same second).
fn last_started(p: &Path) -> (String, u64) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stamp = |s: &str| -> Option<String> {
        let t = s.get(..16)?;
        let ok = t.len() == 16
            && t.as_bytes()[8] == b'T'
            && t.as_bytes()[15] == b'Z'
            && t[..8].bytes().all(|b| b.is_ascii_digit())
            && t[9..15].bytes().all(|b| b.is_ascii_digit());
        ok.then(|| t.to_string())
    };
    let mut newest = stamp(&name).unwrap_or_default();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.filter_map(|e| e.ok()) {
            let f = e.file_name().to_string_lossy().to_string();
            if let Some(t) = f.strip_prefix("env-resume-").and_then(stamp) {
                newest = newest.max(t);
            }
        }
    }
    // `<stamp>-shard-K-of-N` or, started in the same second, `...-of-N-M`.
    let seq = name
        .rsplit_once("-of-")
        .and_then(|(_, tail)| tail.split_once('-'))
        .and_then(|(_, m)| m.parse::<u64>().ok())
        .unwrap_or(0);
    (newest, seq)
}

/// `--latest`: of the bundles of one shard (by their shard.json), keep the
/// newest complete one (with a manifest); leave out the rest and say so. A
/// shard with no complete bundle keeps all of its bundles, so that the usual
/// refusal (incomplete shard) names them.
fn newest_per_shard(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut other = Vec::new();
    for p in paths {
        let rec: Option<ShardRecord> = std::fs::read_to_string(p.join(SHARD_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        match rec {
            Some(r) => groups
                .entry(format!("{}\u{0}{}", r.config_digest, r.shard))
                .or_default()
                .push(p),
            None => other.push(p),
        }
    }
    let mut keep = other;
    for (key, mut group) in groups {
        if group.len() == 1 {
            keep.append(&mut group);
            continue;
        }
        let shard = key.split('\u{0}').nth(1).unwrap_or("?").to_string();
        let complete: Vec<&PathBuf> = group
            .iter()
            .filter(|p| p.join(MANIFEST).is_file())
            .collect();
        let Some(best) = complete
            .iter()
            .max_by_key(|p| (last_started(p), p.to_path_buf()))
            .map(|p| p.to_path_buf())
        else {
            keep.append(&mut group);
            continue;
        };
        for p in &group {
            if *p != best {
                let why = if p.join(MANIFEST).is_file() {
                    "older"
                } else {
                    "incomplete"
                };
                crate::errln!(
                    "runner merge: --latest: shard {shard}: using {}, leaving out {} ({why})",
                    best.display(),
                    p.display()
                );
            }
        }
        keep.push(best);
    }
    keep.sort();
    keep
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for rel in list_files(from)? {
        let name = rel.rsplit('/').next().unwrap_or("");
        if name.starts_with('.') && name.contains(".tmp-") {
            continue;
        }
        let dst = to.join(&rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let bytes = std::fs::read(from.join(&rel)).map_err(|e| format!("{rel}: {e}"))?;
        write_atomic(&dst, &bytes)?;
    }
    Ok(())
}

/// The experiment of a bundle, from its experiment.toml.
pub fn experiment_of_bundle(bundle: &Path) -> Result<Experiment, String> {
    let p = bundle.join("experiment.toml");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let resolved: ResolvedExperiment =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
    let comment = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|s| PathBuf::from(s.trim()))
    };
    let file = comment("# Source:").unwrap_or_else(|| p.clone());
    let base_dir = comment("# Relative paths resolve against:").unwrap_or_else(|| bundle.into());
    Ok(Experiment {
        file,
        base_dir,
        resolved,
        sets: vec![],
        figment: None,
    })
}

enum Fail {
    Input(String),
    Io(String),
}

/// `runner merge`; returns the exit code (0 PASS, 1 FAIL or I/O error, 2 refused).
pub fn merge(args: &MergeArgs) -> i32 {
    match merge_inner(args) {
        Ok(code) => code,
        Err(Fail::Input(m)) => {
            crate::errln!("error: runner merge: {m}");
            2
        }
        Err(Fail::Io(m)) => {
            crate::errln!("error: runner merge: {m}");
            1
        }
    }
}

fn merge_inner(args: &MergeArgs) -> Result<i32, Fail> {
    let input = Fail::Input;
    let out = &args.out;
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        let what = if out.join(MANIFEST).is_file() && out.join("merge.json").is_file() {
            "already exists and is not empty: a merged bundle from an earlier merge"
        } else {
            "already exists and is not empty"
        };
        return Err(input(format!(
            "{}: {what}; nothing was merged or written (give a new folder, or `runner verify {}` to check the one there)",
            out.display(),
            out.display()
        )));
    }
    if args.shards.is_empty() {
        return Err(input("no shard bundles given".into()));
    }
    if let Some(b) = args.out.parent().and_then(super::enclosing_bundle) {
        return Err(input(format!(
            "OUT {}: inside the bundle {}; merging there would invalidate it",
            args.out.display(),
            b.display()
        )));
    }
    let mut paths = Vec::new();
    for p in &args.shards {
        if !p.is_dir() {
            return Err(input(format!("{}: not a folder", p.display())));
        }
        let before = paths.len();
        find_bundles(p, 6, &mut paths);
        if paths.len() == before {
            return Err(input(format!(
                "{}: no shard bundle in it (no {SHARD_FILE} found)",
                p.display()
            )));
        }
    }
    if args.latest {
        paths = newest_per_shard(paths);
    }
    let mut shards = Vec::new();
    for p in &paths {
        shards.push(load_shard(p).map_err(Fail::Input)?);
    }
    shards.sort_by_key(|s| (s.shard.n, s.shard.k));

    // One experiment, one configuration, one plan.
    let first = &shards[0];
    for s in &shards[1..] {
        if s.record.experiment != first.record.experiment {
            return Err(input(format!(
                "shards of different experiments: {} is '{}', {} is '{}'",
                first.path.display(),
                first.record.experiment,
                s.path.display(),
                s.record.experiment
            )));
        }
        if s.record.config_digest != first.record.config_digest {
            return Err(input(format!(
                "shards of different configurations of experiment '{}' (config digest {} in {}, {} in {}): run every shard with the same file, --set and RUNNER_* variables",
                s.record.experiment,
                &first.record.config_digest[..12.min(first.record.config_digest.len())],
                first.path.display(),
                &s.record.config_digest[..12.min(s.record.config_digest.len())],
                s.path.display()
            )));
        }
        if s.shard.n != first.shard.n || s.record.planned != first.record.planned {
            return Err(input(format!(
                "shards of different plans: {} is shard {} of {} planned cell(s), {} is shard {} of {} (same --shards N and --only needed)",
                first.path.display(),
                first.record.shard,
                first.record.planned.len(),
                s.path.display(),
                s.record.shard,
                s.record.planned.len()
            )));
        }
    }
    // No shard twice, no cell twice, no stranger.
    let mut by_k: BTreeMap<usize, &Path> = BTreeMap::new();
    for s in &shards {
        if let Some(prev) = by_k.insert(s.shard.k, &s.path) {
            return Err(input(format!(
                "duplicate shard {}: given as {} and {} (a retried task? --latest takes the newest complete bundle)",
                s.record.shard,
                prev.display(),
                s.path.display()
            )));
        }
    }
    let planned: BTreeSet<&String> = first.record.planned.iter().collect();
    let mut owner: BTreeMap<&str, &Path> = BTreeMap::new();
    for s in &shards {
        for c in &s.present {
            if !planned.contains(c) {
                return Err(input(format!(
                    "{}: cell '{c}' is not in the experiment's plan",
                    s.path.display()
                )));
            }
            if let Some(prev) = owner.insert(c, &s.path) {
                return Err(input(format!(
                    "duplicated cell '{c}': in {} and {}",
                    prev.display(),
                    s.path.display()
                )));
            }
        }
    }
    let n = first.shard.n;
    let missing: Vec<(String, String)> = first
        .record
        .planned
        .iter()
        .enumerate()
        .filter(|(_, c)| !owner.contains_key(c.as_str()))
        .map(|(i, c)| (c.clone(), format!("{}/{n}", i % n + 1)))
        .collect();
    let describe_missing = || {
        missing
            .iter()
            .map(|(c, s)| format!("{c} (shard {s})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !missing.is_empty() && !args.allow_partial {
        return Err(input(format!(
            "{} of {} planned cell(s) missing: {}; merge every shard, or pass --allow-partial",
            missing.len(),
            first.record.planned.len(),
            describe_missing()
        )));
    }

    // The merged bundle.
    std::fs::create_dir_all(out)
        .map_err(|e| input(format!("{}: cannot create: {e}", out.display())))?;
    let io = Fail::Io;
    for s in &shards {
        for c in &s.present {
            copy_tree(&s.path.join("cells").join(c), &out.join("cells").join(c)).map_err(io)?;
        }
        let prov = out.join("shards").join(s.shard.suffix());
        std::fs::create_dir_all(&prov).map_err(|e| io(format!("{}: {e}", prov.display())))?;
        for f in [SHARD_FILE, "env.json", "commands.txt", MANIFEST] {
            if let Ok(b) = std::fs::read(s.path.join(f)) {
                write_atomic(&prov.join(f), &b).map_err(io)?;
            }
        }
    }
    let exp_text = std::fs::read(first.path.join("experiment.toml"))
        .map_err(|e| io(format!("{}: {e}", first.path.display())))?;
    write_atomic(&out.join("experiment.toml"), &exp_text).map_err(io)?;

    let mut cmds = String::from("# Merged from shard bundles with:\n");
    cmds.push_str(&args.argv.join(" "));
    cmds.push_str(&format!(
        "\n# Verify this bundle:\nrunner verify {}\n",
        out.display()
    ));
    for s in &shards {
        cmds.push_str(&format!(
            "\n# ---- shard {} ({}):\n",
            s.record.shard,
            s.path.display()
        ));
        cmds.push_str(&std::fs::read_to_string(s.path.join("commands.txt")).unwrap_or_default());
    }
    write_atomic(&out.join("commands.txt"), cmds.as_bytes()).map_err(io)?;

    let envs: Vec<Value> = shards
        .iter()
        .map(|s| {
            let env: Value = std::fs::read_to_string(s.path.join("env.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            json!({ "shard": s.record.shard, "bundle": s.path.display().to_string(), "env": env })
        })
        .collect();
    let mut env = envs[0]["env"].clone();
    if !env.is_object() {
        env = json!({});
    }
    env["merged_by"] = super::env::collect(1, 1);
    env["shards"] = Value::Array(envs);
    write_atomic(&out.join("env.json"), &json_bytes(&env)).map_err(io)?;

    let merge_record = json!({
        "experiment": first.record.experiment,
        "config_digest": first.record.config_digest,
        "shards_total": n,
        "shards": shards.iter().map(|s| json!({
            "shard": s.record.shard,
            "bundle": s.path.display().to_string(),
            "manifest_sha256": super::sha256_file(&s.path.join(MANIFEST)).unwrap_or_default(),
            "cells": s.present,
        })).collect::<Vec<_>>(),
        "planned": first.record.planned,
        "missing": missing.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        "partial": !missing.is_empty(),
    });
    write_atomic(&out.join("merge.json"), &json_bytes(&merge_record)).map_err(io)?;

    // Reports, in plan order.
    let rows: Vec<Row> = first
        .record
        .planned
        .iter()
        .filter_map(|c| read_row(&super::cell_dir(out, c)))
        .collect();
    let exp = experiment_of_bundle(out).map_err(io)?;
    let extra: Vec<String> = missing
        .iter()
        .map(|(c, s)| format!("cell {c} is missing (shard {s} was not merged)"))
        .collect();
    report::write_results(out, &rows).map_err(io)?;
    report::write_junit(out, &first.record.experiment, &rows).map_err(io)?;
    let mut notes = report::SummaryNotes::default();
    notes.lines.push(format!(
        "Merged from {} of {n} shard(s) ({}) by `runner merge`; where each cell came from: `merge.json`; each shard's environment: `env.json` (`shards`).",
        shards.len(),
        shards
            .iter()
            .map(|s| s.record.shard.clone())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !missing.is_empty() {
        notes.lines.push(format!(
            "**PARTIAL (--allow-partial): {} of {} planned cell(s) missing:** {}",
            missing.len(),
            first.record.planned.len(),
            describe_missing()
        ));
    }
    notes.plots = write_sweep_plots(out, &rows).map_err(io)?;
    notes
        .plots
        .extend(crate::experiment::bench::write_scaling_plot(out, &rows).map_err(io)?);
    report::write_summary_with(
        out,
        &exp,
        &rows,
        &String::from_utf8_lossy(&std::fs::read(out.join("commands.txt")).unwrap_or_default()),
        &env,
        &extra,
        &notes,
    )
    .map_err(io)?;
    super::write_manifest(out).map_err(io)?;

    let t = report::Tally::of(&rows);
    let verdict = if extra.is_empty() {
        t.verdict()
    } else {
        "FAIL"
    };
    if !missing.is_empty() {
        crate::outln!(
            "partial merge: {} of {} planned cell(s) missing: {}",
            missing.len(),
            first.record.planned.len(),
            describe_missing()
        );
    }
    crate::errln!(
        "runner merge: {verdict}: {} shard(s), {} cell(s): {} passed, {} failed, {} errored, {} skipped",
        shards.len(),
        rows.len(),
        t.pass,
        t.fail,
        t.error,
        t.skipped
    );
    crate::outln!("{}", out.display());
    Ok(if verdict == "PASS" { 0 } else { 1 })
}

// ---- Pictures in reports ----

/// "## Pictures" of summary.md: the bundle's plots and every cell's PNGs
/// (relative links).
pub fn pictures_section(s: &mut String, rows: &[Row], plots: &[String]) {
    let cells: Vec<(&str, Vec<&String>)> = rows
        .iter()
        .map(|r| {
            (
                r.record.id.as_str(),
                r.record
                    .files
                    .iter()
                    .filter(|f| f.ends_with(".png"))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, f)| !f.is_empty())
        .collect();
    if cells.is_empty() && plots.is_empty() {
        return;
    }
    s.push_str("\n## Pictures\n\n");
    if !plots.is_empty() {
        s.push_str("Checked quantities along the swept model axes:\n\n");
        for p in plots {
            s.push_str(&format!("- [{p}]({p})\n"));
        }
        s.push('\n');
        for p in plots {
            s.push_str(&format!("![{p}]({p})\n"));
        }
        s.push('\n');
    }
    if !cells.is_empty() {
        s.push_str("Images on a log scale; derivatives and differences on a blue-white-red scale centred on 0:\n\n");
        for (id, files) in cells {
            let links: Vec<String> = files
                .iter()
                .map(|f| format!("[{f}](cells/{id}/{f})"))
                .collect();
            s.push_str(&format!("- `{id}`: {}\n", links.join(", ")));
        }
    }
}

/// Environment lines of a merged bundle: one per shard.
pub fn shard_env_lines(s: &mut String, env: &Value) {
    let Some(list) = env.get("shards").and_then(|v| v.as_array()) else {
        return;
    };
    for e in list {
        let g = |k: &str| {
            e["env"]
                .get(k)
                .map(|v| {
                    v.as_str()
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_else(|| "?".into())
        };
        s.push_str(&format!(
            "- shard {}: host {} ({}, {} cores), braggrun {} (git {}), at {}\n",
            e["shard"].as_str().unwrap_or("?"),
            g("hostname"),
            g("cpu_model"),
            g("cores"),
            g("braggrun_version"),
            g("git_commit"),
            g("time_utc")
        ));
    }
}

/// A model-axis value as an x coordinate (numbers; the first of a list of
/// numbers); None for other values.
fn x_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Array(a) => a.first().and_then(|x| x.as_f64()),
        _ => None,
    }
}

/// For every model axis (`model.*` matrix key) with at least two values,
/// plot the checked quantities (loss, grad_ad, rel_err where present)
/// against it, one series per other combination, into the bundle root.
/// Returns the file names written.
pub fn write_sweep_plots(bundle: &Path, rows: &[Row]) -> Result<Vec<String>, String> {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for r in rows {
        for k in r.record.axes.keys() {
            if k.starts_with("model.") && k != "model.nanobragg_args" {
                keys.insert(k.clone());
            }
        }
    }
    let mut written = Vec::new();
    for key in keys {
        let distinct: Vec<&Value> = {
            let mut v: Vec<&Value> = Vec::new();
            for r in rows {
                if let Some(x) = r.record.axes.get(&key) {
                    if !v.contains(&x) {
                        v.push(x);
                    }
                }
            }
            v
        };
        if distinct.len() < 2 {
            continue;
        }
        let numeric = distinct.iter().all(|v| x_of(v).is_some());
        let xv = |v: &Value| -> f64 {
            if numeric {
                x_of(v).unwrap_or(f64::NAN)
            } else {
                distinct.iter().position(|d| *d == v).unwrap_or(0) as f64
            }
        };
        let last = key.rsplit('.').next().unwrap_or(&key).to_string();
        type Getter = fn(&super::CellRecord) -> Option<f64>;
        let quantities: [(&str, Getter); 3] = [
            ("loss", |c| c.loss),
            ("grad_ad", |c| c.grad_ad),
            ("rel_err", |c| c.rel_err),
        ];
        for (qname, get) in quantities {
            let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for r in rows {
                let c = &r.record;
                let (Some(ax), Some(y)) = (c.axes.get(&key), get(c)) else {
                    continue;
                };
                if !y.is_finite() {
                    continue;
                }
                let mut name = vec![c.probe.clone(), c.device.clone(), c.dtype.clone()];
                if let Some(p) = &c.param {
                    name.push(p.clone());
                }
                for (k, v) in &c.axes {
                    if k.starts_with("model.") && *k != key {
                        let l = k.rsplit('.').next().unwrap_or(k);
                        name.push(format!("{l}={}", v.to_string().replace('"', "")));
                    }
                }
                series.entry(name.join(" ")).or_default().push((xv(ax), y));
            }
            let mut list: Vec<(String, Vec<(f64, f64)>)> = series
                .into_iter()
                .filter(|(_, p)| p.len() >= 2)
                .map(|(n, mut p)| {
                    p.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (n, p)
                })
                .collect();
            if list.is_empty() {
                continue;
            }
            list.truncate(8);
            let ys: Vec<f64> = list
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.1))
                .collect();
            let pos = ys.iter().all(|y| *y > 0.0);
            let (lo, hi) = ys.iter().fold((f64::INFINITY, 0.0f64), |(a, b), y| {
                (a.min(y.abs()), b.max(y.abs()))
            });
            let log_y = pos && (qname == "rel_err" || hi / lo > 100.0);
            let file = format!(
                "sweep_{}_{qname}.png",
                crate::experiment::matrix::sanitize(&last)
            );
            let x_label = if numeric {
                key.clone()
            } else {
                format!("{key} (value index)")
            };
            crate::io::plot::line_plot_png(
                &bundle.join(&file),
                &list,
                &x_label,
                qname,
                false,
                log_y,
            )
            .map_err(|e| e.to_string())?;
            written.push(file);
        }
    }
    Ok(written)
}
