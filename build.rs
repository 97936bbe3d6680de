//! Records the compiler and the git commit at build time, for env.json,
//! commands.txt and summary.md: provenance comes from the binary only (the
//! machine that runs it may have no git, or sit in another repository).
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
    // Re-run on a new commit (HEAD, refs, index; in a worktree too) and on
    // any change of the sources, so the dirty flag follows edits.
    for d in [
        out("git", &["rev-parse", "--git-dir"]),
        out("git", &["rev-parse", "--git-common-dir"]),
    ]
    .into_iter()
    .flatten()
    {
        for f in ["HEAD", "index", "refs/heads", "packed-refs"] {
            let p = std::path::Path::new(&d).join(f);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    for p in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
