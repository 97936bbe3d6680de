//! The pixel loop (spec-a-core "Sampling & Accumulation"), generic over the
//! scalar. Per-image work (rotated cell vectors for every phi step and mosaic
//! domain, sources, detector frame) is done once in [`Model::build`]; the
//! per-pixel function then only evaluates the loop body.

use super::cell::CellVectors;
use super::config::PhiCarryover;
use super::lanes::{DerivativeRows, DerivativeSums, LatticeLanes, DERIVATIVE_LANES};
use super::lattice::f_latt;
use super::params::{Param, ParamValues};
use super::polarization::polarization_factor;
use super::rng::{axis_angle_umat, mosaic_rotation_angle};
use super::rotation::{rotate_axis, rotate_umat};
use super::scalar::{c, dot_product, magnitude, unitize, Real, Vec3};
use super::setup::{
    crystal_cell, detector_geometry, water_background, DetectorGeometry, Setup, R_E_SQR,
};
use super::structure_factors::HklGrid;

/// Orientation (a, b, c in metres) for one phi step and mosaic domain.
pub type Orientation<T> = [Vec3<T>; 3];

/// Everything the pixel loop needs, in scalar T.
pub struct Model<'a, T> {
    /// The resolved setup this model was built from.
    pub setup: &'a Setup,
    /// The structure factors, when an HKL file is given.
    pub hkl: Option<&'a HklGrid>,
    /// The detector frame at the render's parameter values (axes, pix0_vector, distances).
    pub geo: DetectorGeometry<T>,
    /// Incident E-vector (unit), C's polar_vector.
    pub polar_vector: Vec3<T>,
    /// (incident unit vector, λ in metres) per source.
    pub sources: Vec<(Vec3<T>, T)>,
    /// `[phi][domain]` orientations for the first executed phi sweep of the image.
    pub orient_first: Vec<Orientation<T>>,
    /// `[phi][domain]` orientations for every later phi sweep (they differ from
    /// `orient_first` only in c-parity mode).
    pub orient_rest: Vec<Orientation<T>>,
    /// Reciprocal vectors a*, b*, c* (Å^-1, lab frame, after misset), for the lattice factor.
    pub recip: [Vec3<T>; 3],
    /// Na, Nb, Nc, taken as 1 where below 1 (C's Na, Nb, Nc).
    pub n: [T; 3],
    /// Which N take part in the square lattice factor (N > 1, or N = 1 with
    /// a derivative: the one-sided derivative at the domain edge).
    pub n_gt1: [bool; 3],
    /// N as a whole number when it is one and carries no derivative (fast sincg).
    pub n_whole: [Option<u32>; 3],
    /// Enough parameters carry derivatives (`lift_threshold`): scalar functions of h, k, l are
    /// evaluated once in a scalar dual and lifted (see `lattice::lift`).
    pub lifted: bool,
    /// float32 renders with derivatives: the same model in float64, whose
    /// fractional indices the lattice factors are evaluated at (their
    /// derivatives stay float32). Near a Bragg peak d/dN grows as h/(h -
    /// round h), so float32 indices alone give N derivatives to ~1 digit.
    pub hi: Option<Box<Model<'a, f64>>>,
    /// The lattice factor over several orientations per instruction, for
    /// plain float renders of the square shape with whole N (see
    /// [`super::lanes`]); None: the scalar path. Either gives the same bits.
    pub lanes: Option<LatticeLanes>,
    /// The lane path for float64 renders with derivatives (attached by the
    /// engine, which knows the dual type: [`Model::attach_derivative_lanes`]).
    pub derivative_lanes: Option<DerivativeLanes<T>>,
    /// Kahn polarization factor K (C's polarization).
    pub kahn: T,
    /// Structure factor off the HKL grid or without one (C's default_F).
    pub default_f: T,
    /// r_e^2 · fluence / steps
    pub scale: T,
    /// Constant water background I_bg (spec-a-core "Background").
    pub i_bg: T,
}

/// Derivative directions from which sincg is lifted (see `lattice::lift`):
/// measured, f64 duals gain from 3 directions on; float32 duals from 1
/// (DualSVec32<1> arithmetic on the CPU is 6x slower than DualSVec64<1>).
fn lift_threshold<T: Real>() -> usize {
    if std::mem::size_of::<T::Primitive>() == 4 {
        1
    } else {
        3
    }
}

/// Which phi steps are exactly 0 at the values `pv`: the setup's decision when
/// phi_start and osc_range are at their base values (to the precision of T),
/// else C's test on the shifted angles.
pub(crate) fn phi_zero_at<T: Real>(setup: &Setup, pv: &ParamValues<T>) -> Vec<bool> {
    let tol = if std::mem::size_of::<T::Primitive>() == 4 {
        f32::EPSILON as f64
    } else {
        0.0
    };
    let user = |p: Param| pv.get(p).val();
    let unshifted = [Param::PhiStart, Param::OscRange].iter().all(|p| {
        let u = setup.user[*p as usize];
        (user(*p) - u).abs() <= u.abs() * tol
    });
    if unshifted {
        return setup.phi_zero.clone();
    }
    let internal = |p: Param| {
        let i = p as usize;
        setup.internal[i] + (user(p) - setup.user[i]) * setup.scale[i]
    };
    let (phi0, step) = (internal(Param::PhiStart), internal(Param::OscRange));
    (0..setup.phisteps)
        .map(|i| phi0 + step * i as f64 == 0.0)
        .collect()
}

/// The crystal's orientations, `[phi][domain]` (a, b, c in metres), for the
/// first executed phi sweep of the image and for every later sweep, and the
/// number of steps with the mosaic domains they use.
fn orientations<T: Real>(
    setup: &Setup,
    pv: &ParamValues<T>,
    cell: &CellVectors<T>,
) -> (Vec<Orientation<T>>, Vec<Orientation<T>>, usize) {
    let to_m = c::<T>(1e-10);
    let (a0, b0, c0) = (cell.a.scale(to_m), cell.b.scale(to_m), cell.c.scale(to_m));
    let spindle = Vec3::<T>::cst(setup.spindle);
    let phi0 = setup.iv(Param::PhiStart, pv);
    let phistep = setup.iv(Param::OscRange, pv);
    let rotated: Vec<Orientation<T>> = (0..setup.phisteps)
        .map(|i| {
            let phi = phi0 + phistep * c::<T>(i as f64);
            [
                rotate_axis(&a0, &spindle, phi),
                rotate_axis(&b0, &spindle, phi),
                rotate_axis(&c0, &spindle, phi),
            ]
        })
        .collect();
    let base = [a0, b0, c0];
    // Which phi steps are exactly 0 (C's `phi != 0.0` test): decided at the
    // base point, and again at shifted phi values, so a render with phi_start
    // moved off 0 follows the branch a fresh configuration would (and a
    // finite difference sees the jump the carryover makes).
    let phi_zero = phi_zero_at(setup, pv);
    // Phi carryover (README, "Phi carryover"; nanoBragg.c rotates only
    // `if( phi != 0.0 )`, github.com/hoidn/nanoBragg docs/bugs/c-parity-001.md): a step whose angle is exactly 0 keeps the
    // most recent rotation: an earlier non-zero step of the same sweep, else
    // the last non-zero step of the previous sweep, else (first sweep of the
    // image) the unrotated cell. Zero-ness: `phi_zero_at` below.
    // each step's rotation: Some(step whose rotation it uses), None for the
    // unrotated cell
    let phi_choice = |first: bool| -> Vec<Option<usize>> {
        (0..setup.phisteps)
            .map(|i| {
                if setup.carryover == PhiCarryover::Spec || !phi_zero[i] {
                    return Some(i);
                }
                if let Some(j) = (0..i).rev().find(|j| !phi_zero[*j]) {
                    return Some(j);
                }
                if first {
                    return None;
                }
                (0..setup.phisteps).rev().find(|j| !phi_zero[*j])
            })
            .collect()
    };
    let phi_orient = |choice: &[Option<usize>]| -> Vec<Orientation<T>> {
        choice
            .iter()
            .map(|c| c.map_or(base, |j| rotated[j]))
            .collect()
    };
    let spread = setup.iv(Param::MosaicSpread, pv);
    // Domain edge (spec-a-core "Mosaic"): a spread of 0 makes C use one
    // domain. At that edge a derivative (or a step into spread > 0) uses
    // the domains a positive spread would draw, all at angle 0: the same
    // image, and the one-sided derivative into the valid domain.
    let at_mosaic_edge = !setup.mosaic_on
        && !setup.mosaic_deviates_edge.is_empty()
        && (spread.val() > 0.0 || (spread.val() == 0.0 && pv.live[Param::MosaicSpread as usize]));
    let deviates = if at_mosaic_edge {
        &setup.mosaic_deviates_edge
    } else {
        &setup.mosaic_deviates
    };
    let mosaic_on = setup.mosaic_on || at_mosaic_edge;
    let steps = setup.steps / setup.mosaic_deviates.len().max(1) * deviates.len();
    let umats: Vec<[T; 9]> = deviates
        .iter()
        .enumerate()
        .map(|(m, d)| {
            if m == 0 {
                // domain 0 is forced to the identity
                let (o, z) = (c::<T>(1.0), c::<T>(0.0));
                [o, z, z, z, o, z, z, z, o]
            } else {
                axis_angle_umat(d.axis(), mosaic_rotation_angle(spread, d))
            }
        })
        .collect();
    let with_mosaic = |phis: Vec<Orientation<T>>| -> Vec<Orientation<T>> {
        let mut out = Vec::with_capacity(phis.len() * umats.len());
        for p in &phis {
            for u in &umats {
                if mosaic_on {
                    out.push([
                        rotate_umat(&p[0], u),
                        rotate_umat(&p[1], u),
                        rotate_umat(&p[2], u),
                    ]);
                } else {
                    out.push(*p);
                }
            }
        }
        out
    };
    let (first, rest) = (phi_choice(true), phi_choice(false));
    let orient_first = with_mosaic(phi_orient(&first));
    // the sweeps after the first differ only with the carryover and a first
    // step at exactly 0: otherwise the same values, computed once
    let orient_rest = match rest == first {
        true => orient_first.clone(),
        false => with_mosaic(phi_orient(&rest)),
    };
    (orient_first, orient_rest, steps)
}

/// The fractional Miller indices h, k, l = a·S, b·S, c·S of the scattering
/// vector S in orientation `o` (spec-a-core "Sampling & Accumulation").
#[inline(always)]
fn miller<T: Real>(o: &Orientation<T>, scattering: &Vec3<T>) -> (T, T, T) {
    (
        dot_product(&o[0], scattering),
        dot_product(&o[1], scattering),
        dot_product(&o[2], scattering),
    )
}

/// Orientations whose lattice factors the lane path evaluates per call.
const LANE_CHUNK: usize = 128;

/// The orientations' values and derivative components, for
/// [`Model::attach_derivative_lanes`].
pub struct DerivativeLanes<T> {
    lattice: LatticeLanes,
    first_rows: DerivativeRows,
    rest_rows: DerivativeRows,
    basis: Vec<T>,
}

impl<T> DerivativeLanes<T> {
    /// Whether the rows of the first sweep and of the later ones are in the
    /// factored form ([`DerivativeRows`]).
    pub fn factored(&self) -> [bool; 2] {
        [&self.first_rows, &self.rest_rows].map(|r| r.first_derivatives.is_some())
    }
}

/// How structure factors are looked up for a pixel (see [`FMode`] users).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FMode {
    /// Tricubic interpolation for every evaluation.
    Interpolate,
    /// The nearest grid point for every evaluation.
    Nearest,
    /// Interpolate until evaluation number `e` of this pixel, nearest from it on
    /// (C switches interpolation off for good at the first out-of-range one).
    SwitchAt(usize),
}

impl<'a, T: Real> Model<'a, T> {
    /// The per-image work at parameter values `pv`: detector frame, sources, the
    /// orientations of every phi step and mosaic domain, and the scale; with
    /// the lane tables the CPU's lattice factors read.
    pub fn build(setup: &'a Setup, hkl: Option<&'a HklGrid>, pv: &ParamValues<T>) -> Self {
        let mut m = Self::build_without_lanes(setup, hkl, pv);
        m.lanes = LatticeLanes::build(
            setup.shape,
            m.n_gt1,
            m.n_whole,
            [&m.orient_first, &m.orient_rest],
            false,
        );
        m
    }

    /// As [`Model::build`] but without the CPU's lane tables: the GPU kernel
    /// reads the orientations themselves, and a GPU render waits for the
    /// host's model before its first kernel.
    pub fn build_without_lanes(
        setup: &'a Setup,
        hkl: Option<&'a HklGrid>,
        pv: &ParamValues<T>,
    ) -> Self {
        let geo = detector_geometry(setup, pv);
        let lambda0 = setup.iv(Param::Wavelength, pv);
        let sources = setup
            .sources
            .iter()
            .map(|s| {
                let incident = -Vec3::<T>::cst(s.dir);
                let lambda = match s.lambda_fixed {
                    Some(l) => c::<T>(l),
                    None => lambda0 * c::<T>(s.lambda_factor),
                };
                (incident, lambda)
            })
            .collect();

        // crystal: base real vectors in metres
        let cell = crystal_cell(setup, pv);
        let (orient_first, orient_rest, steps) = orientations(setup, pv, &cell);

        let fluence = setup.iv(Param::Fluence, pv);
        let live = [
            pv.live[Param::NA as usize],
            pv.live[Param::NB as usize],
            pv.live[Param::NC as usize],
        ];
        // C clamps N < 1 to 1 and multiplies sincg only for N > 1. At N = 1
        // with a derivative the sincg factor (exactly 1 there) is kept, so
        // the derivative is the one-sided one into N > 1.
        let n: [T; 3] = [Param::NA, Param::NB, Param::NC].map(|p| {
            let v = setup.iv(p, pv);
            if v.val() < 1.0 {
                c(1.0)
            } else {
                v
            }
        });
        let n_gt1: [bool; 3] =
            std::array::from_fn(|i| n[i].val() > 1.0 || (live[i] && n[i].val() == 1.0));
        let n_whole: [Option<u32>; 3] = std::array::from_fn(|i| {
            let v = n[i].val();
            (!live[i] && v.fract() == 0.0 && v >= 1.0 && v <= super::lattice::MAX_WHOLE_N as f64)
                .then_some(v as u32)
        });
        let hi = (std::mem::size_of::<T::Primitive>() == 4 && pv.live.iter().any(|l| *l))
            .then(|| Box::new(Model::<f64>::build(setup, hkl, &pv.exact_f64())));
        Model {
            lanes: None,
            derivative_lanes: None,
            hi,
            setup,
            hkl,
            geo,
            polar_vector: Vec3::cst(setup.polar),
            sources,
            orient_first,
            orient_rest,
            recip: [cell.a_star, cell.b_star, cell.c_star],
            n,
            n_gt1,
            n_whole,
            lifted: pv.live.iter().filter(|l| **l).count() >= lift_threshold::<T>(),
            kahn: setup.iv(Param::Polarization, pv),
            default_f: setup.iv(Param::DefaultF, pv),
            scale: c::<T>(R_E_SQR) * fluence / c::<T>(steps as f64),
            i_bg: water_background(setup, fluence),
        }
    }

    /// Position of a subpixel centre in the lab frame (metres).
    #[inline(always)]
    fn subpixel_position(
        &self,
        fpixel: usize,
        spixel: usize,
        sub_f: usize,
        sub_s: usize,
        odet: f64,
    ) -> Vec3<T> {
        let s = self.setup;
        let sub = s.pixel_size / s.oversample as f64;
        let fdet = sub * (fpixel * s.oversample + sub_f) as f64 + sub / 2.0;
        let sdet = sub * (spixel * s.oversample + sub_s) as f64 + sub / 2.0;
        let g = &self.geo;
        let pos = g.fdet.scale(c(fdet)) + g.sdet.scale(c(sdet)) + g.odet.scale(c(odet)) + g.pix0;
        if s.curved {
            // every pixel at `distance` from the sample: rotate the beam-centre
            // vector about s and f by the detector coordinates (C's quirk: it
            // uses pixel_pos components 2 and 3, the lab y and z)
            let v = Vec3::<T>::cst(s.beam).scale(g.distance);
            let nv = rotate_axis(&v, &g.sdet, pos.0[1] / g.distance);
            rotate_axis(&nv, &g.fdet, pos.0[2] / g.distance)
        } else {
            pos
        }
    }

    /// Whether any sweep of this pixel survives the d-min cut (for locating the
    /// first executed phi sweep of the image).
    pub fn pixel_has_sweep(&self, fpixel: usize, spixel: usize) -> bool {
        let s = self.setup;
        if s.dmin <= 0.0 {
            return true;
        }
        for t in 0..s.thicksteps {
            for ss in 0..s.oversample {
                for sf in 0..s.oversample {
                    let pos =
                        self.subpixel_position(fpixel, spixel, sf, ss, t as f64 * s.thickstep);
                    let (d, _) = unitize(&pos);
                    for (inc, lambda) in &self.sources {
                        if !self.dmin_skips(&d, inc, *lambda) {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    #[inline(always)]
    fn dmin_skips(&self, diffracted: &Vec3<T>, incident: &Vec3<T>, lambda: T) -> bool {
        let dmin = self.setup.dmin;
        if dmin <= 0.0 {
            return false;
        }
        let q = (*diffracted - *incident).scale(c::<T>(1.0) / lambda);
        let stol = 0.5 * magnitude(&q).val();
        stol > 0.0 && dmin > 0.5 / stol
    }

    /// One pixel. `first_sweep` marks the pixel holding the image's first
    /// executed phi sweep. Returns the pixel value and, when interpolating,
    /// the index of the first structure-factor evaluation that fell outside the
    /// HKL grid.
    pub fn pixel(
        &self,
        fpixel: usize,
        spixel: usize,
        first_sweep: bool,
        fmode: FMode,
    ) -> (T, Option<usize>) {
        let s = self.setup;
        let zero = c::<T>(0.0);
        let one = c::<T>(1.0);
        let mut i_acc = self.i_bg;
        let mut polar = if s.nopolar { one } else { zero };
        let mut omega = zero;
        let mut capture = zero;
        let mut first = first_sweep;
        let mut eval = 0usize;
        let mut oor: Option<usize> = None;
        let pixel_area = c::<T>(s.pixel_size * s.pixel_size);
        for t in 0..s.thicksteps {
            let odet = t as f64 * s.thickstep;
            capture = if s.thick == 0.0 { one } else { zero };
            for ss in 0..s.oversample {
                for sf in 0..s.oversample {
                    let pos = self.subpixel_position(fpixel, spixel, sf, ss, odet);
                    let (diffracted, airpath) = unitize(&pos);
                    let diffracted_hi = self
                        .hi
                        .as_ref()
                        .map(|m| unitize(&m.subpixel_position(fpixel, spixel, sf, ss, odet)).0);
                    if omega.val() == 0.0 || s.oversample_omega {
                        omega = if s.point_pixel {
                            one / (airpath * airpath)
                        } else {
                            pixel_area / airpath / airpath * self.geo.close_distance / airpath
                        };
                    }
                    if capture.val() == 0.0 || s.oversample_thick {
                        let parallax = dot_product(&diffracted, &self.geo.odet);
                        let depth0 = c::<T>(t as f64 * s.thickstep * s.mu);
                        let depth1 = c::<T>((t + 1) as f64 * s.thickstep * s.mu);
                        capture = (-depth0 / parallax).exp() - (-depth1 / parallax).exp();
                    }
                    for (si, (incident, lambda)) in self.sources.iter().enumerate() {
                        let scattering = (diffracted - *incident).scale(one / *lambda);
                        let scattering_hi = match (&self.hi, &diffracted_hi) {
                            (Some(m), Some(d)) => {
                                let (inc, lam) = m.sources[si];
                                Some((*d - inc).scale(1.0 / lam))
                            }
                            _ => None,
                        };
                        // ... and its value from there: at small angles d - i in
                        // float32 keeps ~2 digits of the component along the
                        // beam, which every derivative of h = a.S multiplies
                        let scattering = match &scattering_hi {
                            Some(sh) => Vec3(std::array::from_fn(|i| {
                                let x = scattering.0[i];
                                x - c::<T>(x.val()) + c::<T>(sh.0[i])
                            })),
                            None => scattering,
                        };
                        if s.dmin > 0.0 {
                            let stol = 0.5 * magnitude(&scattering).val();
                            if stol > 0.0 && s.dmin > 0.5 / stol {
                                continue;
                            }
                        }
                        if polar.val() == 0.0 || s.oversample_polar {
                            polar = polarization_factor(
                                self.kahn,
                                incident,
                                &diffracted,
                                &self.polar_vector,
                            );
                        }
                        let orient = if first {
                            &self.orient_first
                        } else {
                            &self.orient_rest
                        };
                        let orient_hi = self.hi.as_ref().map(|m| {
                            if first {
                                &m.orient_first
                            } else {
                                &m.orient_rest
                            }
                        });
                        let lanes_first = first;
                        first = false;
                        if let Some(d) = &self.derivative_lanes {
                            self.sum_on_derivative_lanes(
                                d,
                                lanes_first,
                                &scattering,
                                &mut eval,
                                &mut i_acc,
                            );
                            continue;
                        }
                        if let Some(lanes) = &self.lanes {
                            self.sum_on_lanes(
                                lanes,
                                lanes_first,
                                orient,
                                &scattering,
                                fmode,
                                &mut eval,
                                &mut oor,
                                &mut i_acc,
                                [capture, polar, omega],
                            );
                            continue;
                        }
                        for (oi, o) in orient.iter().enumerate() {
                            let (h, k, l) = miller(o, &scattering);
                            let hkl_hi = match (orient_hi, &scattering_hi) {
                                (Some(oh), Some(sh)) => {
                                    let q = &oh[oi];
                                    Some([
                                        dot_product(&q[0], sh),
                                        dot_product(&q[1], sh),
                                        dot_product(&q[2], sh),
                                    ])
                                }
                                _ => None,
                            };
                            let fl = f_latt(
                                s.shape,
                                h,
                                k,
                                l,
                                &self.n,
                                self.n_gt1,
                                self.n_whole,
                                self.lifted,
                                &self.recip,
                                s.fudge,
                                hkl_hi,
                            );
                            if fl.val() == 0.0 && s.water_size == 0.0 {
                                continue;
                            }
                            self.accumulate(
                                || (h, k, l),
                                fl,
                                fmode,
                                &mut eval,
                                &mut oor,
                                &mut i_acc,
                                capture,
                                polar,
                                omega,
                            );
                        }
                    }
                }
            }
        }
        let mut test = self.scale * i_acc;
        if !s.oversample_thick {
            test *= capture;
        }
        if !s.oversample_polar {
            test *= polar;
        }
        if !s.oversample_omega {
            test *= omega;
        }
        (test, oor)
    }

    /// The (phi step, mosaic domain) terms of one source with F_latt from the
    /// lane path, summed in the scalar loop's order (so the same bits).
    #[allow(clippy::too_many_arguments)]
    fn sum_on_lanes(
        &self,
        lanes: &LatticeLanes,
        first: bool,
        orient: &[Orientation<T>],
        scattering: &Vec3<T>,
        fmode: FMode,
        eval: &mut usize,
        oor: &mut Option<usize>,
        i_acc: &mut T,
        [capture, polar, omega]: [T; 3],
    ) {
        let s = self.setup;
        // default_F with no per-sample factor: the term is F^2 F_latt^2 with
        // one F^2 for all ((F F) fl) fl, as the general loop multiplies)
        let plain =
            self.hkl.is_none() && !(s.oversample_thick || s.oversample_polar || s.oversample_omega);
        let f_sqr = self.default_f * self.default_f;
        let sv = scattering.val();
        let mut fl_lanes = [0.0f64; LANE_CHUNK];
        for start in (0..orient.len()).step_by(LANE_CHUNK) {
            let chunk = &mut fl_lanes[..LANE_CHUNK.min(orient.len() - start)];
            lanes.f_latt(first, sv, start, chunk, None);
            for (j, v) in chunk.iter().enumerate() {
                let fl = c::<T>(*v);
                if fl.val() == 0.0 && s.water_size == 0.0 {
                    continue;
                }
                if plain {
                    *eval += 1;
                    *i_acc += f_sqr * fl * fl;
                    continue;
                }
                let hkl = || miller(&orient[start + j], scattering);
                self.accumulate(hkl, fl, fmode, eval, oor, i_acc, capture, polar, omega);
            }
        }
    }

    /// The lane path for derivatives: with `eps(x, p)` the p-th derivative
    /// component of a scalar and `basis[p]` the scalar 0 + 1·e_p, for float64
    /// duals of the square shape with whole N, default_F (no HKL grid) and no
    /// per-sample oversampled factors; otherwise nothing changes (float32
    /// duals, which also carry the float64 `hi` model, keep the scalar path).
    pub fn attach_derivative_lanes(&mut self, eps: impl Fn(&T, usize) -> f64, basis: Vec<T>) {
        let s = self.setup;
        if self.hkl.is_some()
            || s.oversample_thick
            || s.oversample_polar
            || s.oversample_omega
            || std::mem::size_of::<T::Primitive>() != 8
            || basis.len() > DERIVATIVE_LANES
        {
            return;
        }
        let Some(lattice) = LatticeLanes::build(
            s.shape,
            self.n_gt1,
            self.n_whole,
            [&self.orient_first, &self.orient_rest],
            true,
        ) else {
            return;
        };
        let k = basis.len();
        let rows = |o: &[Orientation<T>]| {
            let vectors: Vec<[[f64; 3]; 3]> = o.iter().map(|o| o.map(|v| v.val())).collect();
            DerivativeRows::new(&vectors, k, |j, axis, x, p| eps(&o[j][axis].0[x], p))
        };
        self.derivative_lanes = Some(DerivativeLanes {
            lattice,
            first_rows: rows(&self.orient_first),
            rest_rows: rows(&self.orient_rest),
            basis,
        });
    }

    /// The (phi step, mosaic domain) terms of one source on the derivative
    /// lane path. The value is the forward render's, term by term in the same
    /// order; the derivatives are d(F^2 F_latt^2) summed as
    /// (F^2)' Σ F_latt^2 + F^2 Σ_o Σ_axis w (dh), w = 2 F_latt ∂F_latt/∂h and
    /// dh = (da)·S + a·(dS) for h = a·S (spec-a-core "Sampling & Accumulation").
    fn sum_on_derivative_lanes(
        &self,
        d: &DerivativeLanes<T>,
        first: bool,
        scattering: &Vec3<T>,
        eval: &mut usize,
        i_acc: &mut T,
    ) {
        let s = self.setup;
        let rows = if first { &d.first_rows } else { &d.rest_rows };
        let count = rows.rows.len();
        let f_val = self.default_f.val();
        let f_sqr = f_val * f_val;
        let keep_zero = s.water_size != 0.0;
        let sv = scattering.val();
        let mut sums = DerivativeSums::new(i_acc.val(), rows.row_directions());
        let mut fl_chunk = [0.0f64; LANE_CHUNK];
        let mut slopes = [[0.0f64; 3]; LANE_CHUNK];
        for start in (0..count).step_by(LANE_CHUNK) {
            let r = start..LANE_CHUNK.min(count - start) + start;
            let (fl, sl) = (&mut fl_chunk[..r.len()], &mut slopes[..r.len()]);
            d.lattice.f_latt(first, sv, start, fl, Some(sl));
            sums.add(fl, sl, &rows.rows[r], f_sqr, keep_zero);
        }
        *eval += sums.evals;
        // the orientation part Σ_axis Σ_x S_x Σ_j w_j,axis (do_j,axis)_x, each direction
        let mut d_orient = c::<T>(0.0);
        let e = rows.orientation_derivatives(&sums, sv);
        for (unit, ep) in d.basis.iter().zip(e) {
            d_orient += *unit * c::<T>(ep);
        }
        // the scattering-vector part Σ_axis U_axis · dS, through S's own directions
        let mut d_scatter = c::<T>(0.0);
        for axis in 0..3 {
            let ua = [0, 1, 2].map(|x| sums.vector(axis, x));
            d_scatter += dot_product(&Vec3::cst(ua), scattering);
        }
        let f = self.default_f;
        let total = f * f * c::<T>(sums.fl_sqr) + c::<T>(f_sqr) * (d_scatter + d_orient);
        // value from the forward sum; derivative parts added (real parts exactly 0)
        *i_acc =
            c::<T>(sums.value) + (*i_acc - c::<T>(i_acc.val())) + (total - c::<T>(total.val()));
    }

    /// One (phi step, mosaic domain) term of the pixel sum: F_cell^2 F_latt^2,
    /// with the per-sample factors when oversampling them (spec-a-core
    /// "Sampling & Accumulation"). `hkl` gives the fractional indices, needed
    /// only for a structure-factor lookup; `eval` counts the evaluations.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn accumulate(
        &self,
        hkl: impl FnOnce() -> (T, T, T),
        fl: T,
        fmode: FMode,
        eval: &mut usize,
        oor: &mut Option<usize>,
        i_acc: &mut T,
        capture: T,
        polar: T,
        omega: T,
    ) {
        let s = self.setup;
        let interp = match fmode {
            FMode::Interpolate => true,
            FMode::Nearest => false,
            FMode::SwitchAt(e) => *eval < e,
        };
        let f_cell = self.f_cell(hkl, interp, oor, *eval);
        *eval += 1;
        *i_acc += f_cell * f_cell * fl * fl;
        if s.oversample_thick {
            *i_acc *= capture;
        }
        if s.oversample_polar {
            *i_acc *= polar;
        }
        if s.oversample_omega {
            *i_acc *= omega;
        }
    }

    /// F_cell for fractional (h, k, l): tricubic interpolation or nearest
    /// lookup, default_F outside the grid.
    #[inline(always)]
    fn f_cell(
        &self,
        hkl: impl FnOnce() -> (T, T, T),
        interp: bool,
        oor: &mut Option<usize>,
        eval: usize,
    ) -> T {
        let Some(g) = self.hkl else {
            return self.default_f;
        };
        let (h, k, l) = hkl();
        if interp && self.setup.interpolate {
            let (hv, kv, lv) = (h.val(), k.val(), l.val());
            let (h_range, k_range, l_range) = (
                (g.h_max - g.h_min + 1) as f64,
                (g.k_max - g.k_min + 1) as f64,
                (g.l_max - g.l_min + 1) as f64,
            );
            let out = (hv - g.h_min as f64 + 3.0) > h_range
                || (hv - 2.0) < g.h_min as f64
                || (kv - g.k_min as f64 + 3.0) > k_range
                || (kv - 2.0) < g.k_min as f64
                || (lv - g.l_min as f64 + 3.0) > l_range
                || (lv - 2.0) < g.l_min as f64;
            if !out {
                return interpolate_f(g, h, k, l);
            }
            if oor.is_none() {
                *oor = Some(eval);
            }
        }
        let (h0, k0, l0) = (
            (h.val() - 0.5).ceil() as i32,
            (k.val() - 0.5).ceil() as i32,
            (l.val() - 0.5).ceil() as i32,
        );
        match g.get(h0, k0, l0) {
            Some(f) if g.count > 0 => c(f),
            _ => self.default_f,
        }
    }
}

/// Tricubic Lagrange interpolation on the 4x4x4 neighbourhood floor(x)-1 ..
/// floor(x)+2 (C's polin3: along l, then k, then h).
pub fn interpolate_f<T: Real>(g: &HklGrid, h: T, k: T, l: T) -> T {
    let (hf, kf, lf) = (
        h.val().floor() as i32,
        k.val().floor() as i32,
        l.val().floor() as i32,
    );
    let mut over_k = [c::<T>(0.0); 4];
    let mut over_h = [c::<T>(0.0); 4];
    for (i1, hh) in (hf - 1..=hf + 2).enumerate() {
        for (i2, kk) in (kf - 1..=kf + 2).enumerate() {
            let ya: [T; 4] = std::array::from_fn(|i3| c(g.at(hh, kk, lf - 1 + i3 as i32)));
            over_k[i2] = polint(lf - 1, &ya, l);
        }
        over_h[i1] = polint(kf - 1, &over_k, k);
    }
    polint(hf - 1, &over_h, h)
}

/// Cubic Lagrange polynomial through `(x0 + i, ya[i])`, i = 0..3, at x (C's polint).
#[inline(always)]
pub fn polint<T: Real>(x0: i32, ya: &[T; 4], x: T) -> T {
    let xa: [T; 4] = std::array::from_fn(|i| c((x0 + i as i32) as f64));
    let t0 = (x - xa[1]) * (x - xa[2]) * (x - xa[3]) * ya[0]
        / ((xa[0] - xa[1]) * (xa[0] - xa[2]) * (xa[0] - xa[3]));
    let t1 = (x - xa[0]) * (x - xa[2]) * (x - xa[3]) * ya[1]
        / ((xa[1] - xa[0]) * (xa[1] - xa[2]) * (xa[1] - xa[3]));
    let t2 = (x - xa[0]) * (x - xa[1]) * (x - xa[3]) * ya[2]
        / ((xa[2] - xa[0]) * (xa[2] - xa[1]) * (xa[2] - xa[3]));
    let t3 = (x - xa[0]) * (x - xa[1]) * (x - xa[2]) * ya[3]
        / ((xa[3] - xa[0]) * (xa[3] - xa[1]) * (xa[3] - xa[2]));
    t0 + t1 + t2 + t3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polint_reproduces_cubics() {
        let f = |x: f64| 2.0 * x * x * x - x * x + 3.0 * x - 5.0;
        let ya = [f(-1.0), f(0.0), f(1.0), f(2.0)];
        for x in [-0.7, 0.2, 0.5, 1.9] {
            assert!((polint(-1, &ya, x) - f(x)).abs() < 1e-12);
        }
    }
}
