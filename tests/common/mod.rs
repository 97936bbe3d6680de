//! Helpers shared by the runner's integration tests.
#![allow(dead_code, unused_macros)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// The built `runner`, with no RUNNER_* overrides from the caller (hermetic).
pub fn runner() -> Command {
    let mut c = Command::cargo_bin("runner").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNNER_") {
            c.env_remove(k);
        }
    }
    c
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The [model] section of the small test experiments: the M2h.3 geometry
/// (cubic 100 Å, N 5, c-parity, 0.1° in 10 phi steps, λ 6.2 Å) on a 16x16
/// detector with a 2x2 ROI.
macro_rules! small_model {
    () => {
        r#"
[model]
phi_carryover = "c-parity"
seed = 1

[model.crystal]
cell = [100.0, 100.0, 100.0, 90.0, 90.0, 90.0]
n_cells = [5.0, 5.0, 5.0]
mosaic_spread_deg = 0.0
mosaic_domains = 1
default_f = 100.0

[model.beam]
wavelength_a = 6.2

[model.detector]
convention = "mosflm"
pixel_size_mm = 0.1
fpixels = 16
spixels = 16
distance_mm = 100.0
xbeam_mm = 0.8
ybeam_mm = 0.8
roi = [0, 1, 7, 8]

[model.goniometer]
phi_start_deg = 0.0
osc_deg = 0.1
phisteps = 10
"#
    };
}

/// The small sweep of the sharding tests: 8 cells (two probes x two
/// parameters x a model axis, N), on the [`small_model!`] geometry.
macro_rules! small_sweep {
    ($id:literal, $title:literal) => {
        concat!(
            "\n[experiment]\nid = \"",
            $id,
            "\"\ntitle = \"",
            $title,
            "\"\n",
            small_model!(),
            r#"
[matrix]
param = ["cell_a", "distance"]
"model.crystal.n_cells" = [[4.0, 4.0, 4.0], [5.0, 5.0, 5.0]]

[[probe]]
kind = "gradcheck"
require_nonzero = false

[[probe]]
kind = "gradcheck"
name = "gradcheck-mean"
reduction = "mean"
require_nonzero = false
"#
        )
    };
}

/// One row of tests/golden/cases.tsv: a nanoBragg.c image and its flags.
pub struct GoldenCase {
    pub case: String,
    pub run: String,
    pub file: String,
    pub args: Vec<String>,
}

/// tests/golden of the working directory when there is one (a copied test
/// binary run from another checkout), else of the crate that built it.
pub fn golden_dir() -> PathBuf {
    let here = Path::new("tests/golden");
    if here.join("cases.tsv").is_file() {
        return here.to_path_buf();
    }
    manifest_dir().join("tests/golden")
}

pub fn golden_cases() -> Vec<GoldenCase> {
    let text =
        std::fs::read_to_string(golden_dir().join("cases.tsv")).expect("tests/golden/cases.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            GoldenCase {
                case: cols[0].into(),
                run: cols[1].into(),
                file: cols[4].into(),
                args: cols[5].split_whitespace().map(String::from).collect(),
            }
        })
        .collect()
}

/// Each cell's result.json bytes in a bundle, by cell folder name (a cell
/// cut short has a folder but no result.json, and is left out).
pub fn results(bundle: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(bundle.join("cells"))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let r = std::fs::read(e.path().join("result.json")).ok()?;
            Some((e.file_name().to_string_lossy().to_string(), r))
        })
        .collect()
}

/// Write `text` to `dir/name`; the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Run and return (exit code, stdout, stderr).
pub fn run_cmd(mut c: Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Run a plain std Command and return (exit code, stdout, stderr).
pub fn out_of(c: &mut std::process::Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// The last line of stdout as a path (the bundle a run or merge made).
pub fn last_line(stdout: &str) -> PathBuf {
    PathBuf::from(stdout.trim_end().lines().last().expect("a path on stdout"))
}

/// Copy a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Bundles (folders with experiment.toml) two levels under `dir`, sorted.
pub fn bundles_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for a in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for b in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
            if b.path().join("experiment.toml").is_file() {
                v.push(b.path());
            }
        }
    }
    v.sort();
    v
}

/// (width, height, color type) of a PNG.
pub fn png_info(p: &Path) -> (u32, u32, png::ColorType) {
    let f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut r = png::Decoder::new(f).read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    (info.width, info.height, info.color_type)
}

/// (width, height) of a PNG.
pub fn png_dims(p: &Path) -> (u32, u32) {
    let (w, h, _) = png_info(p);
    (w, h)
}

pub mod sweep;
