//! The scalar the physics is generic over: f32, f64 and num-dual's forward-mode
//! dual numbers (Dual64, `DualSVec64<N>`), plus the 3-vector the C code calls
//! `double v[4]` (we drop its cached magnitude slot).

use num_dual::DualNum;
use num_traits::{Float, FromPrimitive, ToPrimitive};
use std::ops::{Add, Mul, Neg, Sub};

/// A scalar that carries the simulation: real part plus optional derivatives.
pub trait Real: DualNum + Copy + Send + Sync + 'static {
    /// A constant (derivative zero).
    #[inline(always)]
    fn cst(x: f64) -> Self {
        Self::from(<Self::Primitive as FromPrimitive>::from_f64(x).unwrap())
    }
    /// The real part as f64 (branch decisions follow the real part, as in C).
    #[inline(always)]
    fn val(&self) -> f64 {
        self.re().to_f64().unwrap_or(f64::NAN)
    }
    /// The real part rounded to float32 and back, derivative kept: C passes some
    /// values through `float` (mosaic spread into mosaic_rotation_umat).
    #[inline(always)]
    fn round_to_f32_keep_derivative(self) -> Self {
        let v = self.val();
        self + Self::cst((v as f32) as f64 - v)
    }
    /// Whether the real part is exactly 0.0 (C's `== 0.0` tests).
    fn is_zero_exact(&self) -> bool {
        self.val() == 0.0
    }
}

impl<T: DualNum + Copy + Send + Sync + 'static> Real for T where T::Primitive: Float {}

/// A 3-vector in the lab frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Vec3<T>(pub [T; 3]);

impl<T: Real> Vec3<T> {
    /// The vector (x, y, z).
    #[inline(always)]
    pub fn new(x: T, y: T, z: T) -> Self {
        Vec3([x, y, z])
    }
    /// A constant vector (no derivative) from f64 components.
    #[inline(always)]
    pub fn cst(v: [f64; 3]) -> Self {
        Vec3([T::cst(v[0]), T::cst(v[1]), T::cst(v[2])])
    }
    /// The zero vector.
    #[inline(always)]
    pub fn zero() -> Self {
        Self::cst([0.0; 3])
    }
    /// The lab X component.
    #[inline(always)]
    pub fn x(&self) -> T {
        self.0[0]
    }
    /// The lab Y component.
    #[inline(always)]
    pub fn y(&self) -> T {
        self.0[1]
    }
    /// The lab Z component.
    #[inline(always)]
    pub fn z(&self) -> T {
        self.0[2]
    }
    /// The vector times the scalar `s`.
    #[inline(always)]
    pub fn scale(&self, s: T) -> Self {
        Vec3([self.0[0] * s, self.0[1] * s, self.0[2] * s])
    }
    /// The real parts of the components.
    #[inline(always)]
    pub fn val(&self) -> [f64; 3] {
        [self.0[0].val(), self.0[1].val(), self.0[2].val()]
    }
}

/// Dot product x · y (C's dot_product).
#[inline(always)]
pub fn dot_product<T: Real>(x: &Vec3<T>, y: &Vec3<T>) -> T {
    x.0[0] * y.0[0] + x.0[1] * y.0[1] + x.0[2] * y.0[2]
}

/// Cross product x × y (C's cross_product).
#[inline(always)]
pub fn cross_product<T: Real>(x: &Vec3<T>, y: &Vec3<T>) -> Vec3<T> {
    Vec3([
        x.0[1] * y.0[2] - x.0[2] * y.0[1],
        x.0[2] * y.0[0] - x.0[0] * y.0[2],
        x.0[0] * y.0[1] - x.0[1] * y.0[0],
    ])
}

/// Length |v| (C's magnitude), through the dual-safe square root.
#[inline(always)]
pub fn magnitude<T: Real>(v: &Vec3<T>) -> T {
    sqrt_safe(dot_product(v, v))
}

// ---- Dual-safe elementary functions ----
//
// num-dual forms some derivatives through intermediate quantities that are
// infinite at points where the function itself is smooth (atan2 as the atan
// of y/x) or where the input carries no change (sqrt at 0). These forms give
// the value C computes and the derivative of the mathematical function, and
// are mirrored in kernel.cu under the same names.

/// `y.atan2(x)` with the derivative (x dy - y dx) / (x^2 + y^2), finite
/// wherever (x, y) != (0, 0); at the origin, where the angle has no
/// derivative, the derivative is 0 (the polarization factor multiplies it by
/// sin^2 2θ = 0 there).
#[inline(always)]
pub fn atan2_safe<T: Real>(y: T, x: T) -> T {
    let (yv, xv) = (y.val(), x.val());
    let r2 = xv * xv + yv * yv;
    let value = T::cst(yv.atan2(xv));
    if r2 == 0.0 || !r2.is_finite() {
        return value;
    }
    // x.re * y - y.re * x has real part exactly 0 (IEEE products commute)
    // and derivative x dy - y dx
    value + (T::cst(xv) * y - T::cst(yv) * x) * T::cst(1.0 / r2)
}

/// `x.sqrt()` whose derivative at x = 0 is 0 instead of 0 x inf = NaN: at 0
/// the square root of a smooth non-negative quantity (a squared distance)
/// changes at first order only where that quantity's own derivative is 0.
#[inline(always)]
pub fn sqrt_safe<T: Real>(x: T) -> T {
    if x.val() == 0.0 {
        T::cst(0.0)
    } else {
        x.sqrt()
    }
}

/// Unit vector and the original length; a zero vector stays zero (C `unitize`).
#[inline(always)]
pub fn unitize<T: Real>(v: &Vec3<T>) -> (Vec3<T>, T) {
    let mag = magnitude(v);
    if mag.val() != 0.0 {
        (Vec3([v.0[0] / mag, v.0[1] / mag, v.0[2] / mag]), mag)
    } else {
        (Vec3::zero(), mag)
    }
}

/// Rescale to a new magnitude (C `vector_rescale`; a zero vector keeps scale 1).
pub fn vector_rescale<T: Real>(v: &Vec3<T>, new_magnitude: T) -> Vec3<T> {
    let mut old = magnitude(v);
    if old.val() <= 0.0 {
        old = T::cst(1.0);
    }
    v.scale(new_magnitude / old)
}

impl<T: Real> Add for Vec3<T> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Vec3([self.0[0] + o.0[0], self.0[1] + o.0[1], self.0[2] + o.0[2]])
    }
}
impl<T: Real> Sub for Vec3<T> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Vec3([self.0[0] - o.0[0], self.0[1] - o.0[1], self.0[2] - o.0[2]])
    }
}
impl<T: Real> Neg for Vec3<T> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Vec3([-self.0[0], -self.0[1], -self.0[2]])
    }
}
impl<T: Real> Mul<T> for Vec3<T> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, s: T) -> Self {
        self.scale(s)
    }
}

/// Degrees per radian exactly as nanoBragg.c writes it (`180.0*M_1_PI`);
/// C converts every angle flag with `atof(..)/RTD`, and so do we, bit for bit.
pub const RTD: f64 = 180.0 * std::f64::consts::FRAC_1_PI;

/// Degrees to radians, dividing by [`RTD`] as C does.
#[inline(always)]
pub fn deg2rad<T: Real>(x: T) -> T {
    x / T::cst(RTD)
}

/// Convert an f64 to the primitive of T, for constants inside generic code.
#[inline(always)]
pub fn c<T: Real>(x: f64) -> T {
    T::cst(x)
}

/// Lossless view of a primitive as f64 (used by tests and I/O).
pub fn to_f64<P: ToPrimitive>(p: P) -> f64 {
    p.to_f64().unwrap_or(f64::NAN)
}
