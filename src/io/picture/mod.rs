//! Pictures a reader can trust: detector images, derivative maps and
//! difference maps as PNG with axes, a colour bar and the numbers in the PNG
//! text metadata; line plots (convergence, scaling) as SVG or PNG.
//!
//! Everything is drawn with `plotters` (pure Rust: the bitmap and SVG
//! backends, text through `ab_glyph`) in the DejaVu Sans font embedded by the
//! `dejavu` crate, so no system font or library is needed. The functions take
//! plain slices and return bytes; writing them is the caller's business (e.g.
//! [`crate::io::write_atomic`]). The same input gives the same bytes.
//!
//! Images are row-major with the fast index innermost:
//! `data[slow * width + fast]`, as nanoBragg stores its `floatimage`. They are
//! shown as nanoBragg's `image.pgm` (and adxv) show them: pixel (0, 0) at the
//! top left, the fast pixel growing to the right, the slow pixel growing down.
//!
//! * [`detector_png`]: an intensity image on a linear or log scale.
//! * [`derivative_png`]: a signed map on a symmetric blue-white-red scale.
//! * [`difference_png`]: `(a - b) / max|b|`, the reference `b`'s maximum.
//! * [`line_plot_svg`], [`line_plot_png`]: line plots with a legend, built
//!   with [`convergence_plot`] or [`scaling_plot`] (or a [`LinePlot`] by hand).
//! * [`png_text`]: the text metadata of a PNG, to read the numbers back.

mod lines;
mod map;

pub use lines::PLOT_SIZE;
pub use lines::{convergence_plot, line_plot_png, line_plot_svg, scaling_plot, LinePlot, Series};
pub use map::{
    derivative_png, detector_png, difference_png, DetectorOptions, DifferenceOptions, Scale,
    SignedOptions, SignedRange, Top, PANEL,
};

/// An image the size of the whole detector: `data[slow * width + fast]`.
/// Non-finite values (NaN) mean "no value here" and are drawn grey; see
/// [`embed_roi`] for values known only inside a region of interest.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The values, fast index innermost.
    pub data: &'a [f64],
    /// Pixels along the fast axis.
    pub width: usize,
    /// Pixels along the slow axis.
    pub height: usize,
}

impl<'a> Frame<'a> {
    /// A frame of `width` x `height` values; an error unless
    /// `data.len() == width * height` and both sizes are positive.
    pub fn new(data: &'a [f64], width: usize, height: usize) -> Result<Self, String> {
        if width == 0 || height == 0 {
            return Err(format!("empty image ({width} x {height})"));
        }
        if width.checked_mul(height) != Some(data.len()) {
            return Err(format!(
                "{} values given for a {width} x {height} image",
                data.len()
            ));
        }
        Ok(Frame {
            data,
            width,
            height,
        })
    }

    /// A frame from an array of shape (slow, fast) in standard (row-major)
    /// layout.
    pub fn from_array(a: ndarray::ArrayView2<'a, f64>) -> Result<Self, String> {
        let (h, w) = a.dim();
        let data = a
            .to_slice()
            .ok_or("the array is not in standard (row-major) layout")?;
        Frame::new(data, w, h)
    }

    fn at(&self, fast: usize, slow: usize) -> f64 {
        self.data[slow * self.width + fast]
    }
}

/// A region of interest as nanoBragg's `-roi xmin xmax ymin ymax` gives it:
/// `[fast_min, fast_max, slow_min, slow_max]`, inclusive.
pub type Roi = [u32; 4];

/// Check `roi` against a `width` x `height` detector.
fn check_roi(roi: Roi, width: usize, height: usize) -> Result<(), String> {
    let [f0, f1, s0, s1] = roi.map(|v| v as usize);
    if f0 > f1 || s0 > s1 || f1 >= width || s1 >= height {
        return Err(format!(
            "region of interest {f0}..={f1} x {s0}..={s1} is not inside the \
             {width} x {height} detector"
        ));
    }
    Ok(())
}

/// A full-detector image holding `values` (row-major over the region,
/// fast innermost) inside `roi` and NaN ("no value", drawn grey) elsewhere,
/// for maps computed on a region only: a region is always drawn in its
/// full-detector context.
pub fn embed_roi(
    width: usize,
    height: usize,
    roi: Roi,
    values: &[f64],
) -> Result<Vec<f64>, String> {
    check_roi(roi, width, height)?;
    let [f0, f1, s0, s1] = roi.map(|v| v as usize);
    let rw = f1 - f0 + 1;
    if values.len() != rw * (s1 - s0 + 1) {
        return Err(format!(
            "{} values given for a {} x {} region",
            values.len(),
            rw,
            s1 - s0 + 1
        ));
    }
    let mut out = vec![f64::NAN; width * height];
    for (r, row) in values.chunks_exact(rw).enumerate() {
        let start = (s0 + r) * width + f0;
        out[start..start + rw].copy_from_slice(row);
    }
    Ok(out)
}

/// The text metadata of a PNG (`tEXt`, `zTXt` and `iTXt` chunks) as
/// (keyword, text) pairs in file order. The pictures here store their
/// numbers under keywords such as `value_min`, `value_max`, `scale`, `units`.
pub fn png_text(png_bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut dec = png::Decoder::new(png_bytes);
    dec.set_ignore_text_chunk(false);
    let mut reader = dec.read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    reader.finish().map_err(|e| e.to_string())?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for c in &info.compressed_latin1_text {
        out.push((c.keyword.clone(), c.get_text().map_err(|e| e.to_string())?));
    }
    for c in &info.utf8_text {
        out.push((c.keyword.clone(), c.get_text().map_err(|e| e.to_string())?));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Shared machinery: font, PNG encoding, colour ramps, ticks, number format.

/// The font family every picture uses; registered once from the embedded
/// DejaVu Sans.
const FONT: &str = "sans-serif";

/// Register the embedded font with plotters (once per process).
fn ensure_font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        use plotters::style::{register_font, FontStyle};
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans font did not load".to_string())?;
        register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            .map_err(|_| "the embedded DejaVu Sans Bold font did not load".to_string())
    })
    .clone()
}

/// A plotters error as text.
fn draw_err<E: std::fmt::Display>(e: E) -> String {
    format!("drawing failed: {e}")
}

/// Encode an 8-bit RGB buffer as PNG with text chunks (`tEXt` where the text
/// is Latin-1, `iTXt` otherwise). Deterministic: no time stamp is written.
fn encode_png(
    rgb: &[u8],
    width: u32,
    height: u32,
    text: &[(String, String)],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Default);
        for (k, v) in text {
            let latin1 = v.chars().all(|c| (c as u32) < 256);
            let r = if latin1 {
                enc.add_text_chunk(k.clone(), v.clone())
            } else {
                enc.add_itxt_chunk(k.clone(), v.clone())
            };
            r.map_err(|e| format!("PNG text {k:?}: {e}"))?;
        }
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(rgb).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Linear interpolation through evenly spaced anchor colours, `t` in [0, 1].
fn ramp(anchors: &[[u8; 3]], t: f64) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let n = anchors.len() - 1;
    let x = t * n as f64;
    let i = (x.floor() as usize).min(n - 1);
    let f = x - i as f64;
    let (a, b) = (anchors[i], anchors[i + 1]);
    std::array::from_fn(|c| (a[c] as f64 + (b[c] as f64 - a[c] as f64) * f).round() as u8)
}

/// Sequential map for intensities: matplotlib's "inferno" through 9 anchors
/// (black, purple, red, orange, pale yellow); brightness grows with `t`.
fn inferno(t: f64) -> [u8; 3] {
    const A: [[u8; 3]; 9] = [
        [0, 0, 4],
        [31, 12, 72],
        [85, 15, 109],
        [136, 34, 106],
        [186, 54, 85],
        [227, 89, 51],
        [249, 140, 10],
        [249, 201, 50],
        [252, 255, 164],
    ];
    ramp(&A, t)
}

/// Diverging map for signed values: blue (t = 0) through white (t = 1/2) to
/// red (t = 1); red minus blue grows with `t`.
fn blue_white_red(t: f64) -> [u8; 3] {
    const A: [[u8; 3]; 3] = [[33, 102, 172], [255, 255, 255], [178, 24, 43]];
    ramp(&A, t)
}

/// Colour of pixels without a value (NaN): mid grey.
const NO_VALUE: [u8; 3] = [128, 128, 128];

/// About `n` round numbers (1, 2 or 5 times a power of ten) inside [lo, hi].
fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|i| {
            let v = i as f64 * step;
            if v.abs() < step * 1e-9 {
                0.0
            } else {
                v
            }
        })
        .collect()
}

/// Ticks for a log axis over [lo, hi] (both positive): the powers of ten
/// inside, thinned to at most about 8; with fewer than three of them, 1, 2
/// and 5 times powers of ten; with fewer than two of those, round linear
/// values.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
    if b - a >= 2 {
        let every = ((b - a) / 8 + 1) as usize;
        return (a..=b).step_by(every).map(|k| 10f64.powi(k)).collect();
    }
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let v: Vec<f64> = (a..=b)
        .flat_map(|k| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(k)))
        .filter(|v| (lo..=hi).contains(v))
        .collect();
    if v.len() >= 2 {
        v
    } else {
        nice_ticks(lo, hi, 4)
            .into_iter()
            .filter(|v| *v > 0.0)
            .collect()
    }
}

/// A linear axis over `lo..hi` (either order) whose ticks are exactly the
/// given (position, label) pairs; plotters' own coordinate maps positions to
/// pixels. Lets log axes (positions log10 of values) and colour bars label
/// their ticks in value units.
#[derive(Clone)]
struct Ticked {
    inner: plotters::coord::types::RangedCoordf64,
    ticks: Vec<(f64, String)>,
}

impl Ticked {
    fn new(lo: f64, hi: f64, ticks: Vec<(f64, String)>) -> Self {
        Ticked {
            inner: (lo..hi).into(),
            ticks,
        }
    }
}

impl plotters::coord::ranged1d::Ranged for Ticked {
    type FormatOption = plotters::coord::ranged1d::NoDefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(v, limit)
    }
    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks.iter().map(|t| t.0).collect()
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

impl plotters::coord::ranged1d::ValueFormatter<f64> for Ticked {
    fn format_ext(&self, v: &f64) -> String {
        self.ticks
            .iter()
            .find(|(t, _)| (t - v).abs() <= 1e-9 * (1.0 + v.abs()))
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    }
}

/// A number for a tick label or caption: up to 4 significant digits,
/// exponent form outside [1e-3, 1e5).
fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{v:.3e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.')
        } else {
            m
        };
        format!("{m}e{e}")
    }
}

/// A number for the PNG metadata: the shortest text that reads back as the
/// same f64 (exponent form, e.g. `1.5e3`; Python's `float()` reads it).
fn fmt_exact(v: f64) -> String {
    format!("{v:e}")
}

/// The value below which a fraction `p` percent of `vals` lie (nearest
/// rank); `vals` must not be empty. Reorders `vals`.
fn percentile(vals: &mut [f64], p: f64) -> f64 {
    let n = vals.len();
    let rank = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1;
    let (_, v, _) = vals.select_nth_unstable_by(rank, f64::total_cmp);
    *v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        assert_eq!(
            nice_ticks(0.0, 1000.0, 5),
            vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        );
        assert_eq!(nice_ticks(-1.0, 1.0, 4), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(
            log_ticks(1e-3, 1e2),
            vec![1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
        );
        assert_eq!(log_ticks(0.9, 8.4), vec![1.0, 2.0, 5.0]);
        assert_eq!(log_ticks(0.9, 12.0), vec![1.0, 2.0, 5.0, 10.0]);
        assert_eq!(log_ticks(1.5, 4.5), vec![2.0, 3.0, 4.0]);
        assert_eq!(log_ticks(1e-20, 1e20).len(), 7, "every 6th decade");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(1234.5678), "1235");
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(-2.0), "-2");
        assert_eq!(fmt_num(3e-8), "3e-8");
        assert_eq!(fmt_num(1.23456e7), "1.235e7");
        assert_eq!(fmt_exact(0.1).parse::<f64>().unwrap(), 0.1);
    }

    #[test]
    fn ramps_run_monotone() {
        let lum = |c: [u8; 3]| 299 * c[0] as u32 + 587 * c[1] as u32 + 114 * c[2] as u32;
        let diff = |c: [u8; 3]| c[0] as i32 - c[2] as i32;
        for i in 0..100 {
            let (a, b) = (i as f64 / 100.0, (i + 1) as f64 / 100.0);
            assert!(lum(inferno(a)) <= lum(inferno(b)), "inferno at {a}");
            assert!(
                diff(blue_white_red(a)) <= diff(blue_white_red(b)),
                "bwr at {a}"
            );
        }
        assert_eq!(blue_white_red(0.5), [255, 255, 255]);
    }

    #[test]
    fn percentile_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(percentile(&mut v, 100.0), 100.0);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
    }

    #[test]
    fn roi_embeds_in_place() {
        let full = embed_roi(4, 3, [1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(full[0].is_nan() && full[4].is_nan());
        assert_eq!(&full[5..7], &[1.0, 2.0]);
        assert_eq!(&full[9..11], &[3.0, 4.0]);
        assert!(embed_roi(4, 3, [1, 4, 0, 0], &[0.0; 4]).is_err());
        assert!(embed_roi(4, 3, [0, 1, 0, 0], &[0.0; 3]).is_err());
    }
}
