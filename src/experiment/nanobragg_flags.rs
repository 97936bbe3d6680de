//! nanoBragg.c's command line as one table ([`GROUPS`]): every flag's names
//! (aliases included), its arguments and their units, its help text and the
//! function that sets the configuration. Parsing ([`parse_args`]), the usage
//! text ([`usage`]) and a test per flag (this file's tests) are all made from
//! it, so there is nothing else to keep in step.
//!
//! Flags are matched by their exact names (nanoBragg.c matches substrings, so
//! that `-close_distance` also triggers `-distance`; we do not reproduce
//! those accidental aliases) but keep C's meaning: units, which flags set
//! the pivot, "last one wins" for conventions, `-N` setting all three
//! counts, and so on. Unknown flags, missing values and non-numeric values
//! are errors naming the flag.
//!
//! The table lives in the experiment layer because experiment files give
//! flags too (`model.nanobragg_args`, converted by [`config_table`]);
//! `runner nanobragg` (cli) renders and writes what it parsed.

use crate::engine::{Device, Dtype};
use crate::io;
use crate::physics::config::{Convention, LatticeShape, PhiCarryover, Pivot, SimConfig};
use crate::physics::params::Param;
use serde::Serialize;
use std::path::PathBuf;

/// Everything a nanoBragg command line asks for: the configuration and the
/// command's own options (outputs, device, precision).
#[derive(Debug, Clone, Serialize)]
pub struct NanobraggArgs {
    /// The simulator configuration the flags set.
    #[serde(flatten)]
    pub config: SimConfig,
    /// `-floatfile`: the raw float32 image to write.
    pub floatfile: Option<PathBuf>,
    /// `-intfile`: the SMV image to write (spec-a-core "SMV outputs").
    pub intfile: Option<PathBuf>,
    /// `-pgmfile`: the 8-bit PGM picture to write.
    pub pgmfile: Option<PathBuf>,
    /// `-noisefile`: the SMV image with Poisson noise to write.
    pub noisefile: Option<PathBuf>,
    /// C's `write_pgm`: cleared by `-nopgm`, set again by `-pgmfile`/`-pgmscale`.
    pub write_pgm: bool,
    /// C's `calculate_noise`: cleared by `-nonoise`, set again by `-noisefile`.
    pub calculate_noise: bool,
    /// `-scale`: SMV scale; <= 0 means 55000 / max_I.
    pub int_scale: f64,
    /// `-pgmscale`: PGM scale; <= 0 means 250 / (5 rmsd).
    pub pgm_scale: f64,
    /// `-adc`: offset added to SMV and noise pixels (default 40).
    pub adc: f64,
    /// The engine to render on (`-device`).
    #[serde(serialize_with = "as_text")]
    pub device: Device,
    /// The precision to render in (`-dtype`).
    pub dtype: Dtype,
    /// `-img`: header read for geometry (pixels unused).
    pub img_file: Option<PathBuf>,
    /// `-deriv`: parameters to write derivative images of.
    pub derivs: Vec<Param>,
    /// `-memory_limit`: the memory budget in bytes.
    pub memory_limit: Option<u64>,
    /// `-h`/`--help` was given.
    pub help: bool,
    /// Flags accepted for compatibility and ignored (e.g. `-printout`).
    pub ignored: Vec<String>,
}

fn as_text<S: serde::Serializer>(d: &Device, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}

impl Default for NanobraggArgs {
    fn default() -> Self {
        NanobraggArgs {
            config: SimConfig::default(),
            floatfile: None,
            intfile: None,
            pgmfile: None,
            noisefile: None,
            write_pgm: true,
            calculate_noise: true,
            int_scale: 0.0,
            pgm_scale: 0.0,
            adc: 40.0,
            device: Device::Cpu,
            dtype: Dtype::F64,
            img_file: None,
            derivs: vec![],
            memory_limit: None,
            help: false,
            ignored: vec![],
        }
    }
}

/// nanoBragg.c's output file names, used when no output file is named.
pub const DEFAULT_FLOATFILE: &str = "floatimage.bin";
pub const DEFAULT_INTFILE: &str = "intimage.img";
pub const DEFAULT_PGMFILE: &str = "image.pgm";
pub const DEFAULT_NOISEFILE: &str = "noiseimage.img";

impl NanobraggArgs {
    /// No output file named (`-floatfile`, `-intfile`, `-pgmfile`,
    /// `-noisefile`): nanoBragg.c's default files are written.
    fn defaults_apply(&self) -> bool {
        self.floatfile.is_none()
            && self.intfile.is_none()
            && self.pgmfile.is_none()
            && self.noisefile.is_none()
    }
    fn named_or_default(&self, named: &Option<PathBuf>, default: &str) -> Option<PathBuf> {
        match named {
            Some(p) => Some(p.clone()),
            None if self.defaults_apply() => Some(PathBuf::from(default)),
            None => None,
        }
    }
    /// The float image to write, if any.
    pub fn float_output(&self) -> Option<PathBuf> {
        self.named_or_default(&self.floatfile, DEFAULT_FLOATFILE)
    }
    /// The SMV image to write, if any.
    pub fn int_output(&self) -> Option<PathBuf> {
        self.named_or_default(&self.intfile, DEFAULT_INTFILE)
    }
    /// The PGM file to write, if any (after `-nopgm`).
    pub fn pgm_output(&self) -> Option<PathBuf> {
        self.named_or_default(&self.pgmfile, DEFAULT_PGMFILE)
            .filter(|_| self.write_pgm)
    }
    /// The noise file to write, if any (after `-nonoise`).
    pub fn noise_output(&self) -> Option<PathBuf> {
        self.named_or_default(&self.noisefile, DEFAULT_NOISEFILE)
            .filter(|_| self.calculate_noise)
    }
    /// The files of the derivative by `p`: float32 `.bin` and float64 `.npy`,
    /// named after the float image (named or default) without its extension:
    /// `floatimage.bin` gives `floatimage.d_cell_a.bin` and `floatimage.d_cell_a.npy`.
    pub fn deriv_outputs(&self, p: Param) -> (PathBuf, PathBuf) {
        let float = self
            .floatfile
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FLOATFILE));
        let stem = float.with_extension("");
        let with = |ext: &str| {
            let mut s = stem.clone().into_os_string();
            s.push(format!(".d_{}.{ext}", p.name()));
            PathBuf::from(s)
        };
        (with("bin"), with("npy"))
    }
}

/// The values after one flag, handed out with errors that name the flag and
/// say what was expected (the table's arguments and units).
pub struct Values<'a> {
    flag: &'a str,
    what: String,
    args: &'a [String],
    i: usize,
}

fn looks_like_flag(s: &str) -> bool {
    s.len() > 1 && s.starts_with('-') && s.parse::<f64>().is_err()
}

fn parse_num(flag: &str, v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err(format!("{flag}: '{v}' is not a finite number")),
        Err(_) => Err(format!("{flag}: '{v}' is not a number")),
    }
}

fn parse_int(flag: &str, v: &str) -> Result<i64, String> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| format!("{flag}: '{v}' is not an integer"))
}

impl<'a> Values<'a> {
    /// The flag as given (one of the entry's names).
    pub fn flag(&self) -> &'a str {
        self.flag
    }
    fn take(&mut self, n: usize) -> Result<&'a [String], String> {
        let (flag, what) = (self.flag, &self.what);
        if self.i + n > self.args.len() {
            let have = self.args.len() - self.i;
            return Err(if n == 1 {
                format!("{flag}: missing value ({what})")
            } else {
                format!("{flag}: expects {n} values ({what}), got {have}")
            });
        }
        let v = &self.args[self.i..self.i + n];
        self.i += n;
        Ok(v)
    }
    /// One value that is not a flag.
    pub fn string(&mut self) -> Result<&'a str, String> {
        let v = self.take(1)?[0].as_str();
        if looks_like_flag(v) || v.is_empty() {
            let (flag, what) = (self.flag, &self.what);
            return Err(format!("{flag}: missing value ({what}); found '{v}'"));
        }
        Ok(v)
    }
    pub fn path(&mut self) -> Result<PathBuf, String> {
        Ok(PathBuf::from(self.string()?))
    }
    pub fn nums<const N: usize>(&mut self) -> Result<[f64; N], String> {
        let vals = self.take(N)?;
        let mut out = [0.0; N];
        for (o, v) in out.iter_mut().zip(vals) {
            *o = parse_num(self.flag, v)?;
        }
        Ok(out)
    }
    pub fn num(&mut self) -> Result<f64, String> {
        Ok(self.nums::<1>()?[0])
    }
    pub fn ints<const N: usize>(&mut self) -> Result<[i64; N], String> {
        let vals = self.take(N)?;
        let mut out = [0i64; N];
        for (o, v) in out.iter_mut().zip(vals) {
            *o = parse_int(self.flag, v)?;
        }
        Ok(out)
    }
    pub fn int(&mut self) -> Result<i64, String> {
        Ok(self.ints::<1>()?[0])
    }
    /// A pixel count (non-negative, fits u32).
    pub fn count(&mut self) -> Result<u32, String> {
        let v = self.int()?;
        u32::try_from(v).map_err(|_| format!("{}: '{v}' is not a valid pixel count", self.flag))
    }
    /// A value parsed by `FromStr`, its error prefixed with the flag.
    pub fn parsed<T: std::str::FromStr<Err = String>>(&mut self) -> Result<T, String> {
        let flag = self.flag;
        self.string()?
            .parse()
            .map_err(|e: String| format!("{flag}: {e}"))
    }
}

/// How a flag sets the configuration: reads its values, changes the args.
pub type Apply = fn(&mut NanobraggArgs, &mut Values) -> Result<(), String>;

/// One flag of the table.
#[derive(Clone, Copy)]
pub struct Flag {
    /// The names it answers to; the first is shown, the others are aliases.
    pub names: &'static [&'static str],
    /// Its arguments (metavariables, space-separated; empty for a switch).
    pub args: &'static str,
    /// Units of the arguments (empty when they have none).
    pub units: &'static str,
    pub help: &'static str,
    pub apply: Apply,
    /// An example for the generated test: flags given before it, its values,
    /// and the keys of the serialized [`NanobraggArgs`] it changes
    /// ([`REFUSED`]: the flag is an error).
    pub example: (&'static str, &'static str, &'static [&'static str]),
}

/// The `sets` of a flag that is refused (an error naming the flag).
pub const REFUSED: &[&str] = &["<refused>"];

const fn flag(
    names: &'static [&'static str],
    args: &'static str,
    units: &'static str,
    help: &'static str,
    apply: Apply,
) -> Flag {
    Flag {
        names,
        args,
        units,
        help,
        apply,
        example: ("", "", &[]),
    }
}

impl Flag {
    /// The example: values after the flag and the keys they change.
    const fn eg(mut self, values: &'static str, sets: &'static [&'static str]) -> Self {
        self.example.1 = values;
        self.example.2 = sets;
        self
    }
    /// Flags the example gives before this one.
    const fn after(mut self, before: &'static str) -> Self {
        self.example.0 = before;
        self
    }
    /// What its values are, for messages: `DIST (mm)`.
    fn what(&self) -> String {
        if self.units.is_empty() {
            self.args.to_string()
        } else {
            format!("{} ({})", self.args, self.units)
        }
    }
}

/// A named convention replaces every custom vector and fixes the pivot.
fn convention(a: &mut NanobraggArgs, conv: Convention, pivot: Pivot) -> Result<(), String> {
    a.config.detector.convention = conv;
    a.config.detector.pivot = Some(pivot);
    clear_custom_vectors(&mut a.config);
    Ok(())
}

/// Clear the custom axes: a named convention replaces every vector.
fn clear_custom_vectors(cfg: &mut SimConfig) {
    cfg.detector.fdet_vector = None;
    cfg.detector.sdet_vector = None;
    cfg.detector.odet_vector = None;
    cfg.detector.twotheta_axis = None;
    cfg.beam.beam_vector = None;
    cfg.beam.polar_vector = None;
    cfg.goniometer.spindle_axis = None;
}

/// A custom axis: the convention becomes CUSTOM (C keeps its initial,
/// MOSFLM-like vectors for axes not given).
fn vector(
    a: &mut NanobraggArgs,
    v: &mut Values,
    slot: fn(&mut SimConfig) -> &mut Option<[f64; 3]>,
) -> Result<(), String> {
    let xyz = v.nums::<3>()?;
    let cfg = &mut a.config;
    if cfg.detector.convention != Convention::Custom {
        clear_custom_vectors(cfg);
    }
    cfg.detector.convention = Convention::Custom;
    *slot(cfg) = Some(xyz);
    Ok(())
}

/// One of the crystal's sizes (mm); the others stay 0 unless given.
fn size(a: &mut NanobraggArgs, v: &mut Values, axis: usize) -> Result<(), String> {
    let mm = v.num()?;
    a.config.crystal.size_mm.get_or_insert([0.0; 3])[axis] = mm;
    Ok(())
}

/// A geometry flag that also picks the pivot.
fn pivot(a: &mut NanobraggArgs, p: Pivot) -> Result<(), String> {
    a.config.detector.pivot = Some(p);
    Ok(())
}

fn refused(_: &mut NanobraggArgs, v: &mut Values) -> Result<(), String> {
    Err(format!("{}: not supported by braggrun", v.flag()))
}

fn ignored(a: &mut NanobraggArgs, v: &mut Values) -> Result<(), String> {
    a.ignored.push(v.flag().to_string());
    Ok(())
}

const GENERAL: &[Flag] = &[flag(
    &["-h", "-help", "--help"],
    "",
    "",
    "print this text",
    |a, _| {
        a.help = true;
        Ok(())
    },
)
.eg("", &["help"])];

const CRYSTAL: &[Flag] = &[
    flag(
        &["-cell"],
        "A B C ALPHA BETA GAMMA",
        "Å, deg",
        "unit cell (or -mat)",
        |a, v| {
            a.config.crystal.cell = Some(v.nums::<6>()?);
            Ok(())
        },
    )
    .eg("70 80 90 75 85 95", &["crystal.cell"]),
    flag(
        &["-mat"],
        "FILE",
        "",
        "MOSFLM A matrix: reciprocal vectors scaled by 1/lambda",
        |a, v| {
            a.config.crystal.mosflm_matrix = Some(v.path()?);
            Ok(())
        },
    )
    .eg("A.mat", &["crystal.mosflm_matrix"]),
    flag(
        &["-hkl"],
        "FILE",
        "",
        "structure factors: lines of h k l F",
        |a, v| {
            a.config.crystal.hkl_file = Some(v.path()?);
            Ok(())
        },
    )
    .eg("F.hkl", &["crystal.hkl_file"]),
    flag(
        &["-default_F"],
        "F",
        "",
        "structure factor of reflections not in -hkl",
        |a, v| {
            a.config.crystal.default_f = v.num()?;
            Ok(())
        },
    )
    .eg("7", &["crystal.default_f"]),
    flag(
        &["-misset"],
        "X Y Z|random",
        "deg",
        "crystal rotations about lab x, y, z",
        |a, v| {
            let c = &mut a.config.crystal;
            if v.take(1)?[0].starts_with("rand") {
                c.misset_random = true;
                c.misset_deg = None;
            } else {
                v.i -= 1;
                c.misset_deg = Some(v.nums::<3>()?);
                c.misset_random = false;
            }
            Ok(())
        },
    )
    .eg("10 20 30", &["crystal.misset_deg"]),
    flag(
        &["-misset_seed"],
        "SEED",
        "",
        "seed of -misset random (default: -seed)",
        |a, v| {
            a.config.crystal.misset_seed = Some(v.int()?);
            Ok(())
        },
    )
    .eg("5", &["crystal.misset_seed"]),
    flag(
        &["-N"],
        "CELLS",
        "",
        "unit cells along a, b and c",
        |a, v| {
            a.config.crystal.n_cells = [v.int()? as f64; 3];
            Ok(())
        },
    )
    .eg("5", &["crystal.n_cells"]),
    flag(&["-Na"], "CELLS", "", "unit cells along a", |a, v| {
        a.config.crystal.n_cells[0] = v.int()? as f64;
        Ok(())
    })
    .eg("5", &["crystal.n_cells"]),
    flag(&["-Nb"], "CELLS", "", "unit cells along b", |a, v| {
        a.config.crystal.n_cells[1] = v.int()? as f64;
        Ok(())
    })
    .eg("5", &["crystal.n_cells"]),
    flag(&["-Nc"], "CELLS", "", "unit cells along c", |a, v| {
        a.config.crystal.n_cells[2] = v.int()? as f64;
        Ok(())
    })
    .eg("5", &["crystal.n_cells"]),
    flag(
        &["-xtalsize", "-xtal_size", "-samplesize", "-sample_size"],
        "SIZE",
        "mm",
        "crystal size along a, b, c (alternative to -N)",
        |a, v| {
            a.config.crystal.size_mm = Some([v.num()?; 3]);
            Ok(())
        },
    )
    .eg("0.01", &["crystal.size_mm"]),
    flag(
        &["-xtal_x", "-xtal_thick", "-sample_x", "-sample_thick"],
        "SIZE",
        "mm",
        "crystal size along a",
        |a, v| size(a, v, 0),
    )
    .eg("0.01", &["crystal.size_mm"]),
    flag(
        &[
            "-xtal_y",
            "-xtal_width",
            "-sample_y",
            "-sample_width",
            "-width",
        ],
        "SIZE",
        "mm",
        "crystal size along b",
        |a, v| size(a, v, 1),
    )
    .eg("0.01", &["crystal.size_mm"]),
    flag(
        &[
            "-xtal_z",
            "-xtal_height",
            "-xtal_heigh",
            "-sample_z",
            "-sample_height",
            "-sample_heigh",
            "-height",
            "-heigh",
        ],
        "SIZE",
        "mm",
        "crystal size along c",
        |a, v| size(a, v, 2),
    )
    .eg("0.01", &["crystal.size_mm"]),
    flag(
        &["-square_xtal"],
        "",
        "",
        "parallelepiped crystal: sincg spots (default)",
        |a, _| {
            a.config.crystal.shape = LatticeShape::Square;
            Ok(())
        },
    )
    .after("-round_xtal")
    .eg("", &["crystal.shape"]),
    flag(
        &["-round_xtal"],
        "",
        "",
        "spherical crystal: sinc3 spots",
        |a, _| {
            a.config.crystal.shape = LatticeShape::Round;
            Ok(())
        },
    )
    .eg("", &["crystal.shape"]),
    flag(
        &["-gauss_xtal"],
        "",
        "",
        "Gaussian spots: no inter-Bragg maxima",
        |a, _| {
            a.config.crystal.shape = LatticeShape::Gauss;
            Ok(())
        },
    )
    .eg("", &["crystal.shape"]),
    flag(
        &["-tophat_spots", "-binary_spots"],
        "",
        "",
        "flat-topped spots clipped at the FWHM",
        |a, _| {
            a.config.crystal.shape = LatticeShape::Tophat;
            Ok(())
        },
    )
    .eg("", &["crystal.shape"]),
    flag(
        &["-fudge"],
        "SCALE",
        "",
        "scale of the spot-shape radius",
        |a, v| {
            a.config.crystal.fudge = v.num()?;
            Ok(())
        },
    )
    .eg("2", &["crystal.fudge"]),
    flag(
        &["-mosaic", "-mosaici", "-mosaic_spr", "-mosaic_spread"],
        "SPREAD",
        "deg",
        "isotropic mosaic spread",
        |a, v| {
            a.config.crystal.mosaic_spread_deg = Some(v.num()?);
            Ok(())
        },
    )
    .eg("0.5", &["crystal.mosaic_spread_deg"]),
    flag(
        &["-mosaic_dom", "-mosaic_domains"],
        "COUNT",
        "",
        "mosaic domains to render",
        |a, v| {
            a.config.crystal.mosaic_domains = Some(v.int()?);
            Ok(())
        },
    )
    .eg("4", &["crystal.mosaic_domains"]),
    flag(
        &["-mosaic_seed"],
        "SEED",
        "",
        "seed of the mosaic domains",
        |a, v| {
            a.config.crystal.mosaic_seed = v.int()?;
            Ok(())
        },
    )
    .eg("7", &["crystal.mosaic_seed"]),
    flag(
        &["-interpolate"],
        "",
        "",
        "interpolate F between Bragg peaks (default: when N <= 2)",
        |a, _| {
            a.config.crystal.interpolate = Some(true);
            Ok(())
        },
    )
    .eg("", &["crystal.interpolate"]),
    flag(
        &["-nointerpolate"],
        "",
        "",
        "no interpolation of F",
        |a, _| {
            a.config.crystal.interpolate = Some(false);
            Ok(())
        },
    )
    .eg("", &["crystal.interpolate"]),
];

const BEAM: &[Flag] = &[
    flag(
        &["-lambda", "-wave"],
        "WAVELENGTH",
        "Å",
        "X-ray wavelength",
        |a, v| {
            a.config.beam.wavelength_a = v.num()?;
            a.config.beam.energy_ev = None;
            Ok(())
        },
    )
    .eg("1.5", &["beam.wavelength_a"]),
    flag(
        &["-energy"],
        "ENERGY",
        "eV",
        "photon energy (sets the wavelength)",
        |a, v| {
            let e = v.num()?;
            if e == 0.0 {
                return Err(format!("{}: energy must not be 0", v.flag()));
            }
            a.config.beam.wavelength_a = 12398.42 / e;
            a.config.beam.energy_ev = None;
            Ok(())
        },
    )
    .eg("12398.42", &["beam.wavelength_a"])
    .after("-lambda 2"),
    flag(
        &["-dispersion"],
        "WIDTH",
        "%",
        "spectral width delta-lambda/lambda",
        |a, v| {
            a.config.beam.dispersion_pct = Some(v.num()?);
            Ok(())
        },
    )
    .eg("0.1", &["beam.dispersion_pct"]),
    flag(
        &["-dispsteps"],
        "COUNT",
        "",
        "wavelengths across -dispersion",
        |a, v| {
            a.config.beam.dispsteps = Some(v.int()?);
            Ok(())
        },
    )
    .eg("3", &["beam.dispsteps"]),
    flag(
        &["-divergence"],
        "RANGE",
        "mrad",
        "horizontal and vertical divergence range",
        |a, v| {
            let r = v.num()?;
            a.config.beam.hdivrange_mrad = Some(r);
            a.config.beam.vdivrange_mrad = Some(r);
            Ok(())
        },
    )
    .eg("2", &["beam.hdivrange_mrad", "beam.vdivrange_mrad"]),
    flag(
        &["-hdivrange"],
        "RANGE",
        "mrad",
        "horizontal divergence range",
        |a, v| {
            a.config.beam.hdivrange_mrad = Some(v.num()?);
            Ok(())
        },
    )
    .eg("2", &["beam.hdivrange_mrad"]),
    flag(
        &["-vdivrange"],
        "RANGE",
        "mrad",
        "vertical divergence range",
        |a, v| {
            a.config.beam.vdivrange_mrad = Some(v.num()?);
            Ok(())
        },
    )
    .eg("2", &["beam.vdivrange_mrad"]),
    flag(
        &["-hdivstep"],
        "STEP",
        "mrad",
        "horizontal divergence step",
        |a, v| {
            a.config.beam.hdivstep_mrad = Some(v.num()?);
            Ok(())
        },
    )
    .eg("0.5", &["beam.hdivstep_mrad"]),
    flag(
        &["-vdivstep"],
        "STEP",
        "mrad",
        "vertical divergence step",
        |a, v| {
            a.config.beam.vdivstep_mrad = Some(v.num()?);
            Ok(())
        },
    )
    .eg("0.5", &["beam.vdivstep_mrad"]),
    flag(
        &["-hdivsteps"],
        "COUNT",
        "",
        "horizontal divergence steps",
        |a, v| {
            a.config.beam.hdivsteps = Some(v.int()?);
            Ok(())
        },
    )
    .eg("3", &["beam.hdivsteps"]),
    flag(
        &["-vdivsteps"],
        "COUNT",
        "",
        "vertical divergence steps",
        |a, v| {
            a.config.beam.vdivsteps = Some(v.int()?);
            Ok(())
        },
    )
    .eg("3", &["beam.vdivsteps"]),
    flag(
        &["-divsteps"],
        "COUNT",
        "",
        "horizontal and vertical divergence steps",
        |a, v| {
            let n = v.int()?;
            a.config.beam.hdivsteps = Some(n);
            a.config.beam.vdivsteps = Some(n);
            Ok(())
        },
    )
    .eg("3", &["beam.hdivsteps", "beam.vdivsteps"]),
    flag(
        &["-round_div"],
        "",
        "",
        "trim the divergence grid to an ellipse (default)",
        |a, _| {
            a.config.beam.round_div = true;
            Ok(())
        },
    )
    .after("-square_div")
    .eg("", &["beam.round_div"]),
    flag(&["-square_div"], "", "", "full divergence grid", |a, _| {
        a.config.beam.round_div = false;
        Ok(())
    })
    .eg("", &["beam.round_div"]),
    flag(
        &["-sourcefile"],
        "FILE",
        "",
        "sources: lines of X Y Z weight lambda",
        |a, v| {
            a.config.beam.source_file = Some(v.path()?);
            Ok(())
        },
    )
    .eg("s.txt", &["beam.source_file"]),
    flag(
        &["-fluence"],
        "FLUENCE",
        "photons/m^2",
        "incident fluence",
        |a, v| {
            a.config.beam.fluence = Some(v.num()?);
            Ok(())
        },
    )
    .eg("1e24", &["beam.fluence"]),
    flag(
        &["-flux"],
        "FLUX",
        "photons/s",
        "flux (fluence from -exposure and -beamsize)",
        |a, v| {
            a.config.beam.flux = v.num()?;
            Ok(())
        },
    )
    .eg("1e12", &["beam.flux"]),
    flag(&["-exposure"], "TIME", "s", "exposure time", |a, v| {
        a.config.beam.exposure = v.num()?;
        Ok(())
    })
    .eg("2", &["beam.exposure"]),
    flag(&["-beamsize"], "SIZE", "mm", "beam size", |a, v| {
        a.config.beam.beamsize_mm = v.num()?;
        Ok(())
    })
    .eg("0.2", &["beam.beamsize_mm"]),
    flag(
        &["-polar"],
        "K",
        "",
        "Kahn polarization factor (turns -nopolar off)",
        |a, v| {
            a.config.beam.polarization = v.num()?;
            a.config.beam.nopolar = false;
            Ok(())
        },
    )
    .after("-nopolar")
    .eg("0.95", &["beam.polarization", "beam.nopolar"]),
    flag(
        &["-nopolar"],
        "",
        "",
        "no polarization correction",
        |a, _| {
            a.config.beam.nopolar = true;
            Ok(())
        },
    )
    .eg("", &["beam.nopolar"]),
    flag(
        &["-water"],
        "THICKNESS",
        "um",
        "water around the crystal (background)",
        |a, v| {
            a.config.beam.water_um = v.num()?;
            Ok(())
        },
    )
    .eg("10", &["beam.water_um"]),
    flag(
        &["-dmin"],
        "D",
        "Å",
        "resolution cutoff (0: none)",
        |a, v| {
            a.config.beam.dmin_a = v.num()?;
            Ok(())
        },
    )
    .eg("2", &["beam.dmin_a"]),
];

const DETECTOR: &[Flag] = &[
    flag(&["-pixel"], "SIZE", "mm", "pixel size", |a, v| {
        a.config.detector.pixel_size_mm = v.num()?;
        Ok(())
    })
    .eg("0.2", &["detector.pixel_size_mm"]),
    flag(
        &["-detpixels"],
        "COUNT",
        "",
        "pixels along fast and slow",
        |a, v| {
            let n = v.count()?;
            a.config.detector.fpixels = Some(n);
            a.config.detector.spixels = Some(n);
            Ok(())
        },
    )
    .eg("64", &["detector.fpixels", "detector.spixels"]),
    flag(
        &["-detpixels_f", "-detpixels_x"],
        "COUNT",
        "",
        "pixels along fast",
        |a, v| {
            a.config.detector.fpixels = Some(v.count()?);
            Ok(())
        },
    )
    .eg("64", &["detector.fpixels"]),
    flag(
        &["-detpixels_s", "-detpixels_y"],
        "COUNT",
        "",
        "pixels along slow",
        |a, v| {
            a.config.detector.spixels = Some(v.count()?);
            Ok(())
        },
    )
    .eg("64", &["detector.spixels"]),
    flag(
        &["-detsize"],
        "SIZE",
        "mm",
        "detector size along fast and slow",
        |a, v| {
            let s = v.num()?;
            a.config.detector.detsize_f_mm = s;
            a.config.detector.detsize_s_mm = s;
            Ok(())
        },
    )
    .eg("50", &["detector.detsize_f_mm", "detector.detsize_s_mm"]),
    flag(
        &["-detsize_f"],
        "SIZE",
        "mm",
        "detector size along fast",
        |a, v| {
            a.config.detector.detsize_f_mm = v.num()?;
            Ok(())
        },
    )
    .eg("50", &["detector.detsize_f_mm"]),
    flag(
        &["-detsize_s"],
        "SIZE",
        "mm",
        "detector size along slow",
        |a, v| {
            a.config.detector.detsize_s_mm = v.num()?;
            Ok(())
        },
    )
    .eg("50", &["detector.detsize_s_mm"]),
    flag(
        &["-distance"],
        "DIST",
        "mm",
        "sample to beam centre; beam pivot",
        |a, v| {
            a.config.detector.distance_mm = v.num()?;
            pivot(a, Pivot::Beam)
        },
    )
    .eg("120", &["detector.distance_mm", "detector.pivot"]),
    flag(
        &["-close_distance"],
        "DIST",
        "mm",
        "sample to detector plane; sample pivot",
        |a, v| {
            a.config.detector.close_distance_mm = Some(v.num()?);
            pivot(a, Pivot::Sample)
        },
    )
    .eg("80", &["detector.close_distance_mm", "detector.pivot"]),
    flag(
        &["-Xbeam"],
        "X",
        "mm",
        "direct beam, fast coordinate; beam pivot",
        |a, v| {
            a.config.detector.xbeam_mm = Some(v.num()?);
            pivot(a, Pivot::Beam)
        },
    )
    .eg("3.2", &["detector.xbeam_mm", "detector.pivot"]),
    flag(
        &["-Ybeam"],
        "Y",
        "mm",
        "direct beam, slow coordinate; beam pivot",
        |a, v| {
            a.config.detector.ybeam_mm = Some(v.num()?);
            pivot(a, Pivot::Beam)
        },
    )
    .eg("3.2", &["detector.ybeam_mm", "detector.pivot"]),
    flag(
        &["-Xclose"],
        "X",
        "mm",
        "near point, fast coordinate; sample pivot",
        |a, v| {
            a.config.detector.xclose_mm = Some(v.num()?);
            pivot(a, Pivot::Sample)
        },
    )
    .eg("3.2", &["detector.xclose_mm", "detector.pivot"]),
    flag(
        &["-Yclose"],
        "Y",
        "mm",
        "near point, slow coordinate; sample pivot",
        |a, v| {
            a.config.detector.yclose_mm = Some(v.num()?);
            pivot(a, Pivot::Sample)
        },
    )
    .eg("3.2", &["detector.yclose_mm", "detector.pivot"]),
    flag(
        &["-ORGX"],
        "X",
        "pixels",
        "XDS origin, fast; sample pivot",
        |a, v| {
            a.config.detector.orgx = Some(v.num()?);
            pivot(a, Pivot::Sample)
        },
    )
    .eg("32", &["detector.orgx", "detector.pivot"]),
    flag(
        &["-ORGY"],
        "Y",
        "pixels",
        "XDS origin, slow; sample pivot",
        |a, v| {
            a.config.detector.orgy = Some(v.num()?);
            pivot(a, Pivot::Sample)
        },
    )
    .eg("32", &["detector.orgy", "detector.pivot"]),
    flag(
        &["-pivot"],
        "beam|sample",
        "",
        "what detector rotations turn about",
        |a, v| {
            let p = match v.string()? {
                "beam" => Pivot::Beam,
                "sample" => Pivot::Sample,
                other => return Err(format!("{}: '{other}' is not beam or sample", v.flag())),
            };
            pivot(a, p)
        },
    )
    .eg("sample", &["detector.pivot"]),
    flag(
        &["-mosflm"],
        "",
        "",
        "MOSFLM convention (default); beam pivot",
        |a, _| convention(a, Convention::Mosflm, Pivot::Beam),
    )
    .after("-fdet_vector 0 0 1")
    .eg(
        "",
        &[
            "detector.convention",
            "detector.fdet_vector",
            "detector.pivot",
        ],
    ),
    flag(&["-xds"], "", "", "XDS convention; sample pivot", |a, _| {
        convention(a, Convention::Xds, Pivot::Sample)
    })
    .after("-fdet_vector 0 0 1")
    .eg(
        "",
        &[
            "detector.convention",
            "detector.fdet_vector",
            "detector.pivot",
        ],
    ),
    flag(&["-adxv"], "", "", "ADXV convention; beam pivot", |a, _| {
        convention(a, Convention::Adxv, Pivot::Beam)
    })
    .after("-fdet_vector 0 0 1")
    .eg(
        "",
        &[
            "detector.convention",
            "detector.fdet_vector",
            "detector.pivot",
        ],
    ),
    flag(
        &["-denzo"],
        "",
        "",
        "DENZO convention; beam pivot",
        |a, _| convention(a, Convention::Denzo, Pivot::Beam),
    )
    .after("-fdet_vector 0 0 1")
    .eg(
        "",
        &[
            "detector.convention",
            "detector.fdet_vector",
            "detector.pivot",
        ],
    ),
    flag(
        &["-dials"],
        "",
        "",
        "DIALS convention; beam pivot",
        |a, _| convention(a, Convention::Dials, Pivot::Beam),
    )
    .after("-fdet_vector 0 0 1")
    .eg(
        "",
        &[
            "detector.convention",
            "detector.fdet_vector",
            "detector.pivot",
        ],
    ),
    flag(
        &["-fdet_vector"],
        "X Y Z",
        "",
        "fast axis (CUSTOM convention)",
        |a, v| vector(a, v, |c| &mut c.detector.fdet_vector),
    )
    .eg("0 0 1", &["detector.convention", "detector.fdet_vector"]),
    flag(
        &["-sdet_vector"],
        "X Y Z",
        "",
        "slow axis (CUSTOM convention)",
        |a, v| vector(a, v, |c| &mut c.detector.sdet_vector),
    )
    .eg("0 0 1", &["detector.convention", "detector.sdet_vector"]),
    flag(
        &["-odet_vector"],
        "X Y Z",
        "",
        "detector normal (CUSTOM convention)",
        |a, v| vector(a, v, |c| &mut c.detector.odet_vector),
    )
    .eg("0 0 1", &["detector.convention", "detector.odet_vector"]),
    flag(
        &["-beam_vector"],
        "X Y Z",
        "",
        "beam direction (CUSTOM convention)",
        |a, v| vector(a, v, |c| &mut c.beam.beam_vector),
    )
    .eg("0 0 1", &["detector.convention", "beam.beam_vector"]),
    flag(
        &["-polar_vector"],
        "X Y Z",
        "",
        "E-vector of the beam (CUSTOM convention)",
        |a, v| vector(a, v, |c| &mut c.beam.polar_vector),
    )
    .eg("0 0 1", &["detector.convention", "beam.polar_vector"]),
    flag(
        &["-spindle_axis"],
        "X Y Z",
        "",
        "phi axis (CUSTOM convention)",
        |a, v| vector(a, v, |c| &mut c.goniometer.spindle_axis),
    )
    .eg("0 0 1", &["detector.convention", "goniometer.spindle_axis"]),
    flag(
        &["-twotheta_axis"],
        "X Y Z",
        "",
        "two-theta axis (CUSTOM convention)",
        |a, v| vector(a, v, |c| &mut c.detector.twotheta_axis),
    )
    .eg("0 0 1", &["detector.convention", "detector.twotheta_axis"]),
    flag(
        &["-pix0_vector"],
        "X Y Z",
        "",
        "not supported by braggrun",
        refused,
    )
    .eg("0 0 0", REFUSED),
    flag(
        &["-detector_rotx"],
        "ANGLE",
        "deg",
        "detector rotation about lab x",
        |a, v| {
            a.config.detector.rot_deg[0] = v.num()?;
            Ok(())
        },
    )
    .eg("5", &["detector.rot_deg"]),
    flag(
        &["-detector_roty"],
        "ANGLE",
        "deg",
        "detector rotation about lab y",
        |a, v| {
            a.config.detector.rot_deg[1] = v.num()?;
            Ok(())
        },
    )
    .eg("5", &["detector.rot_deg"]),
    flag(
        &["-detector_rotz"],
        "ANGLE",
        "deg",
        "detector rotation about lab z",
        |a, v| {
            a.config.detector.rot_deg[2] = v.num()?;
            Ok(())
        },
    )
    .eg("5", &["detector.rot_deg"]),
    flag(
        &["-twotheta"],
        "ANGLE",
        "deg",
        "detector two-theta swing; sample pivot",
        |a, v| {
            a.config.detector.twotheta_deg = v.num()?;
            pivot(a, Pivot::Sample)
        },
    )
    .eg("15", &["detector.twotheta_deg", "detector.pivot"]),
    flag(
        &["-point_pixel"],
        "",
        "",
        "solid angle 1/R^2 only",
        |a, _| {
            a.config.detector.point_pixel = true;
            Ok(())
        },
    )
    .eg("", &["detector.point_pixel"]),
    flag(
        &["-curved_det"],
        "",
        "",
        "spherical detector: every pixel at the same distance",
        |a, _| {
            a.config.detector.curved = true;
            Ok(())
        },
    )
    .eg("", &["detector.curved"]),
    flag(
        &["-detector_abs", "-detector_absorb"],
        "DEPTH|inf",
        "um",
        "sensor attenuation depth (inf or 0: no sensor absorption)",
        |a, v| {
            let s = v.string()?;
            let depth = if s.to_ascii_lowercase().contains("inf") {
                0.0
            } else {
                parse_num(v.flag(), s)?
            };
            let d = &mut a.config.detector;
            if depth == 0.0 {
                d.attenuation_depth_um = None;
                d.thickness_um = 0.0;
            } else {
                d.attenuation_depth_um = Some(depth);
            }
            Ok(())
        },
    )
    .eg("200", &["detector.attenuation_depth_um"]),
    flag(
        &["-detector_thick"],
        "THICKNESS",
        "um",
        "sensor thickness",
        |a, v| {
            a.config.detector.thickness_um = v.num()?;
            Ok(())
        },
    )
    .eg("100", &["detector.thickness_um"]),
    flag(
        &["-detector_thicksteps", "-thicksteps"],
        "COUNT",
        "",
        "layers through the sensor",
        |a, v| {
            a.config.detector.thicksteps = Some(v.int()?);
            Ok(())
        },
    )
    .eg("3", &["detector.thicksteps"]),
    flag(
        &["-oversample"],
        "COUNT",
        "",
        "subpixels per pixel side (default: C's rule)",
        |a, v| {
            a.config.detector.oversample = Some(v.int()?);
            Ok(())
        },
    )
    .eg("2", &["detector.oversample"]),
    flag(
        &["-oversample_thick"],
        "",
        "",
        "sensor absorption per subpixel",
        |a, _| {
            a.config.detector.oversample_thick = true;
            Ok(())
        },
    )
    .eg("", &["detector.oversample_thick"]),
    flag(
        &["-oversample_polar"],
        "",
        "",
        "polarization per subpixel",
        |a, _| {
            a.config.detector.oversample_polar = true;
            Ok(())
        },
    )
    .eg("", &["detector.oversample_polar"]),
    flag(
        &["-oversample_omega"],
        "",
        "",
        "solid angle per subpixel",
        |a, _| {
            a.config.detector.oversample_omega = true;
            Ok(())
        },
    )
    .eg("", &["detector.oversample_omega"]),
    flag(
        &["-roi"],
        "FMIN FMAX SMIN SMAX",
        "pixels",
        "render only this region (inclusive)",
        |a, v| {
            let r = v.ints::<4>()?;
            let mut roi = [0u32; 4];
            for (o, x) in roi.iter_mut().zip(r) {
                *o = u32::try_from(x)
                    .map_err(|_| format!("{}: '{x}' is not a pixel index", v.flag()))?;
            }
            if roi[0] > roi[1] || roi[2] > roi[3] {
                let [f0, f1, s0, s1] = roi;
                return Err(format!("{}: empty region {f0} {f1} {s0} {s1}", v.flag()));
            }
            a.config.detector.roi = Some(roi);
            Ok(())
        },
    )
    .eg("1 2 3 4", &["detector.roi"]),
    flag(
        &["-mask"],
        "FILE",
        "",
        "SMV mask: pixels of value 0 are skipped; its header sets the geometry",
        |a, v| {
            // The header was applied before any flag (see parse_args).
            a.config.detector.mask_file = Some(v.path()?);
            Ok(())
        },
    )
    .eg("{dir}/hdr.img", MASK_SETS),
    flag(
        &["-img"],
        "FILE",
        "",
        "SMV image whose header sets the geometry",
        |a, v| {
            a.img_file = Some(v.path()?);
            Ok(())
        },
    )
    .eg("{dir}/hdr.img", IMG_SETS),
];

/// What `-mask` and `-img` change with the test's header (SIZE1 4, SIZE2 2,
/// PIXEL_SIZE 0.2, DISTANCE 90, BEAM_CENTER_Y 0.1).
const MASK_SETS: &[&str] = &[
    "detector.mask_file",
    "detector.fpixels",
    "detector.spixels",
    "detector.pixel_size_mm",
    "detector.detsize_f_mm",
    "detector.detsize_s_mm",
    "detector.distance_mm",
    "detector.ybeam_mm",
];
const IMG_SETS: &[&str] = &[
    "img_file",
    "detector.fpixels",
    "detector.spixels",
    "detector.pixel_size_mm",
    "detector.detsize_f_mm",
    "detector.detsize_s_mm",
    "detector.distance_mm",
    "detector.ybeam_mm",
];

const ROTATION: &[Flag] = &[
    flag(
        &["-phi"],
        "ANGLE",
        "deg",
        "spindle angle at the start",
        |a, v| {
            a.config.goniometer.phi_start_deg = v.num()?;
            Ok(())
        },
    )
    .eg("10", &["goniometer.phi_start_deg"]),
    flag(&["-osc"], "RANGE", "deg", "oscillation range", |a, v| {
        a.config.goniometer.osc_deg = Some(v.num()?);
        Ok(())
    })
    .eg("1", &["goniometer.osc_deg"]),
    flag(&["-phistep"], "STEP", "deg", "spindle step", |a, v| {
        a.config.goniometer.phistep_deg = Some(v.num()?);
        Ok(())
    })
    .eg("0.1", &["goniometer.phistep_deg"]),
    flag(&["-phisteps"], "COUNT", "", "spindle steps", |a, v| {
        a.config.goniometer.phisteps = Some(v.int()?);
        Ok(())
    })
    .eg("10", &["goniometer.phisteps"]),
];

const OUTPUT: &[Flag] = &[
    flag(
        &["-floatfile", "-floatimage"],
        "FILE",
        "",
        "float32 image, no header",
        |a, v| {
            a.floatfile = Some(v.path()?);
            Ok(())
        },
    )
    .eg("f.bin", &["floatfile"]),
    flag(
        &["-intfile", "-intimage"],
        "FILE",
        "",
        "SMV image scaled by -scale, plus -adc",
        |a, v| {
            a.intfile = Some(v.path()?);
            Ok(())
        },
    )
    .eg("i.img", &["intfile"]),
    flag(
        &["-pgmfile", "-pgmimage"],
        "FILE",
        "",
        "8-bit PGM scaled by -pgmscale",
        |a, v| {
            a.pgmfile = Some(v.path()?);
            a.write_pgm = true;
            Ok(())
        },
    )
    .after("-nopgm")
    .eg("p.pgm", &["pgmfile", "write_pgm"]),
    flag(
        &["-noisefile", "-noiseimage"],
        "FILE",
        "",
        "SMV image with Poisson noise, plus -adc",
        |a, v| {
            a.noisefile = Some(v.path()?);
            a.calculate_noise = true;
            Ok(())
        },
    )
    .after("-nonoise")
    .eg("n.img", &["noisefile", "calculate_noise"]),
    flag(&["-nonoise"], "", "", "no noise image", |a, _| {
        a.calculate_noise = false;
        Ok(())
    })
    .eg("", &["calculate_noise"]),
    flag(&["-nopgm"], "", "", "no PGM image", |a, _| {
        a.write_pgm = false;
        Ok(())
    })
    .eg("", &["write_pgm"]),
    flag(
        &["-scale"],
        "SCALE",
        "",
        "SMV scale (default: 55000 / max_I)",
        |a, v| {
            a.int_scale = v.num()?;
            Ok(())
        },
    )
    .eg("2", &["int_scale"]),
    flag(
        &["-pgmscale"],
        "SCALE",
        "",
        "PGM scale (default: 250 / (5 rmsd)); writes the PGM",
        |a, v| {
            a.pgm_scale = v.num()?;
            a.write_pgm = true;
            Ok(())
        },
    )
    .after("-nopgm")
    .eg("2", &["pgm_scale", "write_pgm"]),
    flag(
        &["-adc"],
        "COUNTS",
        "",
        "offset added to SMV pixels (default 40)",
        |a, v| {
            a.adc = v.num()?;
            Ok(())
        },
    )
    .eg("10", &["adc"]),
    flag(
        &["-seed"],
        "SEED",
        "",
        "noise seed (default: the time)",
        |a, v| {
            a.config.seed = Some(v.int()?);
            Ok(())
        },
    )
    .eg("9", &["seed"]),
    flag(
        &["-deriv"],
        "NAME,NAME,...",
        "",
        "braggrun: one derivative image per NAME (see below), in NAME's units: \
         F.d_NAME.bin (float32) and F.d_NAME.npy (float64, shape (slow, fast)), \
         F = the -floatfile name (default floatimage.bin) without its extension",
        |a, v| {
            let flag = v.flag();
            for name in v.string()?.split(',').filter(|s| !s.is_empty()) {
                let p: Param = name.parse().map_err(|e| format!("{flag}: {e}"))?;
                if !a.derivs.contains(&p) {
                    a.derivs.push(p);
                }
            }
            Ok(())
        },
    )
    .eg("cell_a,distance", &["derivs"]),
];

const BRAGGRUN: &[Flag] = &[
    flag(
        &["-phi_carryover"],
        "spec|c-parity",
        "",
        "a phi step of exactly 0: unrotated crystal (spec) or C's reuse (c-parity)",
        |a, v| {
            a.config.phi_carryover = match v.string()? {
                "spec" => PhiCarryover::Spec,
                "c-parity" | "c_parity" => PhiCarryover::CParity,
                other => return Err(format!("{}: '{other}' is not spec or c-parity", v.flag())),
            };
            Ok(())
        },
    )
    .eg("c-parity", &["phi_carryover"]),
    flag(
        &["-device"],
        "cpu|cuda|cuda:N",
        "",
        "where to render (default cpu)",
        |a, v| {
            a.device = v.parsed()?;
            Ok(())
        },
    )
    .eg("cuda:1", &["device"]),
    flag(
        &["-dtype"],
        "float32|float64",
        "",
        "precision of the render (default float64)",
        |a, v| {
            a.dtype = v.parsed()?;
            Ok(())
        },
    )
    .eg("float32", &["dtype"]),
    flag(
        &["-memory_limit", "--memory-limit"],
        "SIZE",
        "",
        "memory budget, e.g. 8G (default 1/2 of MemAvailable): larger renders are refused",
        |a, v| {
            let flag = v.flag();
            let size = crate::physics::budget::parse_size(v.string()?);
            a.memory_limit = Some(size.map_err(|e| format!("{flag}: {e}"))?);
            Ok(())
        },
    )
    .eg("8G", &["memory_limit"]),
];

const IGNORED: &[Flag] = &[
    flag(
        &["-printout", "-noprogress", "-progress"],
        "",
        "",
        "ignored",
        ignored,
    )
    .eg("", &["ignored"]),
    flag(
        &["-printout_pixel", "-trace_pixel", "-dump_pixel"],
        "F S",
        "",
        "ignored",
        |a, v| {
            v.ints::<2>()?;
            ignored(a, v)
        },
    )
    .eg("1 2", &["ignored"]),
    flag(
        &["-stol", "-4stol", "-Q", "-stolout"],
        "FILE",
        "",
        "ignored",
        |a, v| {
            v.path()?;
            ignored(a, v)
        },
    )
    .eg("stol.txt", &["ignored"]),
    flag(
        &["-density", "-sample_den", "-MW", "-molecular_weight"],
        "VALUE",
        "",
        "ignored",
        |a, v| {
            v.num()?;
            ignored(a, v)
        },
    )
    .eg("1.2", &["ignored"]),
    flag(&["-coherent"], "", "", "not supported by braggrun", refused).eg("", REFUSED),
];

/// The table: every flag, in groups as the usage shows them.
pub const GROUPS: &[(&str, &[Flag])] = &[
    ("general", GENERAL),
    ("crystal", CRYSTAL),
    ("beam", BEAM),
    ("detector", DETECTOR),
    ("rotation", ROTATION),
    ("output", OUTPUT),
    ("braggrun", BRAGGRUN),
    (
        "accepted for compatibility and ignored, or refused",
        IGNORED,
    ),
];

/// The entry of a flag name.
pub fn find(name: &str) -> Option<&'static Flag> {
    GROUPS
        .iter()
        .flat_map(|(_, flags)| flags.iter())
        .find(|f| f.names.contains(&name))
}

/// The usage text, made from the table.
pub fn usage() -> String {
    let mut s = String::from(
        "usage: runner nanobragg [flags]   (nanoBragg.c's flags, plus braggrun's)\n\
         With no arguments: prints this text and exits 2 (nanoBragg.c exits 9).\n\
         Needs a crystal (-cell or -mat) and structure factors (-hkl or -default_F).\n\
         Writes the files named by -floatfile, -intfile, -pgmfile, -noisefile; with none\n\
         named, nanoBragg.c's floatimage.bin, intimage.img, image.pgm (unless -nopgm) and\n\
         noiseimage.img (unless -nonoise). Exit codes: 0 done, 2 bad arguments or\n\
         inputs (nothing written), 1 render or write failure.\n",
    );
    for (title, flags) in GROUPS {
        s.push_str(&format!("\n{title}:\n"));
        for f in *flags {
            let mut left = format!("  {} {}", f.names[0], f.args);
            let mut help = f.help.to_string();
            if !f.units.is_empty() {
                help.push_str(&format!(" [{}]", f.units));
            }
            if f.names.len() > 1 {
                help.push_str(&format!(" (also {})", f.names[1..].join(", ")));
            }
            if left.len() >= 32 {
                left.push('\n');
                left.push_str(&" ".repeat(32));
            } else {
                left = format!("{left:<32}");
            }
            s.push_str(&format!("{left}{help}\n"));
        }
    }
    s.push_str("\n-deriv names (parameter [unit]):\n");
    for p in Param::ALL {
        s.push_str(&format!(
            "{:<32}{} [{}]\n",
            format!("  {}", p.name()),
            p.description(),
            p.unit()
        ));
    }
    s
}

/// Apply the flags in order to `out`.
fn apply_flags(args: &[String], mut out: NanobraggArgs) -> Result<NanobraggArgs, String> {
    let mut i = 0;
    while i < args.len() {
        let name = args[i].as_str();
        i += 1;
        if !name.starts_with('-') || name.len() < 2 {
            return Err(format!(
                "unexpected argument '{name}' (flags start with '-')"
            ));
        }
        let f =
            find(name).ok_or_else(|| format!("unknown flag '{name}' (see runner nanobragg -h)"))?;
        let mut v = Values {
            flag: name,
            what: f.what(),
            args,
            i,
        };
        (f.apply)(&mut out, &mut v)?;
        i = v.i;
    }
    Ok(out)
}

/// Parse nanoBragg.c flags into a configuration and output options. Reads the
/// headers of `-mask` and `-img` files (mask first, then img, as C does;
/// flags then override header values). Does not render or write anything.
pub fn parse_args(args: &[String]) -> Result<NanobraggArgs, String> {
    // Which header files are named: C reads them before any other flag.
    let named = apply_flags(args, NanobraggArgs::default())?;
    let mut start = NanobraggArgs::default();
    if let Some(p) = &named.config.detector.mask_file {
        let smv = io::smv::read_smv(p).map_err(|e| format!("-mask: {e}"))?;
        apply_smv_header(&mut start.config, &smv, true);
    }
    if let Some(p) = &named.img_file {
        let smv = io::smv::read_smv(p).map_err(|e| format!("-img: {e}"))?;
        apply_smv_header(&mut start.config, &smv, false);
    }
    let out = apply_flags(args, start)?;
    let cfg = &out.config;
    if out.help {
        return Ok(out);
    }
    // nanoBragg.c prints its usage and stops without these.
    if cfg.crystal.cell.is_none() && cfg.crystal.mosflm_matrix.is_none() {
        return Err("no crystal: give -cell a b c alpha beta gamma or -mat file".into());
    }
    if cfg.crystal.hkl_file.is_none() && cfg.crystal.default_f == 0.0 {
        return Err("no structure factors: give -hkl file or a non-zero -default_F".into());
    }
    Ok(out)
}

/// The configuration an experiment's `model.nanobragg_args` describes, as a
/// TOML table ready to merge with the rest of `[model]`; the one conversion
/// of flags to a configuration for experiment files. Errors quote the flags.
pub fn config_table(value: &toml::Value) -> Result<toml::Table, String> {
    let s = match value {
        toml::Value::String(s) => s,
        other => return Err(format!("expected a string of flags, found {other}")),
    };
    let argv: Vec<String> = s.split_whitespace().map(String::from).collect();
    let parsed = parse_args(&argv).map_err(|e| format!("\"{s}\": {e}"))?;
    toml::Table::try_from(&parsed.config).map_err(|e| e.to_string())
}

/// Apply the geometry in an SMV header as nanoBragg.c does for `-img` and
/// `-mask` (spec-a-core "SMV header ingestion"). For a mask, BEAM_CENTER_Y is
/// measured from the other edge (Ybeam = detsize_s - value).
pub fn apply_smv_header(cfg: &mut SimConfig, img: &io::smv::SmvImage, is_mask: bool) {
    let d = &mut cfg.detector;
    let val = |key: &str| img.value(key).filter(|v| !v.is_nan());
    d.fpixels = Some(img.fpixels as u32);
    d.spixels = Some(img.spixels as u32);
    if let Some(v) = val("PIXEL_SIZE") {
        d.pixel_size_mm = v;
    }
    d.detsize_f_mm = d.pixel_size_mm * img.fpixels as f64;
    d.detsize_s_mm = d.pixel_size_mm * img.spixels as f64;
    if let Some(v) = val("DISTANCE") {
        d.distance_mm = v;
    }
    if let Some(v) = val("CLOSE_DISTANCE") {
        d.close_distance_mm = Some(v);
    }
    if let Some(v) = val("WAVELENGTH") {
        cfg.beam.wavelength_a = v;
        cfg.beam.energy_ev = None;
    }
    if let Some(v) = val("BEAM_CENTER_X") {
        d.xbeam_mm = Some(v);
    }
    if let Some(v) = val("BEAM_CENTER_Y") {
        d.ybeam_mm = Some(if is_mask { d.detsize_s_mm - v } else { v });
    }
    // C finds "ORGX" anywhere in a key, so nanoBragg's own XDS_ORGX counts.
    if let Some(v) = val("ORGX").or_else(|| val("XDS_ORGX")) {
        d.orgx = Some(v);
    }
    if let Some(v) = val("ORGY").or_else(|| val("XDS_ORGY")) {
        d.orgy = Some(v);
    }
    if let Some(v) = val("PHI") {
        cfg.goniometer.phi_start_deg = v;
    }
    if let Some(v) = val("OSC_RANGE") {
        cfg.goniometer.osc_deg = Some(v);
    }
    if let Some(v) = val("TWOTHETA") {
        cfg.detector.twotheta_deg = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }
    const BASE: &str = "-default_F 100 -cell 100 100 100 90 90 90 ";

    #[test]
    fn units_and_multi_value_flags() {
        let a = parse_args(&args(&format!(
            "{BASE} -lambda 6.2 -N 3 -Nc 7 -pixel 0.1 -distance 100 -detpixels 64 -Xbeam 3.2 -Ybeam 3.3 \
             -misset 1 -2 3.5 -roi 1 2 3 4 -mosaic 0.5 -mosaic_dom 4 -mosaic_seed 7 -divergence 2 -divsteps 3 \
             -seed 9 -floatfile f.bin -intfile i.img -phi_carryover c-parity -dtype float32"
        )))
        .unwrap();
        let c = &a.config;
        assert_eq!(
            c.crystal.cell,
            Some([100.0, 100.0, 100.0, 90.0, 90.0, 90.0])
        );
        assert_eq!(c.crystal.n_cells, [3.0, 3.0, 7.0]);
        assert_eq!(c.beam.wavelength_a, 6.2);
        assert_eq!(
            (c.detector.fpixels, c.detector.spixels),
            (Some(64), Some(64))
        );
        assert_eq!(
            (c.detector.xbeam_mm, c.detector.ybeam_mm),
            (Some(3.2), Some(3.3))
        );
        assert_eq!(c.crystal.misset_deg, Some([1.0, -2.0, 3.5]));
        assert_eq!(c.detector.roi, Some([1, 2, 3, 4]));
        assert_eq!(c.crystal.mosaic_spread_deg, Some(0.5));
        assert_eq!(c.crystal.mosaic_domains, Some(4));
        assert_eq!(c.crystal.mosaic_seed, 7);
        assert_eq!(
            (c.beam.hdivrange_mrad, c.beam.vdivrange_mrad),
            (Some(2.0), Some(2.0))
        );
        assert_eq!((c.beam.hdivsteps, c.beam.vdivsteps), (Some(3), Some(3)));
        assert_eq!(c.seed, Some(9));
        assert_eq!(c.detector.pivot, Some(Pivot::Beam));
        assert_eq!(c.phi_carryover, PhiCarryover::CParity);
        assert_eq!(a.dtype, Dtype::F32);
        assert_eq!(a.floatfile, Some(PathBuf::from("f.bin")));
        assert!(a.pgm_output().is_none() && a.noise_output().is_none());
    }

    #[test]
    fn conventions_last_wins_and_drop_custom_vectors() {
        let a = parse_args(&args(&format!("{BASE} -fdet_vector 1 0 0 -xds"))).unwrap();
        assert_eq!(a.config.detector.convention, Convention::Xds);
        assert_eq!(a.config.detector.fdet_vector, None);
        assert_eq!(a.config.detector.pivot, Some(Pivot::Sample));
        let a = parse_args(&args(&format!(
            "{BASE} -xds -beam_vector 0 0 -1 -spindle_axis 0 1 0 -pivot beam"
        )))
        .unwrap();
        assert_eq!(a.config.detector.convention, Convention::Custom);
        assert_eq!(a.config.beam.beam_vector, Some([0.0, 0.0, -1.0]));
        assert_eq!(a.config.goniometer.spindle_axis, Some([0.0, 1.0, 0.0]));
        assert_eq!(a.config.detector.pivot, Some(Pivot::Beam));
        let a = parse_args(&args(&format!("{BASE} -close_distance 80"))).unwrap();
        assert_eq!(a.config.detector.close_distance_mm, Some(80.0));
        assert_eq!(a.config.detector.distance_mm, 100.0);
        assert_eq!(a.config.detector.pivot, Some(Pivot::Sample));
    }

    #[test]
    fn output_switches_follow_c_order() {
        let a = parse_args(&args(&format!(
            "{BASE} -pgmfile a.pgm -nopgm -noisefile n.img -nonoise"
        )))
        .unwrap();
        assert!(a.pgm_output().is_none() && a.noise_output().is_none());
        let a = parse_args(&args(&format!(
            "{BASE} -nopgm -pgmfile a.pgm -nonoise -noisefile n.img -adc 10"
        )))
        .unwrap();
        assert!(a.pgm_output().is_some() && a.noise_output().is_some());
        assert_eq!(a.adc, 10.0);
        let a = parse_args(&args(&format!("{BASE} -energy 12398.42 -misset random"))).unwrap();
        assert!((a.config.beam.wavelength_a - 1.0).abs() < 1e-12);
        assert!(a.config.crystal.misset_random);
    }

    #[test]
    fn errors_name_the_flag() {
        for (s, want) in [
            ("-bogus 1", "-bogus"),
            ("-distance", "-distance: missing value"),
            ("-distance abc", "-distance: 'abc' is not a number"),
            ("-roi 1 2 3", "-roi: expects 4 values"),
            ("-roi 1 2 3 -mosflm", "-roi: '-mosflm' is not an integer"),
            ("-N 2.5", "-N: '2.5' is not an integer"),
            ("-cell 1 2 3", "-cell: expects 6"),
            ("-hkl -mosflm", "-hkl: missing value"),
            ("-pivot middle", "-pivot"),
            ("-pix0_vector 0 0 0", "not supported"),
            ("-device tpu", "-device"),
            ("stray", "unexpected argument 'stray'"),
        ] {
            let e = parse_args(&args(&format!("{BASE} {s}"))).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        assert!(parse_args(&args("-cell 1 1 1 90 90 90"))
            .unwrap_err()
            .contains("-default_F"));
        assert!(parse_args(&args("-default_F 1"))
            .unwrap_err()
            .contains("-cell"));
        assert!(parse_args(&args("-h")).unwrap().help);
    }

    #[test]
    fn img_and_mask_headers_then_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        let mask = dir.path().join("mask.img");
        let img = dir.path().join("hdr.img");
        let h = |y: &str, d: &str| {
            vec![
                kv("SIZE1", "4"),
                kv("SIZE2", "2"),
                kv("PIXEL_SIZE", "0.2"),
                kv("DISTANCE", d),
                kv("BEAM_CENTER_X", "0.3"),
                kv("BEAM_CENTER_Y", y),
                kv("XDS_ORGX", "nan"),
                kv("WAVELENGTH", "1.5"),
                kv("PHI", "10"),
                kv("OSC_RANGE", "0.5"),
                kv("TWOTHETA", "5"),
            ]
        };
        io::smv::write_smv(&mask, &h("0.1", "90"), 4, 2, &[1; 8], false).unwrap();
        let m = mask.to_str().unwrap();
        let a = parse_args(&args(&format!("{BASE} -mask {m}"))).unwrap();
        let d = &a.config.detector;
        assert_eq!(
            (d.fpixels, d.spixels, d.pixel_size_mm),
            (Some(4), Some(2), 0.2)
        );
        assert!(
            (d.ybeam_mm.unwrap() - 0.3).abs() < 1e-12,
            "mask flips Y: 0.4 - 0.1"
        );
        assert_eq!(d.orgx, None);
        assert_eq!(d.mask_file.as_deref(), Some(mask.as_path()));
        assert_eq!(a.config.goniometer.osc_deg, Some(0.5));
        io::smv::write_smv(&img, &h("0.1", "70"), 4, 2, &[0; 8], false).unwrap();
        let i = img.to_str().unwrap();
        // img is read after the mask whatever the order; flags win over both.
        let a = parse_args(&args(&format!("{BASE} -img {i} -mask {m} -lambda 2"))).unwrap();
        assert_eq!(a.config.detector.distance_mm, 70.0);
        assert_eq!(a.config.detector.ybeam_mm, Some(0.1));
        assert_eq!(a.config.beam.wavelength_a, 2.0);
        assert_eq!(a.config.detector.twotheta_deg, 5.0);
        assert!(parse_args(&args(&format!(
            "{BASE} -img {}/none.img",
            dir.path().display()
        )))
        .is_err());
    }

    /// The serialized args as `key.path -> value` (arrays are one value).
    fn flat(a: &NanobraggArgs) -> BTreeMap<String, serde_json::Value> {
        fn walk(key: String, v: serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        let key = if key.is_empty() {
                            k
                        } else {
                            format!("{key}.{k}")
                        };
                        walk(key, x, out);
                    }
                }
                leaf => {
                    out.insert(key, leaf);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(String::new(), serde_json::to_value(a).unwrap(), &mut out);
        out
    }

    /// One table entry under one of its names: the example changes exactly
    /// the keys the entry lists (compared with the command line without
    /// it), or is refused naming the flag; a missing value is an error
    /// naming the flag.
    fn check_flag(f: &Flag, name: &str, dir: &Path) -> Result<(), String> {
        let (before, values, sets) = f.example;
        let sub = |s: &str| s.replace("{dir}", &dir.display().to_string());
        let base_line = format!("{BASE} {}", sub(before));
        let base = parse_args(&args(&base_line)).map_err(|e| format!("'{base_line}': {e}"))?;
        let line = format!("{base_line} {name} {}", sub(values));
        let got = parse_args(&args(&line));
        if sets == REFUSED {
            return match got {
                Err(e) if e.starts_with(&format!("{name}: not supported")) => Ok(()),
                other => Err(format!("'{line}': expected a refusal, got {other:?}")),
            };
        }
        let with = got.map_err(|e| format!("'{line}': {e}"))?;
        let (b, w) = (flat(&base), flat(&with));
        let changed: Vec<&str> = w
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .collect();
        let mut want = sets.to_vec();
        want.sort();
        if changed != want {
            return Err(format!(
                "'{line}' changed {changed:?}; the entry says {want:?}"
            ));
        }
        if b.keys().ne(w.keys()) {
            return Err("the set of keys changed".into());
        }
        if !f.args.is_empty() {
            for tail in ["", " -mosflm"] {
                let line = format!("{base_line} {name}{tail}");
                match parse_args(&args(&line)) {
                    Err(e) if e.starts_with(&format!("{name}: ")) => {}
                    other => {
                        return Err(format!(
                            "'{line}': expected an error naming {name}, got {other:?}"
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// The header `-mask` and `-img` read in the examples ({dir}/hdr.img).
    fn example_header(dir: &Path) {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        let h = [
            kv("SIZE1", "4"),
            kv("SIZE2", "2"),
            kv("PIXEL_SIZE", "0.2"),
            kv("DISTANCE", "90"),
            kv("BEAM_CENTER_Y", "0.1"),
        ];
        io::smv::write_smv(&dir.join("hdr.img"), &h, 4, 2, &[1; 8], false).unwrap();
    }

    #[test]
    fn every_flag_sets_what_its_entry_says() {
        let dir = tempfile::tempdir().unwrap();
        example_header(dir.path());
        let (mut checked, mut failures) = (0, vec![]);
        for (_, flags) in GROUPS {
            for f in *flags {
                for name in f.names {
                    checked += 1;
                    if let Err(e) = check_flag(f, name, dir.path()) {
                        failures.push(format!("{name}: {e}"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(checked >= 150, "{checked} names");
    }

    #[test]
    fn names_are_unique_flags_and_all_in_the_usage() {
        let usage = usage();
        let mut seen = std::collections::BTreeSet::new();
        for (title, flags) in GROUPS {
            assert!(usage.contains(&format!("\n{title}:\n")));
            for f in *flags {
                assert!(!f.help.is_empty(), "{:?}", f.names);
                for n in f.names {
                    assert!(n.starts_with('-') && n.len() > 1, "{n}");
                    assert!(seen.insert(*n), "{n} twice in the table");
                    assert_eq!(find(n).map(|g| g.names), Some(f.names), "{n}");
                    let shown = usage
                        .lines()
                        .any(|l| l.split([' ', ',', '(', ')']).any(|w| w == *n));
                    assert!(shown, "{n} not in the usage");
                }
            }
        }
        for p in Param::ALL {
            assert!(usage.contains(&format!("  {} ", p.name())), "{p}");
        }
    }

    #[test]
    fn default_outputs_only_when_no_file_is_named() {
        let a = parse_args(&args(BASE)).unwrap();
        let files = |a: &NanobraggArgs| {
            [
                a.float_output(),
                a.int_output(),
                a.pgm_output(),
                a.noise_output(),
            ]
            .map(|p| p.map(|p| p.display().to_string()))
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            files(&a),
            [
                s("floatimage.bin"),
                s("intimage.img"),
                s("image.pgm"),
                s("noiseimage.img")
            ]
        );
        let a = parse_args(&args(&format!("{BASE} -nopgm -nonoise -deriv n_a"))).unwrap();
        assert_eq!(
            files(&a),
            [s("floatimage.bin"), s("intimage.img"), None, None]
        );
        let a = parse_args(&args(&format!("{BASE} -intfile x.img"))).unwrap();
        assert_eq!(files(&a), [None, s("x.img"), None, None]);
        let a = parse_args(&args(&format!("{BASE} -noisefile n.img -pgmscale 3"))).unwrap();
        assert_eq!(files(&a), [None, None, None, s("n.img")]);

        let (bin, npy) = a.deriv_outputs(Param::CellA);
        assert_eq!(
            (bin.to_str(), npy.to_str()),
            (
                Some("floatimage.d_cell_a.bin"),
                Some("floatimage.d_cell_a.npy")
            )
        );
        let a = parse_args(&args(&format!("{BASE} -floatfile out/img.v1.float"))).unwrap();
        let (bin, npy) = a.deriv_outputs(Param::Distance);
        assert_eq!(
            (bin.to_str(), npy.to_str()),
            (
                Some("out/img.v1.d_distance.bin"),
                Some("out/img.v1.d_distance.npy")
            )
        );
    }

    #[test]
    fn deriv_takes_a_list_of_parameter_names() {
        let a = parse_args(&args(&format!(
            "{BASE} -deriv cell_a,distance,cell_a -deriv n_a"
        )))
        .unwrap();
        assert_eq!(a.derivs, vec![Param::CellA, Param::Distance, Param::NA]);
        let e = parse_args(&args(&format!("{BASE} -deriv cell_a,cell_q"))).unwrap_err();
        assert!(e.starts_with("-deriv: ") && e.contains("'cell_q'"), "{e}");
    }

    #[test]
    fn experiment_flags_become_a_config_table() {
        let t = config_table(&toml::Value::String(format!("{BASE} -distance 80"))).unwrap();
        assert_eq!(t["detector"]["distance_mm"].as_float(), Some(80.0));
        let e = config_table(&toml::Value::Integer(3)).unwrap_err();
        assert!(e.contains("expected a string of flags, found 3"), "{e}");
        let e =
            config_table(&toml::Value::String("-cell 1 1 1 90 90 90 -lambda".into())).unwrap_err();
        assert!(
            e.starts_with("\"-cell 1 1 1 90 90 90 -lambda\": -lambda: missing value"),
            "{e}"
        );
    }
}
