//! The rendered planes into full-detector images on the host: the
//! kernel's output (plane-major, one plane of npix values per value), piece
//! by piece as [`super::pipeline`] copies it back, converted to f64 and put
//! at each pixel's place.

use super::inputs::Pixels;
use super::interface::GpuReal;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

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
/// per plane) into the planes, as the read-back's converter does share by
/// share: `planes[j]` holds full-detector plane j from index `base` on.
#[cfg(test)]
fn scatter<R: GpuReal, P: AsMut<[MaybeUninit<f64>]>>(
    planes: &mut [P],
    pixels: &Pixels,
    fp: usize,
    npix: usize,
    base: usize,
    offset: usize,
    vals: &[R],
) {
    let mut done = 0;
    while done < vals.len() {
        let (j, i0) = ((offset + done) / npix, (offset + done) % npix);
        let len = (npix - i0).min(vals.len() - done);
        put(
            planes[j].as_mut(),
            pixels,
            fp,
            base,
            i0,
            &vals[done..done + len],
        );
        done += len;
    }
}

/// Values a thread converts at a time (one share of a piece: this many
/// pixels of a single plane, fewer pixels of several planes, so that with
/// derivatives the last piece, the one converted after the last kernel,
/// still spreads over every thread: at 1024^2 with 6 derivatives it took
/// 85-128 us in shares of 8192 pixels x 7 planes).
const SHARE: usize = 1 << 13;
/// Planes at least this large (bytes) are fresh memory from the system
/// (glibc maps allocations above its 32 MiB ceiling anew), which faults on
/// first write: their pages are asked to be huge ones, and idle threads
/// touch a piece's pages before it arrives.
pub(super) const FRESH_BYTES: usize = 32 << 20;
/// A transparent huge page (x86-64, arm64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Ask for transparent huge pages behind a large plane about to be written
/// (Linux; one fault per 2 MiB rather than per 4 KiB: a 4096^2 float64
/// plane is 128 MiB). Advice only: nothing depends on it being taken.
pub(super) fn advise_huge(v: &mut Vec<f64>) {
    let bytes = v.capacity() * std::mem::size_of::<f64>();
    if bytes < FRESH_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = (v.as_mut_ptr() as usize).next_multiple_of(HUGE_PAGE);
        let end = (v.as_mut_ptr() as usize + bytes) & !(HUGE_PAGE - 1);
        if end > start {
            // SAFETY: madvise on whole pages inside the vector's allocation;
            // MADV_HUGEPAGE changes no contents
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
}

/// Write the values of pixels `i0..i0 + src.len()` (of the ROI's pixel
/// list, in order) into `img`, the full-detector plane from index `base`
/// on (possibly uninitialised memory: every value is written, none read).
fn put<R: GpuReal>(
    img: &mut [MaybeUninit<f64>],
    pixels: &Pixels,
    fp: usize,
    base: usize,
    i0: usize,
    src: &[R],
) {
    match pixels {
        Pixels::Rect { f0, s0, nf, .. } if *f0 == 0 && *nf == fp => {
            // whole rows: one contiguous run
            let at = s0 * fp + i0 - base;
            for (d, s) in img[at..at + src.len()].iter_mut().zip(src) {
                d.write(s.to());
            }
        }
        _ => {
            for (k, v) in src.iter().enumerate() {
                let (f, s) = pixels.get(i0 + k);
                img[s * fp + f - base].write(v.to());
            }
        }
    }
}

/// The plane indices (from `base`) that pixels `r` of the ROI lie between:
/// pixels are in row order, so the spans of disjoint pixel ranges are
/// disjoint.
fn span(pixels: &Pixels, fp: usize, base: usize, r: &Range<usize>) -> Range<usize> {
    let (f, s) = pixels.get(r.start);
    let (g, t) = pixels.get(r.end - 1);
    s * fp + f - base..t * fp + g + 1 - base
}

/// Share states: free, pages being touched, pages touched, taken to convert.
const FREE: u8 = 0;
const TOUCHING: u8 = 1;
const TOUCHED: u8 = 2;
const TAKEN: u8 = 3;

/// The conversion of a part's pieces into its planes, shared by the host's
/// threads: the thread that reads back publishes each piece as its copy
/// arrives ([`Converter::publish`]), and every thread converts shares of
/// [`SHARE`] values of the published pieces (f32 or f64 to f64, each to its
/// pixel's place). The workers ([`Converter::work`]) wait for pieces by
/// spinning on an atomic, not by sleeping: a fork and join per piece woke
/// sleeping threads each time (20-50 us a piece at 1024^2, more than the
/// GPU takes to compute one). No thread depends on another starting: the
/// publishing thread converts whatever is left itself ([`Converter::finish`]).
/// Threads waiting for a piece of a large fresh plane touch its pages
/// first, so their faults fall while the GPU computes.
pub(super) struct Converter<R> {
    pixels: *const Pixels,
    fp: usize,
    base: usize,
    nv: usize,
    pieces: Vec<Range<usize>>,
    /// where piece k's values are: `stage[k % stage.len()]`, plane j from
    /// `j * stride` on (`stride`: the piece's length when None)
    stage: Vec<*const R>,
    stride: Option<usize>,
    /// the planes' windows (element 0 is full-plane index `base`)
    planes: Vec<(*mut MaybeUninit<f64>, usize)>,
    /// first share of piece k (k = 0..=n)
    first: Vec<usize>,
    state: Vec<AtomicU8>,
    /// per piece: next share to convert, to touch; shares converted
    next: Vec<AtomicUsize>,
    next_touch: Vec<AtomicUsize>,
    converted: Vec<AtomicUsize>,
    /// pieces published
    ready: AtomicUsize,
    abort: AtomicBool,
    touch: bool,
    /// pixels a share (SHARE values over the planes, a 2 MiB page of a
    /// fresh plane, or a test's tuning)
    share: usize,
}

// SAFETY: the pointers are only dereferenced as `Converter::new`'s contract
// allows: the staging buffers read after their piece is published, each
// plane element written by the one thread that took its share
unsafe impl<R: Sync> Sync for Converter<R> {}
unsafe impl<R: Sync> Send for Converter<R> {}

impl<R: GpuReal> Converter<R> {
    /// A converter for `pieces` (pixel ranges of the ROI, in order) into
    /// `planes` (one window per plane: the full-detector plane from index
    /// `base` on, covering the pieces' pixels).
    ///
    /// # Safety
    /// Until the converter is dropped the windows must not be used
    /// otherwise; `stage[k % stage.len()]` must hold piece k's planes (plane
    /// j's `len` values from `j * stride`, `stride` the piece's length when
    /// None) from its [`publish`](Self::publish) until
    /// [`converted`](Self::converted) returns true for it, and must not be
    /// written meanwhile; `pixels` must outlive the converter.
    ///
    /// `tuning` (tests): shares of that many pixels, pages touched first or
    /// not; None: shares of [`SHARE`] values (SHARE / planes pixels), and
    /// for fresh planes (of
    /// [`FRESH_BYTES`] or more) one share per 2 MiB page with pages touched
    /// first: shares of SHARE pixels there had 32 threads wait on one huge
    /// page's fault (4096^2 float32 on an H200 host: 11.1-11.3 ms a
    /// render, 7.4-7.8 ms with 2 MiB shares).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn new(
        pixels: &Pixels,
        fp: usize,
        base: usize,
        pieces: Vec<Range<usize>>,
        stage: Vec<*const R>,
        stride: Option<usize>,
        planes: &mut [&mut [MaybeUninit<f64>]],
        tuning: Option<(usize, bool)>,
    ) -> Self {
        let fresh = planes
            .iter()
            .any(|p| std::mem::size_of_val(*p) >= FRESH_BYTES);
        let (share, touch) = tuning.unwrap_or(match fresh {
            true => (HUGE_PAGE / std::mem::size_of::<f64>(), true),
            false => (SHARE.div_ceil(planes.len().max(1)), false),
        });
        let mut first = vec![0];
        for r in &pieces {
            first.push(first.last().unwrap() + r.len().div_ceil(share));
        }
        let n = pieces.len();
        let shares = *first.last().unwrap();
        let atomics = |k| (0..k).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>();
        Converter {
            pixels,
            fp,
            base,
            nv: planes.len(),
            pieces,
            stage,
            stride,
            planes: planes
                .iter_mut()
                .map(|p| (p.as_mut_ptr(), p.len()))
                .collect(),
            first,
            state: (0..shares).map(|_| AtomicU8::new(FREE)).collect(),
            next: atomics(n),
            next_touch: atomics(n),
            converted: atomics(n),
            ready: AtomicUsize::new(0),
            abort: AtomicBool::new(false),
            touch,
            share,
        }
    }

    /// Piece k's staging buffer holds its values now (pieces are published
    /// in order).
    pub(super) fn publish(&self, k: usize) {
        self.ready.store(k + 1, Ordering::Release);
    }

    /// Stop the workers (an error: the planes are left unfinished).
    pub(super) fn abort(&self) {
        self.abort.store(true, Ordering::Release);
    }

    /// Whether every share of piece k is converted (its staging buffer is
    /// free again).
    pub(super) fn converted(&self, k: usize) -> bool {
        self.converted[k].load(Ordering::Acquire) == self.first[k + 1] - self.first[k]
    }

    /// A worker: convert shares of each piece as it is published (touching
    /// the pages of pieces to come while it waits), until the last piece
    /// is taken or the converter is aborted.
    pub(super) fn work(&self) {
        // a worker that panics aborts the converter: the shares it took
        // would never be counted, and `help` would wait for them for ever
        let _poison = AbortOnDrop(self, true);
        let n = self.pieces.len();
        for k in 0..n {
            let mut spins = 0u32;
            while self.ready.load(Ordering::Acquire) <= k {
                if self.abort.load(Ordering::Acquire) {
                    return;
                }
                if self.touch && (k..n.min(k + 2)).any(|p| self.touch_one(p)) {
                    continue;
                }
                // spin a little (a piece takes tens of us at 1024^2), then
                // give the core to whoever else wants it
                if spins < 1 << 11 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            while self.convert_one(k) {}
        }
    }

    /// Convert what is left of piece k (published) on this thread, then wait
    /// until its other shares are converted; false if the converter was
    /// aborted meanwhile (a worker panicked: the piece may never be whole).
    #[must_use]
    pub(super) fn help(&self, k: usize) -> bool {
        while self.convert_one(k) {}
        while !self.converted(k) {
            if self.abort.load(Ordering::Acquire) {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }

    /// Convert everything left (every piece published) and wait for the
    /// shares other threads took; false if the converter was aborted.
    #[must_use]
    pub(super) fn finish(&self) -> bool {
        (0..self.pieces.len()).all(|k| self.help(k))
    }

    /// Take the next share of piece k and convert it; false when none is left.
    fn convert_one(&self, k: usize) -> bool {
        let (a, b) = (self.first[k], self.first[k + 1]);
        let sh = a + self.next[k].fetch_add(1, Ordering::Relaxed);
        if sh >= b {
            return false;
        }
        // wait out a thread touching its pages
        while self.state[sh]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != TOUCHING).then_some(TAKEN)
            })
            .is_err()
        {
            if self.abort.load(Ordering::Acquire) {
                return false;
            }
            std::hint::spin_loop();
        }
        let (px, sp) = self.share_of(k, sh);
        let r = &self.pieces[k];
        let stage = self.stage[k % self.stage.len()];
        for j in 0..self.nv {
            // SAFETY (new's contract): the piece is published (ready > k
            // was seen, Acquire) and its staging buffer holds plane j's
            // values from j * stride; the share is this thread's (TAKEN)
            let (src, img) = unsafe {
                let at = j * self.stride.unwrap_or(r.len()) + px.start - r.start;
                (
                    std::slice::from_raw_parts(stage.add(at), px.len()),
                    self.window(j, &sp),
                )
            };
            put(
                img,
                unsafe { &*self.pixels },
                self.fp,
                self.base + sp.start,
                px.start,
                src,
            );
        }
        self.converted[k].fetch_add(1, Ordering::AcqRel);
        true
    }

    /// The pixels of share `sh` (an index into `state`) of piece k, and
    /// the span of the planes they lie in.
    fn share_of(&self, k: usize, sh: usize) -> (Range<usize>, Range<usize>) {
        let r = &self.pieces[k];
        let lo = r.start + (sh - self.first[k]) * self.share;
        let px = lo..(lo + self.share).min(r.end);
        // SAFETY: pixels outlives the converter (new's contract)
        let sp = span(unsafe { &*self.pixels }, self.fp, self.base, &px);
        (px, sp)
    }

    /// Elements `sp` of plane j's window.
    ///
    /// # Safety
    /// `sp` is the span of a share this thread holds (TOUCHING or TAKEN):
    /// no other thread reads or writes those elements meanwhile.
    // the planes are reached through raw pointers: the share's owner
    // alone writes the elements it returns (see Safety)
    #[allow(clippy::mut_from_ref)]
    unsafe fn window(&self, j: usize, sp: &Range<usize>) -> &mut [MaybeUninit<f64>] {
        let (p, plen) = self.planes[j];
        assert!(sp.end <= plen);
        unsafe { std::slice::from_raw_parts_mut(p.add(sp.start), sp.len()) }
    }

    /// Touch the pages of the next untouched share of piece k (writing 0.0
    /// every 4 KiB of its span: its own values overwrite them later; the
    /// zeros outside the ROI stay); false when none is left.
    fn touch_one(&self, k: usize) -> bool {
        let (a, b) = (self.first[k], self.first[k + 1]);
        let sh = a + self.next_touch[k].fetch_add(1, Ordering::Relaxed);
        if sh >= b
            || self.state[sh]
                .compare_exchange(FREE, TOUCHING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            // past the end, or already taken to convert: so are the rest
            self.next_touch[k].store(b - a, Ordering::Relaxed);
            return false;
        }
        let (_, sp) = self.share_of(k, sh);
        const STEP: usize = 4096 / std::mem::size_of::<f64>();
        for j in 0..self.nv {
            // SAFETY: the share is this thread's (TOUCHING) until it stores
            // TOUCHED: nobody else writes its span meanwhile
            let img = unsafe { self.window(j, &sp) };
            for i in (0..img.len()).step_by(STEP).chain([img.len() - 1]) {
                img[i].write(0.0);
            }
        }
        self.state[sh].store(TOUCHED, Ordering::Release);
        true
    }
}

/// Aborts a converter when dropped: the publishing thread holds one until
/// [`Converter::finish`] returned, so an error or a panic there releases
/// the workers waiting for pieces that will never come; each worker holds
/// one armed for a panic only (`.1`), so the publishing thread stops
/// waiting for the shares it took.
pub(super) struct AbortOnDrop<'a, R: GpuReal>(pub(super) &'a Converter<R>, pub(super) bool);

impl<R: GpuReal> Drop for AbortOnDrop<'_, R> {
    fn drop(&mut self) {
        if !self.1 || std::thread::panicking() {
            self.0.abort();
        }
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

    /// Run `main` as the reading thread beside `workers` workers on a pool
    /// of `threads`, as the read-back does (an abort guard held until
    /// `main` returns).
    fn with_workers<T: Send>(
        conv: &Converter<f32>,
        threads: usize,
        workers: usize,
        main: impl FnOnce() -> T + Send,
    ) -> T {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            rayon::in_place_scope(|sc| {
                let stop = AbortOnDrop(conv, false);
                for _ in 0..workers {
                    sc.spawn(|_| conv.work());
                }
                let t = main();
                drop(stop);
                t
            })
        })
    }

    /// A converter of a 16 x 16 detector's `pieces` from one 16-value
    /// staging buffer, in shares of 4 pixels.
    fn sixteen(
        px: &Pixels,
        pieces: Vec<Range<usize>>,
        stage: &[f32; 16],
        w: &mut [&mut [MaybeUninit<f64>]],
        touch: bool,
    ) -> Converter<f32> {
        // SAFETY: the tests keep the windows, the buffer and px alive and
        // untouched while the converter runs
        unsafe {
            Converter::new(
                px,
                16,
                0,
                pieces,
                vec![stage.as_ptr()],
                None,
                w,
                Some((4, touch)),
            )
        }
    }

    /// The converter, fed pieces as the read-back feeds it (each piece's
    /// planes in a staging buffer, published in order; with fewer buffers
    /// than pieces a buffer is refilled only after `help` on the piece it
    /// held), writes every pixel of every plane exactly where the CPU engine
    /// puts it and leaves the zeros outside the ROI, with 0 to 5 workers on
    /// a pool of 4 threads, shares of 1 to 64 pixels or the renders' own
    /// (share 0 here: SHARE values, 2731 pixels of 3 planes), pages touched
    /// first or not, for whole rows, a ROI of rows, a rectangle and a mask.
    #[test]
    fn converter_writes_every_pixel_from_any_thread() {
        let (fp, sp) = (100usize, 90usize);
        let n = fp * sp;
        let mask: Vec<(usize, usize)> = (0..n)
            .map(|i| (i % fp, i / fp))
            .filter(|(f, s)| (f * 7 + s * 3) % 5 != 0)
            .collect();
        let cases = [
            rect(0, 0, fp, sp),
            rect(0, 3, fp, 20),
            rect(5, 2, 20, 25),
            Pixels::List(mask),
        ];
        let nv = 3;
        for px in &cases {
            let npix = px.len();
            let value = |j: usize, i: usize| {
                let (f, s) = px.get(i);
                (1000 * j + 10 * s + f + 1) as f32
            };
            let mut want: Planes = vec![vec![0.0; n]; nv];
            for (j, w) in want.iter_mut().enumerate() {
                for i in 0..npix {
                    let (f, s) = px.get(i);
                    w[s * fp + f] = value(j, i) as f64;
                }
            }
            // ring: 2 staging buffers (else one per piece); mapped: the
            // whole output, plane j at j * npix (as the kernel writes it)
            for (size, ring, mapped, share, workers, touch) in [
                (npix, false, false, 64, 0, false),
                (97, false, false, 8, 3, false),
                (97, true, false, 8, 3, true),
                (128, true, false, 1, 5, false),
                (300, false, false, 13, 2, true),
                (1, true, false, 64, 1, false),
                (97, false, true, 8, 3, true),
                (npix, false, true, 64, 0, false),
                (128, false, true, 1, 5, false),
                (npix, false, true, 0, 3, false),
                (4000, true, false, 0, 2, false),
            ] {
                let pieces: Vec<Range<usize>> = (0..npix)
                    .step_by(size)
                    .map(|a| a..(a + size).min(npix))
                    .collect();
                let slots = if ring { 2 } else { pieces.len() };
                let mut stage: Vec<Vec<f32>> = match mapped {
                    true => vec![vec![0.0; nv * npix]],
                    false => vec![vec![0.0; nv * size]; slots],
                };
                // addresses, to be Send: the test writes through them
                let ptrs: Vec<usize> = stage.iter_mut().map(|b| b.as_mut_ptr() as usize).collect();
                let ptrs: Vec<usize> = match mapped {
                    true => pieces.iter().map(|r| ptrs[0] + 4 * r.start).collect(),
                    false => ptrs,
                };
                let stride = mapped.then_some(npix);
                let mut planes: Planes = vec![vec![f64::NAN; n]; nv];
                for p in &mut planes {
                    for r in unwritten(px, fp, n) {
                        fill_zero(as_uninit(&mut p[r]));
                    }
                }
                let mut w: Vec<&mut [MaybeUninit<f64>]> =
                    planes.iter_mut().map(|p| as_uninit(p)).collect();
                let conv = unsafe {
                    Converter::new(
                        px,
                        fp,
                        0,
                        pieces.clone(),
                        ptrs.iter().map(|p| *p as *const f32).collect(),
                        stride,
                        &mut w,
                        (share > 0).then_some((share, touch)),
                    )
                };
                with_workers(&conv, 4, workers, || {
                    for (k, r) in pieces.iter().enumerate() {
                        if k >= slots {
                            assert!(conv.help(k - slots));
                        }
                        for j in 0..nv {
                            for (i, p) in r.clone().enumerate() {
                                // SAFETY: the buffer is free (helped)
                                unsafe {
                                    *(ptrs[k % slots] as *mut f32)
                                        .add(j * stride.unwrap_or(r.len()) + i) = value(j, p)
                                };
                            }
                        }
                        conv.publish(k);
                    }
                    assert!(conv.finish());
                });
                drop(conv);
                drop(w);
                let what = format!("pieces of {size}, ring {ring}, mapped {mapped}, share {share}, {workers} workers, touch {touch}");
                for (j, p) in planes.iter().enumerate() {
                    assert!(p.iter().all(|v| v.is_finite()), "unset element, {what}");
                    assert_eq!(p, &want[j], "{what}");
                }
                drop(stage);
            }
        }
    }

    /// Workers stop when the converter is aborted with pieces unpublished.
    #[test]
    fn converter_abort_releases_the_workers() {
        let px = rect(0, 0, 16, 16);
        let mut planes: Planes = vec![vec![0.0; 256]];
        let mut w: Vec<&mut [MaybeUninit<f64>]> = planes.iter_mut().map(|p| as_uninit(p)).collect();
        let stage = [1.0f32; 16];
        let pieces = (0..16).map(|k| k * 16..k * 16 + 16).collect();
        let conv = sixteen(&px, pieces, &stage, &mut w, true);
        with_workers(&conv, 3, 3, || {
            conv.publish(0);
            assert!(conv.help(0));
        });
        assert!(conv.converted(0) && !conv.converted(1));
        drop(conv);
        drop(w);
        assert!(planes[0][..16].iter().all(|v| *v == 1.0));
    }

    /// A worker that panics while converting (here: a piece beyond the
    /// planes) makes the render fail instead of leaving the reading thread
    /// waiting for its share for ever. The last piece has three shares and
    /// the reading thread waits before it helps, so the three workers have
    /// taken them (each dies at its first).
    #[test]
    fn converter_panic_fails_instead_of_hanging() {
        let px = rect(0, 0, 16, 16);
        let mut planes: Planes = vec![vec![0.0; 128]];
        let mut w: Vec<&mut [MaybeUninit<f64>]> = planes.iter_mut().map(|p| as_uninit(p)).collect();
        let stage = [1.0f32; 16];
        let mut pieces: Vec<Range<usize>> = (0..8).map(|k| k * 16..k * 16 + 16).collect();
        pieces.push(128..140);
        let conv = sixteen(&px, pieces, &stage, &mut w, false);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_workers(&conv, 4, 3, || {
                for k in 0..9 {
                    conv.publish(k);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
                conv.finish()
            })
        }));
        assert!(run.is_err(), "{run:?}");
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
