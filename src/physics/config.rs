//! The simulator configuration: what a user states, in the units of
//! nanoBragg's command line (Å, degrees, mm, µm, mrad), grouped the way DIALS
//! models an experiment (crystal, beam, detector, goniometer). `None` means
//! "not given": nanoBragg's auto-selection rules then apply
//! (spec-a-core "Auto-selection rules", resolved per model in `models/`).
//!
//! These types are the contract shared by the `nanobragg` command line, the
//! experiment TOML (`[model]`), the CPU engine and the CUDA engine.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A complete simulation setup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// The crystal: cell or matrix, misset, N, shape, mosaicity, structure factors.
    pub crystal: CrystalConfig,
    /// The beam: wavelength, fluence, polarization, divergence, dispersion, sources.
    pub beam: BeamConfig,
    /// The detector: pixels, distance, beam centre, convention, rotations, sensor, sampling.
    pub detector: DetectorConfig,
    /// The goniometer: phi start, oscillation, steps and spindle axis.
    pub goniometer: GoniometerConfig,
    /// How a phi step with angle exactly 0 is treated: `spec` rotates by 0, `c-parity`
    /// reuses the previous rotation as nanoBragg.c does (README, "Phi carryover";
    /// github.com/hoidn/nanoBragg docs/bugs/c-parity-001.md).
    pub phi_carryover: PhiCarryover,
    /// Noise seed (`-seed N`; C uses -N internally). Absent: wall-clock time, as C.
    pub seed: Option<i64>,
}

/// Phi-carryover semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PhiCarryover {
    /// Physically correct: a phi = 0 step uses the unrotated crystal.
    #[default]
    Spec,
    /// nanoBragg.c's single-thread behaviour: a phi = 0 step reuses the most
    /// recent rotation in loop order.
    CParity,
}

/// Lattice transform of the crystal shape (spec-a-core "Lattice factor").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum LatticeShape {
    /// Parallelepiped: product of sincg (`-square_xtal`, default).
    #[default]
    Square,
    /// Sphere: sinc3 (`-round_xtal`).
    Round,
    /// Gaussian in reciprocal space (`-gauss_xtal`).
    Gauss,
    /// Flat-topped spot (`-tophat_spots`).
    Tophat,
}

/// The crystal as the user states it (Å, deg, mm; spec-a-core "Crystal").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CrystalConfig {
    /// Unit cell a, b, c (Å), alpha, beta, gamma (deg) (`-cell`).
    pub cell: Option<[f64; 6]>,
    /// MOSFLM A matrix file: three reciprocal vectors in Å^-1 scaled by 1/λ (`-mat`).
    pub mosflm_matrix: Option<PathBuf>,
    /// Misset rotations about lab X, Y, Z (deg), applied to the reciprocal cell (`-misset`).
    pub misset_deg: Option<[f64; 3]>,
    /// Random misset from the misset seed (`-misset random`).
    pub misset_random: bool,
    /// Seed of the random misset (`-misset_seed N`); default: the noise seed.
    pub misset_seed: Option<i64>,
    /// Unit cells along a, b, c (`-N`, `-Na`, `-Nb`, `-Nc`). Real-valued so
    /// that derivatives exist; C truncates its flags to integers.
    pub n_cells: [f64; 3],
    /// Crystal size along a, b, c (mm); sets N = ceil(size/|a|) (`-xtalsize`, `-xtal_x/y/z`).
    pub size_mm: Option<[f64; 3]>,
    /// Lattice transform of the crystal shape, C's xtal_shape (`-square_xtal`, `-round_xtal`, ...).
    pub shape: LatticeShape,
    /// Scale of the spot-shape radius (`-fudge`).
    pub fudge: f64,
    /// Mosaic spread (deg) (`-mosaic`).
    pub mosaic_spread_deg: Option<f64>,
    /// Number of mosaic domains (`-mosaic_dom`).
    pub mosaic_domains: Option<i64>,
    /// Mosaic seed as the user writes it (`-mosaic_seed N`; C uses -N).
    pub mosaic_seed: i64,
    /// Structure factor for every reflection not in the HKL file (`-default_F`).
    pub default_f: f64,
    /// HKL text file (`-hkl`).
    pub hkl_file: Option<PathBuf>,
    /// Tricubic interpolation of F (`-interpolate`/`-nointerpolate`); absent: on when any N <= 2.
    pub interpolate: Option<bool>,
}

impl Default for CrystalConfig {
    fn default() -> Self {
        CrystalConfig {
            cell: None,
            mosflm_matrix: None,
            misset_deg: None,
            misset_random: false,
            misset_seed: None,
            n_cells: [1.0, 1.0, 1.0],
            size_mm: None,
            shape: LatticeShape::Square,
            fudge: 1.0,
            mosaic_spread_deg: None,
            mosaic_domains: None,
            mosaic_seed: 12345678,
            default_f: 0.0,
            hkl_file: None,
            interpolate: None,
        }
    }
}

/// The beam as the user states it (Å, eV, mm, mrad, percent, µm; spec-a-core
/// "Sources, Divergence & Dispersion").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BeamConfig {
    /// Central wavelength (Å) (`-lambda`).
    pub wavelength_a: f64,
    /// Photon energy (eV); overrides the wavelength (`-energy`).
    pub energy_ev: Option<f64>,
    /// Fluence (photons/m^2) (`-fluence`); default nanoBragg's 1.259e29.
    pub fluence: Option<f64>,
    /// Flux (photons/s) (`-flux`); with exposure and beam size gives the fluence.
    pub flux: f64,
    /// Exposure (s) (`-exposure`).
    pub exposure: f64,
    /// Beam size (mm) (`-beamsize`).
    pub beamsize_mm: f64,
    /// Kahn polarization factor K (`-polar`).
    pub polarization: f64,
    /// Disable the polarization correction (`-nopolar`).
    pub nopolar: bool,
    /// Horizontal divergence range (mrad) (`-hdivrange`, `-divergence`).
    pub hdivrange_mrad: Option<f64>,
    /// Horizontal divergence step (mrad) (`-hdivstep`).
    pub hdivstep_mrad: Option<f64>,
    /// Horizontal divergence steps (`-hdivsteps`).
    pub hdivsteps: Option<i64>,
    /// Vertical divergence range (mrad) (`-vdivrange`, `-divergence`).
    pub vdivrange_mrad: Option<f64>,
    /// Vertical divergence step (mrad) (`-vdivstep`).
    pub vdivstep_mrad: Option<f64>,
    /// Vertical divergence steps (`-vdivsteps`).
    pub vdivsteps: Option<i64>,
    /// Spectral dispersion (percent) (`-dispersion`).
    pub dispersion_pct: Option<f64>,
    /// Step of the dispersion (percent) (no C flag; completes the auto-selection rule).
    pub dispstep_pct: Option<f64>,
    /// Wavelengths sampled across the dispersion (`-dispsteps`).
    pub dispsteps: Option<i64>,
    /// Trim the divergence grid to an ellipse (`-round_div`, default; `-square_div` turns it off).
    pub round_div: bool,
    /// Source file: X Y Z weight lambda per line (`-sourcefile`).
    pub source_file: Option<PathBuf>,
    /// Beam direction: propagation, from the source through the sample (`-beam_vector`).
    pub beam_vector: Option<[f64; 3]>,
    /// E-vector of the incident beam (`-polar_vector`).
    pub polar_vector: Option<[f64; 3]>,
    /// Water background thickness (µm) (`-water`).
    pub water_um: f64,
    /// d-min cutoff (Å) (`-dmin`); 0 = none.
    pub dmin_a: f64,
}

impl Default for BeamConfig {
    fn default() -> Self {
        BeamConfig {
            wavelength_a: 1.0,
            energy_ev: None,
            fluence: None,
            flux: 0.0,
            exposure: 1.0,
            beamsize_mm: 0.1,
            polarization: 0.0,
            nopolar: false,
            hdivrange_mrad: None,
            hdivstep_mrad: None,
            hdivsteps: None,
            vdivrange_mrad: None,
            vdivstep_mrad: None,
            vdivsteps: None,
            dispersion_pct: None,
            dispstep_pct: None,
            dispsteps: None,
            round_div: true,
            source_file: None,
            beam_vector: None,
            polar_vector: None,
            water_um: 0.0,
            dmin_a: 0.0,
        }
    }
}

/// Detector and beam axis conventions (spec-a-core "Conventions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// ADXV: beam +Z, fast +X, slow -Y; beam pivot (`-adxv`).
    Adxv,
    /// MOSFLM (default): beam +X, fast +Z, slow -Y; beam pivot; Fbeam = Ybeam + pixel/2 (`-mosflm`).
    #[default]
    Mosflm,
    /// DENZO: MOSFLM's axes without the half-pixel beam-centre shift; beam pivot (`-denzo`).
    Denzo,
    /// XDS: beam +Z, fast +X, slow +Y; sample pivot, near point from ORGX/ORGY (`-xds`).
    Xds,
    /// DIALS: beam +Z, fast +X, slow +Y, spindle +Y; sample pivot (`-dials`).
    Dials,
    /// CUSTOM: the user's vectors (from MOSFLM's, two-theta about +Y); pivot as given or chosen.
    Custom,
}

/// The point the detector rotates about (C's detector_pivot, `-pivot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pivot {
    /// About the beam centre: the direct beam keeps hitting (Fbeam, Sbeam).
    Beam,
    /// About the sample: the detector origin pix0_vector turns with the detector.
    Sample,
}

/// The detector as the user states it (mm, deg, µm, pixels; spec-a-core "Geometry & Conventions").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Axis convention: default axes, beam-centre mapping and pivot (`-mosflm`, `-xds`, ...).
    pub convention: Convention,
    /// Pivot; only honoured for CUSTOM (nanoBragg.c's conventions fix it).
    pub pivot: Option<Pivot>,
    /// Pixel size (mm) (`-pixel`).
    pub pixel_size_mm: f64,
    /// Pixels along fast (`-detpixels_f`, `-detpixels`).
    pub fpixels: Option<u32>,
    /// Pixels along slow (`-detpixels_s`, `-detpixels`).
    pub spixels: Option<u32>,
    /// Detector size along fast (mm) when no pixel count is given (`-detsize_f`, `-detsize`).
    pub detsize_f_mm: f64,
    /// Detector size along slow (mm) when no pixel count is given (`-detsize_s`, `-detsize`).
    pub detsize_s_mm: f64,
    /// Sample to beam-centre distance (mm) (`-distance`).
    pub distance_mm: f64,
    /// Sample to detector plane along its normal (mm) (`-close_distance`).
    pub close_distance_mm: Option<f64>,
    /// Direct beam position X in the convention's frame (mm) (`-Xbeam`).
    pub xbeam_mm: Option<f64>,
    /// Direct beam position Y in the convention's frame (mm) (`-Ybeam`).
    pub ybeam_mm: Option<f64>,
    /// Near point X (mm) (`-Xclose`).
    pub xclose_mm: Option<f64>,
    /// Near point Y (mm) (`-Yclose`).
    pub yclose_mm: Option<f64>,
    /// XDS origin along fast (pixels) (`-ORGX`).
    pub orgx: Option<f64>,
    /// XDS origin along slow (pixels) (`-ORGY`).
    pub orgy: Option<f64>,
    /// Rotations about lab X, Y, Z (deg) (`-detector_rotx/y/z`).
    pub rot_deg: [f64; 3],
    /// Two-theta swing (deg) (`-twotheta`).
    pub twotheta_deg: f64,
    /// Two-theta rotation axis (`-twotheta_axis`); default per convention.
    pub twotheta_axis: Option<[f64; 3]>,
    /// Fast axis replacing the convention's (`-fdet_vector`).
    pub fdet_vector: Option<[f64; 3]>,
    /// Slow axis replacing the convention's (`-sdet_vector`).
    pub sdet_vector: Option<[f64; 3]>,
    /// Detector normal (`-odet_vector`); regenerated as fdet x sdet when not of unit length.
    pub odet_vector: Option<[f64; 3]>,
    /// Solid angle 1/R^2 only (`-point_pixel`).
    pub point_pixel: bool,
    /// Spherical detector (`-curved_det`).
    pub curved: bool,
    /// Sensor thickness (µm) (`-detector_thick`).
    pub thickness_um: f64,
    /// Layers through the sensor (`-detector_thicksteps`).
    pub thicksteps: Option<i64>,
    /// Attenuation depth (µm) (`-detector_abs`); absent or 0: none.
    pub attenuation_depth_um: Option<f64>,
    /// Subpixels per pixel side (`-oversample`); absent: C's recommended value.
    pub oversample: Option<i64>,
    /// Sensor absorption per subpixel rather than per pixel (`-oversample_thick`).
    pub oversample_thick: bool,
    /// Polarization factor per subpixel rather than per pixel (`-oversample_polar`).
    pub oversample_polar: bool,
    /// Solid angle per subpixel rather than per pixel (`-oversample_omega`).
    pub oversample_omega: bool,
    /// Region of interest: fast min, fast max, slow min, slow max, inclusive (`-roi`).
    pub roi: Option<[u32; 4]>,
    /// SMV mask file: pixels with value 0 are skipped (`-mask`).
    pub mask_file: Option<PathBuf>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            convention: Convention::Mosflm,
            pivot: None,
            pixel_size_mm: 0.1,
            fpixels: None,
            spixels: None,
            detsize_f_mm: 102.4,
            detsize_s_mm: 102.4,
            distance_mm: 100.0,
            close_distance_mm: None,
            xbeam_mm: None,
            ybeam_mm: None,
            xclose_mm: None,
            yclose_mm: None,
            orgx: None,
            orgy: None,
            rot_deg: [0.0; 3],
            twotheta_deg: 0.0,
            twotheta_axis: None,
            fdet_vector: None,
            sdet_vector: None,
            odet_vector: None,
            point_pixel: false,
            curved: false,
            thickness_um: 0.0,
            thicksteps: None,
            attenuation_depth_um: None,
            oversample: None,
            oversample_thick: false,
            oversample_polar: false,
            oversample_omega: false,
            roi: None,
            mask_file: None,
        }
    }
}

/// The goniometer as the user states it (deg): the phi scan and the spindle axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GoniometerConfig {
    /// Start angle (deg) (`-phi`).
    pub phi_start_deg: f64,
    /// Oscillation range (deg) (`-osc`).
    pub osc_deg: Option<f64>,
    /// Step (deg) (`-phistep`).
    pub phistep_deg: Option<f64>,
    /// Steps (`-phisteps`).
    pub phisteps: Option<i64>,
    /// Rotation axis (`-spindle_axis`); default per convention.
    pub spindle_axis: Option<[f64; 3]>,
}
