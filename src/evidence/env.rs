//! `env.json`: where and with what a bundle was produced.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn run(cmd: &str, args: &[&str], cwd: Option<&Path>) -> Option<String> {
    let mut c = Command::new(cmd);
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c.output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Host name.
pub fn hostname() -> String {
    read_trim("/proc/sys/kernel/hostname")
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| run("hostname", &[], None))
        .unwrap_or_else(|| "unknown".into())
}

/// Git commit and dirty flag of the source tree the binary was built from,
/// recorded by build.rs: no git at run time (a run inside another repository,
/// or on a machine without the sources, names the binary's commit).
pub fn git_info() -> (String, Option<bool>) {
    let dirty = match env!("BRAGGRUN_BUILD_GIT_DIRTY") {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    (env!("BRAGGRUN_BUILD_GIT_COMMIT").to_string(), dirty)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| {
                    l.starts_with("model name")
                        || l.starts_with("Model")
                        || l.starts_with("cpu model")
                })
                .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn mem_total_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
    })
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with("PRETTY_NAME=")).map(|l| {
                l.trim_start_matches("PRETTY_NAME=")
                    .trim_matches('"')
                    .to_string()
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

/// The environment record.
pub fn collect(jobs: usize, threads_per_job: usize) -> Value {
    let (commit, dirty) = git_info();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut vars = serde_json::Map::new();
    let mut keys: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k == "RAYON_NUM_THREADS"
                || k == "CUDA_VISIBLE_DEVICES"
                || k == "OMP_NUM_THREADS"
                || k == "RUST_LOG"
                || k.starts_with("RUNNER_")
                || k.starts_with("BRAGGRUN_")
        })
        .collect();
    keys.sort();
    for (k, v) in keys {
        vars.insert(k, json!(v));
    }
    let cuda = match crate::engine::cuda::describe_devices() {
        Ok(devs) => json!({ "available": true, "devices": devs }),
        Err(reason) => json!({ "available": false, "reason": reason }),
    };
    json!({
        "time_utc": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "hostname": hostname(),
        "os": os_name(),
        "kernel": read_trim("/proc/sys/kernel/osrelease").or_else(|| run("uname", &["-r"], None)).unwrap_or_else(|| "unknown".into()),
        "arch": std::env::consts::ARCH,
        "cpu_model": cpu_model(),
        "cores": cores,
        "memory_total_kib": mem_total_kib(),
        "rustc": env!("BRAGGRUN_BUILD_RUSTC"),
        "build_git_commit": env!("BRAGGRUN_BUILD_GIT_COMMIT"),
        "build_git_dirty": env!("BRAGGRUN_BUILD_GIT_DIRTY"),
        "braggrun_version": crate::VERSION,
        "git_commit": commit,
        "git_dirty": dirty,
        "rayon_global_threads": rayon::current_num_threads(),
        "jobs": jobs,
        "threads_per_job": threads_per_job,
        "env": vars,
        "cuda": cuda,
        "executable": std::env::current_exe().ok().map(|p| p.display().to_string()),
    })
}
