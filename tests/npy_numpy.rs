//! The .npy files braggrun writes, as numpy reads them: `numpy.load` gives
//! the shape, dtype and values written. Skipped (with a message) where
//! python3 with numpy is not installed.
mod common;

use braggrun::io::npy;
use std::process::Command;

fn numpy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// numpy's view of a file: "shape dtype value-at-index".
fn numpy_load(path: &std::path::Path, index: &str) -> String {
    let script = format!(
        "import numpy, sys\na = numpy.load(sys.argv[1])\nprint(a.shape, a.dtype, repr(float(a[{index}])))"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn numpy_load_reads_images_and_stacks() {
    if !numpy_available() {
        eprintln!("SKIP numpy_load_reads_images_and_stacks: python3 with numpy is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (s, f) = (3usize, 5usize);
    let img: Vec<f64> = (0..s * f).map(|i| 1.0 / (i as f64 + 3.0)).collect();
    let p = dir.path().join("img64.npy");
    npy::write_image(&p, &img, s, f).unwrap();
    // pixel (fast 4, slow 2) = index 2 * 5 + 4
    assert_eq!(
        numpy_load(&p, "2, 4"),
        format!("(3, 5) float64 {:?}", img[14])
    );

    let img32: Vec<f32> = img.iter().map(|&x| x as f32).collect();
    let p = dir.path().join("img32.npy");
    npy::write_image(&p, &img32, s, f).unwrap();
    assert_eq!(
        numpy_load(&p, "1, 0"),
        format!("(3, 5) float32 {:?}", img32[5] as f64)
    );

    let neg: Vec<f64> = img.iter().map(|x| -2.0 * x).collect();
    let p = dir.path().join("stack.npy");
    npy::write_stack(&p, &[&img, &neg], s, f).unwrap();
    assert_eq!(
        numpy_load(&p, "1, 2, 3"),
        format!("(2, 3, 5) float64 {:?}", neg[13])
    );
}

/// numpy's check of a whole bundle: every .npy a cell lists under
/// `details.arrays` is on disk (and nothing else is), loads with the listed
/// shape and dtype, is finite; image.npy equals image.bin to float32
/// rounding and each plane of d_stack.npy equals its d_<param>.bin. Prints
/// the number of arrays checked.
const CHECK_BUNDLE: &str = r#"
import glob, json, os, sys, numpy
bundle = sys.argv[1]
checked = 0
for rj in sorted(glob.glob(os.path.join(bundle, "cells", "*", "result.json"))):
    cell = os.path.dirname(rj)
    listed = json.load(open(rj)).get("details", {}).get("arrays", [])
    on_disk = sorted(os.path.basename(p) for p in glob.glob(os.path.join(cell, "*.npy")))
    assert sorted(a["file"] for a in listed) == on_disk, (rj, listed, on_disk)
    for a in listed:
        x = numpy.load(os.path.join(cell, a["file"]))
        assert list(x.shape) == a["shape"], (a, x.shape)
        assert str(x.dtype) == a["dtype"], (a, x.dtype)
        assert numpy.isfinite(x).all(), a
        if a["file"] == "image.npy":
            bin32 = numpy.fromfile(os.path.join(cell, "image.bin"), dtype="<f4")
            assert (x.astype(numpy.float32).ravel() == bin32).all(), cell
            assert x.sum() > 0, cell
        if a["file"] == "d_stack.npy":
            assert len(a["params"]) == x.shape[0], a
            for k, p in enumerate(a["params"]):
                bin32 = numpy.fromfile(os.path.join(cell, "d_%s.bin" % p), dtype="<f4")
                assert (x[k].astype(numpy.float32).ravel() == bin32).all(), (cell, p)
                assert numpy.abs(x[k]).max() > 0, (cell, p)
        checked += 1
# results.csv as pandas reads it: typed columns, no string parsing.
try:
    import pandas
except ImportError:
    pandas = None
if pandas is not None:
    df = pandas.read_csv(os.path.join(bundle, "results.csv"))
    for col in ["roi_fast_min", "roi_fast_max", "roi_slow_min", "roi_slow_max"]:
        assert df[col].dtype.kind == "i", (col, df[col].dtype)
    for col in ["image_sum", "image_max", "image_mean", "cell_wall_s"]:
        assert df[col].dtype.kind == "f", (col, df[col].dtype)
    assert (df["image_sum"] > 0).all()
    assert set(df["status"]) == {"PASS"}, set(df["status"])
print(checked)
"#;

#[test]
fn numpy_loads_every_array_of_a_bundle() {
    if !numpy_available() {
        eprintln!("SKIP numpy_loads_every_array_of_a_bundle: python3 with numpy is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
[experiment]
id = "npy-check"

[model.crystal]
cell = [100.0, 100.0, 100.0, 90.0, 90.0, 90.0]
n_cells = [5.0, 5.0, 5.0]
default_f = 100.0

[model.beam]
wavelength_a = 6.2

[model.detector]
fpixels = 24
spixels = 20
pixel_size_mm = 0.1
distance_mm = 100.0

[matrix]
dtype = ["float32", "float64"]
param = ["cell_a", "distance"]
roi = [[0, 23, 0, 19], [3, 10, 5, 9]]

[[probe]]
kind = "simulate"
"#;
    let file = common::write(dir.path(), "npy.toml", toml);
    let mut c = common::runner();
    c.arg("run")
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("runs"));
    let (code, stdout, stderr) = common::run_cmd(c);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let bundle = common::last_line(&stdout);
    let out = Command::new("python3")
        .arg("-c")
        .arg(CHECK_BUNDLE)
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // 2 dtypes x 2 ROIs, each an image.npy and a d_stack.npy.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8");
}
