//! `runner nanobragg [flags]`: nanoBragg.c's command line on top of the
//! braggrun simulator. The flags, their parsing and the usage text come
//! from one table (`crate::experiment::nanobragg_flags`); this command
//! renders what they describe and writes nanoBragg.c's outputs.
//!
//! Outputs follow nanoBragg.c: `-floatfile` (float32), `-intfile` (SMV,
//! scaled), `-pgmfile` (P5), `-noisefile` (SMV with Poisson noise). The files
//! named are written; with none named, C's default files (floatimage.bin,
//! intimage.img, image.pgm, noiseimage.img; `-nopgm` and `-nonoise` drop the
//! last two). `-deriv` adds derivative images (float32 .bin and float64 .npy).

pub(crate) use crate::experiment::nanobragg_flags::usage;
pub use crate::experiment::nanobragg_flags::{parse_args, NanobraggArgs};

use crate::engine::{self, RenderOptions, Rendered};
use crate::io::{self, c_fmt_g};
use crate::physics::params::Param;
use crate::physics::rng::Poisson;
use crate::physics::Simulation;
use std::path::Path;

/// nanoBragg's summary statistics over the ROI (C lines after the pixel loop).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    /// The largest pixel value over the unmasked ROI pixels (C's max_I; the
    /// default SMV scale is 55000 / max_I, spec-a-core "SMV outputs").
    pub max_i: f64,
    /// Pixel (fast, slow) where max_I was first reached (0, 0 if none > 0).
    pub max_pixel: (usize, usize),
    /// Mean pixel value over the unmasked ROI pixels (C's mean).
    pub mean: f64,
    /// Root mean square pixel value over the unmasked ROI pixels,
    /// sqrt(sum I^2 / (n - 1)) as C computes it (C's rms).
    pub rms: f64,
    /// Root-mean-square deviation from `mean` over every ROI pixel, masked or
    /// not, with n - 1 in the denominator (C's rmsd; the default PGM scale is
    /// 250 / (5 rmsd)).
    pub rmsd: f64,
    /// Pixels counted for mean and rms (ROI, unmasked).
    pub n: usize,
}

/// Statistics as C computes them from its float image: max, mean and rms over
/// unmasked ROI pixels; rmsd about that mean over every ROI pixel.
/// `image` holds values already rounded to float32.
pub(crate) fn roi_stats(
    image: &[f32],
    fpixels: usize,
    roi: [u32; 4],
    mask: Option<&[u16]>,
) -> Stats {
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
pub(crate) fn int_image(
    image: &[f32],
    fpixels: usize,
    roi: [u32; 4],
    scale: f64,
    adc: f64,
) -> Vec<u16> {
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
pub(crate) fn noise_image(
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
pub(crate) fn pgm_image(image: &[f32], fpixels: usize, roi: [u32; 4], scale: f64) -> Vec<u8> {
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

/// `runner nanobragg [flags]`. Exit codes: 0 done (or `-h`), 2 no arguments
/// (the usage is printed), bad arguments or inputs (nothing written), 1
/// render or write failure.
pub(crate) fn run(args: &[String]) -> i32 {
    if args.is_empty() {
        crate::out!("{}", usage());
        return 2;
    }
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => return refuse(e),
    };
    if a.help {
        crate::out!("{}", usage());
        return 0;
    }
    if let Some(bytes) = a.memory_limit {
        crate::physics::budget::set_limit(bytes);
    }
    let (sim, mask) = match prepare(&a) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    for note in sim.notes() {
        crate::outln!("{note}");
    }
    for f in &a.ignored {
        crate::outln!("note: {f} is accepted for compatibility and ignored");
    }
    let render = |derivatives: &[Param]| {
        let mut opts = RenderOptions::new(a.dtype);
        opts.derivatives = derivatives.to_vec();
        engine::render(&sim, a.device, &opts).map_err(|e| format!("render on {}: {e}", a.device))
    };
    let done = render(&[])
        .and_then(|r| {
            crate::outln!("rendered on {}", r.device);
            write_outputs(&a, &sim, &r, mask.as_deref()).map_err(|e| e.to_string())
        })
        .and_then(|()| {
            if a.derivs.is_empty() {
                return Ok(());
            }
            // A render of their own, so that the image files do not depend
            // on -deriv (a float32 render with derivatives rounds differently).
            let r = render(&a.derivs)?;
            write_derivatives(&a, &r).map_err(|e| e.to_string())
        });
    match done {
        Ok(()) => 0,
        Err(e) => {
            crate::errln!("runner nanobragg: error: {e}");
            1
        }
    }
}

fn refuse(e: String) -> i32 {
    crate::errln!("runner nanobragg: error: {e}");
    2
}

/// The simulation, checked against the memory budget and the derivatives
/// asked for, and the mask's pixels (for the statistics).
fn prepare(a: &NanobraggArgs) -> Result<(Simulation, Option<Vec<u16>>), String> {
    let sim = Simulation::prepare(&a.config, Path::new(".")).map_err(|e| e.to_string())?;
    for p in &a.derivs {
        sim.base_value(*p).map_err(|e| format!("-deriv: {e}"))?;
    }
    // The budget of this command: a render plus the f32 copy and the outputs
    // (derivative files are written one at a time).
    let n = (sim.fpixels() as u64).saturating_mul(sim.spixels() as u64);
    let mut need = sim.render_need(a.dtype == crate::engine::Dtype::F32, a.derivs.len());
    need.add("f32 image and outputs", n, 4 + 2 + 2 + 1);
    if !a.derivs.is_empty() {
        need.add("derivative outputs", n, 4 + 8);
    }
    need.check("detector").map_err(|e| e.to_string())?;
    // The mask again, for the statistics (masked pixels are not counted).
    let mask = match &a.config.detector.mask_file {
        Some(p) => Some(
            io::smv::read_smv(p)
                .map_err(|e| format!("-mask: {e}"))?
                .data,
        ),
        None => None,
    };
    Ok((sim, mask))
}

/// The statistics nanoBragg prints, then its image files, from the image
/// rounded to float32 as C keeps it.
fn write_outputs(
    a: &NanobraggArgs,
    sim: &Simulation,
    rendered: &Rendered,
    mask: Option<&[u16]>,
) -> Result<(), io::IoError> {
    let (fp, sp, roi) = (rendered.fpixels, rendered.spixels, rendered.roi);
    let image: Vec<f32> = rendered.image.iter().map(|&x| x as f32).collect();
    let mask = mask.filter(|m| m.len() == image.len());
    let st = roi_stats(&image, fp, roi, mask);
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
    if let Some(p) = a.float_output() {
        crate::outln!("writing {} as {} 4-byte floats", p.display(), image.len());
        io::float_image::write_float_image(&p, &image)?;
    }
    let int_scale = if a.int_scale > 0.0 {
        a.int_scale
    } else if st.max_i > 0.0 {
        55000.0 / st.max_i
    } else {
        1.0
    };
    let (int_file, noise_file) = (a.int_output(), a.noise_output());
    let header = if int_file.is_some() || noise_file.is_some() {
        smv_header(sim, fp, sp)
    } else {
        vec![]
    };
    let big_endian = cfg!(target_endian = "big");
    if let Some(p) = int_file {
        crate::outln!("intfile_scale = {}", c_fmt_g(int_scale));
        let data = int_image(&image, fp, roi, int_scale, a.adc);
        crate::outln!("writing {} as 2-byte integers", p.display());
        io::smv::write_smv(&p, &header, fp, sp, &data, big_endian)?;
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
        io::pgm::write_pgm(&p, fp, sp, scale, &pgm_image(&image, fp, roi, scale))?;
    }
    if let Some(p) = noise_file {
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
        io::smv::write_smv(&p, &header, fp, sp, &data, big_endian)?;
    }
    Ok(())
}

/// `-deriv`: each derivative image as float32 (.bin, like -floatfile) and
/// float64 (.npy, shape (slow, fast)).
fn write_derivatives(a: &NanobraggArgs, rendered: &Rendered) -> Result<(), io::IoError> {
    let (fp, sp) = (rendered.fpixels, rendered.spixels);
    for (p, d) in &rendered.derivatives {
        let (bin, npy) = a.deriv_outputs(*p);
        crate::outln!(
            "writing d image / d {p} (per {}) as {} (4-byte floats) and {} (float64 .npy, {sp} x {fp})",
            p.unit(),
            bin.display(),
            npy.display()
        );
        io::float_image::write_float_image_f64(&bin, d)?;
        io::npy::write_image(&npy, d, sp, fp)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
