//! A render split by rows and stitched (engine::split, what `cuda:all` does
//! over GPUs) equals the whole render bit for bit: on the CPU engine, for
//! split counts that divide the rows, that do not, and that exceed them;
//! with the c-parity first phi sweep away from pixel 0 (a resolution cut),
//! the tricubic interpolation's switch to nearest lookup, a mask and a ROI.
//! The GPU's own check (cuda:all against cuda:0) is in tests/cuda_parity.rs.

use braggrun::cli::nanobragg::parse_args;
use braggrun::engine::cpu;
use braggrun::engine::{Dtype, RenderOptions, Rendered};
use braggrun::physics::params::Param;
use braggrun::physics::simulator::Model;
use braggrun::physics::Simulation;
use std::path::PathBuf;

fn inputs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/inputs")
}

fn sim(args: &str, masked: bool) -> Simulation {
    let mut v: Vec<String> = args.split_whitespace().map(String::from).collect();
    v.extend(["-phi_carryover".to_string(), "c-parity".to_string()]);
    let parsed = parse_args(&v).expect("arguments parse");
    let mut sim = Simulation::prepare(&parsed.config, &inputs()).expect("simulation prepares");
    if masked {
        // one pixel in five masked, in a pattern
        let (fp, sp) = (sim.fpixels(), sim.spixels());
        sim.mask = Some(
            (0..fp * sp)
                .map(|i| u16::from((i % fp * 7 + i / fp * 3) % 5 != 0))
                .collect(),
        );
    }
    sim
}

fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn assert_equal(name: &str, parts: usize, whole: &Rendered, split: &Rendered) {
    assert_eq!(whole.roi, split.roi, "{name}, {parts} parts: ROI");
    assert!(
        same_bits(&whole.image, &split.image),
        "{name}, {parts} parts: image differs"
    );
    assert_eq!(whole.derivatives.len(), split.derivatives.len());
    for ((p, a), (q, b)) in whole.derivatives.iter().zip(&split.derivatives) {
        assert_eq!(p, q);
        assert!(
            same_bits(a, b),
            "{name}, {parts} parts: derivative {p} differs"
        );
    }
}

/// Split counts: one, dividing and not dividing the rows, a prime, and more
/// parts than rows.
fn split_counts(rows: usize) -> Vec<usize> {
    vec![1, 2, 3, 5, 7, rows - 1, rows + 9]
}

fn check(name: &str, sim: &Simulation, dtype: Dtype, dirs: &[Param]) {
    let mut opts = RenderOptions::new(dtype);
    opts.derivatives = dirs.to_vec();
    let whole = cpu::render(sim, &opts).expect("whole render");
    assert!(
        whole.image.iter().any(|v| *v != 0.0),
        "{name}: all-zero image"
    );
    let [_, _, s0, s1] = whole.roi;
    let rows = (s1 - s0 + 1) as usize;
    for parts in split_counts(rows) {
        let split = cpu::render_split(sim, &opts, parts).expect("split render");
        assert_equal(name, parts, &whole, &split);
    }
}

#[test]
fn plain_mosaic_float64_and_float32_with_derivatives() {
    let s = sim(
        "-default_F 100 -cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.5 -N 4 -distance 80 \
         -pixel 0.1 -detpixels 37 -phi 0 -osc 1 -phisteps 2 -mosaic 0.5 -mosaic_dom 2",
        false,
    );
    check("plain", &s, Dtype::F64, &[]);
    check("plain", &s, Dtype::F32, &[]);
    check("plain", &s, Dtype::F64, &[Param::CellA, Param::Distance]);
    check("plain", &s, Dtype::F32, &[Param::MissetX]);
}

#[test]
fn first_phi_sweep_away_from_pixel_zero() {
    let s = sim(
        "-default_F 100 -cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 100 \
         -pixel 0.1 -detpixels 64 -mosflm -phi 0 -osc 1 -phisteps 2 -dmin 50",
        false,
    );
    // the resolution cut leaves the first rows without a sweep: the
    // first-sweep pixel lies in a later part
    let model = Model::build(&s.setup, s.hkl.as_ref(), &s.setup.base_values());
    let first = (0..s.spixels())
        .flat_map(|y| (0..s.fpixels()).map(move |x| (x, y)))
        .position(|(x, y)| model.pixel_has_sweep(x, y))
        .expect("some pixel has a sweep");
    assert!(
        first >= 2 * s.fpixels(),
        "first sweep at pixel {first}: the case does not move it past row 1"
    );
    check("dmin", &s, Dtype::F64, &[Param::CellA]);
    check("dmin", &s, Dtype::F32, &[]);
}

#[test]
fn interpolation_switch_in_a_later_part() {
    let s = sim(
        "-cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.0 -N 5 -distance 30 -pixel 0.1 \
         -detpixels 128 -mosflm -hkl varied.hkl -interpolate -default_F 0 -roi 40 127 60 127",
        false,
    );
    check("interpolate", &s, Dtype::F64, &[Param::CellA]);
    check("interpolate", &s, Dtype::F32, &[]);
}

#[test]
fn masked_roi() {
    let s = sim(
        "-default_F 100 -cell 70 80 90 75 85 95 -misset 10 20 30 -lambda 1.5 -N 4 -distance 80 \
         -pixel 0.1 -detpixels 48 -phi 0 -osc 1 -phisteps 2 -roi 5 40 3 30",
        true,
    );
    check("masked", &s, Dtype::F64, &[Param::Distance]);
    check("masked", &s, Dtype::F32, &[]);
}
