//! The rendered planes into full-detector images on the host: the
//! kernel's output (plane-major, one plane of npix values per value), piece
//! by piece as [`super::pipeline`] copies it back, converted to f64 and put
//! at each pixel's place.

use super::inputs::Pixels;
use super::interface::GpuReal;
use std::mem::MaybeUninit;
use std::ops::Range;

/// The pixel planes of a render (the image, then one per direction), each
/// a full detector image.
pub(super) type Planes = Vec<Vec<f64>>;

/// An f64 buffer seen as possibly uninitialised memory, for [`scatter`]
/// (writing initialised values into initialised memory is always sound).
#[cfg(test)]
fn as_uninit(v: &mut [f64]) -> &mut [MaybeUninit<f64>] {
    // SAFETY: MaybeUninit<f64> has f64's layout; only initialised values
    // are written through the result
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len()) }
}

/// Write 0.0 into every element, on all threads.
pub(super) fn fill_zero(v: &mut [MaybeUninit<f64>]) {
    use rayon::prelude::*;
    v.par_chunks_mut(1 << 15).for_each(|c| {
        for x in c {
            x.write(0.0);
        }
    });
}

/// The parts of a full-detector plane (`n` pixels, `fp` to a row) that
/// [`scatter`] does not write, to be zeroed: the rows outside a ROI of whole
/// rows; the whole plane for any other ROI or a mask (scatter then writes
/// their pixels over the zeros).
pub(super) fn unwritten(pixels: &Pixels, fp: usize, n: usize) -> [Range<usize>; 2] {
    match pixels {
        Pixels::Rect { f0: 0, s0, nf, ns } if *nf == fp => [0..s0 * fp, (s0 + ns) * fp..n],
        _ => [0..n, n..n],
    }
}

/// Put values `offset..` of the kernel's output (plane-major, npix values
/// per plane) into the planes (possibly uninitialised memory: every value
/// is written, none read): `planes[j]` holds full-detector plane j from
/// index `base` on (the whole plane when `base` is 0; a band of rows for one
/// part of a split render), and must cover the pixels of `vals`.
pub(super) fn scatter<R: GpuReal, P: AsMut<[MaybeUninit<f64>]>>(
    planes: &mut [P],
    pixels: &Pixels,
    fp: usize,
    npix: usize,
    base: usize,
    offset: usize,
    vals: &[R],
) {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 13;
    let mut done = 0;
    while done < vals.len() {
        let (j, i0) = ((offset + done) / npix, (offset + done) % npix);
        let len = (npix - i0).min(vals.len() - done);
        let src = &vals[done..done + len];
        let img = planes[j].as_mut();
        match pixels {
            Pixels::Rect { f0, s0, nf, .. } if *f0 == 0 && *nf == fp => {
                // whole rows: one contiguous run
                let at = s0 * fp + i0 - base;
                let dst = &mut img[at..at + len];
                dst.par_chunks_mut(PIECE)
                    .zip(src.par_chunks(PIECE))
                    .for_each(|(d, s)| {
                        for (d, s) in d.iter_mut().zip(s) {
                            d.write(s.to());
                        }
                    });
            }
            _ => {
                for (k, v) in src.iter().enumerate() {
                    let (f, s) = pixels.get(i0 + k);
                    img[s * fp + f - base].write(v.to());
                }
            }
        }
        done += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(f0: usize, s0: usize, nf: usize, ns: usize) -> Pixels {
        Pixels::Rect { f0, s0, nf, ns }
    }

    /// Zeroing what `unwritten` names and scattering every piece leaves no
    /// element of any plane unset (the render then takes the planes as
    /// initialised): each starts as NaN here, and ends as its pixel's value
    /// inside the ROI and 0 outside, for ROIs of whole rows (where only the
    /// rows outside are zeroed), a rectangle, the whole detector and a mask.
    #[test]
    fn zeroed_and_scattered_planes_are_fully_written() {
        let (fp, sp) = (6usize, 7usize);
        let n = fp * sp;
        let cases = [
            rect(0, 0, fp, sp),
            rect(0, 2, fp, 3),
            rect(0, 0, fp, 1),
            rect(1, 2, 4, 4),
            Pixels::List(vec![(0, 1), (5, 1), (2, 6)]),
        ];
        for px in &cases {
            let npix = px.len();
            let vals: Vec<f64> = (0..2 * npix)
                .map(|k| {
                    let (f, s) = px.get(k % npix);
                    (100 * (k / npix) + 10 * s + f + 1) as f64
                })
                .collect();
            for piece in [1, 5, npix] {
                let mut planes: Planes = vec![vec![f64::NAN; n]; 2];
                for p in &mut planes {
                    for r in unwritten(px, fp, n) {
                        fill_zero(as_uninit(&mut p[r]));
                    }
                }
                let mut w: Vec<&mut [MaybeUninit<f64>]> =
                    planes.iter_mut().map(|p| as_uninit(p)).collect();
                for (c, chunk) in vals.chunks(piece).enumerate() {
                    scatter(&mut w, px, fp, npix, 0, c * piece, chunk);
                }
                drop(w);
                for (j, p) in planes.iter().enumerate() {
                    let mut want = vec![0.0; n];
                    for i in 0..npix {
                        let (f, s) = px.get(i);
                        want[s * fp + f] = (100 * j + 10 * s + f + 1) as f64;
                    }
                    assert!(
                        p.iter().all(|v| v.is_finite()),
                        "unset element, piece {piece}"
                    );
                    assert_eq!(p, &want, "piece {piece}");
                }
            }
        }
    }

    /// The planes the kernel writes (plane-major, npix values each), put
    /// back piece by piece, land where the CPU engine puts each pixel,
    /// whatever the piece boundaries: a whole detector, a ROI of whole
    /// rows, a ROI rectangle and a masked list.
    #[test]
    fn scatter_puts_every_value_at_its_pixel() {
        let (fp, sp) = (7usize, 5usize);
        let n = fp * sp;
        let cases = [
            rect(0, 0, fp, sp),
            rect(0, 1, fp, 3),
            rect(2, 1, 4, 3),
            Pixels::List(vec![(0, 0), (6, 0), (3, 2), (1, 4), (6, 4)]),
        ];
        for px in &cases {
            let npix = px.len();
            let nv = 3;
            // value of plane j at pixel (f, s): 1000 j + 10 s + f + 1
            let vals: Vec<f32> = (0..nv * npix)
                .map(|k| {
                    let (f, s) = px.get(k % npix);
                    (1000 * (k / npix) + 10 * s + f + 1) as f32
                })
                .collect();
            for piece in [1, 4, npix, npix + 3, nv * npix] {
                let mut planes: Planes = vec![vec![0.0; n]; nv];
                let mut w: Vec<&mut [MaybeUninit<f64>]> =
                    planes.iter_mut().map(|p| as_uninit(p)).collect();
                for (c, chunk) in vals.chunks(piece).enumerate() {
                    scatter(&mut w, px, fp, npix, 0, c * piece, chunk);
                }
                drop(w);
                let mut want: Planes = vec![vec![0.0; n]; nv];
                for (j, w) in want.iter_mut().enumerate() {
                    for i in 0..npix {
                        let (f, s) = px.get(i);
                        w[s * fp + f] = (1000 * j + 10 * s + f + 1) as f64;
                    }
                }
                assert_eq!(planes, want, "piece {piece}");
                // the same into bands of rows (a split render's parts)
                for cut in 1..sp {
                    let mut planes: Planes = vec![vec![0.0; n]; nv];
                    let (mut lo, mut hi): (Vec<_>, Vec<_>) = planes
                        .iter_mut()
                        .map(|p| as_uninit(p).split_at_mut(cut * fp))
                        .unzip();
                    for (c, chunk) in vals.chunks(piece).enumerate() {
                        // a piece's values, each to the band of its row
                        for (k, v) in chunk.iter().enumerate() {
                            let at = c * piece + k;
                            let (_, s) = px.get(at % npix);
                            if s < cut {
                                scatter(&mut lo, px, fp, npix, 0, at, std::slice::from_ref(v));
                            } else {
                                scatter(
                                    &mut hi,
                                    px,
                                    fp,
                                    npix,
                                    cut * fp,
                                    at,
                                    std::slice::from_ref(v),
                                );
                            }
                        }
                    }
                    drop((lo, hi));
                    assert_eq!(planes, want, "piece {piece}, cut {cut}");
                }
            }
        }
    }
}
