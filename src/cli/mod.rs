//! The `runner` command line: `validate`, `plan`, `run`, `merge`, `compare`, `verify`, `schema`
//! (experiments and evidence bundles) and `nanobragg` flags parsing.

pub mod nanobragg;
pub mod signals;
pub mod stream;

use crate::evidence;
use crate::experiment::{self, run::RunArgs};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

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
    Table,
    Json,
    /// `{"shard":["1/N",...]}` for a GitHub Actions strategy.matrix (fromJSON).
    Github,
    /// The `#SBATCH --array` range, `1-N`.
    Slurm,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompareFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check an experiment file (syntax, keys, values, every cell's model) without running it.
    Validate {
        file: PathBuf,
        /// Override a key: KEY=VALUE (VALUE parsed as TOML, else a string). Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long)]
        allow_large: bool,
    },
    /// Print the expanded matrix: one row per cell with its stable id.
    Plan {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: PlanFormat,
        /// Shards for `--format github|slurm` (capped by the cell count).
        #[arg(long, default_value_t = 4)]
        shards: usize,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long = "only", value_name = "KEY=VALUE")]
        only: Vec<String>,
        #[arg(long)]
        allow_large: bool,
    },
    /// Run every cell and leave an evidence bundle; the last stdout line is its path.
    Run {
        file: PathBuf,
        /// Bundles go to OUT/<experiment id>/<UTC timestamp>/.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// Run only cells with this axis value (id, probe, device, dtype, param, roi, model.<key>). Repeatable.
        #[arg(long = "only", value_name = "KEY=VALUE")]
        only: Vec<String>,
        /// Cells run at once (default: min(cores, cells)); each gets cores/jobs rayon threads.
        #[arg(long)]
        jobs: Option<usize>,
        /// Stop starting cells after the first FAIL or ERROR.
        #[arg(long)]
        fail_fast: bool,
        /// Finish an interrupted bundle: run only its missing or failed cells.
        #[arg(long, value_name = "BUNDLE")]
        resume: Option<PathBuf>,
        /// A cell on this device (cuda, cpu, cuda:N) that is skipped for lack of the device fails.
        #[arg(long, value_name = "DEVICE")]
        require_device: Vec<String>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Allow more than 256 cells.
        #[arg(long)]
        allow_large: bool,
        /// Run only shard K of N (1-based): the cells at plan positions i with i % N == K-1.
        #[arg(long, value_name = "K/N")]
        shard: Option<experiment::shard::Shard>,
    },
    /// Combine the shard bundles of one experiment into one bundle at OUT
    /// (a SHARD folder may also hold several shard bundles, e.g. downloaded artifacts).
    Merge {
        out: PathBuf,
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
        a: PathBuf,
        b: PathBuf,
        /// A value moved when |b - a| > atol + rtol |a|.
        #[arg(long, default_value_t = 1e-9)]
        rtol: f64,
        #[arg(long, default_value_t = 0.0)]
        atol: f64,
        #[arg(long, value_enum, default_value = "table")]
        format: CompareFormat,
    },
    /// Recompute every digest of a bundle; report missing, modified and unlisted files.
    Verify { bundle: PathBuf },
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

/// Entry point; returns the process exit code.
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

pub fn main() -> i32 {
    signals::install();
    init_logging();
    let code = dispatch();
    stream::exit_code(code)
}

fn dispatch() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let text = e.render().to_string();
            if e.use_stderr() {
                crate::errln!("{}", text.trim_end());
            } else {
                crate::outln!("{}", text.trim_end());
            }
            return code;
        }
    };
    if let Err(e) = crate::physics::budget::check_env() {
        crate::errln!("error: {e}");
        return 2;
    }
    if let Some(m) = &cli.memory_limit {
        match crate::physics::budget::parse_size(m) {
            Ok(b) => crate::physics::budget::set_limit(b),
            Err(e) => {
                crate::errln!("error: --memory-limit: {e}");
                return 2;
            }
        }
    }
    match cli.cmd {
        Cmd::Validate {
            file,
            sets,
            allow_large,
        } => match experiment::run::load_and_plan(&file, &sets, &[], allow_large) {
            Ok((exp, cells)) => {
                crate::outln!(
                    "{}: OK: experiment '{}', {} cell(s)",
                    file.display(),
                    exp.id(),
                    cells.len()
                );
                0
            }
            Err(e) => {
                crate::errln!("error: {e}");
                2
            }
        },
        Cmd::Plan {
            file,
            format,
            shards,
            sets,
            only,
            allow_large,
        } => match experiment::shard::check_shards(shards)
            .and_then(|_| experiment::run::load_and_plan(&file, &sets, &only, allow_large))
        {
            Ok((_, cells)) => {
                match format {
                    PlanFormat::Github => {
                        crate::outln!("{}", experiment::shard::github_matrix(shards, cells.len()))
                    }
                    PlanFormat::Slurm => {
                        crate::outln!("{}", experiment::shard::slurm_range(shards, cells.len()))
                    }
                    _ => print_plan(&cells, format),
                }
                0
            }
            Err(e) => {
                crate::errln!("error: {e}");
                2
            }
        },
        Cmd::Run {
            file,
            out,
            only,
            jobs,
            fail_fast,
            resume,
            require_device,
            sets,
            allow_large,
            shard,
        } => experiment::run::run(&RunArgs {
            file,
            out,
            only,
            jobs,
            fail_fast,
            resume,
            require_device,
            sets,
            allow_large,
            shard,
            argv,
        }),
        Cmd::Merge {
            out,
            shards,
            allow_partial,
            latest,
        } => evidence::merge::merge(&evidence::merge::MergeArgs {
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
        } => evidence::compare::compare(
            &a,
            &b,
            rtol,
            atol,
            match format {
                CompareFormat::Table => evidence::compare::Format::Table,
                CompareFormat::Json => evidence::compare::Format::Json,
                CompareFormat::Markdown => evidence::compare::Format::Markdown,
            },
        ),
        Cmd::Verify { bundle } => match evidence::verify(&bundle) {
            Ok(rep) => {
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
                    0
                } else {
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
                    1
                }
            }
            Err(e) => {
                crate::errln!("error: {e}");
                2
            }
        },
        Cmd::Schema => {
            crate::out!("{}", experiment::schema_json());
            0
        }
        Cmd::Env { json } => {
            let threads = rayon::current_num_threads();
            let env = evidence::env::collect(1, threads);
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&env).unwrap_or_default());
            } else {
                print_env(&env);
            }
            0
        }
        Cmd::Nanobragg { args } => nanobragg::run(&args),
    }
}
