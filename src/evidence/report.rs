//! Reports of a bundle: results.csv, results.json, summary.md, junit.xml.

use super::{json_bytes, list_files, write_atomic, Row, MANIFEST};
use crate::experiment::config::ProbeSpec;
use crate::experiment::load::Experiment;
use crate::experiment::probes::Status;
use serde_json::{json, Value};
use std::path::Path;

/// Counts by status.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub pass: usize,
    pub fail: usize,
    pub error: usize,
    pub skipped: usize,
    pub nonsmooth: usize,
}

impl Tally {
    pub fn of(rows: &[Row]) -> Tally {
        let mut t = Tally::default();
        for r in rows {
            match r.record.status {
                Status::Pass => t.pass += 1,
                Status::Fail => t.fail += 1,
                Status::Error => t.error += 1,
                Status::Skipped => t.skipped += 1,
                Status::NonSmooth => t.nonsmooth += 1,
            }
        }
        t
    }
    pub fn verdict(&self) -> &'static str {
        if self.fail + self.error > 0 {
            "FAIL"
        } else if self.nonsmooth > 0 {
            // a derivative check met a non-differentiable point: not a pass
            "NONSMOOTH"
        } else {
            "PASS"
        }
    }
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(v) if v == 0.0 || (v.is_finite() && (1e-4..1e15).contains(&v.abs())) => format!("{v}"),
        Some(v) if v.is_finite() => format!("{v:e}"),
        Some(v) => format!("{v}"),
        None => String::new(),
    }
}

fn short(x: Option<f64>) -> String {
    match x {
        Some(0.0) => "0".into(),
        Some(v) if v.is_finite() && (1e-3..1e6).contains(&v.abs()) => format!("{v:.9}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string(),
        Some(v) => format!("{v:.6e}"),
        None => "–".into(),
    }
}

const COLUMNS: &[&str] = &[
    "id", "probe", "kind", "status", "device", "dtype", "param", "roi", "loss", "grad_ad",
    "grad_fd", "abs_err", "rel_err", "seconds", "engine", "reason",
];

fn roi_str(r: &[u32; 4]) -> String {
    format!("{} {} {} {}", r[0], r[1], r[2], r[3])
}

/// results.csv and results.json.
pub fn write_results(bundle: &Path, rows: &[Row]) -> Result<(), String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS).map_err(|e| e.to_string())?;
    let mut list = Vec::new();
    for r in rows {
        let c = &r.record;
        w.write_record([
            c.id.clone(),
            c.probe.clone(),
            c.kind.clone(),
            c.status.as_str().to_string(),
            c.device.clone(),
            c.dtype.clone(),
            c.param.clone().unwrap_or_default(),
            roi_str(&c.roi),
            num(c.loss),
            num(c.grad_ad),
            num(c.grad_fd),
            num(c.abs_err),
            num(c.rel_err),
            format!("{:.6}", r.timing.seconds),
            r.timing.engine.clone().unwrap_or_default(),
            c.reason.clone().unwrap_or_default(),
        ])
        .map_err(|e| e.to_string())?;
        list.push(json!({
            "id": c.id, "probe": c.probe, "kind": c.kind, "status": c.status,
            "device": c.device, "dtype": c.dtype, "param": c.param, "roi": c.roi,
            "loss": c.loss, "grad_ad": c.grad_ad, "grad_fd": c.grad_fd,
            "abs_err": c.abs_err, "rel_err": c.rel_err,
            "seconds": r.timing.seconds, "engine": r.timing.engine,
            "reason": c.reason, "axes": c.axes,
        }));
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    write_atomic(&bundle.join("results.csv"), &bytes)?;
    write_atomic(
        &bundle.join("results.json"),
        &json_bytes(&Value::Array(list)),
    )
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// junit.xml: one testcase per cell.
pub fn write_junit(bundle: &Path, exp_id: &str, rows: &[Row]) -> Result<(), String> {
    let t = Tally::of(rows);
    let total: f64 = rows.iter().map(|r| r.timing.seconds).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"{0}\" tests=\"{1}\" failures=\"{2}\" errors=\"{3}\" skipped=\"{4}\" time=\"{5:.6}\">\n  <testsuite name=\"{0}\" tests=\"{1}\" failures=\"{2}\" errors=\"{3}\" skipped=\"{4}\" time=\"{5:.6}\">\n",
        xml_escape(exp_id),
        rows.len(),
        t.fail,
        t.error,
        t.skipped,
        total
    ));
    for r in rows {
        let c = &r.record;
        x.push_str(&format!(
            "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.6}\"",
            xml_escape(exp_id),
            xml_escape(&c.probe),
            xml_escape(&c.id),
            r.timing.seconds
        ));
        let reason = xml_escape(c.reason.as_deref().unwrap_or(""));
        let body = format!(
            "loss={} grad_ad={} grad_fd={} abs_err={} rel_err={}",
            num(c.loss),
            num(c.grad_ad),
            num(c.grad_fd),
            num(c.abs_err),
            num(c.rel_err)
        );
        match c.status {
            Status::Pass => x.push_str(&format!(">\n      <system-out>{}</system-out>\n    </testcase>\n", xml_escape(&body))),
            Status::Skipped => x.push_str(&format!(">\n      <skipped message=\"{reason}\"/>\n    </testcase>\n")),
            Status::Fail => x.push_str(&format!(
                ">\n      <failure message=\"{reason}\" type=\"FAIL\">{}</failure>\n    </testcase>\n",
                xml_escape(&body)
            )),
            Status::Error => x.push_str(&format!(
                ">\n      <error message=\"{reason}\" type=\"ERROR\">{reason}</error>\n    </testcase>\n"
            )),
            Status::NonSmooth => x.push_str(&format!(
                ">\n      <failure message=\"{reason}\" type=\"NONSMOOTH\">{}</failure>\n    </testcase>\n",
                xml_escape(&body)
            )),
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    write_atomic(&bundle.join("junit.xml"), x.as_bytes())
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn model_summary(exp: &Experiment) -> Vec<String> {
    let m = &exp.resolved.model;
    let mut v = Vec::new();
    if let Some(c) = m.crystal.cell {
        v.push(format!(
            "crystal: cell {} {} {} Å, {} {} {}°",
            c[0], c[1], c[2], c[3], c[4], c[5]
        ));
    }
    if let Some(p) = &m.crystal.mosflm_matrix {
        v.push(format!("crystal: MOSFLM matrix {}", p.display()));
    }
    v.push(format!(
        "crystal: N = {} x {} x {}, shape {:?}, default_F {}{}",
        m.crystal.n_cells[0],
        m.crystal.n_cells[1],
        m.crystal.n_cells[2],
        m.crystal.shape,
        m.crystal.default_f,
        m.crystal
            .hkl_file
            .as_ref()
            .map(|p| format!(", HKL {}", p.display()))
            .unwrap_or_default()
    ));
    if let Some(ms) = m.crystal.misset_deg {
        v.push(format!("crystal: misset {} {} {}°", ms[0], ms[1], ms[2]));
    }
    v.push(format!(
        "mosaic: spread {}°, {} domain(s)",
        m.crystal
            .mosaic_spread_deg
            .map(|x| x.to_string())
            .unwrap_or_else(|| "0 (default)".into()),
        m.crystal
            .mosaic_domains
            .map(|x| x.to_string())
            .unwrap_or_else(|| "default".into())
    ));
    v.push(format!(
        "beam: wavelength {} Å{}",
        m.beam.wavelength_a,
        m.beam
            .energy_ev
            .map(|e| format!(" (energy {e} eV overrides)"))
            .unwrap_or_default()
    ));
    v.push(format!(
        "goniometer: phi0 {}°, oscillation {}° in {} step(s); phi carryover {}",
        m.goniometer.phi_start_deg,
        m.goniometer
            .osc_deg
            .map(|x| x.to_string())
            .unwrap_or_else(|| "default".into()),
        m.goniometer
            .phisteps
            .map(|x| x.to_string())
            .unwrap_or_else(|| "default".into()),
        serde_json::to_value(m.phi_carryover)
            .ok()
            .and_then(|v| v.as_str().map(|s| s.to_string()))
            .unwrap_or_default()
    ));
    v.push(format!(
        "detector: {:?}, {} x {} pixels of {} mm, distance {} mm, beam centre {} x {} mm",
        m.detector.convention,
        m.detector
            .fpixels
            .map(|x| x.to_string())
            .unwrap_or_else(|| "auto".into()),
        m.detector
            .spixels
            .map(|x| x.to_string())
            .unwrap_or_else(|| "auto".into()),
        m.detector.pixel_size_mm,
        m.detector.distance_mm,
        m.detector
            .xbeam_mm
            .map(|x| x.to_string())
            .unwrap_or_else(|| "default".into()),
        m.detector
            .ybeam_mm
            .map(|x| x.to_string())
            .unwrap_or_else(|| "default".into()),
    ));
    v
}

/// summary.md: verdict first, then configuration, every cell, commands, artifacts.
#[allow(clippy::too_many_arguments)]
pub fn write_summary(
    bundle: &Path,
    exp: &Experiment,
    rows: &[Row],
    commands: &str,
    env: &Value,
    extra_failures: &[String],
) -> Result<(), String> {
    write_summary_with(
        bundle,
        exp,
        rows,
        commands,
        env,
        extra_failures,
        &SummaryNotes::default(),
    )
}

/// Extra content of summary.md: notes under the verdict (shard, merge) and
/// plots in the bundle root (relative paths) to link.
#[derive(Debug, Clone, Default)]
pub struct SummaryNotes {
    pub lines: Vec<String>,
    pub plots: Vec<String>,
}

/// [`write_summary`] with notes and plots; cells' PNGs are linked too.
#[allow(clippy::too_many_arguments)]
pub fn write_summary_with(
    bundle: &Path,
    exp: &Experiment,
    rows: &[Row],
    commands: &str,
    env: &Value,
    extra_failures: &[String],
    notes: &SummaryNotes,
) -> Result<(), String> {
    let t = Tally::of(rows);
    let verdict = if extra_failures.is_empty() {
        t.verdict()
    } else {
        "FAIL"
    };
    let meta = &exp.resolved.experiment;
    let mut s = String::new();
    s.push_str(&format!("# {}: {verdict}\n\n", meta.id));
    s.push_str(&format!(
        "**Verdict: {verdict}.** {} cell(s): {} passed, {} failed, {} errored, {} skipped{}.\n",
        rows.len(),
        t.pass,
        t.fail,
        t.error,
        t.skipped,
        if t.nonsmooth > 0 {
            format!(
                ", {} non-smooth (a derivative check met a non-differentiable point)",
                t.nonsmooth
            )
        } else {
            String::new()
        }
    ));
    for f in extra_failures {
        s.push_str(&format!("\n- {f}\n"));
    }
    for l in &notes.lines {
        s.push_str(&format!("\n{l}\n"));
    }
    for r in rows.iter().filter(|r| r.record.status != Status::Pass) {
        let c = &r.record;
        s.push_str(&format!(
            "\n- `{}` {}: {}",
            c.id,
            c.status.as_str(),
            c.reason.as_deref().unwrap_or("")
        ));
    }
    s.push('\n');
    if !meta.title.is_empty() {
        s.push_str(&format!("\n**{}**\n", meta.title));
    }
    if !meta.description.trim().is_empty() {
        s.push_str(&format!("\n{}\n", meta.description.trim()));
    }

    // Published comparisons (phi-cache with expected values).
    let pc: Vec<&Row> = rows
        .iter()
        .filter(|r| r.record.kind == "phi-cache" && r.record.status != Status::Skipped)
        .collect();
    if !pc.is_empty() {
        s.push_str("\n## Phi-carryover cache arithmetic (M2h.3)\n\n");
        s.push_str("| cell | status | loss | expected loss | rel. err | d loss/d cell_a | expected | rel. err | central difference |\n|---|---|---|---|---|---|---|---|---|\n");
        for r in pc {
            let c = &r.record;
            let d = |k: &str| c.details.get(k).and_then(|v| v.as_f64());
            s.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.id,
                c.status.as_str(),
                short(c.loss),
                short(d("expected_loss")),
                short(d("loss_rel_err")),
                short(c.grad_ad),
                short(d("expected_grad")),
                short(d("grad_rel_err")),
                short(c.grad_fd)
            ));
        }
    }
    let gc: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.record.kind == "gradcheck"
                && r.record.status != Status::Skipped
                && r.record.grad_ad.is_some()
        })
        .collect();
    if !gc.is_empty() {
        s.push_str("\n## Gradient checks\n\n");
        s.push_str("Loss = reduction of the ROI intensity; `grad_ad` by forward-mode dual numbers, `grad_fd` by central difference; pass when |ad - ref| <= atol + rtol |ref| for the loss and for every ROI pixel, and the image and derivative are non-zero.\n\n");
        s.push_str("| cell | status | reference | loss | grad_ad | grad_fd | rel. err | worst pixel (fast, slow): ad vs ref | non-zero pixels |\n|---|---|---|---|---|---|---|---|---|\n");
        for r in gc {
            let c = &r.record;
            let wp = c
                .details
                .get("worst_pixel")
                .map(|w| {
                    format!(
                        "({}, {}): {} vs {}",
                        w["fast"],
                        w["slow"],
                        short(w["d_ad"].as_f64()),
                        short(w["d_ref"].as_f64())
                    )
                })
                .unwrap_or_default();
            s.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {}/{} |\n",
                c.id,
                c.status.as_str(),
                c.details
                    .get("reference")
                    .and_then(|v| v.as_str())
                    .unwrap_or(""),
                short(c.loss),
                short(c.grad_ad),
                short(c.grad_fd),
                short(c.rel_err),
                wp,
                c.details
                    .get("nonzero_pixels")
                    .cloned()
                    .unwrap_or(Value::Null),
                c.details.get("pixels").cloned().unwrap_or(Value::Null),
            ));
        }
    }

    super::merge::pictures_section(&mut s, rows, &notes.plots);
    s.push_str("\n## All cells\n\n");
    s.push_str("| cell | probe | device | dtype | param | ROI (f0 f1 s0 s1) | status | loss | grad_ad | grad_fd | abs_err | rel_err | seconds | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let c = &r.record;
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} | {:.3} | {} |\n",
            c.id,
            c.probe,
            c.device,
            c.dtype,
            c.param.as_deref().unwrap_or("–"),
            roi_str(&c.roi),
            c.status.as_str(),
            short(c.loss),
            short(c.grad_ad),
            short(c.grad_fd),
            short(c.abs_err),
            short(c.rel_err),
            r.timing.seconds,
            md_cell(c.reason.as_deref().unwrap_or(""))
        ));
    }

    s.push_str("\n## Configuration\n\n");
    s.push_str(&format!("- experiment file: `{}`\n", exp.file.display()));
    if !exp.sets.is_empty() {
        s.push_str(&format!(
            "- overrides: `--set {}`\n",
            exp.sets.join("` `--set ")
        ));
    }
    for l in model_summary(exp) {
        s.push_str(&format!("- {l}\n"));
    }
    let m = &exp.resolved.matrix;
    let axis = |name: &str, v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|v| format!("- matrix {name}: {}\n", v.join(", ")))
    };
    s.push_str(&axis("device", &m.device).unwrap_or_default());
    s.push_str(&axis("dtype", &m.dtype).unwrap_or_default());
    s.push_str(&axis("param", &m.param).unwrap_or_default());
    if let Some(r) = &m.roi {
        s.push_str(&format!(
            "- matrix roi: {}\n",
            r.iter()
                .map(|r| format!("[{}]", roi_str(r)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (k, v) in &m.model_axes {
        s.push_str(&format!("- matrix {k}: {v}\n"));
    }
    for (i, p) in exp.resolved.probe.iter().enumerate() {
        let settings = match p {
            ProbeSpec::Gradcheck(g) => format!(
                "reduction {:?}, eps {} ({:?}), atol {}, rtol {}, float32: atol {}, rtol {}, require_nonzero {}",
                g.reduction, g.eps, g.eps_mode, g.atol, g.rtol, g.f32_atol, g.f32_rtol, g.require_nonzero
            ),
            ProbeSpec::PhiCache(c) => format!(
                "expected loss {}, expected grad {}, rtol {}, stored x{}, fresh x{}, {} steps",
                c.expected_loss.map(|x| x.to_string()).unwrap_or_else(|| "–".into()),
                c.expected_grad.map(|x| x.to_string()).unwrap_or_else(|| "–".into()),
                c.rtol,
                c.stored_scale,
                c.fresh_scale,
                c.steps
            ),
            ProbeSpec::Parity(c) => format!(
                "reference {}, correlation >= {}, |sum ratio - 1| <= {}, max rel diff <= {}",
                c.reference, c.min_correlation, c.max_sum_ratio_err, c.max_rel_diff
            ),
            ProbeSpec::Simulate(c) => format!("png scale {:?}", c.png_scale),
            ProbeSpec::Benchmark(b) => format!(
                "{} warm-up render(s), {} timed repeat(s), {} derivative direction(s), threads {}",
                b.warmup,
                b.repeats,
                crate::experiment::bench::derivative_params(b).len(),
                b.threads.map(|t| t.to_string()).unwrap_or_else(|| "job share".into())
            ),
        };
        s.push_str(&format!(
            "- probe {i}: `{}` ({}): {settings}\n",
            p.name(),
            p.kind()
        ));
    }
    s.push_str("- the fully resolved configuration is `experiment.toml`\n");

    s.push_str("\n## Environment\n\n");
    let g = |k: &str| {
        env.get(k)
            .map(|v| {
                v.as_str()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_default()
    };
    s.push_str(&format!(
        "- host {} ({}, kernel {}), CPU {} ({} cores)\n",
        g("hostname"),
        g("os"),
        g("kernel"),
        g("cpu_model"),
        g("cores")
    ));
    s.push_str(&format!(
        "- braggrun {} (git {}{}), {}\n",
        g("braggrun_version"),
        g("git_commit"),
        match env.get("git_dirty").and_then(|v| v.as_bool()) {
            Some(true) => ", dirty",
            _ => "",
        },
        g("rustc")
    ));
    let cuda = env.get("cuda").cloned().unwrap_or(Value::Null);
    if cuda.get("available").and_then(|v| v.as_bool()) == Some(true) {
        s.push_str(&format!("- CUDA: {}\n", cuda["devices"]));
    } else {
        s.push_str(&format!(
            "- CUDA: not available ({})\n",
            cuda.get("reason")
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
        ));
    }
    super::merge::shard_env_lines(&mut s, env);
    s.push_str("- details in `env.json`\n");

    s.push_str("\n## Commands\n\n```sh\n");
    s.push_str(commands.trim_end());
    s.push_str("\n```\n");

    s.push_str("\n## Artifacts\n\n");
    let mut files = list_files(bundle)?;
    for extra in ["summary.md", MANIFEST] {
        if !files.iter().any(|f| f == extra) {
            files.push(extra.to_string());
        }
    }
    files.retain(|f| !f.rsplit('/').next().unwrap_or("").starts_with('.'));
    files.sort();
    for f in &files {
        let note = match f.as_str() {
            "experiment.toml" => " — fully resolved configuration",
            "commands.txt" => " — the command to re-run this",
            "env.json" => " — host, toolchain, versions, devices",
            "results.csv" | "results.json" => " — one row per cell",
            "junit.xml" => " — one testcase per cell",
            "summary.md" => " — this report",
            MANIFEST => " — SHA-256 of every other file (`sha256sum -c sha256.txt`), written last",
            _ => "",
        };
        s.push_str(&format!("- `{f}`{note}\n"));
    }
    s.push_str(&format!(
        "\nVerify with `runner verify {}` or `cd {} && sha256sum -c {MANIFEST}`.\n",
        bundle.display(),
        bundle.display()
    ));
    write_atomic(&bundle.join("summary.md"), s.as_bytes())
}
