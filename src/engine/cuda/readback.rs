//! The rendered planes back to the host: the kernel's output (plane-major,
//! one plane of npix values per value) copied through pinned staging
//! buffers, piece by piece, into full-detector images.

use super::device::{drv, lock, Gpu};
use super::inputs::Pixels;
use super::interface::GpuReal;
use crate::engine::EngineError;
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DriverError, PinnedHostSlice};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// The pixel planes of a render (the image, then one per direction), each
/// a full detector image.
pub(super) type Planes = Vec<Vec<f64>>;

/// Elements of each of the two pinned staging buffers a thread keeps per
/// GPU and precision (8 MiB each).
fn staging_len<R>() -> usize {
    (8 << 20) / std::mem::size_of::<R>()
}

/// Copy `d` back to the host through two pinned (page-locked) buffers, so
/// that the transfer into one overlaps the copy out of the other, and hand
/// each piece to `sink(offset, values)`. Pinned memory moves at the bus's
/// speed; pageable memory is staged by the driver at a fraction of it (and
/// is the fallback when no pinned memory can be had).
pub(super) fn read_back<R: GpuReal>(
    g: &Gpu,
    stream: &Arc<CudaStream>,
    d: &CudaSlice<R>,
    mut sink: impl FnMut(usize, &[R]),
) -> Result<(), EngineError> {
    let chunk = staging_len::<R>();
    let mut bufs = match take_staging::<R>(g) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(target: "braggrun::cuda", "pageable read-back: {e}");
            let vals = stream
                .clone_dtoh(d)
                .map_err(drv("reading back the image"))?;
            stream
                .synchronize()
                .map_err(drv("reading back the image"))?;
            sink(0, &vals);
            return Ok(());
        }
    };
    // Should `sink` panic while a copy into the other buffer is in flight,
    // wait for it before the buffers are freed (declared after `bufs`, so
    // dropped first).
    let _in_flight = SyncOnUnwind(stream);
    let total = d.len();
    let pieces = total.div_ceil(chunk);
    let range = |k: usize| k * chunk..((k + 1) * chunk).min(total);
    // piece k into buffer k % 2, and an event after it. The destination is
    // cut to the piece's length: cudarc copies as many bytes as the
    // destination holds.
    let issue = |k: usize, buf: &mut PinnedHostSlice<R>| -> Result<CudaEvent, DriverError> {
        let r = range(k);
        let dst = &mut buf.as_mut_slice()?[..r.len()];
        stream.memcpy_dtoh(&d.slice(r), dst)?;
        stream.record_event(None)
    };
    let mut result = Ok(());
    let mut events: [Option<CudaEvent>; 2] = [None, None];
    let (mut waited, mut copied) = (0.0, 0.0);
    for k in 0..pieces {
        let t = Instant::now();
        let step = (|| {
            if k == 0 {
                events[0] = Some(issue(0, &mut bufs[0])?);
            }
            if k + 1 < pieces {
                events[(k + 1) % 2] = Some(issue(k + 1, &mut bufs[(k + 1) % 2])?);
            }
            if let Some(e) = &events[k % 2] {
                e.synchronize()?;
            }
            Ok(())
        })();
        if let Err(e) = step {
            result = Err(e);
            break;
        }
        let r = range(k);
        let t1 = Instant::now();
        waited += (t1 - t).as_secs_f64();
        match bufs[k % 2].as_slice() {
            Ok(vals) => sink(r.start, &vals[..r.len()]),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        copied += t1.elapsed().as_secs_f64();
    }
    tracing::debug!(
        target: "braggrun::cuda",
        "read back {total} values in {pieces} pieces: {:.3} ms waiting for transfers, {:.3} ms copying out",
        waited * 1e3,
        copied * 1e3
    );
    if result.is_err() && stream.synchronize().is_err() {
        // a copy may still be writing into them: never free or reuse them
        std::mem::forget(bufs);
    } else {
        give_staging(g, bufs);
    }
    result.map_err(drv("reading back the image"))
}

/// Waits for the stream when dropped during a panic.
struct SyncOnUnwind<'a>(&'a Arc<CudaStream>);

impl Drop for SyncOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.synchronize();
        }
    }
}

type Staging<R> = [PinnedHostSlice<R>; 2];

/// Pairs of pinned staging buffers per (GPU, size of the float), shared by
/// the process: a render takes a pair and gives it back, so there are as
/// many pairs as renders that ever ran at once, whatever the threads.
type StagingPool = Mutex<HashMap<(usize, usize), Vec<Box<dyn std::any::Any + Send>>>>;

fn staging_pool() -> &'static StagingPool {
    static POOL: OnceLock<StagingPool> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// A pair of pinned staging buffers for GPU `g` (made when the pool has
/// none); hand it back with [`give_staging`].
fn take_staging<R: GpuReal>(g: &Gpu) -> Result<Box<Staging<R>>, DriverError> {
    let key = (g.ordinal, std::mem::size_of::<R>());
    let kept = lock(staging_pool())
        .get_mut(&key)
        .and_then(|v| v.pop())
        .and_then(|b| b.downcast::<Staging<R>>().ok());
    if let Some(b) = kept {
        return Ok(b);
    }
    // flags 0: cached, CPU-readable (the default is write-combined, which
    // the CPU reads slowly)
    let alloc = || unsafe { g.ctx.alloc_pinned_with_flags::<R>(staging_len::<R>(), 0) };
    Ok(Box::new([alloc()?, alloc()?]))
}

fn give_staging<R: GpuReal>(g: &Gpu, bufs: Box<Staging<R>>) {
    let key = (g.ordinal, std::mem::size_of::<R>());
    lock(staging_pool())
        .entry(key)
        .or_default()
        .push(bufs as Box<dyn std::any::Any + Send>);
}

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
/// per plane) into the full-detector planes.
pub(super) fn scatter<R: GpuReal>(
    planes: &mut [Vec<f64>],
    pixels: &Pixels,
    fp: usize,
    npix: usize,
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
        let img = &mut planes[j];
        match pixels {
            Pixels::Rect { f0, s0, nf, .. } if *f0 == 0 && *nf == fp => {
                // whole rows: one contiguous run
                let dst = &mut img[s0 * fp + i0..s0 * fp + i0 + len];
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
                    img[s * fp + f] = v.to();
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
                    scatter(&mut planes, px, fp, npix, c * piece, chunk);
                }
                let mut want: Planes = vec![vec![0.0; n]; nv];
                for (j, w) in want.iter_mut().enumerate() {
                    for i in 0..npix {
                        let (f, s) = px.get(i);
                        w[s * fp + f] = (1000 * j + 10 * s + f + 1) as f64;
                    }
                }
                assert_eq!(planes, want, "piece {piece}");
            }
        }
    }
}
