//! PGM (P5) images as nanoBragg writes them:
//! `P5\n<width> <height>\n# pixels scaled by <scale>\n255\n` then one byte a
//! pixel, fast index innermost. `<scale>` is printed like C's `%lg`.
use super::IoError;
use std::path::Path;

/// A binary (P5) PGM image as read: size, maxval, comments and pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct PgmImage {
    /// Width in pixels (fast axis).
    pub width: usize,
    /// Height in pixels (slow axis).
    pub height: usize,
    /// Largest pixel value the header declares (1 to 255).
    pub maxval: u32,
    /// Comment lines without their leading '#', trimmed.
    pub comments: Vec<String>,
    /// Pixels, one byte each, fast index innermost.
    pub data: Vec<u8>,
}

/// The whole file.
pub fn encode_pgm(width: usize, height: usize, scale: f64, data: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() != width * height {
        return Err(format!(
            "{} bytes given for a {width} x {height} image",
            data.len()
        ));
    }
    let mut out = format!(
        "P5\n{width} {height}\n# pixels scaled by {}\n255\n",
        super::c_fmt_g(scale)
    )
    .into_bytes();
    out.extend_from_slice(data);
    Ok(out)
}

/// Write `data` (`width` x `height` bytes) as nanoBragg's PGM with its `scale` comment, atomically.
pub fn write_pgm(
    path: &Path,
    width: usize,
    height: usize,
    scale: f64,
    data: &[u8],
) -> Result<(), IoError> {
    let bytes = encode_pgm(width, height, scale, data).map_err(|m| IoError::file(path, m))?;
    super::write_atomic(path, &bytes)
}

/// nanoBragg's pixel value: `min(255, x * scale)` truncated to a byte
/// (negative values become 0).
pub fn pgm_byte(x: f64, scale: f64) -> u8 {
    let t = (x * scale).min(255.0);
    if t > 0.0 {
        t as u8
    } else {
        0
    }
}

/// Read a binary (P5) PGM with maxval below 256.
pub fn read_pgm(path: &Path) -> Result<PgmImage, IoError> {
    let bytes = super::read_bytes(path)?;
    decode_pgm(path, &bytes)
}

/// Parse a binary (P5) PGM with maxval below 256 from `bytes`; `path` names it in errors.
pub fn decode_pgm(path: &Path, bytes: &[u8]) -> Result<PgmImage, IoError> {
    if !bytes.starts_with(b"P5") {
        return Err(IoError::file(path, "not a binary PGM (no P5 magic)"));
    }
    let mut pos = 2;
    let mut comments = Vec::new();
    let mut fields = Vec::new();
    while fields.len() < 3 {
        // skip whitespace and comments
        while pos < bytes.len() {
            let c = bytes[pos];
            if c.is_ascii_whitespace() {
                pos += 1;
            } else if c == b'#' {
                let end = bytes[pos..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |e| pos + e);
                comments.push(
                    String::from_utf8_lossy(&bytes[pos + 1..end])
                        .trim()
                        .to_string(),
                );
                pos = end;
            } else {
                break;
            }
        }
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if start == pos {
            return Err(IoError::file(path, "malformed PGM header"));
        }
        let v: usize = std::str::from_utf8(&bytes[start..pos])
            .unwrap()
            .parse()
            .map_err(|_| IoError::file(path, "PGM header number too large"))?;
        fields.push(v);
    }
    // exactly one whitespace byte separates the header from the pixels
    if pos >= bytes.len() || !bytes[pos].is_ascii_whitespace() {
        return Err(IoError::file(path, "malformed PGM header"));
    }
    pos += 1;
    let (width, height, maxval) = (fields[0], fields[1], fields[2]);
    if maxval == 0 || maxval > 255 {
        return Err(IoError::file(
            path,
            format!("unsupported PGM maxval {maxval}"),
        ));
    }
    let n = width * height;
    if bytes.len() < pos + n {
        return Err(IoError::file(
            path,
            format!(
                "truncated: {width} x {height} pixels, {} bytes of data",
                bytes.len() - pos
            ),
        ));
    }
    Ok(PgmImage {
        width,
        height,
        maxval: maxval as u32,
        comments,
        data: bytes[pos..pos + n].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_round_trip() {
        let data: Vec<u8> = vec![0, 10, 32, 255, 9, 13];
        let bytes = encode_pgm(3, 2, 1.0 / 3.0, &data).unwrap();
        let head = b"P5\n3 2\n# pixels scaled by 0.333333\n255\n";
        assert_eq!(&bytes[..head.len()], head);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.pgm");
        write_pgm(&p, 3, 2, 1.0 / 3.0, &data).unwrap();
        let img = read_pgm(&p).unwrap();
        assert_eq!((img.width, img.height, img.maxval), (3, 2, 255));
        assert_eq!(img.comments, vec!["pixels scaled by 0.333333".to_string()]);
        assert_eq!(img.data, data);
        assert!(encode_pgm(2, 2, 1.0, &data).is_err());
    }

    #[test]
    fn byte_rule() {
        assert_eq!(pgm_byte(1.0, 2.9), 2);
        assert_eq!(pgm_byte(1e9, 1.0), 255);
        assert_eq!(pgm_byte(-3.0, 1.0), 0);
    }
}
