//! `runner run`: wires the layers together. The experiment is loaded and
//! planned (`crate::experiment`), the bundle created or reopened for
//! `--resume` (`crate::evidence`), the scheduler runs the cells into the
//! bundle's sink, and the bundle is finished; the verdict decides the exit
//! code in [`super`].

use crate::evidence::bundle::{self, BundleSink, Finish, PlanRecord, RunError};
use crate::evidence::resume::{self, ResumeRequest};
use crate::evidence::{self, CellRecord};
use crate::experiment::load::Experiment;
use crate::experiment::matrix::Cell;
use crate::experiment::result::Verdict;
use crate::experiment::run::{self as scheduler, Schedule, Scheduled, TestHooks};
use crate::experiment::shard::ShardRecord;
use crate::experiment::{shard, InputError};
use std::path::PathBuf;

/// The arguments of `runner run`: the command line's flags (declared here
/// once, for clap) and the command line as given.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct RunArgs {
    /// The experiment file (TOML; docs/experiments.md describes it).
    pub file: PathBuf,
    /// Bundles go to OUT/<experiment id>/<UTC timestamp>/.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Keep only cells with this axis value (id, kind, probe, device, dtype, param, roi,
    /// model.<key>); repeating a key keeps either value. Repeatable.
    #[arg(long = "only", value_name = "KEY=VALUE")]
    pub only: Vec<String>,
    /// Cells run at once (default: min(cores, cells)); each gets cores/jobs rayon threads.
    /// Benchmark cells always run alone, on every core.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Stop starting cells after the first FAIL or ERROR.
    #[arg(long)]
    pub fail_fast: bool,
    /// Finish an interrupted bundle: run only its missing or failed cells.
    #[arg(long, value_name = "BUNDLE")]
    pub resume: Option<PathBuf>,
    /// A cell on this device (cuda, cpu, cuda:N) that is skipped for lack of the device fails.
    #[arg(long, value_name = "DEVICE")]
    pub require_device: Vec<String>,
    /// Override a key of the experiment: KEY=VALUE, KEY dotted (model.detector.distance_mm),
    /// VALUE parsed as TOML, else a string; `matrix.model.<key>` sets a model axis.
    /// Repeatable; RUNNER_* variables override it (docs/experiments.md).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Allow more than 256 cells (at most 100000).
    #[arg(long)]
    pub allow_large: bool,
    /// Run only shard K of N (1-based): the cells at plan positions i with i % N == K-1.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<shard::Shard>,
    /// The command line as given (commands.txt); not a flag.
    #[arg(skip)]
    pub argv: Vec<String>,
}

/// Run an experiment into a new bundle (or `--resume` one); the bundle's
/// verdict.
pub(crate) fn run(args: &RunArgs) -> Result<Verdict, RunError> {
    scheduler::check_require_device(&args.require_device)?;
    if args.jobs == Some(0) {
        return Err(InputError("--jobs 0: must be at least 1".into()).into());
    }
    let hooks = TestHooks::from_env()?;
    // --resume: the bundle first (canonical path, recorded --only).
    let resume = match &args.resume {
        Some(b) => Some(resume::open_for_resume(b)?),
        None => None,
    };
    let only = match &resume {
        Some(r) => resume::resumed_only(r, &args.only)?,
        None => args.only.clone(),
    };
    let (exp, cells) = scheduler::load_and_plan(&args.file, &args.sets, &only, args.allow_large)?;
    let shard_record = args.shard.map(|s| shard::record(&exp.resolved, &cells, s));
    let cells = match args.shard {
        Some(s) => shard::select(cells, s),
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

    // The bundle, locked until the process ends.
    let resolved_text = exp.resolved_toml();
    let (bundle, _lock, todo) = open_bundle(
        args,
        resume.as_ref(),
        &exp,
        &cells,
        shard_record.as_ref(),
        &resolved_text,
    )?;

    let biggest = todo.iter().map(|i| cells[*i].mem_bytes).max().unwrap_or(0);
    let (jobs, threads) = scheduler::jobs_and_threads(args.jobs, todo.len(), biggest);
    crate::platform::signals::set_note(Some(format!(
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
    evidence::write_atomic(&bundle.join(&env_name), &evidence::json_bytes(&env))?;

    crate::errln!(
        "runner: {} cell(s) of {} to run, {} job(s) x {} thread(s); bundle {}",
        todo.len(),
        exp.id(),
        jobs,
        threads,
        bundle.display()
    );
    let sink = BundleSink::new(&bundle, todo.len());
    let scheduled = scheduler::run_cells(
        &Schedule {
            exp: &exp,
            cells: &cells,
            todo: &todo,
            jobs,
            threads,
            fail_fast: args.fail_fast,
            require_device: &args.require_device,
            hooks,
        },
        &sink,
    );
    sink.finish();
    // Cells never started (--fail-fast).
    for i in &scheduled.not_started {
        bundle::write_not_run(&bundle, &CellRecord::not_run(exp.id(), &cells[*i]))?;
    }

    let verdict = report(
        &bundle,
        &exp,
        &cells,
        shard_record.as_ref(),
        &scheduled,
        env,
    )?;
    crate::outln!("{}", bundle.display());
    Ok(verdict)
}

/// A new bundle, or the bundle of `--resume` checked and prepared: its
/// path, its lock and the positions of the cells to run.
fn open_bundle(
    args: &RunArgs,
    resume: Option<&resume::Resume>,
    exp: &Experiment,
    cells: &[Cell],
    shard_record: Option<&ShardRecord>,
    resolved_text: &str,
) -> Result<(PathBuf, std::fs::File, Vec<usize>), RunError> {
    Ok(match resume {
        Some(r) => {
            let (lock, todo) = resume::resume_bundle(
                r,
                &ResumeRequest {
                    file: &args.file,
                    resolved_text,
                    shard: shard_record,
                    cells,
                    require_device: &args.require_device,
                    argv: &args.argv,
                },
            )?;
            (r.dir.clone(), lock, todo)
        }
        None => {
            let suffix = args.shard.map(|s| s.suffix());
            let bundle = bundle::create_bundle(&args.out, exp.id(), suffix.as_deref())?;
            let lock = bundle::lock_bundle(&bundle)?;
            bundle::write_new_bundle(
                &bundle,
                resolved_text,
                &args.argv,
                shard_record,
                &PlanRecord {
                    only: args.only.clone(),
                    cells: cells.iter().map(|c| c.id.clone()).collect(),
                },
            )?;
            (bundle, lock, (0..cells.len()).collect::<Vec<usize>>())
        }
    })
}

/// The reports and the manifest of a run's bundle, and the verdict on stderr.
fn report(
    bundle: &std::path::Path,
    exp: &Experiment,
    cells: &[Cell],
    shard_record: Option<&ShardRecord>,
    scheduled: &Scheduled,
    env: serde_json::Value,
) -> Result<Verdict, RunError> {
    // Reports; cells of the bundle outside this plan (e.g. an earlier
    // --only) stay reported.
    let planned: Vec<String> = cells.iter().map(|c| c.id.clone()).collect();
    let (rows, missing) = bundle::collect_rows(bundle, &planned, true);
    let mut extra_failures: Vec<String> = scheduled
        .io_errors
        .iter()
        .map(|e| format!("I/O error: {e}"))
        .collect();
    for m in &missing {
        extra_failures.push(format!("cell {m} has no result"));
    }
    let commands = std::fs::read_to_string(bundle.join("commands.txt")).unwrap_or_default();
    let env_for_summary = std::fs::read_to_string(bundle.join("env.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(env);
    let notes = shard_record
        .iter()
        .map(|r| {
            format!(
                "This is shard {} of experiment `{}`: {} of {} planned cell(s); combine the shards with `runner merge OUT SHARD...` (see `{}`).",
                r.shard,
                r.experiment,
                r.cells.len(),
                r.planned.len(),
                shard::SHARD_FILE
            )
        })
        .collect();
    let t = bundle::finish_bundle(
        bundle,
        &Finish {
            exp,
            rows: &rows,
            commands: &commands,
            env: &env_for_summary,
            extra_failures: &extra_failures,
            notes,
        },
    )?;
    let verdict = t.overall(&extra_failures);
    crate::errln!(
        "runner: {}: {} passed, {} failed, {} errored, {} skipped{}",
        evidence::report::headline(verdict, &rows),
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
    Ok(verdict)
}
