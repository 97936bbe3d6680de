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
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
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
pub fn list_files(root: &Path) -> Result<Vec<String>, String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), String> {
        let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let p = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", p.display()))?;
            if ft.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                let s = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().to_string())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push(s);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
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
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        !self.incomplete
            && self.missing.is_empty()
            && self.modified.is_empty()
            && self.unlisted.is_empty()
            && self.malformed.is_empty()
    }
}

/// Recompute every digest of a bundle.
pub fn verify(root: &Path) -> Result<VerifyReport, String> {
    if !root.is_dir() {
        return Err(format!("{}: not a folder", root.display()));
    }
    let mut rep = VerifyReport::default();
    let files = list_files(root)?;
    let manifest = root.join(MANIFEST);
    if !manifest.is_file() {
        rep.incomplete = true;
        rep.unlisted = files;
        return Ok(rep);
    }
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
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
        listed.insert(rel.clone());
        let p = root.join(&rel);
        if rel.split('/').any(|c| c == "..") || !p.is_file() {
            rep.missing.push(rel);
            continue;
        }
        rep.checked += 1;
        if sha256_file(&p)? != digest {
            rep.modified.push(rel);
        }
    }
    for f in files {
        if f != MANIFEST && !listed.contains(&f) {
            rep.unlisted.push(f);
        }
    }
    Ok(rep)
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
