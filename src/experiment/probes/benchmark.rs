//! The `benchmark` probe: render a configured case warm, N times, and record
//! median, min and max seconds and pixel-samples per second (one pixel-sample
//! = one pixel x subpixel x source x phi step x mosaic domain evaluation).
//! Timings are measurements: a benchmark cell's result.json is not
//! byte-reproducible, unlike the correctness probes'.

use crate::engine::{self, Device, EngineError, RenderOptions};
use crate::experiment::config::BenchmarkProbe;
use crate::experiment::matrix::Cell;
use crate::experiment::result::{details_map, BenchmarkDetails, Log, Outcome};
use crate::physics::params::Param;
use crate::physics::Simulation;
use std::time::Instant;

/// Peak resident memory of this process so far (VmHWM, KiB), where /proc has it.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Time the cell's renders.
pub(crate) fn run(
    sim: &Simulation,
    cell: &Cell,
    p: &BenchmarkProbe,
    log: &mut Log,
) -> Result<Outcome, EngineError> {
    let derivs: Vec<Param> = p
        .derivative_params()
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
    let is_gpu = cell.device.is_cuda();
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
    let mut d = BenchmarkDetails {
        device_name: device.clone(),
        threads,
        derivatives: derivs.iter().map(|q| q.name().to_string()).collect(),
        pixels: (cell.effective_roi[1] - cell.effective_roi[0] + 1) as u64
            * (cell.effective_roi[3] - cell.effective_roi[2] + 1) as u64,
        pixel_samples: samples,
        repeats: p.repeats,
        first_s,
        median_s: median,
        min_s: times.first().copied().unwrap_or(first_s),
        max_s: times.last().copied().unwrap_or(first_s),
        pixel_samples_per_s: rate,
        pixel_samples_per_s_per_thread: (threads > 0).then(|| rate / threads as f64),
        kernel_median_s: None,
        kernel_pixel_samples_per_s: None,
        peak_rss_kib: peak_rss_kib(),
        image_sum: checksum,
        wall_s: wall,
    };
    if is_gpu && kernel_times.len() > 1 {
        // GPU time of the kernels alone (CUDA events), warm renders only
        let mut k: Vec<f64> = kernel_times[1..].to_vec();
        k.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let km = k[k.len() / 2];
        d.kernel_median_s = Some(km);
        d.kernel_pixel_samples_per_s = Some(samples / km);
        log.line(format!(
            "kernel-only median {km:.5} s, {:.3e} pixel-samples/s",
            samples / km
        ));
    }
    log.line(format!(
        "median {median:.4} s over {} repeats, {samples:.3e} pixel-samples, {rate:.3e} /s",
        p.repeats
    ));
    let mut failures = Vec::new();
    if let Some(min_rate) = p.min_pixel_samples_per_s {
        if rate < min_rate {
            failures.push(format!(
                "{rate:.3e} pixel-samples/s is below the target {min_rate:.3e}"
            ));
        }
    }
    let mut o = Outcome::checked(&failures);
    o.loss = Some(checksum);
    o.details = details_map(&d);
    o.engine = Some(device);
    Ok(o)
}
