//! Retries and requeues of a sharded sweep, without a scheduler: the Slurm
//! script run by hand with SLURM_ARRAY_TASK_ID set (a task that runs again
//! resumes its own bundle), `runner merge --latest` (a shard found twice),
//! and a second merge into an existing output (refused, nothing verified).
//! The same on a real Slurm cluster: tests/slurm_sweep.rs.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[macro_use]
mod common;
use common::*;

/// 8 cells: two probes x two parameters x a model axis (N), 16x16 detector.
const SWEEP: &str = small_sweep!("sweep-retry", "small sweep for retry tests");

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_runner"))
}

fn runner_cmd() -> Command {
    let mut c = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNNER_") {
            c.env_remove(k);
        }
    }
    c
}

/// The Slurm script, run by hand in `dir`.
fn script(dir: &Path, file: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg(manifest_dir().join("examples/slurm/sweep.sbatch"))
        .current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNNER_") || k.starts_with("SLURM_") || k == "SWEEP_STEP" {
            c.env_remove(k);
        }
    }
    c.env("RUNNER", bin())
        .env("EXPERIMENT", file)
        .env("SHARDS_DIR", dir.join("shards"))
        .env("MERGED", dir.join("merged"));
    c
}

fn task(dir: &Path, file: &Path, k: usize, n: usize) -> Command {
    let mut c = script(dir, file);
    c.env("SLURM_ARRAY_TASK_ID", k.to_string())
        .env("SLURM_ARRAY_TASK_COUNT", n.to_string());
    c
}

fn full_run(tmp: &Path, file: &Path) -> (i32, PathBuf) {
    let (code, stdout, stderr) = out_of(
        runner_cmd()
            .arg("run")
            .arg(file)
            .arg("--out")
            .arg(tmp.join("full")),
    );
    assert!(code == 0 || code == 1, "{stdout}\n{stderr}");
    (code, last_line(&stdout))
}

#[test]
fn a_shard_task_that_runs_again_resumes_its_own_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = dir.join("sweep.toml");
    fs::write(&file, SWEEP).unwrap();

    // Task 2 of 3 dies after its first cell (as if the node went away).
    let (code, stdout, stderr) = out_of(task(dir, &file, 2, 3).env("RUNNER_TEST_ABORT_AFTER", "1"));
    assert_ne!(code, 0, "aborted: {stdout}\n{stderr}");
    let shard_dir = dir.join("shards/shard-2-of-3");
    let first = bundles_under(&shard_dir);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(!first[0].join("sha256.txt").exists(), "left incomplete");
    let done_before = results(&first[0]).len();
    assert!(done_before < 3, "{done_before} of 3 cells before the retry");

    // The same task again (a requeue or a retry): it resumes that bundle.
    let (code, stdout, stderr) = out_of(&mut task(dir, &file, 2, 3));
    assert!(code == 0 || code == 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("resuming"), "{stdout}");
    assert_eq!(bundles_under(&shard_dir), first, "no second bundle");
    assert!(first[0].join("sha256.txt").is_file());
    let cmds = fs::read_to_string(first[0].join("commands.txt")).unwrap();
    assert!(cmds.contains("# resumed"), "{cmds}");
    assert_eq!(results(&first[0]).len(), 3);

    // A third run of a complete shard changes nothing it had passed.
    let before = results(&first[0]);
    let (code, stdout, stderr) = out_of(&mut task(dir, &file, 2, 3));
    assert!(code == 0 || code == 1, "{stdout}\n{stderr}");
    assert_eq!(bundles_under(&shard_dir), first);
    assert_eq!(results(&first[0]), before);

    for k in [1, 3] {
        let (code, stdout, stderr) = out_of(&mut task(dir, &file, k, 3));
        assert!(code == 0 || code == 1, "task {k}: {stdout}\n{stderr}");
    }
    let (code, stdout, stderr) = out_of(script(dir, &file).env("SWEEP_STEP", "merge"));
    let (full_code, full) = full_run(dir, &file);
    assert_eq!(code, full_code, "merge: {stdout}\n{stderr}");
    assert!(stdout.contains("OK "), "verified: {stdout}");
    let merged = dir.join("merged");
    assert_eq!(results(&merged), results(&full), "cell for cell");
    let (code, stdout, stderr) = out_of(runner_cmd().arg("compare").arg(&full).arg(&merged));
    assert_eq!(code, 0, "compare: {stdout}\n{stderr}");

    // Merging again into the same output: said at once, exit 2, no verify.
    let manifest = fs::read(merged.join("sha256.txt")).unwrap();
    let (code, stdout, stderr) = out_of(script(dir, &file).env("SWEEP_STEP", "merge"));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains("not verified"), "{stderr}");
    assert!(
        !stdout.contains("OK "),
        "no verify of the old bundle: {stdout}"
    );
    assert_eq!(fs::read(merged.join("sha256.txt")).unwrap(), manifest);
}

#[test]
fn merge_latest_takes_the_newest_complete_bundle_of_each_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = dir.join("sweep.toml");
    fs::write(&file, SWEEP).unwrap();
    let shards = dir.join("shards");
    let run_shard = |k: usize, extra: &[(&str, &str)]| -> (i32, String) {
        let mut c = runner_cmd();
        c.arg("run")
            .arg(&file)
            .arg("--out")
            .arg(&shards)
            .args(["--shard", &format!("{k}/3")]);
        for (a, b) in extra {
            c.env(a, b);
        }
        let (code, stdout, stderr) = out_of(&mut c);
        (code, format!("{stdout}\n{stderr}"))
    };
    for k in 1..=3 {
        let (code, text) = run_shard(k, &[]);
        assert!(code == 0 || code == 1, "{text}");
    }
    // A retried shard 2 (a second complete bundle, newer) and a retried
    // shard 3 that died (an incomplete bundle, newer than the complete one).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, text) = run_shard(2, &[]);
    assert!(code == 0 || code == 1, "{text}");
    let (code, text) = run_shard(3, &[("RUNNER_TEST_ABORT_AFTER", "1")]);
    assert_ne!(code, 0, "{text}");
    let all = bundles_under(&shards);
    assert_eq!(all.len(), 5, "{all:?}");
    let of = |k: usize| -> Vec<PathBuf> {
        all.iter()
            .filter(|p| p.to_string_lossy().contains(&format!("shard-{k}-of-3")))
            .cloned()
            .collect()
    };
    let (s2, s3) = (of(2), of(3));
    assert_eq!((s2.len(), s3.len()), (2, 2));
    let newest2 = s2.iter().max().unwrap().clone();
    let complete3 = s3
        .iter()
        .find(|p| p.join("sha256.txt").is_file())
        .unwrap()
        .clone();

    // Without --latest: refused, with a hint.
    let merged = dir.join("merged");
    let (code, _, stderr) = out_of(runner_cmd().arg("merge").arg(&merged).arg(&shards));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("incomplete shard") || stderr.contains("duplicate shard"),
        "{stderr}"
    );
    assert!(!merged.exists());
    let (code, _, stderr) = out_of(
        runner_cmd()
            .arg("merge")
            .arg(&merged)
            .args(of(1))
            .args(&s2)
            .arg(&complete3),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("duplicate shard 2/3") && stderr.contains("--latest"),
        "{stderr}"
    );

    // With --latest: newest complete per shard, the rest named and left out.
    let (code, stdout, stderr) = out_of(
        runner_cmd()
            .arg("merge")
            .arg(&merged)
            .arg(&shards)
            .arg("--latest"),
    );
    let (full_code, full) = full_run(dir, &file);
    assert_eq!(code, full_code, "{stdout}\n{stderr}");
    assert_eq!(
        stderr.matches("--latest: shard").count(),
        2,
        "one older shard 2, one incomplete shard 3: {stderr}"
    );
    assert!(
        stderr.contains("(older)") && stderr.contains("(incomplete)"),
        "{stderr}"
    );
    let rec: Value =
        serde_json::from_str(&fs::read_to_string(merged.join("merge.json")).unwrap()).unwrap();
    let used: BTreeMap<String, String> = rec["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["shard"].as_str().unwrap().to_string(),
                s["bundle"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(used["2/3"], newest2.display().to_string());
    assert_eq!(used["3/3"], complete3.display().to_string());
    let (code, stdout, stderr) = out_of(runner_cmd().arg("verify").arg(&merged));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(results(&merged), results(&full));
}
