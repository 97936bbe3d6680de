//! The phi-cache probe's host path: the published M2h.3 phi-cache arithmetic
//! (docs/experiments.md, "phi-cache") run by the kernel's `phi_cache_probe`
//! on the GPU, in dual numbers of the probe's precision.

use super::compile::kernels;
use super::device::{drv, gpu, guarded, probe_libraries};
use super::inputs::push;
use super::interface::KernelVariant;
use crate::engine::values::Extract;
use crate::engine::{Dtype, EngineError};
use crate::physics::cell::cell_vectors;
use cudarc::driver::{LaunchConfig, PushKernelArg};
use num_dual::{DualSVec32, DualSVec64};

/// The M2h.3 phi-cache arithmetic (docs/experiments.md, "phi-cache") computed on the GPU with
/// dual numbers in `dtype`: (loss, d loss / d cell_a, device). The host
/// computes the six cell vectors with value and d/d cell_a in that
/// precision, as the CPU engine does; the kernel scales them, replaces step
/// 0 of the fresh stack by the stored vectors and sums over `steps`.
pub fn phi_cache_probe(
    cell: [f64; 6],
    ordinal: Option<usize>,
    settings: PhiCacheSettings,
) -> Result<(f64, f64, String), EngineError> {
    probe_libraries().map_err(EngineError::Unavailable)?;
    guarded(|| {
        let g = gpu(ordinal.unwrap_or(0))?;
        let buf = match settings.dtype {
            Dtype::F64 => cell_vector_pairs::<DualSVec64<1>>(cell),
            Dtype::F32 => cell_vector_pairs::<DualSVec32<1>>(cell),
        };
        let (k, _) = kernels(&g, KernelVariant::new(settings.dtype, 1))?;
        let stream = g.ctx.new_stream().map_err(drv("creating a stream"))?;
        let d_v = stream
            .clone_htod(&buf)
            .map_err(drv("uploading the cell vectors"))?;
        let mut d_out = stream
            .alloc_zeros::<f64>(2)
            .map_err(drv("allocating the probe output"))?;
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        let steps = settings.steps as i64;
        let mut b = stream.launch_builder(&k.probe);
        b.arg(&d_v)
            .arg(&settings.stored_scale)
            .arg(&settings.fresh_scale)
            .arg(&steps)
            .arg(&mut d_out);
        unsafe { b.launch(cfg) }.map_err(drv("launching phi_cache_probe"))?;
        let out = stream
            .clone_dtoh(&d_out)
            .map_err(drv("reading back the probe"))?;
        stream
            .synchronize()
            .map_err(drv("running phi_cache_probe"))?;
        Ok((out[0], out[1], g.label()))
    })
}

/// What the phi-cache kernel computes: the probe's settings.
#[derive(Clone, Copy, Debug)]
pub struct PhiCacheSettings {
    /// Scale of the stored ("phi-final") cell vectors, used at step 0.
    pub stored_scale: f64,
    /// Scale of the fresh stack, used at every later step.
    pub fresh_scale: f64,
    /// Phi steps summed over.
    pub steps: u64,
    /// Precision of the dual numbers the kernel computes in.
    pub dtype: Dtype,
}

/// The six cell vectors as (value, d/d cell_a) pairs computed in scalar T.
fn cell_vector_pairs<T: Extract>(cell: [f64; 6]) -> Vec<f64> {
    let mut c: [T; 6] = cell.map(T::cst);
    c[0] = T::seeded(cell[0], 0);
    let v = cell_vectors(c);
    let mut buf = Vec::with_capacity(36);
    for vec in [v.a, v.b, v.c, v.a_star, v.b_star, v.c_star] {
        for x in &vec.0 {
            push(&mut buf, x, 1);
        }
    }
    buf
}
