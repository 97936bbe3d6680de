//! The experiment runner: declarative TOML experiments (`config`, `load`),
//! matrix expansion (`matrix`), probes (`probes`) and the parallel run that
//! leaves an evidence bundle (`run`, with `crate::evidence`).

pub mod config;
pub mod load;
pub mod matrix;
pub mod probes;
pub mod run;

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
