//! Observed images: a nanoBragg float file, an SMV image, a `.npy` array, or
//! a synthetic image rendered at the configured (true) parameters, with
//! optional Poisson noise.

use super::RefineError;
use crate::engine::roi::roi_pixels;
use crate::engine::{render, Device, Dtype, RenderOptions};
use crate::physics::rng::Poisson;
use crate::physics::Simulation;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the observed image comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ObservedSource {
    /// Raw little-endian float32 pixels (nanoBragg `-floatfile`), fast index
    /// innermost; the detector size comes from the configuration.
    FloatFile {
        /// The file; a relative path is taken from the `base_dir` given to
        /// [`load_observed`].
        path: PathBuf,
    },
    /// An SMV image (nanoBragg `-intfile`/`-noisefile`): the pixels less
    /// `adc` (nanoBragg's `-adc`, 40 unless given).
    Smv {
        /// The file; a relative path is taken from the `base_dir` given to
        /// [`load_observed`].
        path: PathBuf,
        /// ADC offset subtracted from every pixel (default 40).
        #[serde(default = "default_adc")]
        adc: f64,
    },
    /// A NumPy array of shape (spixels, fpixels), float64 or float32
    /// (read by [`crate::io::npy`]).
    Npy {
        /// The file; a relative path is taken from the `base_dir` given to
        /// [`load_observed`].
        path: PathBuf,
    },
    /// Rendered at the configured parameters (float64 on the fit's device),
    /// times the scale; with `noise_seed`, each pixel of the region is a
    /// Poisson deviate about that (nanoBragg's `poidev`, seeded as C seeds
    /// it, drawn in C's pixel order).
    Synthetic {
        /// Seed of nanoBragg's Poisson generator; noise-free when None.
        #[serde(default)]
        noise_seed: Option<i64>,
    },
}

fn default_adc() -> f64 {
    40.0
}

/// An observed image source and its relation to the engine's intensities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedSpec {
    /// Where the image comes from.
    pub source: ObservedSource,
    /// Observed counts = scale x the engine's pixel intensity (the model is
    /// multiplied by it; a synthetic image is rendered with it).
    #[serde(default = "one")]
    pub scale: f64,
    /// Whether the configured parameter values are the truth (always for a
    /// synthetic image; for a file, e.g. an image nanoBragg made from the
    /// same configuration).
    #[serde(default)]
    pub truth_is_config: bool,
}

fn one() -> f64 {
    1.0
}

impl ObservedSpec {
    /// An image from `source` with scale 1, the configured values not taken
    /// as the truth (a synthetic image's still are).
    pub fn new(source: ObservedSource) -> Self {
        ObservedSpec {
            source,
            scale: 1.0,
            truth_is_config: false,
        }
    }
}

/// An observed image ready to fit.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Whole detector, fast index innermost.
    pub image: Vec<f64>,
    /// Detector width in pixels along the fast axis.
    pub fpixels: usize,
    /// Detector height in pixels along the slow axis.
    pub spixels: usize,
    /// Observed = scale x engine intensity.
    pub scale: f64,
    /// The configured values are the truth.
    pub truth_known: bool,
    /// What it is, e.g. "float file x.bin" or "synthetic (Poisson seed 3)".
    pub description: String,
}

/// Load (or render) the observed image for `sim`. A synthetic image is
/// rendered over `roi` (the configuration's when None) on `device` in
/// float64; pixels outside it are 0.
pub fn load_observed(
    sim: &Simulation,
    spec: &ObservedSpec,
    base_dir: &Path,
    device: Device,
    roi: Option<[u32; 4]>,
) -> Result<Observed, RefineError> {
    let (fp, sp) = (sim.fpixels(), sim.spixels());
    if !(spec.scale.is_finite() && spec.scale > 0.0) {
        return Err(RefineError::Invalid(format!(
            "observed.scale must be a positive number, not {}",
            spec.scale
        )));
    }
    let path_of = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };
    let size_err = |path: &Path, what: String| {
        RefineError::Invalid(format!(
            "{}: {what}, the detector is {fp} x {sp} (fast x slow)",
            path.display()
        ))
    };
    let (image, description) = match &spec.source {
        ObservedSource::FloatFile { path } => {
            let p = path_of(path);
            let v = crate::io::float_image::read_float_image(&p, Some(fp * sp))?;
            (
                v.into_iter().map(f64::from).collect(),
                format!("float file {}", path.display()),
            )
        }
        ObservedSource::Smv { path, adc } => {
            let p = path_of(path);
            let img = crate::io::smv::read_smv(&p)?;
            if img.fpixels != fp || img.spixels != sp {
                return Err(size_err(
                    &p,
                    format!("SMV image is {} x {}", img.fpixels, img.spixels),
                ));
            }
            (
                img.data.iter().map(|&v| v as f64 - adc).collect(),
                format!("SMV image {} less adc {adc}", path.display()),
            )
        }
        ObservedSource::Npy { path } => {
            let p = path_of(path);
            // A 2-D array (slow, fast) of float64, or of float32 widened.
            let a: ndarray::Array2<f64> = match crate::io::npy::read_image::<f64>(&p) {
                Ok(a) => a,
                Err(e64) => match crate::io::npy::read_image::<f32>(&p) {
                    Ok(a) => a.mapv(f64::from),
                    Err(_) => return Err(e64.into()),
                },
            };
            if a.dim() != (sp, fp) {
                return Err(size_err(
                    &p,
                    format!(".npy array has shape {:?}", a.shape()),
                ));
            }
            (
                a.iter().copied().collect(),
                format!(".npy array {}", path.display()),
            )
        }
        ObservedSource::Synthetic { noise_seed } => {
            let mut opts = RenderOptions::new(Dtype::F64);
            opts.roi = roi;
            let r = render(sim, device, &opts)?;
            let mut img: Vec<f64> = r.image.iter().map(|v| v * spec.scale).collect();
            let d = match noise_seed {
                None => format!("synthetic x {} (noise-free)", spec.scale),
                Some(seed) => {
                    let mut rng = Poisson::new(*seed);
                    for (f, s) in roi_pixels(sim, r.roi) {
                        let i = s * fp + f;
                        img[i] = rng.poidev(img[i] as f32) as f64;
                    }
                    format!(
                        "synthetic x {} with Poisson noise (seed {seed})",
                        spec.scale
                    )
                }
            };
            (img, d)
        }
    };
    if let Some(i) = image.iter().position(|v| !v.is_finite()) {
        return Err(RefineError::Invalid(format!(
            "observed pixel {i} (fast {}, slow {}) is {}",
            i % fp,
            i / fp,
            image[i]
        )));
    }
    Ok(Observed {
        image,
        fpixels: fp,
        spixels: sp,
        scale: spec.scale,
        truth_known: spec.truth_is_config
            || matches!(spec.source, ObservedSource::Synthetic { .. }),
        description,
    })
}
