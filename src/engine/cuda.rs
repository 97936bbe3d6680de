//! The CUDA engine (NVRTC through cudarc). Placeholder until the kernel lands:
//! it reports the device as unavailable, never panics.

use super::{EngineError, RenderOptions, Rendered};
use crate::physics::Simulation;

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

/// One line per visible GPU, or why there is none.
pub fn describe_devices() -> Result<Vec<String>, String> {
    probe_libraries()?;
    Err("CUDA engine not built in this version".into())
}

pub fn render(_sim: &Simulation, _ordinal: Option<usize>, _opts: &RenderOptions) -> Result<Rendered, EngineError> {
    probe_libraries().map_err(EngineError::Unavailable)?;
    Err(EngineError::Unavailable("CUDA engine not built in this version".into()))
}

/// The M2h.3 phi-cache arithmetic on the GPU: (loss, d loss / d cell_a, device).
pub fn phi_cache_probe(_cell: [f64; 6], _ordinal: Option<usize>) -> Result<(f64, f64, String), EngineError> {
    probe_libraries().map_err(EngineError::Unavailable)?;
    Err(EngineError::Unavailable("CUDA engine not built in this version".into()))
}
