// braggrun CUDA kernel: the per-pixel loop of src/physics/simulator.rs
// (Model::pixel) and the functions it calls, function by function with the
// same names, over a small forward-mode dual number.
//
// Compiled at run time by NVRTC (src/engine/cuda/compile.rs) once per
// variant (interface.rs KernelVariant) with
//   -DREAL=double|float  -DNDIR=0..8  -DSHAPE=0..3  -DINTERPOLATE=0|1
// Everything per image (detector frame, sources, orientations for every phi
// step and mosaic domain, reciprocal vectors, scales) is computed on the host
// by Model::build exactly as the CPU engine does and uploaded as value +
// NDIR derivative components per scalar ("model" buffer).
// Branch decisions follow the real part, as in the Rust code. No headers:
// NVRTC provides the device math functions.
//
// The host/kernel interface (struct Params, the model buffer's M_* offsets,
// the numbers shared with lattice.rs, the SHAPE_* codes) is not written
// here: src/engine/cuda/interface.rs generates it as a header that is put
// before this file (for NVRTC, and for the host build in tests/kernel_host).

#ifndef REAL
#define REAL double
#endif
#ifndef NDIR
#define NDIR 0
#endif
// Compiled in, not branched on (interface.rs KernelVariant): the lattice shape
// (SHAPE_SQUARE, _ROUND, _GAUSS, _TOPHAT) and tricubic interpolation of the
// structure factors. A kernel holds only the code its renders take.
#ifndef SHAPE
#define SHAPE SHAPE_SQUARE
#endif
#ifndef INTERPOLATE
#define INTERPOLATE 0
#endif

typedef REAL R;

// ---------------------------------------------------------------------------
// Dual numbers: value + N derivative directions (N = 0: a plain number).
// The arithmetic mirrors num-dual's DualVec (product rule, quotient rule with
// inv = 1/b, chain rule with f'(x)).

template <typename S, int N>
struct Dual {
    S re;
    S eps[N > 0 ? N : 1];
};

typedef Dual<R, NDIR> T;

__device__ __forceinline__ double m_sin(double x) { return sin(x); }
__device__ __forceinline__ float m_sin(float x) { return sinf(x); }
__device__ __forceinline__ double m_cos(double x) { return cos(x); }
__device__ __forceinline__ float m_cos(float x) { return cosf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> cst(S x) {
    Dual<S, N> r;
    r.re = x;
#pragma unroll
    for (int i = 0; i < N; i++) r.eps[i] = S(0);
    return r;
}

__device__ __forceinline__ T C(double x) { return cst<R, NDIR>((R)x); }

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> operator+(const Dual<S, N>& a, const Dual<S, N>& b) {
    Dual<S, N> r;
    r.re = a.re + b.re;
#pragma unroll
    for (int i = 0; i < N; i++) r.eps[i] = a.eps[i] + b.eps[i];
    return r;
}

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> operator-(const Dual<S, N>& a, const Dual<S, N>& b) {
    Dual<S, N> r;
    r.re = a.re - b.re;
#pragma unroll
    for (int i = 0; i < N; i++) r.eps[i] = a.eps[i] - b.eps[i];
    return r;
}

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> operator-(const Dual<S, N>& a) {
    Dual<S, N> r;
    r.re = -a.re;
#pragma unroll
    for (int i = 0; i < N; i++) r.eps[i] = -a.eps[i];
    return r;
}

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> operator*(const Dual<S, N>& a, const Dual<S, N>& b) {
    Dual<S, N> r;
    r.re = a.re * b.re;
#pragma unroll
    for (int i = 0; i < N; i++) r.eps[i] = a.eps[i] * b.re + b.eps[i] * a.re;
    return r;
}

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> operator/(const Dual<S, N>& a, const Dual<S, N>& b) {
    Dual<S, N> r;
    if (N == 0) {
        r.re = a.re / b.re;  // plain floats divide
    } else {
        S inv = S(1) / b.re;  // num-dual: re * inv, (a' b - b' a) inv inv
        r.re = a.re * inv;
#pragma unroll
        for (int i = 0; i < N; i++) r.eps[i] = (a.eps[i] * b.re - b.eps[i] * a.re) * inv * inv;
    }
    return r;
}

// chain rule: f(x) with f'(x) = d
template <typename S, int N>
__device__ __forceinline__ Dual<S, N> chain(const Dual<S, N>& x, S f0, S d) {
    Dual<S, N> r;
    r.re = f0;
#pragma unroll
    for (int i = 0; i < N; i++) r.eps[i] = x.eps[i] * d;
    return r;
}

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> d_sin(const Dual<S, N>& x) {
    if (N == 0) return chain(x, m_sin(x.re), S(0));
    return chain(x, m_sin(x.re), m_cos(x.re));
}

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> d_cos(const Dual<S, N>& x) {
    if (N == 0) return chain(x, m_cos(x.re), S(0));
    return chain(x, m_cos(x.re), -m_sin(x.re));
}

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> d_exp(const Dual<S, N>& x) {
    S f = m_exp(x.re);
    return chain(x, f, f);
}

template <typename S, int N>
__device__ __forceinline__ Dual<S, N> d_sqrt(const Dual<S, N>& x) {
    S f0 = m_sqrt(x.re);
    if (N == 0) return chain(x, f0, S(0));
    S rec = S(1) / x.re;
    return chain(x, f0, f0 * rec * S(0.5));
}

// Dual-safe forms (scalar.rs atan2_safe, sqrt_safe): the value C computes,
// the derivative of the mathematical function, finite where it exists.

// atan2 with derivative (x dy - y dx) / (x^2 + y^2); 0 at the origin. The
// value in double, rounded to R, as the CPU engine does.
template <typename S, int N>
__device__ __forceinline__ Dual<S, N> atan2_safe(const Dual<S, N>& y, const Dual<S, N>& x) {
    double yv = (double)y.re, xv = (double)x.re;
    double r2 = xv * xv + yv * yv;
    Dual<S, N> value = cst<S, N>((S)atan2(yv, xv));
    if (N == 0 || r2 == 0.0 || !isfinite(r2)) return value;
    return value + (cst<S, N>((S)xv) * y - cst<S, N>((S)yv) * x) * cst<S, N>((S)(1.0 / r2));
}

// sqrt whose derivative at 0 is 0 (not 0 x inf)
template <typename S, int N>
__device__ __forceinline__ Dual<S, N> sqrt_safe(const Dual<S, N>& x) {
    if ((double)x.re == 0.0) return cst<S, N>(S(0));
    return d_sqrt(x);
}

// ---------------------------------------------------------------------------
// 3-vectors (scalar.rs)

struct V3 {
    T v[3];
};

__device__ __forceinline__ V3 vadd(const V3& a, const V3& b) {
    V3 r;
    r.v[0] = a.v[0] + b.v[0];
    r.v[1] = a.v[1] + b.v[1];
    r.v[2] = a.v[2] + b.v[2];
    return r;
}
__device__ __forceinline__ V3 vsub(const V3& a, const V3& b) {
    V3 r;
    r.v[0] = a.v[0] - b.v[0];
    r.v[1] = a.v[1] - b.v[1];
    r.v[2] = a.v[2] - b.v[2];
    return r;
}
__device__ __forceinline__ V3 scale(const V3& a, const T& s) {
    V3 r;
    r.v[0] = a.v[0] * s;
    r.v[1] = a.v[1] * s;
    r.v[2] = a.v[2] * s;
    return r;
}
__device__ __forceinline__ T dot_product(const V3& x, const V3& y) {
    return x.v[0] * y.v[0] + x.v[1] * y.v[1] + x.v[2] * y.v[2];
}
__device__ __forceinline__ V3 cross_product(const V3& x, const V3& y) {
    V3 r;
    r.v[0] = x.v[1] * y.v[2] - x.v[2] * y.v[1];
    r.v[1] = x.v[2] * y.v[0] - x.v[0] * y.v[2];
    r.v[2] = x.v[0] * y.v[1] - x.v[1] * y.v[0];
    return r;
}
__device__ __forceinline__ T magnitude(const V3& v) { return sqrt_safe(dot_product(v, v)); }

// unit vector and the original length; a zero vector stays zero
__device__ __forceinline__ V3 unitize(const V3& v, T* mag_out) {
    T mag = magnitude(v);
    V3 r;
    if ((double)mag.re != 0.0) {
        r.v[0] = v.v[0] / mag;
        r.v[1] = v.v[1] / mag;
        r.v[2] = v.v[2] / mag;
    } else {
        r.v[0] = C(0.0);
        r.v[1] = C(0.0);
        r.v[2] = C(0.0);
    }
    *mag_out = mag;
    return r;
}

// Rodrigues rotation about a unit axis (rotation.rs rotate_axis)
__device__ __forceinline__ V3 rotate_axis(const V3& v, const V3& axis, const T& phi) {
    T sinphi = d_sin(phi), cosphi = d_cos(phi);
    T dot = dot_product(axis, v) * (C(1.0) - cosphi);
    const T &ax = axis.v[0], &ay = axis.v[1], &az = axis.v[2];
    const T &vx = v.v[0], &vy = v.v[1], &vz = v.v[2];
    V3 r;
    r.v[0] = ax * dot + vx * cosphi + (-az * vy + ay * vz) * sinphi;
    r.v[1] = ay * dot + vy * cosphi + (az * vx - ax * vz) * sinphi;
    r.v[2] = az * dot + vz * cosphi + (-ay * vx + ax * vy) * sinphi;
    return r;
}

// ---------------------------------------------------------------------------
// The model buffer (offsets M_* and NV from the interface header)

__device__ __forceinline__ T ld(const R* __restrict__ m, int i) {
    T r;
    r.re = m[i * NV];
#pragma unroll
    for (int j = 0; j < NDIR; j++) r.eps[j] = m[i * NV + 1 + j];
    return r;
}
__device__ __forceinline__ V3 ld3(const R* __restrict__ m, int i) {
    V3 r;
    r.v[0] = ld(m, i);
    r.v[1] = ld(m, i + 1);
    r.v[2] = ld(m, i + 2);
    return r;
}

// saturating float -> int as Rust's `as i32` (NaN -> 0)
__device__ __forceinline__ int to_i32(double x) {
    if (x != x) return 0;
    if (x >= 2147483647.0) return 2147483647;
    if (x <= -2147483648.0) return (-2147483647 - 1);
    return (int)x;
}

// ---------------------------------------------------------------------------
// lattice.rs

__device__ __forceinline__ T sincg(const T& x, const T& n) {
    if ((double)x.re == 0.0) return n;
    return d_sin(n * x) / d_sin(x);
}

__device__ __forceinline__ T sinc3(const T& x) {
    if ((double)x.re == 0.0) return C(1.0);
    return C(3.0) * (d_sin(x) / x - d_cos(x)) / (x * x);
}

// nearest integer as C computes it: ceil(x - 0.5), a constant
__device__ __forceinline__ T nearest(const T& x) { return C(ceil((double)x.re - 0.5)); }

// cos(pi r) for |r| <= 1/2: Taylor series in (pi r)^2 (lattice.rs cos_pi_reduced)
template <typename S, int N>
__device__ __forceinline__ Dual<S, N> cos_pi_reduced(const Dual<S, N>& r) {
    const double Cs[COS_PI_COEFFS_LEN] = COS_PI_COEFFS;
    Dual<S, N> r2 = r * r;
    Dual<S, N> acc = cst<S, N>((S)Cs[COS_PI_COEFFS_LEN - 1]);
#pragma unroll
    for (int k = COS_PI_COEFFS_LEN - 2; k >= 0; k--) acc = acc * r2 + cst<S, N>((S)Cs[k]);
    return acc;
}

// nearest integer k of x, ties to even, and whether k is odd: adding
// 1.5 2^52 (double) or 1.5 2^23 (float) leaves k in the low mantissa bits
// (lattice.rs round_half_even). Two adds and a bit test, all in the
// precision at hand: no float/double or float/integer conversion in the
// innermost loop (conversions issue at a fraction of the FP32 rate). One
// overload per precision: the constants differ.
__device__ __forceinline__ double round_half_even(double x, bool* odd) {
    const double M = ROUND_MAGIC_F64;
    if (fabs(x) < ROUND_LIMIT_F64) {
        double t = __dadd_rn(x, M);
        *odd = (__double2loint(t) & 1) != 0;
        return __dsub_rn(t, M);
    }
    double k = round(x);
    *odd = fmod(k, 2.0) != 0.0;
    return k;
}
__device__ __forceinline__ float round_half_even(float x, bool* odd) {
    const float M = ROUND_MAGIC_F32;
    if (fabsf(x) < ROUND_LIMIT_F32) {
        float t = __fadd_rn(x, M);
        *odd = (__float_as_int(t) & 1) != 0;
        return __fsub_rn(t, M);
    }
    float k = rintf(x);
    *odd = fmodf(k, 2.0f) != 0.0f;
    return k;
}

// U_{n-1}(c) from 2c by the three-term recurrence (the second half of
// lattice.rs sincg_pi_whole_n). NW > 0: n = NW compiled in, the recurrence
// unrolled; NW = 0: n at run time, small n through compiled-in cases.
template <int NW, typename S, int N>
__device__ __forceinline__ Dual<S, N> chebyshev_u(const Dual<S, N>& two_c, int n) {
    if constexpr (NW == 0) {
        switch (n) {
            case 2: return chebyshev_u<2>(two_c, 2);
            case 3: return chebyshev_u<3>(two_c, 3);
            case 4: return chebyshev_u<4>(two_c, 4);
            case 5: return chebyshev_u<5>(two_c, 5);
            case 6: return chebyshev_u<6>(two_c, 6);
            case 7: return chebyshev_u<7>(two_c, 7);
            case 8: return chebyshev_u<8>(two_c, 8);
            default: break;
        }
    }
    const int nn = NW > 0 ? NW : n;
    Dual<S, N> u_prev = cst<S, N>(S(1)), u = two_c;
    if (nn == 1) return u_prev;
#pragma unroll
    for (int i = 2; i < nn; i++) {
        Dual<S, N> next = two_c * u - u_prev;
        u_prev = u;
        u = next;
    }
    return u;
}

// sincg(pi h, N) for a whole number N: U_{N-1}(cos pi h), the Chebyshev
// polynomial of the second kind (lattice.rs sincg_pi_whole_n)
template <typename S, int N>
__device__ __forceinline__ Dual<S, N> sincg_pi_whole_n(const Dual<S, N>& h, int n) {
    bool odd;
    S k = round_half_even(h.re, &odd);
    Dual<S, N> r = h - cst<S, N>(k);
    Dual<S, N> cx = cos_pi_reduced(r);
    if (odd) cx = -cx;
    Dual<S, N> two_c = cx + cx;
    return chebyshev_u<0>(two_c, n);
}

// g(x) from its value v = g(x.re) and slope dv (lattice.rs lift)
__device__ __forceinline__ T lift(const T& x, double v, double dv) { return C(v) + (x - C((double)x.re)) * C(dv); }

// g(x, y) from its value and partial derivatives (lattice.rs lift2)
__device__ __forceinline__ T lift2(const T& x, const T& y, double v, double dx, double dy) {
    return C(v) + (x - C((double)x.re)) * C(dx) + (y - C((double)y.re)) * C(dy);
}

// sincg(pi h, N) for any N with the argument reduced, value and d/dh, d/dN
// in double, lifted onto the directions of h and N (lattice.rs
// sincg_pi_reduced): h = k + r, m = N k mod 2,
// sin(N pi h) / sin(pi h) = sin(pi (m + N r)) / ((-1)^k sin(pi r)).
__device__ T sincg_pi_reduced(const T& h, const T& n, double at) {
    typedef Dual<double, 2> D2;
    double hv = at, nv = (double)n.re;
    D2 hd = cst<double, 2>(hv);
    hd.eps[0] = 1.0;
    D2 nd = cst<double, 2>(nv);
    nd.eps[1] = 1.0;
    bool odd, odd_t;
    double k = round_half_even(hv, &odd);
    D2 sign = cst<double, 2>(odd ? -1.0 : 1.0);
    D2 r = hd - cst<double, 2>(k);
    double t = nv * k;
    D2 m = nd * cst<double, 2>(k) - cst<double, 2>(2.0 * round_half_even(t * 0.5, &odd_t));
    D2 pi = cst<double, 2>(PI_F64);
    D2 g;
    if (hv == 0.0) {
        g = nd;
    } else if (r.re == 0.0) {
        g = nd * d_cos(m * pi) * sign;
    } else {
        g = d_sin((m + nd * r) * pi) / (d_sin(r * pi) * sign);
    }
    return lift2(h, n, g.re, g.eps[0], g.eps[1]);
}

// The square lattice factor's evaluation, decided once per image (pixel()
// hoists it out of the loops): WHOLE_ANY, each axis as the image says;
// WHOLE_PLAIN, every axis a whole N with sincg_pi_whole_n in R;
// WHOLE_LIFTED, every axis a whole N through a scalar dual pass and lift.
#define WHOLE_ANY 0
#define WHOLE_PLAIN 1
#define WHOLE_LIFTED 2

// n: Na, Nb, Nc (model values, hoisted); hkl_hi: the float64 indices when
// P.hi_index (simulator.rs Model::hi), else null
__device__ __forceinline__ T f_latt(const Params& P, const R* __restrict__ mdl, const T* n, const T& h, const T& k,
                                    const T& l, const double* hkl_hi) {
    T pi = C(PI_F64);
    const T &n0 = n[0], &n1 = n[1], &n2 = n[2];
    if (SHAPE == SHAPE_SQUARE) {
        T f = C(1.0);
        const T* xs[3] = {&h, &k, &l};
#pragma unroll
        for (int i = 0; i < 3; i++) {
            if (!P.n_gt1[i]) continue;
            const T& x = *xs[i];
            int nw = P.n_whole[i];
            double at = hkl_hi ? hkl_hi[i] : (double)x.re;
            if (nw > 0 && !P.lifted && !hkl_hi) {
                f = f * sincg_pi_whole_n(x, nw);
            } else if (NDIR > 0 && nw > 0) {
                // value and d/dh in one scalar dual pass, then the chain rule
                // onto every direction of h
                Dual<double, 1> xd;
                xd.re = at;
                xd.eps[0] = 1.0;
                Dual<double, 1> d = sincg_pi_whole_n(xd, nw);
                f = f * lift(x, d.re, d.eps[0]);
            } else {
                f = f * sincg_pi_reduced(x, n[i], at);
            }
        }
        return f;
    }
    T dh = h - nearest(h), dk = k - nearest(k), dl = l - nearest(l);
    if (SHAPE == SHAPE_ROUND) {
        T hrad_sqr = dh * dh * n0 * n0 + dk * dk * n1 * n1 + dl * dl * n2 * n2;
        return n0 * n1 * n2 * C(ROUND_SHAPE_NORM) * sinc3(pi * sqrt_safe(hrad_sqr * C(P.fudge)));
    }
    V3 r0 = ld3(mdl, M_RECIP), r1 = ld3(mdl, M_RECIP + 3), r2 = ld3(mdl, M_RECIP + 6);
    V3 d = vadd(vadd(scale(r0, dh), scale(r1, dk)), scale(r2, dl));
    T nn = n0 * n0 * n1 * n1 * n2 * n2;
    T rad_star_sqr = dot_product(d, d) * nn;
    T nvol = n0 * n1 * n2;
    if (SHAPE == SHAPE_GAUSS) return nvol * d_exp(-(rad_star_sqr / C(GAUSS_SHAPE_WIDTH) * C(P.fudge)));
    if ((double)rad_star_sqr.re * P.fudge < TOPHAT_SHAPE_CUT) return nvol;
    return C(0.0);
}

// ---------------------------------------------------------------------------
// structure factors (simulator.rs f_cell, interpolate_f, polint)

__device__ __forceinline__ double hkl_at(const Params& P, const double* __restrict__ g, int h, int k, int l) {
    long long kr = P.k_max - P.k_min + 1, lr = P.l_max - P.l_min + 1;
    return g[((long long)(h - P.h_min) * kr + (k - P.k_min)) * lr + (l - P.l_min)];
}

// cubic Lagrange polynomial through (x0 + i, ya[i]), i = 0..3, at x
__device__ __forceinline__ T polint(int x0, const T* ya, const T& x) {
    T xa0 = C((double)x0), xa1 = C((double)(x0 + 1)), xa2 = C((double)(x0 + 2)), xa3 = C((double)(x0 + 3));
    T t0 = (x - xa1) * (x - xa2) * (x - xa3) * ya[0] / ((xa0 - xa1) * (xa0 - xa2) * (xa0 - xa3));
    T t1 = (x - xa0) * (x - xa2) * (x - xa3) * ya[1] / ((xa1 - xa0) * (xa1 - xa2) * (xa1 - xa3));
    T t2 = (x - xa0) * (x - xa1) * (x - xa3) * ya[2] / ((xa2 - xa0) * (xa2 - xa1) * (xa2 - xa3));
    T t3 = (x - xa0) * (x - xa1) * (x - xa2) * ya[3] / ((xa3 - xa0) * (xa3 - xa1) * (xa3 - xa2));
    return t0 + t1 + t2 + t3;
}

// tricubic interpolation on floor(x)-1 .. floor(x)+2 (along l, then k, then h)
__device__ T interpolate_f(const Params& P, const double* __restrict__ g, const T& h, const T& k, const T& l) {
    int hf = to_i32(floor((double)h.re)), kf = to_i32(floor((double)k.re)), lf = to_i32(floor((double)l.re));
    T over_k[4];
    T over_h[4];
    for (int i1 = 0; i1 < 4; i1++) {
        int hh = hf - 1 + i1;
        for (int i2 = 0; i2 < 4; i2++) {
            int kk = kf - 1 + i2;
            T ya[4];
#pragma unroll
            for (int i3 = 0; i3 < 4; i3++) ya[i3] = C(hkl_at(P, g, hh, kk, lf - 1 + i3));
            over_k[i2] = polint(lf - 1, ya, l);
        }
        over_h[i1] = polint(kf - 1, over_k, k);
    }
    return polint(hf - 1, over_h, h);
}

__device__ T f_cell(const Params& P, const double* __restrict__ g, const T& default_f, const T& h, const T& k, const T& l,
                    bool interp, int* oor, int eval) {
    if (!P.has_hkl) return default_f;
    double hv = (double)h.re, kv = (double)k.re, lv = (double)l.re;
    if (INTERPOLATE && interp) {
        double h_range = (double)(P.h_max - P.h_min + 1), k_range = (double)(P.k_max - P.k_min + 1),
               l_range = (double)(P.l_max - P.l_min + 1);
        bool out = (hv - (double)P.h_min + 3.0) > h_range || (hv - 2.0) < (double)P.h_min ||
                   (kv - (double)P.k_min + 3.0) > k_range || (kv - 2.0) < (double)P.k_min ||
                   (lv - (double)P.l_min + 3.0) > l_range || (lv - 2.0) < (double)P.l_min;
        if (!out) return interpolate_f(P, g, h, k, l);
        if (*oor < 0) *oor = eval;
    }
    int h0 = to_i32(ceil(hv - 0.5)), k0 = to_i32(ceil(kv - 0.5)), l0 = to_i32(ceil(lv - 0.5));
    bool inside = h0 >= P.h_min && h0 <= P.h_max && k0 >= P.k_min && k0 <= P.k_max && l0 >= P.l_min && l0 <= P.l_max;
    if (inside && P.hkl_count_pos) return C(hkl_at(P, g, h0, k0, l0));
    return default_f;
}

// ---------------------------------------------------------------------------
// polarization.rs

__device__ T polarization_factor(const T& kahn_factor, const V3& incident, const V3& diffracted, const V3& axis) {
    T cos2theta = dot_product(incident, diffracted);
    T cos2theta_sqr = cos2theta * cos2theta;
    V3 cross = cross_product(incident, diffracted);  // |i x d|^2 = 1 - cos^2, no cancellation
    T sin2theta_sqr = dot_product(cross, cross);
    T tmp;
    V3 b_in = unitize(cross_product(axis, incident), &tmp);
    V3 e_in = unitize(cross_product(incident, b_in), &tmp);
    T e_out = dot_product(diffracted, e_in);
    T b_out = dot_product(diffracted, b_in);
    T psi = -atan2_safe(b_out, e_out);
    return C(0.5) * (C(1.0) + cos2theta_sqr - kahn_factor * d_cos(C(2.0) * psi) * sin2theta_sqr);
}

// ---------------------------------------------------------------------------
// simulator.rs Model::subpixel_position and Model::pixel

__device__ V3 subpixel_position(const Params& P, const R* __restrict__ mdl, int fpixel, int spixel, int sub_f, int sub_s,
                                double odet) {
    double sub = P.sub;
    double fdet = sub * (double)(fpixel * P.oversample + sub_f) + sub / 2.0;
    double sdet = sub * (double)(spixel * P.oversample + sub_s) + sub / 2.0;
    V3 F = ld3(mdl, M_FDET), S = ld3(mdl, M_SDET), O = ld3(mdl, M_ODET), P0 = ld3(mdl, M_PIX0);
    V3 pos = vadd(vadd(vadd(scale(F, C(fdet)), scale(S, C(sdet))), scale(O, C(odet))), P0);
    if (P.curved) {
        T distance = ld(mdl, M_DIST);
        V3 b;
        b.v[0] = C(P.beam[0]);
        b.v[1] = C(P.beam[1]);
        b.v[2] = C(P.beam[2]);
        V3 v = scale(b, distance);
        V3 nv = rotate_axis(v, S, pos.v[1] / distance);
        return rotate_axis(nv, F, pos.v[2] / distance);
    }
    return pos;
}

// mode: 0 interpolate, 1 nearest, 2 interpolate until evaluation switch_eval
// simulator.rs Model::hi, values only (stride 1, same offsets as M_*)
__device__ __forceinline__ void hi3(const double* __restrict__ m, int i, double v[3]) {
    v[0] = m[i];
    v[1] = m[i + 1];
    v[2] = m[i + 2];
}
__device__ __forceinline__ double dot3(const double* a, const double* b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

// unit vector to a subpixel in float64 (Model::subpixel_position, flat detector)
__device__ void diffracted_hi(const Params& P, const double* __restrict__ hi, int fpixel, int spixel, int sub_f,
                              int sub_s, double odet, double d[3]) {
    double sub = P.sub;
    double fdet = sub * (double)(fpixel * P.oversample + sub_f) + sub / 2.0;
    double sdet = sub * (double)(spixel * P.oversample + sub_s) + sub / 2.0;
    double F[3], S[3], O[3], P0[3];
    hi3(hi, M_FDET, F);
    hi3(hi, M_SDET, S);
    hi3(hi, M_ODET, O);
    hi3(hi, M_PIX0, P0);
    double pos[3];
    for (int i = 0; i < 3; i++) pos[i] = F[i] * fdet + S[i] * sdet + O[i] * odet + P0[i];
    double mag = sqrt(dot3(pos, pos));
    for (int i = 0; i < 3; i++) d[i] = mag != 0.0 ? pos[i] / mag : 0.0;
}

// ---------------------------------------------------------------------------
// The fast paths of the innermost loop (orientations_fast). They compute
// what the general code above computes, operation for operation, without
// the operations whose result is known: a constant's zero derivative added
// or multiplied in (x + 0, 0 * y), the sign of a lattice factor that is
// squared. The results are the same up to the sign of a zero (and wherever
// an index is not finite, where the pixel is not finite either).
// In float64 they fuse a * b + c (KERNEL_FMA = 1, the default): a float64
// render then differs from the CPU engine's by rounding (tests/kernel_host.rs
// measured at most 1.5e-14 of a plane's maximum), and runs 1.5x (forward)
// to 1.6x (6 derivatives) faster on an H200 than with every operation
// rounded apart (-DKERNEL_FMA=0 in BRAGGRUN_NVRTC_OPTIONS: the CPU
// engine's roundings, bit for bit). Float32 is
// contracted by NVRTC as everywhere in the kernel.
#ifndef KERNEL_FMA
#define KERNEL_FMA 1
#endif
__device__ __forceinline__ double mad(double a, double b, double c) { return KERNEL_FMA ? fma(a, b, c) : a * b + c; }
__device__ __forceinline__ float mad(float a, float b, float c) { return a * b + c; }
__device__ __forceinline__ double m_rint(double x) { return rint(x); }
__device__ __forceinline__ float m_rint(float x) { return rintf(x); }

// x * y + c, c a constant
template <typename S, int N>
__device__ __forceinline__ Dual<S, N> mul_add_c(const Dual<S, N>& x, const Dual<S, N>& y, S c) {
    Dual<S, N> r;
    r.re = mad(x.re, y.re, c);
#pragma unroll
    for (int i = 0; i < N; i++) r.eps[i] = mad(x.eps[i], y.re, y.eps[i] * x.re);
    return r;
}
// x * y - z
template <typename S, int N>
__device__ __forceinline__ Dual<S, N> mul_sub(const Dual<S, N>& x, const Dual<S, N>& y, const Dual<S, N>& z) {
    Dual<S, N> r;
    r.re = mad(x.re, y.re, -z.re);
#pragma unroll
    for (int i = 0; i < N; i++) r.eps[i] = mad(x.eps[i], y.re, y.eps[i] * x.re) - z.eps[i];
    return r;
}

// dot_product, each component's product rule summed as dot_product does
__device__ __forceinline__ T dot_fast(const V3& x, const V3& y) {
    T r;
    r.re = mad(x.v[2].re, y.v[2].re, mad(x.v[1].re, y.v[1].re, x.v[0].re * y.v[0].re));
#pragma unroll
    for (int i = 0; i < NDIR; i++) {
        if (KERNEL_FMA && sizeof(R) == 8) {
            R t = x.v[0].eps[i] * y.v[0].re;
            t = mad(y.v[0].eps[i], x.v[0].re, t);
            t = mad(x.v[1].eps[i], y.v[1].re, t);
            t = mad(y.v[1].eps[i], x.v[1].re, t);
            t = mad(x.v[2].eps[i], y.v[2].re, t);
            r.eps[i] = mad(y.v[2].eps[i], x.v[2].re, t);
        } else {
            R p0 = x.v[0].eps[i] * y.v[0].re + y.v[0].eps[i] * x.v[0].re;
            R p1 = x.v[1].eps[i] * y.v[1].re + y.v[1].eps[i] * x.v[1].re;
            R p2 = x.v[2].eps[i] * y.v[2].re + y.v[2].eps[i] * x.v[2].re;
            r.eps[i] = (p0 + p1) + p2;
        }
    }
    return r;
}

// 2 cos(pi r): cos_pi_reduced with every coefficient doubled (exactly 2x
// each step, so exactly cx + cx)
template <typename S, int N>
__device__ __forceinline__ Dual<S, N> two_cos_pi_reduced(const Dual<S, N>& r) {
    const double Cs[COS_PI_COEFFS_LEN] = COS_PI_COEFFS;
    Dual<S, N> r2 = r * r;
    Dual<S, N> acc = cst<S, N>((S)(2.0 * Cs[COS_PI_COEFFS_LEN - 1]));
#pragma unroll
    for (int k = COS_PI_COEFFS_LEN - 2; k >= 0; k--) acc = mul_add_c(acc, r2, (S)(2.0 * Cs[k]));
    return acc;
}

// chebyshev_u for N = NW (compiled in) with mul_sub (the same roundings)
template <int NW, typename S, int N>
__device__ __forceinline__ Dual<S, N> chebyshev_u_fast(const Dual<S, N>& two_c) {
    Dual<S, N> u_prev = cst<S, N>(S(1)), u = two_c;
    if (NW == 1) return u_prev;
#pragma unroll
    for (int i = 2; i < NW; i++) {
        Dual<S, N> next = mul_sub(two_c, u, u_prev);
        u_prev = u;
        u = next;
    }
    return u;
}

// sincg(pi h, N) for a whole N = NW (sincg_pi_whole_n) up to its sign
// (-1)^(k (N - 1)): the fast paths square it. Negating cos(pi r) negates or
// keeps U_{N-1} exactly, so the sign (round_half_even's odd) is left out,
// and k = rint(h), the k round_half_even takes, needs no range test.
template <int NW, typename S, int N>
__device__ __forceinline__ Dual<S, N> sincg_pi_whole_n_unsigned(const Dual<S, N>& h) {
    S k = m_rint(h.re);
    Dual<S, N> r = h;
    r.re = h.re - k;
    Dual<S, N> two_c = two_cos_pi_reduced(r);
    return chebyshev_u_fast<NW>(two_c);
}

// The innermost loop (orientations) when every axis is a whole N = nw, the
// structure factor is default_F (finite, no derivative when LIFTED), and
// the oversample flags are off: fl is squared (sign dropped), a zero fl adds
// an exact zero (no test). Not LIFTED: sincg_pi_whole_n in R, N = NW
// compiled in. LIFTED: the lattice factor from a scalar dual pass at the
// (float64 when P.hi_index) indices, lifted onto the directions (f_latt's
// WHOLE_LIFTED, lift and the products written out), N at run time.
template <bool LIFTED, int NW>
__device__ __forceinline__ void orientations_fast(const Params& P, const R* __restrict__ mdl,
                                                  const double* __restrict__ hi, int ob, const V3& scattering,
                                                  const double* s_hi, const T& fc2, int nw, T& i_acc) {
    const bool use_hi = NDIR > 0 && P.hi_index;
    const int norient = P.norient;
    const R* __restrict__ q = mdl + (long long)ob * NV;
    const double* __restrict__ qh = hi + ob;
    T acc = i_acc;
    for (int o = 0; o < norient; o++, q += M_ORIENT_LEN * NV, qh += M_ORIENT_LEN) {
        T h = dot_fast(ld3(q, 0), scattering);
        T k = dot_fast(ld3(q, 3), scattering);
        T l = dot_fast(ld3(q, 6), scattering);
        T fl;
        if constexpr (!LIFTED) {
            fl = sincg_pi_whole_n_unsigned<NW>(h);
            fl = fl * sincg_pi_whole_n_unsigned<NW>(k);
            fl = fl * sincg_pi_whole_n_unsigned<NW>(l);
        } else {
            double at[3] = {(double)h.re, (double)k.re, (double)l.re};
            if (use_hi) {
                double a[3], b[3], c[3];
                hi3(qh, 0, a);
                hi3(qh, 3, b);
                hi3(qh, 6, c);
                at[0] = dot3(a, s_hi);
                at[1] = dot3(b, s_hi);
                at[2] = dot3(c, s_hi);
            }
            // value v and slope dv of each axis' factor (sincg_lifted) in
            // scalar duals, the three axes' recurrences (chebyshev_u) run
            // side by side for nw at run time (nw >= 2: every N > 1)
            typedef Dual<double, 1> D1;
            D1 two_c[3], u[3], u_prev[3];
#pragma unroll
            for (int i = 0; i < 3; i++) {
                D1 r;
                r.re = at[i] - m_rint(at[i]);
                r.eps[0] = 1.0;
                two_c[i] = two_cos_pi_reduced(r);
                u[i] = two_c[i];
                u_prev[i] = cst<double, 1>(1.0);
            }
            for (int m = 2; m < nw; m++) {
#pragma unroll
                for (int i = 0; i < 3; i++) {
                    D1 next = mul_sub(two_c[i], u[i], u_prev[i]);
                    u_prev[i] = u[i];
                    u[i] = next;
                }
            }
            double v[3], dv[3];
#pragma unroll
            for (int i = 0; i < 3; i++) {
                v[i] = u[i].re;
                dv[i] = u[i].eps[0];
            }
            // ((1 * lift(h)) * lift(k)) * lift(l): lift(x).eps = x.eps dv
            R p01 = (R)v[0] * (R)v[1];
            fl.re = p01 * (R)v[2];
#pragma unroll
            for (int j = 0; j < NDIR; j++) {
                R e0 = h.eps[j] * (R)dv[0], e1 = k.eps[j] * (R)dv[1], e2 = l.eps[j] * (R)dv[2];
                R e01 = mad(e0, (R)v[1], e1 * (R)v[0]);
                fl.eps[j] = mad(e01, (R)v[2], e2 * p01);
            }
        }
        // i_acc + fc2 fl fl
        T g;
        if constexpr (!LIFTED) {
            g = fc2 * fl;
        } else {
            g.re = fc2.re * fl.re;
#pragma unroll
            for (int j = 0; j < NDIR; j++) g.eps[j] = fl.eps[j] * fc2.re;
        }
        acc.re = mad(g.re, fl.re, acc.re);
#pragma unroll
        for (int j = 0; j < NDIR; j++) acc.eps[j] = acc.eps[j] + mad(g.eps[j], fl.re, fl.eps[j] * g.re);
    }
    i_acc = acc;
}

// The innermost loop of simulator.rs Model::pixel: every orientation (phi
// step x mosaic domain) for one subpixel and source, ob the first of their
// rotated cell vectors (a, b, c) in the model buffer. Everything that
// depends only on the pixel and the source (scattering, its float64 twin,
// N, default_F, the flags) comes in from the loops outside.
__device__ __forceinline__ void orientations(const Params& P, const R* __restrict__ mdl,
                                             const double* __restrict__ hi, const double* __restrict__ hkl,
                                             int ob, const V3& scattering, const double* s_hi, const T* n,
                                             const T& default_f, const T& capture, const T& polar, const T& omega,
                                             int mode, int switch_eval, T& i_acc, int& eval, int* oor) {
    const bool use_hi = NDIR > 0 && P.hi_index;
    const bool ov_thick = P.oversample_thick, ov_polar = P.oversample_polar, ov_omega = P.oversample_omega;
    const bool no_water = P.water_size == 0.0;
    const int norient = P.norient;
    const R* __restrict__ orient = mdl + (long long)ob * NV;
    for (int o = 0; o < norient; o++) {
        const R* q = orient + (long long)(M_ORIENT_LEN * o) * NV;
        T h = dot_product(ld3(q, 0), scattering);
        T k = dot_product(ld3(q, 3), scattering);
        T l = dot_product(ld3(q, 6), scattering);
        double hkl_hi[3];
        if (use_hi) {
            double a[3], b[3], c[3];
            hi3(hi, ob + M_ORIENT_LEN * o, a);
            hi3(hi, ob + M_ORIENT_LEN * o + 3, b);
            hi3(hi, ob + M_ORIENT_LEN * o + 6, c);
            hkl_hi[0] = dot3(a, s_hi);
            hkl_hi[1] = dot3(b, s_hi);
            hkl_hi[2] = dot3(c, s_hi);
        }
        T fl = f_latt(P, mdl, n, h, k, l, use_hi ? hkl_hi : (const double*)0);
        if ((double)fl.re == 0.0 && no_water) continue;
        bool interp = mode == 0 ? true : (mode == 1 ? false : eval < switch_eval);
        T fc = f_cell(P, hkl, default_f, h, k, l, interp, oor, eval);
        eval += 1;
        i_acc = i_acc + fc * fc * fl * fl;
        if (ov_thick) i_acc = i_acc * capture;
        if (ov_polar) i_acc = i_acc * polar;
        if (ov_omega) i_acc = i_acc * omega;
    }
}

// the compiled-in cases of orientations_fast (not lifted): N = 2 .. 10
#define WHOLE_CASES(X) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10)

__device__ T pixel(const Params& P, const R* __restrict__ mdl, const double* __restrict__ hi,
                   const double* __restrict__ hkl, int fpixel, int spixel, bool first_sweep, int mode, int switch_eval,
                   int* oor) {
    const bool use_hi = NDIR > 0 && P.hi_index;
    double d_hi[3] = {0.0, 0.0, 0.0};
    const T zero = C(0.0), one = C(1.0);
    T i_acc = ld(mdl, M_IBG);
    T polar = P.nopolar ? one : zero;
    T omega = zero;
    T capture = zero;
    bool first = first_sweep;
    int eval = 0;
    const T pixel_area = C(P.pixel_area);
    const T default_f = ld(mdl, M_DEFF);
    const T n[3] = {ld(mdl, M_N), ld(mdl, M_N + 1), ld(mdl, M_N + 2)};
    const int src0 = M_SOURCES;
    const int orf = M_SOURCES + M_SOURCE_LEN * P.nsources;
    const int orr = orf + M_ORIENT_LEN * P.norient;
    // the lattice factor's evaluation (f_latt), the same for every sample
    int kind = WHOLE_ANY, nw = P.n_whole[0];
    if (SHAPE == SHAPE_SQUARE && P.n_gt1[0] && P.n_gt1[1] && P.n_gt1[2] && nw > 0 && P.n_whole[1] == nw &&
        P.n_whole[2] == nw) {
        if (!P.lifted && !use_hi) {
            kind = WHOLE_PLAIN;
        } else if (NDIR > 0) {
            kind = WHOLE_LIFTED;
        }
    }
    // orientations_fast applies: every axis a whole N, F = default_F (finite;
    // no derivative when lifted), no oversample flag; not lifted with three
    // or more directions (rare, as the image is lifted from three on): the
    // general loop, which keeps the kernel smaller
    const T fc2 = default_f * default_f;
    bool fast = kind != WHOLE_ANY && (NDIR <= 2 || kind == WHOLE_LIFTED) && !P.has_hkl && !P.oversample_thick &&
                !P.oversample_polar && !P.oversample_omega && isfinite((double)default_f.re);
#pragma unroll
    for (int j = 0; j < NDIR; j++) {
        fast = fast && isfinite((double)default_f.eps[j]) && (kind == WHOLE_PLAIN || default_f.eps[j] == R(0));
    }
    for (int t = 0; t < P.thicksteps; t++) {
        double odet = (double)t * P.thickstep;
        capture = P.thick == 0.0 ? one : zero;
        for (int ss = 0; ss < P.oversample; ss++) {
            for (int sf = 0; sf < P.oversample; sf++) {
                V3 pos = subpixel_position(P, mdl, fpixel, spixel, sf, ss, odet);
                T airpath;
                V3 diffracted = unitize(pos, &airpath);
                if (use_hi) diffracted_hi(P, hi, fpixel, spixel, sf, ss, odet, d_hi);
                if ((double)omega.re == 0.0 || P.oversample_omega) {
                    if (P.point_pixel) {
                        omega = one / (airpath * airpath);
                    } else {
                        omega = pixel_area / airpath / airpath * ld(mdl, M_CLOSE) / airpath;
                    }
                }
                if ((double)capture.re == 0.0 || P.oversample_thick) {
                    T parallax = dot_product(diffracted, ld3(mdl, M_ODET));
                    T depth0 = C((double)t * P.thickstep * P.mu);
                    T depth1 = C((double)(t + 1) * P.thickstep * P.mu);
                    capture = d_exp(-depth0 / parallax) - d_exp(-depth1 / parallax);
                }
                for (int si = 0; si < P.nsources; si++) {
                    V3 incident = ld3(mdl, src0 + M_SOURCE_LEN * si);
                    T lambda = ld(mdl, src0 + M_SOURCE_LEN * si + 3);
                    V3 scattering = scale(vsub(diffracted, incident), one / lambda);
                    double s_hi[3] = {0.0, 0.0, 0.0};
                    if (use_hi) {
                        double inc[3];
                        hi3(hi, src0 + M_SOURCE_LEN * si, inc);
                        double rl = 1.0 / hi[src0 + M_SOURCE_LEN * si + 3];
                        for (int i = 0; i < 3; i++) s_hi[i] = (d_hi[i] - inc[i]) * rl;
                        // its value from float64 too: at small angles d - i in
                        // float keeps ~2 digits of the component along the beam
                        for (int i = 0; i < 3; i++) scattering.v[i].re = (R)s_hi[i];
                    }
                    if (P.dmin > 0.0) {
                        double stol = 0.5 * (double)magnitude(scattering).re;
                        if (stol > 0.0 && P.dmin > 0.5 / stol) continue;
                    }
                    if ((double)polar.re == 0.0 || P.oversample_polar) {
                        polar = polarization_factor(ld(mdl, M_KAHN), incident, diffracted, ld3(mdl, M_POLAR));
                    }
                    const int ob = first ? orf : orr;
                    first = false;
                    // the plain loop with N compiled in (2 .. 10; else the
                    // general loop); the lifted loop once, N at run time (its
                    // three recurrences side by side)
#define FAST_CASE(W)                                                                           \
    case W:                                                                                    \
        if constexpr (NDIR <= 2) {                                                             \
            orientations_fast<false, W>(P, mdl, hi, ob, scattering, s_hi, fc2, W, i_acc);      \
        }                                                                                      \
        break;
                    if (NDIR > 0 && fast && kind == WHOLE_LIFTED) {
                        if constexpr (NDIR > 0) {
                            orientations_fast<true, 0>(P, mdl, hi, ob, scattering, s_hi, fc2, nw, i_acc);
                        }
                    } else {
                        switch (fast ? nw : 0) {
                            WHOLE_CASES(FAST_CASE)
                            default:
                                orientations(P, mdl, hi, hkl, ob, scattering, s_hi, n, default_f, capture, polar,
                                             omega, mode, switch_eval, i_acc, eval, oor);
                        }
                    }
#undef FAST_CASE
                }
            }
        }
    }
    T test = ld(mdl, M_SCALE) * i_acc;
    if (!P.oversample_thick) test = test * capture;
    if (!P.oversample_polar) test = test * polar;
    if (!P.oversample_omega) test = test * omega;
    return test;
}

// One thread per pixel of [start, start + count) of the npix pixels: the
// ROI rectangle in C loop order (slow outer, fast inner), or the list pix of
// (fast, slow) pairs when a mask leaves holes. out holds NV planes of npix
// values (the image, then each derivative), so that for a whole detector a
// plane is the image itself; oor (only with interpolation) the first
// out-of-range structure-factor evaluation (-1 none).
// Registers per thread (0: as the compiler likes). Kernels of three or
// more directions take 255 when left alone, 8 warps an SM; at 168 their
// fast loops keep everything in registers and 12 warps run (the general
// loop spills). __maxnreg__ needs NVRTC 12.4.
#ifndef RENDER_MAXNREG
#define RENDER_MAXNREG (NDIR >= 3 ? 168 : 0)
#endif
#if defined(__CUDACC__) && RENDER_MAXNREG > 0 && \
    (__CUDACC_VER_MAJOR__ > 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 4))
#define RENDER_REGS __maxnreg__(RENDER_MAXNREG)
#else
#define RENDER_REGS
#endif

extern "C" __global__ void RENDER_REGS render_pixels(const Params P, const R* __restrict__ mdl,
                                                     const double* __restrict__ hi, const double* __restrict__ hkl,
                                                     const int* __restrict__ pix, int start, int count, int npix,
                                                     R* __restrict__ out, int* __restrict__ oor) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    int g = start + i;
    int mode = 0, sw = 0;
    if (P.nearest_mode) {
        if (g == P.switch_pixel) {
            mode = 2;
            sw = P.switch_eval;
        } else {
            mode = 1;
        }
    }
    int fpixel, spixel;
    if (P.pix_list) {
        fpixel = pix[2 * g];
        spixel = pix[2 * g + 1];
    } else {
        fpixel = P.roi_f0 + g % P.roi_nf;
        spixel = P.roi_s0 + g / P.roi_nf;
    }
    int o = -1;
    T v = pixel(P, mdl, hi, hkl, fpixel, spixel, g == P.first_pixel, mode, sw, &o);
    out[g] = v.re;
#pragma unroll
    for (int j = 0; j < NDIR; j++) out[(long long)(j + 1) * npix + g] = v.eps[j];
    if (INTERPOLATE && P.has_hkl) oor[g] = o;
}

// The published M2h.3 phi-cache arithmetic (docs/experiments.md, "phi-cache"), one thread, in
// Dual<R, 1> (the cell's dtype, as the CPU engine computes it). v: the six
// cell vectors a, b, c (Å), a*, b*, c* (1/Å) as 18 (value, d/d cell_a)
// pairs, computed on the host in R. Step 0 of the fresh stack (scaled by
// fresh_scale) is replaced by the stored vectors (scaled by stored_scale);
// the loss is the sum of every component over the steps, summed in the
// CPU's order (probes phi_cache_loss). out: loss, d loss / d cell_a.
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }

extern "C" __global__ void phi_cache_probe(const double* __restrict__ v, double stored_scale, double fresh_scale,
                                           long long steps, double* __restrict__ out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    typedef Dual<R, 1> D1;
    D1 loss = cst<R, 1>(R(0));
    for (long long step = 0; step < steps; step++) {
        D1 s = cst<R, 1>((R)(step == 0 ? stored_scale : fresh_scale));
        for (int c = 0; c < 18; c++) {
            D1 x;
            x.re = (R)v[2 * c];
            x.eps[0] = (R)v[2 * c + 1];
            // comp = x * s (product rule), loss = loss + comp; no contraction
            D1 comp;
            comp.re = mul_rn(x.re, s.re);
            comp.eps[0] = add_rn(mul_rn(x.eps[0], s.re), mul_rn(s.eps[0], x.re));
            loss.re = add_rn(loss.re, comp.re);
            loss.eps[0] = add_rn(loss.eps[0], comp.eps[0]);
        }
    }
    out[0] = (double)loss.re;
    out[1] = (double)loss.eps[0];
}
