//! The host/kernel interface, written once. One Rust table each for
//!
//! - the launch parameters: [`Params`], `#[repr(C)]`, and [`PARAMS_FIELDS`]
//!   (name, C type, offset, size of every field) come from one macro input;
//! - the model buffer's layout: [`MODEL_SLOTS`] (the `M_*` offsets the
//!   kernel reads and the order `inputs::flatten` writes, checked as it writes);
//! - the numbers the kernel and `physics::lattice` share ([`SHARED_CONSTANTS`],
//!   taken from lattice.rs) and the lattice-shape codes of `-DSHAPE`;
//!
//! and [`header`] writes them as C. The header is prepended to kernel.cu for
//! NVRTC ([`kernel_source`]) and included before it by the host build of the
//! kernel (tests/kernel_host.rs), so kernel.cu holds no copy of any of them.
//! That test also compares every field's offset as the C compiler lays out
//! `struct Params` with the Rust offsets here.

use crate::engine::Dtype;
use crate::physics::config::LatticeShape;
use crate::physics::lattice;
use crate::physics::Simulation;
use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use std::fmt::Write;
use std::sync::OnceLock;

/// kernel.cu as written (without the generated header).
pub const KERNEL_SOURCE: &str = include_str!("kernel.cu");

/// What NVRTC compiles: [`header`], then kernel.cu (line numbers in NVRTC's
/// messages are kernel.cu's).
pub fn kernel_source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| format!("{}#line 1 \"kernel.cu\"\n{KERNEL_SOURCE}", header()))
}

// ---------------------------------------------------------------------------
// launch parameters

/// A field type of [`Params`] as C spells it.
pub trait CField {
    /// C's element type.
    const C_TYPE: &'static str;
    /// Array length; None for a scalar.
    const LEN: Option<usize>;
}
impl CField for f64 {
    const C_TYPE: &'static str = "double";
    const LEN: Option<usize> = None;
}
impl CField for i32 {
    const C_TYPE: &'static str = "int";
    const LEN: Option<usize> = None;
}
impl<const N: usize> CField for [f64; N] {
    const C_TYPE: &'static str = "double";
    const LEN: Option<usize> = Some(N);
}
impl<const N: usize> CField for [i32; N] {
    const C_TYPE: &'static str = "int";
    const LEN: Option<usize> = Some(N);
}

/// One field of [`Params`]: its name, C type and place in the Rust struct.
#[derive(Debug, Clone, Copy)]
pub struct ParamsField {
    /// Field name, the same in Rust and C.
    pub name: &'static str,
    /// C type of one element (`double` or `int`).
    pub c_type: &'static str,
    /// Array length; None for a scalar.
    pub len: Option<usize>,
    /// `offset_of!` in the Rust struct
    pub offset: usize,
    /// Size in bytes (`size_of`).
    pub size: usize,
    /// The field's doc comment, written after it in the header as a C comment.
    pub doc: &'static str,
}

/// The struct and its field table from one list, so that they cannot differ.
macro_rules! kernel_params {
    ($(#[doc = $sdoc:literal])* pub struct $name:ident {
        $($(#[doc = $doc:literal])* $field:ident: $ty:ty,)*
    }) => {
        $(#[doc = $sdoc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name {
            $($(#[doc = $doc])* pub $field: $ty,)*
        }
        /// Every field of [`Params`], in order.
        pub const PARAMS_FIELDS: &[ParamsField] = &[$(ParamsField {
            name: stringify!($field),
            c_type: <$ty as CField>::C_TYPE,
            len: <$ty as CField>::LEN,
            offset: std::mem::offset_of!($name, $field),
            size: std::mem::size_of::<$ty>(),
            doc: concat!("" $(, $doc)*),
        },)*];
    };
}

kernel_params! {
    /// Image constants for the kernel (`struct Params` in C): every f64, then
    /// every i32, so that C and Rust need no padding between them.
    pub struct Params {
        /// pixel size (m)
        pixel_size: f64,
        /// pixel_size / oversample
        sub: f64,
        /// pixel_size * pixel_size
        pixel_area: f64,
        /// detector thickness step (m)
        thickstep: f64,
        /// detector attenuation (1/m)
        mu: f64,
        /// detector thickness (m)
        thick: f64,
        /// resolution cut d-min (m), 0 none
        dmin: f64,
        /// water background thickness (m), 0 none
        water_size: f64,
        /// scale of the spot-shape radius (C's fudge)
        fudge: f64,
        /// unit beam direction
        beam: [f64; 3],
        /// subpixels per pixel side
        oversample: i32,
        /// layers through the sensor
        thicksteps: i32,
        /// number of sources
        nsources: i32,
        /// phi steps x mosaic domains
        norient: i32,
        /// 1: spherical detector (curved_det)
        curved: i32,
        /// 1: solid angle 1/R^2 only (point_pixel)
        point_pixel: i32,
        /// 1: no polarization correction (nopolar)
        nopolar: i32,
        /// 1: solid angle per subpixel
        oversample_omega: i32,
        /// 1: sensor absorption per subpixel
        oversample_thick: i32,
        /// 1: polarization factor per subpixel
        oversample_polar: i32,
        /// which of Na, Nb, Nc exceed 1
        n_gt1: [i32; 3],
        /// N as a whole number (fast sincg) when it carries no derivative, else 0
        n_whole: [i32; 3],
        /// three or more live parameters: sincg lifted from a scalar dual
        lifted: i32,
        /// 1: an HKL grid is given
        has_hkl: i32,
        /// the HKL grid holds at least one reflection
        hkl_count_pos: i32,
        /// smallest h on the HKL grid
        h_min: i32,
        /// largest h on the HKL grid
        h_max: i32,
        /// smallest k on the HKL grid
        k_min: i32,
        /// largest k on the HKL grid
        k_max: i32,
        /// smallest l on the HKL grid
        l_min: i32,
        /// largest l on the HKL grid
        l_max: i32,
        /// index (in the pixel list) of the pixel holding the first phi sweep, -1 none
        first_pixel: i32,
        /// 0: interpolate; 1: re-run (nearest, SwitchAt for switch_pixel)
        nearest_mode: i32,
        /// index of the pixel that interpolates until switch_eval, -1 none
        switch_pixel: i32,
        /// evaluation of switch_pixel from which F is looked up nearest
        switch_eval: i32,
        /// 1: pixels from the list (a mask); 0: the ROI rectangle, row by row
        pix_list: i32,
        /// first fast pixel of the ROI rectangle
        roi_f0: i32,
        /// first slow pixel of the ROI rectangle
        roi_s0: i32,
        /// width of the ROI rectangle (pixels along fast)
        roi_nf: i32,
        /// 1: float32 with derivatives; lattice factors at float64 indices
        /// from the float64 model (simulator.rs Model::hi)
        hi_index: i32,
    }
}

// SAFETY: plain data (f64, i32 and arrays of them), repr(C), laid out as the
// kernel's struct Params (tests/kernel_host.rs checks every field).
unsafe impl DeviceRepr for Params {}

impl Params {
    /// The struct's bytes, as the kernel receives them.
    pub fn to_bytes(&self) -> Vec<u8> {
        // SAFETY: repr(C) plain data whose fields leave no padding (every
        // f64 first, then every i32, 8 x 12 + 4 x 34 bytes)
        unsafe {
            std::slice::from_raw_parts(
                (self as *const Params).cast::<u8>(),
                std::mem::size_of::<Params>(),
            )
        }
        .to_vec()
    }
}

/// The floating type the kernel computes in (`REAL`).
pub trait GpuReal:
    DeviceRepr + ValidAsZeroBits + Copy + Default + Unpin + Send + Sync + 'static
{
    /// The kernel's `REAL` from an f64 (rounded for float).
    fn of(x: f64) -> Self;
    /// The value as f64.
    fn to(self) -> f64;
}
impl GpuReal for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to(self) -> f64 {
        self
    }
}
impl GpuReal for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to(self) -> f64 {
        self as f64
    }
}

// ---------------------------------------------------------------------------
// the model buffer

macro_rules! model_slots {
    ($($(#[doc = $doc:literal])* $name:ident = $len:literal,)*) => {
        /// A fixed quantity of the model buffer (`M_<NAME>` in kernel.cu).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Slot {
            $($(#[doc = $doc])* $name,)*
        }
        /// The model buffer's fixed part in order: each quantity and its
        /// number of scalars.
        pub const MODEL_SLOTS: &[(Slot, &str, usize)] = &[$((Slot::$name, stringify!($name), $len),)*];
    };
}

model_slots! {
    /// detector fast axis
    Fdet = 3,
    /// detector slow axis
    Sdet = 3,
    /// detector normal
    Odet = 3,
    /// position of pixel (0, 0) (m)
    Pix0 = 3,
    /// close distance (m)
    Close = 1,
    /// distance (m)
    Dist = 1,
    /// polarization axis
    Polar = 3,
    /// Kahn factor
    Kahn = 1,
    /// default structure factor
    Deff = 1,
    /// the image's scale (fluence, r_e^2, steps)
    Scale = 1,
    /// background intensity added to each pixel
    Ibg = 1,
    /// Na, Nb, Nc
    N = 3,
    /// a*, b*, c* (1/Å)
    Recip = 9,
}

impl Slot {
    /// Scalars in the slot.
    pub const fn size(self) -> usize {
        MODEL_SLOTS[self as usize].2
    }
    /// Scalars before the slot.
    pub const fn offset(self) -> usize {
        let (mut i, mut o) = (0, 0);
        while i < self as usize {
            o += MODEL_SLOTS[i].2;
            i += 1;
        }
        o
    }
}

/// Where the sources start: after every [`Slot`].
pub const M_SOURCES: usize = Slot::Recip.offset() + Slot::Recip.size();
/// Scalars per source: incident direction x, y, z, then lambda (m).
pub const SOURCE_LEN: usize = 4;
/// Scalars per orientation: a, b, c (Å), after the sources in two sets
/// (orient_first, then orient_rest), norient each.
pub const ORIENT_LEN: usize = 9;

// ---------------------------------------------------------------------------
// shared constants

/// A constant's value as C writes it.
#[derive(Debug, Clone, Copy)]
pub enum CValue {
    /// A `double` constant.
    F64(f64),
    /// A `float` constant (`f` suffix).
    F32(f32),
    /// A `double` array, with its length as `<NAME>_LEN`.
    F64s(&'static [f64]),
}

/// A number the kernel and the Rust physics both use.
#[derive(Debug, Clone, Copy)]
pub struct SharedConstant {
    /// The macro name in the header.
    pub name: &'static str,
    /// The value, taken from its Rust source.
    pub value: CValue,
    /// What it is; written above its `#define`.
    pub doc: &'static str,
}

/// The shared numbers, each from its Rust source.
pub const SHARED_CONSTANTS: &[SharedConstant] = &[
    SharedConstant {
        name: "COS_PI_COEFFS",
        value: CValue::F64s(&lattice::COS_PI_COEFFS),
        doc: "cos(pi r) in powers of (pi r)^2 (lattice.rs cos_pi_reduced)",
    },
    SharedConstant {
        name: "ROUND_MAGIC_F64",
        value: CValue::F64(lattice::ROUND_MAGIC),
        doc: "1.5 2^52 (lattice.rs round_half_even)",
    },
    SharedConstant {
        name: "ROUND_LIMIT_F64",
        value: CValue::F64(lattice::ROUND_LIMIT),
        doc: "2^51",
    },
    SharedConstant {
        name: "ROUND_MAGIC_F32",
        value: CValue::F32(1.5 * (1u32 << 23) as f32),
        doc: "1.5 2^23: round_half_even in float",
    },
    SharedConstant {
        name: "ROUND_LIMIT_F32",
        value: CValue::F32((1u32 << 22) as f32),
        doc: "2^22",
    },
    SharedConstant {
        name: "ROUND_SHAPE_NORM",
        value: CValue::F64(lattice::ROUND_SHAPE_NORM),
        doc: "lattice.rs f_latt, round shape",
    },
    SharedConstant {
        name: "GAUSS_SHAPE_WIDTH",
        value: CValue::F64(lattice::GAUSS_SHAPE_WIDTH),
        doc: "lattice.rs f_latt, gauss shape",
    },
    SharedConstant {
        name: "TOPHAT_SHAPE_CUT",
        value: CValue::F64(lattice::TOPHAT_SHAPE_CUT),
        doc: "lattice.rs f_latt, tophat shape",
    },
    SharedConstant {
        name: "PI_F64",
        value: CValue::F64(std::f64::consts::PI),
        doc: "pi as the Rust physics uses it",
    },
];

/// A float64 as a C literal that reads back to the same bits (Rust prints
/// the shortest decimal that does; a negative one in parentheses).
fn c_f64(x: f64) -> String {
    let s = format!("{x:?}");
    if x.is_sign_negative() {
        format!("({s})")
    } else {
        s
    }
}

fn c_f32(x: f32) -> String {
    let s = format!("{x:?}f");
    if x.is_sign_negative() {
        format!("({s})")
    } else {
        s
    }
}

// ---------------------------------------------------------------------------
// kernel variants

/// Which kernel: precision, number of derivative directions, and the
/// features compiled in rather than branched on at run time (the lattice
/// shape and tricubic interpolation: leaving out the code a render never
/// takes makes the kernel smaller, quicker to compile and lighter on
/// registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelVariant {
    /// Precision the kernel computes in (`-DREAL=`).
    pub dtype: Dtype,
    /// Derivative directions each scalar carries (`-DNDIR=`, 0 to 8).
    pub directions: usize,
    /// Lattice shape compiled in (`-DSHAPE=`).
    pub shape: LatticeShape,
    /// Tricubic interpolation of F compiled in (`-DINTERPOLATE=`).
    pub interpolate: bool,
}

/// The lattice shapes and their codes (`-DSHAPE=`, `SHAPE_<NAME>` in C).
const SHAPES: [(LatticeShape, &str); 4] = [
    (LatticeShape::Square, "SQUARE"),
    (LatticeShape::Round, "ROUND"),
    (LatticeShape::Gauss, "GAUSS"),
    (LatticeShape::Tophat, "TOPHAT"),
];

impl KernelVariant {
    /// The preprocessor definitions that select this variant in kernel.cu
    /// (NVRTC, and a host compiler in tests/kernel_host.rs).
    pub fn defines(&self) -> Vec<String> {
        vec![
            format!(
                "-DREAL={}",
                if self.dtype == Dtype::F64 {
                    "double"
                } else {
                    "float"
                }
            ),
            format!("-DNDIR={}", self.directions),
            format!("-DSHAPE={}", self.shape_code()),
            format!("-DINTERPOLATE={}", self.interpolate as i32),
        ]
    }

    /// Square crystal, nearest-neighbour structure factors: the default model.
    pub fn new(dtype: Dtype, directions: usize) -> Self {
        KernelVariant {
            dtype,
            directions,
            shape: LatticeShape::Square,
            interpolate: false,
        }
    }
    /// The kernel that renders `sim`.
    pub fn of(sim: &Simulation, dtype: Dtype, directions: usize) -> Self {
        KernelVariant {
            dtype,
            directions,
            shape: sim.setup.shape,
            interpolate: sim.hkl.is_some() && sim.setup.interpolate,
        }
    }
    fn shape_code(&self) -> usize {
        SHAPES
            .iter()
            .position(|(s, _)| *s == self.shape)
            .expect("every lattice shape has a code")
    }
}

// ---------------------------------------------------------------------------
// the header

/// The C text of the interface: the shared constants, `struct Params` (and
/// `PARAMS_FIELDS(X)`, an X-macro naming its fields, for the layout test),
/// the lattice-shape codes and the model buffer's offsets.
pub fn header() -> String {
    let mut h = String::from(
        "// Generated by src/engine/cuda/interface.rs (the one definition of the\n\
         // host/kernel interface); prepended to kernel.cu. Do not edit.\n\n",
    );
    let w = &mut h;
    // writing to a String cannot fail
    let _ = writeln!(w, "// numbers shared with the Rust physics");
    let (mut scalars, mut arrays) = (vec![], vec![]);
    for c in SHARED_CONSTANTS {
        let _ = writeln!(w, "// {}", c.doc);
        match c.value {
            CValue::F64(x) => {
                let _ = writeln!(w, "#define {} {}", c.name, c_f64(x));
                scalars.push(c.name);
            }
            CValue::F32(x) => {
                let _ = writeln!(w, "#define {} {}", c.name, c_f32(x));
                scalars.push(c.name);
            }
            CValue::F64s(v) => {
                let items: Vec<String> = v.iter().map(|x| c_f64(*x)).collect();
                let _ = writeln!(w, "#define {}_LEN {}", c.name, v.len());
                let _ = writeln!(w, "#define {} {{{}}}", c.name, items.join(", "));
                arrays.push(c.name);
            }
        }
    }
    // X-macros naming them, for the layout test's driver
    let _ = writeln!(w, "#define SHARED_SCALARS(X) {}", x_list(&scalars));
    let _ = writeln!(w, "#define SHARED_ARRAYS(X) {}\n", x_list(&arrays));
    let _ = writeln!(w, "// lattice shapes (-DSHAPE=)");
    for (i, (_, name)) in SHAPES.iter().enumerate() {
        let _ = writeln!(w, "#define SHAPE_{name} {i}");
    }
    let _ = writeln!(
        w,
        "\n// image constants (Rust: interface::Params)\nstruct Params {{"
    );
    for f in PARAMS_FIELDS {
        let dim = f.len.map(|n| format!("[{n}]")).unwrap_or_default();
        let doc = f.doc.trim();
        let comment = if doc.is_empty() {
            String::new()
        } else {
            format!("  // {doc}")
        };
        let _ = writeln!(w, "    {} {}{dim};{comment}", f.c_type, f.name);
    }
    let names: Vec<&str> = PARAMS_FIELDS.iter().map(|f| f.name).collect();
    let _ = writeln!(w, "}};\n#define PARAMS_FIELDS(X) {}\n", x_list(&names));
    let _ = writeln!(
        w,
        "// model buffer: scalars of NV = 1 + NDIR values each (value, then\n\
         // each derivative component)\n#define NV (1 + NDIR)"
    );
    for (slot, name, _) in MODEL_SLOTS {
        let _ = writeln!(w, "#define M_{} {}", name.to_uppercase(), slot.offset());
    }
    let _ = writeln!(
        w,
        "// then the sources (M_SOURCE_LEN scalars each: incident x, y, z,\n\
         // lambda), orient_first and orient_rest (norient x M_ORIENT_LEN: a, b, c)\n\
         #define M_SOURCES {M_SOURCES}\n#define M_SOURCE_LEN {SOURCE_LEN}\n\
         #define M_ORIENT_LEN {ORIENT_LEN}"
    );
    h
}

/// `X(a) X(b) ...`: the body of an X-macro over `names`.
fn x_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("X({n})"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust struct follows C's layout rule with no padding (every field
    /// at the end of the one before, at its alignment); the C compiler's
    /// own offsets are compared in tests/kernel_host.rs.
    #[test]
    fn params_fields_are_contiguous() {
        let mut end = 0;
        for f in PARAMS_FIELDS {
            assert_eq!(f.offset, end, "{}", f.name);
            let elem = if f.c_type == "double" { 8 } else { 4 };
            assert_eq!(f.size, elem * f.len.unwrap_or(1), "{}", f.name);
            end += f.size;
        }
        assert_eq!(std::mem::size_of::<Params>(), end);
        assert_eq!(end, 12 * 8 + 34 * 4);
    }

    #[test]
    fn slots_follow_each_other() {
        assert_eq!(Slot::Fdet.offset(), 0);
        assert_eq!(Slot::Close.offset(), 12);
        assert_eq!(Slot::Recip.offset(), 24);
        assert_eq!(M_SOURCES, 33);
        for (i, (s, _, n)) in MODEL_SLOTS.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(s.size(), *n);
        }
    }

    #[test]
    fn constants_written_exactly() {
        for x in [
            -0.025_806_891_390_014_06,
            4.303069587032947e-6,
            6755399441055744.0,
            1e300,
        ] {
            let s = c_f64(x);
            let t = s.trim_matches(|c| c == '(' || c == ')');
            assert_eq!(t.parse::<f64>().unwrap().to_bits(), x.to_bits(), "{s}");
            assert!(t.contains('.') || t.contains('e'), "{s} is not a C double");
        }
        assert_eq!(c_f32(12582912.0), "12582912.0f");
    }

    #[test]
    fn header_defines_what_kernel_cu_reads() {
        let h = header();
        for needle in [
            "#define M_FDET 0\n",
            "#define M_RECIP 24\n",
            "#define M_SOURCES 33\n",
            "    int hi_index;",
            "    double beam[3];",
            "#define SHAPE_GAUSS 2\n",
            "#define COS_PI_COEFFS_LEN 10\n",
        ] {
            assert!(h.contains(needle), "header lacks {needle:?}:\n{h}");
        }
        // kernel.cu keeps no copy of its own
        assert!(!KERNEL_SOURCE.contains("struct Params {"));
        assert!(!KERNEL_SOURCE.contains("#define M_"));
        assert!(kernel_source().starts_with(&h));
    }
}
