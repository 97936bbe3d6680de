//! HKL text files: `h k l F` per line (P1, no symmetry).
//!
//! nanoBragg reads the file twice: once for the index bounds, once to fill a
//! grid prefilled with `default_F`. We do the same, but strictly: each
//! non-blank, non-comment line must hold integer h, k, l and a finite F
//! (further numeric columns such as sigma or phase are allowed and ignored,
//! spec-a-core AT-IO-004), otherwise the error names the file and line.
use super::IoError;
use crate::physics::structure_factors::HklGrid;
use std::path::Path;

/// One reflection as read from a file, with its 1-based line number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HklLine {
    pub h: i32,
    pub k: i32,
    pub l: i32,
    pub f: f64,
    pub line: usize,
}

/// Parse HKL text (the contents of `path`, used in messages).
pub fn parse_hkl_text(path: &Path, text: &str) -> Result<Vec<HklLine>, IoError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
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
        let f: f64 = toks[3].parse().map_err(|_| {
            IoError::line(path, lineno, format!("F is not a number: '{}'", toks[3]))
        })?;
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
        out.push(HklLine {
            h: idx[0],
            k: idx[1],
            l: idx[2],
            f,
            line: lineno,
        });
    }
    Ok(out)
}

fn bounds(lines: &[HklLine]) -> ([i32; 3], [i32; 3]) {
    let mut min = [i32::MAX; 3];
    let mut max = [i32::MIN; 3];
    for r in lines {
        for (j, v) in [r.h, r.k, r.l].into_iter().enumerate() {
            min[j] = min[j].min(v);
            max[j] = max[j].max(v);
        }
    }
    (min, max)
}

/// Points of the grid the reflections span (checked: u64::MAX on overflow;
/// 0 without reflections). Indices are at most 1e6 in magnitude.
pub fn grid_points(lines: &[HklLine]) -> u64 {
    if lines.is_empty() {
        return 0;
    }
    let (min, max) = bounds(lines);
    (0..3)
        .map(|j| (max[j] as i64 - min[j] as i64 + 1) as u64)
        .try_fold(1u64, |a, x| a.checked_mul(x))
        .unwrap_or(u64::MAX)
}

/// Build the grid from parsed reflections: bounds first, then fill a grid
/// prefilled with `default_f`; a reflection listed twice keeps its last value.
pub fn grid_from_lines(path: &Path, lines: &[HklLine], default_f: f64) -> Result<HklGrid, IoError> {
    if lines.is_empty() {
        return Err(IoError::file(
            path,
            "no reflections (expected lines of 'h k l F')",
        ));
    }
    let (min, max) = bounds(lines);
    let points = grid_points(lines);
    if points > 2_000_000_000 {
        return Err(IoError::file(
            path,
            format!("index range too large ({points} grid points)"),
        ));
    }
    let mut grid = HklGrid::new(min, max, default_f);
    for r in lines {
        grid.set(r.h, r.k, r.l, r.f);
    }
    grid.count = lines.len();
    Ok(grid)
}

/// Read an HKL file into a grid prefilled with `default_f` (spec-a-core "HKL text input").
pub fn read_hkl(path: &Path, default_f: f64) -> Result<HklGrid, IoError> {
    let text = super::read_text(path)?;
    let lines = parse_hkl_text(path, &text)?;
    grid_from_lines(path, &lines, default_f)
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
    fn bounds_values_and_default() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "a.hkl",
            "# comment\n1 2 3 10.5\n\n-1 0 5 2\n  0 -2 3 7 0.5 90\n1 2 3 11\n",
        );
        let g = read_hkl(&p, 3.0).unwrap();
        assert_eq!(
            (g.h_min, g.h_max, g.k_min, g.k_max, g.l_min, g.l_max),
            (-1, 1, -2, 2, 3, 5)
        );
        assert_eq!(g.count, 4);
        assert_eq!(g.get(1, 2, 3), Some(11.0));
        assert_eq!(g.get(-1, 0, 5), Some(2.0));
        assert_eq!(g.get(0, -2, 3), Some(7.0));
        assert_eq!(g.get(0, 0, 4), Some(3.0));
        assert_eq!(g.get(2, 0, 4), None);
        assert_eq!(g.data.len(), 3 * 5 * 3);
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
        ] {
            let p = write(&dir, "bad.hkl", text);
            let e = read_hkl(&p, 0.0).unwrap_err();
            assert_eq!(e.line_number(), Some(line), "{text:?}: {e}");
            let s = e.to_string();
            assert!(s.contains(what) && s.contains("bad.hkl"), "{s}");
        }
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "empty.hkl", "# only a comment\n\n");
        assert!(read_hkl(&p, 0.0)
            .unwrap_err()
            .to_string()
            .contains("no reflections"));
        let e = read_hkl(&dir.path().join("nope.hkl"), 0.0).unwrap_err();
        assert!(e.to_string().contains("nope.hkl"));
    }
}
