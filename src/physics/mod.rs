//! The nanoBragg model, written once and generic over the scalar (f32, f64,
//! forward-mode dual numbers). Normative source: hoidn/nanoBragg
//! `specs/spec-a-core.md` and `golden_suite_generator/nanoBragg.c`.
//!
//! The model reads no files: a [`Simulation`] is made from a configuration
//! and the contents of the files it names ([`Simulation::from_inputs`] with
//! [`inputs::Inputs`]); `engine::prepare` reads them (`Simulation::prepare`).

pub mod budget;
pub mod cell;
pub mod config;
pub mod error;
pub mod inputs;
pub mod lanes;
pub mod lattice;
pub mod models;
pub mod params;
pub mod polarization;
pub mod rng;
pub mod rotation;
pub mod scalar;
pub mod setup;
pub mod simulator;
pub mod structure_factors;

use config::SimConfig;
pub use error::SetupError;
use inputs::Inputs;
use params::Param;
use setup::{detector_geometry, Setup};
use structure_factors::HklGrid;

/// A configuration resolved and its input files loaded: ready to render.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// The configuration as the user gave it.
    pub config: SimConfig,
    /// The resolved setup the engines read.
    pub setup: Setup,
    /// Structure factors on the HKL grid, when an HKL file is given.
    pub hkl: Option<HklGrid>,
    /// Detector mask, fpixels x spixels, fast innermost (0 = skip the pixel), when given.
    pub mask: Option<Vec<u16>>,
}

/// Values for an SMV header and the summary (spec-a-core "SMV outputs").
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorHeader {
    /// Pixel size (mm); SMV PIXEL_SIZE.
    pub pixel_mm: f64,
    /// Sample to beam centre along the beam (mm), C's distance; SMV DISTANCE.
    pub distance_mm: f64,
    /// Sample to the detector plane along its normal (mm), C's close_distance; SMV CLOSE_DISTANCE.
    pub close_distance_mm: f64,
    /// Central wavelength (Å); SMV WAVELENGTH.
    pub wavelength_a: f64,
    /// Beam centre X in the convention's frame (mm), C's Xbeam; SMV BEAM_CENTER_X.
    pub xbeam_mm: f64,
    /// Beam centre Y in the convention's frame (mm), C's Ybeam; SMV BEAM_CENTER_Y.
    pub ybeam_mm: f64,
    /// Beam centre along the fast axis (mm), C's Fbeam (ADXV, MOSFLM and DENZO centres).
    pub fbeam_mm: f64,
    /// Beam centre along the slow axis (mm), C's Sbeam (ADXV, MOSFLM and DENZO centres).
    pub sbeam_mm: f64,
    /// Detector size along the slow axis (mm), C's detsize_s (for ADXV_CENTER_Y).
    pub detsize_s_mm: f64,
    /// Near point along fast in pixels, Fclose / pixel + 0.5; SMV XDS_ORGX.
    pub orgx: f64,
    /// Near point along slow in pixels, Sclose / pixel + 0.5; SMV XDS_ORGY.
    pub orgy: f64,
    /// pix0_vector in DIALS's frame (mm): lab (z, y, -x); SMV DIALS_ORIGIN.
    pub dials_origin_mm: [f64; 3],
    /// Phi start (deg); SMV PHI and OSC_START.
    pub phi0_deg: f64,
    /// Oscillation range (deg); SMV OSC_RANGE.
    pub osc_deg: f64,
    /// Detector two-theta (deg); SMV TWOTHETA.
    pub twotheta_deg: f64,
}

impl Simulation {
    /// Resolve `cfg` with the contents of the files it names.
    pub fn from_inputs(cfg: &SimConfig, inputs: Inputs) -> Result<Simulation, SetupError> {
        let (setup, hkl, mask) = setup::resolve(cfg, inputs)?;
        Ok(Simulation {
            config: cfg.clone(),
            setup,
            hkl,
            mask,
        })
    }
    /// Detector width in pixels along the fast axis (C's fpixels).
    pub fn fpixels(&self) -> usize {
        self.setup.fpixels
    }
    /// Detector height in pixels along the slow axis (C's spixels).
    pub fn spixels(&self) -> usize {
        self.setup.spixels
    }
    /// Region of interest: fast min, fast max, slow min, slow max (inclusive pixels).
    pub fn roi(&self) -> [u32; 4] {
        self.setup.roi
    }
    /// Notes from resolving the configuration (defaults chosen, vectors regenerated).
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
            return Err(error::invalid(
                "param",
                format!(
                    "'{p}' does not apply: the cell comes from a MOSFLM matrix, not crystal.cell"
                ),
            ));
        }
        Ok(self.setup.user[p as usize])
    }
    /// What one render of this prepared simulation allocates (budget::render_need
    /// from its resolved sizes), in float32 or float64 with `dirs` derivatives.
    pub fn render_need(&self, f32: bool, dirs: usize) -> budget::Need {
        let (s, r) = (&self.setup, self.roi());
        budget::render_need(
            self.fpixels() as u64,
            self.spixels() as u64,
            (r[1] - r[0] + 1) as u64 * (r[3] - r[2] + 1) as u64,
            s.sources.len() as u64,
            s.phisteps as u64,
            s.mosaic_deviates.len() as u64,
            self.hkl.as_ref().map(|h| h.data.len() as u64).unwrap_or(0),
            self.mask.is_some(),
            f32,
            dirs,
        )
    }

    /// The parameters that apply here (every one but the cell's with a MOSFLM
    /// matrix), in [`Param::ALL`] order.
    pub fn applicable_params(&self) -> Vec<Param> {
        Param::ALL
            .iter()
            .copied()
            .filter(|p| self.setup.applicable[*p as usize])
            .collect()
    }

    /// Whether `p`'s value sits on the edge of its domain, where the model
    /// clamps (spec-a-core: N < 1 is taken as 1; a mosaic spread of 0 means
    /// one domain). Derivatives there are one-sided, into the valid domain.
    pub fn domain_edge(&self, p: Param) -> Option<String> {
        let v = self.setup.user[p as usize];
        match p {
            Param::NA | Param::NB | Param::NC if v <= 1.0 => Some(format!(
                "{p} = {v} is the lower edge of its domain (N < 1 is taken as 1): \
                 the derivative is one-sided, into {p} > 1"
            )),
            Param::MosaicSpread if v == 0.0 && self.setup.mosaic_deviates_edge.len() > 1 => {
                Some(format!(
                    "mosaic_spread = 0 is the lower edge of its domain (one domain at 0): \
                     the derivative is one-sided, into spread > 0 with {} domains",
                    self.setup.mosaic_deviates_edge.len()
                ))
            }
            _ => None,
        }
    }

    /// Features of this configuration that make the image a non-smooth
    /// function of `p` within `h` of its value (kinks, jumps, flat pieces):
    /// why a derivative check can see left and right differences disagree.
    pub fn nonsmooth_features(&self, p: Param, h: f64) -> Vec<String> {
        use config::{LatticeShape, PhiCarryover};
        let s = &self.setup;
        let mut out = vec![];
        let intensity_only = matches!(p, Param::Fluence | Param::Polarization | Param::DefaultF);
        if s.carryover == PhiCarryover::CParity
            && matches!(p, Param::PhiStart | Param::OscRange)
            && s.phisteps > 1
        {
            let shifted_zero = |d: f64| {
                let mut pv = s.base_values();
                pv.set(p, pv.get(p) + d);
                simulator::phi_zero_at(s, &pv)
            };
            if shifted_zero(h) != s.phi_zero || shifted_zero(-h) != s.phi_zero {
                out.push(
                    "c-parity phi carryover: a phi step is exactly 0 here and C skips its \
                     rotation, so the image jumps when the step moves off 0"
                        .to_string(),
                );
            }
        }
        if s.shape == LatticeShape::Tophat && !intensity_only {
            out.push(
                "TOPHAT lattice factor: piecewise constant (zero derivative inside the cap, \
                 a jump at its edge)"
                    .to_string(),
            );
        }
        if s.oversample_auto && !intensity_only {
            let rec = |d: f64| {
                let mut pv = s.base_values();
                pv.set(p, pv.get(p) + d);
                setup::recommended_oversample(s, &pv)
            };
            let (lo, hi) = (rec(-h), rec(h));
            let here = s.oversample as i64;
            if lo != hi || lo != here {
                out.push(format!(
                    "automatic oversampling: {here} subpixels here, {lo} at -{h:e} and {hi} at \
                     +{h:e} (a jump; set detector.oversample to fix it)"
                ));
            }
        }
        if s.dmin > 0.0 && !intensity_only {
            out.push("d-min cut: samples beyond the resolution limit are dropped (a jump)".into());
        }
        if self.hkl.is_some() && !intensity_only && !s.interpolate {
            out.push(
                "nearest-neighbour structure factors: F jumps where h, k or l crosses a \
                 half-integer"
                    .into(),
            );
        }
        if self.hkl.is_some() && s.interpolate && !intensity_only {
            out.push(
                "tricubic interpolation of F: a new neighbourhood (a kink) at whole h, k, l, \
                 and nearest lookup once an index leaves the grid"
                    .into(),
            );
        }
        if matches!(s.shape, LatticeShape::Round | LatticeShape::Gauss) && !intensity_only {
            // smooth except through nearest(h): kinks half way between reflections
            out.push(format!(
                "{:?} lattice factor uses the nearest reflection: a kink half way between \
                 reflections",
                s.shape
            ));
        }
        out
    }

    /// The values of the SMV header and the summary, at the base parameter values.
    pub fn header(&self) -> DetectorHeader {
        let s = &self.setup;
        let g = detector_geometry::<f64>(s, &s.base_values());
        let pix0 = g.pix0.0;
        DetectorHeader {
            pixel_mm: s.pixel_size * 1000.0,
            distance_mm: g.distance * 1000.0,
            close_distance_mm: g.close_distance * 1000.0,
            wavelength_a: s.internal[Param::Wavelength as usize] * 1e10,
            xbeam_mm: s.centre.xbeam * 1000.0,
            ybeam_mm: s.centre.ybeam * 1000.0,
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
