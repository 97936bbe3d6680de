//! `runner verify`: recompute every digest of a bundle and check its
//! structure (required files, every cell of results.json with its
//! result.json and the files that lists; regular files only).

use super::{list_entries, sha256_file, BundleError, CellRecord, MANIFEST};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The bundle could not be verified at all (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The path is not a folder.
    #[error("{}: not a folder", .0.display())]
    NotAFolder(PathBuf),
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] BundleError),
}

/// What `verify` found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    /// Files whose digest was checked.
    pub checked: usize,
    /// No manifest: the run did not finish.
    pub incomplete: bool,
    /// Listed but absent (or not a regular file).
    pub missing: Vec<String>,
    /// Digest differs.
    pub modified: Vec<String>,
    /// Present but not listed.
    pub unlisted: Vec<String>,
    /// Manifest lines that are not `digest  path` inside the bundle.
    pub malformed: Vec<String>,
    /// Structure: special files, paths outside the bundle, required files
    /// and cells absent, files a result.json lists but the bundle lacks.
    pub invalid: Vec<String>,
}

impl VerifyReport {
    /// Nothing wrong.
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
pub fn verify(root: &Path) -> Result<VerifyReport, VerifyError> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| super::at(root, e))?;
    if !meta.is_dir() {
        return Err(VerifyError::NotAFolder(root.to_path_buf()));
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
    let bytes = std::fs::read(&manifest).map_err(|e| super::at(&manifest, e))?;
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
