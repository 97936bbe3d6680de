//! Quick timing of the issue-5 reference case on the CPU engine:
//! `cargo run --release --example speed -- [threads] [derivs] [pixels] [f32] [ftz]`.
use braggrun::engine::{render, Device, Dtype, RenderOptions};
use braggrun::physics::config::*;
use braggrun::physics::params::Param;
use braggrun::physics::Simulation;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let nder: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let npix: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let dtype = if args.get(4).map(|s| s == "f32").unwrap_or(false) {
        Dtype::F32
    } else {
        Dtype::F64
    };
    let ftz = args.get(5).map(|s| s == "ftz").unwrap_or(false);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(move |_| {
            if ftz {
                // flush-to-zero and denormals-are-zero: a test for denormal stalls
                #[cfg(target_arch = "x86_64")]
                #[allow(deprecated)]
                unsafe {
                    std::arch::x86_64::_mm_setcsr(std::arch::x86_64::_mm_getcsr() | 0x8040)
                };
            }
        })
        .build_global()
        .unwrap();
    let mut c = SimConfig::default();
    c.crystal.cell = Some([100.0, 100.0, 100.0, 90.0, 90.0, 90.0]);
    c.crystal.n_cells = [5.0; 3];
    c.crystal.default_f = 100.0;
    c.crystal.mosaic_spread_deg = Some(0.5);
    c.crystal.mosaic_domains = Some(10);
    c.beam.wavelength_a = 6.2;
    c.detector.fpixels = Some(npix);
    c.detector.spixels = Some(npix);
    c.goniometer.phisteps = Some(10);
    c.goniometer.osc_deg = Some(0.1);
    let sim = Simulation::prepare(&c, std::path::Path::new(".")).unwrap();
    let mut o = RenderOptions::new(dtype);
    // SPEED_PARAMS=cell_a,distance,... names the parameters (bench-reference's
    // plus6 is cell_a,cell_b,cell_c,misset_x,distance,wavelength); else the first `derivs`
    o.derivatives = match std::env::var("SPEED_PARAMS") {
        Ok(list) if nder > 0 => list.split(',').map(|p| p.parse().unwrap()).collect(),
        _ => Param::ALL[..nder].to_vec(),
    };
    let t = Instant::now();
    let r = render(&sim, Device::Cpu, &o).unwrap();
    let dt = t.elapsed().as_secs_f64();
    let samples = sim.pixel_samples(sim.roi());
    println!("threads {threads} derivs {nder}: {dt:.3} s, {:.3e} pixel-samples/s, {:.3e} /s/thread, sum {:.6e}", samples / dt, samples / dt / threads as f64, r.roi_sum());
}
