//! Geometry pinned against the spec's acceptance tests (spec-a-core AT-GEO-*).

use braggrun::physics::config::*;
use braggrun::physics::inputs::{InputFile, Inputs};
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

/// spec-a-core "Geometry & Conventions": pix0 (the origin D0 of the detector
/// plane) for each convention without rotations, from the spec's axes and
/// beam-centre relations written out here: BEAM pivot D0 = -Fbeam f - Sbeam s
/// + distance b; SAMPLE pivot D0 = -Fclose f - Sclose s + close_distance o.
#[test]
fn pix0_of_each_convention_is_the_specs() {
    let (d, px, size) = (0.1, 0.0001, 1024.0 * 0.0001);
    let (xb, yb) = (0.030, 0.040);
    let d0 = |fb: f64, sb: f64, f: [f64; 3], s: [f64; 3], b: [f64; 3]| {
        [0, 1, 2].map(|i| -fb * f[i] - sb * s[i] + d * b[i])
    };
    let cases = [
        // MOSFLM: Fbeam = Ybeam + px/2, Sbeam = Xbeam + px/2; f = +Z, s = -Y, b = +X
        (
            Convention::Mosflm,
            d0(
                yb + px / 2.0,
                xb + px / 2.0,
                [0., 0., 1.],
                [0., -1., 0.],
                [1., 0., 0.],
            ),
        ),
        // DENZO: as MOSFLM without the half pixel
        (
            Convention::Denzo,
            d0(yb, xb, [0., 0., 1.], [0., -1., 0.], [1., 0., 0.]),
        ),
        // ADXV: Fbeam = Xbeam, Sbeam = detsize_s - Ybeam; f = +X, s = -Y, b = +Z
        (
            Convention::Adxv,
            d0(xb, size - yb, [1., 0., 0.], [0., -1., 0.], [0., 0., 1.]),
        ),
        // XDS, DIALS (sample pivot): Fclose = (ORGX - 0.5) px; f = +X, s = +Y, o = +Z
        (
            Convention::Xds,
            d0(0.025, 0.035, [1., 0., 0.], [0., 1., 0.], [0., 0., 1.]),
        ),
        (
            Convention::Dials,
            d0(0.025, 0.035, [1., 0., 0.], [0., 1., 0.], [0., 0., 1.]),
        ),
    ];
    for (conv, want) in cases {
        let mut c = mosflm(xb * 1000.0, yb * 1000.0);
        c.detector.convention = conv;
        if matches!(conv, Convention::Xds | Convention::Dials) {
            (c.detector.xbeam_mm, c.detector.ybeam_mm) = (None, None);
            (c.detector.orgx, c.detector.orgy) = (Some(250.5), Some(350.5));
        }
        let sim = Simulation::prepare(&c, Path::new(".")).unwrap();
        let g = detector_geometry::<f64>(&sim.setup, &sim.setup.base_values());
        for i in 0..3 {
            assert!(
                (g.pix0.0[i] - want[i]).abs() < 1e-15,
                "{conv:?}: pix0 {:?}, spec {want:?}",
                g.pix0.0
            );
        }
        if conv == Convention::Xds {
            // XDS origin: ORGX = Fclose / pixel + 0.5
            let h = sim.header();
            assert!((h.orgx - 250.5).abs() < 1e-9 && (h.orgy - 350.5).abs() < 1e-9);
        }
    }
}

/// The model reads no files: a configuration naming files that do not exist
/// resolves from their contents passed in, to exactly what `prepare` makes
/// of the same contents read from disk.
#[test]
fn from_inputs_equals_prepare_from_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.hkl"), "0 0 1 5\n1 -1 0 7\n2 0 0 3.5\n").unwrap();
    std::fs::write(
        dir.path().join("A.mat"),
        "-0.0283 -0.0287 0.0105\n-0.0031 0.0102 -0.0321\n0.0254 -0.0140 -0.0104\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("s.txt"), "-10 0 0.01 1 1e-10\n-10 0.02 0\n").unwrap();
    let mut c = mosflm(51.2, 51.2);
    c.crystal.cell = None;
    c.crystal.mosflm_matrix = Some("A.mat".into());
    c.crystal.hkl_file = Some("f.hkl".into());
    c.beam.source_file = Some("s.txt".into());
    let from_files = Simulation::prepare(&c, dir.path()).unwrap();

    let missing = tempfile::tempdir().unwrap().path().join("gone");
    c.crystal.mosflm_matrix = Some(missing.join("A.mat"));
    c.crystal.hkl_file = Some(missing.join("f.hkl"));
    c.beam.source_file = Some(missing.join("s.txt"));
    let mut inputs = Inputs::none((1 << 40, "test".into()));
    inputs.hkl = Some(InputFile::data(
        "f.hkl",
        vec![([0, 0, 1], 5.0), ([1, -1, 0], 7.0), ([2, 0, 0], 3.5)],
    ));
    inputs.mosflm_matrix = Some(InputFile::data(
        "A.mat",
        [
            [-0.0283, -0.0031, 0.0254],
            [-0.0287, 0.0102, -0.0140],
            [0.0105, -0.0321, -0.0104],
        ],
    ));
    inputs.sources = Some(InputFile::data(
        "s.txt",
        vec![
            [-10.0, 0.0, 0.01, 1.0, 1e-10],
            [-10.0, 0.02, 0.0, f64::NAN, f64::NAN],
        ],
    ));
    let from_data = Simulation::from_inputs(&c, inputs).unwrap();
    assert_eq!(
        format!("{:?}", from_data.setup),
        format!("{:?}", from_files.setup)
    );
    assert_eq!(from_data.hkl, from_files.hkl);
    assert_eq!(from_data.hkl.as_ref().unwrap().get(1, -1, 0), Some(7.0));
    assert_eq!(from_data.setup.sources.len(), 2);
    // a configured file whose contents are not passed in is refused by name
    let e = Simulation::from_inputs(&c, Inputs::none((1 << 40, "test".into()))).unwrap_err();
    assert!(e.to_string().starts_with("beam.source_file: "), "{e}");
}
