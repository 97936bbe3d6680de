//! The CUDA driver and the GPUs: whether the libraries load, driver and
//! NVRTC versions, the visible devices, each opened GPU's primary context;
//! driver errors mapped to [`EngineError`], and the guard that turns a panic
//! inside cudarc into an error.
//!
//! Nothing here panics on a missing driver or GPU: the libraries are probed
//! with `is_culib_present` before any other cudarc call and every cudarc call
//! runs under `catch_unwind` as a last guard.

use crate::engine::EngineError;
use cudarc::driver::{result as dresult, sys as dsys, CudaContext, DriverError};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// Whether the CUDA driver and NVRTC libraries can be loaded, and why not.
pub fn probe_libraries() -> Result<(), String> {
    // Each probe opens and closes the library (tens of microseconds, a
    // tenth of a 1024^2 render on an H200): once both are found, they stay
    // found (cudarc keeps them loaded from the first use on).
    static FOUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if FOUND.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    // cudarc panics when a library is missing: probe first.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    if !driver {
        return Err("libcuda (the NVIDIA driver) is not present".into());
    }
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !nvrtc {
        return Err("libnvrtc (CUDA runtime compiler) is not present".into());
    }
    FOUND.store(true, std::sync::atomic::Ordering::Relaxed);
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
pub(super) fn guarded<X>(f: impl FnOnce() -> Result<X, EngineError>) -> Result<X, EngineError> {
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

pub(super) fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A driver error while doing `what`: out of memory and launch failures are
/// render failures; a missing device is "unavailable".
pub(super) fn drv(what: &'static str) -> impl Fn(DriverError) -> EngineError {
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

pub(super) fn raw_device_count() -> Result<usize, EngineError> {
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
pub(super) fn driver_version() -> Option<(i32, i32)> {
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
pub(super) fn nvrtc_version() -> Option<(i32, i32)> {
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

pub(super) fn compute_capability(dev: dsys::CUdevice) -> Result<(i32, i32), EngineError> {
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
pub(super) struct Gpu {
    pub(super) ordinal: usize,
    pub(super) ctx: Arc<CudaContext>,
    pub(super) name: String,
    pub(super) cc: (i32, i32),
}

impl Gpu {
    pub(super) fn label(&self) -> String {
        format!("cuda:{} {}", self.ordinal, self.name)
    }
}

pub(super) fn opened() -> &'static Mutex<HashMap<usize, Arc<Gpu>>> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    GPUS.get_or_init(Default::default)
}

pub(super) fn gpu(ordinal: usize) -> Result<Arc<Gpu>, EngineError> {
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
    keep_host_memory();
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

/// Let the C allocator keep freed memory for the next render: by default
/// glibc maps each large buffer (a render's full-detector planes: 8 MB
/// each at 1024^2) afresh and unmaps it when freed, so every render pays a
/// page fault per 4 KiB of every plane (about 4 ms per 8 MB on one thread of
/// the GPU host), more than the GPU's work at 1024^2. With a fixed mmap
/// threshold of 32 MiB (glibc's largest) and no trimming, freed planes stay
/// mapped and the next render's reuse them. Set once, when the first GPU is
/// opened (the CPU engine is not affected before); `BRAGGRUN_KEEP_HOST_MEMORY=0`
/// leaves glibc's defaults (for comparison).
fn keep_host_memory() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("BRAGGRUN_KEEP_HOST_MEMORY").is_ok_and(|v| v == "0") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator thresholds
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
