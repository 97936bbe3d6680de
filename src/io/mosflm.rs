//! MOSFLM orientation matrix files (`-mat`).
use super::IoError;
use std::path::Path;

/// Parse the first nine numbers of MOSFLM matrix text, row by row, with the
/// line each came from. A non-number before the ninth is an error.
fn first_nine(path: &Path, text: &str) -> Result<[f64; 9], IoError> {
    let mut m = [0.0; 9];
    let mut n = 0;
    let mut last_line = 0;
    for (i, line) in text.lines().enumerate() {
        last_line = i + 1;
        for tok in line.split_whitespace() {
            if n == 9 {
                return Ok(m);
            }
            let v: f64 = tok.parse().map_err(|_| {
                IoError::line(
                    path,
                    i + 1,
                    format!("matrix element {} is not a number: '{tok}'", n + 1),
                )
            })?;
            if !v.is_finite() {
                return Err(IoError::line(
                    path,
                    i + 1,
                    format!("matrix element {} is not finite: '{tok}'", n + 1),
                ));
            }
            m[n] = v;
            n += 1;
        }
    }
    if n < 9 {
        return Err(IoError::line(
            path,
            last_line.max(1),
            format!("expected 9 numbers (3 rows of 3), found {n}"),
        ));
    }
    Ok(m)
}

/// The reciprocal vectors [a*, b*, c*] (each an x, y, z triple) as nanoBragg
/// reads them: the file's first line holds a*_x b*_x c*_x, the second the y
/// components, the third the z components (so the result is the transpose of
/// the file's rows). Units Å^-1 times λ. Anything after the ninth number (the
/// MOSFLM U matrix and cell) is ignored.
pub fn read_matrix(path: &Path) -> Result<[[f64; 3]; 3], IoError> {
    let text = super::read_text(path)?;
    parse_matrix(path, &text)
}

/// [`read_matrix`] on text already in memory (`path` names it in errors).
pub fn parse_matrix(path: &Path, text: &str) -> Result<[[f64; 3]; 3], IoError> {
    let m = first_nine(path, text)?;
    Ok([[m[0], m[3], m[6]], [m[1], m[4], m[7]], [m[2], m[5], m[8]]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_rows_into_vectors() {
        let p = Path::new("t.mat");
        let v = parse_matrix(p, "1 2 3\n4 5 6\n7 8 9\n0 0 0\n100 100 100 90 90 90\n").unwrap();
        assert_eq!(v, [[1.0, 4.0, 7.0], [2.0, 5.0, 8.0], [3.0, 6.0, 9.0]]);
        // Numbers may wrap across lines, as with C's fscanf.
        let w = parse_matrix(p, "1 2\n3 4 5 6 7\n8 9").unwrap();
        assert_eq!(v, w);
    }

    #[test]
    fn errors_name_the_line() {
        let p = Path::new("bad.mat");
        let e = parse_matrix(p, "1 2 3\n4 5 6\n7 8\n").unwrap_err();
        assert_eq!(e.line_number(), Some(3));
        assert!(e.to_string().contains("found 8"), "{e}");
        let e = parse_matrix(p, "1 2 3\n4 five 6\n7 8 9\n").unwrap_err();
        assert_eq!(e.line_number(), Some(2));
        assert!(e.to_string().contains("five"), "{e}");
        let e = parse_matrix(p, "").unwrap_err();
        assert!(e.to_string().contains("found 0"), "{e}");
    }
}
