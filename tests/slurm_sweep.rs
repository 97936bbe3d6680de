//! A sweep on a real Slurm cluster: scripts/slurm-local.sh starts munged,
//! slurmctld and slurmd on this machine (installing the Debian packages when
//! missing), the README's submit lines run as written (an array of shard
//! tasks, then the dependent merge job), one task is requeued with `scontrol
//! requeue` while it runs, and the merged bundle must verify and equal an
//! unsharded run cell for cell (`runner compare`: no change).
//!
//! The requeued task is made to be mid-run deterministically: a stand-in for
//! target/release/runner runs the real binary, except that the first attempt
//! of array task 2 stops after one cell (RUNNER_TEST_ABORT_AFTER, as if its
//! node died) and then hangs until the test requeues it. Its second attempt
//! is the real binary, resuming the partial bundle.
//!
//! Skipped, with a SKIP line naming the reason, only when no cluster can be
//! had (slurm-local.sh exit 3: not root, no apt, the install failed). A
//! cluster that is installed but does not start fails the test.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;

/// 8 cells: two probes x two parameters x a model axis (N), 16x16 detector.
const SWEEP: &str = small_sweep!("slurm-sweep", "small sweep on a real Slurm cluster");

const MARKER: &str = "<!-- slurm-submit:";

/// The README's submit lines (the sh block after the marker), less the build.
fn readme_submit_lines() -> String {
    let readme = fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let at = readme
        .find(MARKER)
        .expect("README: the slurm-submit marker");
    let block = &readme[at..];
    let start = block
        .find("```sh\n")
        .expect("a ```sh block after the marker")
        + 6;
    let end = block[start..].find("```").unwrap() + start;
    let lines: Vec<&str> = block[start..end]
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("cargo "))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("--array="))
            && lines.iter().any(|l| l.contains("--dependency=afterany")),
        "{lines:?}"
    );
    lines.join("\n")
}

/// A command with Slurm pointed at the test cluster and none of the caller's
/// RUNNER_*, SLURM_* or sweep settings.
fn cmd(program: &str, conf: &Path) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNNER_")
            || k.starts_with("SLURM_")
            || k.starts_with("SBATCH_")
            || k.starts_with("SQUEUE_")
            || [
                "SWEEP_STEP",
                "EXPERIMENT",
                "SHARDS_DIR",
                "MERGED",
                "MERGE_ARGS",
                "RUNNER",
            ]
            .contains(&k.as_str())
        {
            c.env_remove(k);
        }
    }
    c.env("SLURM_CONF", conf);
    c
}

fn text(c: &mut Command) -> (i32, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Two consecutive free loopback ports (slurmctld, slurmd).
fn free_ports() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two free consecutive ports");
}

/// The cluster; `down` (cancel every job, stop the daemons) on drop, also
/// when the test fails.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }
    fn script() -> PathBuf {
        manifest_dir().join("scripts/slurm-local.sh")
    }
    /// squeue, the daemons' logs and every job's output: for failure messages.
    fn diagnostics(&self, work: &Path) -> String {
        let mut s = String::new();
        let (_, q) = text(cmd("squeue", &self.conf()).args(["-a", "-o", "%i %T %r %M"]));
        s.push_str(&format!("squeue:\n{q}\n"));
        for log in ["slurmctld.log", "slurmd.log"] {
            let t = fs::read_to_string(self.dir.join("log").join(log)).unwrap_or_default();
            let tail: Vec<&str> = t.lines().rev().take(25).collect();
            s.push_str(&format!(
                "--- {log} (last lines)\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        if let Ok(rd) = fs::read_dir(work) {
            let mut outs: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "out"))
                .collect();
            outs.sort();
            for p in outs {
                s.push_str(&format!(
                    "--- {}\n{}\n",
                    p.display(),
                    fs::read_to_string(&p).unwrap_or_default()
                ));
            }
        }
        s
    }
    fn job_field(&self, job: &str, key: &str) -> String {
        let (_, t) = text(cmd("scontrol", &self.conf()).args(["show", "job", job]));
        t.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let (code, t) = text(
            Command::new("bash")
                .arg(Self::script())
                .arg("down")
                .arg(&self.dir),
        );
        eprintln!("slurm-local.sh down: exit {code}\n{t}");
    }
}

/// Poll `f` every 0.5 s until it returns Some, at most `limit`.
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn sweep_on_a_real_slurm_cluster_with_a_requeued_task() {
    let t_start = Instant::now();
    let real = PathBuf::from(env!("CARGO_BIN_EXE_runner"));
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        dir: tmp.path().join("slurm"),
    };
    let port = free_ports();
    let (code, up) = text(
        Command::new("bash")
            .arg(Cluster::script())
            .arg("up")
            .arg(&cluster.dir)
            .env("SLURM_LOCAL_PORT", port.to_string()),
    );
    eprintln!(
        "slurm-local.sh up: exit {code} after {:.1} s\n{up}",
        t_start.elapsed().as_secs_f64()
    );
    if code == 3 {
        println!(
            "SKIP sweep_on_a_real_slurm_cluster_with_a_requeued_task: no Slurm cluster can be started here (not root, or its packages cannot be installed):\n{up}"
        );
        return;
    }
    assert_eq!(code, 0, "the cluster did not start:\n{up}");
    let t_up = t_start.elapsed();
    let conf = cluster.conf();

    // The repository's layout as the README's lines expect it, in a work folder.
    let work = tmp.path().join("work");
    let gate = tmp.path().join("gate");
    fs::create_dir_all(work.join("target/release")).unwrap();
    fs::create_dir_all(work.join("experiments")).unwrap();
    fs::create_dir_all(&gate).unwrap();
    std::os::unix::fs::symlink(manifest_dir().join("examples"), work.join("examples")).unwrap();
    fs::write(work.join("experiments/m2h3.toml"), SWEEP).unwrap();
    let wrapper = work.join("target/release/runner");
    fs::write(
        &wrapper,
        format!(
            r#"#!/bin/sh
# Test stand-in for target/release/runner: the real binary, except that the
# first attempt of array task 2 stops after one cell (as if its node died)
# and then hangs until the test requeues it.
real='{real}'
gate='{gate}'
if [ "$1" = run ] && [ "${{SLURM_ARRAY_TASK_ID:-}}" = 2 ] && [ ! -e "$gate/attempt1" ]; then
  touch "$gate/attempt1"
  RUNNER_TEST_ABORT_AFTER=1 "$real" "$@"
  echo "stand-in: attempt 1 of task 2 stopped after one cell (exit $?); hanging until requeued" >&2
  touch "$gate/hung"
  exec sleep 600
fi
exec "$real" "$@"
"#,
            real = real.display(),
            gate = gate.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();

    // Submit as the README says.
    let lines = readme_submit_lines();
    let t_submit = Instant::now();
    let (code, out) = text(
        cmd("bash", &conf)
            .current_dir(&work)
            .arg("-c")
            .arg(format!("set -euo pipefail\n{lines}\necho \"ARRAY=$jid\"")),
    );
    assert_eq!(code, 0, "submit:\n{lines}\n{out}");
    let jid = out
        .lines()
        .find_map(|l| l.strip_prefix("ARRAY="))
        .unwrap_or_else(|| panic!("no array job id: {out}"))
        .trim()
        .to_string();
    let mid = out
        .lines()
        .map(|l| l.trim())
        .find(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) && *l != jid)
        .unwrap_or_else(|| panic!("no merge job id: {out}"))
        .to_string();
    eprintln!("submitted array job {jid}, merge job {mid}");

    // Task 2 is mid-run: part of its shard done, no manifest, still running.
    let hung = wait_for(Duration::from_secs(120), || {
        gate.join("hung").exists().then_some(())
    });
    assert!(
        hung.is_some(),
        "task 2 never reached its first cell:\n{}",
        cluster.diagnostics(&work)
    );
    let shard2 = work.join("shards/shard-2-of-4");
    let before = bundles_under(&shard2);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(
        !before[0].join("sha256.txt").exists(),
        "shard 2 is incomplete"
    );
    let cells_before = results(&before[0]).len();
    let task2 = format!("{jid}_2");
    assert_eq!(
        cluster.job_field(&task2, "JobState"),
        "RUNNING",
        "{}",
        cluster.diagnostics(&work)
    );

    // Requeue it. Slurm makes a requeued job eligible only ~2 minutes later;
    // moving its start time to now keeps the test short.
    let (code, t) = text(cmd("scontrol", &conf).args(["requeue", &task2]));
    assert_eq!(code, 0, "scontrol requeue {task2}: {t}");
    let t_requeue = Instant::now();
    let released = wait_for(Duration::from_secs(60), || {
        if cluster.job_field(&task2, "JobState") != "PENDING" {
            return None;
        }
        let (c, _) = text(cmd("scontrol", &conf).args([
            "update",
            &format!("JobId={task2}"),
            "StartTime=now",
        ]));
        (c == 0).then_some(())
    });
    assert!(
        released.is_some(),
        "requeued task never pending:\n{}",
        cluster.diagnostics(&work)
    );

    // Every job done: the array, then the merge.
    let done = wait_for(Duration::from_secs(240), || {
        let (c, q) = text(cmd("squeue", &conf).args(["-h", "-j", &format!("{jid},{mid}")]));
        (c == 0 && q.trim().is_empty()).then_some(())
    });
    assert!(
        done.is_some(),
        "the sweep did not finish in 240 s:\n{}",
        cluster.diagnostics(&work)
    );
    let t_sweep = t_submit.elapsed();
    let diag = || cluster.diagnostics(&work);

    // The requeue happened and the second attempt resumed the same bundle.
    assert_eq!(cluster.job_field(&task2, "Restarts"), "1", "{}", diag());
    let out2 = fs::read_to_string(work.join(format!("slurm-{jid}_2.out"))).unwrap_or_default();
    assert!(
        out2.contains("hanging until requeued") && out2.contains("resuming"),
        "task 2's output shows both attempts:\n{}",
        diag()
    );
    assert_eq!(bundles_under(&shard2), before, "one bundle for shard 2");
    let cmds = fs::read_to_string(before[0].join("commands.txt")).unwrap();
    assert!(cmds.contains("# resumed"), "{cmds}");
    assert_eq!(results(&before[0]).len(), 2, "shard 2/4 holds 2 cells");

    // The unsharded run, for comparison.
    let o = cmd(real.to_str().unwrap(), &conf)
        .arg("run")
        .arg(work.join("experiments/m2h3.toml"))
        .arg("--out")
        .arg(tmp.path().join("full"))
        .output()
        .unwrap();
    let full_code = o.status.code().unwrap_or(-1);
    let full_out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        full_code == 0 || full_code == 1,
        "{full_out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let full = PathBuf::from(full_out.trim_end().lines().last().unwrap());

    // The merge job: its exit status is the unsharded run's, it verified.
    let state = cluster.job_field(&mid, "JobState");
    let exit = cluster.job_field(&mid, "ExitCode");
    let expected = if full_code == 0 {
        ("COMPLETED", "0:0")
    } else {
        ("FAILED", "1:0")
    };
    assert_eq!((state.as_str(), exit.as_str()), expected, "{}", diag());
    let merge_out: String = fs::read_dir(&work)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("slurm-{mid}_"))
        })
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        merge_out.contains("OK "),
        "the merge job verified:\n{}",
        diag()
    );
    let merged = work.join("merged");
    let (code, t) = text(
        cmd(real.to_str().unwrap(), &conf)
            .arg("verify")
            .arg(&merged),
    );
    assert_eq!(code, 0, "verify: {t}");
    let (code, t) = text(
        cmd(real.to_str().unwrap(), &conf)
            .args(["compare", "--format", "json"])
            .arg(&full)
            .arg(&merged),
    );
    assert_eq!(code, 0, "compare: {t}");
    let c: Value = serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"));
    assert_eq!(
        (
            &c["regressions"],
            &c["status_changes"],
            &c["moved_values"],
            c["cells"].as_array().map(|a| a.len())
        ),
        (&Value::from(0), &Value::from(0), &Value::from(0), Some(8)),
        "compare: {t}"
    );
    assert_eq!(
        results(&merged),
        results(&full),
        "result.json, cell for cell"
    );

    println!(
        "slurm sweep: cluster up in {:.1} s; 4 shards + merge in {:.1} s (requeue of {task2} at {:.1} s, \
         {cells_before} of 2 cells done before it, Restarts=1, resumed); whole test {:.1} s",
        t_up.as_secs_f64(),
        t_sweep.as_secs_f64(),
        (t_requeue - t_submit).as_secs_f64(),
        t_start.elapsed().as_secs_f64()
    );
}
