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

pub mod bundle;
pub mod compare;
pub mod env;
pub mod journal;
pub mod merge;
pub mod pictures;
pub mod report;
pub mod resume;
pub mod verify;

pub use crate::experiment::result::{CellRecord, Row};
pub use verify::{verify, VerifyError};

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A bundle file that could not be read or written (the message names it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BundleError(pub String);

impl From<crate::io::IoError> for BundleError {
    fn from(e: crate::io::IoError) -> Self {
        BundleError(e.to_string())
    }
}

impl From<BundleError> for crate::experiment::run::SinkError {
    fn from(e: BundleError) -> Self {
        crate::experiment::run::SinkError(e.0)
    }
}

/// `path: error`.
pub(crate) fn at(path: &Path, e: impl std::fmt::Display) -> BundleError {
    BundleError(format!("{}: {e}", path.display()))
}

/// The manifest's name.
pub const MANIFEST: &str = "sha256.txt";

/// Write a file under a temporary name in the same folder, then rename it
/// (the one atomic writer, [`crate::io::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    Ok(crate::io::write_atomic(path, bytes)?)
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let mut f = std::fs::File::open(path).map_err(|e| at(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| at(path, e))?;
    Ok(hex::encode(h.finalize()))
}

/// Every regular file under `root`, as sorted '/'-separated relative paths.
/// Symbolic links and other special files are left out (they are never
/// followed, read or copied); [`list_entries`] reports them.
pub fn list_files(root: &Path) -> Result<Vec<String>, BundleError> {
    Ok(list_entries(root)?.0)
}

/// Regular files, and other entries with what they are.
pub type Entries = (Vec<String>, Vec<(String, String)>);

/// Regular files, and the other entries (symbolic links, fifos, ...) with
/// what they are, under `root`; relative '/'-separated paths, sorted.
/// Links are not followed.
pub fn list_entries(root: &Path) -> Result<Entries, BundleError> {
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
    ) -> Result<(), BundleError> {
        if depth > 64 {
            other.push((rel_of(root, dir), "folders nested too deep".into()));
            return Ok(());
        }
        let rd = std::fs::read_dir(dir).map_err(|e| at(dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| at(dir, e))?;
            let p = entry.path();
            let ft = entry.file_type().map_err(|e| at(&p, e))?;
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
pub fn write_manifest(root: &Path) -> Result<(), BundleError> {
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
