//! The experiment runner: declarative TOML experiments (`config`, `load`),
//! matrix expansion (`matrix`), probes (`probes`, one file each), the
//! results they produce (`result`) and the parallel scheduler (`run`) that
//! hands each finished cell to a sink (`crate::evidence` writes the bundle).
//!
//! Layers, lowest first: built-in defaults (`matrix.device = ["cpu"]`,
//! `matrix.dtype = ["float64"]`) < the file < `--set key=value` (value parsed
//! as TOML, else a string; `matrix.model.<path>` names a model axis) <
//! `RUNNER_<SECTION>__<KEY>` environment variables (double underscore nests;
//! variables without one, like the test hooks, are not configuration).
//!
//! Cells are the Cartesian product of the probes (by `name`, default the
//! kind) and the matrix axes in the order probe, device, dtype, param, roi,
//! `model.*` (sorted), then GitHub Actions `exclude` and `include`. A cell id
//! is its axis values joined by '-' (roi as `roi_f0_f1_s0_s1`, model axes as
//! `<last key>_<value>`), sanitised to `[A-Za-z0-9._-]`; values an include adds
//! to an existing combination are not part of its id. A combination may set
//! `"model.nanobragg_args"`: its flags then replace `[model]` for that cell.
//!
//! Test hooks (environment): `RUNNER_TEST_ABORT_AFTER=N` aborts the process
//! after N cells finish (a killed run); `RUNNER_TEST_PANIC_CELL=<id>` makes
//! that cell panic.

pub mod config;
pub mod load;
pub mod matrix;
pub(crate) mod metrics;
pub(crate) mod nanobragg_flags;
pub mod probes;
pub(crate) mod result;
pub mod run;
pub(crate) mod shard;

/// Unusable input: exit code 2, nothing written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// The JSON schema of an experiment file.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(config::RawExperiment);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}
