//! A minimal reader of NumPy `.npy` arrays (format versions 1.0, 2.0 and
//! 3.0): little-endian or single-byte numbers (`f4`, `f8`, `u1`, `u2`, `i2`,
//! `u4`, `i4`, `u8`, `i8`), C order, returned as f64 with the shape.

use crate::io::IoError;
use std::path::Path;

/// An array read from a `.npy` file: its shape and its values (C order) in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Read a `.npy` file.
pub fn read_npy(path: &Path) -> Result<NpyArray, IoError> {
    let bytes = crate::io::read_bytes(path)?;
    decode_npy(path, &bytes)
}

/// [`read_npy`] on bytes in memory (`path` names it in errors).
pub fn decode_npy(path: &Path, bytes: &[u8]) -> Result<NpyArray, IoError> {
    let err = |m: String| IoError::file(path, m);
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err("truncated .npy header".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(err(format!("unsupported .npy format version {v}"))),
    };
    let end = start
        .checked_add(hlen)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| err(format!("header of {hlen} bytes runs past the file")))?;
    let header =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| err("header is not text".into()))?;
    let descr = dict_value(header, "descr")
        .ok_or_else(|| err(format!("header has no 'descr': {header}")))?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| err(format!("header has no 'fortran_order': {header}")))?;
    if fortran.trim() != "False" {
        return Err(err("Fortran-order arrays are not supported".into()));
    }
    let shape_text = dict_value(header, "shape")
        .ok_or_else(|| err(format!("header has no 'shape': {header}")))?;
    let shape: Vec<usize> = shape_text
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| err(format!("bad shape entry '{s}'")))
        })
        .collect::<Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err("shape overflows".into()))?;
    let (order, kind) = descr.split_at(1.min(descr.len()));
    if !matches!(order, "<" | "|" | "=") {
        return Err(err(format!(
            "dtype '{descr}' is not little-endian (only '<' or '|' byte orders)"
        )));
    }
    let size: usize = match kind {
        "f4" | "i4" | "u4" => 4,
        "f8" | "i8" | "u8" => 8,
        "u2" | "i2" => 2,
        "u1" | "i1" | "b1" => 1,
        _ => return Err(err(format!("unsupported dtype '{descr}'"))),
    };
    let body = &bytes[end..];
    let need = n
        .checked_mul(size)
        .ok_or_else(|| err("size overflows".into()))?;
    if body.len() < need {
        return Err(err(format!(
            "{} data bytes, the shape {:?} of '{descr}' needs {need}",
            body.len(),
            shape
        )));
    }
    let data: Vec<f64> = body[..need]
        .chunks_exact(size)
        .map(|c| match kind {
            "f4" => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            "f8" => f64::from_le_bytes(c.try_into().unwrap()),
            "i4" => i32::from_le_bytes(c.try_into().unwrap()) as f64,
            "u4" => u32::from_le_bytes(c.try_into().unwrap()) as f64,
            "i8" => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            "u8" => u64::from_le_bytes(c.try_into().unwrap()) as f64,
            "u2" => u16::from_le_bytes(c.try_into().unwrap()) as f64,
            "i2" => i16::from_le_bytes(c.try_into().unwrap()) as f64,
            "i1" => c[0] as i8 as f64,
            _ => c[0] as f64,
        })
        .collect();
    Ok(NpyArray { shape, data })
}

/// The text after `'key':` in a Python dict literal, up to the next
/// top-level comma (parentheses nest).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat_single = format!("'{key}'");
    let pat_double = format!("\"{key}\"");
    let at = header
        .find(&pat_single)
        .map(|i| i + pat_single.len())
        .or_else(|| header.find(&pat_double).map(|i| i + pat_double.len()))?;
    let rest = header[at..].trim_start().strip_prefix(':')?;
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    Some(rest)
}

#[cfg(test)]
pub(crate) fn encode_npy_f64(shape: &[usize], data: &[f64], descr: &str) -> Vec<u8> {
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    for v in data {
        match descr {
            "<f8" => out.extend_from_slice(&v.to_le_bytes()),
            "<f4" => out.extend_from_slice(&(*v as f32).to_le_bytes()),
            "<u2" => out.extend_from_slice(&(*v as u16).to_le_bytes()),
            "<i4" => out.extend_from_slice(&(*v as i32).to_le_bytes()),
            _ => panic!("test encoder: {descr}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_numpy_writes() {
        let p = Path::new("x.npy");
        let vals = [1.5, -2.0, 3.25, 4.0, 0.0, 7.0];
        for d in ["<f8", "<f4", "<i4"] {
            let a = decode_npy(p, &encode_npy_f64(&[2, 3], &vals, d)).unwrap();
            assert_eq!(a.shape, vec![2, 3]);
            let want: Vec<f64> = vals
                .iter()
                .map(|v| if d == "<i4" { v.trunc() } else { *v })
                .collect();
            assert_eq!(a.data, want, "{d}");
        }
        let a = decode_npy(p, &encode_npy_f64(&[4], &[1.0, 2.0, 3.0, 65535.0], "<u2")).unwrap();
        assert_eq!(a.shape, vec![4]);
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 65535.0]);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let p = Path::new("x.npy");
        assert!(decode_npy(p, b"not numpy at all")
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut b = encode_npy_f64(&[2, 3], &[0.0; 6], "<f8");
        b.truncate(b.len() - 8);
        assert!(decode_npy(p, &b).unwrap_err().to_string().contains("needs"));
        let mut big = encode_npy_f64(&[2], &[0.0; 2], "<f8");
        let at = big.windows(3).position(|w| w == b"<f8").unwrap();
        big[at] = b'>';
        assert!(decode_npy(p, &big)
            .unwrap_err()
            .to_string()
            .contains("little-endian"));
    }
}
