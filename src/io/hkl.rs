//! HKL text files: `h k l F` per line (P1, no symmetry).
//!
//! Each non-blank, non-comment line must hold integer h, k, l and a finite F
//! (further numeric columns such as sigma or phase are allowed and ignored,
//! spec-a-core AT-IO-004), otherwise the error names the file and line. The
//! reflections come back as plain data; the model builds its grid from them
//! (`physics::structure_factors::HklGrid::from_reflections`).
use super::IoError;
use std::path::Path;

/// One reflection: its indices (h, k, l) and F.
pub type Reflection = ([i32; 3], f64);

/// Parse HKL text (the contents of `path`, used in messages). A text without
/// reflections is an error.
pub fn parse_hkl_text(path: &Path, text: &str) -> Result<Vec<Reflection>, IoError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(path, i + 1, line)?);
    }
    if out.is_empty() {
        return Err(IoError::file(
            path,
            "no reflections (expected lines of 'h k l F')",
        ));
    }
    Ok(out)
}

/// One line `h k l F [more numbers]`.
fn parse_line(path: &Path, lineno: usize, line: &str) -> Result<Reflection, IoError> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    if toks.len() < 4 {
        return Err(IoError::line(
            path,
            lineno,
            format!(
                "expected 'h k l F', found {} value(s): '{line}'",
                toks.len()
            ),
        ));
    }
    let mut idx = [0i32; 3];
    for (j, name) in ["h", "k", "l"].iter().enumerate() {
        let v: f64 = toks[j].parse().map_err(|_| {
            IoError::line(
                path,
                lineno,
                format!("{name} is not a number: '{}'", toks[j]),
            )
        })?;
        if !v.is_finite() || v.fract() != 0.0 || v.abs() > 1.0e6 {
            return Err(IoError::line(
                path,
                lineno,
                format!("{name} is not an integer index: '{}'", toks[j]),
            ));
        }
        idx[j] = v as i32;
    }
    let f: f64 = toks[3]
        .parse()
        .map_err(|_| IoError::line(path, lineno, format!("F is not a number: '{}'", toks[3])))?;
    if !f.is_finite() {
        return Err(IoError::line(
            path,
            lineno,
            format!("F is not finite: '{}'", toks[3]),
        ));
    }
    for t in &toks[4..] {
        if t.parse::<f64>().is_err() {
            return Err(IoError::line(
                path,
                lineno,
                format!("extra column is not a number: '{t}'"),
            ));
        }
    }
    Ok((idx, f))
}

/// Read an HKL file's reflections, in file order (spec-a-core "HKL text input").
pub fn read_hkl(path: &Path) -> Result<Vec<Reflection>, IoError> {
    let text = super::read_text(path)?;
    parse_hkl_text(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reflections_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "a.hkl",
            "# comment\n1 2 3 10.5\n\n-1 0 5 2\n  0 -2 3 7 0.5 90\n1 2 3 11\n",
        );
        let r = read_hkl(&p).unwrap();
        assert_eq!(
            r,
            [
                ([1, 2, 3], 10.5),
                ([-1, 0, 5], 2.0),
                ([0, -2, 3], 7.0),
                ([1, 2, 3], 11.0)
            ]
        );
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, line, what) in [
            ("1 2 3 4\n1 2 3\n", 2, "expected"),
            ("1 2 3 4\n\n1.5 2 3 4\n", 3, "h is not an integer"),
            ("1 x 3 4\n", 1, "k is not a number"),
            ("1 2 3 nan\n", 1, "not finite"),
            ("1 2 3 inf\n", 1, "not finite"),
            ("1 2 3 4 abc\n", 1, "extra column"),
            ("1 2 2000000 4\n", 1, "l is not an integer index"),
        ] {
            let p = write(&dir, "bad.hkl", text);
            let e = read_hkl(&p).unwrap_err();
            assert_eq!(e.line_number(), Some(line), "{text:?}: {e}");
            let s = e.to_string();
            assert!(s.contains(what) && s.contains("bad.hkl"), "{s}");
        }
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "empty.hkl", "# only a comment\n\n");
        assert!(read_hkl(&p)
            .unwrap_err()
            .to_string()
            .contains("no reflections"));
        let e = read_hkl(&dir.path().join("nope.hkl")).unwrap_err();
        assert!(e.to_string().contains("nope.hkl"));
    }
}
