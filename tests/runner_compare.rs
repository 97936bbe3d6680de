//! `runner compare A B`: regressions between two bundles of one experiment.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

#[macro_use]
mod common;
use common::*;

const SMALL: &str = concat!(
    r#"
[experiment]
id = "compare-small"
"#,
    small_model!(),
    r#"
[matrix]
param = ["cell_a", "distance"]

[[probe]]
kind = "gradcheck"

[[probe]]
kind = "simulate"
"#
);

fn run(file: &Path, out: &Path) -> PathBuf {
    let mut c = runner();
    c.arg("run").arg(file).arg("--out").arg(out);
    let (code, stdout, stderr) = run_cmd(c);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    last_line(&stdout)
}

fn compare(a: &Path, b: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut c = runner();
    c.arg("compare").arg(a).arg(b).args(extra);
    run_cmd(c)
}

/// Edit one top-level line of a result.json as text (re-serialising the
/// whole file could move other floats in their last bit).
fn edit_result(bundle: &Path, cell: &str, key: &str, f: impl Fn(&str) -> String) {
    let p = bundle.join("cells").join(cell).join("result.json");
    let text = fs::read_to_string(&p).unwrap();
    let prefix = format!("  \"{key}\": ");
    let mut hit = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix(&prefix) {
            Some(v) if !hit => {
                hit = true;
                let (v, comma) = v.strip_suffix(',').map(|v| (v, ",")).unwrap_or((v, ""));
                format!("{prefix}{}{comma}", f(v))
            }
            _ => l.to_string(),
        })
        .collect();
    assert!(hit, "{key} in {}", p.display());
    fs::write(&p, out.join("\n") + "\n").unwrap();
}

#[test]
fn compare_names_regressions_and_passes_identical_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("small.toml");
    fs::write(&file, SMALL).unwrap();
    let a = run(&file, &tmp.path().join("a"));
    let b = run(&file, &tmp.path().join("b"));

    // Two runs of the same experiment: nothing moved, the configurations
    // are the same, and no cell is listed (nothing changed) but with --all.
    let (code, stdout, stderr) = compare(&a, &b, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("configuration: the same"),
        "the first line is about the configuration:\n{stdout}"
    );
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("all 3 cell(s) unchanged"), "{stdout}");
    assert!(stdout.lines().count() <= 6, "changes only:\n{stdout}");
    let (code, all, _) = compare(&a, &b, &["--all"]);
    assert_eq!(code, 0);
    for cell in [
        "gradcheck-cpu-float64-cell_a",
        "gradcheck-cpu-float64-distance",
        "simulate-cpu-float64",
    ] {
        assert!(
            !stdout.contains(cell),
            "unchanged, not listed: {cell}\n{stdout}"
        );
        assert!(all.contains(cell), "--all lists every cell: {cell}\n{all}");
    }

    // A perturbed copy: one value edited, one status flipped.
    let p = tmp.path().join("perturbed");
    copy_dir(&a, &p);
    edit_result(&p, "simulate-cpu-float64", "loss", |v| {
        format!("{:?}", v.parse::<f64>().unwrap() * (1.0 + 1e-6))
    });
    edit_result(&p, "gradcheck-cpu-float64-distance", "status", |_| {
        "\"FAIL\"".into()
    });
    let (code, stdout, stderr) = compare(&a, &p, &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("REGRESSION"), "{stdout}");
    // Changes only: the two edited cells, their edited values, nothing else.
    assert!(!stdout.contains("gradcheck-cpu-float64-cell_a"), "{stdout}");
    assert!(
        stdout.contains("1 unchanged cell(s) not listed"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("grad_fd"),
        "unchanged values not listed:\n{stdout}"
    );
    let (_, stdout, _) = compare(&a, &p, &["--all"]);
    let table = &stdout[stdout.find("quantity").unwrap()..];
    let flipped = table.find("gradcheck-cpu-float64-distance").unwrap();
    let unchanged = table.find("gradcheck-cpu-float64-cell_a").unwrap();
    assert!(flipped < unchanged, "status changes first:\n{stdout}");
    assert!(stdout.contains("PASS -> FAIL"), "{stdout}");
    assert!(stdout.contains("MOVED"), "{stdout}");
    let regressions = stdout
        .lines()
        .find(|l| l.starts_with("regressions:"))
        .unwrap();
    assert!(
        regressions.contains("gradcheck-cpu-float64-distance")
            && regressions.contains("simulate-cpu-float64")
            && !regressions.contains("cell_a"),
        "{regressions}"
    );

    // A looser tolerance lets the 1e-6 move pass; the status change still fails.
    let (code, stdout, _) = compare(&a, &p, &["--rtol", "1e-5", "--format", "json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["regressions"], 1);
    assert_eq!(v["cells"][0]["id"], "gradcheck-cpu-float64-distance");
    assert_eq!(v["cells"][0]["status_change"], "worse");
    assert_eq!(v["cells"].as_array().unwrap().len(), 3);

    // Only the value: exit 1 with the default tolerance, 0 with a looser one.
    edit_result(&p, "gradcheck-cpu-float64-distance", "status", |_| {
        "\"PASS\"".into()
    });
    assert_eq!(compare(&a, &p, &[]).0, 1);
    let (code, stdout, _) = compare(&a, &p, &["--rtol", "1e-5", "--format", "markdown"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with("# Compare `compare-small`: OK"),
        "{stdout}"
    );
    assert!(stdout.contains("- configuration: the same"), "{stdout}");
    assert!(stdout.contains("| cell | quantity | A | B |"), "{stdout}");
    // PASS -> SKIPPED is worse too.
    edit_result(&p, "simulate-cpu-float64", "status", |_| {
        "\"SKIPPED\"".into()
    });
    let (code, stdout, _) = compare(&a, &p, &["--rtol", "1e-5"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("PASS -> SKIPPED"), "{stdout}");

    // A changed configuration is named on the first line.
    let mut c = runner();
    c.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(tmp.path().join("d"))
        .args(["--set", "model.detector.distance_mm=101"]);
    let (code, out, err) = run_cmd(c);
    assert_eq!(code, 0, "{out}\n{err}");
    let d = last_line(&out);
    let (_, stdout, _) = compare(&a, &d, &[]);
    let first = stdout.lines().next().unwrap();
    assert_eq!(
        first, "configuration: 1 key(s) differ: model.detector.distance_mm 100.0 -> 101.0",
        "{stdout}"
    );
    let (_, json, _) = compare(&a, &d, &["--format", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["configuration_differences"][0]["key"],
        "model.detector.distance_mm"
    );

    // Bundles of different experiments are refused.
    let other = tmp.path().join("other.toml");
    fs::write(&other, SMALL.replace("compare-small", "compare-other")).unwrap();
    let o = run(&other, &tmp.path().join("o"));
    let (code, _, stderr) = compare(&a, &o, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("different experiments"), "{stderr}");
    let (code, _, stderr) = compare(&a, &tmp.path().join("nope"), &[]);
    assert_eq!(code, 2, "{stderr}");
}
