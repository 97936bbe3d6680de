//! The .npy files braggrun writes, as numpy reads them: `numpy.load` gives
//! the shape, dtype and values written. Skipped (with a message) where
//! python3 with numpy is not installed.
use braggrun::io::npy;
use std::process::Command;

fn numpy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// numpy's view of a file: "shape dtype value-at-index".
fn numpy_load(path: &std::path::Path, index: &str) -> String {
    let script = format!(
        "import numpy, sys\na = numpy.load(sys.argv[1])\nprint(a.shape, a.dtype, repr(float(a[{index}])))"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn numpy_load_reads_images_and_stacks() {
    if !numpy_available() {
        eprintln!("SKIP numpy_load_reads_images_and_stacks: python3 with numpy is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (s, f) = (3usize, 5usize);
    let img: Vec<f64> = (0..s * f).map(|i| 1.0 / (i as f64 + 3.0)).collect();
    let p = dir.path().join("img64.npy");
    npy::write_image(&p, &img, s, f).unwrap();
    // pixel (fast 4, slow 2) = index 2 * 5 + 4
    assert_eq!(
        numpy_load(&p, "2, 4"),
        format!("(3, 5) float64 {:?}", img[14])
    );

    let img32: Vec<f32> = img.iter().map(|&x| x as f32).collect();
    let p = dir.path().join("img32.npy");
    npy::write_image(&p, &img32, s, f).unwrap();
    assert_eq!(
        numpy_load(&p, "1, 0"),
        format!("(3, 5) float32 {:?}", img32[5] as f64)
    );

    let neg: Vec<f64> = img.iter().map(|x| -2.0 * x).collect();
    let p = dir.path().join("stack.npy");
    npy::write_stack(&p, &[&img, &neg], s, f).unwrap();
    assert_eq!(
        numpy_load(&p, "1, 2, 3"),
        format!("(2, 3, 5) float64 {:?}", neg[13])
    );
}
