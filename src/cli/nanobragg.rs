//! `runner nanobragg [flags]`: nanoBragg.c's command line on top of the
//! braggrun simulator.
//!
//! Flags are matched by their exact names (nanoBragg.c matches substrings, so
//! that `-close_distance` also triggers `-distance`; we do not reproduce
//! those accidental aliases) but keep C's meaning: units, which flags set
//! the pivot, "last one wins" for conventions, `-N` setting all three
//! counts, and so on. Unknown flags, missing values and non-numeric values
//! are errors naming the flag (exit code 2, nothing written).
//!
//! Outputs follow nanoBragg.c: `-floatfile` (float32), `-intfile` (SMV,
//! scaled), `-pgmfile` (P5), `-noisefile` (SMV with Poisson noise). Only the
//! files asked for are written (C writes default-named files otherwise).

use crate::engine::{self, Device, Dtype, RenderOptions};
use crate::io::{self, c_fmt_g};
use crate::physics::config::{Convention, LatticeShape, PhiCarryover, Pivot, SimConfig};
use crate::physics::rng::Poisson;
use crate::physics::Simulation;
use std::path::{Path, PathBuf};

/// Everything `runner nanobragg` was asked to do.
#[derive(Debug, Clone)]
pub struct NanobraggArgs {
    pub config: SimConfig,
    pub floatfile: Option<PathBuf>,
    pub intfile: Option<PathBuf>,
    pub pgmfile: Option<PathBuf>,
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
    pub device: Device,
    pub dtype: Dtype,
    /// `-img`: header read for geometry (pixels unused).
    pub img_file: Option<PathBuf>,
    /// `-h`/`--help` was given.
    pub help: bool,
    /// Flags accepted for compatibility and ignored (e.g. `-printout`).
    pub ignored: Vec<String>,
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
            help: false,
            ignored: vec![],
        }
    }
}

impl NanobraggArgs {
    /// The PGM file to write, if any (after `-nopgm`).
    pub fn pgm_output(&self) -> Option<&Path> {
        self.pgmfile.as_deref().filter(|_| self.write_pgm)
    }
    /// The noise file to write, if any (after `-nonoise`).
    pub fn noise_output(&self) -> Option<&Path> {
        self.noisefile.as_deref().filter(|_| self.calculate_noise)
    }
}

pub const USAGE: &str = "\
usage: runner nanobragg [nanoBragg.c flags]
crystal:   -cell a b c alpha beta gamma | -mat A.mat   -hkl F.hkl   -default_F F
           -N n | -Na -Nb -Nc   -misset x y z | -misset random   -misset_seed n
           -mosaic deg  -mosaic_dom n  -mosaic_seed n   -xtalsize mm (-xtal_x/_y/_z)
           -square_xtal | -round_xtal | -gauss_xtal | -tophat_spots   -fudge f
           -interpolate | -nointerpolate
beam:      -lambda A | -energy eV   -dispersion %  -dispsteps n
           -divergence mrad  -hdivrange/-vdivrange mrad  -hdivstep/-vdivstep mrad
           -hdivsteps/-vdivsteps/-divsteps n  -round_div | -square_div  -sourcefile file
           -fluence | -flux -exposure -beamsize mm   -polar K | -nopolar   -water um  -dmin A
detector:  -pixel mm  -detpixels n (-detpixels_f/_s)  -detsize mm (-detsize_f/_s)
           -distance mm | -close_distance mm   -Xbeam -Ybeam mm | -Xclose -Yclose mm | -ORGX -ORGY px
           -mosflm | -xds | -adxv | -denzo | -dials   -pivot beam|sample
           -fdet_vector -sdet_vector -odet_vector -beam_vector -polar_vector
           -spindle_axis -twotheta_axis x y z   -detector_rotx/y/z deg  -twotheta deg
           -detector_thick um  -detector_abs um|inf  -detector_thicksteps n
           -point_pixel  -curved_det  -oversample n  -oversample_thick/_polar/_omega
           -roi fmin fmax smin smax   -mask mask.img   -img header.img
rotation:  -phi deg  -osc deg  -phistep deg  -phisteps n
output:    -floatfile f.bin  -intfile f.img  -pgmfile f.pgm  -noisefile f.img
           -scale s  -pgmscale s  -adc counts  -seed n  -nonoise  -nopgm
braggrun:  -phi_carryover spec|c-parity  -device cpu|cuda|cuda:N  -dtype float32|float64
           -memory_limit SIZE (e.g. 8G; default 1/2 of MemAvailable): larger renders are refused
";

/// Walks the argument list, handing out flag values with errors naming the flag.
struct Cursor<'a> {
    args: &'a [String],
    i: usize,
}

fn looks_like_flag(s: &str) -> bool {
    s.len() > 1 && s.starts_with('-') && s.parse::<f64>().is_err()
}

impl<'a> Cursor<'a> {
    fn take(&mut self, flag: &str, n: usize, what: &str) -> Result<&'a [String], String> {
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
    fn string(&mut self, flag: &str, what: &str) -> Result<&'a str, String> {
        let v = self.take(flag, 1, what)?[0].as_str();
        if looks_like_flag(v) || v.is_empty() {
            return Err(format!("{flag}: missing value ({what}); found '{v}'"));
        }
        Ok(v)
    }
    fn path(&mut self, flag: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(self.string(flag, "a file name")?))
    }
    fn nums<const N: usize>(&mut self, flag: &str, what: &str) -> Result<[f64; N], String> {
        let vals = self.take(flag, N, what)?;
        let mut out = [0.0; N];
        for (o, v) in out.iter_mut().zip(vals) {
            *o = parse_num(flag, v)?;
        }
        Ok(out)
    }
    fn num(&mut self, flag: &str, what: &str) -> Result<f64, String> {
        Ok(self.nums::<1>(flag, what)?[0])
    }
    fn ints<const N: usize>(&mut self, flag: &str, what: &str) -> Result<[i64; N], String> {
        let vals = self.take(flag, N, what)?;
        let mut out = [0i64; N];
        for (o, v) in out.iter_mut().zip(vals) {
            *o = parse_int(flag, v)?;
        }
        Ok(out)
    }
    fn int(&mut self, flag: &str, what: &str) -> Result<i64, String> {
        Ok(self.ints::<1>(flag, what)?[0])
    }
    fn count(&mut self, flag: &str) -> Result<u32, String> {
        let v = self.int(flag, "a pixel count")?;
        u32::try_from(v).map_err(|_| format!("{flag}: '{v}' is not a valid pixel count"))
    }
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

/// Parse nanoBragg.c flags into a configuration and output options. Reads the
/// headers of `-mask` and `-img` files (mask first, then img, as C does;
/// flags then override header values). Does not render or write anything.
pub fn parse_args(args: &[String]) -> Result<NanobraggArgs, String> {
    let mut out = NanobraggArgs::default();

    // Pass 1: header files, applied before any other flag (C reads the mask,
    // then the img, then parses the rest).
    let mut mask: Option<PathBuf> = None;
    let mut img: Option<PathBuf> = None;
    {
        let mut c = Cursor { args, i: 0 };
        while c.i < args.len() {
            let flag = args[c.i].as_str();
            c.i += 1;
            match flag {
                "-mask" => mask = Some(c.path(flag)?),
                "-img" => img = Some(c.path(flag)?),
                _ => {}
            }
        }
    }
    if let Some(p) = &mask {
        let smv = io::smv::read_smv(p).map_err(|e| format!("-mask: {e}"))?;
        apply_smv_header(&mut out.config, &smv, true);
        out.config.detector.mask_file = Some(p.clone());
    }
    if let Some(p) = &img {
        let smv = io::smv::read_smv(p).map_err(|e| format!("-img: {e}"))?;
        apply_smv_header(&mut out.config, &smv, false);
        out.img_file = Some(p.clone());
    }

    let cfg = &mut out.config;
    let mut pivot: Option<Pivot> = None;
    let mut size: Option<[f64; 3]> = None;
    let mut c = Cursor { args, i: 0 };
    while c.i < args.len() {
        let flag = args[c.i].as_str();
        c.i += 1;
        if !flag.starts_with('-') || flag.len() < 2 {
            return Err(format!(
                "unexpected argument '{flag}' (flags start with '-')"
            ));
        }
        match flag {
            "-h" | "-help" | "--help" => out.help = true,

            // ---- inputs
            "-hkl" => cfg.crystal.hkl_file = Some(c.path(flag)?),
            "-mat" => cfg.crystal.mosflm_matrix = Some(c.path(flag)?),
            "-sourcefile" => cfg.beam.source_file = Some(c.path(flag)?),
            "-mask" | "-img" => {
                c.path(flag)?; // handled in pass 1
            }
            "-default_F" => cfg.crystal.default_f = c.num(flag, "structure factor")?,

            // ---- crystal
            "-cell" => {
                cfg.crystal.cell = Some(c.nums::<6>(flag, "a b c (A) alpha beta gamma (deg)")?)
            }
            "-misset" => {
                let first = c.take(flag, 1, "x y z (deg) or 'random'")?[0].as_str();
                if first.starts_with("rand") {
                    cfg.crystal.misset_random = true;
                    cfg.crystal.misset_deg = None;
                } else {
                    c.i -= 1;
                    cfg.crystal.misset_deg = Some(c.nums::<3>(flag, "x y z (deg) or 'random'")?);
                    cfg.crystal.misset_random = false;
                }
            }
            "-misset_seed" => cfg.crystal.misset_seed = Some(c.int(flag, "seed")?),
            "-N" => {
                let n = c.int(flag, "unit cells")? as f64;
                cfg.crystal.n_cells = [n; 3];
            }
            "-Na" => cfg.crystal.n_cells[0] = c.int(flag, "unit cells")? as f64,
            "-Nb" => cfg.crystal.n_cells[1] = c.int(flag, "unit cells")? as f64,
            "-Nc" => cfg.crystal.n_cells[2] = c.int(flag, "unit cells")? as f64,
            "-samplesize" | "-sample_size" | "-xtalsize" | "-xtal_size" => {
                let v = c.num(flag, "crystal size (mm)")?;
                size = Some([v; 3]);
            }
            "-sample_thick" | "-sample_x" | "-xtal_thick" | "-xtal_x" => {
                size.get_or_insert([0.0; 3])[0] = c.num(flag, "crystal size (mm)")?;
            }
            "-sample_width" | "-sample_y" | "-xtal_width" | "-xtal_y" | "-width" => {
                size.get_or_insert([0.0; 3])[1] = c.num(flag, "crystal size (mm)")?;
            }
            "-sample_height" | "-sample_heigh" | "-sample_z" | "-xtal_height" | "-xtal_heigh"
            | "-xtal_z" | "-height" | "-heigh" => {
                size.get_or_insert([0.0; 3])[2] = c.num(flag, "crystal size (mm)")?;
            }
            "-square_xtal" => cfg.crystal.shape = LatticeShape::Square,
            "-round_xtal" => cfg.crystal.shape = LatticeShape::Round,
            "-gauss_xtal" => cfg.crystal.shape = LatticeShape::Gauss,
            "-tophat_spots" | "-binary_spots" => cfg.crystal.shape = LatticeShape::Tophat,
            "-fudge" => cfg.crystal.fudge = c.num(flag, "shape scale")?,
            "-mosaic" | "-mosaici" | "-mosaic_spr" | "-mosaic_spread" => {
                cfg.crystal.mosaic_spread_deg = Some(c.num(flag, "mosaic spread (deg)")?)
            }
            "-mosaic_dom" | "-mosaic_domains" => {
                cfg.crystal.mosaic_domains = Some(c.int(flag, "domain count")?)
            }
            "-mosaic_seed" => cfg.crystal.mosaic_seed = c.int(flag, "seed")?,
            "-interpolate" => cfg.crystal.interpolate = Some(true),
            "-nointerpolate" => cfg.crystal.interpolate = Some(false),

            // ---- beam
            "-lambda" | "-wave" => {
                cfg.beam.wavelength_a = c.num(flag, "wavelength (A)")?;
                cfg.beam.energy_ev = None;
            }
            "-energy" => {
                let e = c.num(flag, "photon energy (eV)")?;
                if e == 0.0 {
                    return Err(format!("{flag}: energy must not be 0"));
                }
                cfg.beam.wavelength_a = 12398.42 / e;
                cfg.beam.energy_ev = None;
            }
            "-dispersion" => cfg.beam.dispersion_pct = Some(c.num(flag, "spectral width (%)")?),
            "-dispsteps" => cfg.beam.dispsteps = Some(c.int(flag, "step count")?),
            "-divergence" => {
                let v = c.num(flag, "divergence (mrad)")?;
                cfg.beam.hdivrange_mrad = Some(v);
                cfg.beam.vdivrange_mrad = Some(v);
            }
            "-hdivrange" => cfg.beam.hdivrange_mrad = Some(c.num(flag, "range (mrad)")?),
            "-vdivrange" => cfg.beam.vdivrange_mrad = Some(c.num(flag, "range (mrad)")?),
            "-hdivstep" => cfg.beam.hdivstep_mrad = Some(c.num(flag, "step (mrad)")?),
            "-vdivstep" => cfg.beam.vdivstep_mrad = Some(c.num(flag, "step (mrad)")?),
            "-hdivsteps" => cfg.beam.hdivsteps = Some(c.int(flag, "step count")?),
            "-vdivsteps" => cfg.beam.vdivsteps = Some(c.int(flag, "step count")?),
            "-divsteps" => {
                let n = c.int(flag, "step count")?;
                cfg.beam.hdivsteps = Some(n);
                cfg.beam.vdivsteps = Some(n);
            }
            "-round_div" => cfg.beam.round_div = true,
            "-square_div" => cfg.beam.round_div = false,
            "-fluence" => cfg.beam.fluence = Some(c.num(flag, "photons/m^2")?),
            "-flux" => cfg.beam.flux = c.num(flag, "photons/s")?,
            "-exposure" => cfg.beam.exposure = c.num(flag, "seconds")?,
            "-beamsize" => cfg.beam.beamsize_mm = c.num(flag, "beam size (mm)")?,
            "-polar" => {
                cfg.beam.polarization = c.num(flag, "Kahn factor")?;
                cfg.beam.nopolar = false;
            }
            "-nopolar" => cfg.beam.nopolar = true,
            "-water" => cfg.beam.water_um = c.num(flag, "water thickness (um)")?,
            "-dmin" => cfg.beam.dmin_a = c.num(flag, "resolution (A)")?,

            // ---- detector
            "-pixel" => cfg.detector.pixel_size_mm = c.num(flag, "pixel size (mm)")?,
            "-detpixels" => {
                let n = c.count(flag)?;
                cfg.detector.fpixels = Some(n);
                cfg.detector.spixels = Some(n);
            }
            "-detpixels_f" | "-detpixels_x" => cfg.detector.fpixels = Some(c.count(flag)?),
            "-detpixels_s" | "-detpixels_y" => cfg.detector.spixels = Some(c.count(flag)?),
            "-detsize" => {
                let v = c.num(flag, "detector size (mm)")?;
                cfg.detector.detsize_f_mm = v;
                cfg.detector.detsize_s_mm = v;
            }
            "-detsize_f" => cfg.detector.detsize_f_mm = c.num(flag, "detector size (mm)")?,
            "-detsize_s" => cfg.detector.detsize_s_mm = c.num(flag, "detector size (mm)")?,
            "-distance" => {
                cfg.detector.distance_mm = c.num(flag, "distance (mm)")?;
                pivot = Some(Pivot::Beam);
            }
            "-close_distance" => {
                cfg.detector.close_distance_mm = Some(c.num(flag, "distance (mm)")?);
                pivot = Some(Pivot::Sample);
            }
            "-Xbeam" => {
                cfg.detector.xbeam_mm = Some(c.num(flag, "beam position (mm)")?);
                pivot = Some(Pivot::Beam);
            }
            "-Ybeam" => {
                cfg.detector.ybeam_mm = Some(c.num(flag, "beam position (mm)")?);
                pivot = Some(Pivot::Beam);
            }
            "-Xclose" => {
                cfg.detector.xclose_mm = Some(c.num(flag, "near point (mm)")?);
                pivot = Some(Pivot::Sample);
            }
            "-Yclose" => {
                cfg.detector.yclose_mm = Some(c.num(flag, "near point (mm)")?);
                pivot = Some(Pivot::Sample);
            }
            "-ORGX" => {
                cfg.detector.orgx = Some(c.num(flag, "XDS origin (pixels)")?);
                pivot = Some(Pivot::Sample);
            }
            "-ORGY" => {
                cfg.detector.orgy = Some(c.num(flag, "XDS origin (pixels)")?);
                pivot = Some(Pivot::Sample);
            }
            "-pivot" => {
                pivot = Some(match c.string(flag, "beam or sample")? {
                    "beam" => Pivot::Beam,
                    "sample" => Pivot::Sample,
                    other => return Err(format!("{flag}: '{other}' is not beam or sample")),
                })
            }
            "-mosflm" | "-xds" | "-adxv" | "-denzo" | "-dials" => {
                let (conv, p) = match flag {
                    "-mosflm" => (Convention::Mosflm, Pivot::Beam),
                    "-xds" => (Convention::Xds, Pivot::Sample),
                    "-adxv" => (Convention::Adxv, Pivot::Beam),
                    "-denzo" => (Convention::Denzo, Pivot::Beam),
                    _ => (Convention::Dials, Pivot::Beam),
                };
                cfg.detector.convention = conv;
                pivot = Some(p);
                clear_custom_vectors(cfg);
            }
            "-fdet_vector" | "-sdet_vector" | "-odet_vector" | "-beam_vector" | "-polar_vector"
            | "-spindle_axis" | "-twotheta_axis" => {
                let v = c.nums::<3>(flag, "x y z")?;
                if cfg.detector.convention != Convention::Custom {
                    // C keeps its initial (MOSFLM-like) vectors for axes not given.
                    clear_custom_vectors(cfg);
                }
                cfg.detector.convention = Convention::Custom;
                let slot = match flag {
                    "-fdet_vector" => &mut cfg.detector.fdet_vector,
                    "-sdet_vector" => &mut cfg.detector.sdet_vector,
                    "-odet_vector" => &mut cfg.detector.odet_vector,
                    "-beam_vector" => &mut cfg.beam.beam_vector,
                    "-polar_vector" => &mut cfg.beam.polar_vector,
                    "-spindle_axis" => &mut cfg.goniometer.spindle_axis,
                    _ => &mut cfg.detector.twotheta_axis,
                };
                *slot = Some(v);
            }
            "-pix0_vector" => return Err(format!("{flag}: not supported by braggrun")),
            "-detector_rotx" => cfg.detector.rot_deg[0] = c.num(flag, "angle (deg)")?,
            "-detector_roty" => cfg.detector.rot_deg[1] = c.num(flag, "angle (deg)")?,
            "-detector_rotz" => cfg.detector.rot_deg[2] = c.num(flag, "angle (deg)")?,
            "-twotheta" => {
                cfg.detector.twotheta_deg = c.num(flag, "angle (deg)")?;
                pivot = Some(Pivot::Sample);
            }
            "-point_pixel" => cfg.detector.point_pixel = true,
            "-curved_det" => cfg.detector.curved = true,
            "-detector_abs" | "-detector_absorb" => {
                let v = c.string(flag, "attenuation depth (um) or inf")?;
                let depth = if v.to_ascii_lowercase().contains("inf") {
                    0.0
                } else {
                    parse_num(flag, v)?
                };
                if depth == 0.0 {
                    cfg.detector.attenuation_depth_um = None;
                    cfg.detector.thickness_um = 0.0;
                } else {
                    cfg.detector.attenuation_depth_um = Some(depth);
                }
            }
            "-detector_thick" => cfg.detector.thickness_um = c.num(flag, "thickness (um)")?,
            "-detector_thicksteps" | "-thicksteps" => {
                cfg.detector.thicksteps = Some(c.int(flag, "layer count")?)
            }
            "-oversample" => cfg.detector.oversample = Some(c.int(flag, "subpixels per side")?),
            "-oversample_thick" => cfg.detector.oversample_thick = true,
            "-oversample_polar" => cfg.detector.oversample_polar = true,
            "-oversample_omega" => cfg.detector.oversample_omega = true,
            "-roi" => {
                let r = c.ints::<4>(flag, "fast min, fast max, slow min, slow max")?;
                let mut roi = [0u32; 4];
                for (o, v) in roi.iter_mut().zip(r) {
                    *o = u32::try_from(v)
                        .map_err(|_| format!("{flag}: '{v}' is not a pixel index"))?;
                }
                if roi[0] > roi[1] || roi[2] > roi[3] {
                    return Err(format!(
                        "{flag}: empty region {} {} {} {}",
                        roi[0], roi[1], roi[2], roi[3]
                    ));
                }
                cfg.detector.roi = Some(roi);
            }

            // ---- rotation
            "-phi" => cfg.goniometer.phi_start_deg = c.num(flag, "angle (deg)")?,
            "-osc" => cfg.goniometer.osc_deg = Some(c.num(flag, "angle (deg)")?),
            "-phistep" => cfg.goniometer.phistep_deg = Some(c.num(flag, "angle (deg)")?),
            "-phisteps" => cfg.goniometer.phisteps = Some(c.int(flag, "step count")?),

            // ---- outputs
            "-floatfile" | "-floatimage" => out.floatfile = Some(c.path(flag)?),
            "-intfile" | "-intimage" => out.intfile = Some(c.path(flag)?),
            "-pgmfile" | "-pgmimage" => {
                out.pgmfile = Some(c.path(flag)?);
                out.write_pgm = true;
            }
            "-noisefile" | "-noiseimage" => {
                out.noisefile = Some(c.path(flag)?);
                out.calculate_noise = true;
            }
            "-nonoise" => out.calculate_noise = false,
            "-nopgm" => out.write_pgm = false,
            "-scale" => out.int_scale = c.num(flag, "SMV scale")?,
            "-pgmscale" => {
                out.pgm_scale = c.num(flag, "PGM scale")?;
                out.write_pgm = true;
            }
            "-adc" => out.adc = c.num(flag, "ADC offset (counts)")?,
            "-seed" => cfg.seed = Some(c.int(flag, "seed")?),

            // ---- braggrun additions
            "-phi_carryover" => {
                cfg.phi_carryover = match c.string(flag, "spec or c-parity")? {
                    "spec" => PhiCarryover::Spec,
                    "c-parity" | "c_parity" => PhiCarryover::CParity,
                    other => return Err(format!("{flag}: '{other}' is not spec or c-parity")),
                }
            }
            "-device" => {
                out.device = c
                    .string(flag, "cpu, cuda or cuda:N")?
                    .parse()
                    .map_err(|e| format!("{flag}: {e}"))?
            }
            "-dtype" => {
                out.dtype = c
                    .string(flag, "float32 or float64")?
                    .parse()
                    .map_err(|e| format!("{flag}: {e}"))?
            }

            // ---- accepted and ignored (diagnostics, or read but unused by C)
            "-printout" | "-noprogress" | "-progress" => out.ignored.push(flag.to_string()),
            "-printout_pixel" | "-trace_pixel" | "-dump_pixel" => {
                c.ints::<2>(flag, "two pixel indices")?;
                out.ignored.push(flag.to_string());
            }
            "-stol" | "-4stol" | "-Q" | "-stolout" => {
                c.path(flag)?;
                out.ignored.push(flag.to_string());
            }
            "-density" | "-sample_den" | "-MW" | "-molecular_weight" => {
                c.num(flag, "value")?;
                out.ignored.push(flag.to_string());
            }
            "-coherent" => return Err(format!("{flag}: not supported by braggrun")),

            _ => return Err(format!("unknown flag '{flag}' (see runner nanobragg -h)")),
        }
    }
    if let Some(s) = size {
        cfg.crystal.size_mm = Some(s);
    }
    if pivot.is_some() {
        cfg.detector.pivot = pivot;
    }
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

/// nanoBragg's summary statistics over the ROI (C lines after the pixel loop).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub max_i: f64,
    /// Pixel (fast, slow) where max_I was first reached (0, 0 if none > 0).
    pub max_pixel: (usize, usize),
    pub mean: f64,
    pub rms: f64,
    pub rmsd: f64,
    /// Pixels counted for mean and rms (ROI, unmasked).
    pub n: usize,
}

/// Statistics as C computes them from its float image: max, mean and rms over
/// unmasked ROI pixels; rmsd about that mean over every ROI pixel.
/// `image` holds values already rounded to float32.
pub fn roi_stats(image: &[f32], fpixels: usize, roi: [u32; 4], mask: Option<&[u16]>) -> Stats {
    let [f0, f1, s0, s1] = roi.map(|v| v as usize);
    let spixels = image.len() / fpixels.max(1);
    let in_roi = |f: usize, s: usize| f >= f0 && f <= f1 && s >= s0 && s <= s1;
    let (mut max_i, mut max_pixel) = (0.0f64, (0usize, 0usize));
    let (mut sum, mut sumsqr, mut n) = (0.0f64, 0.0f64, 0usize);
    for s in 0..spixels {
        for f in 0..fpixels {
            let idx = s * fpixels + f;
            if !in_roi(f, s) || mask.is_some_and(|m| m.get(idx) == Some(&0)) {
                continue;
            }
            let v = image[idx] as f64;
            if v > max_i {
                max_i = v;
                max_pixel = (f, s);
            }
            sum += v;
            sumsqr += v * v;
            n += 1;
        }
    }
    let mean = sum / n.max(1) as f64;
    let rms = (sumsqr / (n.max(2) - 1) as f64).sqrt();
    let (mut dev, mut m) = (0.0f64, 0usize);
    for s in 0..spixels {
        for f in 0..fpixels {
            if in_roi(f, s) {
                let t = image[s * fpixels + f] as f64 - mean;
                dev += t * t;
                m += 1;
            }
        }
    }
    let rmsd = (dev / (m.max(2) - 1) as f64).sqrt();
    Stats {
        max_i,
        max_pixel,
        mean,
        rms,
        rmsd,
        n,
    }
}

/// The SMV integer image: ROI pixels `floor(clip(x*scale + adc, 0, 65535) + 0.5)`
/// (C rounds through `floorf`), others 0.
pub fn int_image(image: &[f32], fpixels: usize, roi: [u32; 4], scale: f64, adc: f64) -> Vec<u16> {
    let [f0, f1, s0, s1] = roi.map(|v| v as usize);
    let mut out = vec![0u16; image.len()];
    for (idx, o) in out.iter_mut().enumerate() {
        let (f, s) = (idx % fpixels, idx / fpixels);
        if f < f0 || f > f1 || s < s0 || s > s1 {
            continue;
        }
        let t = (image[idx] as f64 * scale + adc).clamp(0.0, 65535.0);
        *o = ((t + 0.5) as f32).floor() as u16;
    }
    out
}

/// The noise image: ROI pixels drawn from Poisson(x) in C's order, plus adc,
/// clipped to [0, 65535] and truncated; others 0. Returns (image, photons, overloads).
pub fn noise_image(
    image: &[f32],
    fpixels: usize,
    roi: [u32; 4],
    adc: f64,
    seed: i64,
) -> (Vec<u16>, f64, usize) {
    let [f0, f1, s0, s1] = roi.map(|v| v as usize);
    let mut rng = Poisson::new(seed);
    let mut out = vec![0u16; image.len()];
    let (mut sum, mut overloads) = (0.0f64, 0usize);
    for (idx, o) in out.iter_mut().enumerate() {
        let (f, s) = (idx % fpixels, idx / fpixels);
        if f < f0 || f > f1 || s < s0 || s > s1 {
            continue;
        }
        let mut t = rng.poidev(image[idx]) as f64;
        sum += t;
        t += adc;
        if t > 65535.0 {
            t = 65535.0;
            overloads += 1;
        }
        *o = t.max(0.0) as u16;
    }
    (out, sum, overloads)
}

/// The PGM bytes: ROI pixels `min(255, x*scale)` truncated, others 0.
pub fn pgm_image(image: &[f32], fpixels: usize, roi: [u32; 4], scale: f64) -> Vec<u8> {
    let [f0, f1, s0, s1] = roi.map(|v| v as usize);
    image
        .iter()
        .enumerate()
        .map(|(idx, &x)| {
            let (f, s) = (idx % fpixels, idx / fpixels);
            if f < f0 || f > f1 || s < s0 || s > s1 {
                0
            } else {
                io::pgm::pgm_byte(x as f64, scale)
            }
        })
        .collect()
}

/// The SMV header entries nanoBragg writes after TYPE, from the simulation's geometry.
fn smv_header(sim: &Simulation, fpixels: usize, spixels: usize) -> Vec<(String, String)> {
    let h = sim.header();
    let g = c_fmt_g;
    let mut v: Vec<(&str, String)> = vec![
        ("SIZE1", fpixels.to_string()),
        ("SIZE2", spixels.to_string()),
        ("PIXEL_SIZE", g(h.pixel_mm)),
        ("DISTANCE", g(h.distance_mm)),
        ("WAVELENGTH", g(h.wavelength_a)),
        ("BEAM_CENTER_X", g(h.xbeam_mm)),
        ("BEAM_CENTER_Y", g(h.ybeam_mm)),
        ("ADXV_CENTER_X", g(h.fbeam_mm)),
        ("ADXV_CENTER_Y", g(h.detsize_s_mm - h.sbeam_mm)),
        ("MOSFLM_CENTER_X", g(h.sbeam_mm - 0.5 * h.pixel_mm)),
        ("MOSFLM_CENTER_Y", g(h.fbeam_mm - 0.5 * h.pixel_mm)),
        ("DENZO_X_BEAM", g(h.sbeam_mm)),
        ("DENZO_Y_BEAM", g(h.fbeam_mm)),
    ];
    let o = h.dials_origin_mm;
    v.push((
        "DIALS_ORIGIN",
        format!("{},{},{}", g(o[0]), g(o[1]), g(o[2])),
    ));
    v.extend([
        ("XDS_ORGX", g(h.orgx)),
        ("XDS_ORGY", g(h.orgy)),
        ("CLOSE_DISTANCE", g(h.close_distance_mm)),
        ("PHI", g(h.phi0_deg)),
        ("OSC_START", g(h.phi0_deg)),
        ("OSC_RANGE", g(h.osc_deg)),
        ("TWOTHETA", g(h.twotheta_deg)),
        ("DETECTOR_SN", "000".to_string()),
        ("BEAMLINE", "fake".to_string()),
    ]);
    v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// `runner nanobragg [flags]`. Exit codes: 0 success, 2 bad arguments or
/// inputs (nothing written), 1 render or write failure.
pub fn run(args: &[String]) -> i32 {
    // `-memory_limit SIZE` / `--memory-limit SIZE`: the memory budget (not a
    // nanoBragg.c flag; taken out before the flags are parsed).
    let mut rest: Vec<String> = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-memory_limit" || a == "--memory-limit" {
            let Some(v) = it.next() else {
                crate::errln!("runner nanobragg: error: {a}: expected a size (e.g. 8G)");
                return 2;
            };
            match crate::physics::budget::parse_size(v) {
                Ok(b) => crate::physics::budget::set_limit(b),
                Err(e) => {
                    crate::errln!("runner nanobragg: error: {a}: {e}");
                    return 2;
                }
            }
        } else {
            rest.push(a.clone());
        }
    }
    let args = &rest[..];
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            crate::errln!("runner nanobragg: error: {e}");
            return 2;
        }
    };
    if a.help {
        crate::out!("{USAGE}");
        return 0;
    }
    let sim = match Simulation::prepare(&a.config, Path::new(".")) {
        Ok(s) => s,
        Err(e) => {
            crate::errln!("runner nanobragg: error: {e}");
            return 2;
        }
    };
    // The budget of this command: a render plus the f32 copy and the outputs.
    {
        let n = sim.fpixels() as u64;
        let mut need = sim.render_need(a.dtype == crate::engine::Dtype::F32, 0);
        need.add(
            "f32 image and outputs",
            n.saturating_mul(sim.spixels() as u64),
            4 + 2 + 2 + 1,
        );
        if let Err(e) = need.check("detector") {
            crate::errln!("runner nanobragg: error: {e}");
            return 2;
        }
    }
    // The mask again, for the statistics (masked pixels are not counted).
    let mask = match &a.config.detector.mask_file {
        Some(p) => match io::smv::read_smv(p) {
            Ok(m) => Some(m.data),
            Err(e) => {
                crate::errln!("runner nanobragg: error: -mask: {e}");
                return 2;
            }
        },
        None => None,
    };
    for note in sim.notes() {
        crate::outln!("{note}");
    }
    for f in &a.ignored {
        crate::outln!("note: {f} is accepted for compatibility and ignored");
    }
    let rendered = match engine::render(&sim, a.device, &RenderOptions::new(a.dtype)) {
        Ok(r) => r,
        Err(e) => {
            crate::errln!("runner nanobragg: error: render on {}: {e}", a.device);
            return 1;
        }
    };
    crate::outln!("rendered on {}", rendered.device);
    let (fp, sp, roi) = (rendered.fpixels, rendered.spixels, rendered.roi);
    // C keeps its image in float; the statistics and every output use that.
    let image: Vec<f32> = rendered.image.iter().map(|&x| x as f32).collect();
    let mask = mask.filter(|m| m.len() == image.len());
    let st = roi_stats(&image, fp, roi, mask.as_deref());
    let pixel_m = sim.header().pixel_mm / 1000.0;
    crate::outln!(
        "max_I = {}  at {} {}  (pixel fast {} slow {})",
        c_fmt_g(st.max_i),
        c_fmt_g((st.max_pixel.0 as f64 + 0.5) * pixel_m),
        c_fmt_g((st.max_pixel.1 as f64 + 0.5) * pixel_m),
        st.max_pixel.0,
        st.max_pixel.1
    );
    crate::outln!(
        "mean= {} rms= {} rmsd= {}",
        c_fmt_g(st.mean),
        c_fmt_g(st.rms),
        c_fmt_g(st.rmsd)
    );

    let fail = |e: io::IoError| {
        crate::errln!("runner nanobragg: error: {e}");
        1
    };
    if let Some(p) = &a.floatfile {
        crate::outln!("writing {} as {} 4-byte floats", p.display(), image.len());
        if let Err(e) = io::float_image::write_float_image(p, &image) {
            return fail(e);
        }
    }
    let int_scale = if a.int_scale > 0.0 {
        a.int_scale
    } else if st.max_i > 0.0 {
        55000.0 / st.max_i
    } else {
        1.0
    };
    let header = if a.intfile.is_some() || a.noise_output().is_some() {
        smv_header(&sim, fp, sp)
    } else {
        vec![]
    };
    if let Some(p) = &a.intfile {
        crate::outln!("intfile_scale = {}", c_fmt_g(int_scale));
        let data = int_image(&image, fp, roi, int_scale, a.adc);
        crate::outln!("writing {} as 2-byte integers", p.display());
        if let Err(e) = io::smv::write_smv(p, &header, fp, sp, &data, cfg!(target_endian = "big")) {
            return fail(e);
        }
    }
    if let Some(p) = a.pgm_output() {
        let scale = if a.pgm_scale > 0.0 {
            a.pgm_scale
        } else if st.rmsd > 0.0 {
            250.0 / (5.0 * st.rmsd)
        } else {
            int_scale
        };
        crate::outln!("pgm_scale = {}", c_fmt_g(scale));
        crate::outln!("writing {} as 1-byte integers", p.display());
        if let Err(e) = io::pgm::write_pgm(p, fp, sp, scale, &pgm_image(&image, fp, roi, scale)) {
            return fail(e);
        }
    }
    if let Some(p) = a.noise_output() {
        let seed = match a.config.seed {
            Some(s) => -s,
            None => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(1);
                -t
            }
        };
        let (data, photons, overloads) = noise_image(&image, fp, roi, a.adc, seed);
        crate::outln!("{photons:.0} photons on noise image ({overloads} overloads)");
        crate::outln!("writing {} as 2-byte integers", p.display());
        if let Err(e) = io::smv::write_smv(p, &header, fp, sp, &data, cfg!(target_endian = "big")) {
            return fail(e);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn statistics_and_scaling_as_c() {
        // 3 x 2 image, ROI = fast 0..1, slow 0..1; pixel (2, *) outside.
        let img = [1.0f32, 3.0, 100.0, 2.0, 2.0, 100.0];
        let roi = [0, 1, 0, 1];
        let st = roi_stats(&img, 3, roi, None);
        assert_eq!(st.max_i, 3.0);
        assert_eq!(st.max_pixel, (1, 0));
        assert_eq!(st.mean, 2.0);
        assert!((st.rms - (18.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((st.rmsd - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // masked pixels leave mean/rms but still enter rmsd
        let st2 = roi_stats(&img, 3, roi, Some(&[1, 0, 1, 1, 1, 1]));
        assert_eq!(st2.n, 3);
        assert!((st2.mean - 5.0 / 3.0).abs() < 1e-12);
        let ints = int_image(&img, 3, roi, 55000.0 / 3.0, 40.0);
        assert_eq!(ints, vec![18373, 55040, 0, 36707, 36707, 0]);
        let ints = int_image(&[1e9, -5.0], 2, [0, 1, 0, 0], 1.0, 40.0);
        assert_eq!(ints, vec![65535, 35]);
        let pgm = pgm_image(&img, 3, roi, 60.0);
        assert_eq!(pgm, vec![60, 180, 0, 120, 120, 0]);
        let (n1, _, _) = noise_image(&img, 3, roi, 40.0, -5);
        let (n2, photons, over) = noise_image(&img, 3, roi, 40.0, -5);
        assert_eq!(n1, n2);
        assert_eq!((n1[2], n1[5], over), (0, 0, 0));
        assert!(n1[0] >= 40 && photons >= 0.0);
    }
}
