//! The CUDA kernel checked without a GPU: src/engine/cuda/kernel.cu compiled
//! as host C++ (tests/kernel_host/driver.cpp shims the CUDA qualifiers and
//! intrinsics), fed the very inputs a GPU render uploads
//! (`engine::cuda::host_kernel_inputs`), compared with the CPU engine:
//! every golden case in float64, and every parameter's derivative on every
//! configuration of the derivative sweep, to 1e-12 of the plane's maximum.
//! The driver includes the interface header the CUDA engine generates
//! (`engine::cuda::header`) before kernel.cu, as NVRTC sees it, and the
//! `interface/params_layout` trial compares the C compiler's layout of
//! `struct Params` (every field's offset and size) and its reading of the
//! shared constants with the Rust side. CI has no GPU; this is how it sees
//! kernel drift. Without a C++ compiler every trial is reported ignored,
//! with the reason.
// `!(x <= tol)` on purpose: a NaN must fail the comparison.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use braggrun::cli::nanobragg::parse_args;
use braggrun::engine::cuda::interface::{CValue, Params, PARAMS_FIELDS, SHARED_CONSTANTS};
use braggrun::engine::cuda::{header, host_kernel_inputs, KernelVariant};
use braggrun::engine::{render, Device, Dtype, RenderOptions};
use braggrun::physics::params::Param;
use braggrun::physics::Simulation;
use libtest_mimic::{Arguments, Failed, Trial};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const TOL: f64 = 1e-12;

/// One trial's check, given the C++ compiler.
type Check = Box<dyn FnOnce(&str) -> Result<(), Failed> + Send>;

fn compiler() -> Result<String, String> {
    for c in ["c++", "g++", "clang++"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(c.to_string());
        }
    }
    Err("no C++ compiler (c++, g++, clang++) on PATH".into())
}

/// One driver executable per kernel variant, compiled once.
static DRIVERS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

fn driver(cxx: &str, v: KernelVariant) -> Result<PathBuf, Failed> {
    let defines = v.defines();
    let key = defines.join(" ");
    let mut guard = DRIVERS.lock().unwrap();
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(&key) {
        return Ok(p.clone());
    }
    let name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel_host");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // the generated interface header, which the driver includes before kernel.cu
    std::fs::write(dir.join("kernel_interface.h"), header()).map_err(|e| e.to_string())?;
    let exe = dir.join(format!("kernel_host_{name}"));
    let src = common::manifest_dir().join("tests/kernel_host/driver.cpp");
    let out = Command::new(cxx)
        .args([
            "-O2",
            "-std=c++17",
            "-Wno-unknown-pragmas",
            "-ffp-contract=off",
        ])
        .args(&defines)
        .arg("-I")
        .arg(&dir)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .map_err(|e| format!("{cxx}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cxx} {key}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        )
        .into());
    }
    map.insert(key, exe.clone());
    Ok(exe)
}

fn le_f64(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The host-compiled kernel's planes (image, then one per direction), in
/// the ROI's pixel order.
fn host_render(cxx: &str, sim: &Simulation, dirs: &[Param]) -> Result<Vec<Vec<f64>>, Failed> {
    let k = host_kernel_inputs(sim, Dtype::F64, dirs).map_err(|e| Failed::from(e.to_string()))?;
    let exe = driver(cxx, k.variant)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let w = |n: &str, b: Vec<u8>| std::fs::write(dir.path().join(n), b);
    w("params.bin", k.params.clone())
        .and_then(|_| w("model.bin", le_f64(&k.model)))
        .and_then(|_| w("hi.bin", le_f64(&k.hi)))
        .and_then(|_| w("hkl.bin", le_f64(&k.hkl)))
        .and_then(|_| {
            w(
                "pixels.bin",
                k.pixels.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .map_err(|e| e.to_string())?;
    let st = Command::new(&exe)
        .arg(dir.path())
        .arg(k.npix.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    if !st.status.success() {
        return Err(format!("driver: {}", String::from_utf8_lossy(&st.stderr)).into());
    }
    let bytes = std::fs::read(dir.path().join("out.bin")).map_err(|e| e.to_string())?;
    let vals: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Ok(vals.chunks(k.npix.max(1)).map(|c| c.to_vec()).collect())
}

/// max |a - b| over max |b| or `floor`, whichever is larger (0 when both
/// are all zero).
fn rel_max_diff(a: &[f64], b: &[f64], floor: f64) -> f64 {
    let scale = b.iter().fold(floor, |m, x| m.max(x.abs()));
    let d = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    if a.len() != b.len() {
        f64::INFINITY
    } else if scale == 0.0 {
        d
    } else {
        d / scale
    }
}

fn compare(cxx: &str, name: &str, sim: &Simulation, dirs: &[Param]) -> Result<String, Failed> {
    let host = host_render(cxx, sim, dirs)?;
    let mut o = RenderOptions::new(Dtype::F64);
    o.derivatives = dirs.to_vec();
    let cpu = render(sim, Device::Cpu, &o).map_err(|e| Failed::from(e.to_string()))?;
    let image = cpu.roi_values(&cpu.image);
    let image_max = image.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mut planes = vec![("image".to_string(), image, 0.0)];
    for p in dirs {
        // A derivative is compared on the scale of the plane, and at least on
        // the image's scale per unit relative change of the parameter (max I
        // / |p|): where a derivative is zero to rounding (d/dλ with a MOSFLM
        // matrix: h = a·S with a ∝ λ and S ∝ 1/λ), the two engines' rounding
        // residues differ and are compared as what they are.
        let value = sim.base_value(*p).map(f64::abs).unwrap_or(0.0);
        let floor = if value > 0.0 { image_max / value } else { 0.0 };
        planes.push((
            p.name().to_string(),
            cpu.roi_values(cpu.derivative(*p).unwrap()),
            floor,
        ));
    }
    let mut worst = 0.0f64;
    let mut bad = vec![];
    for ((what, c, floor), h) in planes.iter().zip(&host) {
        // masked pixels are not rendered by either engine
        let r = rel_max_diff(h, c, *floor);
        worst = worst.max(r);
        if !(r <= TOL) {
            bad.push(format!("{what}: {r:e}"));
        }
    }
    if planes.iter().all(|(_, c, _)| c.iter().all(|v| *v == 0.0)) {
        bad.push("every plane is zero".into());
    }
    if bad.is_empty() {
        Ok(format!("{name}: worst {worst:.1e}"))
    } else {
        Err(format!("{name}: {}", bad.join(", ")).into())
    }
}

/// `struct Params` as the C compiler lays it out and the shared constants
/// as it reads them (`driver --layout`), against the Rust side: every
/// field's offset (the table's, which is `offset_of!` in the Rust struct)
/// and size, in order, the struct's size, every constant's bits.
fn params_layout(cxx: &str) -> Result<(), Failed> {
    let exe = driver(cxx, KernelVariant::new(Dtype::F64, 0))?;
    let out = Command::new(&exe)
        .arg("--layout")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("driver --layout: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut bad = vec![];
    let mut c_fields = vec![];
    let mut c_consts = HashMap::new();
    let mut c_size = None;
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["field", name, off, size] => c_fields.push((
                name.to_string(),
                off.parse::<usize>().unwrap_or(usize::MAX),
                size.parse::<usize>().unwrap_or(usize::MAX),
            )),
            ["sizeof", n] => c_size = n.parse::<usize>().ok(),
            ["const", name, v] => {
                c_consts.insert(name.to_string(), v.parse::<f64>().unwrap_or(f64::NAN));
            }
            _ => bad.push(format!("unexpected line {line:?}")),
        }
    }
    if c_fields.len() != PARAMS_FIELDS.len() {
        bad.push(format!(
            "C has {} fields, Rust {}",
            c_fields.len(),
            PARAMS_FIELDS.len()
        ));
    }
    for (f, (name, off, size)) in PARAMS_FIELDS.iter().zip(&c_fields) {
        if f.name != name || f.offset != *off || f.size != *size {
            bad.push(format!(
                "Rust {} at {} ({} bytes), C {name} at {off} ({size} bytes)",
                f.name, f.offset, f.size
            ));
        }
    }
    if c_size != Some(std::mem::size_of::<Params>()) {
        bad.push(format!(
            "sizeof(Params) {c_size:?} in C, {} in Rust",
            std::mem::size_of::<Params>()
        ));
    }
    for c in SHARED_CONSTANTS {
        let want: Vec<(String, f64)> = match c.value {
            CValue::F64(x) => vec![(c.name.to_string(), x)],
            CValue::F32(x) => vec![(c.name.to_string(), x as f64)],
            CValue::F64s(v) => v
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("{}[{i}]", c.name), *x))
                .collect(),
        };
        for (name, x) in want {
            match c_consts.get(&name) {
                Some(y) if y.to_bits() == x.to_bits() => {}
                other => bad.push(format!("{name}: Rust {x:e}, C {other:?}")),
            }
        }
    }
    if bad.is_empty() {
        println!(
            "kernel_host: struct Params: {} fields, {} bytes, offsets and sizes as in Rust; {} constants read exactly",
            c_fields.len(),
            std::mem::size_of::<Params>(),
            c_consts.len()
        );
        Ok(())
    } else {
        Err(bad.join("\n").into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let cxx = compiler();
    if let Err(r) = &cxx {
        eprintln!("kernel_host: SKIPPED: {r}");
    }
    let gate = |name: String, f: Check| {
        let c = cxx.clone();
        Trial::test(name, move || match c {
            Ok(cxx) => f(&cxx),
            Err(r) => Err(format!("not run: {r}").into()),
        })
        .with_ignored_flag(cxx.is_err())
    };
    let mut trials = vec![gate(
        "interface/params_layout".into(),
        Box::new(params_layout),
    )];
    for c in common::golden_cases() {
        let name = format!("golden/{}/{}", c.case, c.run);
        trials.push(gate(
            name.clone(),
            Box::new(move |cxx| {
                let mut a = c.args.clone();
                a.extend(["-phi_carryover".to_string(), "c-parity".to_string()]);
                let parsed = parse_args(&a).map_err(|e| format!("{name}: {e}"))?;
                let sim = Simulation::prepare(&parsed.config, &common::golden_dir().join("inputs"))
                    .map_err(|e| Failed::from(e.to_string()))?;
                let line = compare(cxx, &name, &sim, &[])?;
                println!("kernel_host: {line}");
                Ok(())
            }),
        ));
    }
    for c in common::sweep::cases() {
        let name = format!("sweep/{}", c.name);
        trials.push(gate(
            name.clone(),
            Box::new(move |cxx| {
                let sim = Simulation::prepare(&c.cfg, Path::new("."))
                    .map_err(|e| Failed::from(e.to_string()))?;
                let params = sim.applicable_params();
                for chunk in params.chunks(8) {
                    let line = compare(cxx, &name, &sim, chunk)?;
                    println!("kernel_host: {line} ({} directions)", chunk.len());
                }
                Ok(())
            }),
        ));
    }
    // The kernel's fast loops (every axis a whole N, F = default_F, no
    // oversample flag): the sweep's base has N = 5, 4, 3 and takes the
    // general loop, so also every sweep configuration that qualifies with
    // N = 5 on every axis, with 1 and 2 directions at a time (not lifted in
    // float64) and 8 (lifted).
    for c in common::sweep::cases() {
        let d = &c.cfg.detector;
        if c.cfg.crystal.hkl_file.is_some()
            || d.oversample_omega
            || d.oversample_polar
            || d.oversample_thick
        {
            continue;
        }
        let name = format!("sweep-whole-n/{}", c.name);
        trials.push(gate(
            name.clone(),
            Box::new(move |cxx| {
                let mut cfg = c.cfg.clone();
                cfg.crystal.n_cells = [5.0; 3];
                let sim = Simulation::prepare(&cfg, Path::new("."))
                    .map_err(|e| Failed::from(e.to_string()))?;
                let params = sim.applicable_params();
                for n in [1, 2, 8] {
                    for chunk in params.chunks(n).take(if n == 8 { usize::MAX } else { 3 }) {
                        let line = compare(cxx, &name, &sim, chunk)?;
                        println!("kernel_host: {line} ({} directions)", chunk.len());
                    }
                }
                Ok(())
            }),
        ));
    }
    libtest_mimic::run(&args, trials).exit();
}
