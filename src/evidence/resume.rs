//! `runner run FILE --resume BUNDLE`: finish an interrupted bundle, or
//! re-run the failed cells of a finished one. Before anything changes, what
//! is there is checked: the manifest's digests when the run had finished,
//! else the journal of finished cells (`progress.sha256`); a cell that
//! differs from its record runs again, and a change outside the cells is
//! refused.

use super::bundle::RunError;
use super::bundle::{command_line, lock_bundle, PlanRecord, PLAN_FILE};
use super::journal::{journal_append, journal_block, read_journal, JOURNAL};
use super::{at, BundleError};
use crate::experiment::matrix::Cell;
use crate::experiment::run::device_required;
use crate::experiment::shard::{ShardRecord, SHARD_FILE};
use crate::experiment::InputError;
use std::path::{Path, PathBuf};

/// `--only` as the user wrote it.
pub fn only_text(only: &[String]) -> String {
    if only.is_empty() {
        "no --only".into()
    } else {
        format!("--only {}", only.join(" --only "))
    }
}

/// A bundle to resume: its canonical path and recorded plan.
pub struct Resume {
    /// The bundle (canonical path).
    pub dir: PathBuf,
    /// Its plan.json, when it has one.
    pub plan: Option<PlanRecord>,
}

/// The bundle of `--resume` (not yet locked or checked).
pub fn open_for_resume(b: &Path) -> Result<Resume, InputError> {
    let dir = std::fs::canonicalize(b)
        .map_err(|e| InputError(format!("--resume {}: {e}", b.display())))?;
    let is_file = |name: &str| {
        std::fs::symlink_metadata(dir.join(name))
            .map(|m| m.is_file())
            .unwrap_or(false)
    };
    if !is_file("experiment.toml") {
        return Err(InputError(format!(
            "--resume {}: not a bundle (no experiment.toml)",
            b.display()
        )));
    }
    let plan = match std::fs::read(dir.join(PLAN_FILE)) {
        Ok(bytes) => Some(
            serde_json::from_slice::<PlanRecord>(&bytes)
                .map_err(|e| InputError(format!("--resume {}: {PLAN_FILE}: {e}", b.display())))?,
        ),
        Err(_) => None,
    };
    Ok(Resume { dir, plan })
}

/// experiment.toml with the paths of its header canonicalised (the same
/// file reached by another path is the same experiment).
fn canonical_header(text: &str) -> String {
    text.lines()
        .map(|l| {
            for pre in ["# Source: ", "# Relative paths resolve against: "] {
                if let Some(p) = l.strip_prefix(pre) {
                    if let Ok(c) = std::fs::canonicalize(p) {
                        return format!("{pre}{}", c.display());
                    }
                }
            }
            l.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// On resume of a verified bundle: the journal of its finished cells (from
/// the files just verified), before the manifest goes.
fn seed_journal(
    b: &Path,
    rerun: &std::collections::BTreeMap<String, String>,
) -> Result<(), BundleError> {
    if !b.join(super::MANIFEST).is_file() {
        return Ok(());
    }
    let mut text = String::new();
    if let Ok(rd) = std::fs::read_dir(b.join("cells")) {
        let mut ids: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|id| !rerun.contains_key(id))
            .collect();
        ids.sort();
        for id in ids {
            if super::cell_dir(b, &id).join("result.json").is_file() {
                text.push_str(&journal_block(b, &id)?);
            }
        }
    }
    let _ = std::fs::remove_file(b.join(JOURNAL));
    journal_append(b, &text)
}

/// Files a run rewrites at its end (never trusted, never kept).
fn regenerated(rel: &str) -> bool {
    matches!(
        rel,
        "results.csv" | "results.json" | "summary.md" | "junit.xml" | super::MANIFEST | JOURNAL
    ) || (!rel.contains('/') && rel.ends_with(".png"))
}

/// Before a resume changes anything: cells to run again (id -> why), or a
/// refusal naming what is wrong outside the cells.
fn check_for_resume(
    b: &Path,
    planned: &std::collections::BTreeSet<&str>,
) -> Result<std::collections::BTreeMap<String, String>, InputError> {
    let mut rerun = std::collections::BTreeMap::new();
    let mut refuse: Vec<String> = Vec::new();
    let mut blame = |rel: &str, what: &str, refuse: &mut Vec<String>| {
        let name = rel.rsplit('/').next().unwrap_or("");
        if name.starts_with('.') && name.contains(".tmp-") {
            return; // a temporary file of an interrupted write
        }
        match rel.strip_prefix("cells/").and_then(|r| r.split_once('/')) {
            Some((id, _)) if planned.contains(id) => {
                rerun
                    .entry(id.to_string())
                    .or_insert_with(|| format!("{what} {rel}"));
            }
            _ if regenerated(rel) => {}
            _ => refuse.push(format!("{what} {rel}")),
        }
    };
    let manifest_present = std::fs::symlink_metadata(b.join(super::MANIFEST))
        .map(|m| m.is_file())
        .unwrap_or(false);
    let (files, other) = super::list_entries(b).map_err(|e| InputError(e.0))?;
    for (p, what) in &other {
        blame(p, &format!("{what}:"), &mut refuse);
    }
    if manifest_present {
        let rep = super::verify(b).map_err(|e| InputError(e.to_string()))?;
        for f in &rep.modified {
            blame(f, "MODIFIED", &mut refuse);
        }
        for f in &rep.missing {
            blame(f, "MISSING", &mut refuse);
        }
        for f in &rep.unlisted {
            blame(f, "UNLISTED", &mut refuse);
        }
        for f in &rep.malformed {
            refuse.push(format!("{}: {f}", super::MANIFEST));
        }
    } else if let Some(journal) = read_journal(b) {
        // An interrupted run: each finished cell must match the digests
        // recorded when it finished (no file added, removed or changed).
        for id in planned {
            let dir = super::cell_dir(b, id);
            if !dir.join("result.json").exists() {
                continue;
            }
            let Some(want) = journal.get(*id) else {
                rerun.insert(
                    id.to_string(),
                    format!("not recorded as finished in {JOURNAL}"),
                );
                continue;
            };
            let prefix = format!("cells/{id}/");
            let have: Vec<&String> = files.iter().filter(|f| f.starts_with(&prefix)).collect();
            let mut why = None;
            for f in &have {
                match want.get(f.as_str()) {
                    None => why = Some(format!("UNLISTED {f}")),
                    Some(d) => {
                        if super::sha256_file(&b.join(f)).ok().as_deref() != Some(d.as_str()) {
                            why = Some(format!("MODIFIED {f}"));
                        }
                    }
                }
            }
            for f in want.keys() {
                if !have.contains(&f) {
                    why = Some(format!("MISSING {f}"));
                }
            }
            if let Some(w) = why {
                rerun.insert(id.to_string(), w);
            }
        }
    } else {
        // An interrupted run without a journal (an older bundle): each
        // finished cell must be whole: its record names it and every file
        // it lists is there.
        let regular: std::collections::BTreeSet<&str> = files.iter().map(|s| s.as_str()).collect();
        for id in planned {
            let dir = super::cell_dir(b, id);
            let Some(row) = super::read_row(&dir) else {
                continue;
            };
            let has = |f: &str| regular.contains(format!("cells/{id}/{f}").as_str());
            if row.record.id != *id {
                rerun.insert(
                    id.to_string(),
                    format!("result.json names cell '{}'", row.record.id),
                );
            } else if let Some(f) = row
                .record
                .files
                .iter()
                .chain(["log.txt".to_string(), "timing.json".to_string()].iter())
                .find(|f| !row.record.not_run && !has(f))
            {
                rerun.insert(id.to_string(), format!("{f} is missing"));
            }
        }
    }
    if !refuse.is_empty() {
        return Err(InputError(format!(
            "--resume {}: the bundle has been changed outside its cells ({}); refusing to resume it (start a new run)",
            b.display(),
            refuse.join(", ")
        )));
    }
    Ok(rerun)
}

fn remove_stray_temps(dir: &Path) {
    if let Ok(files) = super::list_files(dir) {
        for f in files {
            let name = f.rsplit('/').next().unwrap_or("");
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(dir.join(&f));
            }
        }
    }
}

/// The `--only` of a resumed run: the bundle's, unless the run asks for a
/// different one (refused).
pub fn resumed_only(r: &Resume, only: &[String]) -> Result<Vec<String>, InputError> {
    Ok(match &r.plan {
        Some(p) if !only.is_empty() && only != p.only => {
            return Err(InputError(format!(
                "--resume {}: the bundle was run with {}, this run asks for {}; resume with the same --only (or none)",
                r.dir.display(),
                only_text(&p.only),
                only_text(only)
            )));
        }
        Some(p) => p.only.clone(),
        None => only.to_vec(),
    })
}

/// What a resumed run needs to know.
pub struct ResumeRequest<'a> {
    /// The experiment file (for messages).
    pub file: &'a Path,
    /// experiment.toml of this run.
    pub resolved_text: &'a str,
    /// The shard record of this run, when sharded.
    pub shard: Option<&'a ShardRecord>,
    /// The planned cells (of this shard).
    pub cells: &'a [Cell],
    /// `--require-device`.
    pub require_device: &'a [String],
    /// The command line (appended to commands.txt).
    pub argv: &'a [String],
}

/// Lock and check the bundle of `--resume`, and prepare it to run again:
/// the lock (held until the process ends) and the positions of the cells
/// to run (missing, failed, changed, or skipped for lack of a required
/// device).
pub fn resume_bundle(
    r: &Resume,
    q: &ResumeRequest,
) -> Result<(std::fs::File, Vec<usize>), RunError> {
    let b = &r.dir;
    let lock = lock_bundle(b)?;
    let old = std::fs::read_to_string(b.join("experiment.toml")).map_err(|e| at(b, e))?;
    if canonical_header(&old) != canonical_header(q.resolved_text) {
        return Err(InputError(format!(
            "--resume {}: the bundle's experiment.toml differs from the resolved configuration of {} (same file, --set and RUNNER_* variables needed)",
            b.display(),
            q.file.display()
        ))
        .into());
    }
    let old_shard: Option<ShardRecord> = std::fs::read_to_string(b.join(SHARD_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if old_shard.as_ref().map(|r| &r.shard) != q.shard.map(|r| &r.shard) {
        return Err(InputError(format!(
            "--resume {}: the bundle is {} but this run is {}",
            b.display(),
            old_shard
                .map(|r| format!("shard {}", r.shard))
                .unwrap_or_else(|| "not a shard".into()),
            q.shard
                .map(|r| format!("--shard {}", r.shard))
                .unwrap_or_else(|| "not sharded".into())
        ))
        .into());
    }
    // What is there is checked before anything changes: the manifest's
    // digests when the run had finished, else each cell's structure.
    let planned: std::collections::BTreeSet<&str> = q.cells.iter().map(|c| c.id.as_str()).collect();
    let rerun = check_for_resume(b, &planned)?;
    for (id, why) in &rerun {
        crate::errln!("runner: resume: cell {id}: {why}; running it again");
    }
    seed_journal(b, &rerun)?;
    let _ = std::fs::remove_file(b.join(super::MANIFEST));
    remove_stray_temps(b);
    let todo = q
        .cells
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            if rerun.contains_key(&c.id) {
                return true;
            }
            match super::read_row(&super::cell_dir(b, &c.id)) {
                None => true,
                Some(r) => {
                    r.record.not_run
                        || r.record.status.is_failure()
                        || (r.record.status == crate::experiment::result::Verdict::Skipped
                            && r.record.device_unavailable
                            && device_required(c, q.require_device))
                }
            }
        })
        .map(|(i, _)| i)
        .collect();
    let mut cmds = std::fs::read_to_string(b.join("commands.txt")).unwrap_or_default();
    cmds.push_str(&format!(
        "# resumed {} with:\n# {}\n",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        command_line(q.argv)
    ));
    super::write_atomic(&b.join("commands.txt"), cmds.as_bytes())?;
    Ok((lock, todo))
}
