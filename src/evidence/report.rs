//! Reports of a bundle: results.csv, results.json, summary.md, junit.xml.

use super::{json_bytes, list_files, write_atomic, BundleError, Row, MANIFEST};
use crate::experiment::load::Experiment;
use crate::experiment::result::{GradcheckDetails, PhiCacheDetails, Verdict};
use serde_json::{json, Value};
use std::path::Path;

/// Counts by status.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// PASS cells.
    pub pass: usize,
    /// FAIL cells.
    pub fail: usize,
    /// ERROR cells.
    pub error: usize,
    /// SKIPPED cells.
    pub skipped: usize,
    /// NONSMOOTH cells.
    pub nonsmooth: usize,
}

impl Tally {
    /// Count the rows.
    pub fn of(rows: &[Row]) -> Tally {
        let mut t = Tally::default();
        for r in rows {
            match r.record.status {
                Verdict::Pass => t.pass += 1,
                Verdict::Fail => t.fail += 1,
                Verdict::Error => t.error += 1,
                Verdict::Skipped => t.skipped += 1,
                Verdict::NonSmooth => t.nonsmooth += 1,
            }
        }
        t
    }
    /// The cells' verdict: FAIL when a cell failed or errored, else
    /// NONSMOOTH when a derivative check met a non-differentiable point
    /// (not a pass), else PASS.
    pub fn verdict(&self) -> Verdict {
        if self.fail + self.error > 0 {
            Verdict::Fail
        } else if self.nonsmooth > 0 {
            Verdict::NonSmooth
        } else {
            Verdict::Pass
        }
    }

    /// A bundle's verdict: FAIL when there are failures outside the cells
    /// (I/O errors, missing cells), else the cells' verdict.
    pub fn overall(&self, extra_failures: &[String]) -> Verdict {
        if extra_failures.is_empty() {
            self.verdict()
        } else {
            Verdict::Fail
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
pub fn write_results(bundle: &Path, rows: &[Row]) -> Result<(), BundleError> {
    let csv_err = |e: csv::Error| BundleError(format!("results.csv: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS).map_err(csv_err)?;
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
        .map_err(csv_err)?;
        list.push(json!({
            "id": c.id, "probe": c.probe, "kind": c.kind, "status": c.status,
            "device": c.device, "dtype": c.dtype, "param": c.param, "roi": c.roi,
            "loss": c.loss, "grad_ad": c.grad_ad, "grad_fd": c.grad_fd,
            "abs_err": c.abs_err, "rel_err": c.rel_err,
            "seconds": r.timing.seconds, "engine": r.timing.engine,
            "reason": c.reason, "axes": c.axes,
        }));
    }
    let bytes = w
        .into_inner()
        .map_err(|e| BundleError(format!("results.csv: {e}")))?;
    write_atomic(&bundle.join("results.csv"), &bytes)?;
    write_atomic(
        &bundle.join("results.json"),
        &json_bytes(&Value::Array(list)),
    )
}

/// junit.xml: one testcase per cell (quick-junit): PASS with the numbers on
/// system-out, SKIPPED with its reason, FAIL and NONSMOOTH as failures
/// (type FAIL or NONSMOOTH, the numbers as the text), ERROR as an error.
pub fn write_junit(bundle: &Path, exp_id: &str, rows: &[Row]) -> Result<(), BundleError> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let total: f64 = rows.iter().map(|r| r.timing.seconds).sum();
    let seconds = |s: f64| std::time::Duration::from_secs_f64(s.max(0.0));
    let mut suite = TestSuite::new(exp_id);
    for r in rows {
        let c = &r.record;
        let reason = c.reason.as_deref().unwrap_or("");
        let body = format!(
            "loss={} grad_ad={} grad_fd={} abs_err={} rel_err={}",
            num(c.loss),
            num(c.grad_ad),
            num(c.grad_fd),
            num(c.abs_err),
            num(c.rel_err)
        );
        let failure = |kind: NonSuccessKind, ty: &str, text: &str| {
            let mut st = TestCaseStatus::non_success(kind);
            st.set_message(reason).set_type(ty).set_description(text);
            st
        };
        let status = match c.status {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Skipped => {
                let mut st = TestCaseStatus::skipped();
                st.set_message(reason);
                st
            }
            Verdict::Fail => failure(NonSuccessKind::Failure, "FAIL", &body),
            Verdict::Error => failure(NonSuccessKind::Error, "ERROR", reason),
            Verdict::NonSmooth => failure(NonSuccessKind::Failure, "NONSMOOTH", &body),
        };
        let mut tc = TestCase::new(c.id.as_str(), status);
        tc.set_classname(format!("{exp_id}.{}", c.probe));
        tc.set_time(seconds(r.timing.seconds));
        if c.status == Verdict::Pass {
            tc.set_system_out(body.as_str());
        }
        suite.add_test_case(tc);
    }
    suite.set_time(seconds(total));
    let mut report = Report::new(exp_id);
    report.set_time(seconds(total));
    report.add_test_suite(suite);
    let xml = report
        .to_string()
        .map_err(|e| BundleError(format!("junit.xml: {e}")))?;
    write_atomic(&bundle.join("junit.xml"), xml.as_bytes())
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
) -> Result<(), BundleError> {
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
    /// Paragraphs under the verdict.
    pub lines: Vec<String>,
    /// Plots in the bundle root (relative paths).
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
) -> Result<(), BundleError> {
    let t = Tally::of(rows);
    let verdict = t.overall(extra_failures);
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
    for r in rows.iter().filter(|r| r.record.status != Verdict::Pass) {
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
        .filter(|r| r.record.kind == "phi-cache" && r.record.status != Verdict::Skipped)
        .collect();
    if !pc.is_empty() {
        s.push_str("\n## Phi-carryover cache arithmetic (M2h.3)\n\n");
        s.push_str("| cell | status | loss | expected loss | rel. err | d loss/d cell_a | expected | rel. err | central difference |\n|---|---|---|---|---|---|---|---|---|\n");
        for r in pc {
            let c = &r.record;
            let d = c.details_as::<PhiCacheDetails>();
            let d = d.as_ref();
            s.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.id,
                c.status.as_str(),
                short(c.loss),
                short(d.and_then(|d| d.expected_loss)),
                short(d.and_then(|d| d.loss_rel_err)),
                short(c.grad_ad),
                short(d.and_then(|d| d.expected_grad)),
                short(d.and_then(|d| d.grad_rel_err)),
                short(c.grad_fd)
            ));
        }
    }
    let gc: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.record.kind == "gradcheck"
                && r.record.status != Verdict::Skipped
                && r.record.grad_ad.is_some()
        })
        .collect();
    if !gc.is_empty() {
        s.push_str("\n## Gradient checks\n\n");
        s.push_str("Loss = reduction of the ROI intensity; `grad_ad` by forward-mode dual numbers, `grad_fd` by central difference; pass when |ad - ref| <= atol + rtol |ref| for the loss and for every ROI pixel, and the image and derivative are non-zero.\n\n");
        s.push_str("| cell | status | reference | loss | grad_ad | grad_fd | rel. err | worst pixel (fast, slow): ad vs ref | non-zero pixels |\n|---|---|---|---|---|---|---|---|---|\n");
        for r in gc {
            let c = &r.record;
            let d = c.details_as::<GradcheckDetails>();
            let wp = d
                .as_ref()
                .and_then(|d| d.worst_pixel.as_ref())
                .map(|w| {
                    format!(
                        "({}, {}): {} vs {}",
                        w.fast,
                        w.slow,
                        short(w.d_ad),
                        short(w.d_ref)
                    )
                })
                .unwrap_or_default();
            let count =
                |n: Option<usize>| n.map(|n| n.to_string()).unwrap_or_else(|| "null".into());
            s.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {}/{} |\n",
                c.id,
                c.status.as_str(),
                d.as_ref().map(|d| d.reference.as_str()).unwrap_or(""),
                short(c.loss),
                short(c.grad_ad),
                short(c.grad_fd),
                short(c.rel_err),
                wp,
                count(d.as_ref().map(|d| d.nonzero_pixels)),
                count(d.as_ref().map(|d| d.pixels)),
            ));
        }
    }

    super::pictures::pictures_section(&mut s, rows, &notes.plots);
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
        let settings = p.settings_summary();
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
    shard_env_lines(&mut s, env);
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

/// Environment lines of a merged bundle: one per shard.
fn shard_env_lines(s: &mut String, env: &Value) {
    let Some(list) = env.get("shards").and_then(|v| v.as_array()) else {
        return;
    };
    for e in list {
        let g = |k: &str| {
            e["env"]
                .get(k)
                .map(|v| {
                    v.as_str()
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_else(|| "?".into())
        };
        s.push_str(&format!(
            "- shard {}: host {} ({}, {} cores), braggrun {} (git {}), at {}\n",
            e["shard"].as_str().unwrap_or("?"),
            g("hostname"),
            g("cpu_model"),
            g("cores"),
            g("braggrun_version"),
            g("git_commit"),
            g("time_utc")
        ));
    }
}
