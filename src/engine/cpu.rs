//! The CPU engine: the generic physics over rayon, one task per detector row.

use crate::engine::roi::{check_roi, roi_pixels};
use crate::engine::split;
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
    render_split(sim, opts, 1)
}

/// Render with the CPU engine as `parts` bands of rows rendered one after
/// the other and stitched ([`crate::engine::split`], as `cuda:all` splits
/// over GPUs). The result equals [`render`]'s bit for bit, whatever `parts`
/// (tests/row_split.rs).
pub fn render_split(
    sim: &Simulation,
    opts: &RenderOptions,
    parts: usize,
) -> Result<Rendered, EngineError> {
    let roi = check_roi(sim, opts.roi)?;
    let base = base_with_shifts(sim, opts)?;
    let mut image = vec![];
    let mut derivatives: Vec<(Param, Vec<f64>)> = vec![];
    if opts.derivatives.is_empty() {
        // Values for the ROI only, then one whole-detector f64 image.
        image = match opts.dtype {
            Dtype::F64 => {
                let pv = ParamValues::from_f64(&base);
                let (px, v) = render_roi_parts::<f64>(sim, roi, &pv, parts);
                scatter(sim, &px, |i| v[i].re64())
            }
            Dtype::F32 => {
                let pv = ParamValues::from_f64(&base);
                let (px, v) = render_roi_parts::<f32>(sim, roi, &pv, parts);
                scatter(sim, &px, |i| v[i].re64())
            }
        };
    } else {
        for chunk in opts.derivatives.chunks(MAX_DIRECTIONS) {
            let (img, ders) = match opts.dtype {
                Dtype::F64 => render_chunk_f64(sim, roi, &base, chunk, parts),
                Dtype::F32 => render_chunk_f32(sim, roi, &base, chunk, parts),
            };
            image = img;
            derivatives.extend(chunk.iter().copied().zip(ders));
        }
    }
    let device = format!("cpu ({} threads)", rayon::current_num_threads());
    Ok(Rendered::new(sim, roi, image, derivatives, device, None))
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
            parts: usize,
        ) -> (Vec<f64>, Vec<Vec<f64>>) {
            match chunk.len() {
                1 => render_dual::<$dual<1>>(sim, roi, base, chunk, parts),
                2 => render_dual::<$dual<2>>(sim, roi, base, chunk, parts),
                3 => render_dual::<$dual<3>>(sim, roi, base, chunk, parts),
                4 => render_dual::<$dual<4>>(sim, roi, base, chunk, parts),
                5 => render_dual::<$dual<5>>(sim, roi, base, chunk, parts),
                6 => render_dual::<$dual<6>>(sim, roi, base, chunk, parts),
                7 => render_dual::<$dual<7>>(sim, roi, base, chunk, parts),
                8 => render_dual::<$dual<8>>(sim, roi, base, chunk, parts),
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
    parts: usize,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let pv = seeded_values::<T>(base, dirs);
    // the lane path for float64 derivatives (physics::lanes), where it applies
    let basis: Vec<T> = (0..dirs.len()).map(|i| T::seeded(0.0, i)).collect();
    let prepare = |m: &mut Model<T>| m.attach_derivative_lanes(|x, i| x.eps64(i), basis);
    // Dual values for the ROI only (no whole-detector buffer of duals).
    let (px, out) = render_roi_prepared::<T>(sim, roi, &pv, parts, prepare);
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
    render_roi_parts(sim, roi, pv, 1)
}

/// [`render_roi`] as `parts` bands of rows, each rendered on its own and
/// stitched ([`crate::engine::split`]): the same values bit for bit.
pub fn render_roi_parts<T: Real>(
    sim: &Simulation,
    roi: [u32; 4],
    pv: &ParamValues<T>,
    parts: usize,
) -> (Vec<(usize, usize)>, Vec<T>) {
    render_roi_prepared(sim, roi, pv, parts, |_| {})
}

/// [`render_roi_parts`] with `prepare` applied to the model before the
/// pixel loop (the derivative lane path is attached there).
fn render_roi_prepared<T: Real>(
    sim: &Simulation,
    roi: [u32; 4],
    pv: &ParamValues<T>,
    parts: usize,
    prepare: impl FnOnce(&mut Model<T>),
) -> (Vec<(usize, usize)>, Vec<T>) {
    let mut model = Model::build(&sim.setup, sim.hkl.as_ref(), pv);
    prepare(&mut model);
    let pixels = roi_pixels(sim, roi);
    // the pixel holding the image's first executed phi sweep (c-parity
    // carryover), over the whole ROI
    let first = pixels
        .iter()
        .position(|(f, s)| model.pixel_has_sweep(*f, *s));
    let ranges = split::pixel_ranges(pixels.len(), |i| pixels[i].1, parts);
    let render_range = |r: std::ops::Range<usize>, switch: Option<(usize, usize)>| {
        pixels[r.clone()]
            .par_iter()
            .enumerate()
            .map(|(j, (f, s))| {
                let i = r.start + j;
                let mode = match switch {
                    None => FMode::Interpolate,
                    Some((p, e)) if i == p => FMode::SwitchAt(e),
                    Some(_) => FMode::Nearest,
                };
                model.pixel(*f, *s, Some(i) == first, mode)
            })
            .collect::<Vec<(T, Option<usize>)>>()
    };
    let mut values: Vec<Vec<(T, Option<usize>)>> = ranges
        .iter()
        .map(|r| render_range(r.clone(), None))
        .collect();
    // C turns interpolation off for good at the first out-of-range lookup
    // (the first over the parts in order): redo the pixels from it on.
    let per_part: Vec<Option<(usize, usize)>> = values
        .iter()
        .zip(&ranges)
        .map(|(v, r)| {
            v.iter()
                .enumerate()
                .find_map(|(k, (_, o))| o.map(|e| (r.start + k, e)))
        })
        .collect();
    if let Some((p, e)) = split::first_switch(&per_part) {
        for (v, r) in values.iter_mut().zip(&ranges) {
            if let Some(redo) = split::redo_range(r, p) {
                let from = redo.start - r.start;
                v.truncate(from);
                v.extend(render_range(redo, Some((p, e))));
            }
        }
    }
    let values = values.into_iter().flatten().map(|(v, _)| v).collect();
    (pixels, values)
}
