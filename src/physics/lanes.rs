//! The square lattice factor of one scattering vector over every phi step
//! and mosaic domain, several orientations per instruction (spec-a-core
//! "Lattice factor F_latt", shape square; the loop order of "Sampling &
//! Accumulation" is kept: lanes run over consecutive (phi, domain) pairs).
//!
//! The lanes do exactly the operations of [`super::lattice::f_latt`] with
//! [`super::lattice::sincg_pi_whole_n`], in the same order and without fused
//! multiply-adds, so every lane's value equals the scalar one bit for bit
//! (tests below, and tests/cpu_lanes.rs on whole images). The per-lane code is
//! plain arrays that the compiler vectorises; the width is chosen at run time
//! (AVX-512: 8 float64 / 16 float32 lanes, AVX2: 4 / 8, else SSE2: 2 / 4), and
//! because no instruction changes the rounding, the image bytes do not depend
//! on the CPU.
//!
//! Used for plain float32 and float64 renders of the square shape with whole
//! Na, Nb, Nc (the common case, and nanoBragg.c's default); every other
//! configuration (derivatives, other shapes, fractional N) keeps the scalar path.

use super::config::LatticeShape;
use super::lattice::{sincg_pi_whole_n, COS_PI_COEFFS, MAX_WHOLE_N, ROUND_LIMIT, ROUND_MAGIC};
use super::scalar::{Real, Vec3};
use std::ops::{Add, Mul, Neg, Sub};

/// A primitive float the lanes run in (f32 or f64).
pub trait LaneFloat:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
    + Send
    + Sync
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Adding and subtracting it rounds |x| < [`LaneFloat::LIMIT`] to the
    /// nearest integer, ties to even (1.5·2^52, 1.5·2^23 for float32).
    const MAGIC: Self;
    /// Below it [`LaneFloat::MAGIC`] rounds exactly.
    const LIMIT: Self;
    /// From f64 (exact for the values used: constants as the scalar path rounds them).
    fn from_f64(x: f64) -> Self;
    /// To f64 (exact).
    fn to_f64(self) -> f64;
    /// |x|.
    fn abs(self) -> Self;
    /// self · a + b rounded once (IEEE fusedMultiplyAdd: the same bits on
    /// every CPU, one instruction where the unit has FMA).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `cx`, negated when the integer `t - MAGIC` is odd. `t = x + MAGIC`
    /// holds that integer in its last mantissa bit (MAGIC is even).
    fn negate_if_odd(t: Self, cx: Self) -> Self;
}

/// The two impls differ only in the type, its sign bit and the rounding
/// constants.
macro_rules! lane_float {
    ($t:ident, $sign:expr, $magic:expr, $limit:expr) => {
        impl LaneFloat for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const MAGIC: Self = $magic;
            const LIMIT: Self = $limit;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                $t::mul_add(self, a, b)
            }
            #[inline(always)]
            fn negate_if_odd(t: Self, cx: Self) -> Self {
                $t::from_bits(cx.to_bits() ^ ((t.to_bits() & 1) << $sign))
            }
        }
    };
}

lane_float!(f64, 63, ROUND_MAGIC, ROUND_LIMIT);
// 1.5·2^23: for |x| < 2^22 (x + MAGIC) lies in [2^23, 2^24), where the
// float32 spacing is 1, so it rounds x to an integer, ties to even: the
// integer the scalar path gets by rounding x in float64.
lane_float!(f32, 31, 12582912.0, 4194304.0);

/// The rotated cell vectors of every (phi step, mosaic domain), component by
/// component (a.x, a.y, a.z, b.x, ..., c.z), padded with zeros to a whole
/// number of the widest lane group.
#[derive(Clone, Debug)]
pub struct OrientationLanes<P> {
    components: [Vec<P>; 9],
    count: usize,
}

/// Lane groups are padded to this many orientations (the widest group:
/// two AVX-512 registers of float32).
const PAD: usize = 32;

impl<P: LaneFloat> OrientationLanes<P> {
    /// From the (a, b, c) vectors of each orientation, as f64 values exact in P.
    pub fn new(orientations: impl ExactSizeIterator<Item = [[f64; 3]; 3]>) -> Self {
        let count = orientations.len();
        let padded = count.div_ceil(PAD) * PAD;
        let mut components: [Vec<P>; 9] = std::array::from_fn(|_| vec![P::ZERO; padded]);
        for (i, o) in orientations.enumerate() {
            for (v, vector) in o.iter().enumerate() {
                for (x, value) in vector.iter().enumerate() {
                    components[3 * v + x][i] = P::from_f64(*value);
                }
            }
        }
        OrientationLanes { components, count }
    }

    /// How many orientations.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The square lattice factor over lanes: which axes take part and with
/// which whole N (None: the axis is skipped, N <= 1 as C's `N > 1` test).
#[derive(Clone, Copy, Debug)]
pub struct SquareLanes {
    /// Whole N of each axis that multiplies its sincg, else None.
    pub n_whole: [Option<u32>; 3],
}

/// The vector width the lanes use on this CPU, in bits (512, 256 or 128).
pub fn vector_bits() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return 512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return 256;
        }
    }
    128
}

/// The vector unit a lane function is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorUnit {
    /// 512-bit registers (x86-64 AVX-512F).
    Avx512,
    /// 256-bit registers (x86-64 AVX2 with FMA).
    Avx2,
    /// 128-bit registers (the x86-64 baseline, and any other CPU).
    Sse2,
}

/// Run `f` compiled for the widest vector unit the CPU has, up to `bits`
/// (`usize::MAX`: the widest; the run-time choice: `f` and what it inlines
/// are compiled once per unit, and the CPU is asked once per call).
#[inline(always)]
fn on_vector_unit<R>(bits: usize, f: impl FnOnce(VectorUnit) -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<R>(f: impl FnOnce(VectorUnit) -> R) -> R {
            f(VectorUnit::Avx512)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce(VectorUnit) -> R) -> R {
            f(VectorUnit::Avx2)
        }
        let bits = bits.min(vector_bits());
        if bits >= 512 {
            // SAFETY: vector_bits() is 512 only when the CPU has AVX-512F.
            return unsafe { avx512(f) };
        }
        if bits >= 256 {
            // SAFETY: vector_bits() is 256 or more only when the CPU has AVX2.
            return unsafe { avx2(f) };
        }
    }
    f(VectorUnit::Sse2)
}

impl SquareLanes {
    /// The lanes for the square shape when every axis that takes part has a
    /// whole N up to [`MAX_WHOLE_N`] (as the scalar path's fast sincg).
    pub fn new(n_gt1: [bool; 3], n_whole: [Option<u32>; 3]) -> Option<Self> {
        let mut axes = [None; 3];
        for i in 0..3 {
            if n_gt1[i] {
                match n_whole[i] {
                    Some(n) if (1..=MAX_WHOLE_N).contains(&n) => axes[i] = Some(n),
                    _ => return None,
                }
            }
        }
        Some(SquareLanes { n_whole: axes })
    }

    /// F_latt (square) at h, k, l = a·S, b·S, c·S for orientations
    /// `start..start + out.len()`, written to `out` as f64 (exact in P), and
    /// with `slopes` ∂F_latt/∂h, ∂k, ∂l of each.
    pub fn f_latt<P: LaneFloat>(
        &self,
        lanes: &OrientationLanes<P>,
        scattering: [f64; 3],
        start: usize,
        out: &mut [f64],
        slopes: Option<&mut [[f64; 3]]>,
    ) {
        self.f_latt_bits(usize::MAX, lanes, scattering, start, out, slopes)
    }

    /// [`SquareLanes::f_latt`] at a given vector width (`bits` above what
    /// the CPU has falls back to the widest it has).
    pub fn f_latt_bits<P: LaneFloat>(
        &self,
        bits: usize,
        lanes: &OrientationLanes<P>,
        scattering: [f64; 3],
        start: usize,
        out: &mut [f64],
        slopes: Option<&mut [[f64; 3]]>,
    ) {
        assert!(start + out.len() <= lanes.count, "orientation range");
        if let Some(d) = &slopes {
            assert_eq!(d.len(), out.len(), "one slope triple per value");
        }
        let s = scattering.map(P::from_f64);
        // one compiled loop per vector unit and per kind (values; values and slopes)
        match slopes {
            None => on_vector_unit(
                bits,
                #[inline(always)]
                |unit| self.groups::<P, false>(unit, lanes, s, start, out, &mut []),
            ),
            Some(d) => on_vector_unit(
                bits,
                #[inline(always)]
                |unit| self.groups::<P, true>(unit, lanes, s, start, out, d),
            ),
        }
    }

    /// Groups of two registers of P (16 float64 or 32 float32 lanes on
    /// AVX-512) for the vector unit.
    #[inline(always)]
    fn groups<P: LaneFloat, const SLOPE: bool>(
        &self,
        unit: VectorUnit,
        lanes: &OrientationLanes<P>,
        s: [P; 3],
        start: usize,
        out: &mut [f64],
        slopes: &mut [[f64; 3]],
    ) {
        let wide = std::mem::size_of::<P>() == 8;
        match (unit, wide) {
            (VectorUnit::Avx512, true) => {
                self.groups_of::<P, 16, SLOPE>(lanes, s, start, out, slopes)
            }
            (VectorUnit::Avx512, false) => {
                self.groups_of::<P, 32, SLOPE>(lanes, s, start, out, slopes)
            }
            (VectorUnit::Avx2, true) => self.groups_of::<P, 8, SLOPE>(lanes, s, start, out, slopes),
            (VectorUnit::Avx2, false) => {
                self.groups_of::<P, 16, SLOPE>(lanes, s, start, out, slopes)
            }
            (VectorUnit::Sse2, true) => self.groups_of::<P, 4, SLOPE>(lanes, s, start, out, slopes),
            (VectorUnit::Sse2, false) => {
                self.groups_of::<P, 8, SLOPE>(lanes, s, start, out, slopes)
            }
        }
    }

    /// Groups of L lanes (two vector registers, so that two independent
    /// chains of the polynomial fill the pipeline) from `start`; the last group
    /// runs full width over the next orientations or the zero padding, and
    /// keeps what `out` asks for. `SLOPE`: also ∂F_latt/∂h, ∂k, ∂l.
    #[inline(always)]
    fn groups_of<P: LaneFloat, const L: usize, const SLOPE: bool>(
        &self,
        lanes: &OrientationLanes<P>,
        s: [P; 3],
        start: usize,
        out: &mut [f64],
        slopes: &mut [[f64; 3]],
    ) {
        let coeffs: [P; 10] = COS_PI_COEFFS.map(P::from_f64);
        let c = &lanes.components;
        let n = self.n_whole.map(|n| n.unwrap_or(0));
        let mut done = 0;
        while done < out.len() {
            let base = start + done;
            // h, k, l = a·S, b·S, c·S as dot_product writes it: (x sx + y sy) + z sz
            // (plain loops: array::from_fn and map do not always inline here)
            let mut hkl = [[P::ZERO; L]; 3];
            for (axis, h) in hkl.iter_mut().enumerate() {
                let x = &c[3 * axis][base..base + L];
                let y = &c[3 * axis + 1][base..base + L];
                let z = &c[3 * axis + 2][base..base + L];
                for j in 0..L {
                    h[j] = x[j] * s[0] + y[j] * s[1] + z[j] * s[2];
                }
            }
            let mut exact = true;
            for (axis, h) in hkl.iter().enumerate() {
                if n[axis] > 0 {
                    for hj in h {
                        // false for NaN too: the scalar path takes over the group
                        exact &= hj.abs() < P::LIMIT;
                    }
                }
            }
            let (g, dg) = sincg_pi_whole_n_lanes::<P, L, SLOPE>(&hkl, n, &coeffs);
            // F_latt = ((1 · g_a) · g_b) · g_c over the axes that take part
            let mut f = [P::ONE; L];
            for (axis, ga) in g.iter().enumerate() {
                if n[axis] > 0 {
                    for j in 0..L {
                        f[j] = f[j] * ga[j];
                    }
                }
            }
            let take = L.min(out.len() - done);
            if !exact {
                for j in 0..take {
                    let (v, d) = self.f_latt_one(c, base + j, s);
                    out[done + j] = v;
                    if SLOPE {
                        slopes[done + j] = d;
                    }
                }
                done += take;
                continue;
            }
            for j in 0..take {
                out[done + j] = f[j].to_f64();
            }
            if SLOPE {
                // ∂F_latt/∂h_a = g_a' times the other axes' factors
                for (j, d) in slopes[done..done + take].iter_mut().enumerate() {
                    for a in 0..3 {
                        d[a] = 0.0;
                        if n[a] > 0 {
                            let mut p = dg[a][j];
                            for b in 0..3 {
                                if b != a && n[b] > 0 {
                                    p = p * g[b][j];
                                }
                            }
                            d[a] = p.to_f64();
                        }
                    }
                }
            }
            done += take;
        }
    }

    /// One orientation through the scalar functions (lanes whose indices
    /// the rounding trick does not cover): F_latt and ∂F_latt/∂h, ∂k, ∂l.
    fn f_latt_one<P: LaneFloat>(&self, c: &[Vec<P>; 9], i: usize, s: [P; 3]) -> (f64, [f64; 3]) {
        let mut f = P::ONE;
        let mut g = [(1.0, 0.0); 3];
        for (axis, n) in self.n_whole.iter().enumerate() {
            let Some(n) = *n else { continue };
            let h = c[3 * axis][i] * s[0] + c[3 * axis + 1][i] * s[1] + c[3 * axis + 2][i] * s[2];
            let v = if std::mem::size_of::<P>() == 8 {
                sincg_pi_whole_n(h.to_f64(), n)
            } else {
                sincg_pi_whole_n(h.to_f64() as f32, n) as f64
            };
            let d = sincg_pi_whole_n(num_dual::Dual64::from(h.to_f64()).derivative(), n).eps;
            g[axis] = (v, d);
            f = f * P::from_f64(v);
        }
        let slopes = std::array::from_fn(|a| {
            (0..3).fold(g[a].1, |p, b| if b == a { p } else { p * g[b].0 })
        });
        (f.to_f64(), slopes)
    }
}

/// The orientations in the render's precision.
#[derive(Clone, Debug)]
pub enum LaneOrientations {
    /// float64 renders.
    F64(OrientationLanes<f64>),
    /// float32 renders.
    F32(OrientationLanes<f32>),
}

impl LaneOrientations {
    fn of<T: Real>(orientations: &[[Vec3<T>; 3]]) -> Option<Self> {
        let values = orientations.iter().map(|o| o.map(|v| v.val()));
        match std::mem::size_of::<T>() {
            8 => Some(Self::F64(OrientationLanes::new(values))),
            4 => Some(Self::F32(OrientationLanes::new(values))),
            _ => None,
        }
    }
}

/// The lane path of a model: the square shape's axes and the orientations of
/// the first executed phi sweep and of every later one.
#[derive(Clone, Debug)]
pub struct LatticeLanes {
    square: SquareLanes,
    first: LaneOrientations,
    rest: LaneOrientations,
}

impl LatticeLanes {
    /// The lanes for the square shape with whole N; None otherwise. For a
    /// plain float32 or float64 render (`derivatives` false, T with no
    /// derivative part) in T's precision; for a render with derivatives (T a
    /// float64 dual) over the orientations' float64 values.
    pub fn build<T: Real>(
        shape: LatticeShape,
        n_gt1: [bool; 3],
        n_whole: [Option<u32>; 3],
        [first, rest]: [&[[Vec3<T>; 3]]; 2],
        derivatives: bool,
    ) -> Option<Self> {
        let plain = std::mem::size_of::<T>() == std::mem::size_of::<T::Primitive>();
        if shape != LatticeShape::Square || plain == derivatives {
            return None;
        }
        let of = |o: &[[Vec3<T>; 3]]| match derivatives {
            true => Some(LaneOrientations::F64(OrientationLanes::new(
                o.iter().map(|o| o.map(|v| v.val())),
            ))),
            false => LaneOrientations::of(o),
        };
        Some(LatticeLanes {
            square: SquareLanes::new(n_gt1, n_whole)?,
            first: of(first)?,
            rest: of(rest)?,
        })
    }

    /// F_latt for orientations `start..start + out.len()` of the first sweep
    /// (`first`) or a later one, at the scattering vector S (exact in T); with
    /// `slopes`, also ∂F_latt/∂h, ∂k, ∂l of each.
    #[inline]
    pub fn f_latt(
        &self,
        first: bool,
        scattering: [f64; 3],
        start: usize,
        out: &mut [f64],
        slopes: Option<&mut [[f64; 3]]>,
    ) {
        match if first { &self.first } else { &self.rest } {
            LaneOrientations::F64(l) => self.square.f_latt(l, scattering, start, out, slopes),
            LaneOrientations::F32(l) => self.square.f_latt(l, scattering, start, out, slopes),
        }
    }
}

/// Derivative directions the derivative lane path carries (the engines'
/// chunk of directions per pass).
pub const DERIVATIVE_LANES: usize = 8;

/// Length of one axis's part of a [`DerivativeRow`]: the 3 (1 + k)
/// values of k <= [`DERIVATIVE_LANES`] directions, rounded up to whole
/// 256-bit registers.
pub const ROW_AXIS: usize = 28;

/// One orientation's cell vectors with their derivative components, per
/// axis (a, b, c): component x of the axis's vector at `x (k + 1)` and its
/// derivative along direction p at `x (k + 1) + 1 + p` (k directions, zeros
/// after). A term with weight w adds w times the whole row: the vector and
/// its derivatives in one sweep of fused multiply-adds. Aligned so that
/// vector loads do not straddle cache lines.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub struct DerivativeRow(pub [[f64; ROW_AXIS]; 3]);

impl DerivativeRow {
    /// The row of `vectors` (a, b, c) with `eps(axis, x, p)` the p-th
    /// derivative component of component x of an axis's vector, k directions.
    pub fn new(vectors: [[f64; 3]; 3], k: usize, eps: impl Fn(usize, usize, usize) -> f64) -> Self {
        assert!(k <= DERIVATIVE_LANES);
        let mut row = [[0.0; ROW_AXIS]; 3];
        for (axis, r) in row.iter_mut().enumerate() {
            for x in 0..3 {
                r[x * (k + 1)] = vectors[axis][x];
                for p in 0..k {
                    r[x * (k + 1) + 1 + p] = eps(axis, x, p);
                }
            }
        }
        DerivativeRow(row)
    }
}

/// The derivative rows of one list of orientations (a phi sweep's (phi
/// step, mosaic domain) pairs), in one of two forms:
///
/// - direct: each row holds the orientation's cell vectors and their k
///   derivative components;
/// - factored, when every orientation is a fixed rotation of the first
///   (o_j = Q_j o_0 with Q_j free of the differentiated parameters: cell,
///   misset, detector and beam parameters, and phi_start, whose turn about
///   the spindle commutes with the steps'; not the oscillation range or the
///   mosaic spread, which change the rotations between orientations): each
///   row holds the vectors and Q_j, and the derivatives are o_0's, so that
///   Σ_j w_j (do_j) = (Σ_j w_j Q_j) do_0. The sums then cost 3 x 12 values
///   per term whatever k, against 3 x 3 (k + 1).
#[derive(Clone, Debug)]
pub struct DerivativeRows {
    /// One row per orientation.
    pub rows: Vec<DerivativeRow>,
    /// Factored: the first orientation's derivative components,
    /// `[axis][component][direction]`.
    pub first_derivatives: Option<[[[f64; DERIVATIVE_LANES]; 3]; 3]>,
    /// Directions (k).
    pub k: usize,
}

impl DerivativeRows {
    /// Largest error of Q_j do_0 against do_j, relative to the largest
    /// derivative component of the direction, that the factored form
    /// accepts (the rotations' own rounding is ~1e-16).
    pub const FACTOR_TOLERANCE: f64 = 1e-13;

    /// The rows of the orientations with cell vectors `vectors` (a, b, c of
    /// each) and `eps(j, axis, x, p)`: the p-th derivative component of
    /// component x of orientation j's vector `axis`. Factored where that is
    /// smaller and holds to [`Self::FACTOR_TOLERANCE`], else direct.
    pub fn new(
        vectors: &[[[f64; 3]; 3]],
        k: usize,
        eps: impl Fn(usize, usize, usize, usize) -> f64,
    ) -> Self {
        assert!(k <= DERIVATIVE_LANES);
        // factored rows are 3 x (1 + 3) long: smaller only from k = 4
        if k >= 4 {
            if let Some(f) = Self::factored(vectors, k, &eps) {
                return f;
            }
        }
        Self::direct(vectors, k, eps)
    }

    /// The direct form: each row the orientation's vectors and their k
    /// derivative components.
    pub fn direct(
        vectors: &[[[f64; 3]; 3]],
        k: usize,
        eps: impl Fn(usize, usize, usize, usize) -> f64,
    ) -> Self {
        DerivativeRows {
            rows: (0..vectors.len())
                .map(|j| DerivativeRow::new(vectors[j], k, |axis, x, p| eps(j, axis, x, p)))
                .collect(),
            first_derivatives: None,
            k,
        }
    }

    fn factored(
        vectors: &[[[f64; 3]; 3]],
        k: usize,
        eps: &impl Fn(usize, usize, usize, usize) -> f64,
    ) -> Option<Self> {
        // the matrix whose columns are an orientation's a, b, c
        let columns = |o: &[[f64; 3]; 3]| nalgebra::Matrix3::from_fn(|x, axis| o[axis][x]);
        let first_inverse = columns(vectors.first()?).try_inverse()?;
        let q: Vec<nalgebra::Matrix3<f64>> =
            vectors.iter().map(|o| columns(o) * first_inverse).collect();
        let mut first = [[[0.0; DERIVATIVE_LANES]; 3]; 3];
        for (axis, fa) in first.iter_mut().enumerate() {
            for (y, fy) in fa.iter_mut().enumerate() {
                for (p, v) in fy.iter_mut().enumerate().take(k) {
                    *v = eps(0, axis, y, p);
                }
            }
        }
        // every orientation's derivatives must be Q_j do_0 to the tolerance
        for p in 0..k {
            let mut largest = 0.0f64;
            let mut worst = 0.0f64;
            for (j, qj) in q.iter().enumerate() {
                for (axis, fa) in first.iter().enumerate() {
                    for x in 0..3 {
                        let want = eps(j, axis, x, p);
                        let got: f64 = (0..3).map(|y| qj[(x, y)] * fa[y][p]).sum();
                        if !(want.is_finite() && got.is_finite()) {
                            return None;
                        }
                        largest = largest.max(want.abs());
                        worst = worst.max((got - want).abs());
                    }
                }
            }
            if worst > Self::FACTOR_TOLERANCE * largest {
                return None;
            }
        }
        let rows = vectors
            .iter()
            .zip(&q)
            .map(|(o, qj)| DerivativeRow::new(*o, 3, |_, x, y| qj[(x, y)]))
            .collect();
        Some(DerivativeRows {
            rows,
            first_derivatives: Some(first),
            k,
        })
    }

    /// Directions the sums carry per vector component: k direct, 3 factored
    /// (a row of Q_j).
    pub fn row_directions(&self) -> usize {
        if self.first_derivatives.is_some() {
            3
        } else {
            self.k
        }
    }

    /// Σ_axis Σ_x S_x Σ_j w_j,axis (do_j,axis)_x along each direction p
    /// (the first k entries), from sums over these rows.
    pub fn orientation_derivatives(
        &self,
        sums: &DerivativeSums,
        s: [f64; 3],
    ) -> [f64; DERIVATIVE_LANES] {
        let mut e = [0.0; DERIVATIVE_LANES];
        match &self.first_derivatives {
            // (S^T W_axis) do_0,axis with W_axis = Σ_j w_j,axis Q_j
            Some(first) => {
                for (axis, fa) in first.iter().enumerate() {
                    for (y, fy) in fa.iter().enumerate() {
                        let mut v = 0.0;
                        for (x, sx) in s.iter().enumerate() {
                            v += sx * sums.derivative(axis, x, y);
                        }
                        for (ep, dp) in e.iter_mut().zip(fy).take(self.k) {
                            *ep += v * dp;
                        }
                    }
                }
            }
            None => {
                for (p, ep) in e.iter_mut().enumerate().take(self.k) {
                    for axis in 0..3 {
                        for (x, sx) in s.iter().enumerate() {
                            *ep += sx * sums.derivative(axis, x, p);
                        }
                    }
                }
            }
        }
        e
    }
}

/// Running sums over the (phi step, mosaic domain) terms of one pixel and
/// source on the derivative lane path (see `Model::sum_on_derivative_lanes`).
#[derive(Clone, Debug)]
pub struct DerivativeSums {
    /// The pixel's running value: the forward render's sum, term by term.
    pub value: f64,
    /// Σ F_latt^2.
    pub fl_sqr: f64,
    /// Σ w_axis (the axis's part of the [`DerivativeRow`]), w = 2 F_latt
    /// ∂F_latt/∂h_axis: the cell vector's sum at `x (k + 1)`, its derivative
    /// components' after it.
    pub rows: [[f64; ROW_AXIS]; 3],
    /// Derivative directions (k).
    pub k: usize,
    /// Terms taken (structure-factor evaluations).
    pub evals: usize,
}

impl DerivativeSums {
    /// Sums of k directions that start from the pixel's running value.
    pub fn new(value: f64, k: usize) -> Self {
        assert!(k <= DERIVATIVE_LANES);
        DerivativeSums {
            value,
            fl_sqr: 0.0,
            rows: [[0.0; ROW_AXIS]; 3],
            k,
            evals: 0,
        }
    }

    /// Σ w_axis (component x of the axis's vector).
    pub fn vector(&self, axis: usize, x: usize) -> f64 {
        self.rows[axis][x * (self.k + 1)]
    }

    /// Σ w_axis (component x's derivative along direction p).
    pub fn derivative(&self, axis: usize, x: usize, p: usize) -> f64 {
        self.rows[axis][x * (self.k + 1) + 1 + p]
    }

    /// Add the terms of F_latt values `fl` with slopes `slopes` for the
    /// orientations whose rows are `rows`. `f_sqr` is F^2; a term with
    /// F_latt = 0 is skipped unless `keep_zero` (C skips it when there is no
    /// water background).
    pub fn add(
        &mut self,
        fl: &[f64],
        slopes: &[[f64; 3]],
        rows: &[DerivativeRow],
        f_sqr: f64,
        keep_zero: bool,
    ) {
        let n = fl.len();
        assert!(slopes.len() == n && rows.len() == n);
        // the value, term by term in the forward render's order (same bits)
        for &f in fl {
            if !Self::takes(f, keep_zero) {
                continue;
            }
            self.evals += 1;
            // (F^2 fl) fl, as the scalar loop multiplies
            self.value += f_sqr * f * f;
            self.fl_sqr += f * f;
        }
        // the rows' sums: only the used length, in whole registers
        match 3 * (self.k + 1) {
            0..=8 => self.add_rows::<8>(fl, slopes, rows, keep_zero),
            9..=12 => self.add_rows::<12>(fl, slopes, rows, keep_zero),
            13..=16 => self.add_rows::<16>(fl, slopes, rows, keep_zero),
            17..=20 => self.add_rows::<20>(fl, slopes, rows, keep_zero),
            21..=24 => self.add_rows::<24>(fl, slopes, rows, keep_zero),
            _ => self.add_rows::<ROW_AXIS>(fl, slopes, rows, keep_zero),
        }
    }

    /// Whether a term with F_latt `f` is summed: C skips F_latt = 0 when
    /// there is no water background (`keep_zero` false).
    #[inline(always)]
    fn takes(f: f64, keep_zero: bool) -> bool {
        f != 0.0 || keep_zero
    }

    /// Σ w_axis row_axis over the first LEN entries of each axis's row. Up
    /// to 12 entries (3 AVX2 registers an axis), the three axes in one sweep
    /// over the terms: 9 independent chains of fused multiply-adds. Longer,
    /// one axis at a time with two interleaved partial sums (even and odd
    /// terms): 2 LEN / 4 registers (12 of AVX2's 16 for LEN 24). The
    /// derivatives' summation order is not the scalar dual path's; they
    /// agree to rounding (tests/cpu_lanes.rs).
    fn add_rows<const LEN: usize>(
        &mut self,
        fl: &[f64],
        slopes: &[[f64; 3]],
        rows: &[DerivativeRow],
        keep_zero: bool,
    ) {
        let n = fl.len();
        // a skipped term weighs 0 (its F_latt is 0, so w is too, for finite slopes)
        let weights = |j: usize| -> [f64; 3] {
            let f = fl[j];
            let s = &slopes[j];
            if Self::takes(f, keep_zero) {
                [2.0 * f * s[0], 2.0 * f * s[1], 2.0 * f * s[2]]
            } else {
                [0.0; 3]
            }
        };
        // fused multiply-adds: exactly rounded on every CPU, so the bytes do
        // not depend on the CPU
        if LEN <= 12 {
            let sums = &mut self.rows;
            return on_vector_unit(
                usize::MAX,
                #[inline(always)]
                |_| {
                    let mut acc = [[0.0f64; LEN]; 3];
                    for axis in 0..3 {
                        acc[axis].copy_from_slice(&sums[axis][..LEN]);
                    }
                    for (j, row) in rows.iter().enumerate().take(n) {
                        let w = weights(j);
                        for axis in 0..3 {
                            let r: &[f64; LEN] = row.0[axis][..LEN].try_into().unwrap();
                            for i in 0..LEN {
                                acc[axis][i] = w[axis].mul_add(r[i], acc[axis][i]);
                            }
                        }
                    }
                    for axis in 0..3 {
                        sums[axis][..LEN].copy_from_slice(&acc[axis]);
                    }
                },
            );
        }
        for axis in 0..3 {
            let sums = &mut self.rows[axis];
            on_vector_unit(
                usize::MAX,
                #[inline(always)]
                |_| {
                    let mut even = [0.0f64; LEN];
                    let mut odd = [0.0f64; LEN];
                    even.copy_from_slice(&sums[..LEN]);
                    let mut j = 0;
                    while j + 1 < n {
                        let (w0, w1) = (weights(j)[axis], weights(j + 1)[axis]);
                        let r0: &[f64; LEN] = rows[j].0[axis][..LEN].try_into().unwrap();
                        let r1: &[f64; LEN] = rows[j + 1].0[axis][..LEN].try_into().unwrap();
                        for i in 0..LEN {
                            even[i] = w0.mul_add(r0[i], even[i]);
                            odd[i] = w1.mul_add(r1[i], odd[i]);
                        }
                        j += 2;
                    }
                    if j < n {
                        let w0 = weights(j)[axis];
                        for (e, r) in even.iter_mut().zip(&rows[j].0[axis][..LEN]) {
                            *e = w0.mul_add(*r, *e);
                        }
                    }
                    for i in 0..LEN {
                        sums[i] = even[i] + odd[i];
                    }
                },
            )
        }
    }
}

/// [`sincg_pi_whole_n`] on L lanes of each of h, k, l, with whole N `n`
/// (0: the axis is skipped and its lanes hold 1): the same operations in the
/// same order (valid where every |h| < [`LaneFloat::LIMIT`]). With `SLOPE`,
/// also d/dh of each (forward mode through the same polynomial and
/// recurrence; the values are unchanged).
///
/// The three axes advance side by side, step by step, so that each step has
/// six independent register chains (the polynomial and the recurrence are
/// latency-bound chains). Every step is a call on one axis's `[P; L]`: a
/// whole number of vector registers. Written as one 3 L-wide block, the
/// float64 AVX2 code was vectorised with shuffles and a scalar lane, and took
/// twice the time.
#[inline(always)]
fn sincg_pi_whole_n_lanes<P: LaneFloat, const L: usize, const SLOPE: bool>(
    hkl: &[[P; L]; 3],
    n: [u32; 3],
    coeffs: &[P; 10],
) -> ([[P; L]; 3], [[P; L]; 3]) {
    let zero = [[P::ZERO; L]; 3];
    // k = round(h), ties to even; r = h - k
    let (mut t, mut r, mut r2) = (zero, zero, zero);
    for a in 0..3 {
        reduce(&hkl[a], &mut t[a], &mut r[a], &mut r2[a]);
    }
    // cos(π r): Horner in r^2 (cos_pi_reduced); d(r^2)/dh = 2 r
    let mut acc = [[coeffs[9]; L]; 3];
    let mut dacc = zero;
    // written out step by step: as a loop, the accumulators are carried
    // from one iteration to the next, and those the compiler regrouped
    // across registers with shuffles
    macro_rules! horner_steps {
        ($($k:literal)*) => {$(
            for a in 0..3 {
                horner_step::<P, L, SLOPE>(&mut acc[a], &mut dacc[a], &r[a], &r2[a], coeffs[$k]);
            }
        )*};
    }
    horner_steps!(8 7 6 5 4 3 2 1 0);
    // cos(π h) = (-1)^k cos(π r); U_{N-1}(cos π h) by the three-term recurrence
    let (mut two_c, mut d_two_c) = (zero, zero);
    for a in 0..3 {
        twice_signed::<P, L, SLOPE>(&t[a], &acc[a], &dacc[a], &mut two_c[a], &mut d_two_c[a]);
    }
    let mut u_prev = [[P::ONE; L]; 3];
    let mut u = two_c;
    let (mut du_prev, mut du) = (zero, d_two_c);
    let n_max = n.iter().copied().max().unwrap_or(0);
    for i in 2..n_max {
        for a in 0..3 {
            if i < n[a] {
                recurrence_step::<P, L, SLOPE>(
                    &two_c[a],
                    &d_two_c[a],
                    &mut u[a],
                    &mut u_prev[a],
                    &mut du[a],
                    &mut du_prev[a],
                );
            }
        }
    }
    for a in 0..3 {
        if n[a] <= 1 {
            u[a] = [P::ONE; L];
            du[a] = [P::ZERO; L];
        }
    }
    (u, du)
}

/// t = h + MAGIC (round(h) in its last bit), r = h - round(h), r^2.
#[inline(always)]
fn reduce<P: LaneFloat, const L: usize>(
    h: &[P; L],
    t: &mut [P; L],
    r: &mut [P; L],
    r2: &mut [P; L],
) {
    for j in 0..L {
        t[j] = h[j] + P::MAGIC;
        r[j] = h[j] - (t[j] - P::MAGIC);
        r2[j] = r[j] * r[j];
    }
}

/// One Horner step acc = acc r^2 + c (and its slope).
#[inline(always)]
fn horner_step<P: LaneFloat, const L: usize, const SLOPE: bool>(
    acc: &mut [P; L],
    dacc: &mut [P; L],
    r: &[P; L],
    r2: &[P; L],
    c: P,
) {
    for j in 0..L {
        if SLOPE {
            // the slopes are new numbers: fused (the values are not)
            dacc[j] = dacc[j].mul_add(r2[j], acc[j] * (r[j] + r[j]));
        }
        acc[j] = acc[j] * r2[j] + c;
    }
}

/// 2 cos(π h) from cos(π r) and the parity of round(h) (and its slope).
#[inline(always)]
fn twice_signed<P: LaneFloat, const L: usize, const SLOPE: bool>(
    t: &[P; L],
    acc: &[P; L],
    dacc: &[P; L],
    two_c: &mut [P; L],
    d_two_c: &mut [P; L],
) {
    for j in 0..L {
        let cx = P::negate_if_odd(t[j], acc[j]);
        two_c[j] = cx + cx;
        if SLOPE {
            let dcx = P::negate_if_odd(t[j], dacc[j]);
            d_two_c[j] = dcx + dcx;
        }
    }
}

/// One step U_{i} = 2c U_{i-1} - U_{i-2} (and its slope).
#[inline(always)]
fn recurrence_step<P: LaneFloat, const L: usize, const SLOPE: bool>(
    two_c: &[P; L],
    d_two_c: &[P; L],
    u: &mut [P; L],
    u_prev: &mut [P; L],
    du: &mut [P; L],
    du_prev: &mut [P; L],
) {
    for j in 0..L {
        if SLOPE {
            let dnext = d_two_c[j].mul_add(u[j], two_c[j].mul_add(du[j], -du_prev[j]));
            du_prev[j] = du[j];
            du[j] = dnext;
        }
        let next = two_c[j] * u[j] - u_prev[j];
        u_prev[j] = u[j];
        u[j] = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physics::lattice::f_latt;

    /// A deterministic stream of numbers in [-1, 1) (xorshift64) from `seed`.
    fn uniform(mut seed: u64) -> impl FnMut() -> f64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    /// A deterministic stream of orientations and scattering vectors with the
    /// edges in it: indices at exact integers, half-integers, 0, tiny and huge.
    fn cases() -> Vec<([[f64; 3]; 3], [f64; 3])> {
        let mut next = uniform(0x9E37_79B9_7F4A_7C15);
        let mut out = vec![];
        for i in 0..600 {
            let scale = [1e-3, 1.0, 7.0, 60.0, 1e7, 1e16][i % 6];
            let o = [
                [next(), next(), next()],
                [next(), next(), next()],
                [next(), next(), next()],
            ]
            .map(|v| v.map(|x| x * scale));
            out.push((o, [next(), next(), next()]));
        }
        // exact integers, half-integers and 0 along each axis: S = e_x,
        // orientation x components chosen
        for v in [
            0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -3.5, 17.0, 1e-300, 4194303.5, 4194304.0,
        ] {
            out.push((
                [[v, 0.0, 0.0], [-v, 0.0, 0.0], [v * 0.5, 0.0, 0.0]],
                [1.0, 0.0, 0.0],
            ));
        }
        out.push((
            [
                [f64::NAN, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [f64::INFINITY, 0.0, 0.0],
            ],
            [1.0, 0.0, 0.0],
        ));
        out
    }

    fn scalar<T: crate::physics::scalar::Real>(
        o: &[[f64; 3]; 3],
        s: [f64; 3],
        n_gt1: [bool; 3],
        n_whole: [Option<u32>; 3],
    ) -> T {
        let s = Vec3::<T>::cst(s);
        let v = o.map(|a| Vec3::<T>::cst(a));
        let h = crate::physics::scalar::dot_product(&v[0], &s);
        let k = crate::physics::scalar::dot_product(&v[1], &s);
        let l = crate::physics::scalar::dot_product(&v[2], &s);
        let n = n_whole.map(|w| T::cst(w.unwrap_or(1) as f64));
        let recip = [Vec3::<T>::zero(); 3];
        f_latt(
            LatticeShape::Square,
            h,
            k,
            l,
            &n,
            n_gt1,
            n_whole,
            false,
            &recip,
            1.0,
            None,
        )
    }

    fn check<P: LaneFloat + crate::physics::scalar::Real>(round: impl Fn(f64) -> f64) {
        let cases = cases();
        for (n_gt1, n_whole) in [
            ([true; 3], [Some(5), Some(5), Some(5)]),
            ([true, false, true], [Some(2), Some(1), Some(48)]),
            ([false; 3], [Some(1), Some(1), Some(1)]),
            ([true; 3], [Some(3), Some(10), Some(25)]),
        ] {
            let lanes_of = SquareLanes::new(n_gt1, n_whole).unwrap();
            for (o, s) in &cases {
                // the same orientation 37 times (a partial last group at every width)
                let o = o.map(|v| v.map(&round));
                let s = s.map(&round);
                let lanes = OrientationLanes::<P>::new(std::iter::repeat_n(o, 37));
                let want = scalar::<P>(&o, s, n_gt1, n_whole).val();
                for bits in [128, 256, 512] {
                    let mut out = vec![0.0; 37];
                    lanes_of.f_latt_bits(bits, &lanes, s, 0, &mut out, None);
                    for got in &out {
                        assert!(
                            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                            "{bits} bits, o {o:?} s {s:?}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lanes_equal_scalar_f64_bit_for_bit() {
        check::<f64>(|x| x);
    }

    #[test]
    fn lanes_equal_scalar_f32_bit_for_bit() {
        check::<f32>(|x| x as f32 as f64);
    }

    #[test]
    fn only_whole_n_takes_lanes() {
        assert!(SquareLanes::new([true; 3], [Some(5), None, Some(5)]).is_none());
        assert!(SquareLanes::new([true, false, true], [Some(5), None, Some(5)]).is_some());
        assert!(SquareLanes::new([true; 3], [Some(5), Some(49), Some(5)]).is_none());
    }

    /// One orientation's derivative components, `[axis][component][direction]`.
    type Derivatives = [[[f64; 8]; 3]; 3];

    /// Orientations o_j = Q_j o_0 (Q_j rotations about random axes) with
    /// derivatives Q_j do_0, k directions; `bend` adds j-dependent terms that
    /// no fixed rotation gives (as a phi or mosaic parameter does).
    fn rotated(k: usize, bend: f64) -> (Vec<[[f64; 3]; 3]>, Vec<Derivatives>) {
        let mut next = uniform(0x2545_F491_4F6C_DD1D);
        // a triclinic cell in metres and its derivatives
        let o0 = [
            [7e-9, 0.3e-9, -0.2e-9],
            [1e-9, 8e-9, 0.4e-9],
            [-0.5e-9, 2e-9, 9e-9],
        ];
        let mut d0 = [[[0.0; 8]; 3]; 3];
        for v in d0.iter_mut().flatten().flat_map(|c| c[..k].iter_mut()) {
            *v = next() * 1e-10;
        }
        let (mut vectors, mut derivs) = (vec![], vec![]);
        for j in 0..37 {
            let axis = nalgebra::Vector3::new(next(), next(), next()).normalize();
            let q = *nalgebra::Rotation3::from_axis_angle(
                &nalgebra::Unit::new_unchecked(axis),
                next() * 0.1,
            )
            .matrix();
            let o = std::array::from_fn(|a| {
                let v = q * nalgebra::Vector3::from(o0[a]);
                [v.x, v.y, v.z]
            });
            let d = std::array::from_fn(|a| {
                std::array::from_fn(|x| {
                    std::array::from_fn(|p| {
                        (0..3).map(|y| q[(x, y)] * d0[a][y][p]).sum::<f64>()
                            + bend * j as f64 * 1e-12 * (p + 1) as f64
                    })
                })
            });
            vectors.push(o);
            derivs.push(d);
        }
        (vectors, derivs)
    }

    /// The sums over rows and the orientation derivatives they give, for
    /// random weights and F_latt values (some exactly 0) and a fixed S.
    fn orientation_derivatives(rows: &DerivativeRows) -> Vec<f64> {
        let n = rows.rows.len();
        let fl: Vec<f64> = (0..n)
            .map(|j| {
                if j % 5 == 2 {
                    0.0
                } else {
                    0.3 + j as f64 * 0.01
                }
            })
            .collect();
        let slopes: Vec<[f64; 3]> = (0..n)
            .map(|j| [1.0 - j as f64 * 0.05, 0.2 * j as f64, -0.7])
            .collect();
        let mut sums = DerivativeSums::new(0.0, rows.row_directions());
        // in two chunks, as the pixel loop calls it
        let half = n / 2;
        sums.add(&fl[..half], &slopes[..half], &rows.rows[..half], 4.0, false);
        sums.add(&fl[half..], &slopes[half..], &rows.rows[half..], 4.0, false);
        let s = [0.11e10, -0.23e10, 0.05e10];
        rows.orientation_derivatives(&sums, s)[..rows.k].to_vec()
    }

    #[test]
    fn factored_rows_give_the_direct_rows_derivatives() {
        for k in 4..=DERIVATIVE_LANES {
            let (vectors, derivs) = rotated(k, 0.0);
            let eps = |j: usize, a: usize, x: usize, p: usize| derivs[j][a][x][p];
            let factored = DerivativeRows::new(&vectors, k, eps);
            assert!(
                factored.first_derivatives.is_some(),
                "k = {k}: not factored"
            );
            assert_eq!(factored.row_directions(), 3);
            let direct = DerivativeRows::direct(&vectors, k, eps);
            let (f, d) = (
                orientation_derivatives(&factored),
                orientation_derivatives(&direct),
            );
            for p in 0..k {
                assert!(d[p] != 0.0, "k = {k}, direction {p}: zero");
                assert!(
                    (f[p] - d[p]).abs() <= 1e-12 * d[p].abs(),
                    "k = {k}, direction {p}: factored {} direct {}",
                    f[p],
                    d[p]
                );
            }
        }
    }

    #[test]
    fn rows_stay_direct_where_factoring_does_not_hold_or_pay() {
        // derivatives that are not a fixed rotation of the first's
        let (vectors, derivs) = rotated(6, 1.0);
        let rows = DerivativeRows::new(&vectors, 6, |j, a, x, p| derivs[j][a][x][p]);
        assert!(rows.first_derivatives.is_none());
        assert_eq!(rows.row_directions(), 6);
        // a non-finite derivative
        let (vectors, mut derivs) = rotated(6, 0.0);
        derivs[3][1][2][4] = f64::NAN;
        let rows = DerivativeRows::new(&vectors, 6, |j, a, x, p| derivs[j][a][x][p]);
        assert!(rows.first_derivatives.is_none());
        // 3 directions: direct rows are no longer than factored ones
        let (vectors, derivs) = rotated(3, 0.0);
        let rows = DerivativeRows::new(&vectors, 3, |j, a, x, p| derivs[j][a][x][p]);
        assert!(rows.first_derivatives.is_none());
        // a first orientation with no inverse
        let mut flat = vectors.clone();
        flat[0][2] = flat[0][0];
        let (_, derivs) = rotated(6, 0.0);
        let rows = DerivativeRows::new(&flat, 6, |j, a, x, p| derivs[j][a][x][p]);
        assert!(rows.first_derivatives.is_none());
    }
}
