//! The CPU lane path (physics::lanes: the square lattice factor over several
//! orientations per instruction) gives the scalar path's pixel values bit for
//! bit: every golden case in float64 and float32, in both phi-carryover
//! modes, through the model's own pixel function with the lanes on and off;
//! plus configurations the lanes must leave to the scalar path.

mod common;

use braggrun::cli::nanobragg::parse_args;
use braggrun::physics::params::{Param, ParamValues};
use braggrun::physics::scalar::Real;
use braggrun::physics::simulator::{FMode, Model};
use braggrun::physics::Simulation;
use common::{golden_cases, golden_dir};

fn sim(args: &[String], carryover: &str) -> Simulation {
    sim_with(args, carryover, |_| {})
}

fn sim_with(
    args: &[String],
    carryover: &str,
    edit: impl FnOnce(&mut braggrun::physics::config::SimConfig),
) -> Simulation {
    let mut v = args.to_vec();
    v.extend(["-phi_carryover".to_string(), carryover.to_string()]);
    let mut parsed = parse_args(&v).expect("arguments parse");
    edit(&mut parsed.config);
    Simulation::prepare(&parsed.config, &golden_dir().join("inputs")).expect("simulation prepares")
}

/// About `target` pixels (at least): every stride-th along each axis, in
/// the detector's row order.
fn sample_pixels(sim: &Simulation, target: usize) -> Vec<(usize, usize)> {
    let (fp, sp) = (sim.fpixels(), sim.spixels());
    let stride = ((fp * sp) / target).max(1).isqrt().max(1);
    (0..sp)
        .step_by(stride)
        .flat_map(|s| (0..fp).step_by(stride).map(move |f| (f, s)))
        .collect()
}

/// Every `stride`-th pixel along each axis, with the lanes on and off:
/// (pixels compared, non-zero pixels).
fn compare<T: Real>(name: &str, sim: &Simulation, fmode: FMode) -> (usize, usize) {
    let (n, nz) = compare_if_lanes::<T>(name, sim, fmode);
    assert!(n > 0, "{name}: the lane path is not taken");
    (n, nz)
}

/// [`compare`], or (0, 0) when the model does not take the lane path.
fn compare_if_lanes<T: Real>(name: &str, sim: &Simulation, fmode: FMode) -> (usize, usize) {
    let base = ParamValues::<T>::from_f64(&sim.setup.base_values());
    let mut model = Model::<T>::build(&sim.setup, sim.hkl.as_ref(), &base);
    if model.lanes.is_none() {
        return (0, 0);
    }
    let pixels = sample_pixels(sim, 4096);
    let run = |m: &Model<T>| -> Vec<(f64, Option<usize>)> {
        pixels
            .iter()
            .enumerate()
            .map(|(i, (f, s))| {
                let (v, oor) = m.pixel(*f, *s, i == 0, fmode);
                (v.val(), oor)
            })
            .collect()
    };
    let with = run(&model);
    model.lanes = None;
    let without = run(&model);
    let mut nonzero = 0;
    for (i, (a, b)) in with.iter().zip(&without).enumerate() {
        assert!(
            a.0.to_bits() == b.0.to_bits() && a.1 == b.1,
            "{name}: pixel {:?}: lanes {a:?}, scalar {b:?}",
            pixels[i]
        );
        nonzero += usize::from(a.0 != 0.0);
    }
    (pixels.len(), nonzero)
}

#[test]
fn golden_cases_bit_for_bit_in_float64_and_float32() {
    let (mut compared, mut cases, mut on_lanes) = (0, 0, 0);
    for c in golden_cases() {
        cases += 1;
        for carryover in ["spec", "c-parity"] {
            let name = format!("{} {} ({carryover})", c.case, c.run);
            let s = sim(&c.args, carryover);
            let (n64, nz64) =
                compare_if_lanes::<f64>(&format!("{name} f64"), &s, FMode::Interpolate);
            let (n32, nz32) =
                compare_if_lanes::<f32>(&format!("{name} f32"), &s, FMode::Interpolate);
            assert_eq!(n64, n32, "{name}: f64 and f32 take different paths");
            if n64 > 0 {
                assert!(nz64 > 0 && nz32 > 0, "{name}: all-zero sample");
                on_lanes += usize::from(carryover == "spec");
            }
            compared += n64 + n32;
        }
    }
    // all but the round, Gaussian and top-hat shape cases
    assert!(
        cases >= 40 && on_lanes + 3 >= cases,
        "{on_lanes} of {cases} cases on lanes"
    );
    assert!(compared > 100_000, "{compared} pixels compared");
}

#[test]
fn hkl_lookups_and_the_interpolation_switch() {
    // structure factors from an HKL file, interpolated, nearest, and the
    // switch from one to the other part way through a pixel
    let args: Vec<String> = "-hkl varied.hkl -cell 70 80 90 75 85 95 -lambda 1.5 -N 4 -distance 120 \
        -detpixels 96 -pixel 0.2 -mosaic 0.4 -mosaic_dom 5 -phisteps 4 -osc 0.3 -seed 5 -interpolate"
        .split_whitespace()
        .map(String::from)
        .collect();
    let hkl = golden_dir().join("inputs").join("varied.hkl");
    if !hkl.is_file() {
        panic!("{} missing", hkl.display());
    }
    let s = sim(&args, "c-parity");
    for fmode in [FMode::Interpolate, FMode::Nearest, FMode::SwitchAt(7)] {
        let (_, nz) = compare::<f64>(&format!("varied.hkl {fmode:?} f64"), &s, fmode);
        assert!(nz > 0);
        compare::<f32>(&format!("varied.hkl {fmode:?} f32"), &s, fmode);
    }
}

#[test]
fn edges_whole_n_of_one_and_many_orientations() {
    // N = 1 on two axes (their factors skipped), N = 48 (the largest whole N
    // on the lane path), 300 orientations (several chunks of lanes), a
    // beam along an axis (indices at exact integers), oversampling
    for flags in [
        "-default_F 10 -cell 50 50 50 90 90 90 -lambda 1 -Na 1 -Nb 48 -Nc 1 -distance 80 -detpixels 40 -pixel 0.5",
        "-default_F 10 -cell 40 60 80 90 90 90 -lambda 1.2 -N 7 -distance 90 -detpixels 24 -pixel 1 \
         -mosaic 1 -mosaic_dom 30 -phisteps 10 -osc 2 -seed 3 -oversample 2",
        "-default_F 10 -cell 100 100 100 90 90 90 -lambda 1 -N 3 -distance 100 -detpixels 33 -pixel 0.1 \
         -Xbeam 1.65 -Ybeam 1.65 -phisteps 3 -osc 0.5 -phi -0.5",
    ] {
        let args: Vec<String> = flags.split_whitespace().map(String::from).collect();
        for carryover in ["spec", "c-parity"] {
            let s = sim(&args, carryover);
            let (_, nz) = compare::<f64>(flags, &s, FMode::Interpolate);
            assert!(nz > 0, "{flags}: all zero");
            compare::<f32>(flags, &s, FMode::Interpolate);
        }
    }
}

#[test]
fn other_shapes_and_fractional_n_keep_the_scalar_path() {
    let flags =
        "-default_F 10 -cell 50 50 50 90 90 90 -lambda 1 -N 5 -distance 80 -detpixels 8 -pixel 0.5";
    let args: Vec<String> = flags.split_whitespace().map(String::from).collect();
    let s = sim_with(&args, "spec", |c| c.crystal.n_cells = [5.0, 5.5, 5.0]);
    let base = ParamValues::<f64>::from_f64(&s.setup.base_values());
    let model = Model::<f64>::build(&s.setup, s.hkl.as_ref(), &base);
    assert!(model.lanes.is_none(), "N = 5.5: lanes taken");
    for flags in [
        "-default_F 10 -cell 50 50 50 90 90 90 -lambda 1 -N 5 -distance 80 -detpixels 8 -pixel 0.5 -round_xtal",
        "-default_F 10 -cell 50 50 50 90 90 90 -lambda 1 -N 5 -distance 80 -detpixels 8 -pixel 0.5 -gauss_xtal",
    ] {
        let args: Vec<String> = flags.split_whitespace().map(String::from).collect();
        let s = sim(&args, "spec");
        let base = ParamValues::<f64>::from_f64(&s.setup.base_values());
        let model = Model::<f64>::build(&s.setup, s.hkl.as_ref(), &base);
        assert!(model.lanes.is_none(), "{flags}: lanes taken");
    }
}

/// The derivative lane path (float64 duals, physics::lanes::DerivativeSums)
/// against the scalar dual path: the image is the scalar dual path's bit for
/// bit (and the forward render's to 1e-12 of the brightest pixel), the derivatives agree to 1e-11 of
/// the largest (or of the image's scale per unit relative change of the
/// parameter, where the derivative is zero to rounding), and neither is zero.
fn check_derivatives<const K: usize>(name: &str, sim: &Simulation, dirs: [Param; K]) {
    check_derivatives_factored(name, sim, dirs, None)
}

/// [`check_derivatives`], and with `factored` Some, that the rows of both
/// sweeps took that form (physics::lanes::DerivativeRows).
fn check_derivatives_factored<const K: usize>(
    name: &str,
    sim: &Simulation,
    dirs: [Param; K],
    factored: Option<bool>,
) {
    use braggrun::engine::values::{seeded_values, Extract};
    use num_dual::DualSVec64;
    type D<const K: usize> = DualSVec64<K>;
    let base = sim.setup.base_values();
    let pv = seeded_values::<D<K>>(&base, &dirs);
    let mut model = Model::<D<K>>::build(&sim.setup, sim.hkl.as_ref(), &pv);
    let basis: Vec<D<K>> = (0..K).map(|i| D::<K>::seeded(0.0, i)).collect();
    model.attach_derivative_lanes(|x, i| x.eps64(i), basis);
    let Some(d) = &model.derivative_lanes else {
        panic!("{name}: no derivative lanes");
    };
    if let Some(want) = factored {
        assert_eq!(d.factored(), [want; 2], "{name}: factored rows");
    }
    let plain = Model::<f64>::build(&sim.setup, sim.hkl.as_ref(), &ParamValues::from_f64(&base));
    let pixels = sample_pixels(sim, 2048);
    let run = |m: &Model<D<K>>| -> Vec<D<K>> {
        pixels
            .iter()
            .enumerate()
            .map(|(i, (f, s))| m.pixel(*f, *s, i == 0, FMode::Interpolate).0)
            .collect()
    };
    let lanes = run(&model);
    model.derivative_lanes = None;
    let scalar = run(&model);
    let forward: Vec<f64> = pixels
        .iter()
        .enumerate()
        .map(|(i, (f, s))| plain.pixel(*f, *s, i == 0, FMode::Interpolate).0)
        .collect();
    let brightest = forward.iter().fold(0.0, |m: f64, v| m.max(v.abs()));
    for (i, (f, s)) in pixels.iter().enumerate() {
        let (v, want) = (lanes[i].re64(), scalar[i].re64());
        assert_eq!(
            v.to_bits(),
            want.to_bits(),
            "{name}: pixel ({f}, {s}) value"
        );
        assert!(
            (v - forward[i]).abs() <= 1e-12 * brightest,
            "{name}: pixel ({f}, {s}): {v} vs forward {}",
            forward[i]
        );
    }
    assert!(
        lanes.iter().any(|v| v.re64() != 0.0),
        "{name}: all-zero image"
    );
    for (p, param) in dirs.iter().enumerate() {
        let biggest = scalar.iter().map(|v| v.eps64(p).abs()).fold(0.0, f64::max);
        assert!(biggest > 0.0, "{name}: d/d{param:?} is zero everywhere");
        // at least the image's scale per unit relative change of the
        // parameter: a derivative that is zero to rounding (d/dλ with a
        // MOSFLM matrix) is a rounding residue on both paths
        let value = base.get(*param).abs();
        let biggest = if value > 0.0 {
            biggest.max(brightest / value)
        } else {
            biggest
        };
        for (i, (a, b)) in lanes.iter().zip(&scalar).enumerate() {
            let (a, b) = (a.eps64(p), b.eps64(p));
            assert!(
                (a - b).abs() <= 1e-11 * biggest && a.is_finite(),
                "{name}: d/d{param:?} at {:?}: lanes {a}, scalar {b} (largest {biggest})",
                pixels[i]
            );
        }
    }
}

fn args(flags: &str) -> Vec<String> {
    flags.split_whitespace().map(String::from).collect()
}

#[test]
fn derivatives_on_lanes_match_the_scalar_dual_path() {
    use Param::*;
    let mosaic =
        "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.4 \
        -detpixels 96 -mosflm -phisteps 10 -osc 0.1 -mosaic 0.5 -mosaic_dom 10 -seed 2";
    let tri = "-default_F 30 -cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 4 -distance 100 \
        -pixel 0.2 -detpixels 64 -phisteps 3 -osc 0.4 -mosaic 0.3 -mosaic_dom 4 -seed 7 -oversample 2";
    for carryover in ["spec", "c-parity"] {
        let s = sim(&args(mosaic), carryover);
        // every orientation a fixed rotation of the first: factored rows
        check_derivatives_factored(
            "reference, 6",
            &s,
            [CellA, CellB, CellC, MissetX, Distance, Wavelength],
            Some(true),
        );
        // phi_start turns every orientation by the same angle about the
        // spindle, which commutes with the step rotations: factored rows,
        // but for the first sweep under the carryover, whose step at exactly
        // 0 is the unrotated cell (no phi_start derivative)
        check_derivatives_factored(
            "reference, 4 with phi_start",
            &s,
            [CellA, CellC, MissetY, PhiStart],
            (carryover == "spec").then_some(true),
        );
        // the oscillation range and the mosaic spread change the rotations
        // between orientations: direct rows
        check_derivatives_factored(
            "reference, 5 with phi and mosaic",
            &s,
            [CellA, MissetZ, PhiStart, MosaicSpread, Distance],
            Some(false),
        );
        check_derivatives("reference, mosaic and phi", &s, [MosaicSpread, OscRange]);
        check_derivatives(
            "reference, F and fluence",
            &s,
            [DefaultF, Fluence, Polarization],
        );
        let s = sim(&args(tri), carryover);
        check_derivatives_factored(
            "triclinic, 8",
            &s,
            [
                CellAlpha,
                CellBeta,
                CellGamma,
                MissetY,
                MissetZ,
                BeamCenterF,
                BeamCenterS,
                DetectorRotX,
            ],
            Some(true),
        );
        check_derivatives_factored(
            "triclinic, 4 with osc",
            &s,
            [CellA, CellGamma, OscRange, MissetY],
            Some(false),
        );
        check_derivatives("triclinic, 1", &s, [Twotheta]);
        check_derivatives("triclinic, phi", &s, [PhiStart]);
    }
}

#[test]
fn derivative_lanes_stay_off_where_they_do_not_apply() {
    use braggrun::engine::values::{seeded_values, Extract};
    use num_dual::DualSVec64;
    let flags = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.4 -detpixels 16";
    let attached = |s: &Simulation, dir: Param| {
        let pv = seeded_values::<DualSVec64<1>>(&s.setup.base_values(), &[dir]);
        let mut m = Model::build(&s.setup, s.hkl.as_ref(), &pv);
        m.attach_derivative_lanes(|x, i| x.eps64(i), vec![DualSVec64::<1>::seeded(0.0, 0)]);
        m.derivative_lanes.is_some()
    };
    assert!(attached(&sim(&args(flags), "spec"), Param::CellA));
    // N carries the derivative: its sincg is not the whole-N one
    assert!(!attached(&sim(&args(flags), "spec"), Param::NA));
    // HKL file, a non-square shape, per-sample factors
    let hkl = format!("{flags} -hkl varied.hkl");
    assert!(!attached(&sim(&args(&hkl), "spec"), Param::CellA));
    assert!(!attached(
        &sim(&args(&format!("{flags} -round_xtal")), "spec"),
        Param::CellA
    ));
    let over = format!("{flags} -oversample 2 -oversample_omega");
    assert!(!attached(&sim(&args(&over), "spec"), Param::CellA));
}

#[test]
fn derivatives_on_lanes_with_a_mosflm_matrix() {
    // the matrix is in units of 1/λ: the cell, and so every orientation,
    // moves with the wavelength
    let flags = "-mat A.mat -lambda 1.0 -N 5 -distance 100 -pixel 0.2 -detpixels 64 -mosflm \
        -default_F 10 -phisteps 3 -osc 0.3 -mosaic 0.4 -mosaic_dom 3 -seed 4";
    for carryover in ["spec", "c-parity"] {
        let s = sim(&args(flags), carryover);
        check_derivatives("matrix, distance", &s, [Param::Distance]);
        check_derivatives("matrix, misset", &s, [Param::MissetX]);
        check_derivatives("matrix, wavelength", &s, [Param::Wavelength]);
        check_derivatives(
            "matrix, 3",
            &s,
            [Param::Wavelength, Param::Distance, Param::MissetX],
        );
        check_derivatives_factored(
            "matrix, 4",
            &s,
            [
                Param::Wavelength,
                Param::Distance,
                Param::MissetX,
                Param::MissetY,
            ],
            Some(true),
        );
    }
}
