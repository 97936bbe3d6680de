//! The journal of finished cells (`progress.sha256`): while a bundle has no
//! manifest, each cell that finishes appends the digest of each of its
//! files, so that `--resume` can tell a finished cell from a changed one.

use super::{at, BundleError};
use std::path::Path;

/// The journal of finished cells: while a bundle has no `sha256.txt`, each
/// cell that finishes appends a block `# cell <id>` with the digest of each
/// of its files, so `--resume` can tell a finished cell from a changed one.
/// Removed when the manifest is written.
pub const JOURNAL: &str = "progress.sha256";

pub(crate) fn journal_block(b: &Path, id: &str) -> Result<String, BundleError> {
    let dir = super::cell_dir(b, id);
    let mut text = format!("# cell {id}\n");
    for f in super::list_files(&dir)? {
        let name = f.rsplit('/').next().unwrap_or("");
        if name.starts_with('.') && name.contains(".tmp-") {
            continue;
        }
        let d = super::sha256_file(&dir.join(&f))?;
        text.push_str(&format!("{d}  cells/{id}/{f}\n"));
    }
    Ok(text)
}

pub(crate) fn journal_append(b: &Path, text: &str) -> Result<(), BundleError> {
    use std::io::Write;
    let p = b.join(JOURNAL);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| at(&p, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(|e| at(&p, e))
}

pub(crate) fn journal_cell(b: &Path, id: &str) -> Result<(), BundleError> {
    journal_append(b, &journal_block(b, id)?)
}

/// Cell id -> (relative path -> digest), the last block of each cell.
pub(crate) fn read_journal(
    b: &Path,
) -> Option<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>> {
    let text = std::fs::read_to_string(b.join(JOURNAL)).ok()?;
    let mut map: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        Default::default();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("# cell ") {
            map.insert(id.to_string(), Default::default());
            cur = Some(id.to_string());
        } else if let (Some(id), Some((d, rel))) = (&cur, line.split_once("  ")) {
            if let Some(m) = map.get_mut(id) {
                m.insert(rel.to_string(), d.to_string());
            }
        }
    }
    Some(map)
}
