//! Rotations as nanoBragg.c applies them (spec-a-core "Geometry", "Misset").

use super::scalar::{c, dot_product, Real, Vec3};

/// `rotate`: right-handed rotations about lab X, then Y, then Z (radians).
/// C skips an axis whose angle is exactly 0; rotating by 0 here gives the same
/// value and keeps the derivative with respect to that angle.
pub fn rotate_xyz<T: Real>(v: &Vec3<T>, phix: T, phiy: T, phiz: T) -> Vec3<T> {
    let [mut x, mut y, mut z] = v.0;
    let (sx, cx) = (phix.sin(), phix.cos());
    let ry = y * cx - z * sx;
    let rz = y * sx + z * cx;
    y = ry;
    z = rz;
    let (sy, cy) = (phiy.sin(), phiy.cos());
    let rx = x * cy + z * sy;
    let rz = -x * sy + z * cy;
    x = rx;
    z = rz;
    let (sz, cz) = (phiz.sin(), phiz.cos());
    let rx = x * cz - y * sz;
    let ry = x * sz + y * cz;
    Vec3([rx, ry, z])
}

/// `rotate_axis`: rotate `v` about the unit vector `axis` by `phi` (radians), Rodrigues' formula.
#[inline(always)]
pub fn rotate_axis<T: Real>(v: &Vec3<T>, axis: &Vec3<T>, phi: T) -> Vec3<T> {
    let (sinphi, cosphi) = (phi.sin(), phi.cos());
    let dot = dot_product(axis, v) * (c::<T>(1.0) - cosphi);
    let [ax, ay, az] = axis.0;
    let [vx, vy, vz] = v.0;
    Vec3([
        ax * dot + vx * cosphi + (-az * vy + ay * vz) * sinphi,
        ay * dot + vy * cosphi + (az * vx - ax * vz) * sinphi,
        az * dot + vz * cosphi + (-ay * vx + ax * vy) * sinphi,
    ])
}

/// `rotate_umat`: multiply by a row-major 3x3 matrix.
#[inline(always)]
pub fn rotate_umat<T: Real>(v: &Vec3<T>, u: &[T; 9]) -> Vec3<T> {
    let [x, y, z] = v.0;
    Vec3([
        u[0] * x + u[1] * y + u[2] * z,
        u[3] * x + u[4] * y + u[5] * z,
        u[6] * x + u[7] * y + u[8] * z,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_rotation_quarter_turn() {
        let v = Vec3::<f64>::cst([1.0, 0.0, 0.0]);
        let z = Vec3::<f64>::cst([0.0, 0.0, 1.0]);
        let r = rotate_axis(&v, &z, std::f64::consts::FRAC_PI_2);
        assert!((r.0[0]).abs() < 1e-15 && (r.0[1] - 1.0).abs() < 1e-15);
        // zero angle is the identity, exactly
        let w = Vec3::<f64>::cst([0.3, -0.7, 0.2]);
        assert_eq!(rotate_axis(&w, &z, 0.0), w);
        assert_eq!(rotate_xyz(&w, 0.0, 0.0, 0.0), w);
    }

    #[test]
    fn xyz_order_is_x_then_y_then_z() {
        // X by 90 deg takes y to z; then Y by 90 deg takes z to x.
        let v = Vec3::<f64>::cst([0.0, 1.0, 0.0]);
        let h = std::f64::consts::FRAC_PI_2;
        let r = rotate_xyz(&v, h, h, 0.0);
        assert!((r.0[0] - 1.0).abs() < 1e-15 && r.0[1].abs() < 1e-15 && r.0[2].abs() < 1e-15);
    }
}
