//! End-to-end tests of `runner` (validate, plan, run, verify, schema) on real
//! TOML files in temporary folders.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

#[macro_use]
mod common;
use common::*;

/// A small, fast experiment: the M2h.3 geometry on a 16x16 detector, CPU only,
/// three parameters and two probes, the phi-cache probe for cell_a only (4 cells).
const TINY: &str = concat!(
    r#"
[experiment]
id = "tiny"
title = "tiny"
"#,
    small_model!(),
    r#"
[matrix]
device = ["cpu"]
dtype = ["float64"]
param = ["cell_a", "distance", "default_f"]
exclude = [{ probe = "cache", param = "distance" }, { probe = "cache", param = "default_f" }]

[[probe]]
kind = "phi-cache"
name = "cache"
expected_loss = 1199.51994
expected_grad = 3.9976002

[[probe]]
kind = "gradcheck"
"#
);

fn result(bundle: &Path, cell: &str) -> Value {
    let t = fs::read_to_string(bundle.join("cells").join(cell).join("result.json"))
        .unwrap_or_else(|e| panic!("{cell}: {e}"));
    serde_json::from_str(&t).unwrap()
}

fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn cuda_present(bundle: &Path) -> bool {
    let env: Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("env.json")).unwrap()).unwrap();
    env["cuda"]["available"].as_bool() == Some(true)
}

fn sha256sum_ok(bundle: &Path) -> bool {
    std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "sha256.txt"])
        .current_dir(bundle)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn runner_m2h3_reproduces_the_published_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(manifest_dir().join("experiments/m2h3.toml")).unwrap();
    let file = write(tmp.path(), "m2h3.toml", &text);
    let out = tmp.path().join("runs");
    let mut c = runner();
    c.arg("run").arg(&file).arg("--out").arg(&out);
    let (code, stdout, stderr) = run_cmd(c);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let bundle = last_line(&stdout);
    assert!(bundle.starts_with(out.join("m2h3")), "{}", bundle.display());

    let pc = result(&bundle, "phi-cache-cpu-float64-cell_a");
    assert_eq!(pc["status"], "PASS", "{pc}");
    assert!(
        rel_err(pc["loss"].as_f64().unwrap(), 1199.51994) <= 1e-9,
        "{pc}"
    );
    assert!(
        rel_err(pc["grad_ad"].as_f64().unwrap(), 3.9976002) <= 1e-9,
        "{pc}"
    );
    assert!(
        rel_err(pc["grad_fd"].as_f64().unwrap(), 3.9976002) <= 1e-6,
        "{pc}"
    );

    let gc = result(&bundle, "gradcheck-cpu-float64-cell_a");
    assert_eq!(gc["status"], "PASS", "{gc}");
    let loss = gc["loss"].as_f64().unwrap();
    let ad = gc["grad_ad"].as_f64().unwrap();
    let fd = gc["grad_fd"].as_f64().unwrap();
    assert!(loss > 0.0 && ad != 0.0 && fd != 0.0, "{gc}");
    assert!((ad - fd).abs() <= 1e-5 + 1e-3 * fd.abs(), "{gc}");
    assert_eq!(gc["details"]["nonzero_pixels"], 4, "{gc}");
    assert_eq!(gc["details"]["nonzero_derivative_pixels"], 4, "{gc}");
    assert!(bundle
        .join("cells/gradcheck-cpu-float64-cell_a/pixels.csv")
        .is_file());

    for cell in [
        "phi-cache-cuda-float64-cell_a",
        "gradcheck-cuda-float64-cell_a",
    ] {
        let r = result(&bundle, cell);
        if cuda_present(&bundle) {
            assert_eq!(r["status"], "PASS", "{r}");
        } else {
            assert_eq!(r["status"], "SKIPPED", "{r}");
            assert!(
                r["reason"].as_str().unwrap_or("").contains("unavailable"),
                "{r}"
            );
        }
    }

    for f in [
        "experiment.toml",
        "commands.txt",
        "env.json",
        "results.csv",
        "results.json",
        "summary.md",
        "junit.xml",
        "sha256.txt",
    ] {
        assert!(bundle.join(f).is_file(), "{f} missing");
    }
    let summary = fs::read_to_string(bundle.join("summary.md")).unwrap();
    assert!(summary.starts_with("# m2h3: PASS"), "{summary}");
    assert!(summary.contains("1199.51994") && summary.contains("3.9976002"));
    let junit = fs::read_to_string(bundle.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 4);
    if !cuda_present(&bundle) {
        assert_eq!(junit.matches("<skipped ").count(), 2);
    }
    let csv = fs::read_to_string(bundle.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.lines().next().unwrap().contains("cell_wall_s"));

    let mut v = runner();
    v.arg("verify").arg(&bundle);
    let (code, stdout, _) = run_cmd(v);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("OK"));
    assert!(sha256sum_ok(&bundle));
}

fn run_tiny(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let file = dir.join("tiny.toml");
    if !file.exists() {
        write(dir, "tiny.toml", TINY);
    }
    let mut c = runner();
    c.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(dir.join("runs"))
        .args(extra);
    run_cmd(c)
}

#[test]
fn runner_verify_names_tampered_deleted_and_added_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_tiny(tmp.path(), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let bundle = last_line(&stdout);
    fs::write(bundle.join("results.csv"), "tampered\n").unwrap();
    fs::remove_file(bundle.join("cells/gradcheck-cpu-float64-distance/log.txt")).unwrap();
    fs::write(bundle.join("cells/extra.txt"), "added\n").unwrap();
    let mut v = runner();
    v.arg("verify").arg(&bundle);
    let (code, stdout, _) = run_cmd(v);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("MODIFIED  results.csv"), "{stdout}");
    assert!(
        stdout.contains("MISSING   cells/gradcheck-cpu-float64-distance/log.txt"),
        "{stdout}"
    );
    assert!(stdout.contains("UNLISTED  cells/extra.txt"), "{stdout}");
    assert!(!sha256sum_ok(&bundle), "sha256sum -c must reject it too");
}

#[test]
fn runner_verify_calls_a_bundle_without_manifest_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run_tiny(tmp.path(), &[]);
    assert_eq!(code, 0);
    let bundle = last_line(&stdout);
    fs::remove_file(bundle.join("sha256.txt")).unwrap();
    let mut v = runner();
    v.arg("verify").arg(&bundle);
    let (code, stdout, _) = run_cmd(v);
    assert_eq!(code, 1);
    assert!(stdout.contains("INCOMPLETE"), "{stdout}");
}

fn result_files(bundle: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(bundle.join("cells"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("result.json").is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                fs::read(p.join("result.json")).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn runner_same_experiment_twice_gives_identical_result_json() {
    let tmp = tempfile::tempdir().unwrap();
    let (c1, s1, _) = run_tiny(tmp.path(), &[]);
    let (c2, s2, _) = run_tiny(tmp.path(), &["--jobs", "1"]);
    assert_eq!((c1, c2), (0, 0));
    let (b1, b2) = (last_line(&s1), last_line(&s2));
    assert_ne!(b1, b2, "two runs, two bundles");
    let (r1, r2) = (result_files(&b1), result_files(&b2));
    assert_eq!(r1.len(), 4);
    assert_eq!(r1, r2);
}

#[test]
fn runner_killed_run_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    // Uninterrupted reference.
    let (code, stdout, _) = run_tiny(tmp.path(), &[]);
    assert_eq!(code, 0);
    let reference = result_files(&last_line(&stdout));

    // Killed after 2 of 4 cells.
    let out = tmp.path().join("killed");
    let file = tmp.path().join("tiny.toml");
    let mut c = runner();
    c.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .args(["--jobs", "1"])
        .env("RUNNER_TEST_ABORT_AFTER", "2");
    let (code, _, stderr) = run_cmd(c);
    assert_ne!(code, 0, "{stderr}");
    let bundles: Vec<PathBuf> = fs::read_dir(out.join("tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(bundles.len(), 1);
    let bundle = bundles[0].clone();
    assert!(!bundle.join("sha256.txt").exists());
    assert_eq!(result_files(&bundle).len(), 2);
    let mut v = runner();
    v.arg("verify").arg(&bundle);
    let (code, stdout, _) = run_cmd(v);
    assert_eq!(code, 1);
    assert!(stdout.contains("INCOMPLETE"), "{stdout}");

    let mut r = runner();
    r.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .arg("--resume")
        .arg(&bundle);
    let (code, stdout, stderr) = run_cmd(r);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(last_line(&stdout), bundle);
    assert!(
        stderr.contains("2 cell(s) of tiny to run"),
        "only the missing cells run: {stderr}"
    );
    assert_eq!(result_files(&bundle), reference);
    let mut v = runner();
    v.arg("verify").arg(&bundle);
    let (code, stdout, _) = run_cmd(v);
    assert_eq!(code, 0, "{stdout}");
    assert!(sha256sum_ok(&bundle));
    let results: Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("results.json")).unwrap()).unwrap();
    assert_eq!(results.as_array().unwrap().len(), 4);
}

#[test]
fn runner_resume_keeps_finished_cells() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.toml", TINY);
    let out = tmp.path().join("killed");
    let file = tmp.path().join("tiny.toml");
    let mut c = runner();
    c.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .args(["--jobs", "1"])
        .env("RUNNER_TEST_ABORT_AFTER", "3");
    let _ = run_cmd(c);
    let bundle = fs::read_dir(out.join("tiny"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let before: Vec<(String, Vec<u8>)> = result_files(&bundle)
        .into_iter()
        .map(|(id, _)| {
            let t = fs::read(bundle.join("cells").join(&id).join("timing.json")).unwrap();
            (id, t)
        })
        .collect();
    assert_eq!(before.len(), 3);
    let mut r = runner();
    r.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .arg("--resume")
        .arg(&bundle);
    let (code, _, stderr) = run_cmd(r);
    assert_eq!(code, 0, "{stderr}");
    for (id, t) in before {
        assert_eq!(
            fs::read(bundle.join("cells").join(&id).join("timing.json")).unwrap(),
            t,
            "{id} was re-run"
        );
    }
}

#[test]
fn runner_panic_in_a_cell_is_an_error_and_the_rest_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.toml", TINY);
    let mut c = runner();
    c.arg("run")
        .arg(tmp.path().join("tiny.toml"))
        .arg("--out")
        .arg(tmp.path().join("runs"))
        .env("RUNNER_TEST_PANIC_CELL", "gradcheck-cpu-float64-cell_a");
    let (code, stdout, stderr) = run_cmd(c);
    assert_eq!(code, 1, "{stderr}");
    let bundle = last_line(&stdout);
    let r = result(&bundle, "gradcheck-cpu-float64-cell_a");
    assert_eq!(r["status"], "ERROR");
    assert!(r["reason"].as_str().unwrap().contains("panic"), "{r}");
    assert_eq!(
        result(&bundle, "gradcheck-cpu-float64-distance")["status"],
        "PASS"
    );
    let junit = fs::read_to_string(bundle.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<error ").count(), 1);
    assert!(fs::read_to_string(bundle.join("summary.md"))
        .unwrap()
        .starts_with("# tiny: FAIL"));
    let mut v = runner();
    v.arg("verify").arg(&bundle);
    assert_eq!(run_cmd(v).0, 0);
}

#[test]
fn runner_fail_fast_stops_starting_cells() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.toml", TINY);
    let mut c = runner();
    c.arg("run")
        .arg(tmp.path().join("tiny.toml"))
        .arg("--out")
        .arg(tmp.path().join("runs"))
        .args(["--jobs", "1", "--fail-fast"])
        .env("RUNNER_TEST_PANIC_CELL", "cache-cpu-float64-cell_a");
    let (code, stdout, _) = run_cmd(c);
    assert_eq!(code, 1);
    let bundle = last_line(&stdout);
    let r = result(&bundle, "gradcheck-cpu-float64-default_f");
    assert_eq!(r["status"], "SKIPPED");
    assert_eq!(r["not_run"], true);
}

#[test]
fn runner_require_device_cuda_fails_without_a_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let text = TINY.replace("device = [\"cpu\"]", "device = [\"cpu\", \"cuda\"]");
    write(tmp.path(), "tiny.toml", &text);
    let mut c = runner();
    c.arg("run")
        .arg(tmp.path().join("tiny.toml"))
        .arg("--out")
        .arg(tmp.path().join("runs"))
        .args(["--only", "param=cell_a", "--require-device", "cuda"]);
    let (code, stdout, _) = run_cmd(c);
    let bundle = last_line(&stdout);
    if cuda_present(&bundle) {
        return;
    }
    assert_eq!(code, 1);
    let r = result(&bundle, "gradcheck-cuda-float64-cell_a");
    assert_eq!(r["status"], "FAIL");
    assert!(
        r["reason"].as_str().unwrap().contains("--require-device"),
        "{r}"
    );
}

#[test]
fn runner_plan_ids_order_only_include_exclude() {
    let tmp = tempfile::tempdir().unwrap();
    let text = TINY
        .replace(
            "param = [\"cell_a\", \"distance\", \"default_f\"]",
            "param = [\"cell_a\", \"distance\"]\n\"model.crystal.n_cells\" = [[3.0, 3.0, 3.0], [5.0, 5.0, 5.0]]\n\
             include = [{ probe = \"gradcheck\", param = \"cell_a\", dtype = \"float32\", device = \"cpu\" }]",
        )
        .replace(", { probe = \"cache\", param = \"default_f\" }", "");
    let file = write(tmp.path(), "plan.toml", &text);
    let mut c = runner();
    c.arg("plan").arg(&file).args(["--format", "json"]);
    let (code, stdout, stderr) = run_cmd(c);
    assert_eq!(code, 0, "{stderr}");
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            "cache-cpu-float64-cell_a-n_cells_3_3_3",
            "cache-cpu-float64-cell_a-n_cells_5_5_5",
            "gradcheck-cpu-float64-cell_a-n_cells_3_3_3",
            "gradcheck-cpu-float64-cell_a-n_cells_5_5_5",
            "gradcheck-cpu-float64-distance-n_cells_3_3_3",
            "gradcheck-cpu-float64-distance-n_cells_5_5_5",
            "gradcheck-cpu-float32-cell_a",
        ]
    );
    // Deterministic: the same twice, and the table form lists the same ids.
    let mut c2 = runner();
    c2.arg("plan").arg(&file).args(["--format", "json"]);
    assert_eq!(run_cmd(c2).1, stdout);
    let mut t = runner();
    t.arg("plan")
        .arg(&file)
        .args(["--only", "probe=gradcheck", "--only", "param=distance"]);
    let (code, table, _) = run_cmd(t);
    assert_eq!(code, 0);
    assert!(table.contains("gradcheck-cpu-float64-distance-n_cells_3_3_3"));
    assert!(!table.contains("cache-cpu"));
    assert!(table.contains("2 cell(s)"));
}

#[test]
fn runner_plan_crosses_a_probe_only_with_the_axes_it_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let text = TINY
        .replace(
            "dtype = [\"float64\"]",
            "dtype = [\"float64\", \"float32\"]\nroi = [[0, 1, 7, 8], [0, 15, 0, 15]]",
        )
        .replace(
            "[[probe]]\nkind = \"gradcheck\"",
            "[[probe]]\nkind = \"gradcheck\"\n\n[[probe]]\nkind = \"simulate\"",
        );
    let file = write(tmp.path(), "axes.toml", &text);
    let mut c = runner();
    c.arg("plan").arg(&file).args(["--format", "json"]);
    let (code, stdout, stderr) = run_cmd(c);
    assert_eq!(code, 0, "{stderr}");
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    let of = |kind: &str| -> Vec<(String, Value)> {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == kind)
            .map(|r| (r["id"].as_str().unwrap().to_string(), r["param"].clone()))
            .collect()
    };
    // simulate: one cell per (device, dtype, ROI), no parameter in it (it
    // renders every parameter's derivative at once).
    let sim = of("simulate");
    assert_eq!(
        sim.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        [
            "simulate-cpu-float64-roi_0_1_7_8",
            "simulate-cpu-float64-roi_0_15_0_15",
            "simulate-cpu-float32-roi_0_1_7_8",
            "simulate-cpu-float32-roi_0_15_0_15",
        ]
    );
    assert!(sim.iter().all(|(_, p)| p.is_null()), "{sim:?}");
    // gradcheck uses every axis: 2 dtypes x 3 parameters x 2 ROIs.
    assert_eq!(of("gradcheck").len(), 12);
    // phi-cache has no ROI: one cell per dtype (its parameter is cell_a).
    let cache: Vec<String> = of("phi-cache").into_iter().map(|r| r.0).collect();
    assert_eq!(
        cache,
        ["cache-cpu-float64-cell_a", "cache-cpu-float32-cell_a"]
    );
}

#[test]
fn runner_set_and_environment_layers() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.toml", TINY);
    let mut c = runner();
    c.arg("run")
        .arg(tmp.path().join("tiny.toml"))
        .arg("--out")
        .arg(tmp.path().join("runs"))
        .args([
            "--only",
            "probe=cache",
            "--set",
            "model.crystal.default_f=50",
            "--set",
            "experiment.title=overridden",
        ])
        .env("RUNNER_MODEL__BEAM__WAVELENGTH_A", "1.5")
        .env("RUNNER_MODEL__CRYSTAL__DEFAULT_F", "75");
    let (code, stdout, stderr) = run_cmd(c);
    assert_eq!(code, 0, "{stderr}");
    let bundle = last_line(&stdout);
    let resolved = fs::read_to_string(bundle.join("experiment.toml")).unwrap();
    assert!(resolved.contains("title = \"overridden\""), "{resolved}");
    assert!(
        resolved.contains("default_f = 75.0"),
        "env beats --set: {resolved}"
    );
    assert!(resolved.contains("wavelength_a = 1.5"), "{resolved}");
    let cmds = fs::read_to_string(bundle.join("commands.txt")).unwrap();
    assert!(
        cmds.contains("RUNNER_MODEL__BEAM__WAVELENGTH_A=1.5"),
        "{cmds}"
    );
    assert!(cmds.contains("--set model.crystal.default_f=50"), "{cmds}");
    // The resolved file is itself a valid experiment.
    let again = write(tmp.path(), "again.toml", &resolved);
    let mut v = runner();
    v.arg("validate").arg(&again);
    assert_eq!(run_cmd(v).0, 0);
}

#[test]
fn runner_schema_file_is_up_to_date() {
    let mut c = runner();
    c.arg("schema");
    let (code, stdout, _) = run_cmd(c);
    assert_eq!(code, 0);
    let committed =
        fs::read_to_string(manifest_dir().join("schemas/experiment.schema.json")).unwrap();
    assert!(
        committed == stdout,
        "schemas/experiment.schema.json is stale: regenerate with `cargo run -- schema > schemas/experiment.schema.json`"
    );
}

#[test]
fn runner_example_experiments_validate() {
    for f in [
        "m2h3.toml",
        "triclinic-all-params.toml",
        "parity-golden.toml",
    ] {
        let mut c = runner();
        c.arg("validate")
            .arg(manifest_dir().join("experiments").join(f));
        let (code, stdout, stderr) = run_cmd(c);
        assert_eq!(code, 0, "{f}: {stdout}{stderr}");
    }
}

/// A bad-input case: a mutation of TINY (or a whole file), extra arguments,
/// environment, and what the error message must name.
struct Bad {
    name: &'static str,
    from: &'static str,
    to: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    expect: &'static [&'static str],
}

const BAD: &[Bad] = &[
    Bad { name: "syntax error", from: "[experiment]", to: "[experiment", args: &[], env: &[], expect: &["tiny.toml"] },
    Bad { name: "unknown top-level key", from: "[experiment]", to: "bogus = 1\n[experiment]", args: &[], env: &[], expect: &["bogus"] },
    Bad { name: "unknown model key", from: "default_f = 100.0", to: "default_f = 100.0\nfoo = 1", args: &[], env: &[], expect: &["model.crystal.foo"] },
    Bad { name: "wrong type", from: "default_f = 100.0", to: "default_f = \"lots\"", args: &[], env: &[], expect: &["model.crystal.default_f", "lots"] },
    Bad { name: "unknown device", from: "device = [\"cpu\"]", to: "device = [\"gpu\"]", args: &[], env: &[], expect: &["matrix.device", "gpu"] },
    Bad { name: "unknown dtype", from: "dtype = [\"float64\"]", to: "dtype = [\"float16\"]", args: &[], env: &[], expect: &["matrix.dtype", "float16"] },
    Bad { name: "unknown parameter", from: "\"cell_a\", \"distance\"", to: "\"cell_q\", \"distance\"", args: &[], env: &[], expect: &["matrix.param", "cell_q"] },
    Bad { name: "old save_image key", from: "kind = \"gradcheck\"", to: "kind = \"gradcheck\"\nsave_image = true", args: &[], env: &[], expect: &["tiny.toml", "probe.1.save_image", "`save_images`"] },
    Bad { name: "empty axis", from: "device = [\"cpu\"]", to: "device = []", args: &[], env: &[], expect: &["matrix.device", "empty axis"] },
    Bad { name: "roi outside the detector", from: "roi = [0, 1, 7, 8]", to: "roi = [0, 1, 7, 80]", args: &[], env: &[], expect: &["model.detector.roi", "80"] },
    Bad { name: "roi min above max", from: "[matrix]", to: "[matrix]\nroi = [[5, 1, 0, 1]]", args: &[], env: &[], expect: &["matrix.roi", "min greater than max"] },
    Bad { name: "negative cell edge", from: "cell = [100.0,", to: "cell = [-100.0,", args: &[], env: &[], expect: &["model.crystal.cell", "-100"] },
    Bad { name: "exclude removes every cell", from: "exclude = [", to: "exclude = [{ device = \"cpu\" }, ", args: &[], env: &[], expect: &["matrix.exclude", "every"] },
    Bad { name: "duplicate cell ids", from: "device = [\"cpu\"]", to: "device = [\"cpu\", \"cpu\"]", args: &[], env: &[], expect: &["duplicate cell id", "cache-cpu-float64-cell_a"] },
    Bad { name: "duplicate probe names", from: "name = \"cache\"", to: "name = \"gradcheck\"", args: &[], env: &[], expect: &["duplicate cell id"] },
    Bad {
        name: "matrix over the size limit",
        from: "[matrix]",
        to: "[matrix]\n\"model.crystal.fudge\" = [1.0,1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8,1.9]\n\"model.crystal.mosaic_seed\" = [1,2,3,4,5,6,7,8,9,10]",
        args: &[],
        env: &[],
        expect: &["matrix", "--allow-large"],
    },
    Bad { name: "id with a path separator", from: "id = \"tiny\"", to: "id = \"../tiny\"", args: &[], env: &[], expect: &["experiment.id", "../tiny"] },
    Bad { name: "id with a space", from: "id = \"tiny\"", to: "id = \"tiny run\"", args: &[], env: &[], expect: &["experiment.id"] },
    Bad { name: "NaN value", from: "default_f = 100.0", to: "default_f = nan", args: &[], env: &[], expect: &["model.crystal.default_f", "NaN"] },
    Bad { name: "infinite value", from: "distance_mm = 100.0", to: "distance_mm = inf", args: &[], env: &[], expect: &["model.detector.distance_mm", "inf"] },
    Bad { name: "unknown probe kind", from: "kind = \"gradcheck\"", to: "kind = \"gradient\"", args: &[], env: &[], expect: &["probe.1.kind", "gradient"] },
    Bad { name: "unknown probe setting", from: "kind = \"gradcheck\"", to: "kind = \"gradcheck\"\natoll = 1e-5", args: &[], env: &[], expect: &["probe.1.atoll"] },
    Bad { name: "negative tolerance", from: "kind = \"gradcheck\"", to: "kind = \"gradcheck\"\natol = -1.0", args: &[], env: &[], expect: &["probe.1.atol", "-1"] },
    Bad { name: "missing experiment id", from: "id = \"tiny\"", to: "", args: &[], env: &[], expect: &["experiment.id"] },
    Bad { name: "unknown matrix key", from: "[matrix]", to: "[matrix]\ndevices = [\"cpu\"]", args: &[], env: &[], expect: &["matrix.devices"] },
    Bad { name: "unknown include key", from: "[matrix]", to: "[matrix]\ninclude = [{ devise = \"cpu\" }]", args: &[], env: &[], expect: &["matrix.include.0.devise"] },
    Bad { name: "gradcheck without a parameter", from: "param = [\"cell_a\", \"distance\", \"default_f\"]\nexclude", to: "#exclude", args: &[], env: &[], expect: &["gradcheck", "param"] },
    Bad { name: "parity reference missing", from: "kind = \"gradcheck\"", to: "kind = \"parity\"\nreference = \"nope.bin\"", args: &[], env: &[], expect: &["probe.1.reference", "nope.bin"] },
    Bad { name: "bad nanobragg_args", from: "[model]", to: "[model]\nnanobragg_args = \"-cell 100 100\"", args: &[], env: &[], expect: &["model.nanobragg_args"] },
    Bad { name: "--set with a wrong type", from: "", to: "", args: &["--set", "model.crystal.default_f=lots"], env: &[], expect: &["--set", "model.crystal.default_f"] },
    Bad { name: "--set without =", from: "", to: "", args: &["--set", "model.crystal.default_f"], env: &[], expect: &["--set"] },
    Bad { name: "environment with a wrong type", from: "", to: "", args: &[], env: &[("RUNNER_MODEL__BEAM__WAVELENGTH_A", "blue")], expect: &["model.beam.wavelength_a", "blue"] },
    Bad { name: "unknown --only key", from: "", to: "", args: &["--only", "colour=red"], env: &[], expect: &["--only", "colour"] },
    Bad { name: "--only matching nothing", from: "", to: "", args: &["--only", "device=cuda"], env: &[], expect: &["--only", "no cell"] },
    Bad { name: "--resume of a non-bundle", from: "", to: "", args: &["--resume", "/nonexistent-bundle"], env: &[], expect: &["--resume"] },
    Bad { name: "unknown --require-device", from: "", to: "", args: &["--require-device", "tpu"], env: &[], expect: &["--require-device", "tpu"] },
];

fn assert_no_bundle(out: &Path, name: &str) {
    if out.exists() {
        let n = fs::read_dir(out).unwrap().count();
        assert_eq!(n, 0, "{name}: something was left in {}", out.display());
    }
}

#[test]
fn runner_bad_inputs_exit_2_naming_the_key_and_leave_no_bundle() {
    assert!(BAD.len() >= 20);
    for b in BAD {
        let tmp = tempfile::tempdir().unwrap();
        let text = if b.from.is_empty() {
            TINY.to_string()
        } else {
            assert!(
                TINY.contains(b.from),
                "{}: mutation source not in TINY",
                b.name
            );
            TINY.replacen(b.from, b.to, 1)
        };
        let file = write(tmp.path(), "tiny.toml", &text);
        let out = tmp.path().join("runs");
        let mut c = runner();
        c.arg("run").arg(&file).arg("--out").arg(&out).args(b.args);
        for (k, v) in b.env {
            c.env(k, v);
        }
        let (code, stdout, stderr) = run_cmd(c);
        assert_eq!(
            code, 2,
            "{}: exit {code}\nstdout: {stdout}\nstderr: {stderr}",
            b.name
        );
        for e in b.expect {
            assert!(
                stderr.contains(e),
                "{}: message lacks '{e}':\n{stderr}",
                b.name
            );
        }
        assert!(stdout.trim().is_empty(), "{}: stdout {stdout}", b.name);
        assert_no_bundle(&out, b.name);
    }
}

#[test]
fn runner_bad_inputs_outside_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    // Missing file.
    let mut c = runner();
    c.arg("run")
        .arg(tmp.path().join("absent.toml"))
        .arg("--out")
        .arg(tmp.path().join("runs"));
    let (code, _, stderr) = run_cmd(c);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("absent.toml") && stderr.contains("not found"),
        "{stderr}"
    );
    assert_no_bundle(&tmp.path().join("runs"), "missing file");

    // Unwritable output folder (a path below a regular file).
    write(tmp.path(), "tiny.toml", TINY);
    let blocker = write(tmp.path(), "blocker", "a file\n");
    let mut c = runner();
    c.arg("run")
        .arg(tmp.path().join("tiny.toml"))
        .arg("--out")
        .arg(blocker.join("runs"));
    let (code, _, stderr) = run_cmd(c);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--out"), "{stderr}");
    assert_eq!(fs::read_to_string(&blocker).unwrap(), "a file\n");

    // validate and plan agree on bad input.
    let bad = write(
        tmp.path(),
        "bad.toml",
        &TINY.replace("device = [\"cpu\"]", "device = [\"gpu\"]"),
    );
    for sub in ["validate", "plan"] {
        let mut c = runner();
        c.arg(sub).arg(&bad);
        let (code, _, stderr) = run_cmd(c);
        assert_eq!(code, 2, "{sub}");
        assert!(stderr.contains("matrix.device"), "{sub}: {stderr}");
    }
}
