//! The CPU engine: the generic physics over rayon, one task per detector row.

use crate::engine::roi::{check_roi, roi_pixels};
use crate::engine::values::{base_with_shifts, seeded_values, Extract, MAX_DIRECTIONS};
use crate::engine::{Dtype, EngineError, RenderOptions, Rendered};
use crate::physics::params::{Param, ParamValues};
use crate::physics::scalar::Real;
use crate::physics::simulator::{FMode, Model};
use crate::physics::Simulation;
use num_dual::{DualSVec32, DualSVec64};
use rayon::prelude::*;

/// Render with the CPU engine.
pub fn render(sim: &Simulation, opts: &RenderOptions) -> Result<Rendered, EngineError> {
    let roi = check_roi(sim, opts.roi)?;
    let base = base_with_shifts(sim, opts)?;
    let mut image = vec![];
    let mut derivatives: Vec<(Param, Vec<f64>)> = vec![];
    if opts.derivatives.is_empty() {
        // Values for the ROI only, then one whole-detector f64 image.
        image = match opts.dtype {
            Dtype::F64 => {
                let (px, v) = render_roi::<f64>(sim, roi, &ParamValues::from_f64(&base));
                scatter(sim, &px, |i| v[i].re64())
            }
            Dtype::F32 => {
                let (px, v) = render_roi::<f32>(sim, roi, &ParamValues::from_f64(&base));
                scatter(sim, &px, |i| v[i].re64())
            }
        };
    } else {
        for chunk in opts.derivatives.chunks(MAX_DIRECTIONS) {
            let (img, ders) = match opts.dtype {
                Dtype::F64 => render_chunk_f64(sim, roi, &base, chunk),
                Dtype::F32 => render_chunk_f32(sim, roi, &base, chunk),
            };
            image = img;
            derivatives.extend(chunk.iter().copied().zip(ders));
        }
    }
    Ok(Rendered {
        fpixels: sim.fpixels(),
        spixels: sim.spixels(),
        roi,
        image,
        derivatives,
        device: format!("cpu ({} threads)", rayon::current_num_threads()),
        kernel_seconds: None,
    })
}

/// A whole-detector f64 image with `value(i)` at the i-th ROI pixel.
fn scatter(sim: &Simulation, pixels: &[(usize, usize)], value: impl Fn(usize) -> f64) -> Vec<f64> {
    let fp = sim.fpixels();
    let mut out = vec![0.0; fp * sim.spixels()];
    for (i, (f, s)) in pixels.iter().enumerate() {
        out[s * fp + f] = value(i);
    }
    out
}

macro_rules! chunk_dispatch {
    ($name:ident, $dual:ident) => {
        fn $name(
            sim: &Simulation,
            roi: [u32; 4],
            base: &ParamValues<f64>,
            chunk: &[Param],
        ) -> (Vec<f64>, Vec<Vec<f64>>) {
            match chunk.len() {
                1 => render_dual::<$dual<1>>(sim, roi, base, chunk),
                2 => render_dual::<$dual<2>>(sim, roi, base, chunk),
                3 => render_dual::<$dual<3>>(sim, roi, base, chunk),
                4 => render_dual::<$dual<4>>(sim, roi, base, chunk),
                5 => render_dual::<$dual<5>>(sim, roi, base, chunk),
                6 => render_dual::<$dual<6>>(sim, roi, base, chunk),
                7 => render_dual::<$dual<7>>(sim, roi, base, chunk),
                8 => render_dual::<$dual<8>>(sim, roi, base, chunk),
                n => unreachable!("chunk of {n} directions"),
            }
        }
    };
}
chunk_dispatch!(render_chunk_f64, DualSVec64);
chunk_dispatch!(render_chunk_f32, DualSVec32);

fn render_dual<T: Extract>(
    sim: &Simulation,
    roi: [u32; 4],
    base: &ParamValues<f64>,
    dirs: &[Param],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let pv = seeded_values::<T>(base, dirs);
    // Dual values for the ROI only (no whole-detector buffer of duals).
    let (px, out) = render_roi::<T>(sim, roi, &pv);
    let img = scatter(sim, &px, |j| out[j].re64());
    let ders = (0..dirs.len())
        .map(|i| scatter(sim, &px, |j| out[j].eps64(i)))
        .collect();
    (img, ders)
}

/// Render the ROI in scalar T; pixels outside it (or masked) are 0.
pub fn render_generic<T: Real>(sim: &Simulation, roi: [u32; 4], pv: &ParamValues<T>) -> Vec<T> {
    let (pixels, values) = render_roi(sim, roi, pv);
    let fp = sim.fpixels();
    let mut out = vec![T::cst(0.0); fp * sim.spixels()];
    for ((f, s), v) in pixels.iter().zip(values) {
        out[s * fp + f] = v;
    }
    out
}

/// Render the ROI in scalar T: the ROI's (fast, slow) pixels and their
/// values, in that order (memory for the ROI, not the whole detector).
pub fn render_roi<T: Real>(
    sim: &Simulation,
    roi: [u32; 4],
    pv: &ParamValues<T>,
) -> (Vec<(usize, usize)>, Vec<T>) {
    let model = Model::build(&sim.setup, sim.hkl.as_ref(), pv);
    let pixels = roi_pixels(sim, roi);
    // the pixel holding the image's first executed phi sweep (c-parity carryover)
    let first = pixels
        .iter()
        .position(|(f, s)| model.pixel_has_sweep(*f, *s));
    let mut values: Vec<(T, Option<usize>)> = pixels
        .par_iter()
        .enumerate()
        .map(|(i, (f, s))| model.pixel(*f, *s, Some(i) == first, FMode::Interpolate))
        .collect();
    // C turns interpolation off for good at the first out-of-range lookup:
    // redo the pixels after it with nearest lookup.
    if let Some(p) = values.iter().position(|(_, o)| o.is_some()) {
        let e = values[p].1.unwrap();
        let redo: Vec<(T, Option<usize>)> = pixels[p..]
            .par_iter()
            .enumerate()
            .map(|(j, (f, s))| {
                let i = p + j;
                let mode = if j == 0 {
                    FMode::SwitchAt(e)
                } else {
                    FMode::Nearest
                };
                model.pixel(*f, *s, Some(i) == first, mode)
            })
            .collect();
        values.truncate(p);
        values.extend(redo);
    }
    let values = values.into_iter().map(|(v, _)| v).collect();
    (pixels, values)
}
