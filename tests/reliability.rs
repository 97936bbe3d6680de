//! The reliability promises of README.md ("Reliability"), on the built
//! binary with real files, real pipes and /dev/full: output streams that
//! cannot be written, configurations too large for memory, bundles that do
//! not verify, resume (lock, tamper, remembered plan), provenance, signals.

use serde_json::Value;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

#[macro_use]
mod common;
use common::{out_of, write};

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
param = ["cell_a", "distance"]
exclude = [{ probe = "cache", param = "distance" }]

[[probe]]
kind = "phi-cache"
name = "cache"
expected_loss = 1199.51994
expected_grad = 3.9976002

[[probe]]
kind = "gradcheck"
"#
);

/// A simulate probe: it writes image files, so cells list files.
const PICTURE: &str = concat!(
    r#"
[experiment]
id = "pic"
"#,
    small_model!(),
    r#"
[matrix]
device = ["cpu"]
dtype = ["float64", "float32"]

[[probe]]
kind = "simulate"
"#
);

/// The plain std Command of the built runner (assert_cmd's path, our stdio).
fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNNER_") || k == "BRAGGRUN_MEMORY_LIMIT" {
            c.env_remove(k);
        }
    }
    c
}

/// The write end of a pipe whose read end is already closed.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] and fds[1] are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(r);
    Stdio::from(w)
}

fn dev_full() -> Stdio {
    Stdio::from(
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    )
}

/// The only bundle under `out/<id>/`.
fn only_bundle(out: &Path, id: &str) -> PathBuf {
    let v: Vec<PathBuf> = fs::read_dir(out.join(id))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].clone()
}

fn verify(bundle: &Path) -> (i32, String) {
    let (c, o, e) = out_of(bin().arg("verify").arg(bundle));
    (c, format!("{o}{e}"))
}

fn hidden_temps(dir: &Path) -> Vec<String> {
    let mut v = vec![];
    for e in walk(dir) {
        let name = e.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') && name.contains(".tmp-") {
            v.push(e.display().to_string());
        }
    }
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------- streams

#[test]
fn closed_stdout_exits_141_quietly_and_the_run_still_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "tiny.toml", TINY);
    for args in [
        vec!["plan".to_string(), file.display().to_string()],
        vec!["validate".into(), file.display().to_string()],
        vec!["schema".into()],
    ] {
        let o = bin()
            .args(&args)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let out = tmp.path().join("runs");
    let o = bin()
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(141), "{err}");
    let bundle = only_bundle(&out, "tiny");
    assert!(bundle.join("sha256.txt").is_file(), "{err}");
    assert_eq!(verify(&bundle).0, 0);
    let o = bin()
        .arg("verify")
        .arg(&bundle)
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(141));
}

#[test]
fn stderr_to_dev_full_never_stops_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "tiny.toml", TINY);
    let out = tmp.path().join("runs");
    let (code, stdout, _) = out_of(
        bin()
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .stderr(dev_full()),
    );
    assert_eq!(code, 0, "{stdout}");
    let bundle = only_bundle(&out, "tiny");
    assert_eq!(stdout.trim(), bundle.display().to_string());
    assert!(bundle.join("sha256.txt").is_file());
    assert_eq!(verify(&bundle).0, 0);
    for (args, want) in [
        (vec!["validate", file.to_str().unwrap()], 0),
        (vec!["plan", file.to_str().unwrap()], 0),
        (vec!["verify", bundle.to_str().unwrap()], 0),
        (vec!["validate", "/nonexistent.toml"], 2),
        (vec!["verify", "/nonexistent-bundle"], 2),
    ] {
        let (code, _, _) = out_of(bin().args(&args).stderr(dev_full()));
        assert_eq!(code, want, "{args:?}");
    }
}

#[test]
fn stdout_to_dev_full_is_exit_1_with_a_message_after_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "tiny.toml", TINY);
    let out = tmp.path().join("runs");
    let (code, _, stderr) = out_of(
        bin()
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .stdout(dev_full()),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let bundle = only_bundle(&out, "tiny");
    assert_eq!(verify(&bundle).0, 0, "the bundle is complete");
    for args in [
        vec!["validate", file.to_str().unwrap()],
        vec!["plan", file.to_str().unwrap()],
        vec!["verify", bundle.to_str().unwrap()],
    ] {
        let (code, _, stderr) = out_of(bin().args(&args).stdout(dev_full()));
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    }
}

// ---------------------------------------------------------------- budget

fn validate_with(dir: &Path, name: &str, text: &str, extra: &[&str]) -> (i32, String) {
    let f = write(dir, name, text);
    let (code, o, e) = out_of(bin().arg("validate").arg(&f).args(extra));
    (code, format!("{o}{e}"))
}

/// TINY with `[model.*]` lines replaced: (old line, new line).
fn tiny_with(edits: &[(&str, &str)]) -> String {
    let mut t = TINY.to_string();
    for (a, b) in edits {
        assert!(t.contains(a), "{a}");
        t = t.replacen(a, b, 1);
    }
    t
}

#[test]
fn sizes_beyond_memory_are_refused_with_exit_2_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("big.hkl"), "-600 -600 -600 1\n600 600 600 1\n").unwrap();
    assert_eq!(fs::read(d.join("big.hkl")).unwrap().len(), 31);
    fs::write(d.join("zero.mat"), "0 0 0\n0 0 0\n0 0 0\n").unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "detsize 1e300 without pixel counts",
            tiny_with(&[
                ("fpixels = 16\n", "detsize_f_mm = 1e300\n"),
                ("spixels = 16\n", "detsize_s_mm = 1e300\n"),
                ("roi = [0, 1, 7, 8]\n", ""),
            ]),
            "detector",
        ),
        (
            "pixel 1e-30 mm",
            tiny_with(&[
                ("pixel_size_mm = 0.1\n", "pixel_size_mm = 1e-30\n"),
                ("fpixels = 16\n", "detsize_f_mm = 10.0\n"),
                ("spixels = 16\n", "detsize_s_mm = 10.0\n"),
            ]),
            "detector",
        ),
        (
            "div x disp product",
            tiny_with(&[(
                "wavelength_a = 6.2\n",
                "wavelength_a = 6.2\nhdivsteps = 100000\nvdivsteps = 100000\ndispsteps = 100000\nhdivrange_mrad = 1.0\nvdivrange_mrad = 1.0\ndispersion_pct = 1.0\n",
            )]),
            "beam",
        ),
        (
            "count from range / step",
            tiny_with(&[(
                "wavelength_a = 6.2\n",
                "wavelength_a = 6.2\nhdivrange_mrad = 1e6\nhdivstep_mrad = 1e-6\n",
            )]),
            "beam.hdivsteps",
        ),
        (
            "31-byte HKL, indices -600..600",
            tiny_with(&[("default_f = 100.0\n", "default_f = 100.0\nhkl_file = \"big.hkl\"\n")]),
            "crystal.hkl_file",
        ),
        (
            "phi-cache steps 4e9",
            tiny_with(&[("expected_grad = 3.9976002\n", "expected_grad = 3.9976002\nsteps = 4000000000\n")]),
            "steps",
        ),
        (
            "16384 x 16383 detector with a 2x2 ROI",
            tiny_with(&[("fpixels = 16\n", "fpixels = 16384\n"), ("spixels = 16\n", "spixels = 16383\n")]),
            "detector",
        ),
        (
            "zero MOSFLM matrix",
            tiny_with(&[
                ("cell = [100.0, 100.0, 100.0, 90.0, 90.0, 90.0]\n", "mosflm_matrix = \"zero.mat\"\n"),
                ("param = [\"cell_a\", \"distance\"]", "param = [\"distance\"]"),
                ("exclude = [{ probe = \"cache\", param = \"distance\" }]\n", ""),
                ("[[probe]]\nkind = \"phi-cache\"\nname = \"cache\"\nexpected_loss = 1199.51994\nexpected_grad = 3.9976002\n", ""),
            ]),
            "crystal.mosflm_matrix",
        ),
        (
            "water 1e300 um",
            tiny_with(&[("wavelength_a = 6.2\n", "wavelength_a = 6.2\nwater_um = 1e300\n")]),
            "beam.water_um",
        ),
    ];
    for (i, (name, text, key)) in cases.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let (code, msg) = validate_with(d, &format!("c{i}.toml"), text, &["--memory-limit", "1G"]);
        assert_eq!(code, 2, "{name}: {msg}");
        assert!(msg.contains(key), "{name}: expected the key {key}: {msg}");
        assert!(!msg.contains("panicked"), "{name}: {msg}");
        // run refuses it the same way, and leaves no bundle.
        let out = d.join(format!("runs{i}"));
        let (code, _, e) = out_of(
            bin()
                .arg("run")
                .arg(d.join(format!("c{i}.toml")))
                .arg("--out")
                .arg(&out)
                .args(["--memory-limit", "1G"]),
        );
        assert_eq!(code, 2, "{name}: {e}");
        assert!(!out.exists(), "{name}: a refused run leaves no bundle");
        assert!(t0.elapsed().as_secs() < 20, "{name}: refused cheaply");
    }
    // The limit is what decides: the tiny experiment passes under 1G, the
    // 16384 x 16383 detector under 1G does not but names the figure.
    let (code, msg) = validate_with(d, "ok.toml", TINY, &["--memory-limit", "1G"]);
    assert_eq!(code, 0, "{msg}");
    let (_, msg) = validate_with(d, "c6.toml", &cases[6].1, &["--memory-limit", "1G"]);
    assert!(
        msg.contains("GiB") && msg.contains("--memory-limit"),
        "{msg}"
    );
    let (code, msg) = validate_with(d, "ok.toml", TINY, &["--memory-limit", "lots"]);
    assert_eq!(code, 2, "{msg}");
}

#[test]
fn nanobragg_refuses_the_same_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("big.hkl"), "-600 -600 -600 1\n600 600 600 1\n").unwrap();
    fs::write(d.join("zero.mat"), "0 0 0\n0 0 0\n0 0 0\n").unwrap();
    let base = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 3 -distance 100 -mosflm";
    for (extra, key) in [
        ("-pixel 0.1 -detsize 1e300", "detector"),
        ("-pixel 1e-30 -detsize 10", "detector"),
        ("-pixel 0.1 -detpixels 16 -hdivsteps 100000 -vdivsteps 100000 -dispsteps 100000 -hdivrange 1 -vdivrange 1 -dispersion 1", "beam"),
        ("-pixel 0.1 -detpixels 16 -hkl big.hkl", "crystal.hkl_file"),
        ("-pixel 0.1 -detpixels_f 16384 -detpixels_s 16383 -roi 0 1 0 1", "detector"),
        ("-pixel 0.1 -detpixels 16 -water 1e300", "beam.water_um"),
    ] {
        let args: Vec<String> = format!("nanobragg {base} {extra} -memory_limit 1G -floatfile o.bin")
            .split_whitespace()
            .map(String::from)
            .collect();
        let (code, o, e) = out_of(bin().args(&args).current_dir(d));
        assert_eq!(code, 2, "{extra}: {o}{e}");
        assert!(e.contains(key), "{extra}: {e}");
        assert!(!d.join("o.bin").exists());
    }
    let args: Vec<String> = "nanobragg -default_F 100 -mat zero.mat -lambda 6.2 -N 3 -distance 100 -pixel 0.1 -detpixels 16 -floatfile o.bin"
        .split_whitespace()
        .map(String::from)
        .collect();
    let (code, _, e) = out_of(bin().args(&args).current_dir(d));
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("crystal.mosflm_matrix"), "{e}");
}

#[test]
fn deep_keys_many_threads_and_long_ids_are_refused_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let f = write(d, "tiny.toml", TINY);
    let deep = format!("{}=1", vec!["a"; 2000].join("."));
    let t0 = std::time::Instant::now();
    let (code, _, e) = out_of(bin().arg("validate").arg(&f).arg("--set").arg(&deep));
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("nested"), "{e}");
    let env_key = format!("RUNNER_{}", vec!["A"; 2000].join("__"));
    let (code, _, e) = out_of(bin().arg("validate").arg(&f).env(&env_key, "1"));
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("nested"), "{e}");
    assert!(t0.elapsed().as_secs() < 20);
    let bench = tiny_with(&[(
        "[[probe]]\nkind = \"gradcheck\"\n",
        "[[probe]]\nkind = \"benchmark\"\nthreads = 100000\n",
    )]);
    let (code, msg) = validate_with(d, "bench.toml", &bench, &[]);
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("threads"), "{msg}");
    let v = "x".repeat(40);
    let long = tiny_with(&[(
        "dtype = [\"float64\"]\n",
        &format!("dtype = [\"float64\"]\n\"model.detector.xbeam_mm\" = [\"{v}\"]\n\"model.detector.ybeam_mm\" = [\"{v}\"]\n\"model.crystal.fudge\" = [\"{v}\"]\n"),
    )]);
    let (code, msg) = validate_with(d, "long.toml", &long, &[]);
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("characters long"), "{msg}");
}

// ---------------------------------------------------------------- verify

fn fresh_bundle(dir: &Path, text: &str, id: &str) -> PathBuf {
    let f = write(dir, &format!("{id}.toml"), text);
    let out = dir.join("runs");
    let (code, o, e) = out_of(bin().arg("run").arg(&f).arg("--out").arg(&out));
    assert_eq!(code, 0, "{o}{e}");
    PathBuf::from(o.trim())
}

fn manifest_without(bundle: &Path, pred: impl Fn(&str) -> bool) {
    let m = bundle.join("sha256.txt");
    let t = fs::read_to_string(&m).unwrap();
    let kept: String = t
        .lines()
        .filter(|l| !pred(l))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&m, kept).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn verify_checks_structure_not_only_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let b = fresh_bundle(d, PICTURE, "pic");
    assert_eq!(verify(&b).0, 0);
    let copy = |name: &str| {
        let to = d.join(name);
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&b)
            .arg(&to)
            .status()
            .unwrap();
        assert!(st.success());
        to
    };

    // An absolute path in the manifest is not read.
    let abs = copy("abs");
    let outside = d.join("outside.txt");
    fs::write(&outside, "x\n").unwrap();
    let mut m = fs::read_to_string(abs.join("sha256.txt")).unwrap();
    m.push_str(&format!("{}  {}\n", sha256_hex(b"x\n"), outside.display()));
    fs::write(abs.join("sha256.txt"), m).unwrap();
    let (code, out) = verify(&abs);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("absolute path"), "{out}");

    // A file replaced by a symbolic link to an identical file outside.
    let link = copy("link");
    let cell = fs::read_dir(link.join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let target = d.join("log-copy.txt");
    fs::copy(cell.join("log.txt"), &target).unwrap();
    fs::remove_file(cell.join("log.txt")).unwrap();
    std::os::unix::fs::symlink(&target, cell.join("log.txt")).unwrap();
    let (code, out) = verify(&link);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("symbolic link"), "{out}");

    // An empty folder with an empty manifest.
    let empty = d.join("empty");
    fs::create_dir(&empty).unwrap();
    fs::write(empty.join("sha256.txt"), "").unwrap();
    let (code, out) = verify(&empty);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED") && out.contains("experiment.toml"),
        "{out}"
    );

    // A whole cell folder removed with its manifest lines.
    let hollow = copy("hollow");
    let cell = fs::read_dir(hollow.join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let id = cell.file_name().unwrap().to_string_lossy().to_string();
    fs::remove_dir_all(&cell).unwrap();
    manifest_without(&hollow, |l| l.contains(&format!("cells/{id}/")));
    let (code, out) = verify(&hollow);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("cell {id}")), "{out}");

    // An image a result.json lists, removed with its manifest line.
    let noimg = copy("noimg");
    let cell = fs::read_dir(noimg.join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rec: Value =
        serde_json::from_str(&fs::read_to_string(cell.join("result.json")).unwrap()).unwrap();
    let f = rec["files"][0]
        .as_str()
        .expect("a simulate cell lists files")
        .to_string();
    fs::remove_file(cell.join(&f)).unwrap();
    manifest_without(&noimg, |l| {
        l.ends_with(&format!("/{f}")) && l.contains(cell.file_name().unwrap().to_str().unwrap())
    });
    let (code, out) = verify(&noimg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("lists {f}")), "{out}");

    // A manifest that is not UTF-8 is a FAILED report, not exit 2.
    let bin8 = copy("bin8");
    let mut bytes = fs::read(bin8.join("sha256.txt")).unwrap();
    bytes.extend_from_slice(b"\xff\xfe  x\n");
    fs::write(bin8.join("sha256.txt"), bytes).unwrap();
    let (code, out) = verify(&bin8);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("UTF-8"), "{out}");

    // The untouched bundle still verifies.
    assert_eq!(verify(&b).0, 0);
}

// ---------------------------------------------------------------- resume

fn resume(file: &Path, bundle: &Path, extra: &[&str]) -> (i32, String, String) {
    out_of(
        bin()
            .arg("run")
            .arg(file)
            .arg("--resume")
            .arg(bundle)
            .args(extra),
    )
}

#[test]
fn resume_reruns_tampered_cells_instead_of_laundering_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let b = fresh_bundle(d, PICTURE, "pic");
    let file = d.join("pic.toml");
    let cells: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = fs::read_dir(b.join("cells"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let original = fs::read(cells[0].join("result.json")).unwrap();
    // A fake loss in one cell, an image deleted from the other.
    let mut rec: Value = serde_json::from_slice(&original).unwrap();
    rec["loss"] = serde_json::json!(42.0);
    fs::write(
        cells[0].join("result.json"),
        serde_json::to_vec_pretty(&rec).unwrap(),
    )
    .unwrap();
    let rec1: Value =
        serde_json::from_str(&fs::read_to_string(cells[1].join("result.json")).unwrap()).unwrap();
    fs::remove_file(cells[1].join(rec1["files"][0].as_str().unwrap())).unwrap();
    assert_eq!(verify(&b).0, 1);
    let (code, o, e) = resume(&file, &b, &[]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(e.contains("running it again"), "{e}");
    assert!(e.contains("2 cell(s) of pic to run"), "{e}");
    assert_eq!(verify(&b).0, 0);
    assert_eq!(
        fs::read(cells[0].join("result.json")).unwrap(),
        original,
        "the fake loss is gone"
    );
    let csv = fs::read_to_string(b.join("results.csv")).unwrap();
    assert!(!csv.contains(",42,"), "{csv}");

    // Outside the cells: refused, and the manifest is left in place.
    fs::write(b.join("env.json"), "{}\n").unwrap();
    let (code, _, e) = resume(&file, &b, &[]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("env.json"), "{e}");
    assert!(b.join("sha256.txt").is_file());
    assert_eq!(verify(&b).0, 1);
}

#[test]
fn resume_takes_an_exclusive_lock_and_a_canonical_path() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let b = fresh_bundle(d, TINY, "tiny");
    let file = d.join("tiny.toml");
    // Another runner holds the bundle: what a concurrent run or resume holds.
    use std::os::fd::AsRawFd;
    let held = fs::File::open(&b).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let (code, _, e) = resume(&file, &b, &[]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("in use by another runner"), "{e}");
    assert_eq!(verify(&b).0, 0, "the refused resume changed nothing");
    drop(held);
    // The same file by another path, the bundle by a relative path.
    let sub = d.join("sub");
    fs::create_dir(&sub).unwrap();
    let other = sub.join("..").join("tiny.toml");
    let rel = b.strip_prefix(d).unwrap();
    let (code, o, e) = out_of(
        bin()
            .current_dir(d)
            .arg("run")
            .arg(&other)
            .arg("--resume")
            .arg(rel),
    );
    assert_eq!(code, 0, "{o}{e}");
    assert!(e.contains("0 cell(s) of tiny to run"), "{e}");
    assert_eq!(verify(&b).0, 0);
    // --out inside a bundle is refused.
    let (code, _, e) = out_of(
        bin()
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(b.join("cells")),
    );
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("inside the bundle"), "{e}");
    assert_eq!(verify(&b).0, 0);
}

#[test]
fn resume_remembers_only_and_applies_require_device_to_every_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let file = write(d, "tiny.toml", TINY);
    let out = d.join("runs");
    let (_, _, e) = out_of(
        bin()
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .args(["--only", "param=cell_a", "--jobs", "1"])
            .env("RUNNER_TEST_ABORT_AFTER", "1"),
    );
    let b = only_bundle(&out, "tiny");
    assert!(!b.join("sha256.txt").exists(), "{e}");
    let (code, o, e) = resume(&file, &b, &[]);
    assert_eq!(code, 0, "{o}{e}");
    let results: Value =
        serde_json::from_str(&fs::read_to_string(b.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        results.as_array().unwrap().len(),
        2,
        "only param=cell_a cells: {results}"
    );
    let (code, _, e) = resume(&file, &b, &["--only", "param=distance"]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("--only"), "{e}");

    // A CUDA cell skipped (no GPU) in the first run fails a resume that
    // requires CUDA, as it fails a fresh run.
    let gpu = TINY.replace("device = [\"cpu\"]", "device = [\"cpu\", \"cuda\"]");
    let b = fresh_bundle(d, &gpu, "gpu");
    let skipped = fs::read_to_string(b.join("results.csv"))
        .unwrap()
        .contains("SKIPPED");
    if skipped {
        let (code, o, e) = resume(&d.join("gpu.toml"), &b, &["--require-device", "cuda"]);
        assert_eq!(code, 1, "{o}{e}");
        assert!(fs::read_to_string(b.join("summary.md"))
            .unwrap()
            .contains("--require-device cuda"));
        assert_eq!(verify(&b).0, 0);
    }
}

// ---------------------------------------------------------------- provenance

#[test]
fn provenance_comes_from_the_binary_not_from_git_at_run_time() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let file = write(d, "tiny.toml", TINY);
    // No git on PATH, inside a folder that is no repository.
    let empty_path = d.join("nobin");
    fs::create_dir(&empty_path).unwrap();
    let (code, o, e) = out_of(
        bin()
            .current_dir(d)
            .env("PATH", &empty_path)
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(d.join("runs")),
    );
    assert_eq!(code, 0, "{o}{e}");
    let b = PathBuf::from(o.trim());
    let env: Value =
        serde_json::from_str(&fs::read_to_string(b.join("env.json")).unwrap()).unwrap();
    let commit = env["build_git_commit"].as_str().unwrap().to_string();
    assert_eq!(env["git_commit"], env["build_git_commit"]);
    let cmds = fs::read_to_string(b.join("commands.txt")).unwrap();
    assert!(cmds.contains(&format!("git commit {commit}")), "{cmds}");
    let summary = fs::read_to_string(b.join("summary.md")).unwrap();
    assert!(summary.contains(&format!("git {commit}")), "{summary}");
    assert!(!commit.is_empty());
}

// ---------------------------------------------------------------- signals

#[test]
fn sigterm_removes_temporary_files_and_leaves_a_resumable_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let file = write(d, "tiny.toml", TINY);
    let out = d.join("runs");
    let (code, _, e) = out_of(
        bin()
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .args(["--jobs", "1"])
            .env("RUNNER_TEST_SIGNAL_AFTER", "1"),
    );
    assert_eq!(code, 128 + 15, "{e}");
    assert!(e.contains("SIGTERM") && e.contains("--resume"), "{e}");
    let b = only_bundle(&out, "tiny");
    assert!(hidden_temps(&b).is_empty(), "{:?}", hidden_temps(&b));
    assert!(!b.join("sha256.txt").exists());
    let (code, o, e) = resume(&file, &b, &[]);
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(verify(&b).0, 0);

    // A signal while nanobragg writes its image: no hidden temporary file.
    let args: Vec<String> = "nanobragg -default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 3 -distance 100 -pixel 0.1 -detpixels 16 -floatfile img.bin"
        .split_whitespace()
        .map(String::from)
        .collect();
    let (code, _, e) = out_of(
        bin()
            .args(&args)
            .current_dir(d)
            .env("RUNNER_TEST_SIGNAL_IN_WRITE", "img.bin"),
    );
    assert_eq!(code, 128 + 15, "{e}");
    assert!(hidden_temps(d).is_empty(), "{:?}", hidden_temps(d));
    assert!(!d.join("img.bin").exists());
}

#[test]
fn merge_refuses_a_shard_with_a_symbolic_link_and_copies_no_target() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let file = write(d, "pic.toml", PICTURE);
    let mut shards = vec![];
    for k in ["1/2", "2/2"] {
        let (code, o, e) = out_of(
            bin()
                .arg("run")
                .arg(&file)
                .arg("--out")
                .arg(d.join("shards"))
                .args(["--shard", k]),
        );
        assert_eq!(code, 0, "{o}{e}");
        shards.push(PathBuf::from(o.trim()));
    }
    // A secret outside, reached from a shard by a symbolic link in place of
    // a cell's log (same bytes as the log, so digests alone would pass).
    let cell = fs::read_dir(shards[0].join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let secret = d.join("secret.txt");
    fs::copy(cell.join("log.txt"), &secret).unwrap();
    fs::remove_file(cell.join("log.txt")).unwrap();
    std::os::unix::fs::symlink(&secret, cell.join("log.txt")).unwrap();
    let out = d.join("merged");
    let (code, _, e) = out_of(bin().arg("merge").arg(&out).args(&shards));
    assert_eq!(code, 2, "{e}");
    let copied: Vec<PathBuf> = walk(&out)
        .into_iter()
        .filter(|p| p.ends_with("log.txt") && fs::read(p).ok() == fs::read(&secret).ok())
        .collect();
    assert!(copied.is_empty(), "{copied:?}");
    // Merging into a folder inside a bundle is refused too.
    fs::remove_file(cell.join("log.txt")).unwrap();
    fs::copy(&secret, cell.join("log.txt")).unwrap();
    let (code, _, e) = out_of(
        bin()
            .arg("merge")
            .arg(shards[1].join("cells/merged"))
            .args(&shards),
    );
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("inside the bundle"), "{e}");
}

#[test]
fn resume_of_an_interrupted_run_checks_finished_cells_against_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let reference = fresh_bundle(d, TINY, "tiny");
    let file = d.join("tiny.toml");
    let out = d.join("killed");
    let (code, _, e) = out_of(
        bin()
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .args(["--jobs", "1"])
            .env("RUNNER_TEST_ABORT_AFTER", "2"),
    );
    assert_ne!(code, 0, "{e}");
    let b = only_bundle(&out, "tiny");
    assert!(!b.join("sha256.txt").exists());
    assert!(b.join("progress.sha256").is_file());
    // A fake loss in a finished cell of the interrupted bundle.
    let finished: Vec<PathBuf> = fs::read_dir(b.join("cells"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("result.json").is_file())
        .collect();
    assert_eq!(finished.len(), 2);
    let id = finished[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let mut rec: Value =
        serde_json::from_str(&fs::read_to_string(finished[0].join("result.json")).unwrap())
            .unwrap();
    rec["loss"] = serde_json::json!(42.0);
    fs::write(
        finished[0].join("result.json"),
        serde_json::to_vec_pretty(&rec).unwrap(),
    )
    .unwrap();
    let (code, o, e) = resume(&file, &b, &[]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(e.contains(&format!("cell {id}: MODIFIED")), "{e}");
    assert!(e.contains("2 cell(s) of tiny to run"), "{e}");
    assert_eq!(
        fs::read(finished[0].join("result.json")).unwrap(),
        fs::read(reference.join("cells").join(&id).join("result.json")).unwrap()
    );
    assert!(
        !b.join("progress.sha256").exists(),
        "the manifest supersedes it"
    );
    assert_eq!(verify(&b).0, 0);
}
