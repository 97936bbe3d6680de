//! Property-based fuzzing (proptest, fixed seed, bounded cases) of the
//! experiment loader and the nanoBragg flag parser: random mutations of the
//! real experiment files in experiments/ and of the real command lines of
//! tests/golden/cases.tsv never panic or abort; each is either accepted or
//! refused with a message; and every configuration that is accepted
//! prepares (what `runner run` does at setup) within the memory budget.
//! Library calls in process for speed, plus a few runs of the binary.

use braggrun::experiment::run::load_and_plan;
use braggrun::physics::{budget, Simulation};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static ACCEPTED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

#[macro_use]
mod common;
use common::*;

/// The memory limit of these tests: what is accepted must fit in it.
const LIMIT: u64 = 256 << 20;

fn config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "1e300",
    "-1e300",
    "1e-300",
    "4000000000",
    "9223372036854775807",
    "-9223372036854775808",
    "nan",
    "inf",
    "\"x\"",
    "[]",
    "[1e300, 1e300, 1e300]",
    "[0, 4294967295, 0, 1]",
    "true",
    "{}",
    "65536",
    "16384",
    "100000",
    "0.5",
];

const INSERTS: &[&str] = &[
    "hdivsteps = 100000",
    "vdivsteps = 100000\ndispsteps = 100000",
    "hdivrange_mrad = 1e6\nhdivstep_mrad = 1e-6",
    "detsize_f_mm = 1e300",
    "pixel_size_mm = 1e-30",
    "mosaic_domains = 100000\nmosaic_spread_deg = 1.0",
    "phisteps = 100000",
    "steps = 4000000000",
    "threads = 100000",
    "fpixels = 16384\nspixels = 16383",
    "oversample = 64",
    "water_um = 1e300",
    "hkl_file = \"/dev/zero\"",
    "hkl_file = \"/nonexistent.hkl\"",
    "mosflm_matrix = \"/dev/null\"",
    "roi = [0, 1, 0, 1]",
    "\"model.crystal.default_f\" = [1, 2, 3]",
    "[matrix]\nparam = [\"cell_a\", \"nonsense\"]",
    "[[probe]]\nkind = \"simulate\"",
    "[[probe]]\nkind = \"nonsense\"",
    "include = [{ probe = \"x\" }]",
    "energy_ev = 1e-300",
    "distance_mm = 1e-300",
    "n_cells = [1e300, 1, 1]",
    "cell = [1e-300, 1, 1, 90, 90, 90]",
    "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r = 1",
];

/// One mutation: (operation, position, pick).
type Mutation = (u8, usize, usize);

fn mutate_text(text: &str, muts: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for &(op, pos, pick) in muts {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = pos % lines.len();
        match op % 6 {
            0 => {
                if let Some((k, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{k}= {}", EXTREMES[pick % EXTREMES.len()]);
                }
            }
            1 => {
                lines.remove(i);
            }
            2 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            3 => lines.insert(i + 1, INSERTS[pick % INSERTS.len()].to_string()),
            4 => {
                let l = &lines[i];
                let cut = l.char_indices().nth(pick % (l.len() + 1)).map(|(c, _)| c);
                if let Some(c) = cut {
                    lines[i] = l[..c].to_string();
                }
                lines.truncate(i + 1);
            }
            _ => {
                if let Some(q) = lines[i].find('"') {
                    lines[i] = format!("{}\"{}\"", &lines[i][..q], "é/../x".repeat(pick % 4));
                }
            }
        }
    }
    lines.join("\n") + "\n"
}

fn experiments() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(manifest_dir().join("experiments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().map(|e| e == "toml").unwrap_or(false))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(v.len() >= 5, "{v:?}");
    v
}

/// A folder laid out like the repository (experiments/ and a link to
/// tests/), so the experiments' relative paths resolve.
fn workdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("experiments")).unwrap();
    std::os::unix::fs::symlink(manifest_dir().join("tests"), t.path().join("tests")).unwrap();
    t
}

/// The property for one experiment text: no panic; refused with a message
/// naming the file or a flag, or accepted with every cell within the
/// budget and every distinct model prepared as `runner run` prepares it.
fn check_experiment(dir: &Path, name: &str, text: &str) -> Result<(), TestCaseError> {
    budget::set_limit(LIMIT);
    let file: PathBuf = dir.join("experiments").join(name);
    std::fs::write(&file, text).unwrap();
    match load_and_plan(&file, &[], &[], true) {
        Err(e) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            let m = e.0;
            prop_assert!(!m.trim().is_empty());
            prop_assert!(
                m.contains(name) || m.starts_with("--") || m.starts_with("environment"),
                "the message names the file: {m}"
            );
        }
        Ok((exp, cells)) => {
            ACCEPTED.fetch_add(1, Ordering::Relaxed);
            prop_assert!(!cells.is_empty());
            let mut models = Vec::new();
            for c in &cells {
                prop_assert!(c.mem_bytes <= LIMIT, "cell {} needs {}", c.id, c.mem_bytes);
                if models.len() < 3 && !models.contains(&c.model) {
                    models.push(c.model.clone());
                }
            }
            for m in &models {
                let r = Simulation::prepare(m, &exp.base_dir);
                prop_assert!(
                    r.is_ok(),
                    "validate accepted what setup refuses: {:?}",
                    r.err()
                );
            }
        }
    }
    Ok(())
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..4)
}

#[test]
fn mutated_experiment_files_never_panic_and_accepted_ones_fit_the_budget() {
    let exps = experiments();
    let dir = workdir();
    // The originals first: they are accepted or refused like any input.
    for (name, text) in &exps {
        check_experiment(dir.path(), name, text).unwrap();
    }
    let mut runner = proptest::test_runner::TestRunner::new(config(160, 0x5eed_0001));
    runner
        .run(&(0..exps.len(), mutations()), |(i, muts)| {
            let (name, text) = &exps[i];
            check_experiment(dir.path(), name, &mutate_text(text, &muts))
        })
        .unwrap();
    // The mutations reach both sides (a fuzz that refuses everything, or
    // accepts everything, tests nothing).
    let (a, r) = (
        ACCEPTED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
    );
    eprintln!("experiment files: {a} accepted, {r} refused");
    assert!(a >= 20 && r >= 20, "{a} accepted, {r} refused");
}

const FLAG_INSERTS: &[&[&str]] = &[
    &["-detsize", "1e300"],
    &["-pixel", "1e-30"],
    &["-hdivsteps", "100000", "-vdivsteps", "100000"],
    &["-dispsteps", "100000", "-dispersion", "1"],
    &["-hdivrange", "1e6", "-hdivstep", "1e-6"],
    &["-mosaic_dom", "100000", "-mosaic", "1"],
    &["-phisteps", "100000"],
    &["-detpixels_f", "16384", "-detpixels_s", "16383"],
    &["-roi", "0", "1", "0", "1"],
    &["-water", "1e300"],
    &["-oversample", "64"],
    &["-hkl", "/dev/zero"],
    &["-mat", "/dev/null"],
    &["-N", "0"],
    &["-lambda", "0"],
    &["-distance", "-1"],
    &["-cell", "1", "1", "1", "179", "179", "179"],
    &["-nonsense"],
    &["-roi"],
];

fn mutate_args(args: &[String], muts: &[Mutation]) -> Vec<String> {
    let mut a = args.to_vec();
    for &(op, pos, pick) in muts {
        let n = a.len().max(1);
        let i = pos % n;
        match op % 5 {
            0 if !a.is_empty() => {
                if !a[i].starts_with('-') || a[i].parse::<f64>().is_ok() {
                    a[i] = EXTREMES[pick % EXTREMES.len()]
                        .trim_matches('"')
                        .to_string();
                }
            }
            1 if !a.is_empty() => {
                a.remove(i);
            }
            2 if !a.is_empty() => {
                let t = a[i].clone();
                a.insert(i, t);
            }
            4 => a.truncate(i),
            _ => {
                let ins = FLAG_INSERTS[pick % FLAG_INSERTS.len()];
                let at = i.min(a.len());
                for (k, t) in ins.iter().enumerate() {
                    a.insert(at + k, t.to_string());
                }
            }
        }
    }
    a
}

#[test]
fn mutated_nanobragg_command_lines_never_panic_and_accepted_ones_fit_the_budget() {
    budget::set_limit(LIMIT);
    let cases: Vec<Vec<String>> = golden_cases().into_iter().map(|c| c.args).collect();
    assert!(cases.len() >= 20);
    let dir = golden_dir();
    let (ok, bad) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = proptest::test_runner::TestRunner::new(config(300, 0x5eed_0002));
    runner
        .run(&(0..cases.len(), mutations()), |(i, muts)| {
            budget::set_limit(LIMIT);
            let argv = mutate_args(&cases[i], &muts);
            match braggrun::cli::nanobragg::parse_args(&argv) {
                Err(e) => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    prop_assert!(!e.trim().is_empty())
                }
                Ok(parsed) => match Simulation::prepare(&parsed.config, &dir) {
                    Err(e) => {
                        bad.fetch_add(1, Ordering::Relaxed);
                        prop_assert!(!e.to_string().trim().is_empty())
                    }
                    Ok(sim) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let need = sim.render_need(false, 0);
                        prop_assert!(
                            need.total().map(|t| t <= LIMIT).unwrap_or(false),
                            "prepared beyond the budget: {argv:?}"
                        );
                    }
                },
            }
            Ok(())
        })
        .unwrap();
    let (a, r) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!("command lines: {a} accepted, {r} refused");
    assert!(a >= 20 && r >= 20, "{a} accepted, {r} refused");
}

/// The binary on a few mutated files: exit 0 or 2, never a panic or abort,
/// and a refusal says what is wrong.
#[test]
fn the_binary_on_mutated_files_exits_0_or_2() {
    let exps = experiments();
    let dir = workdir();
    let mut runner = proptest::test_runner::TestRunner::new(config(12, 0x5eed_0003));
    runner
        .run(&(0..exps.len(), mutations()), |(i, muts)| {
            let (name, text) = &exps[i];
            let file = dir.path().join("experiments").join(name);
            std::fs::write(&file, mutate_text(text, &muts)).unwrap();
            for cmd in ["validate", "plan"] {
                let o = runner_cmd()
                    .arg(cmd)
                    .arg(&file)
                    .args(["--allow-large", "--memory-limit", "256M"])
                    .output()
                    .unwrap();
                let code = o.status.code();
                let err = String::from_utf8_lossy(&o.stderr);
                prop_assert!(code == Some(0) || code == Some(2), "{cmd}: {code:?}: {err}");
                prop_assert!(!err.contains("panicked"), "{err}");
                if code == Some(2) {
                    prop_assert!(err.starts_with("error: "), "{err}");
                }
            }
            Ok(())
        })
        .unwrap();
}

fn runner_cmd() -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNNER_") || k == "BRAGGRUN_MEMORY_LIMIT" {
            c.env_remove(k);
        }
    }
    c
}
