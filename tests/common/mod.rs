//! Helpers shared by the runner's integration tests.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::PathBuf;

/// The built `runner`, with no RUNNER_* overrides from the caller (hermetic).
pub fn runner() -> Command {
    let mut c = Command::cargo_bin("runner").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNNER_") {
            c.env_remove(k);
        }
    }
    c
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
