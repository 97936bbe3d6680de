//! Engines that render a prepared [`Simulation`]: the CPU engine (rayon, generic
//! over the scalar) and the CUDA engine (NVRTC kernels). What both share (the
//! ROI and its pixels, the parameter values a render evaluates at, seeding
//! and reading back derivative directions) lives here, in [`roi`] and
//! [`values`], so that neither engine imports the other.

pub mod cpu;
pub mod cuda;
pub mod prepare;
pub mod roi;
pub mod split;
pub mod values;

use crate::physics::params::Param;
use crate::physics::Simulation;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Floating-point precision of a render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Dtype {
    /// Single precision (`float32`).
    #[serde(rename = "float32")]
    F32,
    /// Double precision (`float64`).
    #[serde(rename = "float64")]
    F64,
}

impl Dtype {
    /// The name in TOML, on the command line and in results: `float32` or `float64`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "float32" | "f32" => Ok(Dtype::F32),
            "float64" | "f64" => Ok(Dtype::F64),
            _ => Err(format!("unknown dtype '{s}'; valid: float32, float64")),
        }
    }
}

/// Where a render runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU engine (rayon threads).
    Cpu,
    /// `cuda` (any GPU; the scheduler picks) or `cuda:N`.
    Cuda(Option<usize>),
    /// `cuda:all`: one render split by rows over every visible GPU (the
    /// same pixels as on one GPU, bit for bit).
    CudaAll,
}

impl Device {
    /// Whether the render runs on the CUDA engine (`cuda`, `cuda:N`, `cuda:all`).
    pub fn is_cuda(self) -> bool {
        !matches!(self, Device::Cpu)
    }
    /// The one GPU a render is pinned to: `cuda:N`; None for `cpu`, `cuda`
    /// (the scheduler picks) and `cuda:all`.
    pub fn cuda_ordinal(self) -> Option<usize> {
        match self {
            Device::Cuda(n) => n,
            _ => None,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(None) => f.write_str("cuda"),
            Device::Cuda(Some(n)) => write!(f, "cuda:{n}"),
            Device::CudaAll => f.write_str("cuda:all"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(None)),
            "cuda:all" => Ok(Device::CudaAll),
            _ => {
                if let Some(n) = s.strip_prefix("cuda:") {
                    n.parse::<usize>()
                        .map(|n| Device::Cuda(Some(n)))
                        .map_err(|_| {
                            format!("bad device '{s}'; valid: cpu, cuda, cuda:N, cuda:all")
                        })
                } else {
                    Err(format!(
                        "unknown device '{s}'; valid: cpu, cuda, cuda:N, cuda:all"
                    ))
                }
            }
        }
    }
}

/// What to render.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Precision the render computes in.
    pub dtype: Dtype,
    /// Overrides the configuration's ROI: fast min, fast max, slow min, slow max (inclusive).
    pub roi: Option<[u32; 4]>,
    /// Parameters to differentiate by (forward mode, one direction each).
    pub derivatives: Vec<Param>,
    /// Offsets added to parameter values (finite differences).
    pub shifts: Vec<(Param, f64)>,
}

impl RenderOptions {
    /// A render of the configuration's ROI in `dtype`: no derivatives, no shifts.
    pub fn new(dtype: Dtype) -> Self {
        RenderOptions {
            dtype,
            roi: None,
            derivatives: vec![],
            shifts: vec![],
        }
    }
}

/// A rendered image and its derivative images, full detector size, fast
/// index innermost (index = slow * fpixels + fast); pixels outside the ROI
/// (or masked) are 0.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Detector width in pixels along the fast axis (C's fpixels).
    pub fpixels: usize,
    /// Detector height in pixels along the slow axis (C's spixels).
    pub spixels: usize,
    /// The rendered region: fast min, fast max, slow min, slow max (inclusive pixels).
    pub roi: [u32; 4],
    /// The image (photons per pixel, C's floatimage), same layout.
    pub image: Vec<f64>,
    /// d image / d parameter (in its user units) for each parameter asked for, same layout.
    pub derivatives: Vec<(Param, Vec<f64>)>,
    /// Which device rendered it, e.g. "cpu (2 threads)" or "cuda:0 NVIDIA H100".
    pub device: String,
    /// GPU time of the render's kernels (CUDA events around the launches:
    /// no host work, no transfers), seconds; None on the CPU.
    pub kernel_seconds: Option<f64>,
}

impl Rendered {
    /// A render of `sim`'s whole detector (its fpixels x spixels) that
    /// covers `roi`, as every engine returns it.
    pub fn new(
        sim: &Simulation,
        roi: [u32; 4],
        image: Vec<f64>,
        derivatives: Vec<(Param, Vec<f64>)>,
        device: String,
        kernel_seconds: Option<f64>,
    ) -> Rendered {
        Rendered {
            fpixels: sim.fpixels(),
            spixels: sim.spixels(),
            roi,
            image,
            derivatives,
            device,
            kernel_seconds,
        }
    }
    /// Sum over the ROI.
    pub fn roi_sum(&self) -> f64 {
        self.roi_values(&self.image).iter().sum()
    }
    /// The values inside the ROI, slow outer, fast inner.
    pub fn roi_values(&self, img: &[f64]) -> Vec<f64> {
        let [f0, f1, s0, s1] = self.roi;
        let mut out = Vec::new();
        for s in s0..=s1 {
            for f in f0..=f1 {
                out.push(img[s as usize * self.fpixels + f as usize]);
            }
        }
        out
    }
    /// The derivative image for `p`; None when `p` was not asked for.
    pub fn derivative(&self, p: Param) -> Option<&[f64]> {
        self.derivatives
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, d)| d.as_slice())
    }
    /// One image-sized buffer as an array of [slow, fast] (no copy).
    fn plane<'a>(&self, values: &'a [f64]) -> ndarray::ArrayView2<'a, f64> {
        ndarray::ArrayView2::from_shape((self.spixels, self.fpixels), values)
            .expect("an image buffer holds spixels x fpixels values")
    }
    /// The image as an array of [slow, fast] (no copy).
    pub fn image_view(&self) -> ndarray::ArrayView2<'_, f64> {
        self.plane(&self.image)
    }
    /// The derivative image d image / d `p` as an array of [slow, fast]
    /// (no copy), None when `p` was not differentiated.
    pub fn derivative_view(&self, p: Param) -> Option<ndarray::ArrayView2<'_, f64>> {
        self.derivative(p).map(|d| self.plane(d))
    }
    /// Every derivative image as one stack [parameter, slow, fast], in the
    /// order of the returned parameters (the order they were requested).
    pub fn derivative_stack(&self) -> (Vec<Param>, ndarray::Array3<f64>) {
        let params: Vec<Param> = self.derivatives.iter().map(|(p, _)| *p).collect();
        let mut stack = ndarray::Array3::zeros((params.len(), self.spixels, self.fpixels));
        for (mut out, (_, d)) in stack.outer_iter_mut().zip(&self.derivatives) {
            out.assign(&self.plane(d));
        }
        (params, stack)
    }
}

/// Why a render did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The device is not present (no driver, no GPU, ordinal out of range).
    #[error("device unavailable: {0}")]
    Unavailable(String),
    /// The render was attempted and failed (compile error, out of memory, bad input).
    #[error("{0}")]
    Failed(String),
}

/// Render on the given device.
pub fn render(
    sim: &Simulation,
    device: Device,
    opts: &RenderOptions,
) -> Result<Rendered, EngineError> {
    match device {
        Device::Cpu => cpu::render(sim, opts),
        Device::Cuda(ordinal) => cuda::render(sim, ordinal, opts),
        Device::CudaAll => cuda::render_all(sim, opts),
    }
}
