//! Evidence bundles: atomic file writes, the `sha256sum -c` manifest,
//! verification, the environment record and the reports (results.csv/json,
//! summary.md, junit.xml).
//!
//! Layout of a bundle `DIR/<experiment id>/<UTC timestamp>/`:
//! experiment.toml, commands.txt, env.json, `cells/<cell id>/`{log.txt,
//! result.json, timing.json, probe files}, results.csv, results.json,
//! summary.md, junit.xml and, last, sha256.txt. `result.json` is the
//! deterministic record of a cell (no timings, no host details): the same
//! experiment run twice gives byte-identical result.json files. Timings and
//! the engine's device description are in `timing.json`, results.csv and
//! results.json.

pub mod compare;
pub mod env;
pub mod merge;
pub mod report;

use crate::experiment::probes::Status;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The manifest's name.
pub const MANIFEST: &str = "sha256.txt";

/// Write a file under a temporary name in the same folder, then rename it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy()
        .to_string();
    // One temporary name per write: cells finish in parallel.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let (guard, mut f) = crate::cli::signals::create_temp(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        guard.test_hook();
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()));
    }
    Ok(())
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Every regular file under `root`, as sorted '/'-separated relative paths.
/// Symbolic links and other special files are left out (they are never
/// followed, read or copied); [`list_entries`] reports them.
pub fn list_files(root: &Path) -> Result<Vec<String>, String> {
    Ok(list_entries(root)?.0)
}

/// Regular files, and other entries with what they are.
pub type Entries = (Vec<String>, Vec<(String, String)>);

/// Regular files, and the other entries (symbolic links, fifos, ...) with
/// what they are, under `root`; relative '/'-separated paths, sorted.
/// Links are not followed.
pub fn list_entries(root: &Path) -> Result<Entries, String> {
    fn rel_of(root: &Path, p: &Path) -> String {
        let rel = p.strip_prefix(root).unwrap_or(p);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect::<Vec<_>>()
            .join("/")
    }
    fn walk(
        root: &Path,
        dir: &Path,
        depth: usize,
        files: &mut Vec<String>,
        other: &mut Vec<(String, String)>,
    ) -> Result<(), String> {
        if depth > 64 {
            other.push((rel_of(root, dir), "folders nested too deep".into()));
            return Ok(());
        }
        let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let p = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", p.display()))?;
            if ft.is_dir() {
                walk(root, &p, depth + 1, files, other)?;
            } else if ft.is_file() {
                files.push(rel_of(root, &p));
            } else {
                let what = if ft.is_symlink() {
                    match std::fs::read_link(&p) {
                        Ok(t) => {
                            format!("a symbolic link (to {}), not a regular file", t.display())
                        }
                        Err(_) => "a symbolic link, not a regular file".into(),
                    }
                } else {
                    "not a regular file".into()
                };
                other.push((rel_of(root, &p), what));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    let mut other = Vec::new();
    walk(root, root, 0, &mut files, &mut other)?;
    files.sort();
    other.sort();
    Ok((files, other))
}

/// The bundle that `p` (absolute or not, existing or not) is inside, when
/// `p` or one of its ancestors holds `sha256.txt`, or `experiment.toml` with
/// `commands.txt`: writing there would change a bundle's files.
pub fn enclosing_bundle(p: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(p).ok()?;
    abs.ancestors()
        .find(|a| {
            a.join(MANIFEST).is_file()
                || (a.join("experiment.toml").is_file() && a.join("commands.txt").is_file())
        })
        .map(|a| a.to_path_buf())
}

/// Write `sha256.txt` (in `sha256sum -c` format) over every other file.
pub fn write_manifest(root: &Path) -> Result<(), String> {
    let mut text = String::new();
    for rel in list_files(root)? {
        if rel == MANIFEST {
            continue;
        }
        let d = sha256_file(&root.join(&rel))?;
        text.push_str(&format!("{d}  {rel}\n"));
    }
    write_atomic(&root.join(MANIFEST), text.as_bytes())
}

/// What `verify` found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub incomplete: bool,
    pub missing: Vec<String>,
    pub modified: Vec<String>,
    pub unlisted: Vec<String>,
    pub malformed: Vec<String>,
    /// Structure: special files, paths outside the bundle, required files
    /// and cells absent, files a result.json lists but the bundle lacks.
    pub invalid: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        !self.incomplete
            && self.missing.is_empty()
            && self.modified.is_empty()
            && self.unlisted.is_empty()
            && self.malformed.is_empty()
            && self.invalid.is_empty()
    }
}

/// Files every finished bundle has (besides the manifest and the cells).
pub const REQUIRED_FILES: &[&str] = &[
    "experiment.toml",
    "commands.txt",
    "env.json",
    "results.json",
    "results.csv",
    "summary.md",
];

/// A manifest path that names a file inside the bundle: relative, '/'
/// separated, no empty, '.' or '..' component, no backslash or NUL.
pub fn safe_rel_path(rel: &str) -> Result<(), &'static str> {
    if rel.starts_with('/') {
        return Err("an absolute path");
    }
    if rel.contains('\\') || rel.contains('\0') {
        return Err("a path with a backslash or NUL");
    }
    for c in rel.split('/') {
        match c {
            "" => return Err("a path with an empty component"),
            "." | ".." => return Err("a path with a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// Recompute every digest of a bundle and check its structure. Only regular
/// files inside the bundle are read; nothing a manifest line names outside
/// it (absolute paths, '..', symbolic links) is opened.
pub fn verify(root: &Path) -> Result<VerifyReport, String> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !meta.is_dir() {
        return Err(format!("{}: not a folder", root.display()));
    }
    let mut rep = VerifyReport::default();
    let (files, other) = list_entries(root)?;
    for (p, what) in &other {
        rep.invalid.push(format!("{p}: {what}"));
    }
    let manifest = root.join(MANIFEST);
    let manifest_is_file = std::fs::symlink_metadata(&manifest)
        .map(|m| m.is_file())
        .unwrap_or(false);
    if !manifest_is_file {
        rep.incomplete = true;
        rep.unlisted = files;
        return Ok(rep);
    }
    let bytes = std::fs::read(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            rep.malformed.push(format!(
                "{MANIFEST}: not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ));
            rep.unlisted = files.into_iter().filter(|f| f != MANIFEST).collect();
            return Ok(rep);
        }
    };
    let regular: std::collections::BTreeSet<&str> = files.iter().map(|s| s.as_str()).collect();
    let mut listed = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let parsed = if line.len() > 66 && line.is_char_boundary(64) {
            let (d, rest) = line.split_at(64);
            let path = rest.strip_prefix("  ").or_else(|| rest.strip_prefix(" *"));
            match path {
                Some(p) if d.chars().all(|c| c.is_ascii_hexdigit()) && !p.is_empty() => {
                    Some((d.to_ascii_lowercase(), p.to_string()))
                }
                _ => None,
            }
        } else {
            None
        };
        let Some((digest, rel)) = parsed else {
            rep.malformed.push(format!("line {}: {line}", n + 1));
            continue;
        };
        if let Err(why) = safe_rel_path(&rel) {
            rep.malformed
                .push(format!("line {}: {rel}: {why} (not read)", n + 1));
            continue;
        }
        if rel == MANIFEST {
            rep.malformed
                .push(format!("line {}: {rel}: the manifest lists itself", n + 1));
            continue;
        }
        if !listed.insert(rel.clone()) {
            rep.malformed
                .push(format!("line {}: {rel}: listed twice", n + 1));
            continue;
        }
        if !regular.contains(rel.as_str()) {
            // Absent, or not a regular file (reported above): not read.
            rep.missing.push(rel);
            continue;
        }
        rep.checked += 1;
        if sha256_file(&root.join(&rel))? != digest {
            rep.modified.push(rel);
        }
    }
    for f in &files {
        if f != MANIFEST && !listed.contains(f) {
            rep.unlisted.push(f.clone());
        }
    }
    check_structure(root, &regular, &listed, &mut rep);
    Ok(rep)
}

/// The required files, and every cell of results.json with its result.json
/// and the files that lists, present as regular files and in the manifest.
fn check_structure(
    root: &Path,
    regular: &std::collections::BTreeSet<&str>,
    listed: &std::collections::BTreeSet<String>,
    rep: &mut VerifyReport,
) {
    let present = |rel: &str| regular.contains(rel) && listed.contains(rel);
    for f in REQUIRED_FILES {
        if !present(f) {
            rep.invalid
                .push(format!("{f}: required file absent or not in {MANIFEST}"));
        }
    }
    if !present("results.json") {
        return;
    }
    let list: Vec<Value> = match std::fs::read(root.join("results.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        Some(Value::Array(a)) => a,
        _ => {
            rep.invalid
                .push("results.json: not a JSON list of cells".into());
            return;
        }
    };
    if list.is_empty() {
        rep.invalid.push("results.json: no cells".into());
    }
    let mut ids = std::collections::BTreeSet::new();
    for (i, entry) in list.iter().enumerate() {
        let Some(id) = entry.get("id").and_then(|v| v.as_str()) else {
            rep.invalid
                .push(format!("results.json: entry {i} has no string id"));
            continue;
        };
        if !crate::experiment::load::safe_id(id) {
            rep.invalid
                .push(format!("results.json: entry {i}: '{id}' is not a cell id"));
            continue;
        }
        if !ids.insert(id.to_string()) {
            rep.invalid
                .push(format!("results.json: cell {id} listed twice"));
            continue;
        }
        let result = format!("cells/{id}/result.json");
        if !present(&result) {
            rep.invalid.push(format!(
                "cell {id} (in results.json): {result} absent or not in {MANIFEST}"
            ));
            continue;
        }
        let record: CellRecord = match std::fs::read(root.join(&result))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(r) => r,
            None => {
                rep.invalid.push(format!("{result}: not a cell record"));
                continue;
            }
        };
        if record.id != id {
            rep.invalid
                .push(format!("{result}: names cell '{}', not {id}", record.id));
        }
        for f in &record.files {
            let rel = format!("cells/{id}/{f}");
            if safe_rel_path(f).is_err() {
                rep.invalid
                    .push(format!("{result}: lists '{f}', not a path inside the cell"));
            } else if !present(&rel) {
                rep.invalid.push(format!(
                    "{result}: lists {f}, but {rel} is absent or not in {MANIFEST}"
                ));
            }
        }
    }
    // Cell folders that results.json does not name.
    let mut extra = std::collections::BTreeSet::new();
    for f in regular {
        if let Some(rest) = f.strip_prefix("cells/") {
            if let Some((id, _)) = rest.split_once('/') {
                if !ids.contains(id) {
                    extra.insert(id.to_string());
                }
            }
        }
    }
    for id in extra {
        rep.invalid.push(format!(
            "cells/{id}: a cell folder that results.json does not list"
        ));
    }
}

/// `result.json` of a cell: the deterministic record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    pub id: String,
    pub experiment: String,
    pub probe: String,
    pub kind: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub device: String,
    pub dtype: String,
    pub param: Option<String>,
    pub roi: [u32; 4],
    pub loss: Option<f64>,
    pub grad_ad: Option<f64>,
    pub grad_fd: Option<f64>,
    pub abs_err: Option<f64>,
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
}

/// `timing.json` of a cell: what varies between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timing {
    pub seconds: f64,
    pub started: String,
    pub finished: String,
    pub engine: Option<String>,
    pub threads: usize,
}

/// A cell as the reports see it.
#[derive(Debug, Clone)]
pub struct Row {
    pub record: CellRecord,
    pub timing: Timing,
}

/// Read a cell's result.json (and timing.json when present).
pub fn read_row(cell_dir: &Path) -> Option<Row> {
    let text = std::fs::read_to_string(cell_dir.join("result.json")).ok()?;
    let record: CellRecord = serde_json::from_str(&text).ok()?;
    let timing = std::fs::read_to_string(cell_dir.join("timing.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    Some(Row { record, timing })
}

/// Folder of a cell inside a bundle.
pub fn cell_dir(bundle: &Path, id: &str) -> PathBuf {
    bundle.join("cells").join(id)
}

/// Pretty JSON with a trailing newline.
pub fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut s =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s.into_bytes()
}
