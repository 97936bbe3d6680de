//! The CPU engine: the generic physics over rayon, one task per detector row.

use super::{Dtype, EngineError, RenderOptions, Rendered};
use crate::physics::params::{Param, ParamValues};
use crate::physics::scalar::Real;
use crate::physics::simulator::{FMode, Model};
use crate::physics::Simulation;
use nalgebra::{Const, U1};
use num_dual::{DualSVec32, DualSVec64};
use rayon::prelude::*;

/// Largest number of derivative directions carried in one pass; more are
/// rendered in several passes.
pub const MAX_DIRECTIONS: usize = 8;

/// Real part and derivative components of a rendered scalar.
pub trait Extract: Real {
    fn re64(&self) -> f64 {
        self.val()
    }
    fn eps64(&self, _i: usize) -> f64 {
        0.0
    }
    /// Seed `x` with derivative direction `dir` (ignored for plain floats).
    fn seeded(x: f64, _dir: usize) -> Self {
        Self::cst(x)
    }
}
impl Extract for f64 {}
impl Extract for f32 {}
impl<const N: usize> Extract for DualSVec64<N> {
    fn eps64(&self, i: usize) -> f64 {
        self.eps.unwrap_generic(Const::<N>, U1)[i]
    }
    fn seeded(x: f64, dir: usize) -> Self {
        DualSVec64::<N>::from_re(x).derivative(dir)
    }
}
impl<const N: usize> Extract for DualSVec32<N> {
    fn eps64(&self, i: usize) -> f64 {
        self.eps.unwrap_generic(Const::<N>, U1)[i] as f64
    }
    fn seeded(x: f64, dir: usize) -> Self {
        DualSVec32::<N>::from_re(x as f32).derivative(dir)
    }
}

/// Render with the CPU engine.
pub fn render(sim: &Simulation, opts: &RenderOptions) -> Result<Rendered, EngineError> {
    let roi = check_roi(sim, opts.roi)?;
    let base = super::base_with_shifts(sim, opts)?;
    let n = sim.fpixels() * sim.spixels();
    let mut image = vec![0.0; n];
    let mut derivatives: Vec<(Param, Vec<f64>)> = vec![];
    if opts.derivatives.is_empty() {
        image = match opts.dtype {
            Dtype::F64 => to_f64(&render_generic::<f64>(
                sim,
                roi,
                &ParamValues::from_f64(&base),
            )),
            Dtype::F32 => to_f64(&render_generic::<f32>(
                sim,
                roi,
                &ParamValues::from_f64(&base),
            )),
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
    })
}

/// The ROI to render: the option's, else the configuration's; inside the detector.
pub fn check_roi(sim: &Simulation, roi: Option<[u32; 4]>) -> Result<[u32; 4], EngineError> {
    let r = roi.unwrap_or(sim.roi());
    if r[0] > r[1]
        || r[2] > r[3]
        || r[1] as usize >= sim.fpixels()
        || r[3] as usize >= sim.spixels()
    {
        return Err(EngineError::Failed(format!(
            "roi {:?} is not inside the {} x {} detector",
            r,
            sim.fpixels(),
            sim.spixels()
        )));
    }
    Ok(r)
}

fn to_f64<T: Extract>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.re64()).collect()
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

/// Parameter values in T with `dirs[i]` seeded as derivative direction i.
pub fn seeded_values<T: Extract>(base: &ParamValues<f64>, dirs: &[Param]) -> ParamValues<T> {
    let mut pv = ParamValues::<T>::from_f64(base);
    for (i, p) in dirs.iter().enumerate() {
        pv.seed(*p, T::seeded(base.get(*p), i));
    }
    pv
}

fn render_dual<T: Extract>(
    sim: &Simulation,
    roi: [u32; 4],
    base: &ParamValues<f64>,
    dirs: &[Param],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let pv = seeded_values::<T>(base, dirs);
    let out = render_generic::<T>(sim, roi, &pv);
    let img = to_f64(&out);
    let ders = (0..dirs.len())
        .map(|i| out.iter().map(|x| x.eps64(i)).collect())
        .collect();
    (img, ders)
}

/// Render the ROI in scalar T; pixels outside it (or masked) are 0.
pub fn render_generic<T: Real>(sim: &Simulation, roi: [u32; 4], pv: &ParamValues<T>) -> Vec<T> {
    let model = Model::build(&sim.setup, sim.hkl.as_ref(), pv);
    let fp = sim.fpixels();
    let pixels = super::roi_pixels(sim, roi);
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
    let mut out = vec![T::cst(0.0); fp * sim.spixels()];
    for ((f, s), (v, _)) in pixels.iter().zip(values) {
        out[s * fp + f] = v;
    }
    out
}
