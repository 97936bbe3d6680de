//! The unit cell: real and reciprocal vectors from a, b, c, α, β, γ or from a
//! MOSFLM A matrix, with misset (spec-a-core "Unit Cell & Orientation").

use super::rotation::rotate_xyz;
use super::scalar::{
    c, cross_product, deg2rad, dot_product, magnitude, vector_rescale, Real, Vec3,
};

/// Real-space (Å) and reciprocal (Å^-1) cell vectors in the lab frame.
#[derive(Clone, Copy, Debug)]
pub struct CellVectors<T> {
    /// Real-space cell vector a (Å), C's a.
    pub a: Vec3<T>,
    /// Real-space cell vector b (Å), C's b.
    pub b: Vec3<T>,
    /// Real-space cell vector c (Å), C's c.
    pub c: Vec3<T>,
    /// Reciprocal cell vector a* (Å^-1), C's a_star.
    pub a_star: Vec3<T>,
    /// Reciprocal cell vector b* (Å^-1), C's b_star.
    pub b_star: Vec3<T>,
    /// Reciprocal cell vector c* (Å^-1), C's c_star.
    pub c_star: Vec3<T>,
    /// Unit-cell volume (Å^3), C's V_cell.
    pub v_cell: T,
}

#[inline]
fn clamp_unit<T: Real>(x: T) -> T {
    if x.val() > 1.0 {
        c(1.0)
    } else if x.val() < -1.0 {
        c(-1.0)
    } else {
        x
    }
}

/// Reciprocal vectors of a cell in nanoBragg's default orientation (a* along
/// X, b* in the XY plane), before misset. Angles in degrees.
pub fn reciprocal_from_cell<T: Real>(cell: [T; 6]) -> ([Vec3<T>; 3], T) {
    let [a, b, cc, al, be, ga] = cell;
    let (alpha, beta, gamma) = (deg2rad(al), deg2rad(be), deg2rad(ga));
    let aavg = (alpha + beta + gamma) * c::<T>(0.5);
    let mut skew = aavg.sin() * (aavg - alpha).sin() * (aavg - beta).sin() * (aavg - gamma).sin();
    if skew.val() < 0.0 {
        skew = -skew;
    }
    let mut v_cell = c::<T>(2.0) * a * b * cc * skew.sqrt();
    if v_cell.val() <= 0.0 {
        v_cell = c(f64::MIN_POSITIVE);
    }
    let v_star = c::<T>(1.0) / v_cell;
    let a_star_len = b * cc * alpha.sin() * v_star;
    let b_star_len = cc * a * beta.sin() * v_star;
    let c_star_len = a * b * gamma.sin() * v_star;
    let cos_alpha_star =
        clamp_sq((beta.cos() * gamma.cos() - alpha.cos()) / (beta.sin() * gamma.sin()));
    let cos_beta_star =
        clamp_sq((gamma.cos() * alpha.cos() - beta.cos()) / (gamma.sin() * alpha.sin()));
    let cos_gamma_star =
        clamp_sq((alpha.cos() * beta.cos() - gamma.cos()) / (alpha.sin() * beta.sin()));
    let sin_gamma_star = clamp_unit(cc * v_star / a_star_len / b_star_len);
    let a_star = Vec3([a_star_len, c(0.0), c(0.0)]);
    let b_star = Vec3([
        b_star_len * cos_gamma_star,
        b_star_len * sin_gamma_star,
        c(0.0),
    ]);
    let c_star = Vec3([
        c_star_len * cos_beta_star,
        c_star_len * (cos_alpha_star - cos_beta_star * cos_gamma_star) / sin_gamma_star,
        c_star_len * v_cell / (a * b * cc * sin_gamma_star),
    ]);
    ([a_star, b_star, c_star], v_cell)
}

/// C clamps a cosine whose square exceeds 1 to +1 (not to its sign).
#[inline]
fn clamp_sq<T: Real>(x: T) -> T {
    if x.val() * x.val() > 1.0 {
        c(1.0)
    } else {
        x
    }
}

/// Apply the misset (radians, X then Y then Z) to the reciprocal vectors and
/// build the real-space vectors and the reciprocal vectors consistent with
/// them. `user_cell` carries the direct-cell lengths and volume when the
/// cell came from `-cell` (C then forces |b* x c*| = a / V_cell etc.).
pub fn finish_cell<T: Real>(
    recip: [Vec3<T>; 3],
    misset_rad: [T; 3],
    user_cell: Option<([T; 3], T)>,
) -> CellVectors<T> {
    let [mx, my, mz] = misset_rad;
    let a_star = rotate_xyz(&recip[0], mx, my, mz);
    let b_star = rotate_xyz(&recip[1], mx, my, mz);
    let c_star = rotate_xyz(&recip[2], mx, my, mz);
    let mut a_star_cross_b_star = cross_product(&a_star, &b_star);
    let mut b_star_cross_c_star = cross_product(&b_star, &c_star);
    let mut c_star_cross_a_star = cross_product(&c_star, &a_star);
    let mut v_star = dot_product(&a_star, &b_star_cross_c_star);
    if let Some(([a, b, cc], v_cell)) = user_cell {
        b_star_cross_c_star = vector_rescale(&b_star_cross_c_star, a / v_cell);
        c_star_cross_a_star = vector_rescale(&c_star_cross_a_star, b / v_cell);
        a_star_cross_b_star = vector_rescale(&a_star_cross_b_star, cc / v_cell);
        v_star = c::<T>(1.0) / v_cell;
    }
    let v_cell = c::<T>(1.0) / v_star;
    let a = b_star_cross_c_star.scale(v_cell);
    let b = c_star_cross_a_star.scale(v_cell);
    let cv = a_star_cross_b_star.scale(v_cell);
    // regenerate the reciprocal vectors from the real ones
    let a_star = cross_product(&b, &cv).scale(v_star);
    let b_star = cross_product(&cv, &a).scale(v_star);
    let c_star = cross_product(&a, &b).scale(v_star);
    CellVectors {
        a,
        b,
        c: cv,
        a_star,
        b_star,
        c_star,
        v_cell,
    }
}

/// Cell vectors from a, b, c (Å), α, β, γ (deg) with no misset.
pub fn cell_vectors<T: Real>(cell: [T; 6]) -> CellVectors<T> {
    let (recip, v) = reciprocal_from_cell(cell);
    finish_cell(recip, [c(0.0); 3], Some(([cell[0], cell[1], cell[2]], v)))
}

/// Lengths |a|, |b|, |c| of a cell (Å).
pub fn edge_lengths<T: Real>(cv: &CellVectors<T>) -> [T; 3] {
    [magnitude(&cv.a), magnitude(&cv.b), magnitude(&cv.c)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn cubic_cell() {
        let cv = cell_vectors([100.0, 100.0, 100.0, 90.0, 90.0, 90.0]);
        assert!(close(cv.a.0[0], 100.0, 1e-12) && cv.a.0[1].abs() < 1e-9);
        assert!(close(cv.a_star.0[0], 0.01, 1e-12));
        assert!(close(cv.v_cell, 1e6, 1e-12));
    }

    /// nanoBragg.c's triclinic construction puts c*_z = c* V/(a b c sin γ*),
    /// which is not exactly 1/c; it then forces the real edges to the user's
    /// lengths. We reproduce it (the golden triclinic images match to 5e-8),
    /// so a_i . b*_j is the identity only to about 2e-4 for this cell.
    #[test]
    fn reciprocal_identities_triclinic() {
        let cell = [70.0, 80.0, 90.0, 75.0, 85.0, 95.0];
        let (recip, v) = reciprocal_from_cell(cell);
        let cv = finish_cell(
            recip,
            [10f64.to_radians(), 20f64.to_radians(), 30f64.to_radians()],
            Some(([70.0, 80.0, 90.0], v)),
        );
        let r = [cv.a, cv.b, cv.c];
        let s = [cv.a_star, cv.b_star, cv.c_star];
        for (i, ri) in r.iter().enumerate() {
            for (j, sj) in s.iter().enumerate() {
                let d = dot_product(ri, sj);
                assert!(
                    (d - if i == j { 1.0 } else { 0.0 }).abs() < 5e-4,
                    "{i}{j} {d}"
                );
            }
        }
        // the user's edge lengths are kept exactly
        let l = edge_lengths(&cv);
        assert!(close(l[0], 70.0, 1e-12) && close(l[1], 80.0, 1e-12) && close(l[2], 90.0, 1e-12));
        let ang = |x: &Vec3<f64>, y: &Vec3<f64>| {
            (dot_product(x, y) / magnitude(x) / magnitude(y))
                .acos()
                .to_degrees()
        };
        assert!((ang(&cv.b, &cv.c) - 75.0).abs() < 0.05);
        assert!((ang(&cv.a, &cv.c) - 85.0).abs() < 0.05);
        assert!((ang(&cv.a, &cv.b) - 95.0).abs() < 0.05);
        // for an orthogonal cell the construction is exact
        let o = cell_vectors([50.0f64, 60.0, 70.0, 90.0, 90.0, 90.0]);
        assert!((dot_product(&o.a, &o.a_star) - 1.0).abs() < 1e-14);
        assert!(dot_product(&o.a, &o.b_star).abs() < 1e-14);
        // V = a . (b x c) for the vectors C ends up with, to the same 2e-4
        assert!(close(
            dot_product(&cv.a, &cross_product(&cv.b, &cv.c)),
            cv.v_cell,
            5e-4
        ));
    }
}
