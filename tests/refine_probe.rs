//! The `refine` probe (issue 14) through the built binary on real
//! experiment files: a recovery that passes (with its trajectory, result
//! details, pictures, summary section and results.csv columns, and a bundle
//! that verifies), a fit that fails with its reason, the observed-image
//! readers, and bad input (missing observed file, unknown parameter, bad
//! bounds) refused with exit 2 naming the key. Small detectors: every fit
//! here takes well under a second.

use serde_json::Value;
use std::fs;
use std::path::Path;

#[macro_use]
mod common;
use common::*;

/// A triclinic crystal with misset on a 32 x 32 detector of 0.4 mm pixels.
const MODEL: &str = r#"
[model]
nanobragg_args = "-default_F 100 -cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 100 -pixel 0.4 -detpixels 32 -mosflm -oversample 1"
"#;

/// Five parameters from the issue's perturbations.
const PARAMS: &str = r#"params = [
  { param = "cell_a", start = { relative = 0.003 } },
  { param = "misset_z", start = { offset = -0.2 } },
  { param = "distance", start = { relative = 0.005 }, lower = 90.0, upper = 110.0 },
  { param = "beam_center_f", start = { offset = -0.2 } },
  { param = "fluence", start = { relative = 0.2 } },
]
"#;

fn experiment(id: &str, probes: &str) -> String {
    format!("[experiment]\nid = \"{id}\"\n{MODEL}\n{probes}")
}

fn run(file: &Path, out: &Path) -> (i32, String, String) {
    let mut c = runner();
    c.arg("run").arg(file).arg("--out").arg(out);
    run_cmd(c)
}

fn record(bundle: &Path, cell: &str) -> Value {
    let p = bundle.join("cells").join(cell).join("result.json");
    serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn recovery_probe(name: &str, extra: &str) -> String {
    format!(
        "[[probe]]\nkind = \"refine\"\nname = \"{name}\"\nobserved = \"synthetic\"\n{extra}\n{PARAMS}"
    )
}

#[test]
fn synthetic_recovery_passes_and_its_bundle_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "refine.toml",
        &experiment(
            "refine-ok",
            &(recovery_probe("exact", "tolerance = { relative = 1e-6 }")
                + &recovery_probe(
                    "noisy",
                    "noise_seed = -3\nscale = 100.0\nobjective = \"poisson_nll\"\ntolerance = { standard_errors = 3.0 }",
                )),
        ),
    );
    let (code, stdout, stderr) = run(&file, &tmp.path().join("runs"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let bundle = last_line(&stdout);

    let r = record(&bundle, "exact-cpu-float64");
    assert_eq!(r["status"], "PASS", "{r}");
    let d = &r["details"];
    assert_eq!(d["converged"], true);
    assert!(d["iterations"].as_u64().unwrap() <= 30);
    let params = d["params"].as_array().unwrap();
    assert_eq!(params.len(), 5);
    for p in params {
        let (start, fin, truth) = (
            p["start"].as_f64().unwrap(),
            p["final"].as_f64().unwrap(),
            p["truth"].as_f64().unwrap(),
        );
        // the fit moved from a start off the truth back onto it
        assert!((start - truth).abs() > 1e3 * (fin - truth).abs(), "{p}");
        assert!(p["rel_error"].as_f64().unwrap() <= 1e-6, "{p}");
        assert!(p["se"].as_f64().unwrap() > 0.0, "{p}");
        assert_eq!(p["within_tolerance"], true);
    }
    let corr = d["correlation"].as_array().unwrap();
    assert_eq!(corr.len(), 5);
    for (i, row) in corr.iter().enumerate() {
        assert!((row[i].as_f64().unwrap() - 1.0).abs() < 1e-9);
    }
    assert!(d["loss_final"].as_f64().unwrap() < 1e-8 * d["loss_start"].as_f64().unwrap());

    // trajectory.csv: iteration, accepted, loss, every parameter, damping, step norm
    let cell = bundle.join("cells/exact-cpu-float64");
    let traj = fs::read_to_string(cell.join("trajectory.csv")).unwrap();
    let head = traj.lines().next().unwrap();
    assert_eq!(
        head,
        "iteration,accepted,loss,cell_a,misset_z,distance,beam_center_f,fluence,damping,step_norm"
    );
    assert!(traj.lines().count() >= 3);
    for png in [
        "observed.png",
        "model.png",
        "residual.png",
        "convergence.png",
    ] {
        assert!(png_dims(&cell.join(png)).0 > 100, "{png}");
    }

    let noisy = record(&bundle, "noisy-cpu-float64");
    assert_eq!(noisy["status"], "PASS", "{noisy}");
    let pulls: Vec<f64> = noisy["details"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pull"].as_f64().unwrap())
        .collect();
    // noise moved the estimates off the truth, by about a standard error
    assert!(pulls.iter().all(|x| x.abs() <= 3.0), "{pulls:?}");
    assert!(pulls.iter().any(|x| x.abs() > 1e-3), "{pulls:?}");

    let summary = fs::read_to_string(bundle.join("summary.md")).unwrap();
    assert!(summary.contains("## Refinement"), "{summary}");
    assert!(summary.contains("| cell_a | Å |"), "{summary}");
    let csv = fs::read_to_string(bundle.join("results.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for col in [
        "iterations",
        "loss_final",
        "worst_rel_error",
        "max_abs_pull",
    ] {
        assert!(header.split(',').any(|c| c == col), "{header}");
    }

    let mut v = runner();
    v.arg("verify").arg(&bundle);
    let (code, stdout, _) = run_cmd(v);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn a_fit_stopped_by_its_iteration_cap_fails_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "refine.toml",
        &experiment(
            "refine-fail",
            &recovery_probe("capped", "max_iterations = 1"),
        ),
    );
    let (code, stdout, stderr) = run(&file, &tmp.path().join("runs"));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let bundle = last_line(&stdout);
    let r = record(&bundle, "capped-cpu-float64");
    assert_eq!(r["status"], "FAIL", "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("did not converge in 1 iterations"),
        "{reason}"
    );
    // and the parameters it left off the truth are named
    assert!(reason.contains("(tolerance 1e-5 relative)"), "{reason}");
    assert_eq!(r["details"]["converged"], false);
}

/// The same image as a float file, an .npy and an SMV: the readers agree
/// with the synthetic truth (noise-free, so every fit recovers it).
#[test]
fn observed_files_are_read_in_each_format() {
    let tmp = tempfile::tempdir().unwrap();
    // render the truth with the simulate probe
    let sim = write(
        tmp.path(),
        "sim.toml",
        &experiment("truth", "[[probe]]\nkind = \"simulate\"\n"),
    );
    let (code, stdout, stderr) = run(&sim, &tmp.path().join("runs"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let cell = last_line(&stdout).join("cells/simulate-cpu-float64");
    fs::copy(cell.join("image.bin"), tmp.path().join("truth.bin")).unwrap();
    fs::copy(cell.join("image.npy"), tmp.path().join("truth.npy")).unwrap();
    let probes = ["truth.bin", "truth.npy"]
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "[[probe]]\nkind = \"refine\"\nname = \"file{i}\"\nobserved = \"{f}\"\ntruth_is_config = true\ntolerance = {{ relative = 1e-5 }}\n{PARAMS}"
            )
        })
        .collect::<String>();
    let file = write(tmp.path(), "files.toml", &experiment("files", &probes));
    let (code, stdout, stderr) = run(&file, &tmp.path().join("runs"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let bundle = last_line(&stdout);
    for (i, what) in ["float file", ".npy array"].iter().enumerate() {
        let r = record(&bundle, &format!("file{i}-cpu-float64"));
        assert_eq!(r["status"], "PASS", "{r}");
        assert!(
            r["details"]["observed"].as_str().unwrap().contains(what),
            "{r}"
        );
    }
}

/// Exit 2 and the message names the file, the key and the value.
fn refused(probe_body: &str, want: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let text = experiment(
        "bad",
        &format!("[[probe]]\nkind = \"refine\"\n{probe_body}"),
    );
    let file = write(tmp.path(), "bad.toml", &text);
    for sub in ["validate", "run"] {
        let mut c = runner();
        c.arg(sub).arg(&file);
        if sub == "run" {
            c.arg("--out").arg(tmp.path().join("runs"));
        }
        let (code, stdout, stderr) = run_cmd(c);
        assert_eq!(code, 2, "{sub}: {stdout}\n{stderr}");
        assert!(stderr.contains("bad.toml"), "{sub}: {stderr}");
        for w in want {
            assert!(stderr.contains(w), "{sub}: want '{w}' in: {stderr}");
        }
    }
    assert!(
        !tmp.path().join("runs").exists() || bundles_under(&tmp.path().join("runs")).is_empty()
    );
}

#[test]
fn a_missing_observed_file_is_refused_naming_key_and_file() {
    refused(
        &format!("observed = \"no-such-image.bin\"\n{PARAMS}"),
        &["probe.0.observed", "no-such-image.bin", "not found"],
    );
}

#[test]
fn an_unknown_parameter_is_refused_naming_key_and_value() {
    refused(
        "observed = \"synthetic\"\nparams = [{ param = \"cell_q\", start = { relative = 0.01 } }]\n",
        &["probe.0", "params", "cell_q"],
    );
}

#[test]
fn bad_bounds_are_refused_naming_key_and_values() {
    refused(
        "observed = \"synthetic\"\nparams = [{ param = \"distance\", lower = 120.0, upper = 80.0 }]\n",
        &["probe.0.params.0.lower", "120", "80"],
    );
    refused(
        "observed = \"synthetic\"\nparams = [{ param = \"distance\", start = { absolute = 150.0 }, upper = 110.0 }]\n",
        &["probe.0.params.0.start", "150", "110"],
    );
}

#[test]
fn fluence_and_default_f_together_are_refused_as_degenerate() {
    refused(
        "observed = \"synthetic\"\nparams = [{ param = \"fluence\" }, { param = \"default_f\" }]\n",
        &["probe.0.params", "degenerate"],
    );
}
