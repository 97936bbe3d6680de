//! Rendering an image on the GPU: the host builds the kernel's inputs
//! ([`super::inputs`]), uploads them, launches `render_pixels` over the
//! pixels in pieces (one thread per pixel), re-runs from the first
//! out-of-range structure-factor lookup as C does, and reads the planes back
//! ([`super::readback`]). Derivatives go in passes of up to 8 directions.

use super::compile::{gpu_with_kernel, kernels};
use super::device::{drv, guarded, probe_libraries, Gpu};
use super::inputs::{hkl_grid, kernel_inputs, KernelInputs, Pixels};
use super::interface::{GpuReal, KernelVariant, Params};
use super::readback::{read_back, scatter, zeroed_plane, Planes};
use crate::engine::roi::check_roi;
use crate::engine::values::{base_with_shifts, seeded_values, Extract, MAX_DIRECTIONS};
use crate::engine::{Dtype, EngineError, RenderOptions, Rendered};
use crate::physics::params::{Param, ParamValues};
use crate::physics::Simulation;
use cudarc::driver::{
    sys as dsys, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use num_dual::DualSVec64;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const BLOCK: u32 = 128;
/// Evaluations (pixel-samples x (1 + directions)) per launch, about: a
/// launch stays well under a second on an H100 (5e10 evaluations/s in f64).
const LAUNCH_BUDGET: f64 = 1e10;
/// Fewest pixels per launch (512 blocks): a launch must cover every SM of
/// the GPU several times, or heavy pixels leave most of it idle.
const MIN_LAUNCH_PIXELS: usize = 1 << 16;
const MAX_LAUNCH_PIXELS: usize = 1 << 20;
static LAUNCH_CAP: AtomicUsize = AtomicUsize::new(MAX_LAUNCH_PIXELS);

/// Cap the number of pixels per kernel launch (rounded up to whole blocks;
/// default 2^20; 0 restores it). Results do not depend on it; tests use a
/// small cap to exercise images split over many launches.
pub fn set_max_launch_pixels(n: usize) {
    let n = if n == 0 {
        MAX_LAUNCH_PIXELS
    } else {
        n.min(MAX_LAUNCH_PIXELS)
    };
    LAUNCH_CAP.store(n, Ordering::Relaxed);
}

/// Render with the CUDA engine on GPU `ordinal` (None: 0). Same options and
/// result as the CPU engine; derivatives in passes of up to 8 directions.
/// The result's `kernel_seconds` is the GPU time of every pass's kernels.
pub fn render(
    sim: &Simulation,
    ordinal: Option<usize>,
    opts: &RenderOptions,
) -> Result<Rendered, EngineError> {
    probe_libraries().map_err(EngineError::Unavailable)?;
    let roi = check_roi(sim, opts.roi)?;
    let base = base_with_shifts(sim, opts)?;
    guarded(|| {
        let t0 = Instant::now();
        let first_dirs = opts.derivatives.len().min(MAX_DIRECTIONS);
        let g = gpu_with_kernel(
            ordinal.unwrap_or(0),
            KernelVariant::of(sim, opts.dtype, first_dirs),
        )?;
        let pixels = Pixels::of(sim, roi);
        let mut image = vec![];
        let mut derivatives: Vec<(Param, Vec<f64>)> = vec![];
        let mut kernel_seconds = 0.0;
        if opts.derivatives.is_empty() {
            let (mut planes, k) = run_image::<f64>(&g, sim, &pixels, &base, 0, opts.dtype)?;
            kernel_seconds += k;
            image = planes.swap_remove(0);
        } else {
            for chunk in opts.derivatives.chunks(MAX_DIRECTIONS) {
                let (planes, k) = match chunk.len() {
                    1 => run_dual::<1>(&g, sim, &pixels, &base, chunk, opts.dtype),
                    2 => run_dual::<2>(&g, sim, &pixels, &base, chunk, opts.dtype),
                    3 => run_dual::<3>(&g, sim, &pixels, &base, chunk, opts.dtype),
                    4 => run_dual::<4>(&g, sim, &pixels, &base, chunk, opts.dtype),
                    5 => run_dual::<5>(&g, sim, &pixels, &base, chunk, opts.dtype),
                    6 => run_dual::<6>(&g, sim, &pixels, &base, chunk, opts.dtype),
                    7 => run_dual::<7>(&g, sim, &pixels, &base, chunk, opts.dtype),
                    8 => run_dual::<8>(&g, sim, &pixels, &base, chunk, opts.dtype),
                    k => return Err(EngineError::Failed(format!("chunk of {k} directions"))),
                }?;
                kernel_seconds += k;
                let mut planes = planes.into_iter();
                image = planes.next().unwrap_or_default();
                derivatives.extend(chunk.iter().copied().zip(planes));
            }
        }
        tracing::debug!(
            target: "braggrun::cuda",
            "render on {} in {:.3} ms",
            g.label(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        Ok(Rendered {
            fpixels: sim.fpixels(),
            spixels: sim.spixels(),
            roi,
            image,
            derivatives,
            device: g.label(),
            kernel_seconds: Some(kernel_seconds),
        })
    })
}

fn run_dual<const N: usize>(
    g: &Gpu,
    sim: &Simulation,
    pixels: &Pixels,
    base: &ParamValues<f64>,
    dirs: &[Param],
    dtype: Dtype,
) -> Result<(Planes, f64), EngineError> {
    let pv = seeded_values::<DualSVec64<N>>(base, dirs);
    run_image(g, sim, pixels, &pv, N, dtype)
}

/// Render the pixels in scalar T on the GPU: 1 + nd full-detector planes
/// and the kernels' GPU time (seconds).
fn run_image<T: Extract>(
    g: &Gpu,
    sim: &Simulation,
    pixels: &Pixels,
    pv: &ParamValues<T>,
    nd: usize,
    dtype: Dtype,
) -> Result<(Planes, f64), EngineError> {
    let t0 = Instant::now();
    let inputs = kernel_inputs(sim, pixels, pv, nd, dtype)?;
    tracing::debug!(
        target: "braggrun::cuda",
        "model built in {:.3} ms ({} values)",
        t0.elapsed().as_secs_f64() * 1e3,
        inputs.flat.len()
    );
    let work = (sim.setup.steps.max(1) * sim.setup.thicksteps.max(1)) as f64;
    match dtype {
        Dtype::F64 => launch_image::<f64>(g, sim, pixels, &inputs, nd, work),
        Dtype::F32 => launch_image::<f32>(g, sim, pixels, &inputs, nd, work),
    }
}

/// The kernel's inputs on the GPU, and its output buffers.
struct DeviceBuffers<R: GpuReal> {
    model: CudaSlice<R>,
    hi: CudaSlice<f64>,
    hkl: CudaSlice<f64>,
    pix: CudaSlice<i32>,
    out: CudaSlice<R>,
    oor: CudaSlice<i32>,
}

fn upload<R: GpuReal>(
    stream: &Arc<CudaStream>,
    sim: &Simulation,
    pixels: &Pixels,
    inputs: &KernelInputs,
    nv: usize,
    track_oor: bool,
) -> Result<DeviceBuffers<R>, EngineError> {
    let npix = pixels.len();
    let model_r: Vec<R> = inputs.flat.iter().map(|x| R::of(*x)).collect();
    let model = stream
        .clone_htod(&model_r)
        .map_err(drv("uploading the model"))?;
    let hkl = stream
        .clone_htod(hkl_grid(sim))
        .map_err(drv("uploading the HKL grid"))?;
    let hi = stream
        .clone_htod(&inputs.hi)
        .map_err(drv("uploading the float64 model"))?;
    let pix = stream
        .clone_htod(&pixels.upload())
        .map_err(drv("uploading the pixel list"))?;
    // every element is written by the kernel: no memset
    let out =
        unsafe { stream.alloc::<R>(npix * nv) }.map_err(drv("allocating the output image"))?;
    // the interpolating kernel reports its first out-of-range lookup
    let oor = unsafe { stream.alloc::<i32>(if track_oor { npix } else { 1 }) }
        .map_err(drv("allocating the output image"))?;
    Ok(DeviceBuffers {
        model,
        hi,
        hkl,
        pix,
        out,
        oor,
    })
}

/// Render the pixels with the kernel in precision R: the planes and the
/// kernels' GPU time (CUDA events around the launches), seconds.
fn launch_image<R: GpuReal>(
    g: &Gpu,
    sim: &Simulation,
    pixels: &Pixels,
    inputs: &KernelInputs,
    nd: usize,
    work: f64,
) -> Result<(Planes, f64), EngineError> {
    let npix = pixels.len();
    let nv = 1 + nd;
    let (fp, n) = (sim.fpixels(), sim.fpixels() * sim.spixels());
    if npix == 0 {
        return Ok((vec![vec![0.0; n]; nv], 0.0));
    }
    let dtype = if std::mem::size_of::<R>() == 8 {
        Dtype::F64
    } else {
        Dtype::F32
    };
    let variant = KernelVariant::of(sim, dtype, nd);
    let (k, _) = kernels(g, variant)?;
    let t0 = Instant::now();
    let stream = stream_for(g)?;
    let track_oor = variant.interpolate;
    let mut bufs = upload::<R>(&stream, sim, pixels, inputs, nv, track_oor)?;
    let cap = LAUNCH_CAP.load(Ordering::Relaxed).max(1);
    let chunk = ((LAUNCH_BUDGET / (work * nv as f64)) as usize)
        .clamp(MIN_LAUNCH_PIXELS, MAX_LAUNCH_PIXELS)
        .min(cap);
    let chunk = chunk.div_ceil(BLOCK as usize) * BLOCK as usize;
    let timed = Some(dsys::CUevent_flags::CU_EVENT_DEFAULT);
    let ev_start = stream
        .record_event(timed)
        .map_err(drv("recording a timing event"))?;
    launch_range(
        &stream,
        &k.render,
        &inputs.params,
        &mut bufs,
        0,
        npix,
        chunk,
    )?;
    if track_oor {
        // C turns interpolation off for good at the first out-of-range
        // lookup: redo the pixels from it on (cpu.rs does the same).
        let oor = stream
            .clone_dtoh(&bufs.oor)
            .map_err(drv("reading back the interpolation flags"))?;
        stream.synchronize().map_err(drv("rendering"))?;
        if let Some(p) = oor.iter().position(|o| *o >= 0) {
            let mut p2 = inputs.params;
            p2.nearest_mode = 1;
            p2.switch_pixel = p as i32;
            p2.switch_eval = oor[p];
            launch_range(&stream, &k.render, &p2, &mut bufs, p, npix, chunk)?;
        }
    }
    let ev_end = stream
        .record_event(timed)
        .map_err(drv("recording a timing event"))?;
    let t_launch = t0.elapsed().as_secs_f64();
    let t_alloc = Instant::now();
    let mut planes: Planes = (0..nv).map(|_| zeroed_plane(n)).collect();
    tracing::debug!(
        target: "braggrun::cuda",
        "{nv} host planes allocated in {:.3} ms",
        t_alloc.elapsed().as_secs_f64() * 1e3
    );
    read_back(g, &stream, &bufs.out, |offset, vals| {
        scatter(&mut planes, pixels, fp, npix, offset, vals)
    })?;
    let mut kernel_seconds = 0.0;
    if let Ok(ms) = ev_start.elapsed_ms(&ev_end) {
        kernel_seconds = ms as f64 / 1000.0;
        tracing::debug!(
            target: "braggrun::cuda",
            "{npix} pixels x {nv} values: upload and launch {:.3} ms, kernels {:.3} ms, total with read-back {:.3} ms",
            t_launch * 1e3,
            ms,
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok((planes, kernel_seconds))
}

/// Launch `render_pixels` over pixels `from..npix`, `chunk` pixels a launch.
fn launch_range<R: GpuReal>(
    stream: &Arc<CudaStream>,
    f: &CudaFunction,
    params: &Params,
    bufs: &mut DeviceBuffers<R>,
    from: usize,
    npix: usize,
    chunk: usize,
) -> Result<(), EngineError> {
    let mut start = from;
    let n = npix as i32;
    while start < npix {
        let count = chunk.min(npix - start);
        let cfg = LaunchConfig {
            grid_dim: ((count as u32).div_ceil(BLOCK), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let (s, c) = (start as i32, count as i32);
        let mut b = stream.launch_builder(f);
        b.arg(params)
            .arg(&bufs.model)
            .arg(&bufs.hi)
            .arg(&bufs.hkl)
            .arg(&bufs.pix)
            .arg(&s)
            .arg(&c)
            .arg(&n)
            .arg(&mut bufs.out)
            .arg(&mut bufs.oor);
        unsafe { b.launch(cfg) }.map_err(drv("launching render_pixels"))?;
        start += count;
    }
    Ok(())
}

/// This thread's stream on GPU `g`, made once: a render waits only on its
/// own work, and threads rendering on one GPU run side by side.
fn stream_for(g: &Gpu) -> Result<Arc<CudaStream>, EngineError> {
    thread_local! {
        static STREAMS: std::cell::RefCell<HashMap<usize, Arc<CudaStream>>> =
            std::cell::RefCell::new(HashMap::new());
    }
    STREAMS.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(s) = m.get(&g.ordinal) {
            return Ok(s.clone());
        }
        let s = g.ctx.new_stream().map_err(drv("creating a stream"))?;
        m.insert(g.ordinal, s.clone());
        Ok(s)
    })
}
