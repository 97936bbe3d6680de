//! Writing a bundle: creating and locking its folder, the records of a new
//! run (experiment.toml, commands.txt, plan.json, shard.json, env.json),
//! the [`CellSink`] that gives each cell its folder and records it (with
//! the journal of finished cells and the progress lines), and
//! [`finish_bundle`], shared by `runner run` and `runner merge`: the
//! reports, the pictures and, last, the manifest.

use super::report::{self, SummaryNotes, Tally};
use super::{at, cell_dir, json_bytes, write_atomic, BundleError, CellRecord, Row};
use crate::experiment::load::Experiment;
use crate::experiment::matrix::Cell;
use crate::experiment::run::{CellSink, SinkError};
use crate::experiment::shard::{ShardRecord, SHARD_FILE};
use crate::experiment::InputError;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The bundle's record of what was planned (`--only` and the cell ids), so
/// `--resume` runs the same cells.
pub const PLAN_FILE: &str = "plan.json";

/// `plan.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlanRecord {
    /// `--only` as given.
    pub only: Vec<String>,
    /// The planned cell ids.
    pub cells: Vec<String>,
}

/// Why a run (or resume) stopped before its verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Unusable input, or a bundle that cannot be used: nothing was run.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A bundle file could not be read or written.
    #[error(transparent)]
    Io(#[from] BundleError),
}

/// An exclusive lock on a bundle folder (flock, released when the process
/// ends however it ends): a second run or resume of it is refused.
pub fn lock_bundle(dir: &Path) -> Result<std::fs::File, InputError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir)
        .map_err(|e| InputError(format!("{}: cannot open to lock: {e}", dir.display())))?;
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(InputError(if e.kind() == std::io::ErrorKind::WouldBlock {
            format!(
                "{}: the bundle is in use by another runner (a run or --resume of it is in progress); wait for it to finish",
                dir.display()
            )
        } else {
            format!("{}: cannot lock: {e}", dir.display())
        }));
    }
    Ok(f)
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The command line with the RUNNER_*__* variables that configure it,
/// shell-quoted.
pub fn command_line(argv: &[String]) -> String {
    let mut parts: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RUNNER_") && k.contains("__"))
        .map(|(k, v)| format!("{k}={}", shell_quote(&v)))
        .collect();
    parts.sort();
    parts.extend(argv.iter().map(|a| shell_quote(a)));
    parts.join(" ")
}

/// commands.txt of a new bundle: how to re-run and verify it.
pub fn commands_text(argv: &[String], bundle: &Path) -> String {
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    let (commit, dirty) = super::env::git_info();
    format!(
        "# Re-run this experiment (from the working directory below):\n\
         cd {} && {}\n\
         # Verify this bundle:\n\
         runner verify {}\n\
         # working directory: {cwd}\n\
         # braggrun {} (git commit {commit}{})\n",
        shell_quote(&cwd),
        command_line(argv),
        shell_quote(&bundle.display().to_string()),
        crate::VERSION,
        match dirty {
            Some(true) => ", dirty",
            Some(false) => ", clean",
            None => "",
        }
    )
}

/// Create `out/<id>/<timestamp>[-suffix]`; on failure remove what was created.
pub fn create_bundle(out: &Path, id: &str, suffix: Option<&str>) -> Result<PathBuf, InputError> {
    if let Some(b) = super::enclosing_bundle(out) {
        return Err(InputError(format!(
            "--out {}: inside the bundle {}; a new bundle there would invalidate it (choose another --out)",
            out.display(),
            b.display()
        )));
    }
    let mut created: Vec<PathBuf> = Vec::new();
    let mut p = PathBuf::new();
    let target = out.join(id);
    for c in target.components() {
        p.push(c);
        if !p.exists() {
            created.push(p.clone());
        }
    }
    let cleanup = |created: &[PathBuf]| {
        for d in created.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&target) {
        cleanup(&created);
        return Err(InputError(format!(
            "--out {}: cannot create {}: {e}",
            out.display(),
            target.display()
        )));
    }
    let mut ts = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    if let Some(s) = suffix {
        ts = format!("{ts}-{s}");
    }
    let mut bundle = target.join(&ts);
    let mut n = 2;
    while bundle.exists() {
        bundle = target.join(format!("{ts}-{n}"));
        n += 1;
    }
    if let Err(e) = std::fs::create_dir(&bundle) {
        cleanup(&created);
        return Err(InputError(format!(
            "--out {}: cannot create {}: {e}",
            out.display(),
            bundle.display()
        )));
    }
    // Writable?
    let probe = bundle.join(".write-test");
    if let Err(e) = std::fs::write(&probe, b"") {
        let _ = std::fs::remove_dir(&bundle);
        cleanup(&created);
        return Err(InputError(format!(
            "--out {}: not writable: {e}",
            out.display()
        )));
    }
    let _ = std::fs::remove_file(&probe);
    Ok(bundle)
}

/// Write the records of a new bundle: experiment.toml, commands.txt,
/// shard.json (a shard) and plan.json.
pub fn write_new_bundle(
    bundle: &Path,
    resolved_text: &str,
    argv: &[String],
    shard: Option<&ShardRecord>,
    plan: &PlanRecord,
) -> Result<(), BundleError> {
    write_atomic(&bundle.join("experiment.toml"), resolved_text.as_bytes())?;
    write_atomic(
        &bundle.join("commands.txt"),
        commands_text(argv, bundle).as_bytes(),
    )?;
    if let Some(r) = shard {
        write_atomic(&bundle.join(SHARD_FILE), &json_bytes(r))?;
    }
    write_atomic(&bundle.join(PLAN_FILE), &json_bytes(plan))
}

/// The bundle as the scheduler's sink: each cell's folder, its files
/// (log.txt, timing.json, result.json last: its presence marks the cell
/// complete), the journal and a progress line per cell on stderr (a bar on
/// a terminal).
pub struct BundleSink {
    bundle: PathBuf,
    bar: Option<indicatif::ProgressBar>,
}

impl BundleSink {
    /// A sink writing into `bundle`, for `total` cells.
    pub fn new(bundle: &Path, total: usize) -> BundleSink {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let pb = indicatif::ProgressBar::with_draw_target(
                Some(total as u64),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(st) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            ) {
                pb.set_style(st);
            }
            pb
        });
        BundleSink {
            bundle: bundle.to_path_buf(),
            bar,
        }
    }

    /// Clear the progress bar.
    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

impl CellSink for BundleSink {
    fn open_cell(&self, cell: &Cell) -> Result<PathBuf, SinkError> {
        let dir = cell_dir(&self.bundle, &cell.id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| at(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| at(&dir, e))?;
        Ok(dir)
    }

    fn record_cell(&self, dir: &Path, row: &Row, log: &str) -> Result<(), SinkError> {
        write_atomic(&dir.join("log.txt"), log.as_bytes())?;
        write_atomic(&dir.join("timing.json"), &json_bytes(&row.timing))?;
        // result.json last: its presence marks the cell complete.
        write_atomic(&dir.join("result.json"), &json_bytes(&row.record))?;
        Ok(())
    }

    fn cell_done(
        &self,
        cell: &Cell,
        result: &Result<Row, SinkError>,
        done: usize,
        total: usize,
    ) -> Result<(), SinkError> {
        let journal = match result {
            Ok(_) => super::journal::journal_cell(&self.bundle, &cell.id),
            Err(_) => Ok(()),
        };
        let line = match result {
            Ok(row) => format!(
                "[{done}/{total}] {} {} ({:.2} s){}",
                row.record.status,
                cell.id,
                row.timing.seconds,
                row.record
                    .reason
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            Err(e) => format!("[{done}/{total}] ERROR {}: {e}", cell.id),
        };
        match &self.bar {
            Some(pb) => {
                pb.println(&line);
                pb.set_message(cell.id.clone());
                pb.inc(1);
            }
            None => crate::errln!("{line}"),
        }
        Ok(journal?)
    }
}

/// The record of a cell that was never started (`--fail-fast`), in a fresh
/// folder.
pub fn write_not_run(bundle: &Path, record: &CellRecord) -> Result<(), BundleError> {
    let dir = cell_dir(bundle, &record.id);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| at(&dir, e))?;
    write_atomic(&dir.join("result.json"), &json_bytes(record))
}

/// The rows of a bundle's reports: the planned cells in plan order, then
/// (`with_others`) cells of the bundle outside this plan (e.g. an earlier
/// `--only`), sorted; and the planned cells without a result.
pub fn collect_rows(
    bundle: &Path,
    planned: &[String],
    with_others: bool,
) -> (Vec<Row>, Vec<String>) {
    let mut rows: Vec<Row> = Vec::new();
    let mut missing = Vec::new();
    for id in planned {
        match super::read_row(&cell_dir(bundle, id)) {
            Some(r) => rows.push(r),
            None => missing.push(id.clone()),
        }
    }
    if with_others {
        if let Ok(rd) = std::fs::read_dir(bundle.join("cells")) {
            let mut extra: Vec<String> = rd
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
                .filter(|n| !planned.iter().any(|c| c == n))
                .collect();
            extra.sort();
            for n in extra {
                if let Some(r) = super::read_row(&cell_dir(bundle, &n)) {
                    rows.push(r);
                }
            }
        }
    }
    (rows, missing)
}

/// What the reports of a bundle are made of.
pub struct Finish<'a> {
    /// The experiment (experiment.toml).
    pub exp: &'a Experiment,
    /// The cells, in report order.
    pub rows: &'a [Row],
    /// commands.txt.
    pub commands: &'a str,
    /// env.json.
    pub env: &'a Value,
    /// Failures outside the cells (I/O errors, missing cells): the verdict is FAIL.
    pub extra_failures: &'a [String],
    /// Notes under the verdict of summary.md.
    pub notes: Vec<String>,
}

/// Finish a bundle: results.csv/json, junit.xml, the pictures, summary.md,
/// and, last, the manifest (the journal goes). Returns the tally of the
/// cells; its verdict with [`Finish::extra_failures`] is the bundle's.
pub fn finish_bundle(bundle: &Path, f: &Finish) -> Result<Tally, BundleError> {
    report::write_results(bundle, f.rows)?;
    report::write_junit(bundle, f.exp.id(), f.rows)?;
    let mut notes = SummaryNotes {
        lines: f.notes.clone(),
        plots: super::pictures::write_sweep_plots(bundle, f.rows)?,
    };
    notes
        .plots
        .extend(super::pictures::write_scaling_plot(bundle, f.rows)?);
    report::write_summary_with(
        bundle,
        f.exp,
        f.rows,
        f.commands,
        f.env,
        f.extra_failures,
        &notes,
    )?;
    // The manifest supersedes the journal of finished cells.
    let _ = std::fs::remove_file(bundle.join(super::journal::JOURNAL));
    super::write_manifest(bundle)?;
    Ok(Tally::of(f.rows))
}
