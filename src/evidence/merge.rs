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

use super::bundle::{collect_rows, finish_bundle, Finish};
use super::report::Tally;
use super::{at, json_bytes, list_files, write_atomic, BundleError, MANIFEST};
use crate::experiment::config::ResolvedExperiment;
use crate::experiment::load::Experiment;
use crate::experiment::result::Verdict;
use crate::experiment::shard::{Shard, ShardRecord, SHARD_FILE};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why a merge stopped.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The shards cannot be merged (nothing written, or only an empty OUT).
    #[error("{0}")]
    Refused(String),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] BundleError),
}

/// What a finished merge made.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The merged bundle.
    pub out: PathBuf,
    /// Shards merged.
    pub shards: usize,
    /// Cells in the merged bundle.
    pub cells: usize,
    /// Planned cells.
    pub planned: usize,
    /// Planned cells missing (`--allow-partial`), each with its shard.
    pub missing: Vec<(String, String)>,
    /// Counts by status.
    pub tally: Tally,
    /// The merged bundle's verdict.
    pub verdict: Verdict,
}

/// `cell (shard K/N), ...`.
pub fn describe_missing(missing: &[(String, String)]) -> String {
    missing
        .iter()
        .map(|(c, s)| format!("{c} (shard {s})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, Default)]
pub struct MergeArgs {
    /// The merged bundle (must not exist, or be empty).
    pub out: PathBuf,
    /// Shard bundles, or folders holding them.
    pub shards: Vec<PathBuf>,
    /// Merge even when planned cells are missing.
    pub allow_partial: bool,
    /// Take the newest complete bundle of a shard found more than once.
    pub latest: bool,
    /// The command line as given (commands.txt).
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
    let rep = super::verify(path).map_err(|e| e.to_string())?;
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

fn copy_tree(from: &Path, to: &Path) -> Result<(), BundleError> {
    std::fs::create_dir_all(to).map_err(|e| at(to, e))?;
    for rel in list_files(from)? {
        let name = rel.rsplit('/').next().unwrap_or("");
        if name.starts_with('.') && name.contains(".tmp-") {
            continue;
        }
        let dst = to.join(&rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| at(parent, e))?;
        }
        let bytes =
            std::fs::read(from.join(&rel)).map_err(|e| BundleError(format!("{rel}: {e}")))?;
        write_atomic(&dst, &bytes)?;
    }
    Ok(())
}

/// The experiment of a bundle, from its experiment.toml.
pub fn experiment_of_bundle(bundle: &Path) -> Result<Experiment, BundleError> {
    let p = bundle.join("experiment.toml");
    let text = std::fs::read_to_string(&p).map_err(|e| at(&p, e))?;
    let resolved: ResolvedExperiment = toml::from_str(&text).map_err(|e| at(&p, e))?;
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

/// Refused before anything is read: an OUT that exists and is not empty,
/// no shards, an OUT inside a bundle.
fn check_out(args: &MergeArgs) -> Result<(), MergeError> {
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
        return Err(MergeError::Refused(format!(
            "{}: {what}; nothing was merged or written (give a new folder, or `runner verify {}` to check the one there)",
            out.display(),
            out.display()
        )));
    }
    if args.shards.is_empty() {
        return Err(MergeError::Refused("no shard bundles given".into()));
    }
    if let Some(b) = args.out.parent().and_then(super::enclosing_bundle) {
        return Err(MergeError::Refused(format!(
            "OUT {}: inside the bundle {}; merging there would invalidate it",
            args.out.display(),
            b.display()
        )));
    }
    Ok(())
}

/// Every shard bundle under the given folders, loaded and verified, in
/// shard order.
fn find_shards(args: &MergeArgs) -> Result<Vec<ShardBundle>, MergeError> {
    let mut paths = Vec::new();
    for p in &args.shards {
        if !p.is_dir() {
            return Err(MergeError::Refused(format!(
                "{}: not a folder",
                p.display()
            )));
        }
        let before = paths.len();
        find_bundles(p, 6, &mut paths);
        if paths.len() == before {
            return Err(MergeError::Refused(format!(
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
        shards.push(load_shard(p).map_err(MergeError::Refused)?);
    }
    shards.sort_by_key(|s| (s.shard.n, s.shard.k));
    Ok(shards)
}

/// One experiment, one configuration, one plan; no shard twice, no cell
/// twice, no stranger. Returns the planned cells no shard has, each with
/// the shard it belongs to.
fn check_shards(shards: &[ShardBundle]) -> Result<Vec<(String, String)>, MergeError> {
    let refuse = |m: String| Err(MergeError::Refused(m));
    let first = &shards[0];
    for s in &shards[1..] {
        if s.record.experiment != first.record.experiment {
            return refuse(format!(
                "shards of different experiments: {} is '{}', {} is '{}'",
                first.path.display(),
                first.record.experiment,
                s.path.display(),
                s.record.experiment
            ));
        }
        if s.record.config_digest != first.record.config_digest {
            return refuse(format!(
                "shards of different configurations of experiment '{}' (config digest {} in {}, {} in {}): run every shard with the same file, --set and RUNNER_* variables",
                s.record.experiment,
                &first.record.config_digest[..12.min(first.record.config_digest.len())],
                first.path.display(),
                &s.record.config_digest[..12.min(s.record.config_digest.len())],
                s.path.display()
            ));
        }
        if s.shard.n != first.shard.n || s.record.planned != first.record.planned {
            return refuse(format!(
                "shards of different plans: {} is shard {} of {} planned cell(s), {} is shard {} of {} (same --shards N and --only needed)",
                first.path.display(),
                first.record.shard,
                first.record.planned.len(),
                s.path.display(),
                s.record.shard,
                s.record.planned.len()
            ));
        }
    }
    let mut by_k: BTreeMap<usize, &Path> = BTreeMap::new();
    for s in shards {
        if let Some(prev) = by_k.insert(s.shard.k, &s.path) {
            return refuse(format!(
                "duplicate shard {}: given as {} and {} (a retried task? --latest takes the newest complete bundle)",
                s.record.shard,
                prev.display(),
                s.path.display()
            ));
        }
    }
    let planned: BTreeSet<&String> = first.record.planned.iter().collect();
    let mut owner: BTreeMap<&str, &Path> = BTreeMap::new();
    for s in shards {
        for c in &s.present {
            if !planned.contains(c) {
                return refuse(format!(
                    "{}: cell '{c}' is not in the experiment's plan",
                    s.path.display()
                ));
            }
            if let Some(prev) = owner.insert(c, &s.path) {
                return refuse(format!(
                    "duplicated cell '{c}': in {} and {}",
                    prev.display(),
                    s.path.display()
                ));
            }
        }
    }
    let n = first.shard.n;
    Ok(first
        .record
        .planned
        .iter()
        .enumerate()
        .filter(|(_, c)| !owner.contains_key(c.as_str()))
        .map(|(i, c)| (c.clone(), format!("{}/{n}", i % n + 1)))
        .collect())
}

/// The merged bundle's files before its reports: the cells, each shard's
/// records under `shards/`, experiment.toml, commands.txt, env.json (each
/// shard's under `shards`) and merge.json. Returns env.json.
fn write_merged(
    args: &MergeArgs,
    shards: &[ShardBundle],
    missing: &[(String, String)],
) -> Result<Value, BundleError> {
    let out = &args.out;
    let first = &shards[0];
    for s in shards {
        for c in &s.present {
            copy_tree(&s.path.join("cells").join(c), &out.join("cells").join(c))?;
        }
        let prov = out.join("shards").join(s.shard.suffix());
        std::fs::create_dir_all(&prov).map_err(|e| at(&prov, e))?;
        for f in [SHARD_FILE, "env.json", "commands.txt", MANIFEST] {
            if let Ok(b) = std::fs::read(s.path.join(f)) {
                write_atomic(&prov.join(f), &b)?;
            }
        }
    }
    let exp_text =
        std::fs::read(first.path.join("experiment.toml")).map_err(|e| at(&first.path, e))?;
    write_atomic(&out.join("experiment.toml"), &exp_text)?;

    let mut cmds = String::from("# Merged from shard bundles with:\n");
    cmds.push_str(&args.argv.join(" "));
    cmds.push_str(&format!(
        "\n# Verify this bundle:\nrunner verify {}\n",
        out.display()
    ));
    for s in shards {
        cmds.push_str(&format!(
            "\n# ---- shard {} ({}):\n",
            s.record.shard,
            s.path.display()
        ));
        cmds.push_str(&std::fs::read_to_string(s.path.join("commands.txt")).unwrap_or_default());
    }
    write_atomic(&out.join("commands.txt"), cmds.as_bytes())?;

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
    write_atomic(&out.join("env.json"), &json_bytes(&env))?;

    let merge_record = json!({
        "experiment": first.record.experiment,
        "config_digest": first.record.config_digest,
        "shards_total": first.shard.n,
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
    write_atomic(&out.join("merge.json"), &json_bytes(&merge_record))?;
    Ok(env)
}

/// `runner merge`: the merged bundle, its tally and verdict.
pub fn merge(args: &MergeArgs) -> Result<Merged, MergeError> {
    check_out(args)?;
    let shards = find_shards(args)?;
    let missing = check_shards(&shards)?;
    let first = &shards[0];
    let planned = first.record.planned.len();
    let n = first.shard.n;
    if !missing.is_empty() && !args.allow_partial {
        return Err(MergeError::Refused(format!(
            "{} of {planned} planned cell(s) missing: {}; merge every shard, or pass --allow-partial",
            missing.len(),
            describe_missing(&missing)
        )));
    }
    let out = &args.out;
    std::fs::create_dir_all(out)
        .map_err(|e| MergeError::Refused(format!("{}: cannot create: {e}", out.display())))?;
    let env = write_merged(args, &shards, &missing)?;

    // Reports, in plan order.
    let (rows, _) = collect_rows(out, &first.record.planned, false);
    let exp = experiment_of_bundle(out)?;
    let extra: Vec<String> = missing
        .iter()
        .map(|(c, s)| format!("cell {c} is missing (shard {s} was not merged)"))
        .collect();
    let mut notes = vec![format!(
        "Merged from {} of {n} shard(s) ({}) by `runner merge`; where each cell came from: `merge.json`; each shard's environment: `env.json` (`shards`).",
        shards.len(),
        shards
            .iter()
            .map(|s| s.record.shard.clone())
            .collect::<Vec<_>>()
            .join(", ")
    )];
    if !missing.is_empty() {
        notes.push(format!(
            "**PARTIAL (--allow-partial): {} of {planned} planned cell(s) missing:** {}",
            missing.len(),
            describe_missing(&missing)
        ));
    }
    let commands =
        String::from_utf8_lossy(&std::fs::read(out.join("commands.txt")).unwrap_or_default())
            .to_string();
    let tally = finish_bundle(
        out,
        &Finish {
            exp: &exp,
            rows: &rows,
            commands: &commands,
            env: &env,
            extra_failures: &extra,
            notes,
        },
    )?;
    Ok(Merged {
        out: out.clone(),
        shards: shards.len(),
        cells: rows.len(),
        planned,
        missing,
        tally,
        verdict: tally.overall(&extra),
    })
}
