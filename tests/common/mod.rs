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
kind = "simulate"
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

pub mod sweep;
