//! Lattice transforms of the crystal shape (spec-a-core "Lattice factor F_latt").

use super::config::LatticeShape;
use super::scalar::{c, Real, Vec3};

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
    recip: &[Vec3<T>; 3],
    fudge: f64,
) -> T {
    let pi = c::<T>(std::f64::consts::PI);
    match shape {
        LatticeShape::Square => {
            let mut f = c::<T>(1.0);
            if n_gt1[0] {
                f *= sincg(pi * h, n[0]);
            }
            if n_gt1[1] {
                f *= sincg(pi * k, n[1]);
            }
            if n_gt1[2] {
                f *= sincg(pi * l, n[2]);
            }
            f
        }
        LatticeShape::Round => {
            let (dh, dk, dl) = (h - nearest(h), k - nearest(k), l - nearest(l));
            let hrad_sqr = dh * dh * n[0] * n[0] + dk * dk * n[1] * n[1] + dl * dl * n[2] * n[2];
            n[0] * n[1] * n[2] * c::<T>(0.723601254558268) * sinc3(pi * (hrad_sqr * c::<T>(fudge)).sqrt())
        }
        LatticeShape::Gauss | LatticeShape::Tophat => {
            let (dh, dk, dl) = (h - nearest(h), k - nearest(k), l - nearest(l));
            let d = recip[0] * dh + recip[1] * dk + recip[2] * dl;
            let nn = n[0] * n[0] * n[1] * n[1] * n[2] * n[2];
            let rad_star_sqr = super::scalar::dot_product(&d, &d) * nn;
            let nvol = n[0] * n[1] * n[2];
            if shape == LatticeShape::Gauss {
                nvol * (-(rad_star_sqr / c::<T>(0.63) * c::<T>(fudge))).exp()
            } else if rad_star_sqr.val() * fudge < 0.3969 {
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
