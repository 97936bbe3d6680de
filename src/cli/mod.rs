//! The `runner` command line: `validate`, `plan`, `run`, `merge`, `compare`, `verify`, `schema`
//! (experiments and evidence bundles) and `nanobragg` flags parsing.
//!
//! The top layer: it wires the layers below together and decides every
//! exit code, in one place ([`exit_code`]): 0 pass, 1 fail (a FAIL/ERROR
//! verdict, a bundle that does not verify, an I/O error), 2 refused input.

pub mod nanobragg;
mod run;

use crate::evidence::compare::CompareError;
use crate::evidence::merge::MergeError;
use crate::evidence::{self, bundle::RunError, VerifyError};
use crate::experiment::result::Verdict;
use crate::experiment::{self, InputError};
use crate::platform::{signals, stream};
use clap::{Parser, Subcommand, ValueEnum};
use run::RunArgs;
use std::path::PathBuf;

/// The `runner` command line as clap sees it (for introspection: every
/// subcommand and argument, with its help).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// How a command ended.
#[derive(Debug)]
enum Ended {
    /// It did its work and found nothing wrong: exit 0.
    Passed,
    /// It did its work and found something wrong (a FAIL verdict, a
    /// regression, a bundle that does not verify): exit 1.
    Failed,
    /// Refused input, nothing run or written: exit 2 (the message goes to stderr).
    Refused(String),
    /// An I/O failure while working: exit 1 (the message goes to stderr).
    Broke(String),
    /// The command printed its own outcome (clap's help and usage errors,
    /// `runner nanobragg`): exit with this code.
    Printed(i32),
}

/// The one error-to-exit-code mapping.
fn exit_code(e: &Ended) -> i32 {
    match e {
        Ended::Passed => 0,
        Ended::Failed | Ended::Broke(_) => 1,
        Ended::Refused(_) => 2,
        Ended::Printed(code) => *code,
    }
}

impl Ended {
    fn of_verdict(v: Verdict) -> Ended {
        if v == Verdict::Pass {
            Ended::Passed
        } else {
            Ended::Failed
        }
    }
    fn prefixed(self, prefix: &str) -> Ended {
        match self {
            Ended::Refused(m) => Ended::Refused(format!("{prefix}{m}")),
            Ended::Broke(m) => Ended::Broke(format!("{prefix}{m}")),
            other => other,
        }
    }
}

impl From<InputError> for Ended {
    fn from(e: InputError) -> Self {
        Ended::Refused(e.0)
    }
}

impl From<RunError> for Ended {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Input(e) => Ended::Refused(e.0),
            RunError::Io(e) => Ended::Broke(e.0),
        }
    }
}

impl From<MergeError> for Ended {
    fn from(e: MergeError) -> Self {
        match e {
            MergeError::Refused(m) => Ended::Refused(m),
            MergeError::Io(e) => Ended::Broke(e.0),
        }
    }
}

impl From<CompareError> for Ended {
    fn from(e: CompareError) -> Self {
        Ended::Refused(e.to_string())
    }
}

impl From<VerifyError> for Ended {
    fn from(e: VerifyError) -> Self {
        Ended::Refused(e.to_string())
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "runner",
    version,
    about = "Differentiable nanoBragg-class simulator and experiment runner with verifiable evidence bundles"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Memory a render may need (e.g. 8G, 512M; default 1/2 of MemAvailable,
    /// or BRAGGRUN_MEMORY_LIMIT): larger configurations are refused (exit 2).
    #[arg(long, global = true, value_name = "SIZE")]
    memory_limit: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlanFormat {
    /// Aligned columns, one row per cell.
    Table,
    /// The cells as a JSON list.
    Json,
    /// `{"shard":["1/N",...]}` for a GitHub Actions strategy.matrix (fromJSON).
    Github,
    /// The `#SBATCH --array` range, `1-N`.
    Slurm,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompareFormat {
    /// Aligned columns.
    Table,
    /// Every cell and value as JSON (whatever --all).
    Json,
    /// A Markdown report.
    Markdown,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check an experiment file (syntax, keys, values, every cell's model) without running it.
    Validate {
        /// The experiment file (TOML; docs/experiments.md describes it).
        file: PathBuf,
        /// Override a key of the experiment: KEY=VALUE, KEY dotted (model.detector.distance_mm),
        /// VALUE parsed as TOML, else a string; `matrix.model.<key>` sets a model axis.
        /// Repeatable; RUNNER_* variables override it (docs/experiments.md).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Allow more than 256 cells (at most 100000).
        #[arg(long)]
        allow_large: bool,
    },
    /// Print the expanded matrix: one row per cell with its stable id.
    Plan {
        /// The experiment file (TOML; docs/experiments.md describes it).
        file: PathBuf,
        /// How to print the plan.
        #[arg(long, value_enum, default_value = "table")]
        format: PlanFormat,
        /// Shards for `--format github|slurm` (capped by the cell count).
        #[arg(long, default_value_t = 4)]
        shards: usize,
        /// Override a key of the experiment: KEY=VALUE, KEY dotted (model.detector.distance_mm),
        /// VALUE parsed as TOML, else a string; `matrix.model.<key>` sets a model axis.
        /// Repeatable; RUNNER_* variables override it (docs/experiments.md).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Keep only cells with this axis value (id, kind, probe, device, dtype, param, roi,
        /// model.<key>); repeating a key keeps either value. Repeatable.
        #[arg(long = "only", value_name = "KEY=VALUE")]
        only: Vec<String>,
        /// Allow more than 256 cells (at most 100000).
        #[arg(long)]
        allow_large: bool,
    },
    /// Run every cell and leave an evidence bundle; the last stdout line is its path.
    Run(RunArgs),
    /// Combine the shard bundles of one experiment into one bundle at OUT
    /// (a SHARD folder may also hold several shard bundles, e.g. downloaded artifacts).
    Merge {
        /// The merged bundle to create (must not exist).
        out: PathBuf,
        /// Shard bundles, or folders to search for them.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Merge even when planned cells are missing (listed in stdout and summary.md).
        #[arg(long)]
        allow_partial: bool,
        /// A shard found more than once (a retried or requeued task): take its newest complete bundle.
        #[arg(long)]
        latest: bool,
    },
    /// Compare two bundles of one experiment cell by cell; exit 1 on a regression.
    Compare {
        /// The earlier (reference) bundle.
        a: PathBuf,
        /// The later bundle, checked against A.
        b: PathBuf,
        /// Relative tolerance: a value moved when |b - a| > atol + rtol |a|.
        #[arg(long, default_value_t = 1e-9)]
        rtol: f64,
        /// Absolute tolerance: a value moved when |b - a| > atol + rtol |a|.
        #[arg(long, default_value_t = 0.0)]
        atol: f64,
        /// How to print the comparison.
        #[arg(long, value_enum, default_value = "table")]
        format: CompareFormat,
        /// List every cell and value, not only those that changed.
        #[arg(long)]
        all: bool,
    },
    /// Recompute every digest of a bundle; report missing, modified and unlisted files.
    Verify {
        /// The bundle folder (the one holding sha256.txt).
        bundle: PathBuf,
    },
    /// Print the JSON schema of experiment files.
    Schema,
    /// Describe this machine as a bundle's env.json does: OS, CPU, memory, toolchain, GPUs.
    Env {
        /// Print the JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// nanoBragg.c's command line: `runner nanobragg -cell ... -floatfile out.bin`
    /// (`runner nanobragg -h` lists the flags).
    #[command(disable_help_flag = true)]
    Nanobragg {
        /// nanoBragg flags, passed through unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

fn print_plan(cells: &[experiment::matrix::Cell], format: PlanFormat) {
    match format {
        PlanFormat::Json => {
            let rows: Vec<_> = cells.iter().map(|c| c.plan_row()).collect();
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        }
        PlanFormat::Table | PlanFormat::Github | PlanFormat::Slurm => {
            let mut lines = vec![[
                "#".to_string(),
                "id".to_string(),
                "probe".to_string(),
                "device".to_string(),
                "dtype".to_string(),
                "param".to_string(),
                "roi".to_string(),
                "model axes".to_string(),
            ]];
            for c in cells {
                let model: Vec<String> = c
                    .values
                    .iter()
                    .filter(|(k, _)| k.starts_with("model."))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let r = c.effective_roi;
                lines.push([
                    c.index.to_string(),
                    c.id.clone(),
                    format!("{} ({})", c.probe_name, c.kind),
                    c.device.to_string(),
                    c.dtype.to_string(),
                    c.param
                        .map(|p| p.name().to_string())
                        .unwrap_or_else(|| "-".into()),
                    format!("{} {} {} {}", r[0], r[1], r[2], r[3]),
                    model.join(" "),
                ]);
            }
            let mut w = [0usize; 8];
            for l in &lines {
                for (i, s) in l.iter().enumerate() {
                    w[i] = w[i].max(s.chars().count());
                }
            }
            for l in &lines {
                let mut out = String::new();
                for (i, s) in l.iter().enumerate() {
                    out.push_str(&format!("{:<width$}  ", s, width = w[i]));
                }
                crate::outln!("{}", out.trim_end());
            }
            crate::outln!("{} cell(s)", cells.len());
        }
    }
}

fn print_env(env: &serde_json::Value) {
    let get = |k: &str| {
        env.get(k).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    for key in [
        "hostname",
        "os",
        "kernel",
        "cpu_model",
        "cores",
        "memory_total_kib",
        "rustc",
        "braggrun_version",
        "build_git_commit",
        "git_commit",
    ] {
        if let Some(v) = get(key) {
            crate::outln!("{key:<18} {v}");
        }
    }
    match crate::engine::cuda::describe_devices() {
        Ok(lines) if !lines.is_empty() => {
            for l in lines {
                crate::outln!("{:<18} {l}", "gpu");
            }
        }
        Ok(_) => crate::outln!("{:<18} none: no CUDA device visible", "gpu"),
        Err(why) => crate::outln!("{:<18} none: {why}", "gpu"),
    }
}

/// Diagnostics on stderr, filtered by RUST_LOG (e.g. `RUST_LOG=braggrun=debug`
/// for the CUDA engine's per-render timings); silent by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| stream::SafeStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    signals::install();
    init_logging();
    let ended = dispatch();
    match &ended {
        Ended::Refused(m) | Ended::Broke(m) => crate::errln!("error: {m}"),
        _ => {}
    }
    stream::exit_code(exit_code(&ended))
}

/// Parse the command line; print clap's help, version or usage error.
fn parse(argv: &[String]) -> Result<Cli, Ended> {
    Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        if e.use_stderr() {
            crate::errln!("{}", text.trim_end());
            Ended::Printed(2)
        } else {
            crate::outln!("{}", text.trim_end());
            Ended::Printed(0)
        }
    })
}

/// The memory budget: BRAGGRUN_MEMORY_LIMIT, then --memory-limit.
fn set_memory_limit(memory_limit: Option<&str>) -> Result<(), Ended> {
    crate::physics::budget::check_env().map_err(|e| Ended::Refused(e.to_string()))?;
    if let Some(m) = memory_limit {
        let b = crate::physics::budget::parse_size(m)
            .map_err(|e| Ended::Refused(format!("--memory-limit: {e}")))?;
        crate::physics::budget::set_limit(b);
    }
    Ok(())
}

fn dispatch() -> Ended {
    let argv: Vec<String> = std::env::args().collect();
    let cli = match parse(&argv) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = set_memory_limit(cli.memory_limit.as_deref()) {
        return e;
    }
    let r = match cli.cmd {
        Cmd::Validate {
            file,
            sets,
            allow_large,
        } => validate(&file, &sets, allow_large),
        Cmd::Plan {
            file,
            format,
            shards,
            sets,
            only,
            allow_large,
        } => plan(&file, format, shards, &sets, &only, allow_large),
        Cmd::Run(args) => run::run(&RunArgs { argv, ..args })
            .map(Ended::of_verdict)
            .map_err(Ended::from),
        Cmd::Merge {
            out,
            shards,
            allow_partial,
            latest,
        } => merge(evidence::merge::MergeArgs {
            out,
            shards,
            allow_partial,
            latest,
            argv,
        }),
        Cmd::Compare {
            a,
            b,
            rtol,
            atol,
            format,
            all,
        } => compare(&a, &b, rtol, atol, format, all),
        Cmd::Verify { bundle } => verify(&bundle),
        Cmd::Schema => {
            crate::out!("{}", experiment::schema_json());
            Ok(Ended::Passed)
        }
        Cmd::Env { json } => {
            let threads = rayon::current_num_threads();
            let env = evidence::env::collect(1, threads);
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&env).unwrap_or_default());
            } else {
                print_env(&env);
            }
            Ok(Ended::Passed)
        }
        Cmd::Nanobragg { args } => Ok(match nanobragg::run(&args) {
            0 => Ended::Passed,
            1 => Ended::Failed,
            code => Ended::Printed(code),
        }),
    };
    r.unwrap_or_else(|e| e)
}

fn validate(file: &std::path::Path, sets: &[String], allow_large: bool) -> Result<Ended, Ended> {
    let (exp, cells) = experiment::run::load_and_plan(file, sets, &[], allow_large)?;
    crate::outln!(
        "{}: OK: experiment '{}', {} cell(s)",
        file.display(),
        exp.id(),
        cells.len()
    );
    Ok(Ended::Passed)
}

fn plan(
    file: &std::path::Path,
    format: PlanFormat,
    shards: usize,
    sets: &[String],
    only: &[String],
    allow_large: bool,
) -> Result<Ended, Ended> {
    experiment::shard::check_shards(shards)?;
    let (_, cells) = experiment::run::load_and_plan(file, sets, only, allow_large)?;
    match format {
        PlanFormat::Github => {
            crate::outln!("{}", experiment::shard::github_matrix(shards, cells.len()))
        }
        PlanFormat::Slurm => {
            crate::outln!("{}", experiment::shard::slurm_range(shards, cells.len()))
        }
        _ => print_plan(&cells, format),
    }
    Ok(Ended::Passed)
}

fn merge(args: evidence::merge::MergeArgs) -> Result<Ended, Ended> {
    let m = evidence::merge::merge(&args).map_err(|e| Ended::from(e).prefixed("runner merge: "))?;
    if !m.missing.is_empty() {
        crate::outln!(
            "partial merge: {} of {} planned cell(s) missing: {}",
            m.missing.len(),
            m.planned,
            evidence::merge::describe_missing(&m.missing)
        );
    }
    let t = m.tally;
    crate::errln!(
        "runner merge: {}: {} shard(s), {} cell(s): {} passed, {} failed, {} errored, {} skipped",
        m.verdict,
        m.shards,
        m.cells,
        t.pass,
        t.fail,
        t.error,
        t.skipped
    );
    crate::outln!("{}", m.out.display());
    Ok(Ended::of_verdict(m.verdict))
}

fn compare(
    a: &std::path::Path,
    b: &std::path::Path,
    rtol: f64,
    atol: f64,
    format: CompareFormat,
    all: bool,
) -> Result<Ended, Ended> {
    use evidence::compare::{compare_bundles, render, Format};
    let c = compare_bundles(a, b, rtol, atol)
        .map_err(|e| Ended::from(e).prefixed("runner compare: "))?;
    let format = match format {
        CompareFormat::Table => Format::Table,
        CompareFormat::Json => Format::Json,
        CompareFormat::Markdown => Format::Markdown,
    };
    crate::out!("{}", render(&c, format, all));
    Ok(if c.regressions > 0 {
        Ended::Failed
    } else {
        Ended::Passed
    })
}

fn verify(bundle: &std::path::Path) -> Result<Ended, Ended> {
    let rep = evidence::verify(bundle)?;
    for f in &rep.missing {
        crate::outln!("MISSING   {f}");
    }
    for f in &rep.modified {
        crate::outln!("MODIFIED  {f}");
    }
    for f in &rep.unlisted {
        crate::outln!("UNLISTED  {f}");
    }
    for f in &rep.malformed {
        crate::outln!("MALFORMED {f}");
    }
    for f in &rep.invalid {
        crate::outln!("INVALID   {f}");
    }
    if rep.incomplete {
        crate::outln!("INCOMPLETE {}: no {} (the run did not finish; `runner run FILE --resume {}` completes it)", bundle.display(), evidence::MANIFEST, bundle.display());
    }
    if rep.ok() {
        crate::outln!("OK {}: {} file(s) verified", bundle.display(), rep.checked);
        return Ok(Ended::Passed);
    }
    crate::outln!(
        "FAILED {}: {} missing, {} modified, {} unlisted, {} malformed, {} structure problem(s){}",
        bundle.display(),
        rep.missing.len(),
        rep.modified.len(),
        rep.unlisted.len(),
        rep.malformed.len(),
        rep.invalid.len(),
        if rep.incomplete { ", incomplete" } else { "" }
    );
    Ok(Ended::Failed)
}
