//! Sharding end to end: `runner run --shard K/N`, `runner merge`, `runner
//! plan --format github|slurm`, the GitHub workflow (structure) and the
//! Slurm script (run on this machine with SLURM_ARRAY_TASK_ID set by hand),
//! and the pictures a run leaves (PNG cells, sweep plots as SVG and PNG).

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

#[macro_use]
mod common;
use common::*;

/// 8 cells: two probes x two parameters x a model axis (N), 16x16 detector.
const SWEEP: &str = small_sweep!("sweep-small", "small sweep for sharding tests");

/// Run (optionally one shard); returns the bundle.
fn run(file: &Path, out: &Path, shard: Option<&str>) -> PathBuf {
    let mut c = runner();
    c.arg("run").arg(file).arg("--out").arg(out);
    if let Some(s) = shard {
        c.args(["--shard", s]);
    }
    let (code, stdout, stderr) = run_cmd(c);
    assert!(code == 0 || code == 1, "{code}\n{stdout}\n{stderr}");
    last_line(&stdout)
}

fn merge(out: &Path, shards: &[&Path], extra: &[&str]) -> (i32, String, String) {
    let mut c = runner();
    c.arg("merge").arg(out);
    for s in shards {
        c.arg(s);
    }
    c.args(extra);
    run_cmd(c)
}

fn verify_ok(bundle: &Path) {
    let mut c = runner();
    c.arg("verify").arg(bundle);
    let (code, stdout, stderr) = run_cmd(c);
    assert_eq!(code, 0, "verify {}:\n{stdout}\n{stderr}", bundle.display());
}

#[test]
fn three_shards_merge_to_the_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "sweep.toml", SWEEP);
    let full = run(&file, &tmp.path().join("full"), None);
    let shards: Vec<PathBuf> = (1..=3)
        .map(|k| run(&file, &tmp.path().join("shards"), Some(&format!("{k}/3"))))
        .collect();
    // Each shard holds its third of the cells and says what it is.
    let mut total = 0;
    for (k, s) in shards.iter().enumerate() {
        verify_ok(s);
        let rec: Value =
            serde_json::from_str(&fs::read_to_string(s.join("shard.json")).unwrap()).unwrap();
        assert_eq!(rec["shard"], format!("{}/3", k + 1));
        assert_eq!(rec["planned"].as_array().unwrap().len(), 8);
        assert!(s
            .display()
            .to_string()
            .ends_with(&format!("shard-{}-of-3", k + 1)));
        total += results(s).len();
    }
    assert_eq!(total, 8);

    let merged = tmp.path().join("merged");
    let refs: Vec<&Path> = shards.iter().map(|p| p.as_path()).collect();
    let (code, stdout, stderr) = merge(&merged, &refs, &[]);
    assert!(code == 0 || code == 1, "{stdout}\n{stderr}");
    assert_eq!(last_line(&stdout), merged);
    verify_ok(&merged);
    assert_eq!(
        results(&merged),
        results(&full),
        "same cells, same result.json bytes"
    );
    for f in [
        "summary.md",
        "results.csv",
        "results.json",
        "junit.xml",
        "env.json",
        "merge.json",
        "sha256.txt",
    ] {
        assert!(merged.join(f).is_file(), "{f}");
    }
    let env: Value =
        serde_json::from_str(&fs::read_to_string(merged.join("env.json")).unwrap()).unwrap();
    assert_eq!(env["shards"].as_array().unwrap().len(), 3);
    let rows: Value =
        serde_json::from_str(&fs::read_to_string(merged.join("results.json")).unwrap()).unwrap();
    let full_rows: Value =
        serde_json::from_str(&fs::read_to_string(full.join("results.json")).unwrap()).unwrap();
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&rows), ids(&full_rows), "plan order kept");
    let summary = fs::read_to_string(merged.join("summary.md")).unwrap();
    assert!(summary.contains("Merged from 3 of 3 shard(s)"), "{summary}");

    // Merging a parent folder of the shard bundles works too (CI artifacts).
    let merged2 = tmp.path().join("merged2");
    let (code, stdout, stderr) = merge(&merged2, &[&tmp.path().join("shards")], &[]);
    assert!(code == 0 || code == 1, "{stdout}\n{stderr}");
    assert_eq!(results(&merged2), results(&full));

    // Pictures: cell PNGs of the whole 16 x 16 detector (the 2 x 2 ROI
    // outlined), the sweep plots along model.crystal.n_cells, all linked.
    let gc = ids(&rows)
        .into_iter()
        .find(|i| i.starts_with("gradcheck") && i.contains("cell_a"))
        .unwrap();
    for f in ["image.png", "d_cell_a.png"] {
        let p = merged.join("cells").join(&gc).join(f);
        let t: std::collections::BTreeMap<String, String> =
            braggrun::io::picture::png_text(&fs::read(&p).unwrap())
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(
            (t["fast_pixels"].as_str(), t["slow_pixels"].as_str()),
            ("16", "16"),
            "{f}"
        );
        assert_eq!(t["roi"], "0 1 7 8", "{f}");
        assert!(png_dims(&p).0 > 16 * 4, "{f}");
    }
    let plot = merged.join("sweep_n_cells_loss.png");
    assert_eq!(png_dims(&plot), braggrun::io::picture::PLOT_SIZE);
    let svg = fs::read_to_string(merged.join("sweep_n_cells_loss.svg")).unwrap();
    assert!(svg.contains("model.crystal.n_cells"), "x label in the SVG");
    assert!(summary.contains("](sweep_n_cells_loss.png)"), "{summary}");
    assert!(summary.contains("](sweep_n_cells_loss.svg)"), "{summary}");
    assert!(
        summary.contains(&format!("](cells/{gc}/image.png)")),
        "{summary}"
    );
    // Deterministic pictures: the unsharded run drew the same bytes.
    for f in ["sweep_n_cells_loss.png", "sweep_n_cells_loss.svg"] {
        assert_eq!(
            fs::read(merged.join(f)).unwrap(),
            fs::read(full.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn wrong_shard_sets_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "sweep.toml", SWEEP);
    let out = tmp.path().join("shards");
    let s1 = run(&file, &out, Some("1/3"));
    let s2 = run(&file, &out, Some("2/3"));
    let s3 = run(&file, &out, Some("3/3"));

    // Missing shard.
    let m = tmp.path().join("m1");
    let (code, _, stderr) = merge(&m, &[&s1, &s2], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("missing") && stderr.contains("shard 3/3"),
        "{stderr}"
    );
    assert!(!m.exists(), "nothing written when refused");

    // --allow-partial merges and says what is missing.
    let (code, stdout, stderr) = merge(&m, &[&s1, &s2], &["--allow-partial"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("partial merge") && stdout.contains("missing"),
        "{stdout}"
    );
    verify_ok(&m);
    let summary = fs::read_to_string(m.join("summary.md")).unwrap();
    assert!(summary.contains("PARTIAL"), "{summary}");

    // Duplicate shard.
    let (code, _, stderr) = merge(&tmp.path().join("m2"), &[&s1, &s2, &s3, &s2], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("duplicate shard 2/3"), "{stderr}");

    // A shard of another experiment.
    let other = write(
        tmp.path(),
        "other.toml",
        &SWEEP.replace("sweep-small", "sweep-other"),
    );
    let o3 = run(&other, &tmp.path().join("other"), Some("3/3"));
    let (code, _, stderr) = merge(&tmp.path().join("m3"), &[&s1, &s2, &o3], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("different experiments"), "{stderr}");

    // Same experiment, another configuration.
    let changed = write(
        tmp.path(),
        "changed.toml",
        &SWEEP.replace("seed = 1", "seed = 2"),
    );
    let c3 = run(&changed, &tmp.path().join("changed"), Some("3/3"));
    let (code, _, stderr) = merge(&tmp.path().join("m4"), &[&s1, &s2, &c3], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("different configurations"), "{stderr}");

    // An incomplete shard (no manifest) and a tampered one.
    let copy = tmp.path().join("copy3");
    copy_dir(&s3, &copy);
    fs::remove_file(copy.join("sha256.txt")).unwrap();
    let (code, _, stderr) = merge(&tmp.path().join("m5"), &[&s1, &s2, &copy], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("incomplete shard"), "{stderr}");
    let copy = tmp.path().join("copy3b");
    copy_dir(&s3, &copy);
    fs::write(copy.join("results.csv"), "tampered").unwrap();
    let (code, _, stderr) = merge(&tmp.path().join("m6"), &[&s1, &s2, &copy], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("fails verification"), "{stderr}");

    // OUT must be new.
    let (code, _, stderr) = merge(&m, &[&s1, &s2, &s3], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not empty"), "{stderr}");

    // Bad --shard values.
    for bad in ["0/3", "4/3", "x"] {
        let mut c = runner();
        c.arg("run")
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .args(["--shard", bad]);
        let (code, _, stderr) = run_cmd(c);
        assert_eq!(code, 2, "{bad}: {stderr}");
    }
}

#[test]
fn plan_prints_a_github_matrix_and_a_slurm_range() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "sweep.toml", SWEEP);
    let plan = |extra: &[&str]| {
        let mut c = runner();
        c.arg("plan").arg(&file).args(extra);
        let (code, stdout, stderr) = run_cmd(c);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let out = plan(&["--format", "github"]);
    assert_eq!(out.trim().lines().count(), 1, "one line for $GITHUB_OUTPUT");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"shard": ["1/4", "2/4", "3/4", "4/4"]})
    );
    // Capped by the cell count (8).
    let v: Value =
        serde_json::from_str(plan(&["--format", "github", "--shards", "20"]).trim()).unwrap();
    let list = v["shard"].as_array().unwrap();
    assert_eq!(list.len(), 8);
    assert_eq!(list[7], "8/8");
    assert_eq!(plan(&["--format", "slurm", "--shards", "3"]).trim(), "1-3");
    assert_eq!(plan(&["--format", "slurm"]).trim(), "1-4");
    let mut c = runner();
    c.arg("plan")
        .arg(&file)
        .args(["--format", "github", "--shards", "0"]);
    assert_eq!(run_cmd(c).0, 2);
}

#[test]
fn github_workflow_is_well_formed() {
    let text = fs::read_to_string(manifest_dir().join(".github/workflows/sweep.yml")).unwrap();
    assert!(!text.contains('\t'), "YAML indentation must be spaces");
    // Structure: top-level keys, the three jobs at two spaces, their needs.
    let top: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    for k in ["name:", "on:", "jobs:"] {
        assert!(
            top.iter().any(|l| l.starts_with(k)),
            "top-level {k}: {top:?}"
        );
    }
    let jobs: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "jobs:")
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':'))
        .collect();
    assert_eq!(jobs, vec!["build", "plan", "shard", "merge"]);
    for needle in [
        "cargo build --release --locked --bin runner",
        "--format github",
        "fromJSON(needs.plan.outputs.matrix)",
        "needs: build",
        "needs: [build, plan]",
        "needs: [build, plan, shard]",
        "\"$RUNNER\" run \"$EXPERIMENT\" --shard \"$SHARD\" --out shards",
        "SHARD: ${{ matrix.shard }}",
        "\"$RUNNER\" merge merged shards --latest",
        "\"$RUNNER\" verify merged",
        ">> \"$GITHUB_OUTPUT\"",
        "persist-credentials: false",
        "permissions:\n  contents: read",
    ] {
        assert!(text.contains(needle), "missing `{needle}`");
    }
    // Every job but build gets the binary, none compiles it again; no
    // hard-coded experiment; no expression inside a shell script.
    assert_eq!(text.matches("cargo build").count(), 1);
    assert!(!text.contains("cargo run"));
    assert_eq!(
        text.matches("experiments/m2h3.toml").count(),
        2,
        "input default and env only"
    );
    for l in text
        .lines()
        .filter(|l| l.trim_start().starts_with("uses:") || l.contains(" uses: "))
    {
        let r = l.split("uses:").nth(1).unwrap().trim();
        let sha = r.split('@').nth(1).unwrap_or("").split(' ').next().unwrap();
        assert!(
            sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) && r.contains(" # v"),
            "not pinned by commit with its tag: {l}"
        );
    }
    // Indentation: multiples of two spaces; every `- ` step under a list key.
    for (i, l) in text.lines().enumerate() {
        let indent = l.len() - l.trim_start().len();
        assert!(indent % 2 == 0, "line {}: odd indentation: {l}", i + 1);
        assert!(!l.ends_with(' '), "line {}: trailing space", i + 1);
    }
}

#[test]
fn slurm_script_runs_end_to_end_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "sweep.toml", SWEEP);
    let script = manifest_dir().join("examples/slurm/sweep.sbatch");
    let bin = assert_cmd::cargo::cargo_bin("runner");
    let base = |c: &mut std::process::Command| {
        c.arg(&script)
            .current_dir(tmp.path())
            .env("RUNNER", &bin)
            .env("EXPERIMENT", &file)
            .env("SHARDS_DIR", tmp.path().join("shards"))
            .env("MERGED", tmp.path().join("merged"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNNER_") || k.starts_with("SLURM_") || k == "SWEEP_STEP" {
                c.env_remove(k);
            }
        }
    };
    for k in 1..=3 {
        let mut c = std::process::Command::new("bash");
        base(&mut c);
        c.env("SLURM_ARRAY_TASK_ID", k.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", "3");
        let o = c.output().unwrap();
        assert!(
            matches!(o.status.code(), Some(0) | Some(1)),
            "task {k}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mut c = std::process::Command::new("bash");
    base(&mut c);
    c.env("SWEEP_STEP", "merge");
    let o = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    // The merge exits 1 only when cells failed; verify runs either way.
    let merged = tmp.path().join("merged");
    assert!(merged.join("sha256.txt").is_file(), "{stdout}\n{stderr}");
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("OK "), "verify ran: {stdout}");
    verify_ok(&merged);
    assert_eq!(results(&merged).len(), 8);
    // Without a task id the script refuses.
    let mut c = std::process::Command::new("bash");
    base(&mut c);
    let o = c.output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("SLURM_ARRAY_TASK_ID"));
}
