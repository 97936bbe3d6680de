//! PNG previews of images: intensities on a log scale as 8-bit grayscale, and
//! signed images (differences, derivatives) on a diverging blue-white-red
//! scale centred on 0, as 8-bit RGB. Data are row-major, fast index
//! innermost (index = slow * width + fast); the PNG's rows are slow rows.
use super::IoError;
use std::path::Path;

/// Dynamic range shown on the log scale (decades below the maximum).
pub const LOG_DECADES: f64 = 6.0;

fn check(data: &[f64], width: usize, height: usize) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("empty image ({width} x {height})"));
    }
    if width > u32::MAX as usize || height > u32::MAX as usize {
        return Err("image too large for PNG".into());
    }
    if data.len() != width * height {
        return Err(format!(
            "{} values given for a {width} x {height} image",
            data.len()
        ));
    }
    Ok(())
}

fn encode(
    width: usize,
    height: usize,
    color: png::ColorType,
    pixels: &[u8],
) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(pixels).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// Gray levels of the log-scale image: the maximum is 255, values
/// [`LOG_DECADES`] decades below it (or the smallest positive value, if
/// larger) are 0; zero, negative and non-finite values are 0.
pub fn log_gray(data: &[f64]) -> Vec<u8> {
    let hi = data
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold(0.0f64, f64::max);
    if hi <= 0.0 {
        return vec![0; data.len()];
    }
    let min_pos = data
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold(f64::INFINITY, f64::min);
    let lo = min_pos.max(hi * 10f64.powf(-LOG_DECADES));
    let (llo, lhi) = (lo.log10(), hi.log10());
    data.iter()
        .map(|&x| {
            if !(x.is_finite() && x > 0.0) {
                0
            } else if lhi <= llo {
                255
            } else {
                let t = ((x.log10() - llo) / (lhi - llo)).clamp(0.0, 1.0);
                // keep every positive value visible above zero
                (1.0 + t * 254.0).round() as u8
            }
        })
        .collect()
}

/// RGB triples of the diverging scale: -max|x| blue, 0 white, +max|x| red;
/// non-finite values are black.
pub fn diverging_rgb(data: &[f64]) -> Vec<u8> {
    let m = data
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |a, x| a.max(x.abs()));
    let mut out = Vec::with_capacity(3 * data.len());
    for &x in data {
        let px = if !x.is_finite() {
            [0, 0, 0]
        } else if m == 0.0 {
            [255, 255, 255]
        } else {
            let t = (x / m).clamp(-1.0, 1.0);
            let fade = (255.0 * (1.0 - t.abs())).round() as u8;
            if t < 0.0 {
                [fade, fade, 255]
            } else {
                [255, fade, fade]
            }
        };
        out.extend_from_slice(&px);
    }
    out
}

/// Write an intensity image as an 8-bit grayscale PNG on a log scale.
pub fn write_log_png(
    data: &[f64],
    width: usize,
    height: usize,
    path: &Path,
) -> Result<(), IoError> {
    check(data, width, height).map_err(|m| IoError::file(path, m))?;
    let bytes = encode(width, height, png::ColorType::Grayscale, &log_gray(data))
        .map_err(|m| IoError::file(path, m))?;
    super::write_atomic(path, &bytes)
}

/// Write a signed image as an RGB PNG on a blue-white-red scale centred on 0.
pub fn write_diverging_png(
    data: &[f64],
    width: usize,
    height: usize,
    path: &Path,
) -> Result<(), IoError> {
    check(data, width, height).map_err(|m| IoError::file(path, m))?;
    let bytes = encode(width, height, png::ColorType::Rgb, &diverging_rgb(data))
        .map_err(|m| IoError::file(path, m))?;
    super::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(p: &Path) -> (png::OutputInfo, Vec<u8>) {
        let dec = png::Decoder::new(std::fs::File::open(p).unwrap());
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn log_png_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.png");
        let data = [0.0, 1.0, 10.0, 100.0, -5.0, f64::NAN];
        write_log_png(&data, 3, 2, &p).unwrap();
        let (info, px) = decode(&p);
        assert_eq!(
            (info.width, info.height, info.color_type),
            (3, 2, png::ColorType::Grayscale)
        );
        assert_eq!(px, vec![0, 1, 128, 255, 0, 0]);
    }

    #[test]
    fn diverging_png_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.png");
        let data = [-2.0, 0.0, 2.0, 1.0];
        write_diverging_png(&data, 2, 2, &p).unwrap();
        let (info, px) = decode(&p);
        assert_eq!(
            (info.width, info.height, info.color_type),
            (2, 2, png::ColorType::Rgb)
        );
        assert_eq!(&px[0..3], &[0, 0, 255]);
        assert_eq!(&px[3..6], &[255, 255, 255]);
        assert_eq!(&px[6..9], &[255, 0, 0]);
        assert_eq!(&px[9..12], &[255, 128, 128]);
        assert!(write_diverging_png(&data, 3, 2, &p).is_err());
    }
}
