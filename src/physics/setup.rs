//! Resolving a [`SimConfig`] the way nanoBragg.c does before its pixel loop,
//! one model at a time (`models/`: detector, beam, goniometer, scan,
//! crystal, sampling; spec-a-core "Auto-selection rules", "Geometry &
//! Conventions", "Sources, Divergence & Dispersion"), then flattened into
//! the [`Setup`] the engines read.
//!
//! Everything discrete is decided here, once, from the base parameter values;
//! the continuous values that can carry derivatives are kept as
//! (C's exact internal value, user value, d internal / d user) triples so a
//! dual or shifted parameter reproduces C's numbers bit for bit at the base
//! point and moves smoothly around it.
//!
//! Nothing here reads a file: the files' contents come in [`Inputs`].

use super::budget::{num, RenderBudget};
use super::cell::{edge_lengths, finish_cell, reciprocal_from_cell};
use super::config::*;
use super::inputs::Inputs;
use super::models::beam::Beam;
use super::models::crystal::Crystal;
use super::models::detector::Detector;
use super::models::goniometer::Goniometer;
use super::models::sampling::Thickness;
use super::models::scan::Scan;
use super::models::{beam, convention, crystal, detector, goniometer, sampling, scan};
use super::params::{Param, ParamValues};
use super::rng::UmatDeviates;
use super::scalar::{c, Real, Vec3, RTD};
use super::structure_factors::HklGrid;

pub(crate) use super::error::invalid;
pub use super::error::SetupError;
pub use super::models::beam::{Source, DEFAULT_FLUENCE};
pub use super::models::crystal::CellSource;

/// Thomson cross section r_e^2 (m^2).
pub const R_E_SQR: f64 = 7.94079248018965e-30;
const AVOGADRO: f64 = 6.02214179e23;

/// Everything resolved, flat, as the engines read it; see the module doc.
/// The detector's fields (pixels, ROI, axes before rotations, beam centre,
/// pivot) are the resolved [`Detector`] model's, read through it (`Deref`).
#[derive(Clone, Debug)]
pub struct Setup {
    /// The resolved detector: pixels, ROI, distance, beam centre, axes and
    /// pivot (lengths in metres, angles as the user gave them).
    pub detector: Detector,
    /// Beam propagation direction, from the source through the sample (unit), C's beam_vector.
    pub beam: [f64; 3],
    /// Incident E-vector (unit), C's polar_vector.
    pub polar: [f64; 3],
    /// Phi rotation axis (unit), C's spindle_vector.
    pub spindle: [f64; 3],
    /// Subpixels per pixel side, C's oversample.
    pub oversample: usize,
    /// The oversampling was C's recommendation (no `detector.oversample`).
    pub oversample_auto: bool,
    /// Sensor absorption per subpixel rather than per pixel (C's oversample_thick).
    pub oversample_thick: bool,
    /// Polarization factor per subpixel rather than per pixel (C's oversample_polar).
    pub oversample_polar: bool,
    /// Solid angle per subpixel rather than per pixel (C's oversample_omega).
    pub oversample_omega: bool,
    /// Layers through the sensor, C's detector_thicksteps.
    pub thicksteps: usize,
    /// Layer thickness (m), C's detector_thickstep.
    pub thickstep: f64,
    /// Sensor thickness (m), C's detector_thick; 0 = none.
    pub thick: f64,
    /// Sensor attenuation coefficient (1/m), C's detector_mu.
    pub mu: f64,
    /// The sources in C's loop order (divergence grid by dispersion, or the source file's).
    pub sources: Vec<Source>,
    /// Polarization correction off (C's nopolar).
    pub nopolar: bool,
    /// Resolution cut d-min (m), C's dmin; 0 = none.
    pub dmin: f64,
    /// Water background thickness (m), C's water_size; 0 = no background.
    pub water_size: f64,
    /// Where the cell comes from: cell parameters or a MOSFLM A matrix.
    pub cell_source: CellSource,
    /// Which of Na, Nb, Nc exceed 1 at the base point.
    pub n_gt1: [bool; 3],
    /// Lattice transform of the crystal shape (C's xtal_shape).
    pub shape: LatticeShape,
    /// Scale of the spot-shape radius (C's fudge).
    pub fudge: f64,
    /// The mosaic spread is above 0 at the base point.
    pub mosaic_on: bool,
    /// The random deviates of each mosaic domain (C's mosaic_domains, from mosaic_seed).
    pub mosaic_deviates: Vec<UmatDeviates>,
    /// With a spread of 0: the domains a spread just above 0 would use (the
    /// domain edge of mosaic_spread); else empty.
    pub mosaic_deviates_edge: Vec<UmatDeviates>,
    /// Phi steps per image, C's phisteps.
    pub phisteps: usize,
    /// phi step i is exactly 0.0 at the base point (C's `phi != 0.0` test).
    pub phi_zero: Vec<bool>,
    /// Tricubic interpolation of F is on (C's interpolate).
    pub interpolate: bool,
    /// How a phi step at exactly 0 is treated (spec or C parity).
    pub carryover: PhiCarryover,
    /// Samples per pixel, C's steps: sources x mosaic domains x phi steps x oversample^2.
    pub steps: usize,
    /// Each parameter's value in user units (Å, deg, mm, ...), indexed by [`Param`].
    pub user: [f64; 26],
    /// C's internal value of each parameter (m, rad, ...), indexed by [`Param`].
    pub internal: [f64; 26],
    /// d internal / d user of each parameter (1e-3 for mm, 1/RTD for deg, ...).
    pub scale: [f64; 26],
    /// Which parameters have a meaning here (cell_* not with a matrix).
    pub applicable: [bool; 26],
    /// Notes for the user from resolving (defaults chosen, vectors regenerated).
    pub notes: Vec<String>,
}

impl Setup {
    /// The internal value of parameter `p` (radians, metres, ...) in scalar T.
    #[inline(always)]
    pub fn iv<T: Real>(&self, p: Param, pv: &ParamValues<T>) -> T {
        let i = p as usize;
        c::<T>(self.internal[i]) + (pv.get(p) - c::<T>(self.user[i])) * c::<T>(self.scale[i])
    }

    /// The base point: every parameter at its user value, no derivative directions.
    pub fn base_values(&self) -> ParamValues<f64> {
        ParamValues {
            v: self.user,
            live: [false; 26],
            exact: self.user,
        }
    }
}

impl std::ops::Deref for Setup {
    type Target = Detector;

    /// The resolved detector model, so `setup.fpixels`, `setup.roi`, ...
    /// read its fields.
    fn deref(&self) -> &Detector {
        &self.detector
    }
}

/// The models of one configuration, resolved and not yet flattened.
#[derive(Clone, Debug)]
pub struct Models {
    /// The resolved detector: pixels, distance, beam centre, axes.
    pub detector: Detector,
    /// The resolved beam: wavelength, direction, fluence, sources.
    pub beam: Beam,
    /// The resolved goniometer: the spindle axis.
    pub goniometer: Goniometer,
    /// The resolved phi scan: start, step, count.
    pub scan: Scan,
    /// The resolved crystal: cell or matrix, misset, N, mosaic domains.
    pub crystal: Crystal,
    /// The resolved sensor layers: thickness, attenuation, layer count.
    pub thickness: Thickness,
}

/// A resolved setup with its HKL grid and detector mask.
pub type Resolved = (Setup, Option<HklGrid>, Option<Vec<u16>>);

/// Resolve a configuration with its files' contents (`inputs`). The models
/// are resolved in the order detector, beam, goniometer, scan, sensor
/// thickness, crystal (each check refuses with the key it names); then the
/// quantities that need the assembled geometry: N from the crystal size,
/// the oversampling, the structure factors, the mask, the background.
pub fn resolve(cfg: &SimConfig, inputs: Inputs) -> Result<Resolved, SetupError> {
    let Inputs {
        hkl,
        mosflm_matrix,
        sources,
        mask,
        memory_limit: limit,
    } = inputs;
    let mut notes = vec![];
    let axes = convention::axes(cfg.detector.convention);
    let detector = detector::resolve(&cfg.detector, &axes, &limit, &mut notes)?;
    let mask_given = cfg.detector.mask_file.is_some();
    let budget = RenderBudget::new(detector.fpixels, detector.spixels, mask_given, &limit);
    let beam = beam::resolve(&cfg.beam, &axes, sources, &budget)?;
    let goniometer = goniometer::resolve(&cfg.goniometer, &axes)?;
    let scan = scan::resolve(&cfg.goniometer, cfg.phi_carryover, &mut notes)?;
    let thickness = sampling::thickness(&cfg.detector, &mut notes)?;
    let crystal = crystal::resolve(
        &cfg.crystal,
        cfg.seed,
        mosflm_matrix,
        &budget,
        beam.sources.len(),
        scan.phisteps,
        &mut notes,
    )?;
    let (beamsize, fluence, default_f) = (beam.beamsize, beam.fluence, crystal.default_f);
    let models = Models {
        detector,
        beam,
        goniometer,
        scan,
        crystal,
        thickness,
    };
    let mut setup = Setup::assemble(cfg, models, notes);

    // N from the crystal size needs the cell in metres.
    let cell = crystal_cell::<f64>(&setup, &setup.base_values());
    let edges_m = edge_lengths(&cell).map(|x| x * 1e-10);
    let n = crystal::n_from_size(&cfg.crystal, edges_m, beamsize, &mut setup.notes)?;
    for (i, p) in [Param::NA, Param::NB, Param::NC].iter().enumerate() {
        setup.user[*p as usize] = n[i];
        setup.internal[*p as usize] = n[i];
        setup.n_gt1[i] = n[i] > 1.0;
    }
    // C's recommended oversampling uses the resolved distance and N.
    let recommended = recommended_oversample(&setup, &setup.base_values());
    let sampling = sampling::resolve(
        &cfg.detector,
        thickness,
        sampling::oversample(&cfg.detector, recommended)?,
    );
    setup.oversample = sampling.oversample;
    setup.oversample_auto = sampling.oversample_auto;

    let counts = [
        setup.sources.len() as u64,
        setup.phisteps as u64,
        setup.mosaic_deviates.len() as u64,
    ];
    let hkl = crystal::structure_factors(&cfg.crystal, hkl, default_f, &budget, counts)?;
    setup.interpolate = crystal::interpolate(&cfg.crystal, hkl.as_ref(), n);
    let mask = detector::mask(&cfg.detector, mask, setup.fpixels, setup.spixels)?;

    // The water background must be a finite number (an all-inf image is no image).
    let bg = water_background::<f64>(&setup, fluence);
    if !bg.is_finite() {
        return Err(invalid(
            "beam.water_um",
            format!(
                "{} um of water gives a background of {bg} photons per pixel: not a finite image",
                num(cfg.beam.water_um)
            ),
        ));
    }
    setup.steps = setup
        .sources
        .len()
        .saturating_mul(setup.mosaic_deviates.len())
        .saturating_mul(setup.phisteps)
        .saturating_mul(setup.oversample)
        .saturating_mul(setup.oversample);
    Ok((setup, hkl, mask))
}

impl Setup {
    /// Flatten the models (N as the user gave it, one subpixel: the rest of
    /// [`resolve`] completes both).
    fn assemble(cfg: &SimConfig, m: Models, notes: Vec<String>) -> Setup {
        let table = ParamTable::new(cfg, &m);
        let det = &cfg.detector;
        let Models {
            detector: d,
            beam: b,
            goniometer: g,
            scan: s,
            crystal: c,
            thickness: t,
        } = m;
        Setup {
            beam: b.direction,
            polar: b.polar_vector,
            spindle: g.spindle,
            oversample: 1,
            oversample_auto: false,
            oversample_thick: det.oversample_thick,
            oversample_polar: det.oversample_polar,
            oversample_omega: det.oversample_omega,
            thicksteps: t.steps,
            thickstep: t.step,
            thick: t.thick,
            mu: t.mu,
            sources: b.sources,
            nopolar: b.nopolar,
            dmin: b.dmin,
            water_size: b.water_size,
            cell_source: c.cell_source,
            n_gt1: [false; 3],
            shape: c.shape,
            fudge: c.fudge,
            mosaic_on: c.mosaic.spread > 0.0,
            mosaic_deviates: c.mosaic.deviates,
            mosaic_deviates_edge: c.mosaic.deviates_edge,
            phisteps: s.phisteps,
            phi_zero: s.phi_zero,
            interpolate: false,
            carryover: cfg.phi_carryover,
            steps: 1,
            user: table.user,
            internal: table.internal,
            scale: table.scale,
            applicable: table.applicable,
            notes,
            detector: d,
        }
    }
}

/// Each parameter's user value, C's internal value and d internal / d user.
struct ParamTable {
    user: [f64; 26],
    internal: [f64; 26],
    scale: [f64; 26],
    applicable: [bool; 26],
}

impl ParamTable {
    fn new(cfg: &SimConfig, m: &Models) -> ParamTable {
        let mut t = ParamTable {
            user: [0.0; 26],
            internal: [0.0; 26],
            scale: [1.0; 26],
            applicable: [true; 26],
        };
        let (det, cr, d) = (&cfg.detector, &m.crystal, &m.detector);
        if let (CellSource::Cell, Some(cell)) = (&cr.cell_source, &cr.cell) {
            for (i, p) in Param::CELL.into_iter().enumerate() {
                t.set(p, cell[i], cell[i], 1.0);
            }
        }
        let (misset_deg, misset) = (cr.misset_deg, cr.misset);
        t.set(Param::MissetX, misset_deg[0], misset[0], 1.0 / RTD);
        t.set(Param::MissetY, misset_deg[1], misset[1], 1.0 / RTD);
        t.set(Param::MissetZ, misset_deg[2], misset[2], 1.0 / RTD);
        let s = &m.scan;
        t.set(
            Param::PhiStart,
            cfg.goniometer.phi_start_deg,
            s.phi0,
            1.0 / RTD,
        );
        // internal value of osc_range is the phi step; d step / d osc = 1/phisteps
        let per_step = 1.0 / RTD / s.phisteps as f64;
        t.set(Param::OscRange, s.osc * RTD, s.phistep, per_step);
        let spread = cr.mosaic.spread;
        t.set(Param::MosaicSpread, spread * RTD, spread, 1.0 / RTD);
        for (i, p) in [Param::NA, Param::NB, Param::NC].into_iter().enumerate() {
            t.set(p, cr.n_cells[i], cr.n_cells[i], 1.0);
        }
        match (det.close_distance_mm, d.close_distance) {
            (Some(mm), Some(cd)) => t.set(Param::Distance, mm, cd, 1e-3),
            _ => t.set(Param::Distance, det.distance_mm, d.distance, 1e-3),
        }
        let bc = &d.centre;
        let (pf, ps) = if d.pivot == Pivot::Beam {
            (bc.fbeam, bc.sbeam)
        } else {
            (bc.fclose, bc.sclose)
        };
        t.set(Param::BeamCenterF, pf * 1000.0, pf, 1e-3);
        t.set(Param::BeamCenterS, ps * 1000.0, ps, 1e-3);
        let rot = [
            Param::DetectorRotX,
            Param::DetectorRotY,
            Param::DetectorRotZ,
        ];
        for (i, p) in rot.into_iter().enumerate() {
            t.set(p, d.rot_deg[i], d.rot_deg[i] / RTD, 1.0 / RTD);
        }
        let tt = d.twotheta_deg;
        t.set(Param::Twotheta, tt, tt / RTD, 1.0 / RTD);
        let b = &m.beam;
        t.set(Param::Wavelength, b.wavelength * 1e10, b.wavelength, 1e-10);
        t.set(Param::Fluence, b.fluence, b.fluence, 1.0);
        t.set(Param::Polarization, b.polarization, b.polarization, 1.0);
        t.set(Param::DefaultF, cr.default_f, cr.default_f, 1.0);
        if matches!(cr.cell_source, CellSource::Matrix(_)) {
            for p in Param::CELL {
                t.applicable[p as usize] = false;
            }
        }
        t
    }

    fn set(&mut self, p: Param, user: f64, internal: f64, scale: f64) {
        self.user[p as usize] = user;
        self.internal[p as usize] = internal;
        self.scale[p as usize] = scale;
    }
}

/// C's recommended subpixels per side at parameter values `pv`:
/// ceil(3 x largest crystal edge (N x cell edge) / (λ distance / pixel)),
/// at least 1 and (ours) at most 64. A step function of cell, N, λ and
/// distance, so an automatic oversampling makes the image jump where it
/// switches.
pub fn recommended_oversample(s: &Setup, pv: &ParamValues<f64>) -> i64 {
    let cell = crystal_cell::<f64>(s, pv);
    let lengths_m = edge_lengths(&cell).map(|x| x * 1e-10);
    let n = [Param::NA, Param::NB, Param::NC].map(|p| s.iv(p, pv).max(1.0));
    let xtalsize_max = (0..3).map(|i| lengths_m[i] * n[i]).fold(0.0, f64::max);
    let geo = detector_geometry::<f64>(s, pv);
    let reciprocal_pixel_size = s.iv(Param::Wavelength, pv) * geo.distance / s.pixel_size;
    let recommended = (3.0 * xtalsize_max / reciprocal_pixel_size).ceil();
    if recommended.is_nan() || recommended < 1.0 {
        1
    } else {
        recommended.min(64.0) as i64
    }
}

/// Cell vectors (Å, lab frame, after misset) from parameter values.
pub fn crystal_cell<T: Real>(s: &Setup, pv: &ParamValues<T>) -> super::cell::CellVectors<T> {
    let misset = [
        s.iv(Param::MissetX, pv),
        s.iv(Param::MissetY, pv),
        s.iv(Param::MissetZ, pv),
    ];
    match &s.cell_source {
        CellSource::Cell => {
            let cell = Param::CELL.map(|p| s.iv(p, pv));
            let (recip, v_cell) = reciprocal_from_cell(cell);
            finish_cell(recip, misset, Some(([cell[0], cell[1], cell[2]], v_cell)))
        }
        CellSource::Matrix(m) => {
            // remove λ from the A matrix: scale by 1e-10/λ0 (λ0 in metres)
            let k = c::<T>(1e-10) / s.iv(Param::Wavelength, pv);
            let recip = [
                Vec3::<T>::cst(m[0]).scale(k),
                Vec3::cst(m[1]).scale(k),
                Vec3::cst(m[2]).scale(k),
            ];
            finish_cell(recip, misset, None)
        }
    }
}

/// The detector after rotations, pivot and two-theta.
#[derive(Clone, Copy, Debug)]
pub struct DetectorGeometry<T> {
    /// Fast axis after rotations and two-theta (unit), C's fdet_vector.
    pub fdet: Vec3<T>,
    /// Slow axis after rotations and two-theta (unit), C's sdet_vector.
    pub sdet: Vec3<T>,
    /// Detector normal after rotations and two-theta (unit), C's odet_vector.
    pub odet: Vec3<T>,
    /// Detector origin, the outer corner of pixel (0, 0), in the lab frame (m), C's pix0_vector.
    pub pix0: Vec3<T>,
    /// Sample to the detector plane along its normal (m), C's close_distance.
    pub close_distance: T,
    /// Sample to the beam centre along the beam (m), C's distance.
    pub distance: T,
    /// Beam centre along the fast axis (m), C's Fbeam.
    pub fbeam: T,
    /// Beam centre along the slow axis (m), C's Sbeam.
    pub sbeam: T,
    /// Near point (foot of the normal from the sample) along the fast axis (m), C's Fclose.
    pub fclose: T,
    /// Near point along the slow axis (m), C's Sclose.
    pub sclose: T,
}

/// Detector orientation and origin (spec-a-core "Detector rotations and pivot").
pub fn detector_geometry<T: Real>(s: &Setup, pv: &ParamValues<T>) -> DetectorGeometry<T> {
    use super::rotation::{rotate_axis, rotate_xyz};
    use super::scalar::dot_product;
    let (rx, ry, rz) = (
        s.iv(Param::DetectorRotX, pv),
        s.iv(Param::DetectorRotY, pv),
        s.iv(Param::DetectorRotZ, pv),
    );
    let twotheta = s.iv(Param::Twotheta, pv);
    let beam = Vec3::<T>::cst(s.beam);
    let tt_axis = Vec3::<T>::cst(s.twotheta_axis);
    let (f0, s0, o0) = (
        Vec3::<T>::cst(s.fdet),
        Vec3::<T>::cst(s.sdet),
        Vec3::<T>::cst(s.odet),
    );
    let mut ratio = dot_product(&beam, &rotate_xyz(&o0, rx, ry, rz));
    if ratio.val() == 0.0 {
        ratio = c(f64::MIN_POSITIVE);
    }
    let d = s.iv(Param::Distance, pv);
    let close_distance = if s.close_distance.is_some() {
        d
    } else if (ratio * d).val() < 0.0 {
        -(ratio * d)
    } else {
        ratio * d
    };
    let distance = close_distance / ratio;
    let pf = s.iv(Param::BeamCenterF, pv);
    let ps = s.iv(Param::BeamCenterS, pv);
    let mut pix0 = Vec3::<T>::zero();
    if s.pivot == Pivot::Sample {
        pix0 = f0.scale(-pf) + s0.scale(-ps) + o0.scale(close_distance);
        pix0 = rotate_xyz(&pix0, rx, ry, rz);
        pix0 = rotate_axis(&pix0, &tt_axis, twotheta);
    }
    let fdet = rotate_axis(&rotate_xyz(&f0, rx, ry, rz), &tt_axis, twotheta);
    let sdet = rotate_axis(&rotate_xyz(&s0, rx, ry, rz), &tt_axis, twotheta);
    let odet = rotate_axis(&rotate_xyz(&o0, rx, ry, rz), &tt_axis, twotheta);
    if s.pivot == Pivot::Beam {
        pix0 = fdet.scale(-pf) + sdet.scale(-ps) + beam.scale(distance);
    }
    let fclose = -dot_product(&pix0, &fdet);
    let sclose = -dot_product(&pix0, &sdet);
    let close_distance = dot_product(&pix0, &odet);
    let newv = beam.scale(close_distance / ratio) - pix0;
    DetectorGeometry {
        fdet,
        sdet,
        odet,
        pix0,
        close_distance,
        distance: close_distance / ratio,
        fbeam: dot_product(&fdet, &newv),
        sbeam: dot_product(&sdet, &newv),
        fclose,
        sclose,
    }
}

/// I_bg: constant water background per pixel (spec-a-core "Background").
pub fn water_background<T: Real>(s: &Setup, fluence: T) -> T {
    let f_bg = 2.57;
    let w = s.water_size;
    c::<T>(f_bg * f_bg * R_E_SQR) * fluence * c::<T>(w * w * w * 1e6 * AVOGADRO / 18.0)
}
