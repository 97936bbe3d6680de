//! A small, dependency-free line-plot rasterizer writing PNG (via the `png`
//! crate): axes, ticks with labels, points joined by lines, a legend, axis
//! labels. Text uses a built-in 3x5 bitmap font (digits, letters shown as
//! capitals, a few signs), so no system fonts are needed. The output is
//! deterministic: the same data give the same bytes.
use super::IoError;
use std::path::Path;

/// Size of the plots [`line_plot_png`] writes.
pub const PLOT_WIDTH: usize = 640;
pub const PLOT_HEIGHT: usize = 400;

const LEFT: usize = 78;
const RIGHT: usize = 20;
const TOP: usize = 28;
const BOTTOM: usize = 52;
const FONT_SCALE: usize = 2;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const PALETTE: [Rgb; 8] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

/// 3x5 glyphs: five rows of three bits (MSB left), top row first.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '_' => [0, 0, 0, 0, 7],
        '(' | '[' => [1, 2, 2, 2, 1],
        ')' | ']' => [4, 2, 2, 2, 4],
        '/' => [1, 1, 2, 4, 4],
        '=' => [0, 7, 0, 7, 0],
        ':' => [0, 2, 0, 2, 0],
        '*' => [0, 5, 2, 5, 0],
        '%' => [5, 1, 2, 4, 5],
        ' ' => [0; 5],
        _ => [7, 7, 7, 7, 7],
    }
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Canvas {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }
    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = 3 * (y as usize * self.w + x as usize);
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.set(x, y, c);
            }
        }
    }
    /// Bresenham, 2 pixels wide.
    fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            self.set(x + 1, y, c);
            self.set(x, y + 1, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
    fn text_width(s: &str) -> i64 {
        (s.chars().count() * 4 * FONT_SCALE) as i64
    }
    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb) {
        let k = FONT_SCALE as i64;
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            let ox = x + i as i64 * 4 * k;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        self.fill(
                            ox + col * k,
                            y + row as i64 * k,
                            ox + col * k + k - 1,
                            y + row as i64 * k + k - 1,
                            c,
                        );
                    }
                }
            }
        }
    }
}

/// About five "nice" tick values (1, 2, 5 times a power of ten) in [lo, hi].
fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 20 {
        // avoid "-0" and 1e-17 noise
        out.push(if (t / step).abs() < 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn tick_label(v: f64, log: bool) -> String {
    if log {
        super::c_fmt_g_prec(10f64.powf(v), 3)
    } else {
        super::c_fmt_g_prec(v, 4)
    }
}

/// Data range of one axis (transformed), padded; None without points.
fn range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    if hi == lo {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return Some((lo - d, hi + d));
    }
    let pad = (hi - lo) * 0.05;
    Some((lo - pad, hi + pad))
}

/// The PNG bytes of a line plot (see [`line_plot_png`]).
pub fn line_plot_bytes(
    series: &[(String, Vec<(f64, f64)>)],
    x_label: &str,
    y_label: &str,
    log_x: bool,
    log_y: bool,
) -> Result<Vec<u8>, String> {
    let tx = |x: f64| if log_x { x.log10() } else { x };
    let ty = |y: f64| if log_y { y.log10() } else { y };
    let usable = |(x, y): (f64, f64)| {
        x.is_finite() && y.is_finite() && (!log_x || x > 0.0) && (!log_y || y > 0.0)
    };
    let pts: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, v)| {
            v.iter()
                .copied()
                .filter(|p| usable(*p))
                .map(|(x, y)| (tx(x), ty(y)))
                .collect()
        })
        .collect();
    let (x0, x1) = range(pts.iter().flatten().map(|p| p.0))
        .ok_or("no finite points to plot (log axes need positive values)")?;
    let (y0, y1) = range(pts.iter().flatten().map(|p| p.1)).ok_or("no finite points to plot")?;

    let (w, h) = (PLOT_WIDTH, PLOT_HEIGHT);
    let mut c = Canvas::new(w, h);
    let (pl, pr, pt, pb) = (
        LEFT as i64,
        (w - RIGHT) as i64,
        TOP as i64,
        (h - BOTTOM) as i64,
    );
    let px = |x: f64| pl + ((x - x0) / (x1 - x0) * (pr - pl) as f64).round() as i64;
    let py = |y: f64| pb - ((y - y0) / (y1 - y0) * (pb - pt) as f64).round() as i64;
    let fh = (5 * FONT_SCALE) as i64;

    // Grid, ticks and tick labels.
    for t in nice_ticks(x0, x1) {
        let x = px(t);
        c.line(x, pt, x, pb, GRID);
        c.fill(x, pb, x, pb + 5, BLACK);
        let l = tick_label(t, log_x);
        c.text(x - Canvas::text_width(&l) / 2, pb + 9, &l, BLACK);
    }
    for t in nice_ticks(y0, y1) {
        let y = py(t);
        c.line(pl, y, pr, y, GRID);
        c.fill(pl - 5, y, pl, y, BLACK);
        let l = tick_label(t, log_y);
        c.text(pl - 9 - Canvas::text_width(&l), y - fh / 2, &l, BLACK);
    }
    // Axes (a box).
    c.fill(pl, pt, pr, pt, BLACK);
    c.fill(pl, pb, pr, pb, BLACK);
    c.fill(pl, pt, pl, pb, BLACK);
    c.fill(pr, pt, pr, pb, BLACK);
    // Labels.
    let xl = format!("{x_label}{}", if log_x { " (log)" } else { "" });
    c.text(
        (pl + pr) / 2 - Canvas::text_width(&xl) / 2,
        h as i64 - fh - 8,
        &xl,
        BLACK,
    );
    let yl = format!("{y_label}{}", if log_y { " (log)" } else { "" });
    c.text(8, 8, &yl, BLACK);

    // Series: lines, then points.
    for (i, p) in pts.iter().enumerate() {
        let col = PALETTE[i % PALETTE.len()];
        for pair in p.windows(2) {
            c.line(
                px(pair[0].0),
                py(pair[0].1),
                px(pair[1].0),
                py(pair[1].1),
                col,
            );
        }
        for &(x, y) in p {
            let (a, b) = (px(x), py(y));
            c.fill(a - 3, b - 3, a + 3, b + 3, col);
        }
    }
    // Legend (top right, inside the box).
    if series.len() > 1 || series.iter().any(|(n, _)| !n.is_empty()) {
        let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).take(12).collect();
        let lw = names
            .iter()
            .map(|n| Canvas::text_width(n))
            .max()
            .unwrap_or(0)
            + 30;
        let (lx, ly) = (pr - lw - 8, pt + 8);
        c.fill(
            lx - 4,
            ly - 4,
            pr - 6,
            ly + names.len() as i64 * (fh + 6),
            WHITE,
        );
        for (i, n) in names.iter().enumerate() {
            let y = ly + i as i64 * (fh + 6);
            let col = PALETTE[i % PALETTE.len()];
            c.fill(lx, y + 2, lx + 16, y + fh - 2, col);
            c.text(lx + 22, y, n, BLACK);
        }
    }

    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| e.to_string())?;
        wr.write_image_data(&c.px).map_err(|e| e.to_string())?;
        wr.finish().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// Write a line plot of `series` (name, points) as a [`PLOT_WIDTH`] x
/// [`PLOT_HEIGHT`] RGB PNG: axes with ticks and labels, each series' points
/// joined in the order given, a legend when there are names. Non-finite
/// points (and, on a log axis, non-positive ones) are left out; with no point
/// left the plot is an error.
pub fn line_plot_png(
    path: &Path,
    series: &[(String, Vec<(f64, f64)>)],
    x_label: &str,
    y_label: &str,
    log_x: bool,
    log_y: bool,
) -> Result<(), IoError> {
    let bytes = line_plot_bytes(series, x_label, y_label, log_x, log_y)
        .map_err(|m| IoError::file(path, m))?;
    super::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_decodes_and_is_deterministic() {
        let s = vec![
            ("a".to_string(), vec![(1.0, 2.0), (2.0, 4.0), (4.0, 8.0)]),
            (
                "b".to_string(),
                vec![(1.0, 1.0), (2.0, f64::NAN), (4.0, 3.0)],
            ),
        ];
        let a = line_plot_bytes(&s, "threads", "seconds", true, true).unwrap();
        let b = line_plot_bytes(&s, "threads", "seconds", true, true).unwrap();
        assert_eq!(a, b);
        let mut r = png::Decoder::new(std::io::Cursor::new(a))
            .read_info()
            .unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width, info.height),
            (PLOT_WIDTH as u32, PLOT_HEIGHT as u32)
        );
        assert!(line_plot_bytes(&[], "x", "y", false, false).is_err());
        let one = vec![(String::new(), vec![(0.0, 5.0)])];
        assert!(line_plot_bytes(&one, "x", "y", false, false).is_ok());
        assert!(line_plot_bytes(&one, "x", "y", true, false).is_err());
    }

    #[test]
    fn ticks_are_nice() {
        assert_eq!(nice_ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_ticks(-1.0, 1.0), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
    }
}
