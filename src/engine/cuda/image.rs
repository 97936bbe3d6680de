//! Rendering an image on the GPU(s): the host builds the kernel's inputs
//! ([`super::inputs`]) once, each GPU renders its band of rows (all of them
//! on one GPU; `cuda:all` splits by rows over every visible GPU, see
//! [`crate::engine::split`]) through [`super::pipeline`] (upload, launches
//! in pieces, read-back overlapping the later pieces), re-running from the
//! first out-of-range structure-factor lookup as C does. Derivatives go in
//! passes of up to 8 directions.

use super::compile::{gpu_with_kernel, kernels};
use super::device::{guarded, probe_libraries, raw_device_count, Gpu};
use super::inputs::{kernel_inputs, KernelInputs, Pixels};
use super::interface::{GpuReal, KernelVariant};
use super::phases;
use super::pipeline::{launch_part, GpuState, PartRun, BLOCK};
use super::readback::{advise_huge, fill_zero, unwritten, Planes};
use crate::engine::roi::check_roi;
use crate::engine::split;
use crate::engine::values::{base_with_shifts, seeded_values, Extract, MAX_DIRECTIONS};
use crate::engine::{Dtype, EngineError, RenderOptions, Rendered};
use crate::physics::params::{Param, ParamValues};
use crate::physics::Simulation;
use num_dual::DualSVec64;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

/// Fewest parts `cuda:all` splits a render into (0: one per GPU).
static ALL_PARTS: AtomicUsize = AtomicUsize::new(0);

/// Split `cuda:all` renders into at least `n` bands of rows, dealt to the
/// visible GPUs in turn (several to a GPU when `n` exceeds them; 0 restores
/// one per GPU). Results do not depend on it; tests use it to exercise the
/// split and stitch on a machine with one GPU.
pub fn set_all_parts(n: usize) {
    ALL_PARTS.store(n, Ordering::Relaxed);
}

/// `BRAGGRUN_CUDA_ALL_PARTS=N`: as [`set_all_parts`], for the runner (to
/// exercise the split on one GPU through experiments); 0 when unset.
fn env_parts() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("BRAGGRUN_CUDA_ALL_PARTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// Render with the CUDA engine on GPU `ordinal` (None: 0). Same options and
/// result as the CPU engine; derivatives in passes of up to 8 directions.
/// The result's `kernel_seconds` is the GPU time of every pass's kernels.
pub fn render(
    sim: &Simulation,
    ordinal: Option<usize>,
    opts: &RenderOptions,
) -> Result<Rendered, EngineError> {
    render_on(sim, Some(ordinal.unwrap_or(0)), opts)
}

/// Render on every visible GPU (`cuda:all`): the ROI split by rows into one
/// band per GPU, each band rendered by its GPU, the bands stitched. Each
/// pixel is computed as on one GPU, so the image is the same bit for bit.
/// `kernel_seconds` is the longest GPU's kernel time, summed over passes.
pub fn render_all(sim: &Simulation, opts: &RenderOptions) -> Result<Rendered, EngineError> {
    render_on(sim, None, opts)
}

/// On GPU `ordinal`, or on every visible GPU (None).
fn render_on(
    sim: &Simulation,
    ordinal: Option<usize>,
    opts: &RenderOptions,
) -> Result<Rendered, EngineError> {
    // logged when it goes out of scope, after an error too
    let _phases = phases::begin();
    probe_libraries().map_err(EngineError::Unavailable)?;
    let roi = check_roi(sim, opts.roi)?;
    let base = base_with_shifts(sim, opts)?;
    guarded(|| {
        phases::mark("probe, ROI, values");
        let t0 = Instant::now();
        let first_dirs = opts.derivatives.len().min(MAX_DIRECTIONS);
        let ordinals: Vec<usize> = match ordinal {
            Some(o) => vec![o],
            None => {
                let n = raw_device_count()?;
                if n == 0 {
                    return Err(EngineError::Unavailable(
                        "cuda:all: the CUDA driver sees no GPU".into(),
                    ));
                }
                let parts = ALL_PARTS.load(Ordering::Relaxed).max(n).max(env_parts());
                (0..parts).map(|k| k % n).collect()
            }
        };
        let gpus: Vec<Arc<Gpu>> = ordinals
            .iter()
            .map(|o| gpu_with_kernel(*o, KernelVariant::of(sim, opts.dtype, first_dirs)))
            .collect::<Result<_, _>>()?;
        let pixels = Pixels::of(sim, roi);
        phases::mark("GPUs, kernels, pixels");
        let mut image = vec![];
        let mut derivatives: Vec<(Param, Vec<f64>)> = vec![];
        let mut kernel_seconds = 0.0;
        if opts.derivatives.is_empty() {
            let (mut planes, k) = run_image::<f64>(&gpus, sim, &pixels, &base, 0, opts.dtype)?;
            kernel_seconds += k;
            image = planes.swap_remove(0);
        } else {
            for chunk in opts.derivatives.chunks(MAX_DIRECTIONS) {
                let g = &gpus;
                let (planes, k) = match chunk.len() {
                    1 => run_dual::<1>(g, sim, &pixels, &base, chunk, opts.dtype),
                    2 => run_dual::<2>(g, sim, &pixels, &base, chunk, opts.dtype),
                    3 => run_dual::<3>(g, sim, &pixels, &base, chunk, opts.dtype),
                    4 => run_dual::<4>(g, sim, &pixels, &base, chunk, opts.dtype),
                    5 => run_dual::<5>(g, sim, &pixels, &base, chunk, opts.dtype),
                    6 => run_dual::<6>(g, sim, &pixels, &base, chunk, opts.dtype),
                    7 => run_dual::<7>(g, sim, &pixels, &base, chunk, opts.dtype),
                    8 => run_dual::<8>(g, sim, &pixels, &base, chunk, opts.dtype),
                    k => return Err(EngineError::Failed(format!("chunk of {k} directions"))),
                }?;
                kernel_seconds += k;
                let mut planes = planes.into_iter();
                image = planes.next().unwrap_or_default();
                derivatives.extend(chunk.iter().copied().zip(planes));
            }
        }
        let device = match (ordinal, gpus.as_slice()) {
            (Some(_), [g]) => g.label(),
            _ => {
                let mut seen: Vec<usize> = ordinals.clone();
                seen.sort_unstable();
                seen.dedup();
                let labels: Vec<String> = seen
                    .iter()
                    .filter_map(|o| gpus.iter().find(|g| g.ordinal == *o))
                    .map(|g| g.label())
                    .collect();
                format!(
                    "cuda:all ({} GPU(s), {} band(s) of rows: {})",
                    labels.len(),
                    gpus.len(),
                    labels.join(", ")
                )
            }
        };
        tracing::debug!(
            target: "braggrun::cuda",
            "render on {device} in {:.3} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
        let rendered = Rendered::new(sim, roi, image, derivatives, device, Some(kernel_seconds));
        phases::mark("result");
        Ok(rendered)
    })
}

fn run_dual<const N: usize>(
    g: &[Arc<Gpu>],
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
    g: &[Arc<Gpu>],
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

/// Render the pixels with the kernel in precision R on `gpus` (one band of
/// rows each): the planes and the kernels' GPU time (CUDA events around the
/// launches; the longest GPU's), seconds.
fn launch_image<R: GpuReal>(
    gpus: &[Arc<Gpu>],
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
    let track_oor = variant.interpolate;
    let t0 = Instant::now();
    let cap = LAUNCH_CAP.load(Ordering::Relaxed).max(1);
    let chunk = ((LAUNCH_BUDGET / (work * nv as f64)) as usize)
        .clamp(MIN_LAUNCH_PIXELS, MAX_LAUNCH_PIXELS)
        .min(cap);
    let chunk = chunk.div_ceil(BLOCK as usize) * BLOCK as usize;
    // one band of rows per GPU (fewer when there are fewer rows)
    let ranges = split::pixel_ranges(npix, |i| pixels.get(i).1, gpus.len());
    let mut runs: Vec<PartRun> = Vec::with_capacity(ranges.len());
    let launched = (|| {
        for (g, r) in gpus.iter().zip(&ranges) {
            let (k, _) = kernels(g, variant)?;
            let state = GpuState::take(g)?;
            runs.push(launch_part::<R>(
                state,
                k,
                sim,
                pixels,
                inputs,
                nv,
                r.clone(),
                chunk,
                track_oor,
            )?);
        }
        // C turns interpolation off for good at the first out-of-range
        // lookup (over the whole ROI in order): every part re-runs its
        // pixels from it on
        let per_part: Vec<Option<(usize, i32)>> = runs
            .iter()
            .map(|r| r.first_oor())
            .collect::<Result<_, _>>()?;
        let switch = split::first_switch(&per_part);
        for r in &mut runs {
            r.finish::<R>(switch)?;
        }
        Ok::<(), EngineError>(())
    })();
    if let Err(e) = launched {
        for r in runs {
            r.state.give_back();
        }
        return Err(e);
    }
    let t_launch = t0.elapsed().as_secs_f64();
    phases::mark("launched");
    // The host planes. The read-back writes every pixel of the ROI; the
    // rest is zeroed here, on all threads, while the GPUs compute. Zeroing
    // the ROI as well would write each plane twice: at 1024^2 the host's
    // memory traffic, not the GPU, then set the pace (an H200 renders the
    // float32 image in 0.35 ms; zeroing its 8 MB float64 plane took 0.2 ms).
    let outside = unwritten(pixels, fp, n);
    let mut planes: Planes = (0..nv).map(|_| Vec::with_capacity(n)).collect();
    for p in &mut planes {
        advise_huge(p);
        for r in &outside {
            fill_zero(&mut p.spare_capacity_mut()[r.clone()]);
        }
    }
    let t_planes = t0.elapsed().as_secs_f64();
    phases::mark("host planes");
    // each part's band of rows of every plane
    let mut windows: Vec<(usize, Vec<&mut [MaybeUninit<f64>]>)> = Vec::with_capacity(runs.len());
    {
        let mut rest: Vec<&mut [MaybeUninit<f64>]> = planes
            .iter_mut()
            .map(|p| &mut p.spare_capacity_mut()[..n])
            .collect();
        let mut at = 0;
        for r in &ranges {
            let end_row = pixels.get(r.end - 1).1 + 1;
            let mut band = Vec::with_capacity(nv);
            let mut tail = Vec::with_capacity(nv);
            for p in rest {
                let (b, t) = p.split_at_mut(end_row * fp - at);
                band.push(b);
                tail.push(t);
            }
            windows.push((at, band));
            at = end_row * fp;
            rest = tail;
        }
    }
    // the pool's threads convert the pieces (each part's share of them),
    // beside the threads that read back. One part reads back on this
    // thread, its workers in this thread's pool (a pool thread waiting for
    // them runs them itself). Several parts read back on threads of their
    // own, whose workers go to the global pool: were this thread one of a
    // pool's, the global pool's threads could all be waiting for read-backs
    // like these, and none left to run the workers, so there they have none.
    let workers = match runs.len() {
        1 => rayon::current_num_threads().saturating_sub(1),
        k if rayon::current_thread_index().is_none() => {
            (rayon::current_num_threads() / k).saturating_sub(1)
        }
        _ => 0,
    };
    let results: Vec<Result<f64, EngineError>> = if runs.len() == 1 {
        let (base, w) = &mut windows[0];
        vec![runs[0].read_back::<R>(pixels, fp, w, *base, workers)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = runs
                .iter_mut()
                .zip(windows.iter_mut())
                .map(|(run, (base, w))| {
                    let base = *base;
                    s.spawn(move || guarded(|| run.read_back::<R>(pixels, fp, w, base, workers)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(EngineError::Failed("a read-back thread panicked".into()))
                    })
                })
                .collect()
        })
    };
    for r in runs {
        r.give_back();
    }
    phases::mark("states given back");
    let mut kernel_seconds: f64 = 0.0;
    for r in results {
        kernel_seconds = kernel_seconds.max(r?);
    }
    for p in &mut planes {
        // SAFETY: every element of 0..n was zeroed above or written by a
        // read-back (each wrote every pixel of its part: none failed)
        unsafe { p.set_len(n) };
    }
    tracing::debug!(
        target: "braggrun::cuda",
        "{npix} pixels x {nv} values on {} GPU(s): upload and launch {:.3} ms, host planes {:.3} ms, kernels {:.3} ms, total with read-back {:.3} ms",
        gpus.len(),
        t_launch * 1e3,
        (t_planes - t_launch) * 1e3,
        kernel_seconds * 1e3,
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok((planes, kernel_seconds))
}
