//! Pictures: every probe that renders an image leaves PNGs in its cell folder
//! (image on a log scale, derivatives and the parity difference on a
//! diverging scale), they decode with the intended dimensions, summary.md
//! links them, and the line plots are deterministic.

use assert_cmd::Command;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

mod common;
use common::*;

fn experiment(reference: &Path) -> String {
    format!(
        r#"
[experiment]
id = "pictures"

[model]
nanobragg_args = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 3 -pixel 0.1 -distance 100 -mosflm -seed 1 -detpixels 64 -Xbeam 3.2 -Ybeam 3.2 -phi_carryover c-parity"

[matrix]
param = ["cell_a"]
roi = [[10, 29, 30, 39]]

[[probe]]
kind = "parity"
reference = "{}"

[[probe]]
kind = "gradcheck"
require_nonzero = false
atol = 1.0
rtol = 1.0

[[probe]]
kind = "simulate"
"#,
        reference.display()
    )
}

#[test]
fn probes_write_pngs_of_the_intended_size_and_link_them() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pictures.toml");
    fs::write(
        &file,
        experiment(&manifest_dir().join("tests/golden/AT-PARALLEL-001__detpixels-64.bin")),
    )
    .unwrap();
    let mut c = Command::cargo_bin("runner").unwrap();
    c.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(tmp.path().join("runs"));
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = PathBuf::from(stdout.trim_end().lines().last().unwrap());
    let cells = bundle.join("cells");
    let rgb = png::ColorType::Rgb;
    let gray = png::ColorType::Grayscale;
    // ROI fast 10..=29 (20 wide), slow 30..=39 (10 high).
    let parity = cells.join("parity-cpu-float64-cell_a-roi_10_29_30_39");
    assert_eq!(png_info(&parity.join("image.png")), (20, 10, gray));
    assert_eq!(png_info(&parity.join("reference.png")), (20, 10, gray));
    assert_eq!(png_info(&parity.join("diff.png")), (20, 10, rgb));
    let grad = cells.join("gradcheck-cpu-float64-cell_a-roi_10_29_30_39");
    assert_eq!(png_info(&grad.join("image.png")), (20, 10, gray));
    assert_eq!(png_info(&grad.join("d_cell_a.png")), (20, 10, rgb));
    let sim = cells.join("simulate-cpu-float64-cell_a-roi_10_29_30_39");
    assert_eq!(png_info(&sim.join("image.png")), (64, 64, gray));
    assert_eq!(png_info(&sim.join("image_log.png")), (64, 64, gray));
    assert_eq!(png_info(&sim.join("d_cell_a.png")), (64, 64, rgb));

    // result.json lists them; summary.md links them relatively.
    let summary = fs::read_to_string(bundle.join("summary.md")).unwrap();
    for (dir, names) in [
        (&parity, &["image.png", "reference.png", "diff.png"][..]),
        (&grad, &["image.png", "d_cell_a.png"][..]),
        (&sim, &["image.png", "image_log.png", "d_cell_a.png"][..]),
    ] {
        let r: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
        let id = dir.file_name().unwrap().to_string_lossy();
        for n in names {
            assert!(
                r["files"].as_array().unwrap().iter().any(|f| f == n),
                "{id}: {n} in files"
            );
            assert!(
                summary.contains(&format!("](cells/{id}/{n})")),
                "{id}/{n} linked:\n{summary}"
            );
        }
    }
    // A parity image equal to its reference has an all-white difference.
    let f = fs::File::open(parity.join("diff.png")).unwrap();
    let mut r = png::Decoder::new(f).read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    r.next_frame(&mut buf).unwrap();
    let non_white = buf.iter().filter(|&&b| b != 255).count();
    assert!(non_white < buf.len(), "mostly white");

    // Deterministic: the same run again gives the same PNG bytes.
    let mut c = Command::cargo_bin("runner").unwrap();
    c.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(tmp.path().join("runs2"));
    let out = c.output().unwrap();
    let b2 = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .to_string(),
    );
    for rel in [
        "parity-cpu-float64-cell_a-roi_10_29_30_39/diff.png",
        "simulate-cpu-float64-cell_a-roi_10_29_30_39/d_cell_a.png",
    ] {
        assert_eq!(
            fs::read(cells.join(rel)).unwrap(),
            fs::read(b2.join("cells").join(rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn line_plot_is_a_deterministic_png() {
    let tmp = tempfile::tempdir().unwrap();
    let series = vec![
        (
            "cpu".to_string(),
            vec![(1.0, 10.0), (2.0, 5.2), (4.0, 2.7), (8.0, 1.5)],
        ),
        ("cuda".to_string(), vec![(1.0, 0.5), (8.0, 0.45)]),
    ];
    let (a, b) = (tmp.path().join("a.png"), tmp.path().join("b.png"));
    braggrun::io::plot::line_plot_png(&a, &series, "threads", "seconds", true, true).unwrap();
    braggrun::io::plot::line_plot_png(&b, &series, "threads", "seconds", true, true).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_eq!(
        png_info(&a),
        (
            braggrun::io::plot::PLOT_WIDTH as u32,
            braggrun::io::plot::PLOT_HEIGHT as u32,
            png::ColorType::Rgb
        )
    );
    let lin = tmp.path().join("lin.png");
    braggrun::io::plot::line_plot_png(&lin, &series, "x", "y", false, false).unwrap();
    assert_eq!(png_info(&lin).0, 640);
    assert!(braggrun::io::plot::line_plot_png(&lin, &[], "x", "y", false, false).is_err());
}
