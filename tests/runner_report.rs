//! What a bundle says at a glance, through the built binary on real
//! experiment files: results.csv loads as typed columns (one per axis, the
//! ROI as four, each probe kind's figures by name), summary.md has a
//! section per probe kind, the resolved configuration and a headline that
//! counts skipped cells, and benchmark cells never share the machine.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

#[macro_use]
mod common;
use common::*;

fn run(file: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let mut c = runner();
    c.arg("run").arg(file).arg("--out").arg(out).args(extra);
    let (code, stdout, stderr) = run_cmd(c);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    last_line(&stdout)
}

/// results.csv as (header, rows of header -> field), read with the csv crate.
fn read_csv(bundle: &Path) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut r = csv::Reader::from_path(bundle.join("results.csv")).unwrap();
    let head: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            assert_eq!(rec.len(), head.len(), "every row has every column");
            head.iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect();
    (head, rows)
}

const SWEEP: &str = concat!(
    r#"
[experiment]
id = "report-sweep"
"#,
    small_model!(),
    r#"
[matrix]
param = ["cell_a", "distance"]
"model.crystal.n_cells" = [[4.0, 4.0, 4.0], [5.0, 5.0, 5.0]]

[[probe]]
kind = "gradcheck"
require_nonzero = false

[[probe]]
kind = "simulate"
"#
);

#[test]
fn results_csv_has_one_typed_value_per_column() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "sweep.toml", SWEEP);
    let bundle = run(&file, &tmp.path().join("runs"), &[]);
    let (head, rows) = read_csv(&bundle);
    // gradcheck: 2 params x 2 n_cells; simulate uses no param: 2 n_cells.
    assert_eq!(rows.len(), 6);
    for col in [
        "id",
        "device",
        "dtype",
        "param",
        "roi_fast_min",
        "roi_fast_max",
        "roi_slow_min",
        "roi_slow_max",
        "model.crystal.n_cells[0]",
        "model.crystal.n_cells[1]",
        "model.crystal.n_cells[2]",
        "loss",
        "grad_ad",
        "grad_fd",
        "rel_err",
        "image_sum",
        "image_max",
        "cell_wall_s",
        "ran_alone",
    ] {
        assert!(head.iter().any(|h| h == col), "column {col} in {head:?}");
    }
    for gone in ["roi", "seconds"] {
        assert!(
            !head.iter().any(|h| h == gone),
            "no `{gone}` column: {head:?}"
        );
    }
    let text = ["id", "probe", "kind", "status", "device", "dtype", "param"];
    let free = ["engine", "reason"];
    for row in &rows {
        for (k, v) in row {
            assert!(
                !v.contains(' ') || free.contains(&k.as_str()),
                "{k} = {v:?}: one value"
            );
            if text.contains(&k.as_str()) || free.contains(&k.as_str()) || v.is_empty() {
                continue;
            }
            if k == "ran_alone" {
                assert!(v == "true" || v == "false", "{k} = {v}");
                continue;
            }
            assert!(v.parse::<f64>().is_ok(), "{k} = {v:?} is a number");
        }
        let f = |k: &str| row[k].parse::<f64>().unwrap();
        assert_eq!(
            [
                f("roi_fast_min"),
                f("roi_fast_max"),
                f("roi_slow_min"),
                f("roi_slow_max")
            ],
            [0.0, 1.0, 7.0, 8.0]
        );
        assert!(f("cell_wall_s") >= 0.0);
        // The model axis value is in its columns, as in the cell id.
        let n = &row["model.crystal.n_cells[0]"];
        assert!(n.parse::<f64>().unwrap() >= 4.0, "{row:?}");
        assert!(
            row["id"].contains(&format!("n_cells_{n}_{n}_{n}")),
            "{row:?}"
        );
        match row["kind"].as_str() {
            "simulate" => {
                // The image sum is named as such, not a `loss`.
                assert!(row["loss"].is_empty(), "{row:?}");
                assert!(f("image_sum") > 0.0, "{row:?}");
            }
            "gradcheck" => {
                assert!(row["image_sum"].is_empty(), "{row:?}");
                assert!(f("loss") > 0.0 && f("grad_ad") != 0.0, "{row:?}");
            }
            k => panic!("kind {k}"),
        }
    }
    // results.json carries the same figures by name.
    let list: Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("results.json")).unwrap()).unwrap();
    let sim = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "simulate")
        .unwrap();
    assert!(sim["figures"]["image_sum"].as_f64().unwrap() > 0.0, "{sim}");
    assert!(sim["cell_wall_s"].as_f64().is_some(), "{sim}");
}

const BENCH: &str = r#"
[experiment]
id = "report-bench"

[model.crystal]
cell = [100.0, 100.0, 100.0, 90.0, 90.0, 90.0]
n_cells = [5.0, 5.0, 5.0]
default_f = 100.0
mosaic_spread_deg = 0.5
mosaic_domains = 4

[model.beam]
wavelength_a = 6.2

[model.detector]
convention = "mosflm"
pixel_size_mm = 0.1
fpixels = 96
spixels = 96
distance_mm = 100.0

[model.goniometer]
osc_deg = 0.1
phisteps = 4

[matrix]
dtype = ["float64", "float32"]
"model.crystal.n_cells" = [[4.0, 4.0, 4.0], [5.0, 5.0, 5.0], [6.0, 6.0, 6.0]]

[[probe]]
kind = "simulate"

[[probe]]
kind = "benchmark"
repeats = 3
"#;

/// (start, end) of a cell from its timing.json (UTC, millisecond strings
/// of one format: they order as text).
fn span(bundle: &Path, id: &str) -> (String, String) {
    let t: Value = serde_json::from_str(
        &fs::read_to_string(bundle.join("cells").join(id).join("timing.json")).unwrap(),
    )
    .unwrap();
    (
        t["started"].as_str().unwrap().to_string(),
        t["finished"].as_str().unwrap().to_string(),
    )
}

#[test]
fn benchmark_cells_run_alone_under_jobs_2() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "bench.toml", BENCH);
    let bundle = run(&file, &tmp.path().join("runs"), &["--jobs", "2"]);
    let ids: Vec<String> = results(&bundle).into_keys().collect();
    assert_eq!(ids.len(), 12);
    let bench: Vec<&String> = ids.iter().filter(|i| i.starts_with("benchmark-")).collect();
    assert_eq!(bench.len(), 6);
    for b in &bench {
        let r: Value = serde_json::from_str(
            &fs::read_to_string(bundle.join("cells").join(b.as_str()).join("result.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(r["status"], "PASS", "{r}");
        assert_eq!(r["ran_alone"], true, "{r}");
        let (bs, be) = span(&bundle, b);
        assert!(bs <= be);
        for other in ids.iter().filter(|i| i != b) {
            let (os, oe) = span(&bundle, other);
            assert!(
                oe <= bs || os >= be,
                "{other} ({os} to {oe}) overlapped benchmark {b} ({bs} to {be})"
            );
        }
    }
    // The simulate cells did share the machine (two at a time): the
    // schedule is still parallel outside the benchmarks.
    let sims: Vec<(String, String)> = ids
        .iter()
        .filter(|i| i.starts_with("simulate-"))
        .map(|i| span(&bundle, i))
        .collect();
    let r: Value = serde_json::from_str(
        &fs::read_to_string(
            bundle
                .join("cells")
                .join(ids.iter().find(|i| i.starts_with("simulate-")).unwrap())
                .join("result.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(r.get("ran_alone").is_none(), "{r}");
    assert_eq!(sims.len(), 6);

    let summary = fs::read_to_string(bundle.join("summary.md")).unwrap();
    assert!(summary.contains("## Benchmarks"), "{summary}");
    assert!(
        summary.contains("Every benchmark cell ran alone"),
        "{summary}"
    );
    let section = &summary[summary.find("## Benchmarks").unwrap()..];
    let section = &section[..section[3..].find("\n## ").unwrap()];
    let table: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| `benchmark-"))
        .collect();
    assert_eq!(table.len(), 6, "{summary}");
    // The fastest cell has ratio 1.00 and no cell is below it (two cells
    // within 0.5% of each other both print 1.00); every row says it ran alone.
    let ratios: Vec<f64> = table
        .iter()
        .map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            cols[cols.len() - 3].parse().unwrap()
        })
        .collect();
    assert!(ratios.iter().all(|r| *r >= 1.0), "{summary}");
    assert!(ratios.contains(&1.0), "{summary}");
    assert!(table.iter().all(|l| l.ends_with("| yes |")), "{summary}");
    // The beam centre was not given: the value used is printed, not "default".
    assert!(!summary.contains("default x default"), "{summary}");
    assert!(
        summary.contains("beam centre 4.85 x 4.85 mm"),
        "the MOSFLM default centre (96 x 0.1 + 0.1) / 2: {summary}"
    );
    let (_, rows) = read_csv(&bundle);
    for row in rows.iter().filter(|r| r["kind"] == "benchmark") {
        assert_eq!(row["ran_alone"], "true");
        let median: f64 = row["median_s"].parse().unwrap();
        let rate: f64 = row["pixel_samples_per_s"].parse().unwrap();
        let samples: f64 = row["pixel_samples"].parse().unwrap();
        assert!(
            median > 0.0 && (rate * median / samples - 1.0).abs() < 1e-9,
            "{row:?}"
        );
        assert!(!row.contains_key("loss"), "no image sum in a loss column");
    }
}

#[test]
fn summary_has_parity_figures_and_a_headline_with_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let golden = manifest_dir().join("tests/golden/AT-PARALLEL-001__detpixels-64.bin");
    let file = write(
        tmp.path(),
        "parity.toml",
        &format!(
            r#"
[experiment]
id = "report-parity"

[model]
nanobragg_args = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 3 -pixel 0.1 -distance 100 -mosflm -seed 1 -detpixels 64 -Xbeam 3.2 -Ybeam 3.2 -phi_carryover c-parity"

[matrix]
device = ["cpu", "cuda:15"]

[[probe]]
kind = "parity"
reference = "{}"
"#,
            golden.display()
        ),
    );
    let mut c = runner();
    c.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(tmp.path().join("runs"));
    let (code, stdout, stderr) = run_cmd(c);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let bundle = last_line(&stdout);
    let summary = fs::read_to_string(bundle.join("summary.md")).unwrap();
    let gpu_id = results(&bundle)
        .into_keys()
        .find(|k| k.contains("cuda"))
        .unwrap();
    let gpu: Value = serde_json::from_str(
        &fs::read_to_string(bundle.join("cells").join(gpu_id).join("result.json")).unwrap(),
    )
    .unwrap();
    if gpu["status"] == "SKIPPED" {
        let first = summary.lines().next().unwrap();
        assert_eq!(
            first, "# report-parity: PASS (1 of 2 cells skipped: no GPU)",
            "{summary}"
        );
        assert!(
            stderr.contains("runner: PASS (1 of 2 cells skipped: no GPU):"),
            "{stderr}"
        );
    }
    assert!(summary.contains("beam centre 3.2 x 3.2 mm"), "{summary}");
    // Parity figures: a section with the correlation, and named CSV columns.
    assert!(
        summary.contains("## Parity with reference images"),
        "{summary}"
    );
    let (_, rows) = read_csv(&bundle);
    let cpu = rows.iter().find(|r| r["device"] == "cpu").unwrap();
    let corr: f64 = cpu["correlation"].parse().unwrap();
    assert!(corr >= 0.999999, "{cpu:?}");
    let ratio: f64 = cpu["sum_ratio"].parse().unwrap();
    assert!((ratio - 1.0).abs() <= 1e-5, "{cpu:?}");
    let line = summary
        .lines()
        .find(|l| l.starts_with("| `parity-cpu-float64`"))
        .unwrap();
    assert!(line.contains(&format!("{corr:.10}")), "{line}");
}
