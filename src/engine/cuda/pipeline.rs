//! One part of a render on one GPU, pipelined: the inputs uploaded from
//! pinned memory in one copy, the part's pixels launched in pieces on two
//! compute streams in turn (a piece of at least one full wave of blocks, so
//! that the next piece fills the multiprocessors the last one leaves;
//! smaller pieces on more streams measured slower kernels). The kernel
//! writes its planes straight into pinned host memory mapped into the GPU's
//! address space, and each piece is put into the image on the host as soon
//! as its kernel is done, while later pieces compute; the host launches
//! each further piece as it goes, a few ahead of the last one the GPU has
//! finished, so it starts reading back early and the GPU is never short of
//! work. The first and the last piece are half size ([`cut_pieces`]). A
//! render too large for [`STAGING_BYTES`] of pinned memory renders into
//! device memory and reads back through a ring of [`RING`] pinned buffers,
//! each piece copied on a copy stream once its kernel is done, the host
//! issuing each copy as a buffer frees up.
//!
//! Everything a render needs on a GPU lives in a [`GpuState`] kept across
//! renders (grow-only device and pinned buffers, the streams, the HKL grid
//! uploaded once while it does not change), taken from a per-GPU pool by a
//! render and given back after it, so threads rendering on one GPU each
//! have their own. Its events are reused too: a 1024^2 render on an H200
//! takes a third of a millisecond, and each driver call about 5 us of the
//! host's. The state's memory is used through raw driver calls, so that
//! cudarc's per-buffer event tracking adds no waits between the streams:
//! the order is the events recorded here, and every stream is idle when a
//! render gives its state back.

use super::compile::Kernels;
use super::device::{drv, lock, Gpu};
use super::inputs::{hkl_grid, KernelInputs, Pixels};
use super::interface::{GpuReal, Params};
use super::phases;
use super::readback::{AbortOnDrop, Converter};
use crate::engine::EngineError;
use crate::physics::Simulation;
use cudarc::driver::{
    result as dresult, sys as dsys, CudaContext, CudaEvent, CudaStream, DriverError,
};
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Threads per block.
pub(super) const BLOCK: u32 = 128;
/// Pinned buffers in the read-back ring (renders beyond [`STAGING_BYTES`]).
const RING: usize = 3;
/// Pieces a part is cut into at most (fewer when a piece would be less
/// than a full wave of blocks).
const TARGET_PIECES: usize = 8;
/// Compute streams the pieces are launched on in turn.
const STREAMS: usize = 2;
/// Pieces launched beyond the last one the GPU has finished: each launch
/// (a kernel, events, a copy: 10 us of driver calls on the H200 host) is
/// made while the GPU has work queued, not all before the read-back starts.
const AHEAD: usize = 4;
// the read-back re-issues piece k + RING's copy after piece k: it must be
// launched by then
const _: () = assert!(AHEAD >= RING);

/// Device memory allocated with `cuMemAlloc` (freed with `cuMemFree`, which
/// waits for the work using it), grow-only.
struct DevBuf {
    ptr: dsys::CUdeviceptr,
    bytes: usize,
    ctx: Arc<CudaContext>,
}

impl DevBuf {
    fn new(ctx: &Arc<CudaContext>) -> Self {
        DevBuf {
            ptr: 0,
            bytes: 0,
            ctx: ctx.clone(),
        }
    }
    /// At least `bytes` (at least 8): the old contents are lost on growing.
    fn ensure(&mut self, bytes: usize) -> Result<dsys::CUdeviceptr, DriverError> {
        let bytes = bytes.max(8);
        if self.bytes < bytes {
            self.release();
            self.ctx.bind_to_thread()?;
            // SAFETY: a plain allocation in the bound context
            self.ptr = unsafe { dresult::malloc_sync(bytes) }?;
            self.bytes = bytes;
        }
        Ok(self.ptr)
    }
    fn release(&mut self) {
        if self.ptr != 0 {
            let _ = self.ctx.bind_to_thread();
            // SAFETY: allocated by malloc_sync, freed once (ptr reset)
            let _ = unsafe { dresult::free_sync(self.ptr) };
            self.ptr = 0;
            self.bytes = 0;
        }
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        self.release();
    }
}

/// Page-locked host memory (`cuMemHostAlloc`, cached: the CPU reads it at
/// full speed), zeroed when allocated, grow-only.
struct HostBuf {
    ptr: *mut c_void,
    bytes: usize,
    ctx: Arc<CudaContext>,
    /// `cuMemHostAlloc` flags: 0, or DEVICEMAP (the GPU writes it directly)
    flags: u32,
    /// its address on the device (DEVICEMAP), else 0
    dev: dsys::CUdeviceptr,
}

// SAFETY: the memory is owned by the buffer alone; the driver reads or
// writes it only in copies ordered by events the owner waits for.
unsafe impl Send for HostBuf {}

impl HostBuf {
    fn new(ctx: &Arc<CudaContext>) -> Self {
        HostBuf {
            ptr: std::ptr::null_mut(),
            bytes: 0,
            ctx: ctx.clone(),
            flags: 0,
            dev: 0,
        }
    }
    /// Pinned memory mapped into the GPU's address space: kernels write it
    /// over the bus as they go, no copy needed.
    fn new_mapped(ctx: &Arc<CudaContext>) -> Self {
        let mut b = HostBuf::new(ctx);
        b.flags = dsys::CU_MEMHOSTALLOC_DEVICEMAP;
        b
    }
    fn ensure(&mut self, bytes: usize) -> Result<(), DriverError> {
        let bytes = bytes.max(8);
        if self.bytes < bytes {
            self.release();
            self.ctx.bind_to_thread()?;
            // SAFETY: portable off, cached (DEVICEMAP or not); zeroed
            // before any read
            let p = unsafe { dresult::malloc_host(bytes, self.flags) }?;
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
            self.ptr = p;
            self.bytes = bytes;
            if self.flags & dsys::CU_MEMHOSTALLOC_DEVICEMAP != 0 {
                let mut d: dsys::CUdeviceptr = 0;
                // SAFETY: p was allocated with DEVICEMAP in the bound context
                unsafe { dsys::cuMemHostGetDevicePointer_v2(&mut d, p, 0) }.result()?;
                self.dev = d;
            }
        }
        Ok(())
    }
    /// The first `len` elements as T (f32, f64 or i32: every bit pattern
    /// valid; the memory is 4096-aligned and was zeroed).
    fn slice_mut<T: Copy>(&mut self, len: usize) -> &mut [T] {
        assert!(len * std::mem::size_of::<T>() <= self.bytes);
        // SAFETY: in bounds (checked), aligned (page-aligned), initialised
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<T>(), len) }
    }
    /// The memory's address as T, for `len` elements (checked against its
    /// size), taken from the allocation itself, not from a reference to it:
    /// the read-back's threads read through it while copies are issued
    /// into the ring's other buffers.
    fn as_ptr<T: Copy>(&self, len: usize) -> *const T {
        assert!(len * std::mem::size_of::<T>() <= self.bytes);
        self.ptr.cast::<T>().cast_const()
    }
    fn release(&mut self) {
        if !self.ptr.is_null() {
            let _ = self.ctx.bind_to_thread();
            // SAFETY: allocated by malloc_host, freed once (ptr reset)
            let _ = unsafe { dresult::free_host(self.ptr) };
            self.ptr = std::ptr::null_mut();
            self.bytes = 0;
            self.dev = 0;
        }
    }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        self.release();
    }
}

/// What a render keeps on one GPU between renders.
pub(super) struct GpuState {
    ctx: Arc<CudaContext>,
    ordinal: usize,
    compute: Vec<Arc<CudaStream>>,
    copy: Arc<CudaStream>,
    out: DevBuf,
    oor: DevBuf,
    /// the model, the float64 model and the pixel list, at the offsets of
    /// the pinned `upload` buffer (one copy uploads them)
    inputs: DevBuf,
    /// their addresses in `inputs`
    model: dsys::CUdeviceptr,
    hi: dsys::CUdeviceptr,
    pix: dsys::CUdeviceptr,
    hkl: DevBuf,
    /// the grid on the device, as last uploaded (compared before reuse)
    hkl_host: Vec<f64>,
    upload: HostBuf,
    /// the output in mapped pinned memory (renders within STAGING_BYTES)
    mapped: HostBuf,
    ring: Vec<HostBuf>,
    sms: usize,
    /// events that order the streams and the host, reused render after
    /// render (each render takes them from index 0 on: every stream is idle
    /// between renders)
    events: Vec<CudaEvent>,
    /// events of this render so far
    used: usize,
    /// the start of a render's kernels and their end on each compute
    /// stream (timing events)
    start: CudaEvent,
    ends: Vec<CudaEvent>,
}

type Pool = Mutex<HashMap<usize, Vec<Box<GpuState>>>>;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// Whether the per-piece timeline is traced (`RUST_LOG=braggrun::cuda=trace`):
/// the pieces' events then carry timing.
fn timeline() -> bool {
    tracing::enabled!(target: "braggrun::cuda", tracing::Level::TRACE)
}

impl GpuState {
    /// A state for GPU `g`: one from the pool, or a new one.
    pub(super) fn take(g: &Gpu) -> Result<Box<GpuState>, EngineError> {
        if let Some(s) = lock(pool()).get_mut(&g.ordinal).and_then(|v| v.pop()) {
            return Ok(s);
        }
        let ctx = &g.ctx;
        let stream = || ctx.new_stream().map_err(drv("creating a stream"));
        let timer = || {
            ctx.new_event(Some(dsys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("creating a timing event"))
        };
        let sms = ctx
            .attribute(dsys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv("reading the multiprocessor count"))?
            .max(1) as usize;
        Ok(Box::new(GpuState {
            ctx: ctx.clone(),
            ordinal: g.ordinal,
            compute: (0..STREAMS).map(|_| stream()).collect::<Result<_, _>>()?,
            copy: stream()?,
            out: DevBuf::new(ctx),
            oor: DevBuf::new(ctx),
            inputs: DevBuf::new(ctx),
            model: 0,
            hi: 0,
            pix: 0,
            hkl: DevBuf::new(ctx),
            hkl_host: vec![],
            upload: HostBuf::new(ctx),
            mapped: HostBuf::new_mapped(ctx),
            ring: (0..RING).map(|_| HostBuf::new(ctx)).collect(),
            sms,
            events: vec![],
            used: 0,
            start: timer()?,
            ends: (0..STREAMS).map(|_| timer()).collect::<Result<_, _>>()?,
        }))
    }

    /// Back to the pool once every stream is idle; a state whose streams
    /// cannot be waited for is never reused nor freed (a copy may still
    /// write into its memory).
    pub(super) fn give_back(self: Box<Self>) {
        let idle = self
            .compute
            .iter()
            .chain([&self.copy])
            .all(|s| s.synchronize().is_ok());
        if idle {
            lock(pool()).entry(self.ordinal).or_default().push(self);
        } else {
            std::mem::forget(self);
        }
    }

    /// Back to the pool at once: the caller saw the last work queued on
    /// every stream complete.
    fn give_back_idle(self: Box<Self>) {
        lock(pool()).entry(self.ordinal).or_default().push(self);
    }

    /// Record the render's next event on `s` (created the first time the
    /// pool is short; with timing when the timeline is traced): its index.
    fn mark(&mut self, s: &CudaStream) -> Result<usize, DriverError> {
        if self.used == self.events.len() {
            let flags = match timeline() {
                true => dsys::CUevent_flags::CU_EVENT_DEFAULT,
                false => dsys::CUevent_flags::CU_EVENT_DISABLE_TIMING,
            };
            self.events.push(self.ctx.new_event(Some(flags))?);
        }
        self.used += 1;
        self.events[self.used - 1].record(s)?;
        Ok(self.used - 1)
    }

    /// Stream `a` waits for the work queued on `b` so far.
    fn join(&mut self, a: &CudaStream, b: &CudaStream) -> Result<(), DriverError> {
        let e = self.mark(b)?;
        a.wait(&self.events[e])
    }
}

/// The pieces pixels `range` are launched in: pieces of `size` pixels (at
/// least a wave of blocks), but the first and the last, which are about
/// half that: the host starts reading back sooner, and less is left after
/// the last kernel (its piece's copy and conversion). A half piece runs
/// beside a whole one on the other stream, so the GPU stays full. Every
/// piece but the last is a multiple of `block` pixels.
pub(super) fn cut_pieces(range: Range<usize>, size: usize, block: usize) -> Vec<Range<usize>> {
    let block = block.max(1);
    let size = size.max(block).next_multiple_of(block);
    let half = (size / 2).next_multiple_of(block).max(block);
    let mut pieces = vec![];
    let mut at = range.start;
    while at < range.end {
        let left = range.end - at;
        let take = if pieces.is_empty() && left > 2 * size {
            half
        } else if left > size + half {
            size
        } else if left > half {
            (left - half).next_multiple_of(block)
        } else {
            left
        }
        .min(left);
        pieces.push(at..at + take);
        at += take;
    }
    pieces
}

/// Pinned memory a part's output may take: up to this the kernel writes
/// the planes into mapped pinned memory (no copies); beyond it, into device
/// memory, the pieces read back through a ring of [`RING`] pinned buffers,
/// the host issuing each copy as a buffer frees up.
const STAGING_BYTES: usize = 256 << 20;
static STAGING_CAP: AtomicUsize = AtomicUsize::new(STAGING_BYTES);

/// Cap the pinned memory of a part's output (bytes; 0 restores the
/// default, 256 MiB). Results do not depend on it; tests use a small cap to
/// exercise the ring of buffers a large render reads back through.
pub fn set_staging_bytes(n: usize) {
    STAGING_CAP.store(if n == 0 { STAGING_BYTES } else { n }, Ordering::Relaxed);
}

/// One part of a render launched on one GPU: pixels `range` of the ROI's
/// `npix`, in `pieces`, and the events (indices into the state's) that
/// order the read-back.
pub(super) struct PartRun {
    pub(super) state: Box<GpuState>,
    range: Range<usize>,
    npix: usize,
    nv: usize,
    elem: usize,
    pieces: Vec<Range<usize>>,
    /// per piece: the event after its kernel, once launched
    done: Vec<Option<usize>>,
    /// per piece: the event after its copy into its staging buffer, once issued
    copied: Vec<Option<usize>>,
    /// staging buffers (piece k uses buffer k % slots; none when mapped)
    slots: usize,
    /// where the kernel writes its planes (device address)
    out: dsys::CUdeviceptr,
    /// the output is the state's mapped pinned memory: no copies
    mapped: bool,
    /// compute streams whose end-of-kernels event is recorded
    ended: Vec<usize>,
    /// pieces launched so far
    launched: usize,
    track_oor: bool,
    chunk: usize,
    params: Params,
    kernel: Arc<Kernels>,
    /// when the part was launched (the host side of the traced timeline)
    born: std::time::Instant,
    /// the read-back returned: the last work on every stream is complete
    idle: bool,
}

/// Launch pixels `range` (of the ROI's `npix`) in precision R on the state's
/// GPU: upload the inputs, launch the first pieces (the read-back launches
/// the rest). With `track_oor` (the interpolating kernel) every piece is
/// launched here, and done only after [`PartRun::finish`] has run the
/// re-run; otherwise each piece's read-back can start as soon as it is
/// computed.
#[allow(clippy::too_many_arguments)]
pub(super) fn launch_part<R: GpuReal>(
    mut state: Box<GpuState>,
    kernel: Arc<Kernels>,
    sim: &Simulation,
    pixels: &Pixels,
    inputs: &KernelInputs,
    nv: usize,
    range: Range<usize>,
    chunk: usize,
    track_oor: bool,
) -> Result<PartRun, EngineError> {
    let born = std::time::Instant::now();
    let npix = pixels.len();
    let elem = std::mem::size_of::<R>();
    let st = &mut *state;
    st.used = 0;
    st.ctx
        .bind_to_thread()
        .map_err(drv("binding the context"))?;
    let a = st.compute[0].clone();
    phases::mark("state");
    // the output (grow-only) holds every plane of the whole ROI (the kernel
    // writes pixel g of plane j at j * npix + g): pinned host memory the
    // kernel writes over the bus when it fits STAGING_CAP (no copies: each
    // piece is read on the host once its kernel is done; the last copy
    // after the last kernel took 11-17 us at 1024^2, and the copies 3
    // driver calls a piece), else device memory read back through a ring
    // of pinned buffers
    let out_bytes = npix * nv * elem;
    let mapped = out_bytes <= STAGING_CAP.load(Ordering::Relaxed);
    let out = match mapped {
        true => {
            st.mapped
                .ensure(out_bytes)
                .map_err(drv("allocating mapped pinned memory"))?;
            st.mapped.dev
        }
        false => st
            .out
            .ensure(out_bytes)
            .map_err(drv("allocating the output image"))?,
    };
    st.oor
        .ensure(if track_oor { npix * 4 } else { 4 })
        .map_err(drv("allocating the interpolation flags"))?;
    phases::mark("output, flags");
    // the HKL grid: uploaded again only when it differs from the last one
    let grid = hkl_grid(sim);
    let same = st.hkl_host.len() == grid.len()
        && st.hkl.ptr != 0
        && st
            .hkl_host
            .iter()
            .zip(grid)
            .all(|(x, y)| x.to_bits() == y.to_bits());
    if !same {
        let p = st
            .hkl
            .ensure(std::mem::size_of_val(grid))
            .map_err(drv("allocating the HKL grid"))?;
        // SAFETY: p holds the grid's bytes; a synchronous copy
        unsafe { dresult::memcpy_htod_sync(p, grid) }.map_err(drv("uploading the HKL grid"))?;
        st.hkl_host.clear();
        st.hkl_host.extend_from_slice(grid);
    }
    phases::mark("HKL grid");
    // the model, the float64 model and the pixel list through one pinned buffer
    let listed;
    let pix_list: &[i32] = match pixels {
        Pixels::List(_) => {
            listed = pixels.upload();
            &listed
        }
        Pixels::Rect { .. } => &[0],
    };
    let (mb, hb, pb) = (
        inputs.flat.len() * elem,
        std::mem::size_of_val(inputs.hi.as_slice()),
        std::mem::size_of_val(pix_list),
    );
    let (ho, po) = (
        mb.next_multiple_of(256),
        (mb.next_multiple_of(256) + hb).next_multiple_of(256),
    );
    st.upload
        .ensure(po + pb)
        .map_err(drv("allocating pinned upload memory"))?;
    // the model in the kernel's precision, converted straight into the
    // pinned buffer (with 6 derivatives it is 100 KB)
    let model = st.upload.slice_mut::<R>(inputs.flat.len());
    for (m, x) in model.iter_mut().zip(&inputs.flat) {
        *m = R::of(*x);
    }
    let up = st.upload.slice_mut::<u8>(po + pb);
    // SAFETY: plain numbers copied as bytes into a buffer large enough
    unsafe {
        std::ptr::copy_nonoverlapping(inputs.hi.as_ptr().cast::<u8>(), up.as_mut_ptr().add(ho), hb);
        std::ptr::copy_nonoverlapping(pix_list.as_ptr().cast::<u8>(), up.as_mut_ptr().add(po), pb);
    }
    let d = st
        .inputs
        .ensure(po + pb)
        .map_err(drv("allocating the model"))?;
    (st.model, st.hi, st.pix) = (d, d + ho as u64, d + po as u64);
    // SAFETY: the destination holds the bytes; the pinned source stays
    // untouched until the state is given back (every stream idle)
    unsafe { dresult::memcpy_htod_async(d, up, a.cu_stream()) }
        .map_err(drv("uploading the model"))?;
    phases::mark("upload queued");
    st.start
        .record(&a)
        .map_err(drv("recording a timing event"))?;
    for s in &st.compute[1..] {
        s.wait(&st.start).map_err(drv("ordering the streams"))?;
    }
    // pieces: about TARGET_PIECES, none below a full wave of blocks but
    // the first and the last (cut_pieces)
    let wave = kernel.render_blocks_per_sm(BLOCK) * st.sms * BLOCK as usize;
    let size = range.len().div_ceil(TARGET_PIECES).max(wave);
    let pieces = cut_pieces(range.clone(), size, BLOCK as usize);
    let n = pieces.len();
    let slot_bytes = pieces.iter().map(|r| r.len()).max().unwrap_or(0) * nv * elem;
    let slots = match mapped {
        true => 0,
        false => RING.min(n).max(1),
    };
    while st.ring.len() < slots {
        st.ring.push(HostBuf::new(&st.ctx));
    }
    for buf in &mut st.ring[..slots] {
        buf.ensure(slot_bytes)
            .map_err(drv("allocating pinned read-back memory"))?;
    }
    let mut run = PartRun {
        state,
        range,
        npix,
        nv,
        elem,
        pieces,
        done: vec![None; n],
        copied: vec![None; n],
        slots,
        out,
        mapped,
        ended: vec![],
        launched: 0,
        track_oor,
        chunk,
        params: inputs.params,
        kernel,
        born,
        idle: false,
    };
    if track_oor {
        // every piece now: the re-run from the first out-of-range lookup
        // needs them all (PartRun::finish)
        for k in 0..n {
            let s = run.state.compute[k % STREAMS].clone();
            let r = run.pieces[k].clone();
            run.launch(&s, &run.params.clone(), r)?;
        }
        run.launched = n;
        return Ok(run);
    }
    // the first piece on each stream, then their copies (a copy queued
    // before the second kernel would hold it back), then more up to AHEAD;
    // the read-back launches the rest as it goes, so it starts sooner
    let first = n.min(STREAMS);
    for k in 0..first {
        run.feed(k)?;
        if k == 0 {
            phases::mark("first kernel queued");
        }
    }
    for k in 0..first {
        run.follow::<R>(k)?;
    }
    run.launched = first;
    run.launch_ahead::<R>(AHEAD)?;
    Ok(run)
}

impl PartRun {
    /// The GPU state back to its pool: at once after a read-back that
    /// returned, else once its streams are waited for. After a read-back
    /// every stream is idle: each compute stream's last work is an event
    /// the copy of its last piece waited for (or, with the interpolating
    /// kernel, that the final join waited for), and the read-back waited
    /// for every copy. Saves three driver calls a render.
    pub(super) fn give_back(self) {
        match self.idle {
            true => self.state.give_back_idle(),
            false => self.state.give_back(),
        }
    }

    /// Launch piece k on its stream (and the stream's end-of-kernels event
    /// after its last piece).
    fn feed(&mut self, k: usize) -> Result<(), EngineError> {
        let n = self.pieces.len();
        let si = k % STREAMS;
        let s = self.state.compute[si].clone();
        let r = self.pieces[k].clone();
        self.launch(&s, &self.params.clone(), r)?;
        if k + STREAMS >= n {
            self.state.ends[si]
                .record(&s)
                .map_err(drv("recording a timing event"))?;
            self.ended.push(si);
        }
        Ok(())
    }

    /// After piece k's kernel on its stream: the event its copy waits for,
    /// and the copy on the copy stream when the piece has a staging buffer
    /// of its own (else the read-back issues it once a buffer frees up).
    /// The copies have a stream of their own so that no kernel waits for one.
    fn follow<R: GpuReal>(&mut self, k: usize) -> Result<(), EngineError> {
        let s = self.state.compute[k % STREAMS].clone();
        let e = self.state.mark(&s).map_err(drv("recording an event"))?;
        self.done[k] = Some(e);
        if self.mapped {
            // the kernel wrote the planes to the host: its event is the copy's
            self.copied[k] = Some(e);
        } else if k < self.slots {
            self.issue_copy::<R>(k)?;
        }
        Ok(())
    }

    /// Launch pieces (each with what follows it) until `upto` are launched.
    fn launch_ahead<R: GpuReal>(&mut self, upto: usize) -> Result<(), EngineError> {
        while self.launched < upto.min(self.pieces.len()) {
            let k = self.launched;
            self.feed(k)?;
            self.follow::<R>(k)?;
            self.launched += 1;
        }
        Ok(())
    }

    /// Launch `render_pixels` over `r` on stream `s`, `chunk` pixels a launch.
    fn launch(&self, s: &CudaStream, params: &Params, r: Range<usize>) -> Result<(), EngineError> {
        let st = &self.state;
        let f = self.kernel.render.cu_function();
        let mut start = r.start;
        while start < r.end {
            let count = self.chunk.min(r.end - start);
            let mut p = *params;
            let (mut mdl, mut hi, mut hkl, mut pix) = (st.model, st.hi, st.hkl.ptr, st.pix);
            let (mut s0, mut c, mut n) = (start as i32, count as i32, self.npix as i32);
            let (mut out, mut oor) = (self.out, st.oor.ptr);
            let mut args: [*mut c_void; 10] = [
                (&mut p as *mut Params).cast(),
                (&mut mdl as *mut u64).cast(),
                (&mut hi as *mut u64).cast(),
                (&mut hkl as *mut u64).cast(),
                (&mut pix as *mut u64).cast(),
                (&mut s0 as *mut i32).cast(),
                (&mut c as *mut i32).cast(),
                (&mut n as *mut i32).cast(),
                (&mut out as *mut u64).cast(),
                (&mut oor as *mut u64).cast(),
            ];
            // SAFETY: the arguments match render_pixels' signature (Params
            // by value, six device pointers, three ints), every buffer is
            // allocated to the sizes the kernel reads and writes
            unsafe {
                dresult::launch_kernel(
                    f,
                    ((count as u32).div_ceil(BLOCK), 1, 1),
                    (BLOCK, 1, 1),
                    0,
                    s.cu_stream(),
                    &mut args,
                )
            }
            .map_err(drv("launching render_pixels"))?;
            start += count;
        }
        Ok(())
    }

    /// The interpolating kernel's first out-of-range lookup in this part:
    /// (pixel index in the ROI, evaluation). Waits for the part's kernels.
    pub(super) fn first_oor(&self) -> Result<Option<(usize, i32)>, EngineError> {
        if !self.track_oor || self.range.is_empty() {
            return Ok(None);
        }
        let st = &self.state;
        st.ctx
            .bind_to_thread()
            .map_err(drv("binding the context"))?;
        for s in &st.compute {
            s.synchronize().map_err(drv("rendering"))?;
        }
        let mut flags = vec![0i32; self.range.len()];
        // SAFETY: the flags of this range lie inside the oor buffer
        unsafe {
            dresult::memcpy_dtoh_sync(&mut flags, st.oor.ptr + (self.range.start * 4) as u64)
        }
        .map_err(drv("reading back the interpolation flags"))?;
        Ok(flags
            .iter()
            .position(|o| *o >= 0)
            .map(|k| (self.range.start + k, flags[k])))
    }

    /// End the part's launches. With the interpolating kernel: re-run from
    /// C's switch to nearest lookup (`switch`, over the whole ROI) the
    /// pixels of this part from it on, record the end of the kernels and
    /// issue the first pieces' copies (their kernels were launched without
    /// them: any piece may be re-run). Without it, nothing is left to do.
    pub(super) fn finish<R: GpuReal>(
        &mut self,
        switch: Option<(usize, i32)>,
    ) -> Result<(), EngineError> {
        if !self.track_oor {
            return Ok(());
        }
        self.state
            .ctx
            .bind_to_thread()
            .map_err(drv("binding the context"))?;
        let streams = self.state.compute.clone();
        let a = &streams[0];
        let join = |st: &mut GpuState| -> Result<(), EngineError> {
            for s in &streams[1..] {
                st.join(a, s).map_err(drv("ordering the streams"))?;
            }
            Ok(())
        };
        if let Some((p, e)) = switch {
            if let Some(r) = crate::engine::split::redo_range(&self.range, p) {
                let mut p2 = self.params;
                p2.nearest_mode = 1;
                p2.switch_pixel = p as i32;
                p2.switch_eval = e;
                // after every piece of the first pass (on any stream)
                join(&mut self.state)?;
                self.launch(a, &p2, r)?;
            }
        }
        join(&mut self.state)?;
        self.state.ends[0]
            .record(a)
            .map_err(drv("recording a timing event"))?;
        self.ended = vec![0];
        let e = self.state.mark(a).map_err(drv("recording an event"))?;
        self.done = vec![Some(e); self.pieces.len()];
        if self.mapped {
            self.copied = vec![Some(e); self.pieces.len()];
        }
        for k in 0..self.pieces.len().min(self.slots) {
            self.issue_copy::<R>(k)?;
        }
        Ok(())
    }

    /// Queue on the copy stream, after piece k's kernel (its `done` event),
    /// the copy of its planes into its staging buffer, then the event the
    /// host waits for.
    fn issue_copy<R: GpuReal>(&mut self, k: usize) -> Result<(), EngineError> {
        let lost = || EngineError::Failed(format!("piece {k}'s copy issued before its kernel"));
        let done = self.done[k].ok_or_else(lost)?;
        let (nv, npix, elem) = (self.nv, self.npix, self.elem);
        assert_eq!(elem, std::mem::size_of::<R>());
        let r = self.pieces[k].clone();
        let len = r.len();
        let st = &mut *self.state;
        let s = st.copy.clone();
        s.wait(&st.events[done])
            .map_err(drv("ordering the streams"))?;
        let out = self.out;
        let slot = st.ring[k % self.slots].slice_mut::<R>(nv * len);
        for j in 0..nv {
            let src = out + ((j * npix + r.start) * elem) as u64;
            // SAFETY: the piece of plane j lies inside the output; the
            // buffer is not read nor copied into again until the event
            // recorded after these copies
            unsafe {
                dresult::memcpy_dtoh_async(&mut slot[j * len..(j + 1) * len], src, s.cu_stream())
            }
            .map_err(drv("reading back the image"))?;
        }
        self.copied[k] = Some(st.mark(&s).map_err(drv("recording an event"))?);
        Ok(())
    }

    /// Put each piece into `windows` as its copy arrives (one window per
    /// plane: the full-detector plane from index `base` on, covering this
    /// part's rows; possibly uninitialised, every pixel of the part is
    /// written), issuing the later pieces' copies as staging buffers free
    /// up; the kernels' GPU time (seconds). Call [`PartRun::finish`] first.
    /// This thread launches the pieces left and waits for each copy; it and
    /// `workers` tasks on the thread pool convert them ([`Converter`]).
    pub(super) fn read_back<R: GpuReal>(
        &mut self,
        pixels: &Pixels,
        fp: usize,
        windows: &mut [&mut [MaybeUninit<f64>]],
        base: usize,
        workers: usize,
    ) -> Result<f64, EngineError> {
        let (nv, n) = (self.nv, self.pieces.len());
        assert_eq!(windows.len(), nv);
        self.state
            .ctx
            .bind_to_thread()
            .map_err(drv("binding the context"))?;
        let len = self.pieces.iter().map(|r| r.len()).max().unwrap_or(0);
        // where piece k's planes are: the mapped output (plane j at
        // j * npix + its pixel), or its staging buffer (plane-major)
        let (stage, stride): (Vec<*const R>, _) = match self.mapped {
            true => {
                let out = self.state.mapped.as_ptr::<R>(nv * self.npix);
                // SAFETY: each piece's start lies inside the output
                let at = |r: &Range<usize>| unsafe { out.add(r.start) };
                (self.pieces.iter().map(at).collect(), Some(self.npix))
            }
            false => (
                self.state.ring[..self.slots]
                    .iter()
                    .map(|b| b.as_ptr::<R>(nv * len))
                    .collect(),
                None,
            ),
        };
        // SAFETY: the windows are used by the converter alone until it is
        // dropped; piece k's staging buffer (k % slots) holds its planes
        // from its publication (after its copy's event) on, and is copied
        // into again only once every share of piece k is converted (the
        // ring: `help` first); `pixels` outlives it
        let conv = unsafe {
            Converter::<R>::new(
                pixels,
                fp,
                base,
                self.pieces.clone(),
                stage,
                stride,
                windows,
                None,
            )
        };
        let lost = || EngineError::Failed("a piece's copy was never issued".into());
        let stopped = || EngineError::Failed("a thread converting the image stopped".into());
        let mut secs: f64 = 0.0;
        rayon::in_place_scope(|sc| {
            let stop = AbortOnDrop(&conv, false);
            for _ in 0..workers {
                sc.spawn(|_| conv.work());
            }
            // pieces the GPU has finished (a prefix: the events are queried in order)
            let mut finished = 0;
            for k in 0..n {
                // keep AHEAD pieces queued beyond the last one the GPU has
                // finished, not the last one read back: a host slowed down
                // (page faults on a fresh 128 MB image at 4096^2) would
                // otherwise launch late and leave a stream idle
                while finished < self.launched.min(n) {
                    match self.done[finished] {
                        Some(e) if self.state.events[e].is_complete() => finished += 1,
                        _ => break,
                    }
                }
                self.launch_ahead::<R>(k.max(finished) + AHEAD)?;
                let copied = self.copied[k].ok_or_else(lost)?;
                self.state.events[copied]
                    .synchronize()
                    .map_err(drv("reading back the image"))?;
                conv.publish(k);
                if k == 0 {
                    phases::mark("first piece seen");
                }
                if k + 1 == n {
                    phases::mark("last piece seen");
                    // the kernels' GPU time, read while the workers convert
                    // the last piece (8-11 us after the conversion at
                    // 1024^2 otherwise): each stream's end event comes
                    // before its last piece's on the GPU
                    secs = self.kernel_seconds()?;
                    phases::mark("kernel time read");
                }
                if timeline() {
                    let st = &self.state;
                    let gpu = st.start.elapsed_ms(&st.events[copied]).unwrap_or(f32::NAN);
                    tracing::trace!(
                        target: "braggrun::cuda",
                        "piece {k} ({} px): copied {gpu:.3} ms after the GPU's start, seen on the host {:.3} ms after launch_part began",
                        self.pieces[k].len(),
                        self.born.elapsed().as_secs_f64() * 1e3
                    );
                }
                let next = k + self.slots;
                if next < n && self.copied[next].is_none() {
                    // its buffer is free once piece k is converted
                    if !conv.help(k) {
                        return Err(stopped());
                    }
                    self.issue_copy::<R>(next)?;
                }
            }
            if !conv.finish() {
                return Err(stopped());
            }
            phases::mark("converted");
            drop(stop);
            Ok::<(), EngineError>(())
        })?;
        phases::mark("workers joined");
        self.idle = true;
        Ok(secs)
    }

    /// The kernels' GPU time (seconds): from the start event to the last
    /// stream's end event, every one complete by now (see the caller), in
    /// the state's context bound to this thread: one driver call a stream
    /// (cudarc's `elapsed_ms` binds the context and waits for both events
    /// first, seven calls); should one not be complete, `elapsed_ms` waits.
    fn kernel_seconds(&self) -> Result<f64, EngineError> {
        let st = &self.state;
        let mut secs: f64 = 0.0;
        for s in &self.ended {
            let end = &st.ends[*s];
            // SAFETY: two events of the state's context, recorded on its
            // streams and alive as long as the state
            let ms = match unsafe { dresult::event::elapsed(st.start.cu_event(), end.cu_event()) } {
                Ok(ms) => ms,
                Err(_) => st
                    .start
                    .elapsed_ms(end)
                    .map_err(drv("timing the kernels"))?,
            };
            secs = secs.max(ms as f64 / 1000.0);
        }
        Ok(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::cut_pieces;

    /// The pieces cover the range once, in order; all but the last are
    /// whole blocks; none is larger than the size asked; on a large range
    /// the first and the last are about half of it; small ranges are one
    /// piece.
    #[test]
    fn pieces_cover_the_range_and_shrink_at_the_ends() {
        for (start, len, size, block) in [
            (0, 1 << 20, 131_072, 128),
            (7, 1_000_003, 135_168, 128),
            (0, 100, 135_168, 128),
            (3, 0, 128, 128),
            (0, 1, 1, 1),
            (0, 2, 1, 1),
            (0, 999, 100, 7),
            (5, 4096, 4096, 128),
            (0, 300_000, 131_072, 128),
            (0, 1 << 24, 1 << 21, 128),
        ] {
            let p = cut_pieces(start..start + len, size, block);
            let mut at = start;
            for (i, r) in p.iter().enumerate() {
                assert_eq!(r.start, at, "{p:?}");
                assert!(!r.is_empty(), "{p:?}");
                assert!(r.len() <= size.next_multiple_of(block), "{p:?}");
                if i + 1 < p.len() {
                    assert_eq!(r.len() % block, 0, "{p:?}");
                }
                at = r.end;
            }
            assert_eq!(at, start + len, "{p:?}");
            if len <= size {
                assert!(p.len() <= 2, "{p:?}");
            }
            if len >= 4 * size {
                let half = (size / 2).next_multiple_of(block).max(block);
                assert!(p[0].len() <= half, "{p:?}");
                assert!(p.last().unwrap().len() <= half, "{p:?}");
                assert!(p.len() <= len / size + 2, "{p:?}");
            }
        }
        let sizes: Vec<usize> = cut_pieces(0..1 << 20, 1 << 17, 128)
            .iter()
            .map(|r| r.len())
            .collect();
        let mut want = vec![1 << 16];
        want.extend([1 << 17; 7]);
        want.push(1 << 16);
        assert_eq!(sizes, want);
    }
}
