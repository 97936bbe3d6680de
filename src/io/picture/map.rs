//! Image pictures: the whole detector with axes in pixels, an optional ROI
//! outline (and an enlarged view of a small ROI beside it), a colour bar with
//! tick labels, a title, caption lines stating the size, the display
//! sampling and the value range, and the same numbers as PNG text.

use super::{
    blue_white_red, check_roi, draw_err, encode_png, ensure_font, fmt_exact, fmt_num, inferno,
    log_ticks, nice_ticks, percentile, Frame, Roi, Ticked, FONT, NO_VALUE,
};
use plotters::coord::Shift;
use plotters::element::BitMapElement;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Largest side, in picture pixels, of the whole-detector panel: larger
/// detectors are max-pooled by an integer factor to fit, smaller ones are
/// enlarged by an integer factor.
pub const PANEL: usize = 768;
/// Largest side of the enlarged ROI panel.
const ZOOM_PANEL: usize = 320;
/// An ROI narrower or shorter than this many picture pixels in the detector
/// panel gets an enlarged view beside it.
const ZOOM_BELOW: f64 = 48.0;
/// Detector pixels shown around the ROI in the enlarged view (at least).
const ZOOM_PAD: usize = 8;
/// The enlarged view shows at least this many detector pixels a side.
const ZOOM_MIN: usize = 32;

const MARGIN: i32 = 12;
const Y_LABELS: i32 = 64;
const X_LABELS: i32 = 48;
const GAP: i32 = 24;
const BAR_W: i32 = 22;
const BAR_LABELS: i32 = 96;
const TITLE_PX: i32 = 20;
const CAPTION_PX: i32 = 14;
const LABEL_PX: i32 = 13;

/// Where the colour scale of a [`detector_png`] tops out; brighter pixels
/// saturate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Top {
    /// The largest finite value.
    Max,
    /// This percentile (0-100) of the finite values; the maximum is used if
    /// that percentile is not above the scale's bottom (a mostly-empty image).
    Percentile(f64),
}

/// How a [`detector_png`] maps values to colours ("inferno": black, purple,
/// orange, pale yellow).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Linear from the smallest finite value to the top.
    Linear,
    /// log10, from `decades` decades below the top to the top; smaller,
    /// zero and negative values get the bottom colour. Diffraction images
    /// (bright spots on a faint background) need this.
    Log {
        /// Decades shown below the top (> 0).
        decades: f64,
    },
}

/// Options of [`detector_png`]. `Default`: log10 scale over 5 decades below
/// the maximum, units "photons/pixel", no ROI.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorOptions {
    /// Title line at the top.
    pub title: String,
    /// What a value is, with its units (e.g. "intensity (photons/pixel)");
    /// the colour bar label adds the mapping.
    pub units: String,
    /// Value-to-colour mapping.
    pub scale: Scale,
    /// Top of the colour scale.
    pub top: Top,
    /// Region of interest to outline (nanoBragg's -roi order).
    pub roi: Option<Roi>,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions {
            title: "detector image".into(),
            units: "intensity (photons/pixel)".into(),
            scale: Scale::Log { decades: 5.0 },
            top: Top::Max,
            roi: None,
        }
    }
}

/// Half-range of the symmetric colour scale of a [`derivative_png`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SignedRange {
    /// The largest |value|: nothing saturates.
    MaxAbs,
    /// This percentile (0-100) of |value| over the non-zero finite pixels;
    /// larger magnitudes saturate. Falls back to the largest |value| if 0.
    Percentile(f64),
}

/// Options of [`derivative_png`]. `Default`: range ±max|value|, no ROI.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedOptions {
    /// Title line at the top.
    pub title: String,
    /// What a value is, with its units, e.g. "dI/d cell_a (photons/pixel per Å)".
    pub units: String,
    /// Half-range of the colour scale.
    pub range: SignedRange,
    /// Region of interest to outline (nanoBragg's -roi order).
    pub roi: Option<Roi>,
}

impl Default for SignedOptions {
    fn default() -> Self {
        SignedOptions {
            title: "derivative map".into(),
            units: "derivative".into(),
            range: SignedRange::MaxAbs,
            roi: None,
        }
    }
}

/// Options of [`difference_png`]. `Default`: colours saturate at ±1e-3 of the
/// reference's maximum, no ROI.
#[derive(Debug, Clone, PartialEq)]
pub struct DifferenceOptions {
    /// Title line at the top.
    pub title: String,
    /// The colour scale runs over ±`full_scale` in units of max|reference|
    /// (so 1e-3 = 0.1 % of the reference's peak is full red or blue, and a
    /// difference of 3e-8 stays white).
    pub full_scale: f64,
    /// Region of interest to outline (nanoBragg's -roi order).
    pub roi: Option<Roi>,
}

impl Default for DifferenceOptions {
    fn default() -> Self {
        DifferenceOptions {
            title: "difference map".into(),
            full_scale: 1e-3,
            roi: None,
        }
    }
}

/// A detector image as PNG: whole detector (pixel (0, 0) at the top left,
/// fast pixel to the right, slow pixel down), axes "fast pixel" / "slow
/// pixel", a title, a colour bar whose label states the mapping, captions
/// with the size, display sampling (detectors larger than [`PANEL`] pixels
/// are max-pooled so peaks stay visible) and value range; the ROI outlined
/// in cyan (a small ROI also enlarged beside the detector). PNG text:
/// `Title`, `Description`, `units`, `scale`, `value_min`, `value_max`,
/// `colour_min`, `colour_max`, `fast_pixels`, `slow_pixels`, `display`,
/// `image_area`, `colour_bar_area` (`x y width height` in picture pixels),
/// `roi`, `no_value_pixels`.
pub fn detector_png(frame: Frame, opts: &DetectorOptions) -> Result<Vec<u8>, String> {
    let (vmin, vmax, _) = stats(frame.data)?;
    let mut notes = Vec::new();
    let top = match opts.top {
        Top::Max => vmax,
        Top::Percentile(p) => {
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("percentile {p} is not within 0..100"));
            }
            let mut v: Vec<f64> = frame
                .data
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            percentile(&mut v, p)
        }
    };
    let top_name = match opts.top {
        Top::Max => "max".to_string(),
        Top::Percentile(p) => format!("percentile {p}"),
    };
    let (lo, hi, log, scale, mapping) = match opts.scale {
        Scale::Linear => {
            let mut hi = top;
            if hi <= vmin {
                hi = vmax;
            }
            if hi <= vmin {
                hi = vmin + 1.0;
                notes.push("all values equal".to_string());
            }
            (
                vmin,
                hi,
                false,
                "linear",
                format!("linear from min to {top_name}"),
            )
        }
        Scale::Log { decades } => {
            if !(decades.is_finite() && decades > 0.0) {
                return Err(format!("log scale needs decades > 0, not {decades}"));
            }
            let mut hi = top;
            if hi <= 0.0 || hi <= vmax * 10f64.powf(-decades) {
                hi = vmax;
            }
            if hi <= 0.0 {
                hi = 1.0;
                notes.push("no positive value".to_string());
            }
            let d = fmt_num(decades);
            (
                hi * 10f64.powf(-decades),
                hi,
                true,
                "log10",
                format!("log10, {d} decades below {top_name}"),
            )
        }
    };
    if hi < vmax {
        notes.push(format!("values above {} saturate", fmt_num(hi)));
    }
    let ticks = if log {
        log_ticks(lo, hi)
    } else {
        nice_ticks(lo, hi, 5)
    };
    let m = Mapping {
        lo,
        hi,
        log,
        diverging: false,
        ticks,
        bar_label: format!("{}, {mapping}", opts.units),
        outline: [0, 255, 255],
    };
    let mut text = vec![
        ("units".to_string(), opts.units.clone()),
        ("scale".to_string(), format!("{scale}: {mapping}")),
        ("value_min".to_string(), fmt_exact(vmin)),
        ("value_max".to_string(), fmt_exact(vmax)),
    ];
    text.extend(m.range_text());
    let values = format!(
        "values {} .. {} {}; colour {} .. {} ({mapping}){}",
        fmt_num(vmin),
        fmt_num(vmax),
        opts.units,
        fmt_num(lo),
        fmt_num(hi),
        notes_text(&notes),
    );
    render(
        frame,
        &opts.title,
        vec![values],
        &m,
        Pool::Max,
        opts.roi,
        text,
    )
}

/// A signed map (a derivative image) as PNG: as [`detector_png`], on a
/// symmetric blue-white-red scale centred on zero over ±`range` (stated in
/// the colour bar label, which carries `opts.units`); pooling keeps the
/// largest |value| of each block; the ROI is outlined in green. Non-finite
/// pixels (see [`super::embed_roi`]) are grey. PNG text as
/// [`detector_png`], `scale` naming the range.
pub fn derivative_png(frame: Frame, opts: &SignedOptions) -> Result<Vec<u8>, String> {
    let (vmin, vmax, maxabs) = stats(frame.data)?;
    let mut notes = Vec::new();
    let (mut half, how) = match opts.range {
        SignedRange::MaxAbs => (maxabs, "max |value|".to_string()),
        SignedRange::Percentile(p) => {
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("percentile {p} is not within 0..100"));
            }
            let mut v: Vec<f64> = frame
                .data
                .iter()
                .filter(|x| x.is_finite() && **x != 0.0)
                .map(|x| x.abs())
                .collect();
            let q = if v.is_empty() {
                0.0
            } else {
                percentile(&mut v, p)
            };
            if q > 0.0 {
                (q, format!("percentile {p} of |value| over non-zero pixels"))
            } else {
                (maxabs, "max |value|".to_string())
            }
        }
    };
    if half == 0.0 {
        half = 1.0;
        notes.push("all values zero".to_string());
    } else if half < maxabs {
        notes.push(format!("|values| above {} saturate", fmt_num(half)));
    }
    signed_picture(
        frame,
        &opts.title,
        &opts.units,
        half,
        &how,
        opts.roi,
        (vmin, vmax),
        notes,
        vec![],
    )
}

/// A difference map as PNG: `(a - reference) / max|reference|` on a
/// symmetric blue-white-red scale over ±`opts.full_scale`, so differences
/// far below the reference's peak stay white; the colour bar is labelled
/// "(a - b) / max|reference|" with that scale. Captions and PNG text add
/// `reference_max_abs` and `max_relative_difference`.
pub fn difference_png(
    a: Frame,
    reference: Frame,
    opts: &DifferenceOptions,
) -> Result<Vec<u8>, String> {
    if (a.width, a.height) != (reference.width, reference.height) {
        return Err(format!(
            "images differ in size: {} x {} and reference {} x {}",
            a.width, a.height, reference.width, reference.height
        ));
    }
    if !(opts.full_scale.is_finite() && opts.full_scale > 0.0) {
        return Err(format!("full scale must be > 0, not {}", opts.full_scale));
    }
    let refmax = reference
        .data
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    let mut notes = Vec::new();
    let norm = if refmax > 0.0 {
        refmax
    } else {
        notes.push("reference is all zero: a - b shown unscaled".to_string());
        1.0
    };
    let rel: Vec<f64> = a
        .data
        .iter()
        .zip(reference.data)
        .map(|(x, y)| (x - y) / norm)
        .collect();
    let frame = Frame::new(&rel, a.width, a.height)?;
    let (vmin, vmax, maxabs) = stats(&rel)?;
    if maxabs > opts.full_scale {
        notes.push(format!(
            "|values| above {} saturate",
            fmt_num(opts.full_scale)
        ));
    }
    let extra = vec![
        ("reference_max_abs".to_string(), fmt_exact(refmax)),
        ("max_relative_difference".to_string(), fmt_exact(maxabs)),
    ];
    notes.insert(
        0,
        format!(
            "max|reference| = {}, max |a - b| / max|reference| = {}",
            fmt_num(refmax),
            fmt_num(maxabs)
        ),
    );
    signed_picture(
        frame,
        &opts.title,
        "(a - b) / max|reference|",
        opts.full_scale,
        "fixed scale",
        opts.roi,
        (vmin, vmax),
        notes,
        extra,
    )
}

#[allow(clippy::too_many_arguments)]
fn signed_picture(
    frame: Frame,
    title: &str,
    units: &str,
    half: f64,
    how: &str,
    roi: Option<Roi>,
    (vmin, vmax): (f64, f64),
    notes: Vec<String>,
    extra: Vec<(String, String)>,
) -> Result<Vec<u8>, String> {
    let h = fmt_num(half);
    let mapping = format!("symmetric linear, ±{h} ({how})");
    let m = Mapping {
        lo: -half,
        hi: half,
        log: false,
        diverging: true,
        ticks: nice_ticks(-half, half, 4),
        bar_label: format!("{units}, ±{h} ({how})"),
        outline: [0, 160, 0],
    };
    let mut text = vec![
        ("units".to_string(), units.to_string()),
        ("scale".to_string(), mapping.clone()),
        ("value_min".to_string(), fmt_exact(vmin)),
        ("value_max".to_string(), fmt_exact(vmax)),
    ];
    text.extend(m.range_text());
    text.extend(extra);
    let values = format!(
        "values {} .. {} {units}; colour {mapping}, blue < 0 < red{}",
        fmt_num(vmin),
        fmt_num(vmax),
        notes_text(&notes),
    );
    render(frame, title, vec![values], &m, Pool::MaxAbs, roi, text)
}

fn notes_text(notes: &[String]) -> String {
    notes.iter().map(|n| format!("; {n}")).collect()
}

/// (min, max, max |value|) over the finite values; an error if none.
fn stats(data: &[f64]) -> Result<(f64, f64, f64), String> {
    let mut it = data.iter().copied().filter(|x| x.is_finite());
    let first = it.next().ok_or("nothing to draw: no finite value")?;
    let (lo, hi) = it.fold((first, first), |(l, h), x| (l.min(x), h.max(x)));
    Ok((lo, hi, lo.abs().max(hi.abs())))
}

/// Value-to-colour mapping and colour bar of one picture.
struct Mapping {
    lo: f64,
    hi: f64,
    log: bool,
    diverging: bool,
    /// Tick values on the colour bar, inside [lo, hi].
    ticks: Vec<f64>,
    bar_label: String,
    /// Colour of the ROI outline.
    outline: [u8; 3],
}

impl Mapping {
    /// Position of a finite value on the colour bar, 0 (bottom) to 1 (top).
    fn t(&self, v: f64) -> f64 {
        let t = if self.log {
            if v <= self.lo {
                0.0
            } else {
                (v / self.lo).log10() / (self.hi / self.lo).log10()
            }
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        t.clamp(0.0, 1.0)
    }

    fn colour_at(&self, t: f64) -> [u8; 3] {
        if self.diverging {
            blue_white_red(t)
        } else {
            inferno(t)
        }
    }

    fn colour(&self, v: f64) -> [u8; 3] {
        if v.is_finite() {
            self.colour_at(self.t(v))
        } else {
            NO_VALUE
        }
    }

    fn range_text(&self) -> Vec<(String, String)> {
        vec![
            ("colour_min".to_string(), fmt_exact(self.lo)),
            ("colour_max".to_string(), fmt_exact(self.hi)),
        ]
    }
}

/// How a block of detector pixels becomes one picture pixel.
#[derive(Clone, Copy, PartialEq)]
enum Pool {
    /// The largest value (intensities: peaks stay visible).
    Max,
    /// The value of largest magnitude, sign kept (signed maps).
    MaxAbs,
}

/// A rectangle of the detector drawn at an integer sampling: `pool` x
/// `pool` detector pixels per picture pixel, or `zoom` x `zoom` picture
/// pixels per detector pixel.
#[derive(Debug, Clone, Copy)]
struct Panel {
    f0: usize,
    s0: usize,
    w: usize,
    h: usize,
    pool: usize,
    zoom: usize,
    dw: usize,
    dh: usize,
}

impl Panel {
    /// Fit `w` x `h` detector pixels from (f0, s0) into `side` x `side`.
    fn fit(f0: usize, s0: usize, w: usize, h: usize, side: usize) -> Panel {
        let n = w.max(h);
        let (pool, zoom) = if n > side {
            (n.div_ceil(side), 1)
        } else {
            (1, side / n)
        };
        Panel {
            f0,
            s0,
            w,
            h,
            pool,
            zoom,
            dw: w.div_ceil(pool) * zoom,
            dh: h.div_ceil(pool) * zoom,
        }
    }

    /// Picture pixels per detector pixel.
    fn scale(&self) -> f64 {
        self.zoom as f64 / self.pool as f64
    }

    fn describe(&self, pool: Pool) -> String {
        let how = match pool {
            Pool::Max => "max",
            Pool::MaxAbs => "max-|value|",
        };
        if self.pool > 1 {
            format!("shown {how} pooled {0} x {0}", self.pool)
        } else if self.zoom > 1 {
            format!("shown enlarged {0} x {0}", self.zoom)
        } else {
            "shown 1:1".to_string()
        }
    }

    /// The RGB pixels of this panel.
    fn rgb(&self, frame: &Frame, m: &Mapping, pool: Pool) -> Vec<u8> {
        let (bw, bh) = (self.w.div_ceil(self.pool), self.h.div_ceil(self.pool));
        let mut block = Vec::with_capacity(bw * bh);
        for j in 0..bh {
            for i in 0..bw {
                let fa = self.f0 + i * self.pool;
                let fb = (fa + self.pool).min(self.f0 + self.w);
                let sa = self.s0 + j * self.pool;
                let sb = (sa + self.pool).min(self.s0 + self.h);
                let mut best = f64::NAN;
                for s in sa..sb {
                    for f in fa..fb {
                        let v = frame.at(f, s);
                        let better = match pool {
                            Pool::Max => v > best,
                            Pool::MaxAbs => v.abs() > best.abs(),
                        };
                        if v.is_finite() && (best.is_nan() || better) {
                            best = v;
                        }
                    }
                }
                block.push(m.colour(best));
            }
        }
        let mut out = Vec::with_capacity(self.dw * self.dh * 3);
        for y in 0..self.dh {
            for x in 0..self.dw {
                out.extend_from_slice(&block[(y / self.zoom) * bw + x / self.zoom]);
            }
        }
        out
    }

    /// Picture-pixel box `[x0, x1) x [y0, y1)` (relative to the panel) of
    /// the detector pixels of `roi`, widened to whole picture pixels.
    fn roi_box(&self, roi: Roi) -> (i32, i32, i32, i32) {
        let sc = self.scale();
        let lo = |v: u32, o: usize| ((v as f64 - o as f64) * sc).floor() as i32;
        let hi = |v: u32, o: usize| ((v as f64 + 1.0 - o as f64) * sc).ceil() as i32;
        (
            lo(roi[0], self.f0),
            hi(roi[1], self.f0),
            lo(roi[2], self.s0),
            hi(roi[3], self.s0),
        )
    }
}

/// The region shown enlarged around a small ROI, if the ROI is small in
/// the detector panel.
fn zoom_panel(frame: &Frame, main: &Panel, roi: Roi) -> Option<Panel> {
    let (rw, rh) = (
        (roi[1] - roi[0] + 1) as usize,
        (roi[3] - roi[2] + 1) as usize,
    );
    let sc = main.scale();
    if rw as f64 * sc >= ZOOM_BELOW && rh as f64 * sc >= ZOOM_BELOW {
        return None;
    }
    let around = |lo: u32, n: usize, full: usize| {
        let side = (n + 2 * ZOOM_PAD).max(ZOOM_MIN).min(full);
        let start = (lo as usize + n / 2)
            .saturating_sub(side / 2)
            .min(full - side);
        (start, side)
    };
    let (f0, w) = around(roi[0], rw, frame.width);
    let (s0, h) = around(roi[2], rh, frame.height);
    if w == frame.width && h == frame.height {
        return None;
    }
    Some(Panel::fit(f0, s0, w, h, ZOOM_PANEL))
}

fn font(px: i32) -> FontDesc<'static> {
    (FONT, px as f64).into_font()
}

fn title_font() -> FontDesc<'static> {
    (FONT, TITLE_PX as f64, FontStyle::Bold).into_font()
}

fn text_width(s: &str, f: FontDesc) -> Result<i32, String> {
    let (w, _) = f.box_size(s).map_err(draw_err)?;
    Ok(w as i32)
}

fn area_text(x: i32, y: i32, w: usize, h: usize) -> String {
    format!("{x} {y} {w} {h}")
}

/// Draw and encode one picture.
fn render(
    frame: Frame,
    title: &str,
    mut captions: Vec<String>,
    m: &Mapping,
    pool: Pool,
    roi: Option<Roi>,
    mut text: Vec<(String, String)>,
) -> Result<Vec<u8>, String> {
    ensure_font()?;
    if let Some(r) = roi {
        check_roi(r, frame.width, frame.height)?;
    }
    let main = Panel::fit(0, 0, frame.width, frame.height, PANEL);
    let zoom = roi.and_then(|r| zoom_panel(&frame, &main, r));
    let no_value = frame.data.iter().filter(|v| !v.is_finite()).count();

    let mut first = format!(
        "{} x {} pixels (fast x slow), {}; pixel (0, 0) at top left",
        frame.width,
        frame.height,
        main.describe(pool)
    );
    if let Some(r) = roi {
        first.push_str(&format!(
            "; ROI fast {}..{}, slow {}..{} outlined",
            r[0], r[1], r[2], r[3]
        ));
    }
    if let Some(z) = &zoom {
        first.push_str(&format!(
            "; right: fast {}..{}, slow {}..{} {}",
            z.f0,
            z.f0 + z.w - 1,
            z.s0,
            z.s0 + z.h - 1,
            z.describe(pool)
        ));
    }
    captions.insert(0, first);
    if no_value > 0 {
        captions.push(format!("grey: no value ({no_value} pixels)"));
    }

    // Layout, in picture pixels.
    let top = MARGIN + TITLE_PX + 10 + captions.len() as i32 * (CAPTION_PX + 6) + 8;
    let main_x = MARGIN + Y_LABELS;
    let mut x = main_x + main.dw as i32 + GAP;
    let zoom_x = x + Y_LABELS;
    if let Some(z) = &zoom {
        x = zoom_x + z.dw as i32 + GAP;
    }
    let bar_x = x;
    let panels_h = main.dh.max(zoom.map_or(0, |z| z.dh)) as i32;
    let bar_h = panels_h.max(200);
    let mut width = bar_x + BAR_W + BAR_LABELS + MARGIN;
    width = width.max(MARGIN * 2 + text_width(title, title_font())?);
    for c in &captions {
        width = width.max(MARGIN * 2 + text_width(c, font(CAPTION_PX))?);
    }
    let height = top + bar_h.max(panels_h + X_LABELS) + MARGIN;
    let (width, height) = (width as u32, height as u32);

    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        root.draw(&Text::new(
            title.to_string(),
            (MARGIN, MARGIN),
            title_font().color(&BLACK),
        ))
        .map_err(draw_err)?;
        for (i, c) in captions.iter().enumerate() {
            let y = MARGIN + TITLE_PX + 10 + i as i32 * (CAPTION_PX + 6);
            root.draw(&Text::new(
                c.clone(),
                (MARGIN, y),
                font(CAPTION_PX).color(&BLACK),
            ))
            .map_err(draw_err)?;
        }
        draw_panel(&root, &frame, &main, (main_x, top), m, pool, roi)?;
        if let Some(z) = &zoom {
            draw_panel(&root, &frame, z, (zoom_x, top), m, pool, roi)?;
        }
        draw_bar(&root, m, (bar_x, top), bar_h)?;
        root.present().map_err(draw_err)?;
    }

    let mut meta = vec![
        ("Title".to_string(), title.to_string()),
        ("Description".to_string(), captions.join("\n")),
        ("Software".to_string(), "braggrun".to_string()),
    ];
    meta.append(&mut text);
    meta.extend([
        ("fast_pixels".to_string(), frame.width.to_string()),
        ("slow_pixels".to_string(), frame.height.to_string()),
        ("display".to_string(), main.describe(pool)),
        (
            "orientation".to_string(),
            "pixel (0, 0) at top left, fast pixel to the right, slow pixel down".to_string(),
        ),
        (
            "image_area".to_string(),
            area_text(main_x, top, main.dw, main.dh),
        ),
        (
            "colour_bar_area".to_string(),
            area_text(bar_x, top, BAR_W as usize, bar_h as usize),
        ),
        ("no_value_pixels".to_string(), no_value.to_string()),
    ]);
    if let Some(r) = roi {
        meta.push((
            "roi".to_string(),
            format!("{} {} {} {}", r[0], r[1], r[2], r[3]),
        ));
    }
    if let Some(z) = &zoom {
        meta.push(("zoom_area".to_string(), area_text(zoom_x, top, z.dw, z.dh)));
        meta.push((
            "zoom_region".to_string(),
            format!("{} {} {} {}", z.f0, z.f0 + z.w - 1, z.s0, z.s0 + z.h - 1),
        ));
    }
    encode_png(&rgb, width, height, &meta)
}

/// One detector panel with its axes at picture position `at` (top left of
/// the image itself), and the ROI outline.
fn draw_panel(
    root: &DrawingArea<BitMapBackend, Shift>,
    frame: &Frame,
    p: &Panel,
    at: (i32, i32),
    m: &Mapping,
    pool: Pool,
    roi: Option<Roi>,
) -> Result<(), String> {
    let area = root.clone().shrink(
        (at.0 - Y_LABELS, at.1),
        (p.dw as i32 + Y_LABELS, p.dh as i32 + X_LABELS),
    );
    let mut chart = ChartBuilder::on(&area)
        .margin(0)
        .x_label_area_size(X_LABELS)
        .y_label_area_size(Y_LABELS)
        .build_cartesian_2d(
            p.f0 as f64..(p.f0 + p.w) as f64,
            (p.s0 + p.h) as f64..p.s0 as f64,
        )
        .map_err(draw_err)?;
    let label = |v: &f64| fmt_num(*v);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&label)
        .y_label_formatter(&label)
        .label_style(font(LABEL_PX))
        .axis_desc_style(font(CAPTION_PX))
        .x_desc("fast pixel")
        .y_desc("slow pixel")
        .draw()
        .map_err(draw_err)?;
    let img =
        BitMapElement::with_owned_buffer(at, (p.dw as u32, p.dh as u32), p.rgb(frame, m, pool))
            .ok_or("internal error: panel buffer size")?;
    root.draw(&img).map_err(draw_err)?;
    frame_box(root, at, (p.dw as i32, p.dh as i32))?;
    if let Some(r) = roi {
        let (x0, x1, y0, y1) = p.roi_box(r);
        let (x0, x1, y0, y1) = (at.0 + x0, at.0 + x1, at.1 + y0, at.1 + y1);
        let c = RGBColor(m.outline[0], m.outline[1], m.outline[2]).filled();
        // Two picture pixels wide, just outside the ROI's own pixels (a
        // filled rectangle covers [a, b) in both directions).
        for (a, b) in [
            ((x0 - 2, y0 - 2), (x1 + 2, y0)),
            ((x0 - 2, y1), (x1 + 2, y1 + 2)),
            ((x0 - 2, y0 - 2), (x0, y1 + 2)),
            ((x1, y0 - 2), (x1 + 2, y1 + 2)),
        ] {
            root.draw(&Rectangle::new([a, b], c)).map_err(draw_err)?;
        }
    }
    Ok(())
}

/// A one-pixel dark frame just outside the `size` box at `at`.
fn frame_box(
    root: &DrawingArea<BitMapBackend, Shift>,
    (x, y): (i32, i32),
    (w, h): (i32, i32),
) -> Result<(), String> {
    let c = RGBColor(64, 64, 64).filled();
    for (a, b) in [
        ((x - 1, y - 1), (x + w + 1, y)),
        ((x - 1, y + h), (x + w + 1, y + h + 1)),
        ((x - 1, y - 1), (x, y + h + 1)),
        ((x + w, y - 1), (x + w + 1, y + h + 1)),
    ] {
        root.draw(&Rectangle::new([a, b], c)).map_err(draw_err)?;
    }
    Ok(())
}

/// The colour bar: a ramp `BAR_W` wide and `h` tall at `at`, tick labels and
/// the mapping's label on its right.
fn draw_bar(
    root: &DrawingArea<BitMapBackend, Shift>,
    m: &Mapping,
    at: (i32, i32),
    h: i32,
) -> Result<(), String> {
    let area = root.clone().shrink(at, (BAR_W + BAR_LABELS, h));
    let ticks: Vec<(f64, String)> = m.ticks.iter().map(|v| (m.t(*v), fmt_num(*v))).collect();
    let mut chart = ChartBuilder::on(&area)
        .margin(0)
        .right_y_label_area_size(BAR_LABELS)
        .build_cartesian_2d(0.0..1.0, Ticked::new(0.0, 1.0, ticks))
        .map_err(draw_err)?;
    let mut bar = Vec::with_capacity((BAR_W * h * 3) as usize);
    for r in 0..h {
        let c = m.colour_at(1.0 - (r as f64 + 0.5) / h as f64);
        for _ in 0..BAR_W {
            bar.extend_from_slice(&c);
        }
    }
    let img = BitMapElement::with_owned_buffer(at, (BAR_W as u32, h as u32), bar)
        .ok_or("internal error: colour bar buffer size")?;
    root.draw(&img).map_err(draw_err)?;
    frame_box(root, at, (BAR_W, h))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .set_tick_mark_size(LabelAreaPosition::Right, 6)
        .label_style(font(LABEL_PX))
        .axis_desc_style(font(CAPTION_PX))
        .y_desc(m.bar_label.clone())
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_fit_by_integer_factors() {
        let p = Panel::fit(0, 0, 1024, 1024, PANEL);
        assert_eq!((p.pool, p.zoom, p.dw, p.dh), (2, 1, 512, 512));
        let p = Panel::fit(0, 0, 4096, 3000, PANEL);
        assert_eq!((p.pool, p.dw, p.dh), (6, 683, 500));
        let p = Panel::fit(0, 0, 100, 50, PANEL);
        assert_eq!((p.pool, p.zoom, p.dw, p.dh), (1, 7, 700, 350));
    }

    #[test]
    fn pooling_keeps_peaks_of_either_sign() {
        let mut d = vec![0.0; 16];
        d[5] = -3.0;
        d[6] = 2.0;
        let f = Frame::new(&d, 4, 4).unwrap();
        let p = Panel::fit(0, 0, 4, 4, 2);
        let m = Mapping {
            lo: -3.0,
            hi: 3.0,
            log: false,
            diverging: true,
            ticks: vec![],
            bar_label: String::new(),
            outline: [0; 3],
        };
        let rgb = p.rgb(&f, &m, Pool::MaxAbs);
        // Blocks: (0,0) holds -3 (full blue), (1,0) holds 2 (red side).
        assert_eq!(&rgb[0..3], &blue_white_red(0.0));
        assert_eq!(&rgb[3..6], &blue_white_red(m.t(2.0)));
        assert_eq!(&rgb[6..9], &[255, 255, 255]);
    }

    #[test]
    fn roi_box_covers_partial_blocks() {
        let p = Panel::fit(0, 0, 1024, 1024, PANEL);
        assert_eq!(p.roi_box([701, 702, 10, 10]), (350, 352, 5, 6));
    }

    #[test]
    fn log_mapping_floors_zero_and_tops_at_one() {
        let m = Mapping {
            lo: 1e-3,
            hi: 1e2,
            log: true,
            diverging: false,
            ticks: vec![],
            bar_label: String::new(),
            outline: [0; 3],
        };
        assert_eq!(m.t(0.0), 0.0);
        assert_eq!(m.t(1e2), 1.0);
        assert!((m.t(1.0) - 0.6).abs() < 1e-12);
        assert_eq!(m.colour(f64::NAN), NO_VALUE);
    }
}
