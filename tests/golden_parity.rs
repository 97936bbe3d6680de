//! Every row of tests/golden/cases.tsv (nanoBragg.c images) rendered through
//! the CPU engine in float64 and compared at float32 rounding
//! (tests/golden/README.md: "What a match means").

use braggrun::cli::nanobragg::parse_args;
use braggrun::engine::{render, Device, Dtype, RenderOptions};
use braggrun::physics::config::PhiCarryover;
use braggrun::physics::Simulation;
use std::path::Path;

mod common;
use common::{golden_cases, golden_dir};

fn read_f32(path: &Path) -> Vec<f64> {
    let b = std::fs::read(path).unwrap();
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect()
}

/// Pearson correlation, sum ratio, max |diff| / max(reference).
pub fn compare(ours: &[f64], reference: &[f64]) -> (f64, f64, f64) {
    let n = ours.len() as f64;
    let (ma, mb) = (
        ours.iter().sum::<f64>() / n,
        reference.iter().sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (a, b) in ours.iter().zip(reference) {
        sab += (a - ma) * (b - mb);
        saa += (a - ma) * (a - ma);
        sbb += (b - mb) * (b - mb);
    }
    let corr = sab / (saa * sbb).sqrt();
    let ratio = ours.iter().sum::<f64>() / reference.iter().sum::<f64>();
    let maxref = reference.iter().cloned().fold(0.0, f64::max);
    let maxdiff = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    (corr, ratio, maxdiff / maxref)
}

fn has_phi0_multistep(args: &[String]) -> bool {
    // multi-step sweep that includes an exact phi = 0
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].parse::<f64>().unwrap())
    };
    let phi = get("-phi").unwrap_or(0.0);
    let steps = get("-phisteps").unwrap_or(1.0);
    phi == 0.0 && steps > 1.0
}

fn run_all(mode: PhiCarryover) {
    let mut failures = vec![];
    for c in golden_cases() {
        let mut args = c.args.clone();
        if mode == PhiCarryover::CParity {
            args.extend(["-phi_carryover".to_string(), "c-parity".to_string()]);
        } else if has_phi0_multistep(&args) {
            continue;
        }
        let parsed = parse_args(&args).unwrap_or_else(|e| panic!("{} {}: {e}", c.case, c.run));
        let sim = Simulation::prepare(&parsed.config, &golden_dir().join("inputs")).unwrap();
        let out = render(&sim, Device::Cpu, &RenderOptions::new(Dtype::F64)).unwrap();
        let reference = read_f32(&golden_dir().join(&c.file));
        assert_eq!(reference.len(), out.image.len(), "{}", c.file);
        let (corr, ratio, maxd) = compare(&out.image, &reference);
        let ok = corr >= 0.999999 && (ratio - 1.0).abs() <= 1e-5 && maxd <= 1e-4;
        println!(
            "{:<16} {:<36} corr {:.9} sum-ratio {:.9} max|d|/max {:.3e} {}",
            c.case,
            c.run,
            corr,
            ratio,
            maxd,
            if ok { "ok" } else { "MISMATCH" }
        );
        if !ok {
            failures.push(format!("{} {}", c.case, c.run));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches ({mode:?}): {failures:?}"
    );
}

#[test]
fn golden_images_match_c_in_c_parity_mode() {
    run_all(PhiCarryover::CParity);
}

#[test]
fn golden_images_match_c_in_spec_mode_without_phi_zero() {
    run_all(PhiCarryover::Spec);
}
