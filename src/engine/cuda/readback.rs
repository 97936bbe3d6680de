//! The rendered planes into full-detector images on the host: the
//! kernel's output (plane-major, one plane of npix values per value), piece
//! by piece as [`super::pipeline`] copies it back, converted to f64 and put
//! at each pixel's place.

use super::inputs::Pixels;
use super::interface::GpuReal;

/// The pixel planes of a render (the image, then one per direction), each
/// a full detector image.
pub(super) type Planes = Vec<Vec<f64>>;

/// A zeroed image, written by all threads: its first touch (page faults,
/// the kernel zeroing each page) then costs a fraction of what one thread
/// pays, about 4 ms per 8 MB there. It overlaps the kernel.
pub(super) fn zeroed_plane(n: usize) -> Vec<f64> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0.0, n));
    v
}

/// Put values `offset..` of the kernel's output (plane-major, npix values
/// per plane) into the planes: `planes[j]` holds full-detector plane j from
/// index `base` on (the whole plane when `base` is 0; a band of rows for one
/// part of a split render), and must cover the pixels of `vals`.
pub(super) fn scatter<R: GpuReal, P: AsMut<[f64]>>(
    planes: &mut [P],
    pixels: &Pixels,
    fp: usize,
    npix: usize,
    base: usize,
    offset: usize,
    vals: &[R],
) {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 15;
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
                            *d = s.to();
                        }
                    });
            }
            _ => {
                for (k, v) in src.iter().enumerate() {
                    let (f, s) = pixels.get(i0 + k);
                    img[s * fp + f - base] = v.to();
                }
            }
        }
        done += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The planes the kernel writes (plane-major, npix values each), put
    /// back piece by piece, land where the CPU engine puts each pixel,
    /// whatever the piece boundaries: a whole detector, a ROI of whole
    /// rows, a ROI rectangle and a masked list.
    #[test]
    fn scatter_puts_every_value_at_its_pixel() {
        let (fp, sp) = (7usize, 5usize);
        let n = fp * sp;
        let cases = [
            Pixels::Rect {
                f0: 0,
                s0: 0,
                nf: fp,
                ns: sp,
            },
            Pixels::Rect {
                f0: 0,
                s0: 1,
                nf: fp,
                ns: 3,
            },
            Pixels::Rect {
                f0: 2,
                s0: 1,
                nf: 4,
                ns: 3,
            },
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
                let mut planes: Planes = (0..nv).map(|_| zeroed_plane(n)).collect();
                for (c, chunk) in vals.chunks(piece).enumerate() {
                    scatter(&mut planes, px, fp, npix, 0, c * piece, chunk);
                }
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
                    let mut planes: Planes = (0..nv).map(|_| zeroed_plane(n)).collect();
                    let (mut lo, mut hi): (Vec<&mut [f64]>, Vec<&mut [f64]>) =
                        planes.iter_mut().map(|p| p.split_at_mut(cut * fp)).unzip();
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
