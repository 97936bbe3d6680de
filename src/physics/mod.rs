//! The nanoBragg model, written once and generic over the scalar (f32, f64,
//! forward-mode dual numbers). Normative source: hoidn/nanoBragg
//! `specs/spec-a-core.md` and `golden_suite_generator/nanoBragg.c`.

pub mod budget;
pub mod cell;
pub mod config;
pub mod lattice;
pub mod params;
pub mod polarization;
pub mod rng;
pub mod rotation;
pub mod scalar;
pub mod setup;
pub mod simulator;
pub mod structure_factors;

use config::SimConfig;
use params::Param;
pub use setup::SetupError;
use setup::{detector_geometry, Setup};
use std::path::Path;
use structure_factors::HklGrid;

/// A configuration resolved and its input files loaded: ready to render.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub config: SimConfig,
    pub setup: Setup,
    pub hkl: Option<HklGrid>,
    pub mask: Option<Vec<u16>>,
}

/// Values for an SMV header and the summary (spec-a-core "SMV outputs").
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorHeader {
    pub pixel_mm: f64,
    pub distance_mm: f64,
    pub close_distance_mm: f64,
    pub wavelength_a: f64,
    pub xbeam_mm: f64,
    pub ybeam_mm: f64,
    pub fbeam_mm: f64,
    pub sbeam_mm: f64,
    pub detsize_s_mm: f64,
    pub orgx: f64,
    pub orgy: f64,
    pub dials_origin_mm: [f64; 3],
    pub phi0_deg: f64,
    pub osc_deg: f64,
    pub twotheta_deg: f64,
}

impl Simulation {
    /// Resolve `cfg`; relative file paths are taken from `base_dir`.
    pub fn prepare(cfg: &SimConfig, base_dir: &Path) -> Result<Simulation, SetupError> {
        let (setup, hkl, mask) = setup::resolve(cfg, base_dir)?;
        Ok(Simulation {
            config: cfg.clone(),
            setup,
            hkl,
            mask,
        })
    }
    pub fn fpixels(&self) -> usize {
        self.setup.fpixels
    }
    pub fn spixels(&self) -> usize {
        self.setup.spixels
    }
    pub fn roi(&self) -> [u32; 4] {
        self.setup.roi
    }
    pub fn notes(&self) -> &[String] {
        &self.setup.notes
    }
    /// Number of pixel-samples of a full render of the ROI (pixels x subpixels x
    /// sources x phi steps x mosaic domains).
    pub fn pixel_samples(&self, roi: [u32; 4]) -> f64 {
        let n = (roi[1] - roi[0] + 1) as f64 * (roi[3] - roi[2] + 1) as f64;
        n * self.setup.steps as f64 * self.setup.thicksteps as f64
    }
    /// The value of parameter `p` in its user units.
    pub fn base_value(&self, p: Param) -> Result<f64, SetupError> {
        if !self.setup.applicable[p as usize] {
            return Err(setup::invalid(
                "param",
                format!(
                    "'{p}' does not apply: the cell comes from a MOSFLM matrix, not crystal.cell"
                ),
            ));
        }
        Ok(self.setup.user[p as usize])
    }
    pub fn header(&self) -> DetectorHeader {
        let s = &self.setup;
        let g = detector_geometry::<f64>(s, &s.base_values());
        let pix0 = g.pix0.0;
        DetectorHeader {
            pixel_mm: s.pixel_size * 1000.0,
            distance_mm: g.distance * 1000.0,
            close_distance_mm: g.close_distance * 1000.0,
            wavelength_a: s.internal[Param::Wavelength as usize] * 1e10,
            xbeam_mm: s.xbeam * 1000.0,
            ybeam_mm: s.ybeam * 1000.0,
            fbeam_mm: g.fbeam * 1000.0,
            sbeam_mm: g.sbeam * 1000.0,
            detsize_s_mm: s.detsize_s * 1000.0,
            orgx: g.fclose / s.pixel_size + 0.5,
            orgy: g.sclose / s.pixel_size + 0.5,
            dials_origin_mm: [1000.0 * pix0[2], 1000.0 * pix0[1], -1000.0 * pix0[0]],
            phi0_deg: s.user[Param::PhiStart as usize],
            osc_deg: s.user[Param::OscRange as usize],
            twotheta_deg: s.user[Param::Twotheta as usize],
        }
    }
}
