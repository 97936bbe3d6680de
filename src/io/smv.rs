//! SMV (ADSC) images: 512-byte ASCII header, then unsigned 16-bit pixels.
//!
//! The header is written the way nanoBragg writes it:
//! `{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\n`,
//! then one `KEY=VALUE;\n` line per entry, then `}\f`, padded with spaces to
//! 512 bytes. Pixels follow, fast index innermost.
use super::IoError;
use std::collections::BTreeMap;
use std::path::Path;

/// The fixed size of the header nanoBragg writes.
pub const HEADER_BYTES: usize = 512;

/// Keys the writer emits itself; entries with these names in the caller's
/// list are skipped so the header never contradicts the data.
const RESERVED: [&str; 4] = ["HEADER_BYTES", "DIM", "BYTE_ORDER", "TYPE"];

/// An SMV image as read: its header entries and unsigned 16-bit pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct SmvImage {
    /// Every `KEY=VALUE;` entry of the header, by key (HEADER_BYTES, BYTE_ORDER, SIZE1, ...).
    pub header: BTreeMap<String, String>,
    /// Width in pixels along the fast axis (SIZE1).
    pub fpixels: usize,
    /// Height in pixels along the slow axis (SIZE2).
    pub spixels: usize,
    /// Pixel values, fast index innermost.
    pub data: Vec<u16>,
}

impl SmvImage {
    /// A header value as a number (None when absent or not a number).
    pub fn value(&self, key: &str) -> Option<f64> {
        self.header
            .get(key)
            .and_then(|v| v.trim().parse::<f64>().ok())
    }
}

/// The header bytes (exactly [`HEADER_BYTES`] long).
pub fn smv_header_bytes(header: &[(String, String)], big_endian: bool) -> Result<Vec<u8>, String> {
    let mut s = String::from("{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=");
    s.push_str(if big_endian {
        "big_endian"
    } else {
        "little_endian"
    });
    s.push_str(";\nTYPE=unsigned_short;\n");
    for (k, v) in header {
        if RESERVED.contains(&k.as_str()) {
            continue;
        }
        if k.is_empty() || k.contains(['=', ';', '\n', '}']) || v.contains([';', '\n', '}']) {
            return Err(format!(
                "header entry '{k}={v}' cannot be written to an SMV header"
            ));
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
        s.push_str(";\n");
    }
    s.push_str("}\u{c}");
    if s.len() > HEADER_BYTES {
        return Err(format!(
            "header is {} bytes, more than {HEADER_BYTES}",
            s.len()
        ));
    }
    let mut bytes = s.into_bytes();
    bytes.resize(HEADER_BYTES, b' ');
    Ok(bytes)
}

/// The whole file: header then pixels.
pub fn encode_smv(
    header: &[(String, String)],
    fpixels: usize,
    spixels: usize,
    data: &[u16],
    big_endian: bool,
) -> Result<Vec<u8>, String> {
    if data.len() != fpixels * spixels {
        return Err(format!(
            "{} pixels given for a {fpixels} x {spixels} image",
            data.len()
        ));
    }
    let mut out = smv_header_bytes(header, big_endian)?;
    out.reserve(2 * data.len());
    for &v in data {
        out.extend_from_slice(&if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    Ok(out)
}

/// Write an SMV image. `header` holds the keys after TYPE (SIZE1, SIZE2, ...)
/// in the order they should appear; values are written verbatim.
pub fn write_smv(
    path: &Path,
    header: &[(String, String)],
    fpixels: usize,
    spixels: usize,
    data: &[u16],
    big_endian: bool,
) -> Result<(), IoError> {
    let bytes = encode_smv(header, fpixels, spixels, data, big_endian)
        .map_err(|m| IoError::file(path, m))?;
    super::write_atomic(path, &bytes)
}

/// Parse `KEY=VALUE` pairs between `{` and `}`. Entries end at `;` or at a
/// newline (nanoBragg writes DIALS_ORIGIN without its `;`). Later keys win.
fn parse_header(text: &str) -> BTreeMap<String, String> {
    let body = text.strip_prefix('{').unwrap_or(text);
    let body = match body.find('}') {
        Some(i) => &body[..i],
        None => body,
    };
    let mut map = BTreeMap::new();
    for line in body.lines() {
        for entry in line.split(';') {
            if let Some((k, v)) = entry.split_once('=') {
                let k = k.trim();
                if !k.is_empty() {
                    map.insert(k.to_string(), v.trim().to_string());
                }
            }
        }
    }
    map
}

/// Read an SMV image, honouring HEADER_BYTES and BYTE_ORDER. Only
/// TYPE=unsigned_short (or no TYPE) is accepted.
pub fn read_smv(path: &Path) -> Result<SmvImage, IoError> {
    let bytes = super::read_bytes(path)?;
    decode_smv(path, &bytes)
}

/// [`read_smv`] on bytes already in memory (`path` names it in errors).
pub fn decode_smv(path: &Path, bytes: &[u8]) -> Result<SmvImage, IoError> {
    if !bytes.starts_with(b"{") {
        return Err(IoError::file(
            path,
            "not an SMV image (does not start with '{')",
        ));
    }
    // HEADER_BYTES is within the first 512 bytes; read it from there first.
    let first = &bytes[..bytes.len().min(HEADER_BYTES)];
    let first_text = String::from_utf8_lossy(first);
    let first_map = parse_header(&first_text);
    let header_bytes: usize = match first_map.get("HEADER_BYTES") {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| IoError::file(path, format!("HEADER_BYTES is not an integer: '{v}'")))?,
        None => return Err(IoError::file(path, "SMV header has no HEADER_BYTES")),
    };
    if header_bytes == 0 || header_bytes > bytes.len() {
        return Err(IoError::file(
            path,
            format!(
                "HEADER_BYTES={header_bytes} but the file has {} bytes",
                bytes.len()
            ),
        ));
    }
    let header = parse_header(&String::from_utf8_lossy(&bytes[..header_bytes]));
    let big_endian = match header.get("BYTE_ORDER").map(|s| s.as_str()) {
        Some("little_endian") => false,
        Some("big_endian") => true,
        Some(other) => return Err(IoError::file(path, format!("unknown BYTE_ORDER '{other}'"))),
        None => return Err(IoError::file(path, "SMV header has no BYTE_ORDER")),
    };
    if let Some(t) = header.get("TYPE") {
        if t != "unsigned_short" {
            return Err(IoError::file(
                path,
                format!("unsupported TYPE '{t}' (only unsigned_short)"),
            ));
        }
    }
    let dim = |key: &str| -> Result<usize, IoError> {
        let v = header
            .get(key)
            .ok_or_else(|| IoError::file(path, format!("SMV header has no {key}")))?;
        v.trim()
            .parse::<usize>()
            .map_err(|_| IoError::file(path, format!("{key} is not a pixel count: '{v}'")))
    };
    let fpixels = dim("SIZE1")?;
    let spixels = dim("SIZE2")?;
    let n = fpixels
        .checked_mul(spixels)
        .ok_or_else(|| IoError::file(path, "image size overflows"))?;
    let need = header_bytes + 2 * n;
    if bytes.len() < need {
        return Err(IoError::file(
            path,
            format!(
                "truncated: {fpixels} x {spixels} pixels need {need} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let data = bytes[header_bytes..need]
        .chunks_exact(2)
        .map(|c| {
            let b = [c[0], c[1]];
            if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        })
        .collect();
    Ok(SmvImage {
        header,
        fpixels,
        spixels,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn header_layout_is_nanobragg_s() {
        let h = smv_header_bytes(&[kv("SIZE1", "3"), kv("SIZE2", "2")], false).unwrap();
        assert_eq!(h.len(), 512);
        let want = "{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=3;\nSIZE2=2;\n}\u{c}";
        assert_eq!(&h[..want.len()], want.as_bytes());
        assert!(h[want.len()..].iter().all(|&b| b == b' '));
    }

    #[test]
    fn round_trip_both_byte_orders() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u16> = (0..12).map(|i| (i * 5000 + 7) as u16).collect();
        for big in [false, true] {
            let p = dir.path().join(format!("x{big}.img"));
            write_smv(
                &p,
                &[kv("SIZE1", "4"), kv("SIZE2", "3"), kv("PIXEL_SIZE", "0.1")],
                4,
                3,
                &data,
                big,
            )
            .unwrap();
            let img = read_smv(&p).unwrap();
            assert_eq!((img.fpixels, img.spixels), (4, 3));
            assert_eq!(img.data, data);
            assert_eq!(img.value("PIXEL_SIZE"), Some(0.1));
            assert_eq!(
                img.header["BYTE_ORDER"],
                if big { "big_endian" } else { "little_endian" }
            );
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 512 + 24);
        }
    }

    #[test]
    fn honours_larger_header_and_missing_semicolon() {
        let mut text = String::from("{\nHEADER_BYTES=1024;\nDIM=2;\nBYTE_ORDER=big_endian;\nTYPE=unsigned_short;\nSIZE1=2;\nSIZE2=1;\nDIALS_ORIGIN=1,2,3\nDISTANCE=50;\n}\u{c}");
        while text.len() < 1024 {
            text.push(' ');
        }
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&[0x01, 0x02, 0xff, 0x00]);
        let img = decode_smv(Path::new("h.img"), &bytes).unwrap();
        assert_eq!(img.data, vec![0x0102, 0xff00]);
        assert_eq!(img.header["DIALS_ORIGIN"], "1,2,3");
        assert_eq!(img.value("DISTANCE"), Some(50.0));
    }

    #[test]
    fn errors() {
        let p = Path::new("e.img");
        assert!(decode_smv(p, b"P5 nope").is_err());
        let h = smv_header_bytes(&[kv("SIZE1", "4"), kv("SIZE2", "4")], false).unwrap();
        let e = decode_smv(p, &h).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert!(encode_smv(&[], 2, 2, &[1, 2, 3], false).is_err());
        let long: Vec<_> = (0..40)
            .map(|i| kv(&format!("KEY{i}"), "0123456789"))
            .collect();
        assert!(smv_header_bytes(&long, false).is_err());
    }
}
