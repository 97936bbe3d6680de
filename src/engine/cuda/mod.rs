//! The CUDA engine: the CPU engine's physics on the GPU through cudarc.
//!
//! The host builds the per-image `Model` exactly as the CPU engine does (in
//! f64, or in `DualSVec64<N>` for N forward-mode derivative directions),
//! flattens every model quantity as value + N derivative components, and
//! uploads it. The kernel (`kernel.cu`) evaluates only the per-pixel loop,
//! one thread per ROI pixel, with a small dual type and the same function
//! names as `physics::simulator`. Its output, one plane per value, comes
//! back piece by piece through pinned buffers while later pieces compute.
//!
//! By job:
//! - [`device`]: driver and NVRTC libraries, versions, GPUs and contexts,
//!   driver errors;
//! - [`compile`]: NVRTC compilation per [`KernelVariant`], the memory and
//!   disk PTX caches, loading the module on a GPU;
//! - [`interface`]: the host/kernel interface written once (`Params`, the
//!   model buffer's layout, shared constants), generated as the C header
//!   put before kernel.cu;
//! - [`inputs`]: the kernel's inputs built on the host (also for the host
//!   build of the kernel in tests/kernel_host.rs);
//! - [`image`]: rendering on one GPU or split by rows over all of them
//!   (`cuda:all`), the interpolation re-run;
//! - [`pipeline`]: one GPU's part of a render: buffers kept across renders,
//!   upload, launches in pieces, read-back overlapping the later pieces;
//! - [`readback`]: the planes copied back put into full-detector images;
//! - [`phi_cache`]: the phi-cache probe's host path.
//! - [`phases`]: host-side phase marks of a render (debug log).

pub mod compile;
pub mod device;
pub mod image;
pub mod inputs;
pub mod interface;
mod phases;
pub mod phi_cache;
pub mod pipeline;
pub mod readback;

pub use compile::{
    compile_kernel, nvrtc_options, prepare_kernel, ptx_cache_dir, KernelInfo, PtxSource,
};
pub use device::{describe_devices, device_count, probe_libraries, probe_nvrtc};
pub use image::{render, render_all, set_all_parts, set_max_launch_pixels};
pub use inputs::{host_kernel_inputs, HostKernelInputs};
pub use interface::{header, kernel_source, KernelVariant, KERNEL_SOURCE};
pub use phi_cache::{phi_cache_probe, PhiCacheSettings};
pub use pipeline::set_staging_bytes;
