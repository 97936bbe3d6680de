//! Geometry pinned against the spec's acceptance tests (spec-a-core AT-GEO-*).

use braggrun::physics::config::*;
use braggrun::physics::setup::detector_geometry;
use braggrun::physics::Simulation;
use std::path::Path;

fn mosflm(xbeam: f64, ybeam: f64) -> SimConfig {
    let mut c = SimConfig::default();
    c.crystal.cell = Some([100.0, 100.0, 100.0, 90.0, 90.0, 90.0]);
    c.crystal.default_f = 100.0;
    c.detector.convention = Convention::Mosflm;
    c.detector.pixel_size_mm = 0.1;
    c.detector.fpixels = Some(1024);
    c.detector.spixels = Some(1024);
    c.detector.distance_mm = 100.0;
    c.detector.xbeam_mm = Some(xbeam);
    c.detector.ybeam_mm = Some(ybeam);
    c
}

/// AT-GEO-001: MOSFLM beam centre 51.2 mm maps to Fbeam = Sbeam = 51.25 mm and
/// pix0 = [0.1, 0.05125, -0.05125] m.
#[test]
fn at_geo_001_mosflm_pix0() {
    let sim = Simulation::prepare(&mosflm(51.2, 51.2), Path::new(".")).unwrap();
    let g = detector_geometry::<f64>(&sim.setup, &sim.setup.base_values());
    let want = [0.1, 0.05125, -0.05125];
    for (got, want) in g.pix0.0.iter().zip(want) {
        assert!((got - want).abs() < 1e-9, "{:?}", g.pix0);
    }
    let h = sim.header();
    assert!((h.fbeam_mm - 51.25).abs() < 1e-9 && (h.sbeam_mm - 51.25).abs() < 1e-9);
}

/// AT-GEO-003 (beam pivot): with detector rotations the direct-beam position
/// recomputed after rotation equals the user's beam centre.
#[test]
fn at_geo_003_beam_centre_preserved_under_rotation() {
    let mut c = mosflm(40.0, 60.0);
    c.detector.rot_deg = [5.0, 3.0, 2.0];
    let sim = Simulation::prepare(&c, Path::new(".")).unwrap();
    let h = sim.header();
    assert!((h.fbeam_mm - 60.05).abs() < 1e-9, "{}", h.fbeam_mm);
    assert!((h.sbeam_mm - 40.05).abs() < 1e-9, "{}", h.sbeam_mm);
    // r-factor: distance = close_distance / (b . o)
    let g = detector_geometry::<f64>(&sim.setup, &sim.setup.base_values());
    let r = g.odet.0[0];
    assert!((g.distance - g.close_distance / r).abs() < 1e-15);
}

/// AT-GEO-003 (sample pivot): XDS with two-theta keeps the near point; the
/// detector normal is rotated by two-theta about the XDS axis.
#[test]
fn sample_pivot_keeps_close_distance() {
    let mut c = mosflm(0.0, 0.0);
    c.detector.convention = Convention::Xds;
    c.detector.xbeam_mm = None;
    c.detector.ybeam_mm = None;
    c.detector.close_distance_mm = Some(120.0);
    c.detector.twotheta_deg = 15.0;
    let sim = Simulation::prepare(&c, Path::new(".")).unwrap();
    let g = detector_geometry::<f64>(&sim.setup, &sim.setup.base_values());
    assert!((g.close_distance - 0.12).abs() < 1e-12);
    assert!((g.fclose - 0.0512).abs() < 1e-12 && (g.sclose - 0.0512).abs() < 1e-12);
    let t = 15f64.to_radians();
    assert!(
        (g.odet.0[2] - t.cos()).abs() < 1e-12 && (g.odet.0[1] + t.sin()).abs() < 1e-12,
        "{:?}",
        g.odet
    );
}

#[test]
fn conventions_set_axes() {
    for (conv, beam) in [
        (Convention::Mosflm, [1.0, 0.0, 0.0]),
        (Convention::Denzo, [1.0, 0.0, 0.0]),
        (Convention::Xds, [0.0, 0.0, 1.0]),
        (Convention::Dials, [0.0, 0.0, 1.0]),
        (Convention::Adxv, [0.0, 0.0, 1.0]),
    ] {
        let mut c = mosflm(51.2, 51.2);
        c.detector.convention = conv;
        let sim = Simulation::prepare(&c, Path::new(".")).unwrap();
        assert_eq!(sim.setup.beam, beam, "{conv:?}");
        let expect_pivot = if matches!(conv, Convention::Xds | Convention::Dials) {
            Pivot::Sample
        } else {
            Pivot::Beam
        };
        assert_eq!(sim.setup.pivot, expect_pivot, "{conv:?}");
    }
}

#[test]
fn bad_values_name_their_key() {
    type Mutation = Box<dyn Fn(&mut SimConfig)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "crystal.cell",
            Box::new(|c| c.crystal.cell = Some([-100.0, 100.0, 100.0, 90.0, 90.0, 90.0])),
        ),
        (
            "crystal.cell",
            Box::new(|c| c.crystal.cell = Some([100.0, 100.0, 100.0, 10.0, 10.0, 170.0])),
        ),
        ("crystal.cell", Box::new(|c| c.crystal.cell = None)),
        (
            "detector.pixel_size_mm",
            Box::new(|c| c.detector.pixel_size_mm = 0.0),
        ),
        (
            "detector.fpixels",
            Box::new(|c| c.detector.fpixels = Some(0)),
        ),
        (
            "detector.roi",
            Box::new(|c| c.detector.roi = Some([0, 2000, 0, 10])),
        ),
        (
            "beam.wavelength_a",
            Box::new(|c| c.beam.wavelength_a = f64::NAN),
        ),
        (
            "detector.distance_mm",
            Box::new(|c| c.detector.distance_mm = -5.0),
        ),
        ("crystal.default_f", Box::new(|c| c.crystal.default_f = 0.0)),
        (
            "crystal.n_cells[1]",
            Box::new(|c| c.crystal.n_cells = [5.0, 0.0, 5.0]),
        ),
        (
            "crystal.hkl_file",
            Box::new(|c| c.crystal.hkl_file = Some("/nonexistent/x.hkl".into())),
        ),
    ];
    for (key, f) in cases {
        let mut c = mosflm(51.2, 51.2);
        f(&mut c);
        let e = Simulation::prepare(&c, Path::new("."))
            .expect_err(key)
            .to_string();
        let key_or_file = if key == "crystal.hkl_file" {
            "x.hkl"
        } else {
            key
        };
        assert!(e.contains(key_or_file), "expected '{key_or_file}' in: {e}");
    }
}
