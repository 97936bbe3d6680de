//! Reports of a bundle: results.csv, results.json, summary.md, junit.xml.

use super::{json_bytes, list_files, write_atomic, BundleError, Row, MANIFEST};
use crate::experiment::load::Experiment;
use crate::experiment::result::{
    BenchmarkDetails, CellRecord, GradcheckDetails, ParityDetails, PhiCacheDetails, RefineDetails,
    SimulateDetails, Verdict,
};
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

// ---- Probe kinds: what each one is about ----

/// How the reports show one probe kind: its figures (named columns of
/// results.csv, `figures` of results.json, the junit body) and its section
/// of summary.md. A new probe kind (e.g. a future `refine`) adds one entry
/// to [`KIND_REPORTS`]; cells of a kind without an entry are still listed
/// under "All cells".
pub struct KindReport {
    /// The probe kind (`CellRecord::kind`).
    pub kind: &'static str,
    /// Names of its figures (results.csv columns), in order.
    pub columns: &'static [&'static str],
    /// A record's figures, aligned with `columns` (None: not measured).
    pub figures: fn(&CellRecord) -> Vec<Option<f64>>,
    /// Append the kind's summary.md section for these cells (all of this
    /// kind, in report order).
    pub section: fn(&mut String, &[&Row]),
}

/// Every probe kind the reports know, in the order of summary.md.
pub const KIND_REPORTS: &[KindReport] = &[
    KindReport {
        kind: "phi-cache",
        columns: &[
            "loss",
            "grad_ad",
            "grad_fd",
            "abs_err",
            "rel_err",
            "expected_loss",
            "expected_grad",
        ],
        figures: |c| {
            let d = c.details_as::<PhiCacheDetails>();
            vec![
                c.loss,
                c.grad_ad,
                c.grad_fd,
                c.abs_err,
                c.rel_err,
                d.as_ref().and_then(|d| d.expected_loss),
                d.as_ref().and_then(|d| d.expected_grad),
            ]
        },
        section: phi_cache_section,
    },
    KindReport {
        kind: "gradcheck",
        columns: &["loss", "grad_ad", "grad_fd", "abs_err", "rel_err"],
        figures: |c| vec![c.loss, c.grad_ad, c.grad_fd, c.abs_err, c.rel_err],
        section: gradcheck_section,
    },
    KindReport {
        kind: "parity",
        columns: &[
            "correlation",
            "sum_ratio",
            "max_abs_diff",
            "max_rel_diff",
            "image_sum",
        ],
        figures: |c| {
            let d = c.details_as::<ParityDetails>();
            let d = d.as_ref();
            vec![
                d.and_then(|d| d.correlation),
                d.and_then(|d| d.sum_ratio),
                d.and_then(|d| d.max_abs_diff),
                d.and_then(|d| d.max_rel_diff),
                c.loss,
            ]
        },
        section: parity_section,
    },
    KindReport {
        kind: "simulate",
        columns: &["image_sum", "image_max", "image_mean", "nonzero_pixels"],
        figures: |c| {
            let d = c.details_as::<SimulateDetails>();
            let d = d.as_ref();
            vec![
                c.loss,
                d.and_then(|d| d.max),
                d.and_then(|d| d.mean),
                d.map(|d| d.nonzero_pixels as f64),
            ]
        },
        section: simulate_section,
    },
    KindReport {
        kind: "benchmark",
        columns: &[
            "median_s",
            "min_s",
            "max_s",
            "kernel_median_s",
            "pixel_samples",
            "pixel_samples_per_s",
            "kernel_pixel_samples_per_s",
            "threads",
            "image_sum",
        ],
        figures: |c| {
            let d = c.details_as::<BenchmarkDetails>();
            let d = d.as_ref();
            vec![
                d.map(|d| d.median_s),
                d.map(|d| d.min_s),
                d.map(|d| d.max_s),
                d.and_then(|d| d.kernel_median_s),
                d.map(|d| d.pixel_samples),
                d.map(|d| d.pixel_samples_per_s),
                d.and_then(|d| d.kernel_pixel_samples_per_s),
                d.map(|d| d.threads as f64),
                d.map(|d| d.image_sum).or(c.loss),
            ]
        },
        section: benchmark_section,
    },
    KindReport {
        kind: "refine",
        columns: &[
            "converged",
            "iterations",
            "renders",
            "params",
            "loss_start",
            "loss_final",
            "worst_rel_error",
            "max_abs_pull",
            "fit_wall_s",
        ],
        figures: |c| {
            let d = c.details_as::<RefineDetails>();
            let d = d.as_ref();
            vec![
                d.map(|d| if d.fit.converged { 1.0 } else { 0.0 }),
                d.map(|d| d.fit.iterations as f64),
                d.map(|d| d.fit.renders as f64),
                d.map(|d| d.params.len() as f64),
                d.map(|d| d.fit.loss_start),
                d.map(|d| d.fit.loss_final).or(c.loss),
                d.and_then(|d| d.worst_rel_error),
                d.and_then(|d| d.max_abs_pull),
                d.map(|d| d.wall_s),
            ]
        },
        section: refine_section,
    },
];

/// The report entry of a probe kind.
pub fn kind_report(kind: &str) -> Option<&'static KindReport> {
    KIND_REPORTS.iter().find(|k| k.kind == kind)
}

/// A record's figures by name (its kind's columns; empty for an unknown kind).
pub fn figures_of(c: &CellRecord) -> Vec<(&'static str, Option<f64>)> {
    match kind_report(&c.kind) {
        Some(k) => k.columns.iter().copied().zip((k.figures)(c)).collect(),
        None => vec![],
    }
}

/// The axes every cell has (fixed columns of results.csv).
const FIXED_AXES: [&str; 5] = ["probe", "device", "dtype", "param", "roi"];

/// The region of interest as named columns (inclusive pixel indices).
pub const ROI_COLUMNS: [&str; 4] = [
    "roi_fast_min",
    "roi_fast_max",
    "roi_slow_min",
    "roi_slow_max",
];

/// One axis value as CSV fields: a scalar as one field, an array as one
/// field per element (`key[i]`), anything else as compact JSON.
fn axis_fields(key: &str, v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Array(a) if a.iter().all(|x| !x.is_array() && !x.is_object()) => a
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("{key}[{i}]"), scalar_field(x)))
            .collect(),
        other => vec![(key.to_string(), scalar_field(other))],
    }
}

fn scalar_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map(|x| num(Some(x))).unwrap_or_default(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// The header of results.csv for these rows: cell, status, one column per
/// matrix axis (ROI as four), the figures of the kinds present, the cell's
/// wall time, threads, engine, reason.
fn csv_header(rows: &[Row]) -> (Vec<String>, Vec<String>, Vec<&'static str>) {
    let mut axis_cols: Vec<String> = Vec::new();
    for r in rows {
        for (k, v) in &r.record.axes {
            if FIXED_AXES.contains(&k.as_str()) {
                continue;
            }
            for (name, _) in axis_fields(k, v) {
                if !axis_cols.contains(&name) {
                    axis_cols.push(name);
                }
            }
        }
    }
    axis_cols.sort();
    let mut fig_cols: Vec<&'static str> = Vec::new();
    for k in KIND_REPORTS {
        if rows.iter().any(|r| r.record.kind == k.kind) {
            for c in k.columns {
                if !fig_cols.contains(c) {
                    fig_cols.push(c);
                }
            }
        }
    }
    let mut head: Vec<String> = ["id", "probe", "kind", "status", "device", "dtype", "param"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    head.extend(ROI_COLUMNS.iter().map(|s| s.to_string()));
    head.extend(axis_cols.iter().cloned());
    head.extend(fig_cols.iter().map(|s| s.to_string()));
    head.extend(
        [
            "cell_wall_s",
            "cell_threads",
            "ran_alone",
            "engine",
            "reason",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    (head, axis_cols, fig_cols)
}

/// results.csv and results.json.
pub fn write_results(bundle: &Path, rows: &[Row]) -> Result<(), BundleError> {
    let csv_err = |e: csv::Error| BundleError(format!("results.csv: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    let (head, axis_cols, fig_cols) = csv_header(rows);
    w.write_record(&head).map_err(csv_err)?;
    let mut list = Vec::new();
    for r in rows {
        let c = &r.record;
        let mut rec = vec![
            c.id.clone(),
            c.probe.clone(),
            c.kind.clone(),
            c.status.as_str().to_string(),
            c.device.clone(),
            c.dtype.clone(),
            c.param.clone().unwrap_or_default(),
        ];
        rec.extend(c.roi.iter().map(|x| x.to_string()));
        let axes: Vec<(String, String)> = c
            .axes
            .iter()
            .filter(|(k, _)| !FIXED_AXES.contains(&k.as_str()))
            .flat_map(|(k, v)| axis_fields(k, v))
            .collect();
        for col in &axis_cols {
            rec.push(
                axes.iter()
                    .find(|(k, _)| k == col)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
            );
        }
        let figs = figures_of(c);
        for col in &fig_cols {
            rec.push(num(figs
                .iter()
                .find(|(k, _)| k == col)
                .and_then(|(_, v)| *v)));
        }
        rec.push(format!("{:.6}", r.timing.seconds));
        rec.push(r.timing.threads.to_string());
        rec.push(c.ran_alone.to_string());
        rec.push(r.timing.engine.clone().unwrap_or_default());
        rec.push(c.reason.clone().unwrap_or_default());
        w.write_record(&rec).map_err(csv_err)?;
        let figures: serde_json::Map<String, Value> = figs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        list.push(json!({
            "id": c.id, "probe": c.probe, "kind": c.kind, "status": c.status,
            "device": c.device, "dtype": c.dtype, "param": c.param, "roi": c.roi,
            "loss": c.loss, "grad_ad": c.grad_ad, "grad_fd": c.grad_fd,
            "abs_err": c.abs_err, "rel_err": c.rel_err, "figures": figures,
            "cell_wall_s": r.timing.seconds, "cell_threads": r.timing.threads,
            "ran_alone": c.ran_alone, "engine": r.timing.engine,
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
        let body = figures_of(c)
            .iter()
            .map(|(k, v)| format!("{k}={}", num(*v)))
            .collect::<Vec<_>>()
            .join(" ");
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

/// The model as configured and as resolved: the numbers a render of the
/// base configuration uses (C's defaults filled in: beam centre, oversample,
/// mosaic domains, ...). Cells with model axes vary some of these.
fn model_summary(exp: &Experiment) -> Vec<String> {
    use crate::physics::params::Param as P;
    let m = &exp.resolved.model;
    let sim = match crate::physics::Simulation::prepare(m, &exp.base_dir) {
        Ok(sim) => sim,
        Err(e) => return vec![format!("model: could not be resolved ({e})")],
    };
    let st = &sim.setup;
    let u = |p: P| short(Some(st.user[p as usize]));
    let mut v = Vec::new();
    match &m.crystal.mosflm_matrix {
        Some(p) => v.push(format!("crystal: MOSFLM matrix {}", p.display())),
        None => v.push(format!(
            "crystal: cell {} {} {} Å, {} {} {}°",
            u(P::CellA),
            u(P::CellB),
            u(P::CellC),
            u(P::CellAlpha),
            u(P::CellBeta),
            u(P::CellGamma)
        )),
    }
    v.push(format!(
        "crystal: N = {} x {} x {}, shape {:?}, default_F {}{}; misset {} {} {}°",
        u(P::NA),
        u(P::NB),
        u(P::NC),
        st.shape,
        u(P::DefaultF),
        m.crystal
            .hkl_file
            .as_ref()
            .map(|p| format!(", HKL {}", p.display()))
            .unwrap_or_default(),
        u(P::MissetX),
        u(P::MissetY),
        u(P::MissetZ),
    ));
    v.push(format!(
        "mosaic: spread {}°, {} domain(s)",
        u(P::MosaicSpread),
        st.mosaic_deviates.len().max(1)
    ));
    v.push(format!(
        "beam: wavelength {} Å, {} source(s), fluence {} photons/m², polarization {}",
        u(P::Wavelength),
        st.sources.len(),
        u(P::Fluence),
        u(P::Polarization)
    ));
    let carry = serde_json::to_value(m.phi_carryover)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.to_string()))
        .unwrap_or_default();
    v.push(format!(
        "goniometer: phi0 {}°, oscillation {}° in {} step(s); phi carryover {carry}",
        u(P::PhiStart),
        u(P::OscRange),
        st.phisteps
    ));
    let r = st.roi;
    v.push(format!(
        "detector: {:?}, pivot {:?}, {} x {} pixels of {} mm, distance {} mm, beam centre {} x {} mm (Xbeam x Ybeam; Fbeam {}, Sbeam {} mm), rotations {} {} {}°, two-theta {}°, oversample {}{}",
        st.convention,
        st.pivot,
        st.fpixels,
        st.spixels,
        short(Some(st.pixel_size * 1e3)),
        u(P::Distance),
        short(Some(st.centre.xbeam * 1e3)),
        short(Some(st.centre.ybeam * 1e3)),
        u(P::BeamCenterF),
        u(P::BeamCenterS),
        u(P::DetectorRotX),
        u(P::DetectorRotY),
        u(P::DetectorRotZ),
        u(P::Twotheta),
        st.oversample,
        if st.oversample_auto { " (automatic)" } else { "" },
    ));
    v.push(format!(
        "region of interest: fast {}..{}, slow {}..{} (inclusive); {} pixel-samples per render",
        r[0],
        r[1],
        r[2],
        r[3],
        short(Some(sim.pixel_samples(r)))
    ));
    v
}

/// The headline verdict: PASS, FAIL or NONSMOOTH, and how many cells were
/// skipped and why, e.g. `PASS (2 of 4 cells skipped: no GPU)`.
pub fn headline(verdict: Verdict, rows: &[Row]) -> String {
    let mut why: std::collections::BTreeMap<String, usize> = Default::default();
    for r in rows.iter().filter(|r| r.record.status == Verdict::Skipped) {
        *why.entry(skip_label(&r.record)).or_default() += 1;
    }
    let n: usize = why.values().sum();
    if n == 0 {
        return verdict.to_string();
    }
    let reasons = if why.len() == 1 {
        why.keys().next().cloned().unwrap_or_default()
    } else {
        why.iter()
            .map(|(k, c)| format!("{c} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{verdict} ({n} of {} cell{} skipped: {reasons})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    )
}

/// Why a cell was skipped, in a few words.
fn skip_label(c: &CellRecord) -> String {
    if c.not_run {
        "not run after --fail-fast".into()
    } else if c.device_unavailable && c.device.starts_with("cuda") {
        "no GPU".into()
    } else if c.device_unavailable {
        format!("no {}", c.device)
    } else {
        let r = c.reason.as_deref().unwrap_or("no reason given");
        r.chars().take(60).collect()
    }
}

// ---- The sections of each probe kind ----

/// The rows whose typed probe details read as `T` (the cells of one probe
/// kind that recorded them), each with its details.
fn with_details<'a, T: serde::de::DeserializeOwned>(rows: &[&'a Row]) -> Vec<(&'a Row, T)> {
    rows.iter()
        .filter_map(|r| r.record.details_as::<T>().map(|d| (*r, d)))
        .collect()
}

/// The head of a cell table in summary.md: the cell and status columns, then
/// `columns`, and the Markdown rule under them.
fn table_head(columns: &[&str]) -> String {
    format!(
        "| cell | status | {} |\n|{}\n",
        columns.join(" | "),
        "---|".repeat(columns.len() + 2)
    )
}

/// One row of a cell table: the cell's id and status, then `cells`.
fn table_row(c: &CellRecord, cells: &[String]) -> String {
    format!(
        "| `{}` | {} | {} |\n",
        c.id,
        c.status.as_str(),
        cells.join(" | ")
    )
}

fn phi_cache_section(s: &mut String, rows: &[&Row]) {
    let pc: Vec<&&Row> = rows
        .iter()
        .filter(|r| r.record.status != Verdict::Skipped)
        .collect();
    if pc.is_empty() {
        return;
    }
    s.push_str("\n## Phi-carryover cache arithmetic (M2h.3)\n\n");
    s.push_str(&table_head(&[
        "loss",
        "expected loss",
        "rel. err",
        "d loss/d cell_a",
        "expected",
        "rel. err",
        "central difference",
    ]));
    for r in pc {
        let c = &r.record;
        let d = c.details_as::<PhiCacheDetails>();
        let d = d.as_ref();
        s.push_str(&table_row(
            c,
            &[
                short(c.loss),
                short(d.and_then(|d| d.expected_loss)),
                short(d.and_then(|d| d.loss_rel_err)),
                short(c.grad_ad),
                short(d.and_then(|d| d.expected_grad)),
                short(d.and_then(|d| d.grad_rel_err)),
                short(c.grad_fd),
            ],
        ));
    }
}

fn gradcheck_section(s: &mut String, rows: &[&Row]) {
    let gc: Vec<&&Row> = rows
        .iter()
        .filter(|r| r.record.status != Verdict::Skipped && r.record.grad_ad.is_some())
        .collect();
    if gc.is_empty() {
        return;
    }
    s.push_str("\n## Gradient checks\n\n");
    s.push_str("Loss = reduction of the ROI intensity; `grad_ad` by forward-mode dual numbers, `grad_fd` by central difference; pass when |ad - ref| <= atol + rtol |ref| for the loss and for every ROI pixel, and the image and derivative are non-zero.\n\n");
    s.push_str(&table_head(&[
        "reference",
        "loss",
        "grad_ad",
        "grad_fd",
        "rel. err",
        "worst pixel (fast, slow): ad vs ref",
        "non-zero pixels",
    ]));
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
        let count = |n: Option<usize>| n.map(|n| n.to_string()).unwrap_or_else(|| "null".into());
        s.push_str(&table_row(
            c,
            &[
                d.as_ref().map(|d| d.reference.clone()).unwrap_or_default(),
                short(c.loss),
                short(c.grad_ad),
                short(c.grad_fd),
                short(c.rel_err),
                wp,
                format!(
                    "{}/{}",
                    count(d.as_ref().map(|d| d.nonzero_pixels)),
                    count(d.as_ref().map(|d| d.pixels))
                ),
            ],
        ));
    }
}

fn parity_section(s: &mut String, rows: &[&Row]) {
    let list = with_details::<ParityDetails>(rows);
    if list.is_empty() {
        return;
    }
    s.push_str("\n## Parity with reference images\n\n");
    s.push_str("Render against the reference image over the ROI: Pearson correlation, sum(render) / sum(reference), and max |render - reference| (absolute, and over max |reference|); each against its limit.\n\n");
    s.push_str(&table_head(&[
        "correlation",
        "limit",
        "sum ratio",
        "limit (\\|ratio - 1\\|)",
        "max \\|difference\\|",
        "max rel. difference",
        "limit",
        "reference",
    ]));
    for (r, d) in list {
        s.push_str(&table_row(
            &r.record,
            &[
                corr(d.correlation),
                format!(">= {}", short(Some(d.min_correlation))),
                short(d.sum_ratio),
                format!("<= {}", short(Some(d.max_sum_ratio_err))),
                short(d.max_abs_diff),
                short(d.max_rel_diff),
                format!("<= {}", short(Some(d.max_rel_diff_limit))),
                format!("`{}`", md_cell(&d.reference)),
            ],
        ));
    }
}

/// A correlation with the digits that matter near 1 (0.9999999987).
fn corr(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.10}"),
        other => short(other),
    }
}

fn simulate_section(s: &mut String, rows: &[&Row]) {
    let list = with_details::<SimulateDetails>(rows);
    if list.is_empty() {
        return;
    }
    s.push_str("\n## Renders\n\n");
    s.push_str(&table_head(&[
        "detector",
        "image sum (ROI)",
        "max",
        "mean",
        "non-zero pixels",
    ]));
    for (r, d) in list {
        let c = &r.record;
        s.push_str(&table_row(
            c,
            &[
                format!("{} x {}", d.fpixels, d.spixels),
                short(c.loss),
                short(d.max),
                short(d.mean),
                d.nonzero_pixels.to_string(),
            ],
        ));
    }
}

fn benchmark_section(s: &mut String, rows: &[&Row]) {
    let list = with_details::<BenchmarkDetails>(rows);
    if list.is_empty() {
        return;
    }
    let best = list
        .iter()
        .map(|(_, d)| d.pixel_samples_per_s)
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold(0.0f64, f64::max);
    s.push_str("\n## Benchmarks\n\n");
    s.push_str("Warm renders: median (min to max) seconds of the timed repeats; on a GPU also the kernels alone (CUDA events). Pixel-samples per second at the median. `x fastest`: how many times longer than the fastest cell of this bundle a pixel-sample takes (1 = the fastest). Compare cells of one bundle only (one machine: see Environment).\n\n");
    s.push_str(&table_head(&[
        "device",
        "threads",
        "derivatives",
        "repeats",
        "median s (min to max)",
        "kernel median s",
        "pixel-samples/s",
        "kernel pixel-samples/s",
        "x fastest",
        "ran alone",
    ]));
    for (r, d) in &list {
        let c = &r.record;
        let ratio = if best > 0.0 && d.pixel_samples_per_s > 0.0 {
            format!("{:.2}", best / d.pixel_samples_per_s)
        } else {
            "–".into()
        };
        s.push_str(&table_row(
            c,
            &[
                md_cell(&d.device_name),
                if d.threads == 0 {
                    "–".to_string()
                } else {
                    d.threads.to_string()
                },
                d.derivatives.len().to_string(),
                d.repeats.to_string(),
                format!("{} ({} to {})", sig(d.median_s), sig(d.min_s), sig(d.max_s)),
                d.kernel_median_s.map(sig).unwrap_or_else(|| "–".into()),
                sci(d.pixel_samples_per_s),
                d.kernel_pixel_samples_per_s
                    .map(sci)
                    .unwrap_or_else(|| "–".into()),
                ratio,
                (if c.ran_alone { "yes" } else { "no" }).to_string(),
            ],
        ));
    }
    if list.iter().all(|(r, _)| r.record.ran_alone) {
        s.push_str("\nEvery benchmark cell ran alone: no other cell of this run shared the machine while it was timed.\n");
    } else {
        s.push_str("\nA benchmark cell without `ran alone` shared the machine with other cells (a bundle from an older runner): its times may be inflated.\n");
    }
}

fn refine_section(s: &mut String, rows: &[&Row]) {
    let list: Vec<(&Row, RefineDetails)> = rows
        .iter()
        .filter_map(|r| r.record.details_as::<RefineDetails>().map(|d| (*r, d)))
        .collect();
    if list.is_empty() {
        return;
    }
    s.push_str("\n## Refinement\n\n");
    s.push_str("Levenberg-Marquardt on the forward-mode Jacobian: each cell fits its parameters to the observed image from the start given, and passes when the fit converged and every parameter with a known truth is within the tolerance. `error` is final - truth; `rel. error` is |error| / |truth|; `SE` is the standard error from (Jᵀ W J)⁻¹ times the dispersion; `pull` is error / SE. Files per cell: trajectory.csv, observed/model/residual images, convergence.png.\n\n");
    s.push_str("| cell | status | observed | objective | parameters | converged | iterations | renders | loss start → final | worst rel. error | max \\|pull\\| | tolerance | fit s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (r, d) in &list {
        let c = &r.record;
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} / {} | {} | {} → {} | {} | {} | {} | {} |\n",
            c.id,
            c.status.as_str(),
            md_cell(&d.observed),
            d.objective,
            d.params.len(),
            if d.fit.converged { "yes" } else { "no" },
            d.fit.iterations,
            d.max_iterations,
            d.fit.renders,
            short(Some(d.fit.loss_start)),
            short(Some(d.fit.loss_final)),
            short(d.worst_rel_error),
            short(d.max_abs_pull),
            md_cell(&d.tolerance),
            sig(d.wall_s),
        ));
    }
    for (r, d) in &list {
        let c = &r.record;
        s.push_str(&format!(
            "\n### `{}` ({}, {} {}): {}\n\n",
            c.id,
            c.status.as_str(),
            c.dtype,
            c.device,
            md_cell(&d.fit.stop_reason)
        ));
        if let Some(reason) = &c.reason {
            s.push_str(&format!("Reason: {}\n\n", md_cell(reason)));
        }
        s.push_str("| parameter | unit | start | final | truth | error | rel. error | SE | pull | within |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for q in &d.params {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                q.name,
                q.unit,
                full(q.start),
                full(q.value),
                q.truth.map(full).unwrap_or_else(|| "–".into()),
                short(q.error),
                short(q.rel_error),
                short(q.se),
                q.pull
                    .map(|x| format!("{x:+.3}"))
                    .unwrap_or_else(|| "–".into()),
                match q.within_tolerance {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                },
            ));
        }
    }
    refine_device_agreement(s, &list);
}

/// A parameter value with every digit that reads back to it.
fn full(x: f64) -> String {
    format!("{x}")
}

/// The same fit on different devices (cells alike but for the device): the
/// largest relative difference of the final parameters.
fn refine_device_agreement(s: &mut String, list: &[(&Row, RefineDetails)]) {
    let key = |c: &CellRecord| {
        let mut axes = c.axes.clone();
        axes.remove("device");
        (
            c.probe.clone(),
            c.dtype.clone(),
            c.roi,
            Value::from(serde_json::Map::from_iter(axes)),
        )
    };
    let mut lines = Vec::new();
    for (i, (ra, da)) in list.iter().enumerate() {
        if ra.record.status == Verdict::Skipped || !da.fit.converged {
            continue;
        }
        for (rb, db) in list.iter().skip(i + 1) {
            if rb.record.status == Verdict::Skipped
                || !db.fit.converged
                || rb.record.device == ra.record.device
                || key(&ra.record) != key(&rb.record)
                || da.params.len() != db.params.len()
            {
                continue;
            }
            let mut worst = (0.0f64, String::new());
            for (p, q) in da.params.iter().zip(&db.params) {
                let d = (p.value - q.value).abs()
                    / p.value.abs().max(p.scale.abs()).max(f64::MIN_POSITIVE);
                if d.is_nan() || d > worst.0 {
                    worst = (d, p.name.clone());
                }
            }
            lines.push(format!(
                "| `{}` | `{}` | {} | {} |\n",
                ra.record.id,
                rb.record.id,
                short(Some(worst.0)),
                worst.1
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    s.push_str("\n### The same fit on different devices\n\nLargest |final_a - final_b| / max(|final_a|, scale) over the parameters, for converged cells alike but for the device.\n\n| cell a | cell b | largest relative difference | parameter |\n|---|---|---|---|\n");
    for l in lines {
        s.push_str(&l);
    }
}

/// Four significant digits (seconds).
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

/// Scientific with three significant digits (rates).
fn sci(x: f64) -> String {
    format!("{x:.2e}")
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

/// summary.md: the headline verdict (with skipped cells counted), a section
/// per probe kind ([`KIND_REPORTS`]), pictures, every cell, the configuration
/// (with resolved values), environment, commands, artifacts.
/// `notes` go under the verdict, and its plots and the cells' PNGs are linked.
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
    s.push_str(&format!("# {}: {}\n\n", meta.id, headline(verdict, rows)));
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

    // The figures each probe kind is about, one section per kind.
    for k in KIND_REPORTS {
        let of_kind: Vec<&Row> = rows.iter().filter(|r| r.record.kind == k.kind).collect();
        if !of_kind.is_empty() {
            (k.section)(&mut s, &of_kind);
        }
    }

    super::pictures::pictures_section(&mut s, rows, &notes.plots);
    s.push_str("\n## All cells\n\n");
    s.push_str("Each probe kind's figures are in its section above and in `results.csv`.\n\n");
    s.push_str("| cell | probe (kind) | device | dtype | param | ROI fast, slow | status | cell wall s | note |\n|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let c = &r.record;
        let mut note = c.reason.clone().unwrap_or_default();
        if c.ran_alone {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str("ran alone");
        }
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {}..{}, {}..{} | **{}** | {:.3} | {} |\n",
            c.id,
            if c.probe == c.kind {
                c.kind.clone()
            } else {
                format!("{} ({})", c.probe, c.kind)
            },
            c.device,
            c.dtype,
            c.param.as_deref().unwrap_or("–"),
            c.roi[0],
            c.roi[1],
            c.roi[2],
            c.roi[3],
            c.status.as_str(),
            r.timing.seconds,
            md_cell(&note)
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
    s.push_str("- resolved model (the values a render of the base configuration uses, defaults filled in):\n");
    for l in model_summary(exp) {
        s.push_str(&format!("  - {l}\n"));
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
                .map(|r| format!("[{}, {}, {}, {}]", r[0], r[1], r[2], r[3]))
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
    // The journal of finished cells goes when the manifest is written.
    files.retain(|f| {
        !f.rsplit('/').next().unwrap_or("").starts_with('.') && f != super::journal::JOURNAL
    });
    files.sort();
    for f in &files {
        let note = match f.as_str() {
            "experiment.toml" => " — fully resolved configuration",
            "commands.txt" => " — the command to re-run this",
            "env.json" => " — host, toolchain, versions, devices",
            "results.csv" => " — one row per cell, one column per axis and figure",
            "results.json" => " — one row per cell",
            "plan.json" => " — the planned cells (what `--resume` runs)",
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
