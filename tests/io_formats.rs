//! File-format round trips and error reporting of `braggrun::io`.
use braggrun::io::{self, float_image, hkl, mosflm, pgm, smv, sources};
use braggrun::physics::structure_factors::HklGrid;
use std::path::{Path, PathBuf};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/inputs")
        .join(name)
}

fn kv(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[test]
fn smv_round_trip_both_byte_orders() {
    let dir = tempfile::tempdir().unwrap();
    let (fp, sp) = (5usize, 3usize);
    let data: Vec<u16> = (0..fp * sp)
        .map(|i| (i as u16).wrapping_mul(4099))
        .collect();
    let header = vec![
        kv("SIZE1", "5"),
        kv("SIZE2", "3"),
        kv("PIXEL_SIZE", "0.1"),
        kv("DIALS_ORIGIN", "-3.25,3.25,-100"),
        kv("BEAMLINE", "fake"),
    ];
    for big in [false, true] {
        let p = dir.path().join(format!("img_{big}.img"));
        smv::write_smv(&p, &header, fp, sp, &data, big).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 512 + 2 * fp * sp);
        let order = if big { "big_endian" } else { "little_endian" };
        let start = format!(
            "{{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER={order};\nTYPE=unsigned_short;\nSIZE1=5;\n"
        );
        assert!(bytes.starts_with(start.as_bytes()));
        let end = bytes[..512].iter().position(|&b| b == 0x0c).unwrap();
        assert_eq!(bytes[end - 1], b'}');
        assert!(bytes[end + 1..512].iter().all(|&b| b == b' '));
        let pix1 = if big {
            data[1].to_be_bytes()
        } else {
            data[1].to_le_bytes()
        };
        assert_eq!(&bytes[514..516], &pix1);
        let img = smv::read_smv(&p).unwrap();
        assert_eq!((img.fpixels, img.spixels), (fp, sp));
        assert_eq!(img.data, data);
        assert_eq!(img.header["DIALS_ORIGIN"], "-3.25,3.25,-100");
        assert_eq!(img.value("PIXEL_SIZE"), Some(0.1));
    }
}

#[test]
fn float_image_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.bin");
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    float_image::write_float_image(&p, &data).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 48);
    assert_eq!(float_image::read_float_image(&p, Some(12)).unwrap(), data);
    assert!(float_image::read_float_image(&p, Some(11)).is_err());
}

#[test]
fn pgm_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.pgm");
    let data: Vec<u8> = (0..20).map(|i| (i * 13) as u8).collect();
    pgm::write_pgm(&p, 5, 4, 12.5, &data).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert!(bytes.starts_with(b"P5\n5 4\n# pixels scaled by 12.5\n255\n"));
    let img = pgm::read_pgm(&p).unwrap();
    assert_eq!((img.width, img.height), (5, 4));
    assert_eq!(img.data, data);
}

#[test]
fn hkl_bounds_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("small.hkl");
    std::fs::write(&p, "# h k l F\n0 0 1 5.5\n2 -1 0 7\n-3 1 2 1e2\n").unwrap();
    let r = hkl::read_hkl(&p).unwrap();
    assert_eq!(
        r,
        [([0, 0, 1], 5.5), ([2, -1, 0], 7.0), ([-3, 1, 2], 100.0)]
    );
    let g = HklGrid::from_reflections(&r, 9.0);
    assert_eq!(
        [g.h_min, g.h_max, g.k_min, g.k_max, g.l_min, g.l_max],
        [-3, 2, -1, 1, 0, 2]
    );
    assert_eq!(g.count, 3);
    assert_eq!(g.get(0, 0, 1), Some(5.5));
    assert_eq!(g.get(2, -1, 0), Some(7.0));
    assert_eq!(g.get(-3, 1, 2), Some(100.0));
    assert_eq!(g.get(0, 0, 0), Some(9.0));
    assert_eq!(g.get(3, 0, 0), None);
}

#[test]
fn malformed_inputs_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, usize); 7] = [
        ("hkl", "1 2 3 4\n1 2 3\n", 2),
        ("hkl", "1 2 3 4\n0.5 2 3 4\n", 2),
        ("hkl", "\n\n1 2 3 F\n", 3),
        ("mat", "1 2 3\n4 5 6\n7 8\n", 3),
        ("mat", "1 2 3\nx 5 6\n7 8 9\n", 2),
        ("src", "0 0 1\n0 0 one\n", 2),
        ("src", "1 1 1 1 1\n\n# c\n1 1 1 1 nan\n", 4),
    ];
    for (kind, text, line) in cases {
        let p = dir.path().join(format!("bad.{kind}"));
        std::fs::write(&p, text).unwrap();
        let e = match kind {
            "hkl" => hkl::read_hkl(&p).map(|_| ()).unwrap_err(),
            "mat" => mosflm::read_matrix(&p).map(|_| ()).unwrap_err(),
            _ => sources::read_sources(&p).map(|_| ()).unwrap_err(),
        };
        assert_eq!(e.line_number(), Some(line), "{kind} {text:?}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("bad.{kind}:{line}:")), "{msg}");
    }
    let p = dir.path().join("empty.hkl");
    std::fs::write(&p, "").unwrap();
    assert!(hkl::read_hkl(&p).is_err());
}

#[test]
fn sources_missing_columns_are_nan() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.txt");
    std::fs::write(&p, "-10 0 0 1 6.2e-10\n-10 0.01\n").unwrap();
    let s = sources::read_sources(&p).unwrap();
    assert_eq!(s[0], [-10.0, 0.0, 0.0, 1.0, 6.2e-10]);
    assert_eq!(&s[1][..2], &[-10.0, 0.01]);
    assert!(s[1][2..].iter().all(|v| v.is_nan()));
}

#[test]
fn golden_matrix_reads_as_c_does() {
    let m = mosflm::read_matrix(&golden("A.mat")).unwrap();
    // Line 1 of the file holds a*_x b*_x c*_x.
    assert_eq!(m[0], [-0.02837711, -0.02871390, 0.01050048]);
    assert_eq!(m[1], [-0.00305386, 0.01019549, -0.03209440]);
    assert_eq!(m[2], [0.02535816, -0.01400049, -0.01036054]);
}

#[test]
fn golden_hkl_reads_full_grid() {
    let g = HklGrid::from_reflections(&hkl::read_hkl(&golden("varied.hkl")).unwrap(), 0.0);
    assert_eq!(
        [g.h_min, g.h_max, g.k_min, g.k_max, g.l_min, g.l_max],
        [-12, 12, -12, 12, -12, 12]
    );
    assert_eq!(g.count, 25 * 25 * 25);
    assert_eq!(g.data.len(), 25 * 25 * 25);
    assert_eq!(g.get(-12, -12, -12), Some(22.5));
    assert_eq!(g.get(-12, -12, -11), Some(65.0));
    assert_eq!(g.get(12, 12, 12), Some(90.0));
    assert_eq!(g.get(12, 12, 11), Some(47.5));
}

#[test]
fn writers_leave_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.img");
    smv::write_smv(&p, &[kv("SIZE1", "1"), kv("SIZE2", "1")], 1, 1, &[7], false).unwrap();
    assert!(smv::write_smv(&p, &[], 2, 2, &[7], false).is_err());
    io::write_atomic(&dir.path().join("y.bin"), b"abc").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["x.img".to_string(), "y.bin".to_string()]);
    assert_eq!(smv::read_smv(&p).unwrap().data, vec![7]);
}
