//! Raw float images (`-floatfile`): little-endian float32, no header, fast
//! index innermost (pixel index = slow * fpixels + fast).
use super::IoError;
use std::path::Path;

/// The bytes of a float image.
pub fn encode_f32(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * data.len());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Write float32 pixels.
pub fn write_float_image(path: &Path, data: &[f32]) -> Result<(), IoError> {
    super::write_atomic(path, &encode_f32(data))
}

/// Write f64 pixels rounded to float32 (as nanoBragg stores its image).
pub fn write_float_image_f64(path: &Path, data: &[f64]) -> Result<(), IoError> {
    let v: Vec<f32> = data.iter().map(|&x| x as f32).collect();
    write_float_image(path, &v)
}

/// Read a float image; `expected` (pixel count), when given, must match.
pub fn read_float_image(path: &Path, expected: Option<usize>) -> Result<Vec<f32>, IoError> {
    let bytes = super::read_bytes(path)?;
    if bytes.len() % 4 != 0 {
        return Err(IoError::file(
            path,
            format!(
                "{} bytes is not a whole number of float32 values",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / 4;
    if let Some(want) = expected {
        if n != want {
            return Err(IoError::file(
                path,
                format!("{n} float32 values, expected {want}"),
            ));
        }
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        let data = [0.0f32, 1.5, -2.25, 1e-30, 3.4e38];
        write_float_image(&p, &data).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[4..8], &1.5f32.to_le_bytes());
        assert_eq!(read_float_image(&p, Some(5)).unwrap(), data);
        assert!(read_float_image(&p, Some(4)).is_err());
        write_float_image_f64(&p, &[0.1, 2.0]).unwrap();
        assert_eq!(read_float_image(&p, None).unwrap(), vec![0.1f32, 2.0]);
        std::fs::write(&p, [0u8; 5]).unwrap();
        assert!(read_float_image(&p, None).is_err());
    }
}
