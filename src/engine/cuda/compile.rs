//! The kernel's PTX and its loading: NVRTC compiles the kernel source (the
//! generated interface header followed by kernel.cu, [`kernel_source`]) once
//! per [`KernelVariant`] for the device's compute capability; the PTX is
//! cached in memory (process-wide) and on disk (under
//! `$XDG_CACHE_HOME/braggrun/ptx` or `~/.cache/braggrun/ptx`, keyed by a
//! sha256 of the source, the options, the NVRTC and driver versions) so a
//! second process does not recompile; a module is loaded once per GPU.

use super::device::{
    compute_capability, driver_version, drv, gpu, guarded, lock, nvrtc_version, opened,
    probe_libraries, probe_nvrtc, raw_device_count, Gpu,
};
use super::interface::{kernel_source, KernelVariant};
use crate::engine::values::MAX_DIRECTIONS;
use crate::engine::{Dtype, EngineError};
use cudarc::driver::{result as dresult, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::panic::catch_unwind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

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

/// What preparing a kernel did.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    /// The kernel variant prepared (precision, directions, shape, interpolation).
    pub variant: KernelVariant,
    /// NVRTC options (they are part of the cache key)
    pub options: Vec<String>,
    /// sha256 key of the PTX cache
    pub key: String,
    /// Where its PTX came from (compiled, disk cache or memory).
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

pub(super) fn cache_key(options: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(kernel_source().as_bytes());
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
pub(super) fn get_ptx(
    variant: KernelVariant,
    cc: (i32, i32),
) -> Result<(String, KernelInfo), EngineError> {
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
    let ptx = match cudarc::nvrtc::compile_ptx_with_opts(kernel_source(), opts) {
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
pub(super) struct Kernels {
    pub(super) render: CudaFunction,
    pub(super) probe: CudaFunction,
    _module: Arc<CudaModule>,
    info: KernelInfo,
    /// blocks of [`super::pipeline::BLOCK`] threads of `render` resident per
    /// multiprocessor (asked of the driver once)
    blocks_per_sm: OnceLock<usize>,
}

impl Kernels {
    /// Blocks of `block` threads of `render` that fit on one multiprocessor
    /// at once (at least 1); `block` must be the same every call.
    pub(super) fn render_blocks_per_sm(&self, block: u32) -> usize {
        *self.blocks_per_sm.get_or_init(|| {
            self.render
                .occupancy_max_active_blocks_per_multiprocessor(block, 0, None)
                .unwrap_or(1)
                .max(1) as usize
        })
    }
}

/// The kernels of a variant loaded on `g`, and whether this call loaded them.
pub(super) fn kernels(
    g: &Gpu,
    variant: KernelVariant,
) -> Result<(Arc<Kernels>, bool), EngineError> {
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
        blocks_per_sm: OnceLock::new(),
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

/// GPU `ordinal`, opened, with a kernel variant compiled.
/// The first time, NVRTC compiles on a second thread while the driver
/// creates the context (each takes a large part of a second): a fresh
/// process reaches its first image sooner.
pub(super) fn gpu_with_kernel(
    ordinal: usize,
    variant: KernelVariant,
) -> Result<Arc<Gpu>, EngineError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physics::config::LatticeShape;

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

    /// The PTX cache key covers the generated header: a change to the
    /// interface (a Params field, an offset, a constant) is a new kernel.
    #[test]
    fn cache_key_covers_the_header() {
        assert!(kernel_source().starts_with(&super::super::interface::header()));
        assert!(kernel_source().ends_with(super::super::interface::KERNEL_SOURCE));
    }
}
