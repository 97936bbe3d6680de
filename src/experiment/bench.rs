//! The `benchmark` probe: render a configured case warm, N times, and record
//! median, min and max seconds and pixel-samples per second (one pixel-sample
//! = one pixel x subpixel x source x phi step x mosaic domain evaluation).
//! Timings are measurements: a benchmark cell's result.json is not
//! byte-reproducible, unlike the correctness probes'.

use super::config::BenchmarkProbe;
use super::matrix::Cell;
use super::probes::{Log, Outcome, Status};
use crate::engine::{self, Device, EngineError, RenderOptions};
use crate::physics::params::Param;
use crate::physics::Simulation;
use serde_json::{json, Map};
use std::time::Instant;

/// Peak resident memory of this process so far (VmHWM, KiB), where /proc has it.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The parameters a benchmark differentiates by: its list, or the first N.
pub fn derivative_params(p: &BenchmarkProbe) -> Vec<Param> {
    if !p.derivatives.is_empty() {
        p.derivatives.clone()
    } else {
        Param::ALL
            .iter()
            .copied()
            .take(p.derivative_count)
            .collect()
    }
}

pub fn benchmark(
    sim: &Simulation,
    cell: &Cell,
    p: &BenchmarkProbe,
    log: &mut Log,
) -> Result<Outcome, EngineError> {
    let derivs: Vec<Param> = derivative_params(p)
        .into_iter()
        .filter(|q| sim.base_value(*q).is_ok())
        .collect();
    let opts = RenderOptions {
        dtype: cell.dtype,
        roi: Some(cell.effective_roi),
        derivatives: derivs.clone(),
        shifts: vec![],
    };
    let pool = match (cell.device, p.threads) {
        (Device::Cpu, Some(n)) => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| EngineError::Failed(format!("thread pool: {e}")))?,
        ),
        _ => None,
    };
    let is_gpu = matches!(cell.device, Device::Cuda(_));
    let mut kernel_times = vec![];
    let mut run_once = || -> Result<(f64, f64, String), EngineError> {
        let t = Instant::now();
        let r = match &pool {
            Some(pool) => pool.install(|| engine::render(sim, cell.device, &opts))?,
            None => engine::render(sim, cell.device, &opts)?,
        };
        let s = t.elapsed().as_secs_f64();
        if is_gpu {
            kernel_times.push(r.kernel_seconds.unwrap_or(0.0));
        }
        Ok((s, r.roi_sum(), r.device))
    };
    let t0 = Instant::now();
    let (first_s, checksum, device) = run_once()?;
    log.line(format!(
        "first render (cold, includes any kernel compile): {first_s:.4} s on {device}"
    ));
    for _ in 1..p.warmup {
        run_once()?;
    }
    let mut times = Vec::with_capacity(p.repeats);
    for i in 0..p.repeats {
        let (s, sum, _) = run_once()?;
        if sum.to_bits() != checksum.to_bits() {
            return Err(EngineError::Failed(format!(
                "repeat {i} gave a different image sum ({sum:e} vs {checksum:e})"
            )));
        }
        log.line(format!("repeat {i}: {s:.4} s"));
        times.push(s);
    }
    let wall = t0.elapsed().as_secs_f64();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = if times.is_empty() {
        first_s
    } else if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        0.5 * (times[times.len() / 2 - 1] + times[times.len() / 2])
    };
    let samples = sim.pixel_samples(cell.effective_roi);
    let threads = match (cell.device, p.threads) {
        (Device::Cpu, Some(n)) => n,
        (Device::Cpu, None) => rayon::current_num_threads(),
        _ => 0,
    };
    let rate = samples / median;
    let mut d = Map::new();
    d.insert("device_name".into(), json!(device));
    d.insert("threads".into(), json!(threads));
    d.insert(
        "derivatives".into(),
        json!(derivs.iter().map(|q| q.name()).collect::<Vec<_>>()),
    );
    d.insert(
        "pixels".into(),
        json!(
            (cell.effective_roi[1] - cell.effective_roi[0] + 1) as u64
                * (cell.effective_roi[3] - cell.effective_roi[2] + 1) as u64
        ),
    );
    d.insert("pixel_samples".into(), json!(samples));
    d.insert("repeats".into(), json!(p.repeats));
    d.insert("first_s".into(), json!(first_s));
    d.insert("median_s".into(), json!(median));
    d.insert(
        "min_s".into(),
        json!(times.first().copied().unwrap_or(first_s)),
    );
    d.insert(
        "max_s".into(),
        json!(times.last().copied().unwrap_or(first_s)),
    );
    d.insert("pixel_samples_per_s".into(), json!(rate));
    if threads > 0 {
        d.insert(
            "pixel_samples_per_s_per_thread".into(),
            json!(rate / threads as f64),
        );
    }
    if is_gpu && kernel_times.len() > 1 {
        // GPU time of the kernels alone (CUDA events), warm renders only
        let mut k: Vec<f64> = kernel_times[1..].to_vec();
        k.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let km = k[k.len() / 2];
        d.insert("kernel_median_s".into(), json!(km));
        d.insert("kernel_pixel_samples_per_s".into(), json!(samples / km));
        log.line(format!(
            "kernel-only median {km:.5} s, {:.3e} pixel-samples/s",
            samples / km
        ));
    }
    d.insert("peak_rss_kib".into(), json!(peak_rss_kib()));
    d.insert("image_sum".into(), json!(checksum));
    d.insert("wall_s".into(), json!(wall));
    log.line(format!(
        "median {median:.4} s over {} repeats, {samples:.3e} pixel-samples, {rate:.3e} /s",
        p.repeats
    ));
    let mut o = Outcome::empty(Status::Pass);
    o.loss = Some(checksum);
    o.details = d;
    o.engine = Some(device);
    if let Some(min_rate) = p.min_pixel_samples_per_s {
        if rate < min_rate {
            o.status = Status::Fail;
            o.reason = Some(format!(
                "{rate:.3e} pixel-samples/s is below the target {min_rate:.3e}"
            ));
        }
    }
    Ok(o)
}

/// The scaling plot of a bundle's benchmark cells: median seconds against
/// pixel-samples (log-log), one series per device, dtype and derivative
/// count, written as `scaling.png` in the bundle root when some series has
/// two or more sizes.
pub fn write_scaling_plot(
    bundle: &std::path::Path,
    rows: &[crate::evidence::Row],
) -> Result<Vec<String>, String> {
    use std::collections::BTreeMap;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        let c = &r.record;
        if c.kind != "benchmark" {
            continue;
        }
        let (Some(x), Some(y)) = (
            c.details.get("pixel_samples").and_then(|v| v.as_f64()),
            c.details.get("median_s").and_then(|v| v.as_f64()),
        ) else {
            continue;
        };
        let nder = c
            .details
            .get("derivatives")
            .and_then(|v| v.as_array())
            .map(|a| a.len())
            .unwrap_or(0);
        let threads = c
            .details
            .get("threads")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
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
    let file = "scaling.png".to_string();
    crate::io::plot::line_plot_png(
        &bundle.join(&file),
        &list,
        "pixel-samples",
        "median seconds",
        true,
        true,
    )
    .map_err(|e| e.to_string())?;
    Ok(vec![file])
}
