//! The derivative sweep (issue 11), the way an outsider checks: forward-mode
//! derivatives of every applicable parameter against central differences of
//! renders made through the public API, each difference taken by editing the
//! configuration key a user edits (`crystal.cell[0]`, `detector.ybeam_mm`,
//! `detector.orgx`, ...) and preparing the simulation again. Used by
//! tests/derivative_sweep.rs (CPU) and tests/cuda_parity.rs (GPU).
#![allow(dead_code)]

use braggrun::engine::{render, Device, Dtype, RenderOptions};
use braggrun::physics::config::*;
use braggrun::physics::params::Param;
use braggrun::physics::Simulation;
use std::path::{Path, PathBuf};

/// Which parameters may meet a non-differentiable point in a configuration.
#[derive(Clone, Debug)]
pub enum MayKink {
    No,
    Params(Vec<Param>),
    Any,
}

pub struct SweepCase {
    pub name: &'static str,
    pub cfg: SimConfig,
    pub may_kink: MayKink,
}

fn inputs() -> PathBuf {
    super::golden_dir().join("inputs")
}

/// A triclinic crystal with misset, 2 mosaic domains, 2 phi steps, on a
/// 10 x 10 detector of 0.2 mm pixels at 25 mm (several reflections' flanks).
pub fn base() -> SimConfig {
    let mut c = SimConfig::default();
    c.crystal.cell = Some([30.0, 34.0, 38.0, 80.0, 85.0, 95.0]);
    c.crystal.misset_deg = Some([10.0, 20.0, 30.0]);
    c.crystal.n_cells = [5.0, 4.0, 3.0];
    c.crystal.default_f = 100.0;
    c.crystal.mosaic_spread_deg = Some(0.2);
    c.crystal.mosaic_domains = Some(2);
    c.beam.wavelength_a = 1.2;
    c.beam.polarization = 0.9;
    c.beam.fluence = Some(1e24);
    c.detector.convention = Convention::Mosflm;
    c.detector.pixel_size_mm = 0.2;
    c.detector.fpixels = Some(10);
    c.detector.spixels = Some(10);
    c.detector.distance_mm = 25.0;
    c.detector.xbeam_mm = Some(1.037);
    c.detector.ybeam_mm = Some(0.913);
    c.detector.oversample = Some(2);
    c.goniometer.phi_start_deg = 0.05;
    c.goniometer.osc_deg = Some(0.2);
    c.goniometer.phisteps = Some(2);
    c.phi_carryover = PhiCarryover::CParity;
    c
}

fn case(name: &'static str, may_kink: MayKink, f: impl FnOnce(&mut SimConfig)) -> SweepCase {
    let mut cfg = base();
    f(&mut cfg);
    SweepCase {
        name,
        cfg,
        may_kink,
    }
}

/// Pixel index 5's centre, in mm along one axis of 0.2 mm pixels.
const CENTRE_5: f64 = 5.5 * 0.2;

/// At least 30 configurations across every feature: every convention with
/// the beam on a pixel centre, the C default centres, both pivots,
/// oversampling rules, divergence x dispersion, HKL nearest and tricubic,
/// all shapes, curved detector, point pixel, thickness, water, a MOSFLM
/// matrix, the domain edges and the special values 0 and 1.
pub fn cases() -> Vec<SweepCase> {
    use MayKink::*;
    let hkl = inputs().join("varied.hkl");
    let mat = inputs().join("A.mat");
    vec![
        case("mosflm", No, |_| {}),
        // beam exactly on a pixel centre (one pixel sees the direct beam,
        // a row and a column lie in the polarization planes)
        case("mosflm-beam-on-pixel-centre", No, |c| {
            c.detector.oversample = Some(1);
            // Fbeam = Ybeam + 0.5 px
            c.detector.xbeam_mm = Some(CENTRE_5 - 0.1);
            c.detector.ybeam_mm = Some(CENTRE_5 - 0.1);
        }),
        case("denzo-beam-on-pixel-centre", No, |c| {
            c.detector.convention = Convention::Denzo;
            c.detector.oversample = Some(1);
            c.detector.xbeam_mm = Some(CENTRE_5);
            c.detector.ybeam_mm = Some(CENTRE_5);
        }),
        case("adxv-beam-on-pixel-centre", No, |c| {
            c.detector.convention = Convention::Adxv;
            c.detector.oversample = Some(1);
            c.detector.xbeam_mm = Some(CENTRE_5);
            c.detector.ybeam_mm = Some(2.0 - CENTRE_5);
        }),
        case("xds-whole-orgx", No, |c| {
            c.detector.convention = Convention::Xds;
            c.detector.oversample = Some(1);
            c.detector.xbeam_mm = None;
            c.detector.ybeam_mm = None;
            c.detector.orgx = Some(6.0);
            c.detector.orgy = Some(6.0);
        }),
        case("dials-whole-orgx", No, |c| {
            c.detector.convention = Convention::Dials;
            c.detector.oversample = Some(1);
            c.detector.xbeam_mm = None;
            c.detector.ybeam_mm = None;
            c.detector.orgx = Some(6.0);
            c.detector.orgy = Some(4.0);
        }),
        case("custom-beam-pivot-on-pixel-centre", No, |c| {
            c.detector.convention = Convention::Custom;
            c.detector.pivot = Some(Pivot::Beam);
            c.detector.oversample = Some(1);
            c.detector.xbeam_mm = Some(CENTRE_5);
            c.detector.ybeam_mm = Some(CENTRE_5);
        }),
        case("custom-sample-pivot-close-distance", No, |c| {
            c.detector.convention = Convention::Custom;
            c.detector.pivot = Some(Pivot::Sample);
            c.detector.close_distance_mm = Some(24.0);
            c.detector.xbeam_mm = Some(0.9);
            c.detector.ybeam_mm = Some(1.1);
            c.detector.rot_deg = [1.0, -2.0, 0.5];
        }),
        // nanoBragg.c's default beam centres on an even detector: pixel centres
        case("denzo-default-centre", No, |c| {
            c.detector.convention = Convention::Denzo;
            c.detector.oversample = Some(1);
            c.detector.xbeam_mm = None;
            c.detector.ybeam_mm = None;
        }),
        case("adxv-default-centre", No, |c| {
            c.detector.convention = Convention::Adxv;
            c.detector.oversample = Some(1);
            c.detector.xbeam_mm = None;
            c.detector.ybeam_mm = None;
        }),
        case("mosflm-default-centre", No, |c| {
            c.detector.xbeam_mm = None;
            c.detector.ybeam_mm = None;
        }),
        case("xds-twotheta-sample-pivot", No, |c| {
            c.detector.convention = Convention::Xds;
            c.detector.xbeam_mm = None;
            c.detector.ybeam_mm = None;
            c.detector.orgx = Some(4.3);
            c.detector.orgy = Some(5.7);
            c.detector.twotheta_deg = 4.0;
        }),
        case("mosflm-rotated-twotheta", No, |c| {
            c.detector.rot_deg = [2.0, 3.0, 4.0];
            c.detector.twotheta_deg = 3.0;
        }),
        case("oversample-flags-thickness", No, |c| {
            c.detector.oversample_omega = true;
            c.detector.oversample_polar = true;
            c.detector.oversample_thick = true;
            c.detector.thickness_um = 100.0;
            c.detector.thicksteps = Some(2);
            c.detector.attenuation_depth_um = Some(200.0);
        }),
        case("thickness-last-value", No, |c| {
            c.detector.thickness_um = 300.0;
            c.detector.thicksteps = Some(3);
            c.detector.attenuation_depth_um = Some(150.0);
        }),
        case("divergence-dispersion", No, |c| {
            c.detector.oversample = Some(1);
            c.beam.hdivrange_mrad = Some(1.0);
            c.beam.hdivsteps = Some(3);
            c.beam.vdivrange_mrad = Some(1.0);
            c.beam.vdivsteps = Some(2);
            c.beam.dispersion_pct = Some(2.0);
            c.beam.dispsteps = Some(3);
        }),
        case("hkl-tricubic", Any, |c| {
            c.crystal.hkl_file = Some(hkl.clone());
            c.crystal.interpolate = Some(true);
        }),
        case("hkl-nearest", Any, |c| {
            c.crystal.hkl_file = Some(hkl.clone());
            c.crystal.interpolate = Some(false);
        }),
        case("round-xtal", Any, |c| {
            c.crystal.shape = LatticeShape::Round;
        }),
        case("gauss-xtal", Any, |c| {
            c.crystal.shape = LatticeShape::Gauss;
            c.crystal.fudge = 0.7;
        }),
        case("tophat-spots", Any, |c| {
            c.crystal.shape = LatticeShape::Tophat;
        }),
        case("curved-detector", No, |c| {
            c.detector.curved = true;
        }),
        // point pixel with every detector angle at 0 (a unit-blind step
        // against an absolute tolerance used to false-FAIL here)
        case("point-pixel-angles-zero", No, |c| {
            c.detector.point_pixel = true;
            c.crystal.misset_deg = Some([0.0, 0.0, 0.0]);
        }),
        case("water-background", No, |c| {
            c.beam.water_um = 50.0;
        }),
        case("mosflm-matrix", No, |c| {
            c.crystal.cell = None;
            c.crystal.mosflm_matrix = Some(mat.clone());
            c.crystal.misset_deg = None;
            c.beam.wavelength_a = 1.0;
        }),
        // domain edges: N = 1 (one-sided into N > 1), spread 0 with domains
        case("n-equals-1", No, |c| {
            c.crystal.n_cells = [1.0, 4.0, 1.0];
        }),
        case("mosaic-spread-zero-4-domains", No, |c| {
            c.crystal.mosaic_spread_deg = Some(0.0);
            c.crystal.mosaic_domains = Some(4);
        }),
        // special values 0 and 1
        case("polarization-0-misset-0", No, |c| {
            c.beam.polarization = 0.0;
            c.crystal.misset_deg = Some([0.0, 0.0, 0.0]);
        }),
        case("polarization-1-default-f-1", No, |c| {
            c.beam.polarization = 1.0;
            c.crystal.default_f = 1.0;
        }),
        case("nopolar", No, |c| {
            c.beam.nopolar = true;
        }),
        case("spec-phi-from-0", No, |c| {
            c.phi_carryover = PhiCarryover::Spec;
            c.goniometer.phi_start_deg = 0.0;
            c.goniometer.phisteps = Some(3);
        }),
        // c-parity with a phi step exactly at 0: phi_start is a jump
        case("c-parity-phi-0", Params(vec![Param::PhiStart]), |c| {
            c.goniometer.phi_start_deg = 0.0;
            c.goniometer.phisteps = Some(3);
        }),
        // C's recommended oversampling: a step function of several parameters
        case("auto-oversample", No, |c| {
            c.detector.oversample = None;
            c.detector.distance_mm = 26.0;
        }),
        // 3 x 150 Å / (1.2 Å x 25 mm / 0.2 mm) = 3 exactly: C's
        // recommendation switches from 3 to 4 subpixels right here
        case("auto-oversample-at-switch", Any, |c| {
            c.detector.oversample = None;
        }),
        case("non-integer-n", No, |c| {
            c.crystal.n_cells = [4.5, 3.3, 5.7];
        }),
        case("large-n", No, |c| {
            c.crystal.n_cells = [60.0, 3.0, 2.0];
        }),
        case("dmin-cut", Any, |c| {
            c.beam.dmin_a = 25.0;
        }),
    ]
}

/// Move parameter `p` by `d` through the configuration key a user edits.
pub fn shifted_config(cfg: &SimConfig, sim: &Simulation, p: Param, d: f64) -> SimConfig {
    let mut c = cfg.clone();
    let hdr = sim.header();
    let px = c.detector.pixel_size_mm;
    let bump = |x: &mut Option<f64>, default: f64, d: f64| *x = Some(x.unwrap_or(default) + d);
    match p {
        Param::CellA | Param::CellB | Param::CellC => {
            c.crystal.cell.as_mut().unwrap()[p as usize] += d
        }
        Param::CellAlpha | Param::CellBeta | Param::CellGamma => {
            c.crystal.cell.as_mut().unwrap()[p as usize] += d
        }
        Param::MissetX | Param::MissetY | Param::MissetZ => {
            let i = p as usize - Param::MissetX as usize;
            c.crystal.misset_deg.get_or_insert([0.0; 3])[i] += d
        }
        Param::PhiStart => c.goniometer.phi_start_deg += d,
        Param::OscRange => bump(&mut c.goniometer.osc_deg, 0.0, d),
        Param::MosaicSpread => bump(&mut c.crystal.mosaic_spread_deg, 0.0, d),
        Param::NA | Param::NB | Param::NC => {
            c.crystal.n_cells[p as usize - Param::NA as usize] += d
        }
        Param::Distance => match &mut c.detector.close_distance_mm {
            Some(cd) => *cd += d,
            None => c.detector.distance_mm += d,
        },
        Param::BeamCenterF | Param::BeamCenterS => {
            let fast = p == Param::BeamCenterF;
            match c.detector.convention {
                // Fbeam = Ybeam (+ 0.5 px), Sbeam = Xbeam (+ 0.5 px)
                Convention::Mosflm | Convention::Denzo => {
                    if fast {
                        bump(&mut c.detector.ybeam_mm, hdr.ybeam_mm, d)
                    } else {
                        bump(&mut c.detector.xbeam_mm, hdr.xbeam_mm, d)
                    }
                }
                // Fbeam = Xbeam, Sbeam = detsize_s - Ybeam
                Convention::Adxv => {
                    if fast {
                        bump(&mut c.detector.xbeam_mm, hdr.xbeam_mm, d)
                    } else {
                        bump(&mut c.detector.ybeam_mm, hdr.ybeam_mm, -d)
                    }
                }
                // sample pivot: Fclose = (ORGX - 0.5) px
                Convention::Xds | Convention::Dials => {
                    if fast {
                        bump(&mut c.detector.orgx, hdr.orgx, d / px)
                    } else {
                        bump(&mut c.detector.orgy, hdr.orgy, d / px)
                    }
                }
                Convention::Custom => {
                    if fast {
                        bump(&mut c.detector.xbeam_mm, hdr.xbeam_mm, d)
                    } else {
                        bump(&mut c.detector.ybeam_mm, hdr.ybeam_mm, d)
                    }
                }
            }
        }
        Param::DetectorRotX | Param::DetectorRotY | Param::DetectorRotZ => {
            c.detector.rot_deg[p as usize - Param::DetectorRotX as usize] += d
        }
        Param::Twotheta => c.detector.twotheta_deg += d,
        Param::Wavelength => c.beam.wavelength_a += d,
        Param::Fluence => bump(&mut c.beam.fluence, 0.0, d),
        Param::Polarization => c.beam.polarization += d,
        Param::DefaultF => c.crystal.default_f += d,
    }
    c
}

/// The step of the sweep's differences: the gradcheck's default (1e-4 of
/// max(|value|, 1 unit); the mosaic spread at least 1e-3 of its value).
pub fn step(p: Param, x: f64) -> f64 {
    use braggrun::experiment::config::EpsMode;
    braggrun::experiment::probes::gradcheck_step(p, x, 1e-4, EpsMode::Auto)
}

/// One parameter of one configuration, measured.
pub struct Measured {
    pub param: Param,
    /// forward-mode derivative and the reference difference, per pixel
    pub ad: Vec<f64>,
    pub fd: Vec<f64>,
    /// left/right asymmetry at h and h/2 exceeds the tolerance somewhere
    pub asymmetric: bool,
    pub one_sided: bool,
    /// max |ad - fd| / (1e-5 max|fd| + 1e-3 |fd|) over the pixels
    pub score: f64,
    pub features: Vec<String>,
}

fn full_render(
    sim: &Simulation,
    device: Device,
    dtype: Dtype,
    derivs: &[Param],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut o = RenderOptions::new(dtype);
    o.derivatives = derivs.to_vec();
    let r = render(sim, device, &o).unwrap_or_else(|e| panic!("render on {device}: {e}"));
    let img = r.roi_values(&r.image);
    let ders = derivs
        .iter()
        .map(|p| r.roi_values(r.derivative(*p).unwrap()))
        .collect();
    (img, ders)
}

/// The image, and every applicable parameter of a configuration measured
/// against differences of re-prepared renders on `device`.
pub fn measure(c: &SweepCase, device: Device) -> (Vec<f64>, Vec<Measured>) {
    let base_dir = Path::new(".");
    let sim = Simulation::prepare(&c.cfg, base_dir).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    let params = sim.applicable_params();
    let (img, ders) = full_render(&sim, device, Dtype::F64, &params);
    let plain = |cfg: &SimConfig| -> Vec<f64> {
        let s = Simulation::prepare(cfg, base_dir).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        full_render(&s, device, Dtype::F64, &[]).0
    };
    let mut out = vec![];
    for (p, ad) in params.iter().copied().zip(ders) {
        let x = sim.base_value(p).unwrap();
        let h = step(p, x);
        let at = |d: f64| plain(&shifted_config(&c.cfg, &sim, p, d));
        let one_sided = sim.domain_edge(p).is_some();
        let n = img.len();
        // Richardson from steps h/2^j and h/2^(j+1); halve further (up to
        // h/32) where its own error estimate exceeds a quarter of the
        // tolerance: near a pole of sincg with non-whole N, or a steep
        // flank, a step of 1e-4 of the value is not yet in the asymptotic
        // range.
        let quotient = |j: i32| -> Vec<f64> {
            let hj = h / 2f64.powi(j);
            if one_sided {
                let fp = at(hj);
                (0..n).map(|i| (fp[i] - img[i]) / hj).collect()
            } else {
                let (fp, fm) = (at(hj), at(-hj));
                (0..n).map(|i| (fp[i] - fm[i]) / (2.0 * hj)).collect()
            }
        };
        let order = if one_sided { 2.0 } else { 4.0 };
        let mut d = vec![quotient(0), quotient(1)];
        let mut fd = vec![0.0; n];
        let mut fd_err = vec![f64::INFINITY; n];
        for j in 1..6 {
            let (d1, d2) = (&d[j - 1], &d[j]);
            for i in 0..n {
                let r = (order * d2[i] - d1[i]) / (order - 1.0);
                let e = (d2[i] - d1[i]).abs() / (order - 1.0);
                if e < fd_err[i] {
                    fd[i] = r;
                    fd_err[i] = e;
                }
            }
            let max_fd = fd.iter().fold(0.0f64, |m: f64, v: &f64| m.max(v.abs()));
            let settled = (0..n).all(|i| fd_err[i] <= 0.25 * (1e-5 * max_fd + 1e-3 * fd[i].abs()));
            if settled || j == 5 {
                break;
            }
            d.push(quotient(j as i32 + 1));
        }
        // left/right asymmetry at h and h/2 (central differences only)
        let asym: Vec<(f64, f64)> = if one_sided {
            vec![]
        } else {
            let (fp, fm, fp2, fm2) = (at(h), at(-h), at(h / 2.0), at(-h / 2.0));
            (0..n)
                .map(|i| {
                    (
                        (fp[i] - 2.0 * img[i] + fm[i]) / h,
                        (fp2[i] - 2.0 * img[i] + fm2[i]) / (h / 2.0),
                    )
                })
                .collect()
        };
        let max_fd = fd.iter().fold(0.0f64, |m: f64, v: &f64| m.max(v.abs()));
        let mut score = 0.0f64;
        let mut asymmetric = false;
        for i in 0..n {
            // rounding floor of a difference of re-prepared renders: a
            // derivative below it cannot be resolved by differences at all
            let floor = 1e-13 * img[i].abs() / (h / 32.0);
            let lim = 1e-5 * max_fd + 1e-3 * fd[i].abs() + floor;
            let err = (ad[i] - fd[i]).abs();
            let s = if lim > 0.0 {
                err / lim
            } else if err > 0.0 {
                f64::INFINITY
            } else {
                0.0
            };
            if s.is_nan() || s > score {
                score = if s.is_nan() { f64::INFINITY } else { s };
            }
            if let Some((a1, a2)) = asym.get(i) {
                let lim_a = 1e-5 * max_fd + 1e-3 * fd[i].abs() + 1e-13 * img[i].abs() / h;
                if a2.abs() > lim_a && a2.abs() > 0.75 * a1.abs() {
                    asymmetric = true;
                }
            }
        }
        out.push(Measured {
            param: p,
            ad,
            fd,
            asymmetric,
            one_sided,
            score,
            features: sim.nonsmooth_features(p, h),
        });
    }
    (img, out)
}

/// Run the sweep on `device`: every pair either agrees to 1e-5 max|fd| +
/// 1e-3 |fd| per pixel, or is a non-differentiable point that the
/// configuration declares and the model names (features) or the
/// differences show (left/right asymmetry). No derivative is NaN or
/// infinite. Returns the report lines, or the failures.
pub fn run_sweep(device: Device) -> Result<Vec<String>, Vec<String>> {
    let mut lines = vec![];
    let mut failures = vec![];
    let mut verified_nonzero = [0usize; 26];
    let mut pairs = 0;
    let mut kinks = 0;
    for c in cases() {
        let (img, ms) = measure(&c, device);
        let sum: f64 = img.iter().sum();
        if !(sum > 0.0 && sum.is_finite()) {
            failures.push(format!("{}: image sum {sum}", c.name));
            continue;
        }
        let mut worst = (0.0f64, Param::CellA);
        for m in &ms {
            pairs += 1;
            let p = m.param;
            if m.ad.iter().any(|v| !v.is_finite()) {
                failures.push(format!(
                    "{} {p}: {} non-finite derivative pixels",
                    c.name,
                    m.ad.iter().filter(|v| !v.is_finite()).count()
                ));
                continue;
            }
            let allowed = match &c.may_kink {
                MayKink::No => false,
                MayKink::Any => true,
                MayKink::Params(v) => v.contains(&p),
            };
            if m.score <= 1.0 {
                if m.ad.iter().any(|v| *v != 0.0) {
                    verified_nonzero[p as usize] += 1;
                }
                if m.score > worst.0 {
                    worst = (m.score, p);
                }
            } else if allowed && (m.asymmetric || !m.features.is_empty()) {
                kinks += 1;
                lines.push(format!(
                    "  {} {p}: non-smooth here (asymmetric differences: {}; features: {})",
                    c.name,
                    m.asymmetric,
                    m.features.join("; ")
                ));
            } else {
                failures.push(format!(
                    "{} {p}: |ad - fd| is {:.3}x the tolerance{}{}",
                    c.name,
                    m.score,
                    if m.asymmetric {
                        " (left/right differences disagree)"
                    } else {
                        ""
                    },
                    if m.one_sided {
                        " (one-sided, domain edge)"
                    } else {
                        ""
                    }
                ));
            }
        }
        lines.push(format!(
            "{:<36} {} params, image sum {:.4e}, worst agreeing pair {} at {:.3} of the tolerance",
            c.name,
            ms.len(),
            sum,
            worst.1,
            worst.0
        ));
    }
    for p in Param::ALL {
        // every parameter verified non-zero somewhere (a vacuous sweep fails)
        if verified_nonzero[*p as usize] < 3 {
            failures.push(format!(
                "{p}: only {} configurations verified a non-zero derivative",
                verified_nonzero[*p as usize]
            ));
        }
    }
    lines.push(format!(
        "{} configurations, {pairs} (configuration, parameter) pairs, {kinks} non-smooth points reported",
        cases().len()
    ));
    if failures.is_empty() {
        Ok(lines)
    } else {
        Err(failures)
    }
}

/// The triclinic case of tests/gradients.rs (misset, 3 mosaic domains, 3
/// phi steps from 0 in c-parity, oversample 2, polarization).
pub fn triclinic() -> SimConfig {
    let mut c = SimConfig::default();
    c.crystal.cell = Some([70.0, 80.0, 90.0, 75.0, 85.0, 95.0]);
    c.crystal.misset_deg = Some([10.0, 20.0, 30.0]);
    c.crystal.n_cells = [5.0, 5.0, 5.0];
    c.crystal.default_f = 100.0;
    c.crystal.mosaic_spread_deg = Some(0.3);
    c.crystal.mosaic_domains = Some(3);
    c.beam.wavelength_a = 1.0;
    c.beam.polarization = 0.9;
    c.detector.convention = Convention::Mosflm;
    c.detector.pixel_size_mm = 0.1;
    c.detector.fpixels = Some(48);
    c.detector.spixels = Some(48);
    c.detector.distance_mm = 100.0;
    c.detector.xbeam_mm = Some(2.4);
    c.detector.ybeam_mm = Some(2.4);
    c.detector.oversample = Some(2);
    c.goniometer.phi_start_deg = 0.0;
    c.goniometer.osc_deg = Some(0.3);
    c.goniometer.phisteps = Some(3);
    c.phi_carryover = PhiCarryover::CParity;
    c
}
