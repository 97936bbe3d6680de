//! Lattice transforms of the crystal shape (spec-a-core "Lattice factor F_latt").

use super::config::LatticeShape;
use super::scalar::{c, sqrt_safe, Real, Vec3};

/// sincg(x, N) = sin(N x)/sin(x), the grating function; N at x = 0.
#[inline(always)]
pub fn sincg<T: Real>(x: T, n: T) -> T {
    if x.val() == 0.0 {
        n
    } else {
        (n * x).sin() / x.sin()
    }
}

/// sinc3(x) = 3 (sin x / x - cos x) / x^2, the sphere transform; 1 at x = 0.
#[inline(always)]
pub fn sinc3<T: Real>(x: T) -> T {
    if x.val() == 0.0 {
        c(1.0)
    } else {
        c::<T>(3.0) * (x.sin() / x - x.cos()) / (x * x)
    }
}

/// cos(π r) for |r| <= 1/2: Taylor series in (π r)^2 to the 18th power;
/// the first dropped term is below 3.5e-15 on that interval.
#[inline(always)]
pub fn cos_pi_reduced<T: Real>(r: T) -> T {
    const C: [f64; 10] = COS_PI_COEFFS;
    let r2 = r * r;
    let mut acc = c::<T>(C[9]);
    for k in (0..9).rev() {
        acc = acc * r2 + c::<T>(C[k]);
    }
    acc
}

// The numbers below are shared with the CUDA kernel: engine::cuda::interface
// writes them into the header prepended to kernel.cu, so each has one source.

/// Taylor coefficients of cos(π r) in powers of (π r)^2 ([`cos_pi_reduced`]).
pub const COS_PI_COEFFS: [f64; 10] = [
    1.0,
    -4.934802200544679,
    4.058712126416768,
    -1.3352627688545893,
    0.2353306303588932,
    -0.025_806_891_390_014_06,
    0.0019295743094039231,
    -0.000_104_638_104_924_845_7,
    4.303_069_587_032_947e-6,
    -1.3878952462213773e-7,
];
/// 1.5·2^52: adding and subtracting it rounds |x| < 2^51 to the nearest
/// integer, ties to even ([`round_half_even`]).
pub const ROUND_MAGIC: f64 = 6755399441055744.0;
/// 2^51: below it [`ROUND_MAGIC`] rounds exactly.
pub const ROUND_LIMIT: f64 = 2251799813685248.0;
/// The round (sphere) shape's normalisation of Na Nb Nc sinc3 (spec-a-core
/// "Lattice factor F_latt", shape round).
pub const ROUND_SHAPE_NORM: f64 = 0.723601254558268;
/// The Gaussian shape's width: exp(-(rad_star_sqr / 0.63) fudge) (spec-a-core
/// "Lattice factor F_latt", shape gauss).
pub const GAUSS_SHAPE_WIDTH: f64 = 0.63;
/// The top-hat shape's cut: Na Nb Nc where rad_star_sqr fudge < 0.3969
/// (spec-a-core "Lattice factor F_latt", shape tophat).
pub const TOPHAT_SHAPE_CUT: f64 = 0.3969;

/// sincg(π h, N) for a whole number N: sin(N π h)/sin(π h) = U_{N-1}(cos π h),
/// the Chebyshev polynomial of the second kind, with cos π h from the reduced
/// argument h - round(h). Same function as [`sincg`] (which stays the
/// definition); this form needs one polynomial instead of two `sin` calls and
/// is used only when N carries no derivative.
#[inline(always)]
pub fn sincg_pi_whole_n<T: Real>(h: T, n: u32) -> T {
    let k = round_half_even(h.val());
    let r = h - c::<T>(k);
    let mut cx = cos_pi_reduced(r);
    if (k as i64) & 1 == 1 {
        cx = -cx;
    }
    let two_c = cx + cx;
    let (mut u_prev, mut u) = (c::<T>(1.0), two_c);
    if n == 1 {
        return u_prev;
    }
    for _ in 2..n {
        let next = two_c * u - u_prev;
        u_prev = u;
        u = next;
    }
    u
}

/// Nearest integer by the 1.5·2^52 trick: plain SSE2 arithmetic, no libm
/// call on baseline x86-64 (|x| < 2^51; sincg arguments are far smaller).
#[inline(always)]
pub fn round_half_even(x: f64) -> f64 {
    const M: f64 = ROUND_MAGIC;
    if x.abs() < ROUND_LIMIT {
        (x + M) - M
    } else {
        x.round()
    }
}

/// g(x) from its value v = g(x.re) and slope dv = g'(x.re): v plus the
/// derivative directions of x times dv. For a plain float x - x.re is 0
/// exactly, so the value is v.
#[inline(always)]
pub fn lift<T: Real>(x: T, v: f64, dv: f64) -> T {
    c::<T>(v) + (x - c::<T>(x.val())) * c::<T>(dv)
}

/// g(x, y) from its value v and partial derivatives: v plus the derivative
/// directions of x and y times the partials (see [`lift`]).
#[inline(always)]
pub fn lift2<T: Real>(x: T, y: T, v: f64, dv_dx: f64, dv_dy: f64) -> T {
    c::<T>(v) + (x - c::<T>(x.val())) * c::<T>(dv_dx) + (y - c::<T>(y.val())) * c::<T>(dv_dy)
}

/// sincg(π h, N) for any N, its argument reduced first: with h = k + r
/// (k the nearest integer, |r| <= 1/2) and m = N k mod 2,
/// sin(N π h) = sin(π (m + N r)) and sin(π h) = (-1)^k sin(π r). Same
/// function as [`sincg`]; the reduction keeps the digits that forming N π h
/// directly loses (float32: N π h near 50 has an ulp of 4e-6, and d/dN grows
/// as h/r near a peak). Value and d/dh, d/dN are evaluated in float64 and
/// lifted onto the derivative directions of h and N, so float32 renders get
/// float64-accurate lattice factors. At h = 0 the value is N, as
/// [`sincg`]; at any other whole h the limit N (-1)^k cos(π m). `at` is the
/// value of h to evaluate at (h's own, or a float64-accurate one).
#[inline(always)]
pub fn sincg_pi_reduced<T: Real>(h: T, n: T, at: f64) -> T {
    use num_dual::{DualNum, DualSVec64};
    type D2 = DualSVec64<2>;
    let (hv, nv) = (at, n.val());
    let hd = D2::from_re(hv).derivative(0);
    let nd = D2::from_re(nv).derivative(1);
    let k = round_half_even(hv);
    let sign = if (k as i64) & 1 == 1 { -1.0 } else { 1.0 };
    let r = hd - D2::from(k);
    let t = nv * k;
    let m = nd * D2::from(k) - D2::from(2.0 * round_half_even(t * 0.5));
    let pi = std::f64::consts::PI;
    let g = if hv == 0.0 {
        nd
    } else if r.re == 0.0 {
        nd * (m * pi).cos() * D2::from(sign)
    } else {
        ((m + nd * r) * pi).sin() / ((r * pi).sin() * D2::from(sign))
    };
    let dg = g.eps.unwrap_generic(nalgebra::Const::<2>, nalgebra::U1);
    lift2(h, n, g.re, dg[0], dg[1])
}

/// Whole-number N up to this use [`sincg_pi_whole_n`].
pub const MAX_WHOLE_N: u32 = 48;

/// F_latt for fractional indices (h, k, l). `n` = (Na, Nb, Nc); `n_gt1` says
/// which of them exceed 1 (C multiplies sincg only for N > 1); `recip` holds
/// a*, b*, c* (Å^-1) for the Gaussian and top-hat shapes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn f_latt<T: Real>(
    shape: LatticeShape,
    h: T,
    k: T,
    l: T,
    n: &[T; 3],
    n_gt1: [bool; 3],
    n_whole: [Option<u32>; 3],
    lifted: bool,
    recip: &[Vec3<T>; 3],
    fudge: f64,
    hkl_hi: Option<[f64; 3]>,
) -> T {
    let pi = c::<T>(std::f64::consts::PI);
    match shape {
        LatticeShape::Square => {
            let mut f = c::<T>(1.0);
            for (i, x) in [h, k, l].into_iter().enumerate() {
                if n_gt1[i] {
                    // where the factor is evaluated: the float64 index when the
                    // render carries one (float32 with derivatives), else x's own
                    let at = hkl_hi.map(|v| v[i]).unwrap_or(x.val());
                    f *= match (n_whole[i], lifted) {
                        (Some(nw), false) if hkl_hi.is_none() => sincg_pi_whole_n(x, nw),
                        (Some(nw), _) => {
                            // value and d/dh in one scalar dual pass, then the
                            // chain rule onto every direction of h
                            let d = sincg_pi_whole_n(num_dual::Dual64::from(at).derivative(), nw);
                            lift(x, d.re, d.eps)
                        }
                        (None, _) => sincg_pi_reduced(x, n[i], at),
                    };
                }
            }
            f
        }
        LatticeShape::Round => {
            let (dh, dk, dl) = (h - nearest(h), k - nearest(k), l - nearest(l));
            let hrad_sqr = dh * dh * n[0] * n[0] + dk * dk * n[1] * n[1] + dl * dl * n[2] * n[2];
            n[0] * n[1]
                * n[2]
                * c::<T>(ROUND_SHAPE_NORM)
                * sinc3(pi * sqrt_safe(hrad_sqr * c::<T>(fudge)))
        }
        LatticeShape::Gauss | LatticeShape::Tophat => {
            let (dh, dk, dl) = (h - nearest(h), k - nearest(k), l - nearest(l));
            let d = recip[0] * dh + recip[1] * dk + recip[2] * dl;
            let nn = n[0] * n[0] * n[1] * n[1] * n[2] * n[2];
            let rad_star_sqr = super::scalar::dot_product(&d, &d) * nn;
            let nvol = n[0] * n[1] * n[2];
            if shape == LatticeShape::Gauss {
                nvol * (-(rad_star_sqr / c::<T>(GAUSS_SHAPE_WIDTH) * c::<T>(fudge))).exp()
            } else if rad_star_sqr.val() * fudge < TOPHAT_SHAPE_CUT {
                nvol
            } else {
                c(0.0)
            }
        }
    }
}

/// Nearest integer as C computes it: ceil(x - 0.5), as a constant.
#[inline(always)]
pub fn nearest<T: Real>(x: T) -> T {
    c((x.val() - 0.5).ceil())
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_dual::Dual64;

    #[test]
    fn sincg_limits() {
        // at integer h the grating function peaks at N (|sincg| = N)
        assert_eq!(sincg(0.0, 5.0), 5.0);
        let v: f64 = sincg(std::f64::consts::PI * 2.0, 5.0);
        assert!((v.abs() - 5.0).abs() < 1e-9);
        // half way between peaks of odd N: sin(N pi/2)/sin(pi/2) = +-1
        let v: f64 = sincg(std::f64::consts::PI * 0.5, 5.0);
        assert!((v - 1.0).abs() < 1e-12);
        // d/dN sincg(x, N) = x cos(N x)/sin(x)
        let x = 0.3f64;
        let d = sincg(Dual64::from(x), Dual64::from(4.0).derivative()).eps;
        assert!((d - x * (4.0 * x).cos() / x.sin()).abs() < 1e-12);
    }

    #[test]
    fn whole_n_form_equals_sincg() {
        for n in [2u32, 3, 5, 10, 25] {
            for i in 0..2000 {
                let h = -20.0 + i as f64 * 0.0203 + 1e-9;
                // reference on the reduced argument (sincg of a large π h loses
                // digits within 1e-9 of an integer; the reduced form does not)
                let k = h.round();
                let r = h - k;
                let sign = if (k as i64 * (n as i64 - 1)) % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                let a = sign * sincg(std::f64::consts::PI * r, n as f64);
                let b = sincg_pi_whole_n(h, n);
                assert!((a - b).abs() <= 1e-11 * n as f64, "n {n} h {h}: {a} vs {b}");
            }
            // exact peak
            assert_eq!(sincg_pi_whole_n(3.0f64, n).abs(), n as f64);
        }
        // derivative with respect to h agrees
        let h = 2.37f64;
        let a = sincg(
            Dual64::from(std::f64::consts::PI) * Dual64::from(h).derivative(),
            Dual64::from(5.0),
        )
        .eps;
        let b = sincg_pi_whole_n(Dual64::from(h).derivative(), 5).eps;
        assert!((a - b).abs() < 1e-10 * a.abs(), "{a} {b}");
    }

    #[test]
    fn sinc3_limits() {
        assert_eq!(sinc3(0.0), 1.0);
        // small-x expansion 1 - x^2/10
        let x = 1e-3f64;
        assert!((sinc3(x) - (1.0 - x * x / 10.0)).abs() < 1e-9);
        // first zero of the sphere transform: tan x = x at 4.4934
        assert!(sinc3(4.493409457909064f64).abs() < 1e-12);
    }

    #[test]
    fn nearest_rounds_half_down() {
        assert_eq!(nearest(2.5f64), 2.0);
        assert_eq!(nearest(-2.5f64), -3.0);
        assert_eq!(nearest(2.49f64), 2.0);
        assert_eq!(nearest(2.51f64), 3.0);
    }
}
