//! NumPy `.npy` files (through ndarray-npy): the shape and the dtype are in
//! the file, so `numpy.load` needs nothing else. Images are `(slow, fast)`
//! arrays in C order (the raw images' pixel order: index = slow * fpixels +
//! fast); derivative stacks are `(parameter, slow, fast)`. Written through
//! [`super::write_atomic`].

use super::IoError;
use ndarray::{Array, ArrayRef, ArrayView2, Dimension, Ix2, Ix3};
use ndarray_npy::{ReadNpyExt, ReadableElement, WritableElement, WriteNpyExt};
use std::path::Path;

/// Write any array (f64, f32, ... of any dimension).
pub fn write_npy<A: WritableElement, D: Dimension>(
    path: &Path,
    array: &ArrayRef<A, D>,
) -> Result<(), IoError> {
    let mut bytes = Vec::new();
    array
        .write_npy(&mut bytes)
        .map_err(|e| IoError::file(path, format!("cannot encode .npy: {e}")))?;
    super::write_atomic(path, &bytes)
}

/// An image as a `(spixels, fpixels)` view of its pixels.
fn image_view<'a, A>(
    path: &Path,
    data: &'a [A],
    spixels: usize,
    fpixels: usize,
) -> Result<ArrayView2<'a, A>, IoError> {
    ArrayView2::from_shape((spixels, fpixels), data).map_err(|_| {
        IoError::file(
            path,
            format!("{} pixels is not {spixels} x {fpixels}", data.len()),
        )
    })
}

/// Write an image (`data` in pixel order) as a `(spixels, fpixels)` array:
/// float64 for `&[f64]`, float32 for `&[f32]`.
pub fn write_image<A: WritableElement>(
    path: &Path,
    data: &[A],
    spixels: usize,
    fpixels: usize,
) -> Result<(), IoError> {
    write_npy(path, &image_view(path, data, spixels, fpixels)?)
}

/// Write derivative images (each in pixel order) as one float64
/// `(planes, spixels, fpixels)` array.
pub fn write_stack(
    path: &Path,
    planes: &[&[f64]],
    spixels: usize,
    fpixels: usize,
) -> Result<(), IoError> {
    let mut stack = ndarray::Array3::<f64>::zeros((planes.len(), spixels, fpixels));
    for (mut out, plane) in stack.outer_iter_mut().zip(planes) {
        out.assign(&image_view(path, plane, spixels, fpixels)?);
    }
    write_npy(path, &stack)
}

/// Read an array of a known element type and dimension.
pub fn read_npy<A: ReadableElement, D: Dimension>(path: &Path) -> Result<Array<A, D>, IoError> {
    let bytes = super::read_bytes(path)?;
    Array::<A, D>::read_npy(bytes.as_slice())
        .map_err(|e| IoError::file(path, format!("not a readable .npy: {e}")))
}

/// Read a 2-D array (an image).
pub fn read_image<A: ReadableElement>(path: &Path) -> Result<Array<A, Ix2>, IoError> {
    read_npy(path)
}

/// Read a 3-D array (a derivative stack).
pub fn read_stack<A: ReadableElement>(path: &Path) -> Result<Array<A, Ix3>, IoError> {
    read_npy(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_and_stacks_read_back_with_shape_and_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let (s, f) = (2usize, 3usize);
        let img: Vec<f64> = (0..6).map(|i| i as f64 * 0.25 - 0.1).collect();
        let p64 = dir.path().join("img64.npy");
        write_image(&p64, &img, s, f).unwrap();
        let back = read_image::<f64>(&p64).unwrap();
        assert_eq!(back.shape(), &[2, 3]);
        // pixel (fast 2, slow 1) is index 1*3+2 = 5
        assert_eq!(back[[1, 2]], img[5]);
        assert_eq!(back.as_slice().unwrap(), img.as_slice());
        // a float64 file is not read as float32
        assert!(read_image::<f32>(&p64).is_err());
        // and the header says so
        let bytes = std::fs::read(&p64).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let header = String::from_utf8_lossy(&bytes[10..]);
        assert!(
            header.contains("'descr': '<f8'") && header.contains("'shape': (2, 3)"),
            "{header}"
        );

        let img32: Vec<f32> = img.iter().map(|&x| x as f32).collect();
        let p32 = dir.path().join("img32.npy");
        write_image(&p32, &img32, s, f).unwrap();
        let back = read_image::<f32>(&p32).unwrap();
        assert_eq!(back.as_slice().unwrap(), img32.as_slice());
        let header = String::from_utf8_lossy(&std::fs::read(&p32).unwrap()[10..]).to_string();
        assert!(header.contains("'descr': '<f4'"), "{header}");

        let other: Vec<f64> = img.iter().map(|x| -x * 3.0).collect();
        let ps = dir.path().join("stack.npy");
        write_stack(&ps, &[&img, &other], s, f).unwrap();
        let st = read_stack::<f64>(&ps).unwrap();
        assert_eq!(st.shape(), &[2, 2, 3]);
        assert_eq!(st[[0, 1, 2]], img[5]);
        assert_eq!(st[[1, 0, 1]], other[1]);
        assert!(read_image::<f64>(&ps).is_err(), "a stack is not an image");
    }

    #[test]
    fn wrong_sizes_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        let e = write_image(&p, &[1.0f64; 5], 2, 3).unwrap_err().to_string();
        assert!(e.contains("bad.npy") && e.contains("5 pixels"), "{e}");
        assert!(!p.exists());
        std::fs::write(&p, b"not numpy").unwrap();
        let e = read_image::<f64>(&p).unwrap_err().to_string();
        assert!(e.contains("bad.npy"), "{e}");
    }
}
