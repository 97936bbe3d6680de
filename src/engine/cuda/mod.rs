//! The CUDA engine: the CPU engine's physics on the GPU through cudarc.
//!
//! The host builds the per-image [`Model`] exactly as the CPU engine does (in
//! f64, or in `DualSVec64<N>` for N forward-mode derivative directions),
//! flattens every model quantity as value + N derivative components, and
//! uploads it. The kernel (`kernel.cu`, embedded with `include_str!`)
//! evaluates only the per-pixel loop, one thread per ROI pixel, with a small
//! dual type and the same function names as `physics::simulator`. Its
//! output, one plane per value, comes back through pinned staging buffers.
//!
//! The kernel is compiled at run time by NVRTC once per [`KernelVariant`]
//! (precision, number of directions, lattice shape, interpolation) for the
//! device's compute capability, cached in memory
//! (process-wide) and on disk (PTX under `$XDG_CACHE_HOME/braggrun/ptx` or
//! `~/.cache/braggrun/ptx`, keyed by a sha256 of the source, the options, the
//! NVRTC and driver versions) so a second process does not recompile.
//!
//! Nothing here panics on a missing driver or GPU: the libraries are probed
//! with `is_culib_present` before any other cudarc call and every cudarc call
//! runs under `catch_unwind` as a last guard.

use super::cpu::{check_roi, Extract, MAX_DIRECTIONS};
use super::{Dtype, EngineError, RenderOptions, Rendered};
use crate::physics::config::LatticeShape;
use crate::physics::params::{Param, ParamValues};
use crate::physics::simulator::Model;
use crate::physics::Simulation;
use cudarc::driver::{
    result as dresult, sys as dsys, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice,
    CudaStream, DeviceRepr, DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg,
    ValidAsZeroBits,
};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use num_dual::{DualSVec32, DualSVec64};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// The kernel source, compiled at run time.
pub const KERNEL_SOURCE: &str = include_str!("kernel.cu");

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

// ---------------------------------------------------------------------------
// libraries, devices

/// Whether the CUDA driver and NVRTC libraries can be loaded, and why not.
pub fn probe_libraries() -> Result<(), String> {
    // cudarc panics when a library is missing: probe first.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    if !driver {
        return Err("libcuda (the NVIDIA driver) is not present".into());
    }
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !nvrtc {
        return Err("libnvrtc (CUDA runtime compiler) is not present".into());
    }
    Ok(())
}

/// Whether NVRTC can be loaded (enough to compile the kernel, no GPU needed).
pub fn probe_nvrtc() -> Result<(), String> {
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err("libnvrtc (CUDA runtime compiler) is not present".into())
    }
}

/// Run `f`, turning a panic inside cudarc into an error.
fn guarded<X>(f: impl FnOnce() -> Result<X, EngineError>) -> Result<X, EngineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(EngineError::Failed(format!(
                "the CUDA engine panicked: {msg}"
            )))
        }
    }
}

fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A driver error while doing `what`: out of memory and launch failures are
/// render failures; a missing device is "unavailable".
fn drv(what: &'static str) -> impl Fn(DriverError) -> EngineError {
    move |e: DriverError| {
        use dsys::CUresult::*;
        match e.0 {
            CUDA_ERROR_OUT_OF_MEMORY => {
                EngineError::Failed(format!("out of GPU memory while {what}"))
            }
            CUDA_ERROR_NO_DEVICE
            | CUDA_ERROR_NOT_INITIALIZED
            | CUDA_ERROR_INVALID_DEVICE
            | CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
            | CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE
            | CUDA_ERROR_DEVICE_UNAVAILABLE => {
                EngineError::Unavailable(format!("CUDA driver: {e:?} while {what}"))
            }
            _ => EngineError::Failed(format!("CUDA driver error {e:?} while {what}")),
        }
    }
}

fn raw_device_count() -> Result<usize, EngineError> {
    dresult::init().map_err(drv("initialising the CUDA driver"))?;
    Ok(dresult::device::get_count()
        .map_err(drv("counting GPUs"))?
        .max(0) as usize)
}

/// Number of visible GPUs (0 when the driver is missing or sees none).
pub fn device_count() -> usize {
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return 0;
    }
    guarded(raw_device_count).unwrap_or(0)
}

/// The CUDA version the driver supports, e.g. (13, 0); None without a driver.
fn driver_version() -> Option<(i32, i32)> {
    static V: OnceLock<Option<(i32, i32)>> = OnceLock::new();
    *V.get_or_init(|| {
        if !unsafe { dsys::is_culib_present() } {
            return None;
        }
        catch_unwind(|| {
            let mut v: std::ffi::c_int = 0;
            let r = unsafe { dsys::cuDriverGetVersion(&mut v) };
            (r == dsys::CUresult::CUDA_SUCCESS).then_some((v / 1000, (v % 1000) / 10))
        })
        .ok()
        .flatten()
    })
}

/// NVRTC's version; None without NVRTC.
fn nvrtc_version() -> Option<(i32, i32)> {
    static V: OnceLock<Option<(i32, i32)>> = OnceLock::new();
    *V.get_or_init(|| {
        if probe_nvrtc().is_err() {
            return None;
        }
        catch_unwind(|| {
            let (mut a, mut b): (std::ffi::c_int, std::ffi::c_int) = (0, 0);
            let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut a, &mut b) };
            (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((a, b))
        })
        .ok()
        .flatten()
    })
}

/// The NVIDIA kernel module's version (e.g. 580.159.04), when readable: the
/// first dotted number on the first line of /proc/driver/nvidia/version
/// ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04 ...").
fn kernel_module_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    parse_module_version(text.lines().next()?)
}

fn parse_module_version(line: &str) -> Option<String> {
    line.split_whitespace()
        .find(|w| {
            w.contains('.')
                && w.chars().all(|c| c.is_ascii_digit() || c == '.')
                && w.starts_with(|c: char| c.is_ascii_digit())
        })
        .map(String::from)
}

fn compute_capability(dev: dsys::CUdevice) -> Result<(i32, i32), EngineError> {
    use dsys::CUdevice_attribute::*;
    let major = unsafe {
        dresult::device::get_attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
    }
    .map_err(drv("reading the compute capability"))?;
    let minor = unsafe {
        dresult::device::get_attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
    }
    .map_err(drv("reading the compute capability"))?;
    Ok((major, minor))
}

/// One line per visible GPU (ordinal, name, memory, compute capability,
/// driver), or why there is none.
pub fn describe_devices() -> Result<Vec<String>, String> {
    probe_libraries()?;
    guarded(|| {
        let n = raw_device_count()?;
        if n == 0 {
            return Err(EngineError::Unavailable(
                "the CUDA driver sees no GPU".into(),
            ));
        }
        let cuda = driver_version()
            .map(|(a, b)| format!("CUDA {a}.{b}"))
            .unwrap_or_else(|| "CUDA ?".into());
        let driver = match kernel_module_version() {
            Some(v) => format!("driver {v} ({cuda})"),
            None => format!("driver {cuda}"),
        };
        let nvrtc = nvrtc_version()
            .map(|(a, b)| format!("NVRTC {a}.{b}"))
            .unwrap_or_else(|| "NVRTC ?".into());
        let mut out = vec![];
        for i in 0..n {
            let dev = dresult::device::get(i as i32).map_err(drv("opening a GPU"))?;
            let name = dresult::device::get_name(dev).map_err(drv("reading a GPU's name"))?;
            let mem = unsafe { dresult::device::total_mem(dev) }
                .map_err(drv("reading a GPU's memory"))?;
            let (ma, mi) = compute_capability(dev)?;
            out.push(format!(
                "cuda:{i} {name}, {:.1} GiB, compute capability {ma}.{mi}; {driver}, {nvrtc}",
                mem as f64 / (1u64 << 30) as f64
            ));
        }
        Ok(out)
    })
    .map_err(|e| match e {
        EngineError::Unavailable(s) | EngineError::Failed(s) => s,
    })
}

/// An opened GPU: its primary context, name and compute capability.
struct Gpu {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    name: String,
    cc: (i32, i32),
}

impl Gpu {
    fn label(&self) -> String {
        format!("cuda:{} {}", self.ordinal, self.name)
    }
}

fn opened() -> &'static Mutex<HashMap<usize, Arc<Gpu>>> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    GPUS.get_or_init(Default::default)
}

fn gpu(ordinal: usize) -> Result<Arc<Gpu>, EngineError> {
    let mut map = lock(opened());
    if let Some(g) = map.get(&ordinal) {
        return Ok(g.clone());
    }
    let n = raw_device_count()?;
    if ordinal >= n {
        return Err(EngineError::Unavailable(if n == 0 {
            "the CUDA driver sees no GPU".into()
        } else {
            format!("cuda:{ordinal} requested but {n} GPU(s) are visible")
        }));
    }
    let t0 = Instant::now();
    let ctx = CudaContext::new(ordinal).map_err(drv("creating a CUDA context"))?;
    let name = ctx.name().map_err(drv("reading the GPU's name"))?;
    let cc = ctx
        .compute_capability()
        .map_err(drv("reading the compute capability"))?;
    keep_pool_memory(ctx.cu_device());
    tracing::debug!(
        target: "braggrun::cuda",
        "opened cuda:{ordinal} {name} in {:.3} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let g = Arc::new(Gpu {
        ordinal,
        ctx,
        name,
        cc,
    });
    map.insert(ordinal, g.clone());
    Ok(g)
}

/// Let the stream-ordered allocator keep up to a quarter of the GPU's
/// memory when freed: by default it hands everything back to the driver at
/// every synchronisation, and each render would map its buffers afresh.
/// The cap leaves the rest to other processes. Best effort: an error leaves
/// the default.
fn keep_pool_memory(dev: dsys::CUdevice) {
    let _ = catch_unwind(|| unsafe {
        let total = dresult::device::total_mem(dev).unwrap_or(0) as u64;
        let mut pool = std::mem::MaybeUninit::<dsys::CUmemoryPool>::uninit();
        if total > 0
            && dsys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), dev)
                == dsys::CUresult::CUDA_SUCCESS
        {
            let mut keep: u64 = total / 4;
            let _ = dsys::cuMemPoolSetAttribute(
                pool.assume_init(),
                dsys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut keep as *mut u64 as *mut std::ffi::c_void,
            );
        }
    });
}

/// GPU `ordinal`, opened, with a kernel variant compiled.
/// The first time, NVRTC compiles on a second thread while the driver
/// creates the context (each takes a large part of a second): a fresh
/// process reaches its first image sooner.
fn gpu_with_kernel(ordinal: usize, variant: KernelVariant) -> Result<Arc<Gpu>, EngineError> {
    if let Some(g) = lock(opened()).get(&ordinal) {
        return Ok(g.clone());
    }
    let n = raw_device_count()?;
    if ordinal >= n {
        return gpu(ordinal);
    }
    let dev = dresult::device::get(ordinal as i32).map_err(drv("opening a GPU"))?;
    let cc = compute_capability(dev)?;
    std::thread::scope(|s| {
        // its outcome (PTX or error) is kept in memory; loading the kernel
        // later reports any error
        let compile = s.spawn(move || catch_unwind(|| get_ptx(variant, cc)));
        let g = gpu(ordinal);
        let _ = compile.join();
        g
    })
}

// ---------------------------------------------------------------------------
// compilation and caches

/// Where a kernel's PTX came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtxSource {
    /// compiled by NVRTC in this call
    Compiled,
    /// read from the on-disk PTX cache
    DiskCache,
    /// already in this process
    MemoryCache,
}

/// Which kernel: precision, number of derivative directions, and the
/// features compiled in rather than branched on at run time (the lattice
/// shape and tricubic interpolation: leaving out the code a render never
/// takes makes the kernel smaller, quicker to compile and lighter on
/// registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelVariant {
    pub dtype: Dtype,
    pub directions: usize,
    pub shape: LatticeShape,
    pub interpolate: bool,
}

impl KernelVariant {
    /// The preprocessor definitions that select this variant in kernel.cu
    /// (NVRTC, and a host compiler in tests/kernel_host.rs).
    pub fn defines(&self) -> Vec<String> {
        vec![
            format!(
                "-DREAL={}",
                if self.dtype == Dtype::F64 {
                    "double"
                } else {
                    "float"
                }
            ),
            format!("-DNDIR={}", self.directions),
            format!("-DSHAPE={}", self.shape_code()),
            format!("-DINTERPOLATE={}", self.interpolate as i32),
        ]
    }

    /// Square crystal, nearest-neighbour structure factors: the default model.
    pub fn new(dtype: Dtype, directions: usize) -> Self {
        KernelVariant {
            dtype,
            directions,
            shape: LatticeShape::Square,
            interpolate: false,
        }
    }
    /// The kernel that renders `sim`.
    pub fn of(sim: &Simulation, dtype: Dtype, directions: usize) -> Self {
        KernelVariant {
            dtype,
            directions,
            shape: sim.setup.shape,
            interpolate: sim.hkl.is_some() && sim.setup.interpolate,
        }
    }
    fn shape_code(&self) -> i32 {
        match self.shape {
            LatticeShape::Square => 0,
            LatticeShape::Round => 1,
            LatticeShape::Gauss => 2,
            LatticeShape::Tophat => 3,
        }
    }
}

/// What preparing a kernel did.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    pub variant: KernelVariant,
    /// NVRTC options (they are part of the cache key)
    pub options: Vec<String>,
    /// sha256 key of the PTX cache
    pub key: String,
    pub source: PtxSource,
    /// seconds spent getting the PTX (compile, disk read or memory look-up)
    pub ptx_seconds: f64,
    /// seconds spent loading the module into the context (0 if already loaded)
    pub load_seconds: f64,
}

/// The NVRTC options for a kernel variant on a device of compute
/// capability `cc`. Accurate math: no fast-math; float64 also without FMA
/// contraction, so each operation rounds as the CPU's does.
pub fn nvrtc_options(v: KernelVariant, cc: (i32, i32)) -> Vec<String> {
    let mut o = vec![format!("--gpu-architecture=compute_{}{}", cc.0, cc.1)];
    o.extend(v.defines());
    if v.dtype == Dtype::F64 {
        o.push("--fmad=false".into());
    }
    // for experiments: extra NVRTC options (part of the cache key)
    if let Ok(extra) = std::env::var("BRAGGRUN_NVRTC_OPTIONS") {
        o.extend(extra.split_whitespace().map(String::from));
    }
    // NVRTC 12.4+: leave out the runtime-API declarations the kernel never
    // uses (it includes no header), to shorten a cold compile
    if nvrtc_version().is_some_and(|v| v >= (12, 4)) && !NO_MINIMAL.load(Ordering::Relaxed) {
        o.push(MINIMAL.into());
    }
    o
}

const MINIMAL: &str = "-minimal";
/// Set when an NVRTC refused `-minimal`: compile without it from then on.
static NO_MINIMAL: AtomicBool = AtomicBool::new(false);

/// The on-disk PTX cache folder.
pub fn ptx_cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("braggrun").join("ptx"))
}

fn cache_key(options: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(KERNEL_SOURCE.as_bytes());
    h.update(b"\0options\0");
    h.update(options.join("\n").as_bytes());
    let nv = nvrtc_version()
        .map(|(a, b)| format!("{a}.{b}"))
        .unwrap_or_default();
    let dv = driver_version()
        .map(|(a, b)| format!("{a}.{b}"))
        .unwrap_or_default();
    h.update(format!("\0nvrtc {nv}\0driver {dv}").as_bytes());
    hex::encode(h.finalize())
}

/// One slot per key, so that compiling one variant never blocks another:
/// the map's lock is held only to find or add a slot.
type Slot<X> = Arc<Mutex<Option<X>>>;

fn slot<K: std::hash::Hash + Eq, X>(map: &Mutex<HashMap<K, Slot<X>>>, key: K) -> Slot<X> {
    lock(map).entry(key).or_default().clone()
}

fn ptx_memory() -> &'static Mutex<HashMap<String, Slot<PtxEntry>>> {
    static PTX: OnceLock<Mutex<HashMap<String, Slot<PtxEntry>>>> = OnceLock::new();
    PTX.get_or_init(Default::default)
}

/// PTX text for the options: memory cache, else disk cache, else NVRTC.
fn get_ptx(variant: KernelVariant, cc: (i32, i32)) -> Result<(String, KernelInfo), EngineError> {
    match get_ptx_with(variant, nvrtc_options(variant, cc)) {
        Err(PtxError::MinimalRefused(e)) => {
            tracing::debug!(target: "braggrun::cuda", "compiling again without {MINIMAL}: {e}");
            NO_MINIMAL.store(true, Ordering::Relaxed);
            get_ptx_with(variant, nvrtc_options(variant, cc)).map_err(PtxError::into_engine)
        }
        r => r.map_err(PtxError::into_engine),
    }
}

/// Why no PTX came: NVRTC refused `-minimal` (compile again without it), or
/// anything else.
enum PtxError {
    MinimalRefused(String),
    Other(EngineError),
}

impl PtxError {
    fn into_engine(self) -> EngineError {
        match self {
            PtxError::MinimalRefused(e) => EngineError::Failed(e),
            PtxError::Other(e) => e,
        }
    }
}

/// A kernel's PTX in memory: the text, or the compile error (the same
/// source and options fail the same way: a failure is remembered too).
type PtxEntry = Result<String, String>;

fn get_ptx_with(
    variant: KernelVariant,
    options: Vec<String>,
) -> Result<(String, KernelInfo), PtxError> {
    let key = cache_key(&options);
    let t0 = Instant::now();
    let info = |source: PtxSource, t: f64| KernelInfo {
        variant,
        options: options.clone(),
        key: key.clone(),
        source,
        ptx_seconds: t,
        load_seconds: 0.0,
    };
    let entry = slot(ptx_memory(), key.clone());
    let mut mem = lock(&entry);
    match mem.as_ref() {
        Some(Ok(p)) => {
            return Ok((
                p.clone(),
                info(PtxSource::MemoryCache, t0.elapsed().as_secs_f64()),
            ))
        }
        Some(Err(e)) => return Err(PtxError::Other(EngineError::Failed(e.clone()))),
        None => {}
    }
    let file = ptx_cache_dir().map(|d| d.join(format!("{key}.ptx")));
    if let Some(f) = &file {
        if let Ok(text) = std::fs::read_to_string(f) {
            if text.contains(".entry render_pixels") && text.contains(".entry phi_cache_probe") {
                *mem = Some(Ok(text.clone()));
                return Ok((text, info(PtxSource::DiskCache, t0.elapsed().as_secs_f64())));
            }
        }
    }
    probe_nvrtc().map_err(|e| PtxError::Other(EngineError::Unavailable(e)))?;
    let opts = CompileOptions {
        options: options.clone(),
        name: Some("braggrun_kernel.cu".into()),
        ..Default::default()
    };
    let ptx = match cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts) {
        Ok(p) => p,
        Err(CompileError::CompileError {
            nvrtc,
            options: used,
            log,
        }) => {
            let log = log.to_string_lossy();
            let msg = format!(
                "NVRTC could not compile the CUDA kernel ({nvrtc:?}; options {}):\n{log}",
                used.join(" ")
            );
            let refused = nvrtc.0 == cudarc::nvrtc::sys::nvrtcResult::NVRTC_ERROR_INVALID_OPTION
                || log.contains(MINIMAL);
            if refused && options.iter().any(|o| o == MINIMAL) {
                return Err(PtxError::MinimalRefused(msg));
            }
            *mem = Some(Err(msg.clone()));
            return Err(PtxError::Other(EngineError::Failed(msg)));
        }
        Err(other) => {
            return Err(PtxError::Other(EngineError::Failed(format!(
                "NVRTC failed: {other:?}"
            ))))
        }
    };
    let text = ptx.to_src();
    let text = text.trim_end_matches('\0').to_string();
    if let Some(f) = &file {
        // best effort: write to a temporary name, then rename
        if let Some(dir) = f.parent() {
            if std::fs::create_dir_all(dir).is_ok() {
                let tmp = dir.join(format!("{key}.{}.tmp", std::process::id()));
                if std::fs::write(&tmp, &text).is_ok() && std::fs::rename(&tmp, f).is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
            }
        }
    }
    *mem = Some(Ok(text.clone()));
    Ok((text, info(PtxSource::Compiled, t0.elapsed().as_secs_f64())))
}

/// Compile (or find in the caches) the kernel for a device of compute
/// capability `cc`; needs NVRTC only, no GPU.
pub fn compile_kernel(variant: KernelVariant, cc: (i32, i32)) -> Result<KernelInfo, EngineError> {
    check_directions(variant.directions)?;
    probe_nvrtc().map_err(EngineError::Unavailable)?;
    guarded(|| get_ptx(variant, cc).map(|(_, i)| i))
}

fn check_directions(directions: usize) -> Result<(), EngineError> {
    if directions > MAX_DIRECTIONS {
        return Err(EngineError::Failed(format!(
            "at most {MAX_DIRECTIONS} directions per kernel"
        )));
    }
    Ok(())
}

/// The loaded kernels of one module.
struct Kernels {
    render: CudaFunction,
    probe: CudaFunction,
    _module: Arc<CudaModule>,
    info: KernelInfo,
}

/// The kernels of a variant loaded on `g`, and whether this call loaded them.
fn kernels(g: &Gpu, variant: KernelVariant) -> Result<(Arc<Kernels>, bool), EngineError> {
    type Loaded = Mutex<HashMap<(usize, KernelVariant), Slot<Arc<Kernels>>>>;
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    let entry = slot(LOADED.get_or_init(Default::default), (g.ordinal, variant));
    let mut loaded = lock(&entry);
    if let Some(k) = loaded.as_ref() {
        return Ok((k.clone(), false));
    }
    let (ptx, mut info) = get_ptx(variant, g.cc)?;
    let t0 = Instant::now();
    let module = g
        .ctx
        .load_module(Ptx::from_src(ptx))
        .map_err(drv("loading the kernel module"))?;
    let render = module
        .load_function("render_pixels")
        .map_err(drv("loading render_pixels"))?;
    let probe = module
        .load_function("phi_cache_probe")
        .map_err(drv("loading phi_cache_probe"))?;
    info.load_seconds = t0.elapsed().as_secs_f64();
    let k = Arc::new(Kernels {
        render,
        probe,
        _module: module,
        info,
    });
    *loaded = Some(k.clone());
    Ok((k, true))
}

/// Get a kernel variant ready on a GPU (ordinal None: 0): compile or read
/// the cached PTX and load it. Reports where the PTX came from and how long
/// each part took; a second call in the same process reports the memory
/// cache.
pub fn prepare_kernel(
    ordinal: Option<usize>,
    variant: KernelVariant,
) -> Result<KernelInfo, EngineError> {
    check_directions(variant.directions)?;
    probe_libraries().map_err(EngineError::Unavailable)?;
    guarded(|| {
        let g = gpu_with_kernel(ordinal.unwrap_or(0), variant)?;
        let t0 = Instant::now();
        let (k, loaded_now) = kernels(&g, variant)?;
        let mut i = k.info.clone();
        if !loaded_now {
            i.source = PtxSource::MemoryCache;
            i.ptx_seconds = t0.elapsed().as_secs_f64();
            i.load_seconds = 0.0;
        }
        Ok(i)
    })
}

// ---------------------------------------------------------------------------
// rendering

/// Image constants for the kernel; the same fields, in the same order, as
/// `struct Params` in kernel.cu (every f64, then every i32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Params {
    pixel_size: f64,
    sub: f64,
    pixel_area: f64,
    thickstep: f64,
    mu: f64,
    thick: f64,
    dmin: f64,
    water_size: f64,
    fudge: f64,
    beam: [f64; 3],
    oversample: i32,
    thicksteps: i32,
    nsources: i32,
    norient: i32,
    curved: i32,
    point_pixel: i32,
    nopolar: i32,
    oversample_omega: i32,
    oversample_thick: i32,
    oversample_polar: i32,
    n_gt1: [i32; 3],
    n_whole: [i32; 3],
    lifted: i32,
    has_hkl: i32,
    hkl_count_pos: i32,
    h_min: i32,
    h_max: i32,
    k_min: i32,
    k_max: i32,
    l_min: i32,
    l_max: i32,
    first_pixel: i32,
    nearest_mode: i32,
    switch_pixel: i32,
    switch_eval: i32,
    pix_list: i32,
    roi_f0: i32,
    roi_s0: i32,
    roi_nf: i32,
    /// 1: float32 with derivatives; lattice factors at float64 indices from
    /// the float64 model (simulator.rs Model::hi)
    hi_index: i32,
}
unsafe impl DeviceRepr for Params {}

/// The floating type the kernel computes in.
trait GpuReal: DeviceRepr + ValidAsZeroBits + Copy + Default + Unpin + Send + Sync + 'static {
    fn of(x: f64) -> Self;
    fn to(self) -> f64;
}
impl GpuReal for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to(self) -> f64 {
        self
    }
}
impl GpuReal for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to(self) -> f64 {
        self as f64
    }
}

fn push<T: Extract>(buf: &mut Vec<f64>, x: &T, nd: usize) {
    buf.push(x.re64());
    for i in 0..nd {
        buf.push(x.eps64(i));
    }
}

/// The model as the kernel reads it (layout: M_* in kernel.cu).
fn flatten<T: Extract>(m: &Model<'_, T>, nd: usize) -> Vec<f64> {
    let mut b = Vec::new();
    for v in [&m.geo.fdet, &m.geo.sdet, &m.geo.odet, &m.geo.pix0] {
        for x in &v.0 {
            push(&mut b, x, nd);
        }
    }
    push(&mut b, &m.geo.close_distance, nd);
    push(&mut b, &m.geo.distance, nd);
    for x in &m.polar_vector.0 {
        push(&mut b, x, nd);
    }
    push(&mut b, &m.kahn, nd);
    push(&mut b, &m.default_f, nd);
    push(&mut b, &m.scale, nd);
    push(&mut b, &m.i_bg, nd);
    for x in &m.n {
        push(&mut b, x, nd);
    }
    for v in &m.recip {
        for x in &v.0 {
            push(&mut b, x, nd);
        }
    }
    debug_assert_eq!(b.len(), 33 * (1 + nd));
    for (inc, lambda) in &m.sources {
        for x in &inc.0 {
            push(&mut b, x, nd);
        }
        push(&mut b, lambda, nd);
    }
    for set in [&m.orient_first, &m.orient_rest] {
        for o in set.iter() {
            for v in o {
                for x in &v.0 {
                    push(&mut b, x, nd);
                }
            }
        }
    }
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
enum Pixels {
    Rect {
        f0: usize,
        s0: usize,
        nf: usize,
        ns: usize,
    },
    List(Vec<(usize, usize)>),
}

impl Pixels {
    fn of(sim: &Simulation, roi: [u32; 4]) -> Pixels {
        if sim.mask.is_some() {
            return Pixels::List(super::roi_pixels(sim, roi));
        }
        let [f0, f1, s0, s1] = roi.map(|v| v as usize);
        Pixels::Rect {
            f0,
            s0,
            nf: f1 + 1 - f0,
            ns: s1 + 1 - s0,
        }
    }
    fn len(&self) -> usize {
        match self {
            Pixels::Rect { nf, ns, .. } => nf * ns,
            Pixels::List(l) => l.len(),
        }
    }
    /// (fast, slow) of the i-th pixel
    fn get(&self, i: usize) -> (usize, usize) {
        match self {
            Pixels::Rect { f0, s0, nf, .. } => (f0 + i % nf, s0 + i / nf),
            Pixels::List(l) => l[i],
        }
    }
}

/// The pixel planes of a render (the image, then one per direction), each
/// a full detector image.
type Planes = Vec<Vec<f64>>;

/// What the kernel reads for one render: the model buffer, the float64
/// model (float32 with derivatives, else one 0) and the launch parameters.
struct KernelInputs {
    flat: Vec<f64>,
    hi: Vec<f64>,
    params: Params,
}

/// Build the kernel's inputs in scalar T, exactly as a GPU render does.
fn kernel_inputs<T: Extract>(
    sim: &Simulation,
    pixels: &Pixels,
    pv: &ParamValues<T>,
    nd: usize,
    dtype: Dtype,
) -> Result<KernelInputs, EngineError> {
    let model = Model::build(&sim.setup, sim.hkl.as_ref(), pv);
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
    // float32 with derivatives: the float64 model's values for the indices
    // and the scattering vector (simulator.rs Model::hi; the host model here
    // is in float64 duals, so it is built for the float32 kernel explicitly;
    // not with a curved detector, whose float64 path the kernel lacks)
    let hi: Vec<f64> = if dtype == Dtype::F32 && nd > 0 && !sim.setup.curved {
        flatten(
            &Model::<f64>::build(&sim.setup, sim.hkl.as_ref(), &pv.exact_f64()),
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

/// Render the pixels in scalar T on the GPU: 1 + nd full-detector planes.
fn run_image<T: Extract>(
    g: &Gpu,
    sim: &Simulation,
    pixels: &Pixels,
    pv: &ParamValues<T>,
    nd: usize,
    dtype: Dtype,
) -> Result<Planes, EngineError> {
    let t0 = Instant::now();
    let KernelInputs { flat, hi, params } = kernel_inputs(sim, pixels, pv, nd, dtype)?;
    let flat_model = FlatModel {
        flat: &flat,
        hi: &hi,
    };
    tracing::debug!(
        target: "braggrun::cuda",
        "model built in {:.3} ms ({} values)",
        t0.elapsed().as_secs_f64() * 1e3,
        flat.len()
    );
    let work = (sim.setup.steps.max(1) * sim.setup.thicksteps.max(1)) as f64;
    match dtype {
        Dtype::F64 => launch_image::<f64>(g, sim, pixels, flat_model, params, nd, work),
        Dtype::F32 => launch_image::<f32>(g, sim, pixels, flat_model, params, nd, work),
    }
}

/// The kernel's inputs for a render of the whole ROI of `sim` with
/// derivatives by `dirs` (at most 8), as raw files a host-compiled kernel.cu
/// reads (tests/kernel_host.rs): the Params struct's bytes, the model and
/// float64 model buffers and the HKL grid as little-endian f64, the pixel
/// list as i32 pairs. Lets CI check the kernel without a GPU.
pub struct HostKernelInputs {
    pub params: Vec<u8>,
    pub model: Vec<f64>,
    pub hi: Vec<f64>,
    pub hkl: Vec<f64>,
    pub pixels: Vec<i32>,
    pub npix: usize,
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
                    &super::cpu::seeded_values::<DualSVec64<$n>>(&base, dirs),
                    $n,
                    dtype,
                ),)*
                n => Err(EngineError::Failed(format!("{n} directions: at most 8 in one pass"))),
            }
        };
    }
    let k = inputs!(1 2 3 4 5 6 7 8)?;
    // SAFETY: Params is repr(C) plain data (i32 and f64 fields only)
    let params = unsafe {
        std::slice::from_raw_parts(
            (&k.params as *const Params).cast::<u8>(),
            std::mem::size_of::<Params>(),
        )
    }
    .to_vec();
    let hkl = match &sim.hkl {
        Some(h) if !h.data.is_empty() => h.data.clone(),
        _ => vec![0.0],
    };
    let pix = match &pixels {
        Pixels::List(l) => l.iter().flat_map(|(f, s)| [*f as i32, *s as i32]).collect(),
        Pixels::Rect { .. } => vec![0],
    };
    Ok(HostKernelInputs {
        params,
        model: k.flat,
        hi: k.hi,
        hkl,
        pixels: pix,
        npix: pixels.len(),
        variant: KernelVariant::of(sim, dtype, dirs.len()),
    })
}

#[allow(clippy::too_many_arguments)]
fn launch_range<R: GpuReal>(
    stream: &Arc<CudaStream>,
    f: &CudaFunction,
    params: &Params,
    model: &CudaSlice<R>,
    hi: &CudaSlice<f64>,
    hkl: &CudaSlice<f64>,
    pix: &CudaSlice<i32>,
    out: &mut CudaSlice<R>,
    oor: &mut CudaSlice<i32>,
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
            .arg(model)
            .arg(hi)
            .arg(hkl)
            .arg(pix)
            .arg(&s)
            .arg(&c)
            .arg(&n)
            .arg(&mut *out)
            .arg(&mut *oor);
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

/// Elements of each of the two pinned staging buffers a thread keeps per
/// GPU and precision (8 MiB each).
fn staging_len<R>() -> usize {
    (8 << 20) / std::mem::size_of::<R>()
}

/// Copy `d` back to the host through two pinned (page-locked) buffers, so
/// that the transfer into one overlaps the copy out of the other, and hand
/// each piece to `sink(offset, values)`. Pinned memory moves at the bus's
/// speed; pageable memory is staged by the driver at a fraction of it (and
/// is the fallback when no pinned memory can be had).
fn read_back<R: GpuReal>(
    g: &Gpu,
    stream: &Arc<CudaStream>,
    d: &CudaSlice<R>,
    mut sink: impl FnMut(usize, &[R]),
) -> Result<(), EngineError> {
    let chunk = staging_len::<R>();
    let mut bufs = match take_staging::<R>(g) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(target: "braggrun::cuda", "pageable read-back: {e}");
            let vals = stream
                .clone_dtoh(d)
                .map_err(drv("reading back the image"))?;
            stream
                .synchronize()
                .map_err(drv("reading back the image"))?;
            sink(0, &vals);
            return Ok(());
        }
    };
    // Should `sink` panic while a copy into the other buffer is in flight,
    // wait for it before the buffers are freed (declared after `bufs`, so
    // dropped first).
    let _in_flight = SyncOnUnwind(stream);
    let total = d.len();
    let pieces = total.div_ceil(chunk);
    let range = |k: usize| k * chunk..((k + 1) * chunk).min(total);
    // piece k into buffer k % 2, and an event after it. The destination is
    // cut to the piece's length: cudarc copies as many bytes as the
    // destination holds.
    let issue = |k: usize, buf: &mut PinnedHostSlice<R>| -> Result<CudaEvent, DriverError> {
        let r = range(k);
        let dst = &mut buf.as_mut_slice()?[..r.len()];
        stream.memcpy_dtoh(&d.slice(r), dst)?;
        stream.record_event(None)
    };
    let mut result = Ok(());
    let mut events: [Option<CudaEvent>; 2] = [None, None];
    let (mut waited, mut copied) = (0.0, 0.0);
    for k in 0..pieces {
        let t = Instant::now();
        let step = (|| {
            if k == 0 {
                events[0] = Some(issue(0, &mut bufs[0])?);
            }
            if k + 1 < pieces {
                events[(k + 1) % 2] = Some(issue(k + 1, &mut bufs[(k + 1) % 2])?);
            }
            if let Some(e) = &events[k % 2] {
                e.synchronize()?;
            }
            Ok(())
        })();
        if let Err(e) = step {
            result = Err(e);
            break;
        }
        let r = range(k);
        let t1 = Instant::now();
        waited += (t1 - t).as_secs_f64();
        match bufs[k % 2].as_slice() {
            Ok(vals) => sink(r.start, &vals[..r.len()]),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        copied += t1.elapsed().as_secs_f64();
    }
    tracing::debug!(
        target: "braggrun::cuda",
        "read back {total} values in {pieces} pieces: {:.3} ms waiting for transfers, {:.3} ms copying out",
        waited * 1e3,
        copied * 1e3
    );
    if result.is_err() && stream.synchronize().is_err() {
        // a copy may still be writing into them: never free or reuse them
        std::mem::forget(bufs);
    } else {
        give_staging(g, bufs);
    }
    result.map_err(drv("reading back the image"))
}

/// Waits for the stream when dropped during a panic.
struct SyncOnUnwind<'a>(&'a Arc<CudaStream>);

impl Drop for SyncOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.synchronize();
        }
    }
}

type Staging<R> = [PinnedHostSlice<R>; 2];

/// Pairs of pinned staging buffers per (GPU, size of the float), shared by
/// the process: a render takes a pair and gives it back, so there are as
/// many pairs as renders that ever ran at once, whatever the threads.
type StagingPool = Mutex<HashMap<(usize, usize), Vec<Box<dyn std::any::Any + Send>>>>;

fn staging_pool() -> &'static StagingPool {
    static POOL: OnceLock<StagingPool> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// A pair of pinned staging buffers for GPU `g` (made when the pool has
/// none); hand it back with [`give_staging`].
fn take_staging<R: GpuReal>(g: &Gpu) -> Result<Box<Staging<R>>, DriverError> {
    let key = (g.ordinal, std::mem::size_of::<R>());
    let kept = lock(staging_pool())
        .get_mut(&key)
        .and_then(|v| v.pop())
        .and_then(|b| b.downcast::<Staging<R>>().ok());
    if let Some(b) = kept {
        return Ok(b);
    }
    // flags 0: cached, CPU-readable (the default is write-combined, which
    // the CPU reads slowly)
    let alloc = || unsafe { g.ctx.alloc_pinned_with_flags::<R>(staging_len::<R>(), 0) };
    Ok(Box::new([alloc()?, alloc()?]))
}

fn give_staging<R: GpuReal>(g: &Gpu, bufs: Box<Staging<R>>) {
    let key = (g.ordinal, std::mem::size_of::<R>());
    lock(staging_pool())
        .entry(key)
        .or_default()
        .push(bufs as Box<dyn std::any::Any + Send>);
}

/// A zeroed image, written by all threads: its first touch (page faults,
/// the kernel zeroing each page) then costs a fraction of what one thread
/// pays, about 4 ms per 8 MB there. It overlaps the kernel.
fn zeroed_plane(n: usize) -> Vec<f64> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0.0, n));
    v
}

/// Put values `offset..` of the kernel's output (plane-major, npix values
/// per plane) into the full-detector planes.
fn scatter<R: GpuReal>(
    planes: &mut [Vec<f64>],
    pixels: &Pixels,
    fp: usize,
    npix: usize,
    offset: usize,
    vals: &[R],
) {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 15;
    let mut done = 0;
    while done < vals.len() {
        let (j, i0) = ((offset + done) / npix, (offset + done) % npix);
        let len = (npix - i0).min(vals.len() - done);
        let src = &vals[done..done + len];
        let img = &mut planes[j];
        match pixels {
            Pixels::Rect { f0, s0, nf, .. } if *f0 == 0 && *nf == fp => {
                // whole rows: one contiguous run
                let dst = &mut img[s0 * fp + i0..s0 * fp + i0 + len];
                dst.par_chunks_mut(PIECE)
                    .zip(src.par_chunks(PIECE))
                    .for_each(|(d, s)| {
                        for (d, s) in d.iter_mut().zip(s) {
                            *d = s.to();
                        }
                    });
            }
            _ => {
                for (k, v) in src.iter().enumerate() {
                    let (f, s) = pixels.get(i0 + k);
                    img[s * fp + f] = v.to();
                }
            }
        }
        done += len;
    }
}

/// The model buffer (value + derivative components per scalar, layout M_*
/// in kernel.cu) and, for float32 with derivatives, the float64 model's
/// values (stride 1), else a single 0.
#[derive(Clone, Copy)]
struct FlatModel<'a> {
    flat: &'a [f64],
    hi: &'a [f64],
}

fn launch_image<R: GpuReal>(
    g: &Gpu,
    sim: &Simulation,
    pixels: &Pixels,
    model: FlatModel<'_>,
    params: Params,
    nd: usize,
    work: f64,
) -> Result<Planes, EngineError> {
    let FlatModel { flat, hi } = model;
    let npix = pixels.len();
    let nv = 1 + nd;
    let (fp, n) = (sim.fpixels(), sim.fpixels() * sim.spixels());
    if npix == 0 {
        return Ok(vec![vec![0.0; n]; nv]);
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
    let model_r: Vec<R> = flat.iter().map(|x| R::of(*x)).collect();
    let d_model = stream
        .clone_htod(&model_r)
        .map_err(drv("uploading the model"))?;
    let hkl: &[f64] = match &sim.hkl {
        Some(h) if !h.data.is_empty() => &h.data,
        _ => &[0.0],
    };
    let d_hkl = stream
        .clone_htod(hkl)
        .map_err(drv("uploading the HKL grid"))?;
    let d_hi = stream
        .clone_htod(hi)
        .map_err(drv("uploading the float64 model"))?;
    let pix: Vec<i32> = match pixels {
        Pixels::List(l) => l.iter().flat_map(|(f, s)| [*f as i32, *s as i32]).collect(),
        Pixels::Rect { .. } => vec![0],
    };
    let d_pix = stream
        .clone_htod(&pix)
        .map_err(drv("uploading the pixel list"))?;
    // every element is written by the kernel: no memset
    let mut d_out =
        unsafe { stream.alloc::<R>(npix * nv) }.map_err(drv("allocating the output image"))?;
    // the interpolating kernel reports its first out-of-range lookup
    let track_oor = variant.interpolate;
    let mut d_oor = unsafe { stream.alloc::<i32>(if track_oor { npix } else { 1 }) }
        .map_err(drv("allocating the output image"))?;
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
        &stream, &k.render, &params, &d_model, &d_hi, &d_hkl, &d_pix, &mut d_out, &mut d_oor, 0,
        npix, chunk,
    )?;
    if track_oor {
        // C turns interpolation off for good at the first out-of-range
        // lookup: redo the pixels from it on (cpu.rs does the same).
        let oor = stream
            .clone_dtoh(&d_oor)
            .map_err(drv("reading back the interpolation flags"))?;
        stream.synchronize().map_err(drv("rendering"))?;
        if let Some(p) = oor.iter().position(|o| *o >= 0) {
            let mut p2 = params;
            p2.nearest_mode = 1;
            p2.switch_pixel = p as i32;
            p2.switch_eval = oor[p];
            launch_range(
                &stream, &k.render, &p2, &d_model, &d_hi, &d_hkl, &d_pix, &mut d_out, &mut d_oor,
                p, npix, chunk,
            )?;
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
    read_back(g, &stream, &d_out, |offset, vals| {
        scatter(&mut planes, pixels, fp, npix, offset, vals)
    })?;
    if let Ok(ms) = ev_start.elapsed_ms(&ev_end) {
        KERNEL_SECONDS.with(|k| k.set(k.get() + ms as f64 / 1000.0));
        tracing::debug!(
            target: "braggrun::cuda",
            "{npix} pixels x {nv} values: upload and launch {:.3} ms, kernels {:.3} ms, total with read-back {:.3} ms",
            t_launch * 1e3,
            ms,
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(planes)
}

fn run_dual<const N: usize>(
    g: &Gpu,
    sim: &Simulation,
    pixels: &Pixels,
    base: &ParamValues<f64>,
    dirs: &[Param],
    dtype: Dtype,
) -> Result<Planes, EngineError> {
    let pv = super::cpu::seeded_values::<DualSVec64<N>>(base, dirs);
    run_image(g, sim, pixels, &pv, N, dtype)
}

thread_local! {
    static KERNEL_SECONDS: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

/// GPU time of the kernels of this thread's last `render` (CUDA events around
/// the launches: no host work, no transfers), seconds.
pub fn last_kernel_seconds() -> f64 {
    KERNEL_SECONDS.with(|k| k.get())
}

/// Render with the CUDA engine on GPU `ordinal` (None: 0). Same options and
/// result as the CPU engine; derivatives in passes of up to 8 directions.
pub fn render(
    sim: &Simulation,
    ordinal: Option<usize>,
    opts: &RenderOptions,
) -> Result<Rendered, EngineError> {
    probe_libraries().map_err(EngineError::Unavailable)?;
    KERNEL_SECONDS.with(|k| k.set(0.0));
    let roi = check_roi(sim, opts.roi)?;
    let base = super::base_with_shifts(sim, opts)?;
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
        if opts.derivatives.is_empty() {
            let mut planes = run_image::<f64>(&g, sim, &pixels, &base, 0, opts.dtype)?;
            image = planes.swap_remove(0);
        } else {
            for chunk in opts.derivatives.chunks(MAX_DIRECTIONS) {
                let planes = match chunk.len() {
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
        })
    })
}

/// The M2h.3 phi-cache arithmetic (REFERENCE.md) computed on the GPU with
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
    pub stored_scale: f64,
    pub fresh_scale: f64,
    pub steps: u64,
    pub dtype: Dtype,
}

/// The six cell vectors as (value, d/d cell_a) pairs computed in scalar T.
fn cell_vector_pairs<T: Extract>(cell: [f64; 6]) -> Vec<f64> {
    use crate::physics::cell::cell_vectors;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_kernel() {
        // 12 doubles then 34 ints (kernel.cu struct Params), padded to 8;
        // the size alone would not see one int more or less (padding)
        assert_eq!(std::mem::size_of::<Params>(), 12 * 8 + 34 * 4);
        assert_eq!(std::mem::offset_of!(Params, oversample), 12 * 8);
        assert_eq!(std::mem::offset_of!(Params, roi_nf), 12 * 8 + 32 * 4);
        assert_eq!(std::mem::offset_of!(Params, hi_index), 12 * 8 + 33 * 4);
        assert!(KERNEL_SOURCE.contains("int roi_f0, roi_s0, roi_nf;\n    int hi_index;"));
        assert!(KERNEL_SOURCE.contains("struct Params"));
    }

    #[test]
    fn cache_key_depends_on_options() {
        let v = KernelVariant::new(Dtype::F64, 0);
        let a = cache_key(&nvrtc_options(v, (9, 0)));
        let b = cache_key(&nvrtc_options(KernelVariant::new(Dtype::F32, 0), (9, 0)));
        let c = cache_key(&nvrtc_options(KernelVariant::new(Dtype::F64, 2), (9, 0)));
        let d = cache_key(&nvrtc_options(
            KernelVariant {
                interpolate: true,
                ..v
            },
            (9, 0),
        ));
        let e = cache_key(&nvrtc_options(
            KernelVariant {
                shape: LatticeShape::Round,
                ..v
            },
            (9, 0),
        ));
        let keys = std::collections::BTreeSet::from([&a, &b, &c, &d, &e]);
        assert_eq!(keys.len(), 5);
        assert_eq!(a.len(), 64);
    }

    /// The planes the kernel writes (plane-major, npix values each), put
    /// back piece by piece, land where the CPU engine puts each pixel,
    /// whatever the piece boundaries: a whole detector, a ROI of whole
    /// rows, a ROI rectangle and a masked list.
    #[test]
    fn scatter_puts_every_value_at_its_pixel() {
        let (fp, sp) = (7usize, 5usize);
        let n = fp * sp;
        let cases = [
            Pixels::Rect {
                f0: 0,
                s0: 0,
                nf: fp,
                ns: sp,
            },
            Pixels::Rect {
                f0: 0,
                s0: 1,
                nf: fp,
                ns: 3,
            },
            Pixels::Rect {
                f0: 2,
                s0: 1,
                nf: 4,
                ns: 3,
            },
            Pixels::List(vec![(0, 0), (6, 0), (3, 2), (1, 4), (6, 4)]),
        ];
        for px in &cases {
            let npix = px.len();
            let nv = 3;
            // value of plane j at pixel (f, s): 1000 j + 10 s + f + 1
            let vals: Vec<f32> = (0..nv * npix)
                .map(|k| {
                    let (f, s) = px.get(k % npix);
                    (1000 * (k / npix) + 10 * s + f + 1) as f32
                })
                .collect();
            for piece in [1, 4, npix, npix + 3, nv * npix] {
                let mut planes: Planes = (0..nv).map(|_| zeroed_plane(n)).collect();
                for (c, chunk) in vals.chunks(piece).enumerate() {
                    scatter(&mut planes, px, fp, npix, c * piece, chunk);
                }
                let mut want: Planes = vec![vec![0.0; n]; nv];
                for (j, w) in want.iter_mut().enumerate() {
                    for i in 0..npix {
                        let (f, s) = px.get(i);
                        w[s * fp + f] = (1000 * j + 10 * s + f + 1) as f64;
                    }
                }
                assert_eq!(planes, want, "piece {piece}");
            }
        }
    }

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
    fn module_version_parsed() {
        let l = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)  Thu";
        assert_eq!(parse_module_version(l).as_deref(), Some("580.159.04"));
        assert_eq!(parse_module_version("nothing here"), None);
    }

    #[test]
    fn no_gpu_is_an_error_not_a_panic() {
        // whatever the machine: never panics
        let _ = device_count();
        let _ = describe_devices();
    }
}
