//! The scheduler: run the planned cells in parallel (each concurrently
//! running cell gets its own rayon pool with a share of the cores) and hand
//! each finished cell to a [`CellSink`]. The scheduler writes nothing
//! itself: the sink (the evidence bundle, `crate::evidence::bundle`) gives
//! each cell its folder and records what it produced, as cargo-nextest
//! separates its runner from its reporter.
//!
//! A cell whose kind [`runs_alone`] (benchmark) never shares the machine:
//! it waits until the cells running finish, no other cell starts until it
//! is done, and it gets every core (its record says `ran_alone`).

use super::load::{load, Experiment};
use super::matrix::{self, Cell};
use super::probes;
use super::result::{CellRecord, Log, Outcome, Row, Timing, Verdict};
use super::InputError;
use crate::engine::Device;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, RwLock};
use std::time::Instant;

/// Test hook: abort the process (as if killed) after this many cells finish.
pub(crate) const ABORT_AFTER_ENV: &str = "RUNNER_TEST_ABORT_AFTER";
/// Test hook: send this process SIGTERM after this many cells finish.
pub(crate) const SIGNAL_AFTER_ENV: &str = "RUNNER_TEST_SIGNAL_AFTER";

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

/// A cell could not be given a folder or recorded (the message names the file).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SinkError(pub String);

/// Where finished cells go. Called from the worker threads
/// ([`open_cell`](CellSink::open_cell), [`record_cell`](CellSink::record_cell))
/// and, in the order cells finish, from the scheduling thread
/// ([`cell_done`](CellSink::cell_done)).
pub(crate) trait CellSink: Sync {
    /// A fresh, empty folder for the cell's probe files.
    fn open_cell(&self, cell: &Cell) -> Result<PathBuf, SinkError>;
    /// Record a finished cell (its log, timing and record) in its folder.
    fn record_cell(&self, dir: &Path, row: &Row, log: &str) -> Result<(), SinkError>;
    /// A cell is finished (`done` of `total`), or could not be recorded.
    /// An error here (e.g. a journal that cannot be written) is an I/O
    /// failure of the run.
    fn cell_done(
        &self,
        cell: &Cell,
        result: &Result<Row, SinkError>,
        done: usize,
        total: usize,
    ) -> Result<(), SinkError>;
}

/// The test hooks of a run (environment).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TestHooks {
    /// [`ABORT_AFTER_ENV`].
    pub abort_after: Option<usize>,
    /// [`SIGNAL_AFTER_ENV`].
    pub signal_after: Option<usize>,
}

impl TestHooks {
    /// Read the hooks; a malformed abort count is refused input.
    pub fn from_env() -> Result<TestHooks, InputError> {
        let signal_after = std::env::var(SIGNAL_AFTER_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok());
        let abort_after = match std::env::var(ABORT_AFTER_ENV) {
            Ok(v) => Some(
                v.trim()
                    .parse()
                    .map_err(|_| InputError(format!("{ABORT_AFTER_ENV}={v}: not a number")))?,
            ),
            Err(_) => None,
        };
        Ok(TestHooks {
            abort_after,
            signal_after,
        })
    }

    fn after(&self, done: usize) {
        if self.signal_after == Some(done) {
            // SAFETY: kill(2) on our own pid; the signal thread takes it.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        if self.abort_after == Some(done) {
            crate::errln!("runner: {ABORT_AFTER_ENV}={done}: aborting");
            std::process::abort();
        }
    }
}

/// Check `--require-device` values (cpu, cuda, cuda:N).
pub(crate) fn check_require_device(require: &[String]) -> Result<(), InputError> {
    for r in require {
        if r != "cuda" && r != "cpu" && r.parse::<Device>().is_err() {
            return Err(InputError(format!(
                "--require-device '{r}': unknown device; valid: cpu, cuda, cuda:N"
            )));
        }
    }
    Ok(())
}

/// Whether `--require-device` names the cell's device.
pub(crate) fn device_required(cell: &Cell, require: &[String]) -> bool {
    require.iter().any(|r| match (r.as_str(), cell.device) {
        ("cuda", d) => d.is_cuda(),
        ("cpu", Device::Cpu) => true,
        (s, d) => s == d.to_string(),
    })
}

/// The GPU ordinal a `device = "cuda"` cell runs on when `visible` GPUs are
/// visible: round-robin over the matrix order; None without a GPU.
pub(crate) fn gpu_for_cell(index: usize, visible: usize) -> Option<usize> {
    (visible > 0).then(|| index % visible)
}

/// Cells at once and rayon threads per cell: `requested` (default
/// min(cores, cells)), limited so that the cells running at once fit the
/// memory budget together (`biggest`: the largest cell's need, bytes).
pub(crate) fn jobs_and_threads(
    requested: Option<usize>,
    cells: usize,
    biggest: u64,
) -> (usize, usize) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let jobs = requested.unwrap_or_else(|| cores.min(cells.max(1))).max(1);
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
    (jobs, (cores / jobs).max(1))
}

/// Whether cells of this probe kind must have the machine to themselves:
/// benchmarks, whose timings another cell running at the same time would
/// inflate.
pub(crate) fn runs_alone(kind: &str) -> bool {
    kind == "benchmark"
}

/// What to run and how.
pub(crate) struct Schedule<'a> {
    /// The experiment.
    pub exp: &'a Experiment,
    /// The planned cells.
    pub cells: &'a [Cell],
    /// Positions in `cells` to run, in order.
    pub todo: &'a [usize],
    /// Cells at once.
    pub jobs: usize,
    /// Rayon threads per cell.
    pub threads: usize,
    /// Stop starting cells after the first failure.
    pub fail_fast: bool,
    /// `--require-device`: an absent device of these fails its cells.
    pub require_device: &'a [String],
    /// Test hooks.
    pub hooks: TestHooks,
}

/// What the scheduler leaves to its caller.
#[derive(Debug, Default)]
pub(crate) struct Scheduled {
    /// Cells never started (`--fail-fast`), positions in the plan.
    pub not_started: Vec<usize>,
    /// Cells that could not be recorded, and sink failures: `<id>: <why>`.
    pub io_errors: Vec<String>,
}

/// Run the cells, handing each to `sink`.
pub(crate) fn run_cells(s: &Schedule, sink: &dyn CellSink) -> Scheduled {
    let queue = Mutex::new(
        s.todo
            .iter()
            .copied()
            .collect::<std::collections::VecDeque<usize>>(),
    );
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<Row, SinkError>)>();
    let mut out = Scheduled::default();
    let mut done = 0usize;
    let total = s.todo.len();
    // Cells that run alone hold the gate exclusively, the others share it.
    let gate = RwLock::new(());
    // A cell that runs alone gets every core the jobs share.
    let alone_threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(s.threads);
    std::thread::scope(|scope| {
        for _ in 0..s.jobs.min(total.max(1)) {
            let tx = tx.clone();
            let (queue, stop, gate) = (&queue, &stop, &gate);
            scope.spawn(move || {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(s.threads)
                    .build()
                    .ok();
                let mut alone_pool: Option<rayon::ThreadPool> = None;
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                    let Some(i) = next else { break };
                    let cell = &s.cells[i];
                    let r = if runs_alone(cell.kind) {
                        let _alone = gate.write().unwrap_or_else(|e| e.into_inner());
                        if alone_pool.is_none() {
                            alone_pool = rayon::ThreadPoolBuilder::new()
                                .num_threads(alone_threads)
                                .build()
                                .ok();
                        }
                        let threads = if alone_pool.is_some() {
                            alone_threads
                        } else {
                            s.threads
                        };
                        let p = alone_pool.as_ref().or(pool.as_ref());
                        run_cell(s, cell, sink, p, threads, true)
                    } else {
                        let _shared = gate.read().unwrap_or_else(|e| e.into_inner());
                        run_cell(s, cell, sink, pool.as_ref(), s.threads, false)
                    };
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            done += 1;
            let cell = &s.cells[i];
            if let Err(e) = sink.cell_done(cell, &r, done, total) {
                out.io_errors.push(format!("{}: {e}", cell.id));
            }
            let failed = match &r {
                Ok(row) => row.record.status.is_failure(),
                Err(e) => {
                    out.io_errors.push(format!("{}: {e}", cell.id));
                    true
                }
            };
            if failed && s.fail_fast {
                stop.store(true, Ordering::SeqCst);
            }
            s.hooks.after(done);
        }
    });
    out.not_started = queue
        .lock()
        .map(|q| q.iter().copied().collect())
        .unwrap_or_default();
    out
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

/// A `device = "cuda"` cell on the GPU it is spread to (by cell index:
/// deterministic, so a re-run lands each cell on the same ordinal).
fn spread_over_gpus(cell: &Cell, log: &mut Log) -> Option<Cell> {
    let Device::Cuda(None) = cell.device else {
        return None;
    };
    let n = crate::engine::cuda::device_count();
    let k = gpu_for_cell(cell.index, n)?;
    let mut c = cell.clone();
    c.device = Device::Cuda(Some(k));
    log.line(format!("device cuda -> {} ({n} GPU(s) visible)", c.device));
    Some(c)
}

fn run_cell(
    s: &Schedule,
    cell: &Cell,
    sink: &dyn CellSink,
    pool: Option<&rayon::ThreadPool>,
    threads: usize,
    alone: bool,
) -> Result<Row, SinkError> {
    let dir = sink.open_cell(cell)?;
    let started = chrono::Utc::now();
    let t0 = Instant::now();
    let mut log = Log::new();
    log.line(format!(
        "braggrun {} cell {} ({threads} rayon threads)",
        crate::VERSION,
        cell.id,
    ));
    if alone {
        log.line("running alone: no other cell runs while this one does");
    }
    let spread = spread_over_gpus(cell, &mut log);
    let cell = spread.as_ref().unwrap_or(cell);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match pool {
        Some(p) => p.install(|| probes::run_probe(s.exp, cell, &dir, &mut log)),
        None => probes::run_probe(s.exp, cell, &dir, &mut log),
    }));
    let mut outcome = match res {
        Ok(o) => o,
        Err(p) => {
            let m = panic_message(p.as_ref());
            log.line(format!("ERROR: panic: {m}"));
            Outcome::error(format!("panic: {m}"))
        }
    };
    if outcome.status == Verdict::Skipped
        && outcome.unavailable
        && device_required(cell, s.require_device)
    {
        outcome.status = Verdict::Fail;
        outcome.reason = Some(format!(
            "--require-device {}: {}",
            cell.device,
            outcome.reason.clone().unwrap_or_default()
        ));
        log.line(format!("FAIL: {}", outcome.reason.as_deref().unwrap_or("")));
    }
    let seconds = t0.elapsed().as_secs_f64();
    log.line(format!("{} in {seconds:.3} s", outcome.status.as_str()));
    let mut record = CellRecord::of(s.exp.id(), cell, &outcome);
    record.ran_alone = alone;
    let row = Row {
        record,
        timing: Timing {
            seconds,
            started: started.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            finished: chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string(),
            engine: outcome.engine.clone(),
            threads,
        },
    };
    sink.record_cell(&dir, &row, &log.text)?;
    Ok(row)
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
