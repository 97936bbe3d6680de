//! What the kernel reads for one render, built on the host: the per-image
//! [`Model`] (built exactly as the CPU engine builds it) flattened as the
//! value and N derivative components of each scalar, in the layout of
//! [`interface::MODEL_SLOTS`](super::interface::MODEL_SLOTS); the launch
//! [`Params`]; the float64 model for float32 derivatives; the pixels.
//! [`host_kernel_inputs`] hands the same bytes to a host build of the kernel.

use super::interface::{KernelVariant, Params, Slot, M_SOURCES, ORIENT_LEN, SOURCE_LEN};
use crate::engine::roi::{check_roi, roi_pixels};
use crate::engine::values::{seeded_values, Extract};
use crate::engine::{Dtype, EngineError};
use crate::physics::params::{Param, ParamValues};
use crate::physics::simulator::Model;
use crate::physics::Simulation;
use num_dual::DualSVec64;

/// Append `x` as value + `nd` derivative components.
pub(super) fn push<T: Extract>(buf: &mut Vec<f64>, x: &T, nd: usize) {
    x.push_parts(buf, nd);
}

/// The model buffer being written, each fixed quantity at its slot.
struct ModelWriter {
    buf: Vec<f64>,
    nd: usize,
}

impl ModelWriter {
    /// Write slot `s`: it must come next and hold `s.size()` scalars (the
    /// order of [`super::interface::MODEL_SLOTS`], which the kernel reads).
    fn slot<'a, T: Extract + 'a>(&mut self, s: Slot, xs: impl IntoIterator<Item = &'a T>) {
        let nv = 1 + self.nd;
        assert_eq!(
            self.buf.len(),
            s.offset() * nv,
            "model slot {s:?} out of order"
        );
        for x in xs {
            push(&mut self.buf, x, self.nd);
        }
        assert_eq!(
            self.buf.len(),
            (s.offset() + s.size()) * nv,
            "model slot {s:?} has the wrong size"
        );
    }
}

/// The model as the kernel reads it (layout: interface.rs MODEL_SLOTS, then
/// the sources and the two orientation sets).
fn flatten<T: Extract>(m: &Model<'_, T>, nd: usize) -> Vec<f64> {
    let len = (M_SOURCES
        + SOURCE_LEN * m.sources.len()
        + ORIENT_LEN * (m.orient_first.len() + m.orient_rest.len()))
        * (1 + nd);
    // sized once: growing it took several reallocations a render
    let mut w = ModelWriter {
        buf: Vec::with_capacity(len),
        nd,
    };
    w.slot(Slot::Fdet, &m.geo.fdet.0);
    w.slot(Slot::Sdet, &m.geo.sdet.0);
    w.slot(Slot::Odet, &m.geo.odet.0);
    w.slot(Slot::Pix0, &m.geo.pix0.0);
    w.slot(Slot::Close, [&m.geo.close_distance]);
    w.slot(Slot::Dist, [&m.geo.distance]);
    w.slot(Slot::Polar, &m.polar_vector.0);
    w.slot(Slot::Kahn, [&m.kahn]);
    w.slot(Slot::Deff, [&m.default_f]);
    w.slot(Slot::Scale, [&m.scale]);
    w.slot(Slot::Ibg, [&m.i_bg]);
    w.slot(Slot::N, &m.n);
    w.slot(Slot::Recip, m.recip.iter().flat_map(|v| &v.0));
    let mut b = w.buf;
    debug_assert_eq!(b.len(), M_SOURCES * (1 + nd));
    for (inc, lambda) in &m.sources {
        for x in inc.0.iter().chain([lambda]) {
            push(&mut b, x, nd);
        }
    }
    debug_assert_eq!(
        b.len(),
        (M_SOURCES + SOURCE_LEN * m.sources.len()) * (1 + nd)
    );
    for set in [&m.orient_first, &m.orient_rest] {
        for o in set.iter() {
            for v in o {
                for x in &v.0 {
                    push(&mut b, x, nd);
                }
            }
        }
    }
    debug_assert_eq!(b.len(), len);
    b
}

fn params_for<T>(
    sim: &Simulation,
    model: &Model<'_, T>,
    norient: usize,
    first: Option<usize>,
) -> Params {
    let s = &sim.setup;
    let mut p = Params {
        pixel_size: s.pixel_size,
        sub: s.pixel_size / s.oversample as f64,
        pixel_area: s.pixel_size * s.pixel_size,
        thickstep: s.thickstep,
        mu: s.mu,
        thick: s.thick,
        dmin: s.dmin,
        water_size: s.water_size,
        fudge: s.fudge,
        beam: s.beam,
        oversample: s.oversample as i32,
        thicksteps: s.thicksteps as i32,
        nsources: s.sources.len() as i32,
        norient: norient as i32,
        curved: s.curved as i32,
        point_pixel: s.point_pixel as i32,
        nopolar: s.nopolar as i32,
        oversample_omega: s.oversample_omega as i32,
        oversample_thick: s.oversample_thick as i32,
        oversample_polar: s.oversample_polar as i32,
        n_gt1: model.n_gt1.map(|b| b as i32),
        n_whole: model.n_whole.map(|n| n.map(|v| v as i32).unwrap_or(0)),
        lifted: model.lifted as i32,
        first_pixel: first.map(|i| i as i32).unwrap_or(-1),
        switch_pixel: -1,
        ..Default::default()
    };
    if let Some(g) = &sim.hkl {
        p.has_hkl = 1;
        p.hkl_count_pos = (g.count > 0) as i32;
        p.h_min = g.h_min;
        p.h_max = g.h_max;
        p.k_min = g.k_min;
        p.k_max = g.k_max;
        p.l_min = g.l_min;
        p.l_max = g.l_max;
    }
    p
}

/// The pixels a render covers, in C loop order: the ROI rectangle (the
/// kernel derives each pixel from its index; nothing to upload), or a list
/// when a mask leaves holes in it.
pub(super) enum Pixels {
    Rect {
        f0: usize,
        s0: usize,
        nf: usize,
        ns: usize,
    },
    List(Vec<(usize, usize)>),
}

impl Pixels {
    pub(super) fn of(sim: &Simulation, roi: [u32; 4]) -> Pixels {
        if sim.mask.is_some() {
            return Pixels::List(roi_pixels(sim, roi));
        }
        let [f0, f1, s0, s1] = roi.map(|v| v as usize);
        Pixels::Rect {
            f0,
            s0,
            nf: f1 + 1 - f0,
            ns: s1 + 1 - s0,
        }
    }
    pub(super) fn len(&self) -> usize {
        match self {
            Pixels::Rect { nf, ns, .. } => nf * ns,
            Pixels::List(l) => l.len(),
        }
    }
    /// (fast, slow) of the i-th pixel
    pub(super) fn get(&self, i: usize) -> (usize, usize) {
        match self {
            Pixels::Rect { f0, s0, nf, .. } => (f0 + i % nf, s0 + i / nf),
            Pixels::List(l) => l[i],
        }
    }
    /// The list the kernel reads when `pix_list` is set, as (fast, slow)
    /// i32 pairs; one 0 for a rectangle (a buffer cannot be empty).
    pub(super) fn upload(&self) -> Vec<i32> {
        match self {
            Pixels::List(l) => l.iter().flat_map(|(f, s)| [*f as i32, *s as i32]).collect(),
            Pixels::Rect { .. } => vec![0],
        }
    }
}

/// The HKL grid the kernel reads (one 0 without one: a buffer cannot be empty).
pub(super) fn hkl_grid(sim: &Simulation) -> &[f64] {
    match &sim.hkl {
        Some(h) if !h.data.is_empty() => &h.data,
        _ => &[0.0],
    }
}

/// What the kernel reads for one render: the model buffer, the float64
/// model (float32 with derivatives, else one 0) and the launch parameters.
pub(super) struct KernelInputs {
    pub(super) flat: Vec<f64>,
    pub(super) hi: Vec<f64>,
    pub(super) params: Params,
}

/// Build the kernel's inputs in scalar T, exactly as a GPU render does.
pub(super) fn kernel_inputs<T: Extract>(
    sim: &Simulation,
    pixels: &Pixels,
    pv: &ParamValues<T>,
    nd: usize,
    dtype: Dtype,
) -> Result<KernelInputs, EngineError> {
    let model = Model::build_without_lanes(&sim.setup, sim.hkl.as_ref(), pv);
    super::phases::mark("Model::build");
    // phi steps x mosaic domains (the domain count can exceed the setup's at
    // the mosaic-spread edge: Model::build)
    let norient = model.orient_first.len();
    if model.orient_rest.len() != norient || norient % sim.setup.phisteps.max(1) != 0 {
        return Err(EngineError::Failed(format!(
            "model has {} / {} orientations, expected {norient}",
            model.orient_first.len(),
            model.orient_rest.len()
        )));
    }
    let first = (0..pixels.len()).position(|i| {
        let (f, s) = pixels.get(i);
        model.pixel_has_sweep(f, s)
    });
    let flat = flatten(&model, nd);
    super::phases::mark("first pixel, flatten");
    // float32 with derivatives: the float64 model's values for the indices
    // and the scattering vector (simulator.rs Model::hi; the host model here
    // is in float64 duals, so it is built for the float32 kernel explicitly;
    // not with a curved detector, whose float64 path the kernel lacks)
    let hi: Vec<f64> = if dtype == Dtype::F32 && nd > 0 && !sim.setup.curved {
        flatten(
            &Model::<f64>::build_without_lanes(&sim.setup, sim.hkl.as_ref(), &pv.exact_f64()),
            0,
        )
    } else {
        vec![0.0]
    };
    let mut params = params_for(sim, &model, norient, first);
    params.hi_index = (hi.len() > 1) as i32;
    match pixels {
        Pixels::Rect { f0, s0, nf, .. } => {
            params.roi_f0 = *f0 as i32;
            params.roi_s0 = *s0 as i32;
            params.roi_nf = *nf as i32;
        }
        Pixels::List(_) => params.pix_list = 1,
    }
    Ok(KernelInputs { flat, hi, params })
}

/// The kernel's inputs for a render of the whole ROI of `sim` with
/// derivatives by `dirs` (at most 8), as raw files a host-compiled kernel.cu
/// reads (tests/kernel_host.rs): the Params struct's bytes, the model and
/// float64 model buffers and the HKL grid as little-endian f64, the pixel
/// list as i32 pairs. Lets CI check the kernel without a GPU.
pub struct HostKernelInputs {
    /// The `struct Params` bytes, in C's layout.
    pub params: Vec<u8>,
    /// The model buffer `mdl` (`M_*` offsets; NV values a scalar: value, then derivatives).
    pub model: Vec<f64>,
    /// The float64 model (float32 renders with derivatives, `hi_index`); else one 0.
    pub hi: Vec<f64>,
    /// F on the HKL grid, h outermost and l innermost; one 0 without a grid.
    pub hkl: Vec<f64>,
    /// The pixel list as (fast, slow) pairs with a mask; one 0 for the ROI rectangle.
    pub pixels: Vec<i32>,
    /// Number of pixels rendered (the ROI's, or the list's length).
    pub npix: usize,
    /// The kernel to compile (its `-D` defines).
    pub variant: KernelVariant,
}

/// See [`HostKernelInputs`].
pub fn host_kernel_inputs(
    sim: &Simulation,
    dtype: Dtype,
    dirs: &[Param],
) -> Result<HostKernelInputs, EngineError> {
    let roi = check_roi(sim, None)?;
    let pixels = Pixels::of(sim, roi);
    let base = sim.setup.base_values();
    macro_rules! inputs {
        ($($n:literal)*) => {
            match dirs.len() {
                0 => kernel_inputs(sim, &pixels, &ParamValues::<f64>::from_f64(&base), 0, dtype),
                $($n => kernel_inputs(
                    sim,
                    &pixels,
                    &seeded_values::<DualSVec64<$n>>(&base, dirs),
                    $n,
                    dtype,
                ),)*
                n => Err(EngineError::Failed(format!("{n} directions: at most 8 in one pass"))),
            }
        };
    }
    let k = inputs!(1 2 3 4 5 6 7 8)?;
    Ok(HostKernelInputs {
        params: k.params.to_bytes(),
        model: k.flat,
        hi: k.hi,
        hkl: hkl_grid(sim).to_vec(),
        pixels: pixels.upload(),
        npix: pixels.len(),
        variant: KernelVariant::of(sim, dtype, dirs.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_pixels_in_c_loop_order() {
        let px = Pixels::Rect {
            f0: 2,
            s0: 3,
            nf: 4,
            ns: 2,
        };
        let all: Vec<_> = (0..px.len()).map(|i| px.get(i)).collect();
        assert_eq!(
            all,
            [
                (2, 3),
                (3, 3),
                (4, 3),
                (5, 3),
                (2, 4),
                (3, 4),
                (4, 4),
                (5, 4)
            ]
        );
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn model_slots_written_out_of_order_are_refused() {
        let mut w = ModelWriter { buf: vec![], nd: 0 };
        w.slot(Slot::Sdet, &[1.0f64, 2.0, 3.0]);
    }

    #[test]
    #[should_panic(expected = "wrong size")]
    fn model_slot_of_the_wrong_size_is_refused() {
        let mut w = ModelWriter { buf: vec![], nd: 1 };
        w.slot(Slot::Fdet, &[1.0f64, 2.0]);
    }
}
