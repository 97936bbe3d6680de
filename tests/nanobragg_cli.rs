//! `runner nanobragg`: the flag parser on every golden command line, and the
//! error exits of the built binary.
use assert_cmd::Command;
use braggrun::cli::nanobragg::parse_args;
use braggrun::physics::config::{Convention, PhiCarryover};

/// (case, run, fpixels, spixels, nanoBragg flags) of /work/shared/golden/cases.tsv
/// (see tests/golden/PROVENANCE.md).
const CASES: &[(&str, &str, u32, u32, &str)] = &[
    ("AT-PARALLEL-001", "detpixels-64", 64, 64, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 3 -pixel 0.1 -distance 100 -mosflm -seed 1 -detpixels 64 -Xbeam 3.2 -Ybeam 3.2"),
    ("AT-PARALLEL-001", "detpixels-128", 128, 128, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 3 -pixel 0.1 -distance 100 -mosflm -seed 1 -detpixels 128 -Xbeam 6.4 -Ybeam 6.4"),
    ("AT-PARALLEL-001", "detpixels-256", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 3 -pixel 0.1 -distance 100 -mosflm -seed 1 -detpixels 256 -Xbeam 12.8 -Ybeam 12.8"),
    ("AT-PARALLEL-002", "pixel-0.05mm", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -seed 1 -detpixels 256 -pixel 0.05 -Xbeam 25.6 -Ybeam 25.6 -mosflm"),
    ("AT-PARALLEL-002", "pixel-0.1mm", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -seed 1 -detpixels 256 -pixel 0.1 -Xbeam 25.6 -Ybeam 25.6 -mosflm"),
    ("AT-PARALLEL-002", "pixel-0.2mm", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -seed 1 -detpixels 256 -pixel 0.2 -Xbeam 25.6 -Ybeam 25.6 -mosflm"),
    ("AT-PARALLEL-002", "pixel-0.4mm", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -seed 1 -detpixels 256 -pixel 0.4 -Xbeam 25.6 -Ybeam 25.6 -mosflm"),
    ("AT-PARALLEL-004", "mosflm", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -N 5 -detpixels 256 -distance 100 -pixel 0.1 -seed 1 -mosflm -Xbeam 25.6 -Ybeam 25.6"),
    ("AT-PARALLEL-004", "xds", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -N 5 -detpixels 256 -distance 100 -pixel 0.1 -seed 1 -xds -Xbeam 25.6 -Ybeam 25.6"),
    ("AT-PARALLEL-005", "mosflm-xbeam-ybeam-beam-pivot", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -N 5 -detpixels 256 -pixel 0.1 -seed 1 -mosflm -distance 100 -Xbeam 25.6 -Ybeam 25.6"),
    ("AT-PARALLEL-005", "xds-xbeam-ybeam-sample-pivot", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -N 5 -detpixels 256 -pixel 0.1 -seed 1 -xds -distance 100 -Xbeam 25.6 -Ybeam 25.6"),
    ("AT-PARALLEL-005", "mosflm-close-distance-sample-pivot", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -N 5 -detpixels 256 -pixel 0.1 -seed 1 -mosflm -close_distance 100 -Xbeam 25.6 -Ybeam 25.6"),
    ("AT-PARALLEL-005", "xds-close-distance-sample-pivot", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -N 5 -detpixels 256 -pixel 0.1 -seed 1 -xds -close_distance 100 -Xbeam 25.6 -Ybeam 25.6"),
    ("AT-PARALLEL-006", "dist-50mm-lambda-1.0", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -pixel 0.1 -detpixels 256 -mosflm -N 1 -seed 1 -distance 50 -lambda 1.0"),
    ("AT-PARALLEL-006", "dist-100mm-lambda-1.5", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -pixel 0.1 -detpixels 256 -mosflm -N 1 -seed 1 -distance 100 -lambda 1.5"),
    ("AT-PARALLEL-006", "dist-200mm-lambda-2.0", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -pixel 0.1 -detpixels 256 -mosflm -N 1 -seed 1 -distance 200 -lambda 2.0"),
    ("AT-PARALLEL-007", "rot-0-0-0", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -pixel 0.1 -detpixels 256 -distance 100 -N 5 -seed 1 -detector_rotx 0 -detector_roty 0 -detector_rotz 0 -mosflm"),
    ("AT-PARALLEL-007", "rot-5-3-2", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -pixel 0.1 -detpixels 256 -distance 100 -N 5 -seed 1 -detector_rotx 5 -detector_roty 3 -detector_rotz 2 -mosflm"),
    ("AT-PARALLEL-007", "rot-10-5-3", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -pixel 0.1 -detpixels 256 -distance 100 -N 5 -seed 1 -detector_rotx 10 -detector_roty 5 -detector_rotz 3 -mosflm"),
    ("AT-PARALLEL-012", "simple_cubic", 1024, 1024, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.1 -seed 1 -mosflm -detpixels 1024"),
    ("AT-PARALLEL-011", "unpolarized", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.1 -detpixels 256 -mosflm -phi 0 -osc 0 -mosaic 0 -seed 1 -polar 0.0"),
    ("AT-PARALLEL-011", "polarized", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.1 -detpixels 256 -mosflm -phi 0 -osc 0 -mosaic 0 -seed 1 -polar 0.95"),
    ("AT-PARALLEL-021", "single_step_phi", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -pixel 0.1 -distance 100 -detpixels 256 -mosflm -seed 1 -phi 0 -mosaic 0 -oversample 1 -osc 90 -phisteps 1"),
    ("AT-PARALLEL-021", "multi_step_phi", 256, 256, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -pixel 0.1 -distance 100 -detpixels 256 -mosflm -seed 1 -phi 0 -mosaic 0 -oversample 1 -osc 90 -phisteps 9"),
    ("AT-PARALLEL-023", "cubic-misset-0-0-0", 256, 256, "-default_F 100 -lambda 1.0 -N 5 -pixel 0.1 -distance 100 -detpixels 256 -mosflm -phi 0 -osc 0 -mosaic 0 -oversample 1 -seed 1 -cell 100 100 100 90 90 90 -misset 0.0 0.0 0.0"),
    ("AT-PARALLEL-023", "cubic-misset-10p5-0-0", 256, 256, "-default_F 100 -lambda 1.0 -N 5 -pixel 0.1 -distance 100 -detpixels 256 -mosflm -phi 0 -osc 0 -mosaic 0 -oversample 1 -seed 1 -cell 100 100 100 90 90 90 -misset 10.5 0.0 0.0"),
    ("AT-PARALLEL-023", "triclinic-misset-0-0-0", 256, 256, "-default_F 100 -lambda 1.0 -N 5 -pixel 0.1 -distance 100 -detpixels 256 -mosflm -phi 0 -osc 0 -mosaic 0 -oversample 1 -seed 1 -cell 70 80 90 75 85 95 -misset 0.0 0.0 0.0"),
    ("AT-PARALLEL-023", "triclinic-misset-0-10p25-0", 256, 256, "-default_F 100 -lambda 1.0 -N 5 -pixel 0.1 -distance 100 -detpixels 256 -mosflm -phi 0 -osc 0 -mosaic 0 -oversample 1 -seed 1 -cell 70 80 90 75 85 95 -misset 0.0 10.25 0.0"),
    ("EXTRA", "phi0-carryover", 64, 64, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.1 -detpixels 64 -Xbeam 3.2 -Ybeam 3.2 -mosflm -phi 0 -osc 0.1 -phisteps 10 -misset 10 5 3"),
    ("EXTRA", "phi0.01-carryover", 64, 64, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.1 -detpixels 64 -Xbeam 3.2 -Ybeam 3.2 -mosflm -phi 0.01 -osc 0.1 -phisteps 10 -misset 10 5 3"),
    ("EXTRA", "triclinic-misset-mosaic", 128, 128, "-default_F 100 -cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 100 -pixel 0.1 -detpixels 128 -mosaic 0.5 -mosaic_dom 5 -mosflm -oversample 2"),
    ("EXTRA", "phi360-no-carryover", 64, 64, "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.1 -detpixels 64 -Xbeam 3.2 -Ybeam 3.2 -mosflm -phi 360 -osc 0.1 -phisteps 10 -misset 10 5 3"),
    ("FEATURE", "hkl-nearest", 128, 128, "-cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 100 -pixel 0.1 -detpixels 128 -mosflm -hkl varied.hkl -nointerpolate -default_F 0"),
    ("FEATURE", "mat-hkl", 128, 128, "-mat A.mat -hkl varied.hkl -lambda 1.0 -N 5 -distance 100 -pixel 0.1 -detpixels 128 -mosflm -default_F 0"),
    ("FEATURE", "shape-gauss", 128, 128, "-cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 100 -pixel 0.1 -detpixels 128 -mosflm -default_F 100 -gauss_xtal"),
    ("FEATURE", "div-disp", 128, 128, "-cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 100 -pixel 0.1 -detpixels 128 -mosflm -default_F 100 -hdivrange 0.28 -hdivsteps 3 -vdivrange 0.28 -vdivsteps 3 -dispersion 0.1 -dispsteps 3"),
    ("FEATURE", "xds-twotheta-close", 128, 128, "-cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -close_distance 120 -pixel 0.1 -detpixels 128 -xds -twotheta 15 -default_F 100"),
    ("FEATURE", "roi", 128, 128, "-cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 100 -pixel 0.1 -detpixels 128 -mosflm -default_F 100 -roi 10 90 20 70"),
    ("FEATURE", "phi-c-parity-mosaic", 128, 128, "-cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 100 -pixel 0.1 -detpixels 128 -mosflm -default_F 100 -phi 0 -osc 1 -phisteps 5 -mosaic 0.3 -mosaic_dom 4 -mosaic_seed 777"),
    ("FEATURE", "dmin", 128, 128, "-cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 100 -pixel 0.1 -detpixels 128 -mosflm -default_F 100 -dmin 12"),
];

fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn every_golden_command_line_parses() {
    assert_eq!(CASES.len(), 40);
    for (case, run, fp, sp, flags) in CASES {
        let a = parse_args(&split(flags)).unwrap_or_else(|e| panic!("{case} {run}: {e}"));
        let d = &a.config.detector;
        assert_eq!(
            (d.fpixels, d.spixels),
            (Some(*fp), Some(*sp)),
            "{case} {run}"
        );
        assert!(
            a.config.crystal.default_f > 0.0 || a.config.crystal.hkl_file.is_some(),
            "{case} {run}"
        );
        if flags.contains("-xds") {
            assert_eq!(d.convention, Convention::Xds, "{case} {run}");
        }
        if flags.contains("-mosflm") {
            assert_eq!(d.convention, Convention::Mosflm, "{case} {run}");
        }
        assert_eq!(a.config.phi_carryover, PhiCarryover::Spec);
    }
}

#[test]
fn golden_values_land_in_the_right_fields() {
    let find = |run: &str| CASES.iter().find(|c| c.1 == run).unwrap().4;
    let a = parse_args(&split(find("mat-hkl"))).unwrap();
    assert_eq!(
        a.config.crystal.mosflm_matrix.as_deref(),
        Some(std::path::Path::new("A.mat"))
    );
    assert_eq!(
        a.config.crystal.hkl_file.as_deref(),
        Some(std::path::Path::new("varied.hkl"))
    );
    let a = parse_args(&split(find("xds-twotheta-close"))).unwrap();
    assert!(a.config.detector.twotheta_deg != 0.0);
    assert!(a.config.detector.close_distance_mm.is_some());
    let a = parse_args(&split(find("roi"))).unwrap();
    assert!(a.config.detector.roi.is_some());
    let a = parse_args(&split(&format!(
        "{} -phi_carryover c-parity",
        find("phi0-carryover")
    )))
    .unwrap();
    assert_eq!(a.config.phi_carryover, PhiCarryover::CParity);
}

#[test]
fn bad_inputs_are_parse_errors_naming_the_flag() {
    let base = "-default_F 100 -cell 100 100 100 90 90 90 -detpixels 8";
    for (extra, want) in [
        ("-not_a_flag", "-not_a_flag"),
        ("-lambda", "-lambda"),
        ("-pixel wide", "-pixel"),
        ("-roi 0 3 0", "-roi"),
        ("-dispstep 2", "-dispstep"),
    ] {
        let e = parse_args(&split(&format!("{base} {extra}"))).unwrap_err();
        assert!(e.contains(want), "{extra}: {e}");
    }
}

fn runner_fails(dir: &std::path::Path, extra: &str, want: &str) {
    let args = split(&format!(
        "nanobragg -default_F 100 -cell 100 100 100 90 90 90 -detpixels 8 -floatfile out.bin -intfile out.img {extra}"
    ));
    let out = Command::cargo_bin("runner")
        .unwrap()
        .current_dir(dir)
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{extra}: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want), "{extra}: stderr {err}");
    assert!(
        !dir.join("out.bin").exists() && !dir.join("out.img").exists(),
        "{extra}: wrote output"
    );
}

#[test]
fn binary_rejects_unknown_flag() {
    let dir = tempfile::tempdir().unwrap();
    runner_fails(dir.path(), "-frobnicate", "-frobnicate");
}

#[test]
fn binary_rejects_missing_value() {
    let dir = tempfile::tempdir().unwrap();
    runner_fails(dir.path(), "-distance", "-distance");
}

#[test]
fn binary_rejects_non_numeric_value() {
    let dir = tempfile::tempdir().unwrap();
    runner_fails(dir.path(), "-distance far", "-distance");
}

#[test]
fn binary_rejects_short_roi() {
    let dir = tempfile::tempdir().unwrap();
    runner_fails(dir.path(), "-roi 0 3 0", "-roi");
}

#[test]
fn binary_rejects_malformed_hkl_naming_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.hkl"), "1 2 3 4\n1 2 x 4\n").unwrap();
    runner_fails(dir.path(), "-hkl bad.hkl", "bad.hkl:2");
}

fn runner_in(dir: &std::path::Path, args: &str) -> std::process::Output {
    Command::cargo_bin("runner")
        .unwrap()
        .current_dir(dir)
        .arg("nanobragg")
        .args(split(args))
        .output()
        .unwrap()
}

/// The files in a folder, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn no_arguments_print_the_usage_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = runner_in(dir.path(), "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("usage: runner nanobragg"), "{text}");
    for f in ["-cell", "-floatfile", "-deriv", "-memory_limit", "cell_a"] {
        assert!(text.contains(f), "usage lacks {f}");
    }
    assert!(listing(dir.path()).is_empty());
    let help = runner_in(dir.path(), "-h");
    assert_eq!(help.status.code(), Some(0));
    assert_eq!(help.stdout, out.stdout);
}

/// nanoBragg.c's typical command line: AT-PARALLEL-001 with a noise seed.
const TYPICAL: &str = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 3 -pixel 0.1 -distance 100 -mosflm -seed 1 -detpixels 64 -Xbeam 3.2 -Ybeam 3.2";

#[test]
fn without_output_flags_c_default_files_are_written() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let out = runner_in(a.path(), TYPICAL);
    assert!(out.status.success(), "{out:?}");
    let defaults = [
        "floatimage.bin",
        "image.pgm",
        "intimage.img",
        "noiseimage.img",
    ];
    assert_eq!(listing(a.path()), defaults);
    let named = "-floatfile f.bin -intfile i.img -pgmfile p.pgm -noisefile n.img";
    let out = runner_in(b.path(), &format!("{TYPICAL} {named}"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(listing(b.path()), ["f.bin", "i.img", "n.img", "p.pgm"]);
    for (d, n) in defaults.iter().zip(["f.bin", "p.pgm", "i.img", "n.img"]) {
        let (x, y) = (
            std::fs::read(a.path().join(d)).unwrap(),
            std::fs::read(b.path().join(n)).unwrap(),
        );
        assert!(x == y, "{d} differs from -{n}");
    }
    // The data is the image: 64 x 64 float32, not all zero; SMV and PGM headers.
    let float = std::fs::read(a.path().join("floatimage.bin")).unwrap();
    assert_eq!(float.len(), 64 * 64 * 4);
    assert!(float
        .chunks(4)
        .any(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) > 0.0));
    let int = std::fs::read(a.path().join("intimage.img")).unwrap();
    assert!(int.starts_with(b"{\nHEADER_BYTES=512;") && int.len() == 512 + 64 * 64 * 2);
    let pgm = std::fs::read(a.path().join("image.pgm")).unwrap();
    assert!(pgm.starts_with(b"P5\n64 64\n"));
    // -nopgm and -nonoise drop C's last two defaults.
    let out = runner_in(c.path(), &format!("{TYPICAL} -nopgm -nonoise"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(listing(c.path()), ["floatimage.bin", "intimage.img"]);
}

fn read_f32(p: &std::path::Path) -> Vec<f64> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect()
}

/// A small detector with spots on it (lambda 1 A, 100 A cell: about 10
/// pixels between spots).
const SPOTS: &str = "-default_F 100 -cell 100 100 100 90 90 90 -misset 10 5 3 -lambda 1 -N 3 -pixel 0.1 -distance 100 -mosflm -detpixels 40 -oversample 1";

#[test]
fn deriv_images_match_central_differences_of_two_renders() {
    let dir = tempfile::tempdir().unwrap();
    let out = runner_in(
        dir.path(),
        &format!("{SPOTS} -floatfile img.bin -deriv cell_a,distance"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        listing(dir.path()),
        [
            "img.bin",
            "img.d_cell_a.bin",
            "img.d_cell_a.npy",
            "img.d_distance.bin",
            "img.d_distance.npy"
        ]
    );
    let image = read_f32(&dir.path().join("img.bin"));
    assert!(image.iter().any(|&x| x > 0.0), "image all zero");
    // (parameter, h, flags at value - h, flags at value + h). The float32
    // files limit the differences (rounding / 2h), hence steps this large;
    // the O(h^2) error is far smaller here (measured: the error halves as h doubles).
    let cases = [
        (
            "cell_a",
            0.1,
            "-cell 99.9 100 100 90 90 90",
            "-cell 100.1 100 100 90 90 90",
        ),
        ("distance", 0.04, "-distance 99.96", "-distance 100.04"),
    ];
    for (name, h, minus, plus) in cases {
        let d = braggrun::io::npy::read_image::<f64>(&dir.path().join(format!("img.d_{name}.npy")))
            .unwrap();
        assert_eq!(d.shape(), &[40, 40], "{name}");
        let d: Vec<f64> = d.iter().copied().collect();
        let bin = read_f32(&dir.path().join(format!("img.d_{name}.bin")));
        assert!(
            bin.iter().zip(&d).all(|(b, x)| *b == (*x as f32) as f64),
            "{name}: .bin is not the .npy in float32"
        );
        let mut fd = vec![];
        for (sign, flags) in [(-1.0, minus), (1.0, plus)] {
            let out = runner_in(dir.path(), &format!("{SPOTS} {flags} -floatfile fd.bin"));
            assert!(out.status.success(), "{out:?}");
            let img = read_f32(&dir.path().join("fd.bin"));
            if fd.is_empty() {
                fd = vec![0.0; img.len()];
            }
            for (f, x) in fd.iter_mut().zip(img) {
                *f += sign * x / (2.0 * h);
            }
        }
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff: Vec<f64> = fd.iter().zip(&d).map(|(a, b)| a - b).collect();
        let rel = norm(&diff) / norm(&d);
        eprintln!("{name}: |d| = {:.4e}, |fd - d| / |d| = {rel:.3e}", norm(&d));
        assert!(norm(&d) > 0.0, "{name}: derivative all zero");
        assert!(
            rel < 1e-3,
            "{name}: central differences differ by {rel:.3e} (relative L2)"
        );
    }
}

#[test]
fn deriv_leaves_the_image_files_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in ["float64", "float32"] {
        let with = runner_in(
            dir.path(),
            &format!("{SPOTS} -dtype {dtype} -deriv n_a,wavelength"),
        );
        assert!(with.status.success(), "{with:?}");
        let without = runner_in(
            dir.path(),
            &format!(
                "{SPOTS} -dtype {dtype} -floatfile f.bin -intfile i.img -pgmfile p.pgm -nonoise"
            ),
        );
        assert!(without.status.success(), "{without:?}");
        for (x, y) in [
            ("floatimage.bin", "f.bin"),
            ("intimage.img", "i.img"),
            ("image.pgm", "p.pgm"),
        ] {
            let (x, y) = (dir.path().join(x), dir.path().join(y));
            assert!(
                std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
                "{dtype}: {x:?}"
            );
        }
    }
}

#[test]
fn deriv_rejects_unknown_parameter_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = runner_in(dir.path(), &format!("{TYPICAL} -deriv cell_a,cell_x"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-deriv") && err.contains("'cell_x'"), "{err}");
    assert!(listing(dir.path()).is_empty());
}
