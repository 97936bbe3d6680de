//! Source lists (`-sourcefile`): X Y Z weight lambda per line.
//!
//! Columns are separated by any of nanoBragg's delimiters (space, tab, comma,
//! semicolon, colon, '!'). Blank lines and lines starting with '#' are
//! skipped. Columns beyond the fifth are ignored but must be numbers.
use super::IoError;
use std::path::Path;

const DELIMITERS: &[char] = &[' ', '\t', ',', ';', ':', '!', '\r'];

/// One row per source: X, Y, Z (m), weight, lambda (m); NaN where a column is missing.
pub fn read_sources(path: &Path) -> Result<Vec<[f64; 5]>, IoError> {
    let text = super::read_text(path)?;
    parse_sources(path, &text)
}

/// [`read_sources`] on text already in memory (`path` names it in errors).
pub fn parse_sources(path: &Path, text: &str) -> Result<Vec<[f64; 5]>, IoError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let toks: Vec<&str> = line.split(DELIMITERS).filter(|t| !t.is_empty()).collect();
        if toks.is_empty() || toks[0].starts_with('#') {
            continue;
        }
        let mut row = [f64::NAN; 5];
        for (j, t) in toks.iter().enumerate() {
            let v: f64 = t.parse().map_err(|_| {
                IoError::line(
                    path,
                    i + 1,
                    format!("column {} is not a number: '{t}'", j + 1),
                )
            })?;
            if !v.is_finite() {
                return Err(IoError::line(
                    path,
                    i + 1,
                    format!("column {} is not finite: '{t}'", j + 1),
                ));
            }
            if j < 5 {
                row[j] = v;
            }
        }
        out.push(row);
    }
    if out.is_empty() {
        return Err(IoError::file(
            path,
            "no sources (expected lines of 'X Y Z weight lambda')",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_missing_values() {
        let p = Path::new("s.txt");
        let s =
            parse_sources(p, "# X Y Z w l\n-10 0 0 1 1e-10\n\n-10,0.1,0\n-10\t0 0 2\n").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], [-10.0, 0.0, 0.0, 1.0, 1e-10]);
        assert_eq!(&s[1][..3], &[-10.0, 0.1, 0.0]);
        assert!(s[1][3].is_nan() && s[1][4].is_nan());
        assert_eq!(s[2][3], 2.0);
        assert!(s[2][4].is_nan());
    }

    #[test]
    fn malformed_names_line() {
        let p = Path::new("s.txt");
        let e = parse_sources(p, "1 2 3\n1 2 zz\n").unwrap_err();
        assert_eq!(e.line_number(), Some(2));
        assert!(e.to_string().contains("zz"));
        assert!(parse_sources(p, "\n# nothing\n").is_err());
    }
}
