//! The detector model: pixel grid and ROI, distance, beam centre, axes and
//! pivot per convention (spec-a-core "Geometry & Conventions", "Detector
//! rotations and pivot"), and the mask. Rotations and two-theta are applied
//! later, per parameter value (`setup::detector_geometry`); the sensor
//! thickness is resolved with its layers in [`super::sampling`].

use super::convention::ConventionAxes;
use crate::io::smv::SmvImage;
use crate::physics::budget::{num, RenderBudget};
use crate::physics::config::{Convention, DetectorConfig, Pivot};
use crate::physics::error::{finite, invalid, positive, unit_vec, SetupError};
use crate::physics::inputs::{contents, InputFile};
use crate::physics::scalar::{cross_product, unitize, Vec3};

/// A resolved detector (lengths in metres, angles as the user gave them).
#[derive(Clone, Debug, PartialEq)]
pub struct Detector {
    /// Detector width in pixels along the fast axis (C's fpixels).
    pub fpixels: usize,
    /// Detector height in pixels along the slow axis (C's spixels).
    pub spixels: usize,
    /// fast min, fast max, slow min, slow max (inclusive).
    pub roi: [u32; 4],
    /// Pixel edge length (m), C's pixel_size.
    pub pixel_size: f64,
    /// Detector size along the fast axis (m), C's detsize_f.
    pub detsize_f: f64,
    /// Detector size along the slow axis (m), C's detsize_s.
    pub detsize_s: f64,
    /// The convention the axes and beam centre follow.
    pub convention: Convention,
    /// The point the detector rotates about (C's detector_pivot).
    pub pivot: Pivot,
    /// Fast axis before rotations (unit), C's fdet_vector.
    pub fdet: [f64; 3],
    /// Slow axis before rotations (unit), C's sdet_vector.
    pub sdet: [f64; 3],
    /// Detector normal before rotations (unit), C's odet_vector.
    pub odet: [f64; 3],
    /// Axis of the two-theta swing (unit), C's twotheta_axis.
    pub twotheta_axis: [f64; 3],
    /// Sample to beam centre along the beam.
    pub distance: f64,
    /// Sample to the detector plane along its normal, when given.
    pub close_distance: Option<f64>,
    /// Rotations about lab X, Y, Z (deg), C's detector_rotx/y/z.
    pub rot_deg: [f64; 3],
    /// Two-theta swing (deg), C's detector_twotheta.
    pub twotheta_deg: f64,
    /// Beam centre, near point and pivot.
    pub centre: BeamCentre,
    /// Solid angle 1/R^2 only, no obliquity factor (C's point_pixel).
    pub point_pixel: bool,
    /// Spherical detector: every pixel at the same distance (C's curved_detector).
    pub curved: bool,
}

/// The direct-beam position and the near point (the foot of the normal from
/// the sample) in detector coordinates, and the pivot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamCentre {
    /// Beam centre X as the user's convention states it (m), C's Xbeam.
    pub xbeam: f64,
    /// Beam centre Y as the user's convention states it (m), C's Ybeam.
    pub ybeam: f64,
    /// Beam centre along the fast axis (m), C's Fbeam.
    pub fbeam: f64,
    /// Beam centre along the slow axis (m), C's Sbeam.
    pub sbeam: f64,
    /// Near point along the fast axis (m), C's Fclose.
    pub fclose: f64,
    /// Near point along the slow axis (m), C's Sclose.
    pub sclose: f64,
    /// The point the detector rotates about (C's detector_pivot).
    pub pivot: Pivot,
}

/// Resolve `det` in convention `axes` (the convention's defaults, replaced
/// by the user's vectors). The whole-detector budget is checked once the
/// pixel count is known; notes go to `notes`.
pub fn resolve(
    det: &DetectorConfig,
    axes: &ConventionAxes,
    limit: &(u64, String),
    notes: &mut Vec<String>,
) -> Result<Detector, SetupError> {
    let (pixel_size, detsize_f, detsize_s, fpixels, spixels) = pixels(det)?;
    RenderBudget::new(fpixels, spixels, det.mask_file.is_some(), limit)
        .check("detector", 0, 0, 0, 0)?;
    let roi = roi(det.roi, fpixels, spixels)?;
    let distance = positive("detector.distance_mm", det.distance_mm)? / 1000.0;
    let close_distance = match det.close_distance_mm {
        Some(d) => Some(positive("detector.close_distance_mm", d)? / 1000.0),
        None => None,
    };
    for (i, r) in det.rot_deg.iter().enumerate() {
        finite(&format!("detector.rot_deg[{i}]"), *r)?;
    }
    finite("detector.twotheta_deg", det.twotheta_deg)?;
    let centre = beam_centre(det, pixel_size, detsize_f, detsize_s)?;
    let [fdet, sdet, odet, twotheta_axis] = detector_axes(det, axes, notes)?;
    Ok(Detector {
        fpixels,
        spixels,
        roi,
        pixel_size,
        detsize_f,
        detsize_s,
        convention: det.convention,
        pivot: centre.pivot,
        fdet,
        sdet,
        odet,
        twotheta_axis,
        distance,
        close_distance,
        rot_deg: det.rot_deg,
        twotheta_deg: det.twotheta_deg,
        centre,
        point_pixel: det.point_pixel,
        curved: det.curved,
    })
}

/// Pixel size, detector size (fast, slow) and pixel counts (fast, slow):
/// a pixel count sets the size, else the size sets the count as C rounds it.
fn pixels(det: &DetectorConfig) -> Result<(f64, f64, f64, usize, usize), SetupError> {
    let pixel_size = positive("detector.pixel_size_mm", det.pixel_size_mm)? / 1000.0;
    let mut detsize_f = positive("detector.detsize_f_mm", det.detsize_f_mm)? / 1000.0;
    let mut detsize_s = positive("detector.detsize_s_mm", det.detsize_s_mm)? / 1000.0;
    if let Some(n) = det.fpixels {
        if n == 0 {
            return Err(invalid("detector.fpixels", "must be >= 1 (got 0)"));
        }
        detsize_f = pixel_size * n as f64;
    }
    if let Some(n) = det.spixels {
        if n == 0 {
            return Err(invalid("detector.spixels", "must be >= 1 (got 0)"));
        }
        detsize_s = pixel_size * n as f64;
    }
    // Pixel counts in f64 first: a huge detector size or a tiny pixel must
    // not saturate or wrap an integer before the size check.
    let fpix = (detsize_f / pixel_size - 0.5).ceil();
    let spix = (detsize_s / pixel_size - 0.5).ceil();
    if !(fpix >= 1.0 && spix >= 1.0) {
        return Err(invalid(
            "detector",
            format!("detector has no pixels ({} x {})", num(fpix), num(spix)),
        ));
    }
    if fpix * spix > (1u64 << 28) as f64 {
        return Err(invalid(
            "detector",
            format!(
                "{} x {} pixels (detsize {} x {} mm, pixel {} mm) is too large (at most 2^28 pixels)",
                num(fpix),
                num(spix),
                num(detsize_f * 1000.0),
                num(detsize_s * 1000.0),
                num(pixel_size * 1000.0)
            ),
        ));
    }
    Ok((
        pixel_size,
        detsize_f,
        detsize_s,
        fpix as usize,
        spix as usize,
    ))
}

/// The region of interest, inside the detector; the whole detector when none.
fn roi(roi: Option<[u32; 4]>, fpixels: usize, spixels: usize) -> Result<[u32; 4], SetupError> {
    match roi {
        Some([f0, f1, s0, s1]) => {
            if f0 > f1 || s0 > s1 || f1 as usize >= fpixels || s1 as usize >= spixels {
                return Err(invalid(
                    "detector.roi",
                    format!("[{f0}, {f1}, {s0}, {s1}] is not inside the {fpixels} x {spixels} detector (fast 0..{}, slow 0..{}, min <= max)", fpixels - 1, spixels - 1),
                ));
            }
            Ok([f0, f1, s0, s1])
        }
        None => Ok([0, fpixels as u32 - 1, 0, spixels as u32 - 1]),
    }
}

/// The beam centre and pivot: C's defaults where the user gave none (the
/// lines after nanoBragg.c's "fill in blanks"), then each convention's map
/// from (Xbeam, Ybeam) to (Fbeam, Sbeam).
fn beam_centre(
    det: &DetectorConfig,
    pixel_size: f64,
    detsize_f: f64,
    detsize_s: f64,
) -> Result<BeamCentre, SetupError> {
    let opt_mm = |key: &str, v: Option<f64>| -> Result<f64, SetupError> {
        match v {
            Some(x) => Ok(finite(key, x)? / 1000.0),
            None => Ok(f64::NAN),
        }
    };
    let mut xbeam = opt_mm("detector.xbeam_mm", det.xbeam_mm)?;
    let mut ybeam = opt_mm("detector.ybeam_mm", det.ybeam_mm)?;
    let xclose_user = opt_mm("detector.xclose_mm", det.xclose_mm)?;
    let yclose_user = opt_mm("detector.yclose_mm", det.yclose_mm)?;
    let mut fclose = match det.orgx {
        Some(o) => (finite("detector.orgx", o)? - 0.5) * pixel_size,
        None => detsize_f / 2.0,
    };
    let mut sclose = match det.orgy {
        Some(o) => (finite("detector.orgy", o)? - 0.5) * pixel_size,
        None => detsize_s / 2.0,
    };
    let xclose = if xclose_user.is_nan() {
        fclose
    } else {
        xclose_user
    };
    let yclose = if yclose_user.is_nan() {
        sclose
    } else {
        yclose_user
    };
    let conv = det.convention;
    let (fbeam, sbeam, pivot);
    match conv {
        Convention::Adxv => {
            if xbeam.is_nan() {
                xbeam = (detsize_f + pixel_size) / 2.0;
            }
            if ybeam.is_nan() {
                ybeam = (detsize_s - pixel_size) / 2.0;
            }
            fbeam = xbeam;
            sbeam = detsize_s - ybeam;
            pivot = Pivot::Beam;
        }
        Convention::Mosflm | Convention::Denzo => {
            if xbeam.is_nan() {
                xbeam = (detsize_s + pixel_size) / 2.0;
            }
            if ybeam.is_nan() {
                ybeam = (detsize_f + pixel_size) / 2.0;
            }
            let half = if conv == Convention::Mosflm {
                0.5 * pixel_size
            } else {
                0.0
            };
            fbeam = ybeam + half;
            sbeam = xbeam + half;
            pivot = Pivot::Beam;
        }
        Convention::Xds | Convention::Dials | Convention::Custom => {
            if xbeam.is_nan() {
                xbeam = xclose;
            }
            if ybeam.is_nan() {
                ybeam = yclose;
            }
            fbeam = xbeam;
            sbeam = ybeam;
            if conv == Convention::Custom {
                fclose = xbeam;
                sclose = ybeam;
                pivot = det.pivot.unwrap_or(
                    if det.close_distance_mm.is_some() || det.twotheta_deg != 0.0 {
                        Pivot::Sample
                    } else {
                        Pivot::Beam
                    },
                );
            } else {
                pivot = Pivot::Sample;
            }
        }
    }
    Ok(BeamCentre {
        xbeam,
        ybeam,
        fbeam,
        sbeam,
        fclose,
        sclose,
        pivot,
    })
}

/// fdet, sdet, odet and the two-theta axis: the convention's, replaced by the
/// user's (C reaches these only through CUSTOM), unit length. A normal that
/// is not of unit length is regenerated from fast x slow, as C does.
fn detector_axes(
    det: &DetectorConfig,
    axes: &ConventionAxes,
    notes: &mut Vec<String>,
) -> Result<[[f64; 3]; 4], SetupError> {
    let fdet = unit_vec("detector.fdet_vector", det.fdet_vector.unwrap_or(axes.fdet))?;
    let sdet = unit_vec("detector.sdet_vector", det.sdet_vector.unwrap_or(axes.sdet))?;
    let odet = match det.odet_vector {
        Some(v) => {
            let (u, m) = unitize(&Vec3::<f64>::cst(v));
            if m != 1.0 {
                notes.push("auto-generating odet_vector = fdet x sdet".into());
                unitize(&cross_product(&Vec3::cst(fdet), &Vec3::cst(sdet)))
                    .0
                     .0
            } else {
                u.0
            }
        }
        None => axes.odet,
    };
    let tt_axis = unit_vec(
        "detector.twotheta_axis",
        det.twotheta_axis.unwrap_or(axes.twotheta_axis),
    )?;
    Ok([fdet, sdet, odet, tt_axis])
}

/// The mask (`detector.mask_file`), which must match the detector's size.
pub fn mask(
    det: &DetectorConfig,
    input: Option<InputFile<SmvImage>>,
    fpixels: usize,
    spixels: usize,
) -> Result<Option<Vec<u16>>, SetupError> {
    let Some((_, img)) = contents("detector.mask_file", det.mask_file.as_ref(), input)? else {
        return Ok(None);
    };
    if img.fpixels != fpixels || img.spixels != spixels {
        let shown = det.mask_file.as_ref().map(|m| m.display().to_string());
        return Err(invalid(
            "detector.mask_file",
            format!(
                "{}: mask is {} x {} but the detector is {fpixels} x {spixels}",
                shown.unwrap_or_default(),
                img.fpixels,
                img.spixels
            ),
        ));
    }
    Ok(Some(img.data))
}

#[cfg(test)]
mod tests {
    use super::super::convention::axes;
    use super::*;

    static LIMIT: (u64, String) = (1 << 40, String::new());

    /// A 1024 x 1024 detector of 0.1 mm pixels at 100 mm.
    fn det(conv: Convention) -> DetectorConfig {
        DetectorConfig {
            convention: conv,
            fpixels: Some(1024),
            spixels: Some(1024),
            ..Default::default()
        }
    }

    fn resolve_ok(d: &DetectorConfig) -> (Detector, Vec<String>) {
        let mut notes = vec![];
        let r = resolve(d, &axes(d.convention), &LIMIT, &mut notes).unwrap();
        (r, notes)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1.0)
    }

    /// spec-a-core "Conventions", MOSFLM: Fbeam = Ybeam + 0.5 pixel,
    /// Sbeam = Xbeam + 0.5 pixel; default Xbeam = (detsize_s + pixel)/2,
    /// Ybeam = (detsize_f + pixel)/2; pivot BEAM.
    #[test]
    fn mosflm_beam_centre() {
        let mut d = det(Convention::Mosflm);
        d.xbeam_mm = Some(30.0);
        d.ybeam_mm = Some(40.0);
        let (r, notes) = resolve_ok(&d);
        let c = r.centre;
        assert!(
            close(c.fbeam, 0.040 + 0.00005) && close(c.sbeam, 0.030 + 0.00005),
            "{c:?}"
        );
        assert_eq!(r.pivot, Pivot::Beam);
        assert!(notes.is_empty());
        let (r, _) = resolve_ok(&det(Convention::Mosflm));
        let size = 1024.0 * 0.0001;
        assert!(close(r.centre.xbeam, (size + 0.0001) / 2.0));
        assert!(close(r.centre.fbeam, (size + 0.0001) / 2.0 + 0.00005));
        assert!(close(r.detsize_f, size) && r.fpixels == 1024 && r.roi == [0, 1023, 0, 1023]);
    }

    /// DENZO: MOSFLM's axes without the half-pixel shift.
    #[test]
    fn denzo_beam_centre() {
        let mut d = det(Convention::Denzo);
        d.xbeam_mm = Some(30.0);
        d.ybeam_mm = Some(40.0);
        let (r, _) = resolve_ok(&d);
        assert!(close(r.centre.fbeam, 0.040) && close(r.centre.sbeam, 0.030));
        assert_eq!(
            (r.fdet, r.sdet, r.odet),
            ([0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0])
        );
    }

    /// ADXV: default Xbeam = (detsize_f + pixel)/2, Ybeam = (detsize_s -
    /// pixel)/2; Fbeam = Xbeam, Sbeam = detsize_s - Ybeam.
    #[test]
    fn adxv_beam_centre() {
        let (r, _) = resolve_ok(&det(Convention::Adxv));
        let size = 1024.0 * 0.0001;
        assert!(close(r.centre.fbeam, (size + 0.0001) / 2.0));
        assert!(close(r.centre.sbeam, size - (size - 0.0001) / 2.0));
        assert_eq!(r.pivot, Pivot::Beam);
    }

    /// XDS: ORGX/ORGY (pixels) give the near point, Fclose = (ORGX - 0.5)
    /// pixel; the beam centre defaults to it; pivot SAMPLE.
    #[test]
    fn xds_origin_and_sample_pivot() {
        let mut d = det(Convention::Xds);
        d.orgx = Some(300.5);
        d.orgy = Some(400.5);
        let (r, _) = resolve_ok(&d);
        let c = r.centre;
        assert!(close(c.fclose, 0.030) && close(c.sclose, 0.040), "{c:?}");
        assert!(close(c.fbeam, 0.030) && close(c.sbeam, 0.040));
        assert_eq!(r.pivot, Pivot::Sample);
        // without an origin the near point is the detector's middle
        let (r, _) = resolve_ok(&det(Convention::Dials));
        assert!(close(r.centre.fclose, 0.0512) && close(r.centre.sclose, 0.0512));
    }

    /// CUSTOM: the beam centre is also the near point; the pivot is SAMPLE
    /// with a close distance or a two-theta, else BEAM, unless given.
    #[test]
    fn custom_pivot_rules() {
        let mut d = det(Convention::Custom);
        d.xbeam_mm = Some(10.0);
        let (r, _) = resolve_ok(&d);
        assert_eq!(r.pivot, Pivot::Beam);
        assert!(close(r.centre.fclose, 0.010) && close(r.centre.fbeam, 0.010));
        d.close_distance_mm = Some(90.0);
        assert_eq!(resolve_ok(&d).0.pivot, Pivot::Sample);
        assert_eq!(resolve_ok(&d).0.close_distance, Some(0.09));
        d.close_distance_mm = None;
        d.twotheta_deg = 5.0;
        assert_eq!(resolve_ok(&d).0.pivot, Pivot::Sample);
        d.pivot = Some(Pivot::Beam);
        assert_eq!(resolve_ok(&d).0.pivot, Pivot::Beam);
    }

    /// The user's axes replace the convention's, unit length; a normal that
    /// is not unit length is fast x slow (noted).
    #[test]
    fn user_axes() {
        let mut d = det(Convention::Custom);
        d.fdet_vector = Some([0.0, 0.0, 2.0]);
        d.sdet_vector = Some([0.0, -1.0, 0.0]);
        d.odet_vector = Some([5.0, 0.0, 0.0]);
        let (r, notes) = resolve_ok(&d);
        assert_eq!((r.fdet, r.odet), ([0.0, 0.0, 1.0], [1.0, 0.0, 0.0]));
        assert_eq!(notes, ["auto-generating odet_vector = fdet x sdet"]);
    }

    /// Pixels from the size round as C does: ceil(size/pixel - 0.5).
    #[test]
    fn pixel_count_from_size() {
        let mut d = DetectorConfig {
            detsize_f_mm: 10.04,
            detsize_s_mm: 10.06,
            ..Default::default()
        };
        let (r, _) = resolve_ok(&d);
        assert_eq!((r.fpixels, r.spixels), (100, 101));
        d.roi = Some([0, 99, 5, 100]);
        assert_eq!(resolve_ok(&d).0.roi, [0, 99, 5, 100]);
    }

    #[test]
    fn refusals_name_the_key() {
        let mut notes = vec![];
        let refuse = |d: &DetectorConfig, limit: &(u64, String), notes: &mut Vec<String>| {
            resolve(d, &axes(d.convention), limit, notes)
                .unwrap_err()
                .to_string()
        };
        let mut d = det(Convention::Mosflm);
        d.roi = Some([0, 1024, 0, 10]);
        assert!(refuse(&d, &LIMIT, &mut notes)
            .starts_with("detector.roi: [0, 1024, 0, 10] is not inside"));
        let d = DetectorConfig {
            fpixels: Some(1 << 15),
            spixels: Some(1 << 14),
            ..Default::default()
        };
        let e = refuse(&d, &LIMIT, &mut notes);
        assert!(
            e.contains("32768 x 16384 pixels") && e.contains("at most 2^28"),
            "{e}"
        );
        let e = refuse(
            &det(Convention::Mosflm),
            &(1 << 20, "test".into()),
            &mut notes,
        );
        assert!(e.starts_with("detector: needs 16.0 MiB of memory"), "{e}");
        let mut d = det(Convention::Xds);
        d.orgx = Some(f64::NAN);
        assert!(refuse(&d, &LIMIT, &mut notes).starts_with("detector.orgx: must be a finite"));
    }

    #[test]
    fn mask_must_match_the_detector() {
        let mut d = det(Convention::Mosflm);
        d.mask_file = Some("m.img".into());
        let img = |f, s| SmvImage {
            fpixels: f,
            spixels: s,
            data: vec![1; f * s],
            header: Default::default(),
        };
        let m = mask(&d, Some(InputFile::data("/d/m.img", img(4, 2))), 4, 2).unwrap();
        assert_eq!(m, Some(vec![1; 8]));
        let e = mask(&d, Some(InputFile::data("/d/m.img", img(4, 2))), 4, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "detector.mask_file: m.img: mask is 4 x 2 but the detector is 4 x 3"
        );
        d.mask_file = None;
        assert_eq!(mask(&d, None, 4, 3).unwrap(), None);
    }
}
