//! Records the compiler and the git commit at build time, for env.json: the
//! machine that runs a binary (the GPU machine) may have neither.
use std::process::Command;

fn out(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = out(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BRAGGRUN_BUILD_RUSTC={version}");
    let commit = out("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = out("git", &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| if s.is_empty() { "false" } else { "true" })
        .unwrap_or("unknown");
    println!("cargo:rustc-env=BRAGGRUN_BUILD_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=BRAGGRUN_BUILD_GIT_DIRTY={dirty}");
    for p in [".git/HEAD", ".git/index", ".git/refs/heads"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
