//! Pictures and arrays of a run, through the built binary: every probe that
//! renders leaves PNGs of the whole detector (a small ROI outlined in it)
//! with a title, axes, a colour bar and its value range in the PNG text;
//! derivatives on a symmetric scale, the parity difference scaled to the
//! reference's maximum; summary.md links them; the same run gives the same
//! bytes. Every .npy a run writes loads with the shape and dtype result.json
//! states (and with numpy, where python3 has it).

use assert_cmd::Command;
use ndarray_npy::ReadNpyExt;
use serde_json::Value;
use std::collections::BTreeMap;
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
param = ["cell_a", "distance"]
roi = [[10, 29, 30, 39]]

[[probe]]
kind = "parity"
reference = "{}"
save_images = true

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

/// Run the pictures experiment into `out`; the bundle folder.
fn run_pictures(tmp: &Path, out: &str) -> PathBuf {
    let file = tmp.join("pictures.toml");
    fs::write(
        &file,
        experiment(&manifest_dir().join("tests/golden/AT-PARALLEL-001__detpixels-64.bin")),
    )
    .unwrap();
    let mut c = Command::cargo_bin("runner").unwrap();
    c.arg("run").arg(&file).arg("--out").arg(tmp.join(out));
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(stdout.trim_end().lines().last().unwrap())
}

fn result(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("result.json")).unwrap()).unwrap()
}

fn text(png: &Path) -> BTreeMap<String, String> {
    braggrun::io::picture::png_text(&fs::read(png).unwrap())
        .unwrap()
        .into_iter()
        .collect()
}

const SIM: &str = "simulate-cpu-float64-roi_10_29_30_39";
const PARITY: &str = "parity-cpu-float64-roi_10_29_30_39";
const GRAD: &str = "gradcheck-cpu-float64-cell_a-roi_10_29_30_39";

#[test]
fn probes_draw_the_whole_detector_with_colour_bar_and_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = run_pictures(tmp.path(), "runs");
    let cells = bundle.join("cells");
    // One simulate and one parity cell (they take no parameter), a
    // gradcheck cell per parameter.
    let mut ids: Vec<String> = fs::read_dir(&cells)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            GRAD,
            "gradcheck-cpu-float64-distance-roi_10_29_30_39",
            PARITY,
            SIM
        ]
    );
    let summary = fs::read_to_string(bundle.join("summary.md")).unwrap();
    let mut pngs = 0;
    for id in &ids {
        let dir = cells.join(id);
        let files: Vec<String> = result(&dir)["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        // Every file in the cell folder is listed, and every listed file is there.
        for e in fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            let own = ["result.json", "timing.json", "log.txt", "stdout.txt"];
            assert!(
                files.contains(&name) || own.contains(&name.as_str()),
                "{id}: {name} written but not in result.json files {files:?}"
            );
        }
        for f in files.iter().filter(|f| f.ends_with(".png")) {
            pngs += 1;
            let p = dir.join(f);
            let (w, h, colour) = png_info(&p);
            assert_eq!(colour, png::ColorType::Rgb, "{id}/{f}");
            // The 64 x 64 detector enlarged, plus axes and colour bar.
            assert!(w > 64 * 4 && h > 64 * 4, "{id}/{f}: {w} x {h}");
            let t = text(&p);
            for k in [
                "Title",
                "value_min",
                "value_max",
                "colour_min",
                "colour_max",
            ] {
                assert!(t.contains_key(k), "{id}/{f}: no {k} in {t:?}");
            }
            assert!(t["Title"].contains(id.as_str()), "{id}/{f}: {t:?}");
            // Full-detector context: the detector's size, the ROI outlined.
            assert_eq!(t["fast_pixels"], "64", "{id}/{f}");
            assert_eq!(t["slow_pixels"], "64", "{id}/{f}");
            assert!(t["roi"].contains("10"), "{id}/{f}: roi {:?}", t["roi"]);
            let lo: f64 = t["value_min"].parse().unwrap();
            let hi: f64 = t["value_max"].parse().unwrap();
            assert!(lo.is_finite() && hi.is_finite() && lo <= hi, "{id}/{f}");
            if f.starts_with("d_") || f == "diff.png" {
                // Symmetric diverging scale.
                let c0: f64 = t["colour_min"].parse().unwrap();
                let c1: f64 = t["colour_max"].parse().unwrap();
                assert!(c1 > 0.0 && c0 == -c1, "{id}/{f}: {c0} .. {c1}");
            }
            assert!(
                summary.contains(&format!("](cells/{id}/{f})")),
                "{id}/{f} linked:\n{summary}"
            );
        }
    }
    // simulate: image + d_ per parameter; parity: image, reference, diff;
    // gradcheck: image + d_, twice.
    assert_eq!(pngs, 3 + 3 + 2 + 2);

    // The difference map is scaled to the reference's maximum over the ROI,
    // the scale the probe's max_rel_diff check uses.
    let parity = result(&cells.join(PARITY));
    let t = text(&cells.join(PARITY).join("diff.png"));
    let refmax: f64 = t["reference_max_abs"].parse().unwrap();
    let want = parity["details"]["reference_max"].as_f64().unwrap();
    assert!((refmax - want).abs() <= 1e-12 * want, "{refmax} vs {want}");
    let maxrel: f64 = t["max_relative_difference"].parse().unwrap();
    let want = parity["details"]["max_rel_diff"].as_f64().unwrap();
    assert!(
        (maxrel - want).abs() <= 1e-9 * want.max(1e-300),
        "{maxrel} vs {want}"
    );
    // Colours saturate at the pass limit (max_rel_diff, default 1e-5).
    assert_eq!(t["colour_max"].parse::<f64>().unwrap(), 1e-5);

    // The simulate cell renders both derivatives at once.
    let sim = result(&cells.join(SIM));
    assert_eq!(
        sim["details"]["derivative_params"],
        serde_json::json!(["cell_a", "distance"])
    );

    // The bundle has no plot here (nothing swept); the same run again gives
    // the same bytes.
    let b2 = run_pictures(tmp.path(), "runs2");
    for id in &ids {
        for e in fs::read_dir(cells.join(id)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            if name.ends_with(".png") || name.ends_with(".npy") || name.ends_with(".bin") {
                assert_eq!(
                    fs::read(cells.join(id).join(&name)).unwrap(),
                    fs::read(b2.join("cells").join(id).join(&name)).unwrap(),
                    "{id}/{name}"
                );
            }
        }
    }
}

/// The `descr` and `shape` of a .npy header, as written.
fn npy_header(path: &Path) -> (String, Vec<usize>) {
    let b = fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY", "{}", path.display());
    let len = u16::from_le_bytes([b[8], b[9]]) as usize;
    let h = String::from_utf8_lossy(&b[10..10 + len]).to_string();
    let descr = h
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let shape = h
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (descr.to_string(), shape)
}

#[test]
fn every_npy_loads_with_the_shape_and_dtype_result_json_states() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = run_pictures(tmp.path(), "runs");
    let numpy = std::process::Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !numpy {
        eprintln!("numpy part skipped: python3 with numpy is not installed");
    }
    let mut seen = 0;
    for e in fs::read_dir(bundle.join("cells")).unwrap() {
        let dir = e.unwrap().path();
        let id = dir.file_name().unwrap().to_string_lossy().to_string();
        let r = result(&dir);
        let files = r["files"].as_array().unwrap();
        let arrays = r["details"]["arrays"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let on_disk: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".npy"))
            .collect();
        assert_eq!(
            on_disk.len(),
            arrays.len(),
            "{id}: {on_disk:?} vs {arrays:?}"
        );
        for a in &arrays {
            let name = a["file"].as_str().unwrap();
            assert!(files.iter().any(|f| f == name), "{id}: {name} not in files");
            let shape: Vec<usize> = a["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(a["dtype"], "float64", "{id}/{name}");
            let p = dir.join(name);
            assert_eq!(
                npy_header(&p),
                ("<f8".to_string(), shape.clone()),
                "{id}/{name}"
            );
            // The float32 .bin twin holds the same pixels.
            let twins: Vec<(String, Vec<f64>)> = match shape.len() {
                2 => {
                    let x: ndarray::Array2<f64> =
                        ndarray::Array2::read_npy(fs::File::open(&p).unwrap()).unwrap();
                    assert_eq!(x.shape(), &shape[..], "{id}/{name}");
                    assert_eq!(a["axes"], serde_json::json!(["slow", "fast"]));
                    vec![("image.bin".into(), x.iter().copied().collect())]
                }
                3 => {
                    let x: ndarray::Array3<f64> =
                        ndarray::Array3::read_npy(fs::File::open(&p).unwrap()).unwrap();
                    assert_eq!(x.shape(), &shape[..], "{id}/{name}");
                    assert_eq!(a["axes"], serde_json::json!(["param", "slow", "fast"]));
                    let params = a["params"].as_array().unwrap();
                    assert_eq!(
                        params,
                        r["details"]["derivative_params"].as_array().unwrap()
                    );
                    assert_eq!(params.len(), shape[0]);
                    params
                        .iter()
                        .zip(x.outer_iter())
                        .map(|(q, plane)| {
                            (
                                format!("d_{}.bin", q.as_str().unwrap()),
                                plane.iter().copied().collect(),
                            )
                        })
                        .collect()
                }
                n => panic!("{id}/{name}: {n} dimensions"),
            };
            for (bin, values) in twins {
                let raw = fs::read(dir.join(&bin)).unwrap();
                let f32s: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                assert_eq!(f32s.len(), values.len(), "{id}/{bin}");
                assert!(
                    f32s.iter().zip(&values).all(|(a, b)| *a == *b as f32),
                    "{id}/{bin} differs from {name}"
                );
                assert!(values.iter().any(|v| *v != 0.0), "{id}/{name}: all zero");
            }
            if numpy {
                let out = std::process::Command::new("python3")
                    .args([
                        "-c",
                        "import numpy, sys\na = numpy.load(sys.argv[1])\nprint(a.shape, a.dtype)",
                    ])
                    .arg(&p)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                let shape_py = if shape.len() == 1 {
                    format!("({},)", shape[0])
                } else {
                    format!(
                        "({})",
                        shape
                            .iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout).trim(),
                    format!("{shape_py} float64"),
                    "{id}/{name}"
                );
            }
            seen += 1;
        }
    }
    // simulate: image.npy and d_stack.npy; parity (save_images): image.npy.
    assert_eq!(seen, 3);
}
