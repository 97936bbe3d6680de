//! Line plots (convergence, scaling) with labelled axes, a title, a legend,
//! as SVG (text stays text: searchable, any size) or PNG.

use super::{
    draw_err, encode_png, ensure_font, fmt_exact, fmt_num, log_ticks, nice_ticks, Ticked, FONT,
};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Picture size of a line plot, in pixels.
pub const PLOT_SIZE: (u32, u32) = (800, 500);

/// Series colours, in order (matplotlib's "tab10").
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One named line of a [`LinePlot`]; points are joined in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

/// A line plot: several series on shared axes. Non-finite points, and
/// non-positive ones on a log axis, are left out (the plot's caption counts
/// them); a plot with no point left is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlot {
    /// Title line at the top.
    pub title: String,
    /// x axis label, with units.
    pub x_label: String,
    /// y axis label, with units.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines, drawn in order with the colours of matplotlib's "tab10".
    pub series: Vec<Series>,
}

/// A convergence plot: `loss[i]` against iteration `i` (from 0) on a log y
/// axis.
pub fn convergence_plot(title: &str, loss: &[f64]) -> LinePlot {
    LinePlot {
        title: title.to_string(),
        x_label: "iteration".to_string(),
        y_label: "loss".to_string(),
        log_x: false,
        log_y: true,
        series: vec![Series {
            name: "loss".to_string(),
            points: loss
                .iter()
                .enumerate()
                .map(|(i, l)| (i as f64, *l))
                .collect(),
        }],
    }
}

/// A scaling plot on log-log axes, e.g. x = threads, devices or size and
/// y = seconds or rate, one series per engine.
pub fn scaling_plot(title: &str, x_label: &str, y_label: &str, series: Vec<Series>) -> LinePlot {
    LinePlot {
        title: title.to_string(),
        x_label: x_label.to_string(),
        y_label: y_label.to_string(),
        log_x: true,
        log_y: true,
        series,
    }
}

/// The plot as an SVG document ([`PLOT_SIZE`]); the title, axis labels and
/// legend are `<text>` elements.
pub fn line_plot_svg(plot: &LinePlot) -> Result<String, String> {
    ensure_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        draw(&root, plot)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// The plot as an RGB PNG ([`PLOT_SIZE`]), with PNG text `Title`, `x_label`,
/// `y_label`, `Software`.
pub fn line_plot_png(plot: &LinePlot) -> Result<Vec<u8>, String> {
    ensure_font()?;
    let (w, h) = PLOT_SIZE;
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, PLOT_SIZE).into_drawing_area();
        draw(&root, plot)?;
        root.present().map_err(draw_err)?;
    }
    let mut meta: Vec<(String, String)> = [
        ("Title", plot.title.as_str()),
        ("x_label", plot.x_label.as_str()),
        ("y_label", plot.y_label.as_str()),
        ("Software", "braggrun"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    // The plotted ranges, so the numbers can be read without the pixels.
    let pts = || plot.series.iter().flat_map(|s| s.points.iter());
    let range = |v: Vec<f64>| {
        v.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
                (l.min(*x), h.max(*x))
            })
    };
    let (x0, x1) = range(pts().map(|p| p.0).filter(|x| x.is_finite()).collect());
    let (y0, y1) = range(pts().map(|p| p.1).filter(|y| y.is_finite()).collect());
    if x0 <= x1 && y0 <= y1 {
        for (k, v) in [
            ("x_min", x0),
            ("x_max", x1),
            ("value_min", y0),
            ("value_max", y1),
        ] {
            meta.push((k.to_string(), fmt_exact(v)));
        }
    }
    encode_png(&rgb, w, h, &meta)
}

/// One axis: value <-> drawn coordinate (log10 on a log axis), range, ticks.
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    /// (drawn coordinate, label).
    ticks: Vec<(f64, String)>,
}

/// On a log x axis with at most this many distinct values (threads,
/// devices), the ticks are the values themselves.
const DATA_TICKS: usize = 10;

impl Axis {
    fn new(log: bool, data_ticks: bool, vals: impl Iterator<Item = f64>) -> Option<Axis> {
        let tr = |v: f64| if log { v.log10() } else { v };
        let mut distinct: Vec<f64> = vals.collect();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        let (mut lo, mut hi) = distinct
            .iter()
            .map(|v| tr(*v))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                (l.min(v), h.max(v))
            });
        if lo > hi {
            return None;
        }
        let pad = if hi > lo {
            (hi - lo) * 0.05
        } else if log {
            0.5
        } else {
            (lo.abs() * 0.1).max(1.0)
        };
        lo -= pad;
        hi += pad;
        let values = if log && data_ticks && (2..=DATA_TICKS).contains(&distinct.len()) {
            distinct
        } else if log {
            log_ticks(10f64.powf(lo), 10f64.powf(hi))
        } else {
            nice_ticks(lo, hi, 6)
        };
        let ticks = values.iter().map(|v| (tr(*v), fmt_num(*v))).collect();
        Some(Axis { log, lo, hi, ticks })
    }

    fn to(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    fn coord(&self) -> Ticked {
        Ticked::new(self.lo, self.hi, self.ticks.clone())
    }

    fn desc(&self, label: &str) -> String {
        if self.log {
            format!("{label} (log scale)")
        } else {
            label.to_string()
        }
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, plot: &LinePlot) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let usable = |&(x, y): &(f64, f64)| {
        x.is_finite() && y.is_finite() && (!plot.log_x || x > 0.0) && (!plot.log_y || y > 0.0)
    };
    let kept: Vec<Vec<(f64, f64)>> = plot
        .series
        .iter()
        .map(|s| s.points.iter().copied().filter(usable).collect())
        .collect();
    let total: usize = plot.series.iter().map(|s| s.points.len()).sum();
    let dropped = total - kept.iter().map(Vec::len).sum::<usize>();
    let xa = Axis::new(plot.log_x, true, kept.iter().flatten().map(|p| p.0))
        .ok_or("no point to plot (log axes need positive values)")?;
    let ya = Axis::new(plot.log_y, false, kept.iter().flatten().map(|p| p.1))
        .ok_or("no point to plot (log axes need positive values)")?;

    root.fill(&WHITE).map_err(draw_err)?;
    let root = if dropped > 0 {
        let note = format!(
            "{dropped} point(s) left out (not finite{})",
            if plot.log_x || plot.log_y {
                ", or not positive on a log axis"
            } else {
                ""
            }
        );
        let (w, h) = root.dim_in_pixel();
        root.draw(&Text::new(
            note,
            (12, h as i32 - 18),
            (FONT, 12).into_font(),
        ))
        .map_err(draw_err)?;
        root.clone().shrink((0, 0), (w, h - 20))
    } else {
        root.clone()
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(plot.title.clone(), (FONT, 22, FontStyle::Bold).into_font())
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(xa.coord(), ya.coord())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .bold_line_style(RGBColor(225, 225, 225))
        .label_style((FONT, 15).into_font())
        .axis_desc_style((FONT, 17).into_font())
        .x_desc(xa.desc(&plot.x_label))
        .y_desc(ya.desc(&plot.y_label))
        .draw()
        .map_err(draw_err)?;
    for (i, (s, pts)) in plot.series.iter().zip(&kept).enumerate() {
        if pts.is_empty() {
            continue;
        }
        let colour = PALETTE[i % PALETTE.len()];
        let line: Vec<(f64, f64)> = pts.iter().map(|&(x, y)| (xa.to(x), ya.to(y))).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
            .map_err(draw_err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(line.iter().map(|p| Circle::new(*p, 3, colour.filled())))
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(legend_corner(&kept, &xa, &ya))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 15).into_font())
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// The corner of the plot (a third of each side) that the lines cross
/// least, for the legend; upper right when tied.
fn legend_corner(lines: &[Vec<(f64, f64)>], xa: &Axis, ya: &Axis) -> SeriesLabelPosition {
    let mut count = [0usize; 4]; // upper right, upper left, lower right, lower left
    for l in lines {
        let uv: Vec<(f64, f64)> = l
            .iter()
            .map(|&(x, y)| {
                (
                    (xa.to(x) - xa.lo) / (xa.hi - xa.lo),
                    (ya.to(y) - ya.lo) / (ya.hi - ya.lo),
                )
            })
            .collect();
        let mut visit = |(u, v): (f64, f64)| {
            let i = match (u > 2.0 / 3.0, u < 1.0 / 3.0, v > 2.0 / 3.0, v < 1.0 / 3.0) {
                (true, _, true, _) => 0,
                (_, true, true, _) => 1,
                (true, _, _, true) => 2,
                (_, true, _, true) => 3,
                _ => return,
            };
            count[i] += 1;
        };
        uv.iter().for_each(|p| visit(*p));
        for w in uv.windows(2) {
            for k in 1..16 {
                let f = k as f64 / 16.0;
                visit((
                    w[0].0 + (w[1].0 - w[0].0) * f,
                    w[0].1 + (w[1].1 - w[0].1) * f,
                ));
            }
        }
    }
    let best = (0..4).min_by_key(|i| count[*i]).unwrap_or(0);
    [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ][best]
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_ticks_are_decades() {
        let many = (0..=30).map(|i| 10f64.powf(i as f64 / 10.0));
        let a = Axis::new(true, true, many).unwrap();
        let labels: Vec<&str> = a.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["1", "10", "100", "1000"]);
        let threads = Axis::new(true, true, [1.0, 2.0, 4.0, 16.0, 4.0].into_iter()).unwrap();
        let labels: Vec<&str> = threads.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["1", "2", "4", "16"], "few values: the values");
        use plotters::coord::ranged1d::ValueFormatter;
        assert_eq!(a.coord().format_ext(&2.0), "100");
    }

    #[test]
    fn empty_plot_is_an_error() {
        let p = convergence_plot("x", &[0.0, -1.0, f64::NAN]);
        assert!(line_plot_svg(&p).unwrap_err().contains("no point"));
    }
}
