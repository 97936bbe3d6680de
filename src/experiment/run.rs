//! `runner run`: validate, create the bundle, run the cells in parallel
//! (each concurrently running cell gets its own rayon pool with a share of
//! the cores), write the reports and, last, the manifest.

use super::load::{load, Experiment};
use super::matrix::{self, Cell};
use super::probes::{self, Log, Outcome, Status};
use super::InputError;
use crate::engine::Device;
use crate::evidence::{self, report, CellRecord, Row, Timing};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

/// Test hook: abort the process (as if killed) after this many cells finish.
pub const ABORT_AFTER_ENV: &str = "RUNNER_TEST_ABORT_AFTER";
/// Test hook: send this process SIGTERM after this many cells finish.
pub const SIGNAL_AFTER_ENV: &str = "RUNNER_TEST_SIGNAL_AFTER";

/// The bundle's record of what was planned (`--only` and the cell ids), so
/// `--resume` runs the same cells.
pub const PLAN_FILE: &str = "plan.json";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlanRecord {
    pub only: Vec<String>,
    pub cells: Vec<String>,
}

fn only_text(only: &[String]) -> String {
    if only.is_empty() {
        "no --only".into()
    } else {
        format!("--only {}", only.join(" --only "))
    }
}

/// A bundle to resume: its canonical path and recorded plan.
struct Resume {
    dir: PathBuf,
    plan: Option<PlanRecord>,
}

fn open_for_resume(b: &Path) -> Result<Resume, InputError> {
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

/// An exclusive lock on a bundle folder (flock, released when the process
/// ends however it ends): a second run or resume of it is refused.
fn lock_bundle(dir: &Path) -> Result<std::fs::File, InputError> {
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

/// The journal of finished cells: while a bundle has no `sha256.txt`, each
/// cell that finishes appends a block `# cell <id>` with the digest of each
/// of its files, so `--resume` can tell a finished cell from a changed one.
/// Removed when the manifest is written.
pub const JOURNAL: &str = "progress.sha256";

fn journal_block(b: &Path, id: &str) -> Result<String, String> {
    let dir = evidence::cell_dir(b, id);
    let mut text = format!("# cell {id}\n");
    for f in evidence::list_files(&dir)? {
        let name = f.rsplit('/').next().unwrap_or("");
        if name.starts_with('.') && name.contains(".tmp-") {
            continue;
        }
        let d = evidence::sha256_file(&dir.join(&f))?;
        text.push_str(&format!("{d}  cells/{id}/{f}\n"));
    }
    Ok(text)
}

fn journal_append(b: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let p = b.join(JOURNAL);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(|e| format!("{}: {e}", p.display()))
}

fn journal_cell(b: &Path, id: &str) -> Result<(), String> {
    journal_append(b, &journal_block(b, id)?)
}

/// Cell id -> (relative path -> digest), the last block of each cell.
fn read_journal(
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

/// On resume of a verified bundle: the journal of its finished cells (from
/// the files just verified), before the manifest goes.
fn seed_journal(
    b: &Path,
    rerun: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    if !b.join(evidence::MANIFEST).is_file() {
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
            if evidence::cell_dir(b, &id).join("result.json").is_file() {
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
        "results.csv" | "results.json" | "summary.md" | "junit.xml" | evidence::MANIFEST | JOURNAL
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
    let manifest_present = std::fs::symlink_metadata(b.join(evidence::MANIFEST))
        .map(|m| m.is_file())
        .unwrap_or(false);
    let (files, other) = evidence::list_entries(b).map_err(InputError)?;
    for (p, what) in &other {
        blame(p, &format!("{what}:"), &mut refuse);
    }
    if manifest_present {
        let rep = evidence::verify(b).map_err(InputError)?;
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
            refuse.push(format!("{}: {f}", evidence::MANIFEST));
        }
    } else if let Some(journal) = read_journal(b) {
        // An interrupted run: each finished cell must match the digests
        // recorded when it finished (no file added, removed or changed).
        for id in planned {
            let dir = evidence::cell_dir(b, id);
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
                        if evidence::sha256_file(&b.join(f)).ok().as_deref() != Some(d.as_str()) {
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
            let dir = evidence::cell_dir(b, id);
            let Some(row) = evidence::read_row(&dir) else {
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

#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    pub file: PathBuf,
    pub out: PathBuf,
    pub only: Vec<String>,
    pub jobs: Option<usize>,
    pub fail_fast: bool,
    pub resume: Option<PathBuf>,
    pub require_device: Vec<String>,
    pub sets: Vec<String>,
    pub allow_large: bool,
    /// Run only this shard of the planned cells (`--shard K/N`).
    pub shard: Option<super::shard::Shard>,
    /// The command line as given (commands.txt).
    pub argv: Vec<String>,
}

/// Load, expand, filter and validate: everything that can reject input.
pub fn load_and_plan(
    file: &Path,
    sets: &[String],
    only: &[String],
    allow_large: bool,
) -> Result<(Experiment, Vec<Cell>), InputError> {
    let exp = load(file, sets, true)?;
    let cells = matrix::expand(&exp, allow_large)?;
    let mut cells = matrix::filter_only(&exp.file.display().to_string(), cells, only)?;
    matrix::validate(&exp, &mut cells)?;
    Ok((exp, cells))
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

fn command_line(argv: &[String]) -> String {
    let mut parts: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RUNNER_") && k.contains("__"))
        .map(|(k, v)| format!("{k}={}", shell_quote(&v)))
        .collect();
    parts.sort();
    parts.extend(argv.iter().map(|a| shell_quote(a)));
    parts.join(" ")
}

fn commands_text(argv: &[String], bundle: &Path) -> String {
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    let (commit, dirty) = evidence::env::git_info();
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

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

fn record_of(exp: &Experiment, cell: &Cell, o: &Outcome) -> CellRecord {
    CellRecord {
        id: cell.id.clone(),
        experiment: exp.id().to_string(),
        probe: cell.probe_name.clone(),
        kind: cell.kind.to_string(),
        status: o.status,
        reason: o.reason.clone(),
        device: cell.device.to_string(),
        dtype: cell.dtype.to_string(),
        param: cell.param.map(|p| p.name().to_string()),
        roi: cell.effective_roi,
        loss: o.loss,
        grad_ad: o.grad_ad,
        grad_fd: o.grad_fd,
        abs_err: o.abs_err,
        rel_err: o.rel_err,
        axes: cell.plan_row().axes,
        details: o.details.clone(),
        files: o.files.clone(),
        device_unavailable: o.unavailable,
        not_run: false,
    }
}

fn device_required(cell: &Cell, require: &[String]) -> bool {
    require.iter().any(|r| match (r.as_str(), cell.device) {
        ("cuda", Device::Cuda(_)) => true,
        ("cpu", Device::Cpu) => true,
        (s, d) => s == d.to_string(),
    })
}

/// The GPU ordinal a `device = "cuda"` cell runs on when `visible` GPUs are
/// visible: round-robin over the matrix order; None without a GPU.
pub fn gpu_for_cell(index: usize, visible: usize) -> Option<usize> {
    (visible > 0).then(|| index % visible)
}

fn run_cell(
    exp: &Experiment,
    cell: &Cell,
    bundle: &Path,
    threads: usize,
    pool: Option<&rayon::ThreadPool>,
    require: &[String],
) -> Result<Row, String> {
    let dir = evidence::cell_dir(bundle, &cell.id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let started = chrono::Utc::now();
    let t0 = Instant::now();
    let mut log = Log::new();
    log.line(format!(
        "braggrun {} cell {} ({} rayon threads)",
        crate::VERSION,
        cell.id,
        threads
    ));
    // `device = "cuda"` cells are spread over every visible GPU, by cell
    // index (deterministic, so a re-run lands each cell on the same ordinal).
    let spread;
    let cell = match cell.device {
        Device::Cuda(None) => match gpu_for_cell(cell.index, crate::engine::cuda::device_count()) {
            None => cell,
            Some(k) => {
                let n = crate::engine::cuda::device_count();
                let mut c = cell.clone();
                c.device = Device::Cuda(Some(k));
                log.line(format!("device cuda -> {} ({n} GPU(s) visible)", c.device));
                spread = c;
                &spread
            }
        },
        _ => cell,
    };
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match pool {
        Some(p) => p.install(|| probes::run_probe(exp, cell, &dir, &mut log)),
        None => probes::run_probe(exp, cell, &dir, &mut log),
    }));
    let mut outcome = match res {
        Ok(o) => o,
        Err(p) => {
            let m = panic_message(p.as_ref());
            log.line(format!("ERROR: panic: {m}"));
            Outcome::error(format!("panic: {m}"))
        }
    };
    if outcome.status == Status::Skipped && outcome.unavailable && device_required(cell, require) {
        outcome.status = Status::Fail;
        outcome.reason = Some(format!(
            "--require-device {}: {}",
            cell.device,
            outcome.reason.clone().unwrap_or_default()
        ));
        log.line(format!("FAIL: {}", outcome.reason.as_deref().unwrap_or("")));
    }
    let seconds = t0.elapsed().as_secs_f64();
    log.line(format!("{} in {seconds:.3} s", outcome.status.as_str()));
    let record = record_of(exp, cell, &outcome);
    let timing = Timing {
        seconds,
        started: started.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        finished: chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string(),
        engine: outcome.engine.clone(),
        threads,
    };
    evidence::write_atomic(&dir.join("log.txt"), log.text.as_bytes())?;
    evidence::write_atomic(&dir.join("timing.json"), &evidence::json_bytes(&timing))?;
    // result.json last: its presence marks the cell complete.
    evidence::write_atomic(&dir.join("result.json"), &evidence::json_bytes(&record))?;
    Ok(Row { record, timing })
}

fn remove_stray_temps(dir: &Path) {
    if let Ok(files) = evidence::list_files(dir) {
        for f in files {
            let name = f.rsplit('/').next().unwrap_or("");
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(dir.join(&f));
            }
        }
    }
}

/// Create `out/<id>/<timestamp>[-suffix]`; on failure remove what was created.
pub fn create_bundle(out: &Path, id: &str, suffix: Option<&str>) -> Result<PathBuf, InputError> {
    if let Some(b) = evidence::enclosing_bundle(out) {
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

/// Run an experiment; returns the exit code.
pub fn run(args: &RunArgs) -> i32 {
    match run_inner(args) {
        Ok(code) => code,
        Err(RunFail::Input(e)) => {
            crate::errln!("error: {}", e.0);
            2
        }
        Err(RunFail::Io(e)) => {
            crate::errln!("error: {e}");
            1
        }
    }
}

enum RunFail {
    Input(InputError),
    Io(String),
}

impl From<InputError> for RunFail {
    fn from(e: InputError) -> Self {
        RunFail::Input(e)
    }
}

fn run_inner(args: &RunArgs) -> Result<i32, RunFail> {
    for r in &args.require_device {
        if r != "cuda" && r != "cpu" && r.parse::<Device>().is_err() {
            return Err(InputError(format!(
                "--require-device '{r}': unknown device; valid: cpu, cuda, cuda:N"
            ))
            .into());
        }
    }
    if args.jobs == Some(0) {
        return Err(InputError("--jobs 0: must be at least 1".into()).into());
    }
    let signal_after: Option<usize> = std::env::var(SIGNAL_AFTER_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let abort_after: Option<usize> = match std::env::var(ABORT_AFTER_ENV) {
        Ok(v) => Some(
            v.trim()
                .parse()
                .map_err(|_| InputError(format!("{ABORT_AFTER_ENV}={v}: not a number")))?,
        ),
        Err(_) => None,
    };
    // --resume: the bundle first (canonical path, lock, recorded --only).
    let resume = match &args.resume {
        Some(b) => Some(open_for_resume(b)?),
        None => None,
    };
    let only: Vec<String> = match resume.as_ref().and_then(|r| r.plan.as_ref()) {
        Some(p) if !args.only.is_empty() && args.only != p.only => {
            return Err(InputError(format!(
                "--resume {}: the bundle was run with {}, this run asks for {}; resume with the same --only (or none)",
                resume.as_ref().map(|r| r.dir.display().to_string()).unwrap_or_default(),
                only_text(&p.only),
                only_text(&args.only)
            ))
            .into());
        }
        Some(p) => p.only.clone(),
        None => args.only.clone(),
    };
    let (exp, cells) = load_and_plan(&args.file, &args.sets, &only, args.allow_large)?;
    let shard_record = args
        .shard
        .map(|s| super::shard::record(&exp.resolved, &cells, s));
    let cells = match args.shard {
        Some(s) => super::shard::select(cells, s),
        None => cells,
    };
    if let Some(r) = &shard_record {
        crate::errln!(
            "runner: shard {}: {} of {} planned cell(s)",
            r.shard,
            r.cells.len(),
            r.planned.len()
        );
    }

    // The bundle.
    let resolved_text = exp.resolved_toml();
    let mut _lock: Option<std::fs::File> = None;
    let (bundle, todo): (PathBuf, Vec<usize>) = if let Some(r) = &resume {
        let b = &r.dir;
        _lock = Some(lock_bundle(b)?);
        let old = std::fs::read_to_string(b.join("experiment.toml"))
            .map_err(|e| RunFail::Io(format!("{}: {e}", b.display())))?;
        if canonical_header(&old) != canonical_header(&resolved_text) {
            return Err(InputError(format!(
                "--resume {}: the bundle's experiment.toml differs from the resolved configuration of {} (same file, --set and RUNNER_* variables needed)",
                b.display(),
                args.file.display()
            ))
            .into());
        }
        let old_shard: Option<super::shard::ShardRecord> =
            std::fs::read_to_string(b.join(super::shard::SHARD_FILE))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
        if old_shard.as_ref().map(|r| &r.shard) != shard_record.as_ref().map(|r| &r.shard) {
            return Err(InputError(format!(
                "--resume {}: the bundle is {} but this run is {}",
                b.display(),
                old_shard
                    .map(|r| format!("shard {}", r.shard))
                    .unwrap_or_else(|| "not a shard".into()),
                shard_record
                    .as_ref()
                    .map(|r| format!("--shard {}", r.shard))
                    .unwrap_or_else(|| "not sharded".into())
            ))
            .into());
        }
        // What is there is checked before anything changes: the manifest's
        // digests when the run had finished, else each cell's structure.
        let planned: std::collections::BTreeSet<&str> =
            cells.iter().map(|c| c.id.as_str()).collect();
        let rerun = check_for_resume(b, &planned)?;
        for (id, why) in &rerun {
            crate::errln!("runner: resume: cell {id}: {why}; running it again");
        }
        seed_journal(b, &rerun).map_err(RunFail::Io)?;
        let _ = std::fs::remove_file(b.join(evidence::MANIFEST));
        remove_stray_temps(b);
        let todo = cells
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                if rerun.contains_key(&c.id) {
                    return true;
                }
                match evidence::read_row(&evidence::cell_dir(b, &c.id)) {
                    None => true,
                    Some(r) => {
                        r.record.not_run
                            || matches!(
                                r.record.status,
                                Status::Fail | Status::Error | Status::NonSmooth
                            )
                            || (r.record.status == Status::Skipped
                                && r.record.device_unavailable
                                && device_required(c, &args.require_device))
                    }
                }
            })
            .map(|(i, _)| i)
            .collect();
        let mut cmds = std::fs::read_to_string(b.join("commands.txt")).unwrap_or_default();
        cmds.push_str(&format!(
            "# resumed {} with:\n# {}\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
            command_line(&args.argv)
        ));
        evidence::write_atomic(&b.join("commands.txt"), cmds.as_bytes()).map_err(RunFail::Io)?;
        (b.clone(), todo)
    } else {
        let suffix = args.shard.map(|s| s.suffix());
        let bundle = create_bundle(&args.out, exp.id(), suffix.as_deref())?;
        _lock = Some(lock_bundle(&bundle)?);
        let w = |name: &str, bytes: &[u8]| {
            evidence::write_atomic(&bundle.join(name), bytes).map_err(RunFail::Io)
        };
        w("experiment.toml", resolved_text.as_bytes())?;
        w(
            "commands.txt",
            commands_text(&args.argv, &bundle).as_bytes(),
        )?;
        if let Some(r) = &shard_record {
            w(super::shard::SHARD_FILE, &evidence::json_bytes(r))?;
        }
        w(
            PLAN_FILE,
            &evidence::json_bytes(&PlanRecord {
                only: args.only.clone(),
                cells: cells.iter().map(|c| c.id.clone()).collect(),
            }),
        )?;
        (bundle.clone(), (0..cells.len()).collect())
    };

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let jobs = args
        .jobs
        .unwrap_or_else(|| cores.min(todo.len().max(1)))
        .max(1);
    // Cells that run at once must fit the memory budget together.
    let biggest = todo.iter().map(|i| cells[*i].mem_bytes).max().unwrap_or(0);
    let (limit, _) = crate::physics::budget::limit();
    let fit = (limit / biggest.max(1)).max(1) as usize;
    let jobs = if jobs > fit {
        crate::errln!(
            "runner: {jobs} job(s) would need {} at once; running {fit} at a time (memory limit {})",
            crate::physics::budget::human(biggest.saturating_mul(jobs as u64)),
            crate::physics::budget::human(limit)
        );
        fit
    } else {
        jobs
    };
    let threads = (cores / jobs).max(1);
    crate::cli::signals::set_note(Some(format!(
        "complete the bundle with `runner run {} --resume {}`",
        args.file.display(),
        bundle.display()
    )));
    let env = evidence::env::collect(jobs, threads);
    let env_name = if args.resume.is_some() {
        format!(
            "env-resume-{}.json",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        )
    } else {
        "env.json".to_string()
    };
    evidence::write_atomic(&bundle.join(&env_name), &evidence::json_bytes(&env))
        .map_err(RunFail::Io)?;

    crate::errln!(
        "runner: {} cell(s) of {} to run, {} job(s) x {} thread(s); bundle {}",
        todo.len(),
        exp.id(),
        jobs,
        threads,
        bundle.display()
    );
    let tty = std::io::stderr().is_terminal();
    let pb = if tty {
        let pb = indicatif::ProgressBar::with_draw_target(
            Some(todo.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(st) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        ) {
            pb.set_style(st);
        }
        Some(pb)
    } else {
        None
    };

    let queue = Mutex::new(
        todo.clone()
            .into_iter()
            .collect::<std::collections::VecDeque<usize>>(),
    );
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<Row, String>)>();
    let mut io_errors: Vec<String> = Vec::new();
    let mut done = 0usize;
    let total = todo.len();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(total.max(1)) {
            let tx = tx.clone();
            let (queue, stop, exp, cells, bundle) = (&queue, &stop, &exp, &cells, &bundle);
            let require = &args.require_device;
            s.spawn(move || {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .ok();
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                    let Some(i) = next else { break };
                    let r = run_cell(exp, &cells[i], bundle, threads, pool.as_ref(), require);
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            done += 1;
            let cell = &cells[i];
            if r.is_ok() {
                if let Err(e) = journal_cell(&bundle, &cell.id) {
                    io_errors.push(format!("{}: {e}", cell.id));
                }
            }
            let line = match &r {
                Ok(row) => format!(
                    "[{done}/{total}] {} {} ({:.2} s){}",
                    row.record.status.as_str(),
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
            match &pb {
                Some(pb) => {
                    pb.println(&line);
                    pb.set_message(cell.id.clone());
                    pb.inc(1);
                }
                None => crate::errln!("{line}"),
            }
            let failed = match &r {
                Ok(row) => matches!(
                    row.record.status,
                    Status::Fail | Status::Error | Status::NonSmooth
                ),
                Err(e) => {
                    io_errors.push(format!("{}: {e}", cell.id));
                    true
                }
            };
            if failed && args.fail_fast {
                stop.store(true, Ordering::SeqCst);
            }
            if signal_after == Some(done) {
                // SAFETY: kill(2) on our own pid; the signal thread takes it.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
            if abort_after == Some(done) {
                crate::errln!("runner: {ABORT_AFTER_ENV}={done}: aborting");
                std::process::abort();
            }
        }
    });
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }

    // Cells never started (--fail-fast).
    let leftover: Vec<usize> = queue
        .lock()
        .map(|q| q.iter().copied().collect())
        .unwrap_or_default();
    for i in leftover {
        let cell = &cells[i];
        let mut o = Outcome::empty(Status::Skipped);
        o.reason = Some("not run: --fail-fast stopped the run after a failure".into());
        let mut rec = record_of(&exp, cell, &o);
        rec.not_run = true;
        let dir = evidence::cell_dir(&bundle, &cell.id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| RunFail::Io(format!("{}: {e}", dir.display())))?;
        evidence::write_atomic(&dir.join("result.json"), &evidence::json_bytes(&rec))
            .map_err(RunFail::Io)?;
    }

    // Reports.
    let mut rows: Vec<Row> = Vec::new();
    let mut missing = Vec::new();
    for c in &cells {
        match evidence::read_row(&evidence::cell_dir(&bundle, &c.id)) {
            Some(r) => rows.push(r),
            None => missing.push(c.id.clone()),
        }
    }
    // Cells of the bundle outside this plan (e.g. an earlier --only) stay reported.
    if let Ok(rd) = std::fs::read_dir(bundle.join("cells")) {
        let mut extra: Vec<String> = rd
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
            .filter(|n| !cells.iter().any(|c| &c.id == n))
            .collect();
        extra.sort();
        for n in extra {
            if let Some(r) = evidence::read_row(&evidence::cell_dir(&bundle, &n)) {
                rows.push(r);
            }
        }
    }
    let mut extra_failures: Vec<String> = io_errors
        .iter()
        .map(|e| format!("I/O error: {e}"))
        .collect();
    for m in &missing {
        extra_failures.push(format!("cell {m} has no result"));
    }
    let commands = std::fs::read_to_string(bundle.join("commands.txt")).unwrap_or_default();
    report::write_results(&bundle, &rows).map_err(RunFail::Io)?;
    report::write_junit(&bundle, exp.id(), &rows).map_err(RunFail::Io)?;
    let env_for_summary = std::fs::read_to_string(bundle.join("env.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(env);
    let mut notes = report::SummaryNotes::default();
    if let Some(r) = &shard_record {
        notes.lines.push(format!(
            "This is shard {} of experiment `{}`: {} of {} planned cell(s); combine the shards with `runner merge OUT SHARD...` (see `{}`).",
            r.shard,
            r.experiment,
            r.cells.len(),
            r.planned.len(),
            super::shard::SHARD_FILE
        ));
    }
    notes.plots = evidence::merge::write_sweep_plots(&bundle, &rows).map_err(RunFail::Io)?;
    notes
        .plots
        .extend(super::bench::write_scaling_plot(&bundle, &rows).map_err(RunFail::Io)?);
    report::write_summary_with(
        &bundle,
        &exp,
        &rows,
        &commands,
        &env_for_summary,
        &extra_failures,
        &notes,
    )
    .map_err(RunFail::Io)?;
    // The manifest supersedes the journal of finished cells.
    let _ = std::fs::remove_file(bundle.join(JOURNAL));
    evidence::write_manifest(&bundle).map_err(RunFail::Io)?;

    let t = report::Tally::of(&rows);
    let verdict = if extra_failures.is_empty() {
        t.verdict()
    } else {
        "FAIL"
    };
    crate::errln!(
        "runner: {verdict}: {} passed, {} failed, {} errored, {} skipped{}",
        t.pass,
        t.fail,
        t.error,
        t.skipped,
        if t.nonsmooth > 0 {
            format!(", {} non-smooth", t.nonsmooth)
        } else {
            String::new()
        }
    );
    crate::outln!("{}", bundle.display());
    Ok(if verdict == "PASS" { 0 } else { 1 })
}

#[cfg(test)]
mod gpu_assignment_tests {
    use super::gpu_for_cell;

    #[test]
    fn cells_spread_over_every_visible_gpu() {
        assert_eq!(gpu_for_cell(0, 0), None);
        let two: Vec<usize> = (0..16).map(|i| gpu_for_cell(i, 2).unwrap()).collect();
        assert_eq!(two.iter().filter(|g| **g == 0).count(), 8);
        assert_eq!(two.iter().filter(|g| **g == 1).count(), 8);
        assert!((0..16).all(|i| gpu_for_cell(i, 1) == Some(0)));
        let four: std::collections::BTreeSet<usize> =
            (0..16).map(|i| gpu_for_cell(i, 4).unwrap()).collect();
        assert_eq!(four.len(), 4);
    }
}
