//! Kahn polarization factor (spec-a-core "Polarization factor").

use super::scalar::{atan2_safe, c, cross_product, dot_product, unitize, Real, Vec3};

/// 0.5 (1 + cos^2 2θ - K cos 2ψ sin^2 2θ). C skips ψ when K = 0; computing
/// it always gives the same value and the right derivative with respect to K.
#[inline(always)]
pub fn polarization_factor<T: Real>(
    kahn_factor: T,
    incident: &Vec3<T>,
    diffracted: &Vec3<T>,
    axis: &Vec3<T>,
) -> T {
    let cos2theta = dot_product(incident, diffracted);
    let cos2theta_sqr = cos2theta * cos2theta;
    // sin^2 2θ = |incident x diffracted|^2 (unit vectors): the same value as
    // C's 1 - cos^2 2θ without its cancellation at small angles, where
    // float32 kept ~3 digits of d/dK
    let cross = cross_product(incident, diffracted);
    let sin2theta_sqr = dot_product(&cross, &cross);
    let (b_in, _) = unitize(&cross_product(axis, incident));
    let (e_in, _) = unitize(&cross_product(incident, &b_in));
    let e_out = dot_product(diffracted, &e_in);
    let b_out = dot_product(diffracted, &b_in);
    let psi = -atan2_safe(b_out, e_out);
    c::<T>(0.5)
        * (c::<T>(1.0) + cos2theta_sqr - kahn_factor * (c::<T>(2.0) * psi).cos() * sin2theta_sqr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kahn_limits() {
        let inc = Vec3::<f64>::cst([1.0, 0.0, 0.0]);
        let pol = Vec3::<f64>::cst([0.0, 0.0, 1.0]);
        // forward scattering: factor 1 whatever K
        for k in [0.0, 0.5, 1.0] {
            assert!((polarization_factor(k, &inc, &inc, &pol) - 1.0).abs() < 1e-15);
        }
        // 90 deg scattering in the polarization plane (along E): fully polarized -> 0
        let d_e = Vec3::<f64>::cst([0.0, 0.0, 1.0]);
        assert!(polarization_factor(1.0, &inc, &d_e, &pol).abs() < 1e-15);
        // perpendicular to E: fully polarized -> 1
        let d_b = Vec3::<f64>::cst([0.0, 1.0, 0.0]);
        assert!((polarization_factor(1.0, &inc, &d_b, &pol) - 1.0).abs() < 1e-15);
        // unpolarized at 90 deg: 1/2
        assert!((polarization_factor(0.0, &inc, &d_b, &pol) - 0.5).abs() < 1e-15);
    }
}
