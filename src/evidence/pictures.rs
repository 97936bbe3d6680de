//! The pictures of a bundle: plots of the checked quantities along a swept
//! model axis (`sweep_<axis>_<quantity>.svg` and `.png`), the benchmark
//! scaling plot (`scaling.svg` and `.png`), and the "Pictures" section of
//! summary.md that links them with every cell's PNGs. Drawn by
//! [`crate::io::picture`].

use super::{BundleError, CellRecord, Row};
use crate::experiment::result::BenchmarkDetails;
use crate::io::picture::{line_plot_png, line_plot_svg, scaling_plot, LinePlot, Series};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// "## Pictures" of summary.md: the bundle's plots and every cell's PNGs
/// (relative links).
pub fn pictures_section(s: &mut String, rows: &[Row], plots: &[String]) {
    let cells: Vec<(&str, Vec<&String>)> = rows
        .iter()
        .map(|r| {
            (
                r.record.id.as_str(),
                r.record
                    .files
                    .iter()
                    .filter(|f| f.ends_with(".png"))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, f)| !f.is_empty())
        .collect();
    if cells.is_empty() && plots.is_empty() {
        return;
    }
    s.push_str("\n## Pictures\n\n");
    if !plots.is_empty() {
        s.push_str("Checked quantities along the swept model axes, benchmark scaling:\n\n");
        for p in plots {
            s.push_str(&format!("- [{p}]({p})\n"));
        }
        s.push('\n');
        // Embed the SVG (sharp at any size); the PNG twin is linked above.
        for p in plots.iter().filter(|p| p.ends_with(".svg")) {
            s.push_str(&format!("![{p}]({p})\n"));
        }
        s.push('\n');
    }
    if !cells.is_empty() {
        s.push_str("Whole detector, the ROI outlined (grey: not rendered); images on a log scale; derivatives and differences on a blue-white-red scale centred on 0, each with its colour bar:\n\n");
        for (id, files) in cells {
            let links: Vec<String> = files
                .iter()
                .map(|f| format!("[{f}](cells/{id}/{f})"))
                .collect();
            s.push_str(&format!("- `{id}`: {}\n", links.join(", ")));
        }
    }
}

/// A model-axis value as an x coordinate (numbers; the first of a list of
/// numbers); None for other values.
fn x_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Array(a) => a.first().and_then(|x| x.as_f64()),
        _ => None,
    }
}

/// For every model axis (`model.*` matrix key) with at least two values,
/// plot the checked quantities (loss, grad_ad, rel_err where present)
/// against it, one series per other combination, into the bundle root.
/// Returns the file names written (an SVG and a PNG per plot).
pub fn write_sweep_plots(bundle: &Path, rows: &[Row]) -> Result<Vec<String>, BundleError> {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for r in rows {
        for k in r.record.axes.keys() {
            if k.starts_with("model.") && k != "model.nanobragg_args" {
                keys.insert(k.clone());
            }
        }
    }
    let mut written = Vec::new();
    for key in keys {
        let distinct: Vec<&Value> = {
            let mut v: Vec<&Value> = Vec::new();
            for r in rows {
                if let Some(x) = r.record.axes.get(&key) {
                    if !v.contains(&x) {
                        v.push(x);
                    }
                }
            }
            v
        };
        if distinct.len() < 2 {
            continue;
        }
        let numeric = distinct.iter().all(|v| x_of(v).is_some());
        let xv = |v: &Value| -> f64 {
            if numeric {
                x_of(v).unwrap_or(f64::NAN)
            } else {
                distinct.iter().position(|d| *d == v).unwrap_or(0) as f64
            }
        };
        let last = key.rsplit('.').next().unwrap_or(&key).to_string();
        type Getter = fn(&CellRecord) -> Option<f64>;
        let quantities: [(&str, Getter); 3] = [
            ("loss", |c| c.loss),
            ("grad_ad", |c| c.grad_ad),
            ("rel_err", |c| c.rel_err),
        ];
        for (qname, get) in quantities {
            let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for r in rows {
                let c = &r.record;
                let (Some(ax), Some(y)) = (c.axes.get(&key), get(c)) else {
                    continue;
                };
                if !y.is_finite() {
                    continue;
                }
                let mut name = vec![c.probe.clone(), c.device.clone(), c.dtype.clone()];
                if let Some(p) = &c.param {
                    name.push(p.clone());
                }
                for (k, v) in &c.axes {
                    if k.starts_with("model.") && *k != key {
                        let l = k.rsplit('.').next().unwrap_or(k);
                        name.push(format!("{l}={}", v.to_string().replace('"', "")));
                    }
                }
                series.entry(name.join(" ")).or_default().push((xv(ax), y));
            }
            let mut list: Vec<(String, Vec<(f64, f64)>)> = series
                .into_iter()
                .filter(|(_, p)| p.len() >= 2)
                .map(|(n, mut p)| {
                    p.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (n, p)
                })
                .collect();
            if list.is_empty() {
                continue;
            }
            list.truncate(8);
            let ys: Vec<f64> = list
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.1))
                .collect();
            let pos = ys.iter().all(|y| *y > 0.0);
            let (lo, hi) = ys.iter().fold((f64::INFINITY, 0.0f64), |(a, b), y| {
                (a.min(y.abs()), b.max(y.abs()))
            });
            let log_y = pos && (qname == "rel_err" || hi / lo > 100.0);
            let stem = format!(
                "sweep_{}_{qname}",
                crate::experiment::matrix::sanitize(&last)
            );
            let x_label = if numeric {
                key.clone()
            } else {
                format!("{key} (value index)")
            };
            let plot = LinePlot {
                title: format!("{qname} against {key}"),
                x_label,
                y_label: qname.to_string(),
                log_x: false,
                log_y,
                series: series_of(list),
            };
            written.extend(write_plot(bundle, &stem, &plot)?);
        }
    }
    Ok(written)
}

/// The scaling plot of a bundle's benchmark cells: median seconds against
/// pixel-samples (log-log), one series per device, dtype and derivative
/// count, written as `scaling.svg` and `scaling.png` in the bundle root when some series has
/// two or more sizes.
pub fn write_scaling_plot(bundle: &Path, rows: &[Row]) -> Result<Vec<String>, BundleError> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        let c = &r.record;
        if c.kind != "benchmark" {
            continue;
        }
        let Some(d) = c.details_as::<BenchmarkDetails>() else {
            continue;
        };
        let (x, y) = (d.pixel_samples, d.median_s);
        let nder = d.derivatives.len();
        let threads = d.threads;
        let mut name = format!("{} {} +{nder}d", c.device, c.dtype);
        if threads > 0 {
            name.push_str(&format!(" {threads}t"));
        }
        series.entry(name).or_default().push((x, y));
    }
    let list: Vec<(String, Vec<(f64, f64)>)> = series
        .into_iter()
        .filter(|(_, p)| {
            let mut xs: Vec<u64> = p.iter().map(|q| q.0.to_bits()).collect();
            xs.sort();
            xs.dedup();
            xs.len() >= 2
        })
        .map(|(n, mut p)| {
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            (n, p)
        })
        .collect();
    if list.is_empty() {
        return Ok(vec![]);
    }
    let plot = scaling_plot(
        "benchmark: median render time against pixel-samples",
        "pixel-samples",
        "median seconds",
        series_of(list),
    );
    write_plot(bundle, "scaling", &plot)
}

fn series_of(list: Vec<(String, Vec<(f64, f64)>)>) -> Vec<Series> {
    list.into_iter()
        .map(|(name, points)| Series { name, points })
        .collect()
}

/// `<stem>.svg` and `<stem>.png` in the bundle root; returns their names.
fn write_plot(bundle: &Path, stem: &str, plot: &LinePlot) -> Result<Vec<String>, BundleError> {
    let (svg, png) = (format!("{stem}.svg"), format!("{stem}.png"));
    let err = |f: &str, e: String| BundleError(format!("{}: {e}", bundle.join(f).display()));
    let text = line_plot_svg(plot).map_err(|e| err(&svg, e))?;
    crate::io::write_atomic(&bundle.join(&svg), text.as_bytes())?;
    let bytes = line_plot_png(plot).map_err(|e| err(&png, e))?;
    crate::io::write_atomic(&bundle.join(&png), &bytes)?;
    Ok(vec![svg, png])
}
