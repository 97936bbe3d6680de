//! One part of a render on one GPU, pipelined: the inputs uploaded from
//! pinned memory, the part's pixels launched in pieces on two compute
//! streams in turn (a piece of at least one full wave of blocks, so that
//! the next piece fills the multiprocessors the last one leaves; smaller
//! pieces on more streams measured slower kernels), and each piece's
//! planes copied back on a third stream as soon as it is done, through a
//! ring of pinned buffers, and put into the image on the host while later
//! pieces compute. What is left after the last kernel is one piece's copy
//! and conversion.
//!
//! Everything a render needs on a GPU lives in a [`GpuState`] kept across
//! renders (grow-only device and pinned buffers, the streams, the HKL grid
//! uploaded once while it does not change), taken from a per-GPU pool by a
//! render and given back after it, so threads rendering on one GPU each
//! have their own. The state's memory is used through raw driver calls, so
//! that cudarc's per-buffer event tracking adds no waits between the
//! streams: the order is the events recorded here, and every stream is idle
//! when a render gives its state back.

use super::compile::Kernels;
use super::device::{drv, lock, Gpu};
use super::inputs::{hkl_grid, KernelInputs, Pixels};
use super::interface::{GpuReal, Params};
use super::readback::scatter;
use crate::engine::EngineError;
use crate::physics::Simulation;
use cudarc::driver::{
    result as dresult, sys as dsys, CudaContext, CudaEvent, CudaStream, DriverError,
};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

/// Threads per block.
pub(super) const BLOCK: u32 = 128;
/// Pinned buffers in the read-back ring.
const RING: usize = 3;
/// Pieces a part is cut into at most (fewer when a piece would be less
/// than a full wave of blocks).
const TARGET_PIECES: usize = 8;
/// Compute streams the pieces are launched on in turn.
const STREAMS: usize = 2;

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
        }
    }
    fn ensure(&mut self, bytes: usize) -> Result<(), DriverError> {
        let bytes = bytes.max(8);
        if self.bytes < bytes {
            self.release();
            self.ctx.bind_to_thread()?;
            // SAFETY: flags 0 (portable off, cached); zeroed before any read
            let p = unsafe { dresult::malloc_host(bytes, 0) }?;
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
            self.ptr = p;
            self.bytes = bytes;
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
    fn release(&mut self) {
        if !self.ptr.is_null() {
            let _ = self.ctx.bind_to_thread();
            // SAFETY: allocated by malloc_host, freed once (ptr reset)
            let _ = unsafe { dresult::free_host(self.ptr) };
            self.ptr = std::ptr::null_mut();
            self.bytes = 0;
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
    model: DevBuf,
    hi: DevBuf,
    pix: DevBuf,
    hkl: DevBuf,
    /// the grid on the device, as last uploaded (compared before reuse)
    hkl_host: Vec<f64>,
    upload: HostBuf,
    ring: Vec<HostBuf>,
    sms: usize,
}

type Pool = Mutex<HashMap<usize, Vec<Box<GpuState>>>>;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

impl GpuState {
    /// A state for GPU `g`: one from the pool, or a new one.
    pub(super) fn take(g: &Gpu) -> Result<Box<GpuState>, EngineError> {
        if let Some(s) = lock(pool()).get_mut(&g.ordinal).and_then(|v| v.pop()) {
            return Ok(s);
        }
        let ctx = &g.ctx;
        let stream = || ctx.new_stream().map_err(drv("creating a stream"));
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
            model: DevBuf::new(ctx),
            hi: DevBuf::new(ctx),
            pix: DevBuf::new(ctx),
            hkl: DevBuf::new(ctx),
            hkl_host: vec![],
            upload: HostBuf::new(ctx),
            ring: (0..RING).map(|_| HostBuf::new(ctx)).collect(),
            sms,
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
}

/// One part of a render launched on one GPU: pixels `range` of the ROI's
/// `npix`, in `pieces`, and the events that order the read-back.
pub(super) struct PartRun {
    pub(super) state: Box<GpuState>,
    range: Range<usize>,
    npix: usize,
    nv: usize,
    elem: usize,
    pieces: Vec<Range<usize>>,
    done: Vec<CudaEvent>,
    copied: Vec<CudaEvent>,
    start: CudaEvent,
    end: Option<CudaEvent>,
    track_oor: bool,
    chunk: usize,
    params: Params,
    kernel: Arc<Kernels>,
}

/// Launch pixels `range` (of the ROI's `npix`) in precision R on the state's
/// GPU: upload the inputs, launch the pieces. With `track_oor` (the
/// interpolating kernel) the pieces are done only after [`PartRun::finish`]
/// has run the re-run; otherwise each piece's read-back can start as soon
/// as it is computed.
#[allow(clippy::too_many_arguments)]
pub(super) fn launch_part<R: GpuReal>(
    mut state: Box<GpuState>,
    kernel: Arc<Kernels>,
    sim: &Simulation,
    pixels: &Pixels,
    inputs: &KernelInputs,
    model_r: &[R],
    nv: usize,
    range: Range<usize>,
    chunk: usize,
    track_oor: bool,
) -> Result<PartRun, EngineError> {
    let npix = pixels.len();
    let elem = std::mem::size_of::<R>();
    let st = &mut *state;
    st.ctx
        .bind_to_thread()
        .map_err(drv("binding the context"))?;
    let a = st.compute[0].clone();
    // device buffers (grow-only); the output holds every plane of the whole
    // ROI (the kernel writes pixel g of plane j at j * npix + g)
    st.out
        .ensure(npix * nv * elem)
        .map_err(drv("allocating the output image"))?;
    st.oor
        .ensure(if track_oor { npix * 4 } else { 4 })
        .map_err(drv("allocating the interpolation flags"))?;
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
    // the model, the float64 model and the pixel list through one pinned buffer
    let pix_list = match pixels {
        Pixels::List(_) => pixels.upload(),
        Pixels::Rect { .. } => vec![0],
    };
    let (mb, hb, pb) = (
        std::mem::size_of_val(model_r),
        std::mem::size_of_val(inputs.hi.as_slice()),
        std::mem::size_of_val(pix_list.as_slice()),
    );
    let (ho, po) = (
        mb.next_multiple_of(256),
        (mb.next_multiple_of(256) + hb).next_multiple_of(256),
    );
    st.upload
        .ensure(po + pb)
        .map_err(drv("allocating pinned upload memory"))?;
    let up = st.upload.slice_mut::<u8>(po + pb);
    // SAFETY: plain numbers copied as bytes into a buffer large enough
    unsafe {
        std::ptr::copy_nonoverlapping(model_r.as_ptr().cast::<u8>(), up.as_mut_ptr(), mb);
        std::ptr::copy_nonoverlapping(inputs.hi.as_ptr().cast::<u8>(), up.as_mut_ptr().add(ho), hb);
        std::ptr::copy_nonoverlapping(pix_list.as_ptr().cast::<u8>(), up.as_mut_ptr().add(po), pb);
    }
    let dm = st.model.ensure(mb).map_err(drv("allocating the model"))?;
    let dh = st
        .hi
        .ensure(hb)
        .map_err(drv("allocating the float64 model"))?;
    let dp = st
        .pix
        .ensure(pb)
        .map_err(drv("allocating the pixel list"))?;
    // SAFETY: each destination holds its bytes; the pinned source stays
    // untouched until the state is given back (every stream idle)
    unsafe {
        dresult::memcpy_htod_async(dm, &up[..mb], a.cu_stream())
            .map_err(drv("uploading the model"))?;
        dresult::memcpy_htod_async(dh, &up[ho..ho + hb], a.cu_stream())
            .map_err(drv("uploading the float64 model"))?;
        dresult::memcpy_htod_async(dp, &up[po..po + pb], a.cu_stream())
            .map_err(drv("uploading the pixel list"))?;
    }
    let timed = Some(dsys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = st
        .ctx
        .new_event(timed)
        .map_err(drv("recording a timing event"))?;
    start.record(&a).map_err(drv("recording a timing event"))?;
    for s in &st.compute[1..] {
        s.wait(&start).map_err(drv("ordering the streams"))?;
    }
    // pieces: about TARGET_PIECES, none below a full wave of blocks
    let per_sm = kernel
        .render
        .occupancy_max_active_blocks_per_multiprocessor(BLOCK, 0, None)
        .unwrap_or(1)
        .max(1) as usize;
    let wave = per_sm * st.sms * BLOCK as usize;
    let len = range.len();
    let piece = len
        .div_ceil(TARGET_PIECES)
        .max(wave)
        .div_ceil(BLOCK as usize)
        * BLOCK as usize;
    let pieces: Vec<Range<usize>> = (0..len.div_ceil(piece.max(1)))
        .map(|k| range.start + k * piece..(range.start + (k + 1) * piece).min(range.end))
        .collect();
    let mut run = PartRun {
        state,
        range,
        npix,
        nv,
        elem,
        pieces,
        done: vec![],
        copied: vec![],
        start,
        end: None,
        track_oor,
        chunk,
        params: inputs.params,
        kernel,
    };
    for k in 0..run.pieces.len() {
        let s = &run.state.compute[k % STREAMS].clone();
        let r = run.pieces[k].clone();
        run.launch(s, &run.params.clone(), r)?;
        if !track_oor {
            let e = run
                .state
                .ctx
                .new_event(None)
                .map_err(drv("recording an event"))?;
            e.record(s).map_err(drv("recording an event"))?;
            run.done.push(e);
        }
    }
    Ok(run)
}

impl PartRun {
    /// Launch `render_pixels` over `r` on stream `s`, `chunk` pixels a launch.
    fn launch(&self, s: &CudaStream, params: &Params, r: Range<usize>) -> Result<(), EngineError> {
        let st = &self.state;
        let f = self.kernel.render.cu_function();
        let mut start = r.start;
        while start < r.end {
            let count = self.chunk.min(r.end - start);
            let mut p = *params;
            let (mut mdl, mut hi, mut hkl, mut pix) =
                (st.model.ptr, st.hi.ptr, st.hkl.ptr, st.pix.ptr);
            let (mut s0, mut c, mut n) = (start as i32, count as i32, self.npix as i32);
            let (mut out, mut oor) = (st.out.ptr, st.oor.ptr);
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

    /// End the part's launches: with the interpolating kernel, re-run from
    /// C's switch to nearest lookup (`switch`, over the whole ROI) the
    /// pixels of this part from it on, then mark every piece done; record
    /// the end of the kernels.
    pub(super) fn finish(&mut self, switch: Option<(usize, i32)>) -> Result<(), EngineError> {
        self.state
            .ctx
            .bind_to_thread()
            .map_err(drv("binding the context"))?;
        let a = self.state.compute[0].clone();
        let join = |a: &CudaStream| -> Result<(), EngineError> {
            for s in &self.state.compute[1..] {
                a.join(s).map_err(drv("ordering the streams"))?;
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
                join(&a)?;
                self.launch(&a, &p2, r)?;
            }
        }
        join(&a)?;
        if self.track_oor {
            for _ in 0..self.pieces.len() {
                let e = self
                    .state
                    .ctx
                    .new_event(None)
                    .map_err(drv("recording an event"))?;
                e.record(&a).map_err(drv("recording an event"))?;
                self.done.push(e);
            }
        }
        let end = self
            .state
            .ctx
            .new_event(Some(dsys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(drv("recording a timing event"))?;
        end.record(&a).map_err(drv("recording a timing event"))?;
        self.end = Some(end);
        Ok(())
    }

    /// Issue the copies of the first pieces into the pinned ring (each
    /// waits for its piece on the GPU). Call [`PartRun::finish`] first.
    pub(super) fn start_copies<R: GpuReal>(&mut self) -> Result<(), EngineError> {
        let (nv, elem) = (self.nv, self.elem);
        assert_eq!(elem, std::mem::size_of::<R>());
        self.state
            .ctx
            .bind_to_thread()
            .map_err(drv("binding the context"))?;
        let longest = self.pieces.iter().map(|r| r.len()).max().unwrap_or(0);
        for buf in &mut self.state.ring {
            buf.ensure(longest * nv * elem)
                .map_err(drv("allocating pinned read-back memory"))?;
        }
        self.copied = (0..RING)
            .map(|_| self.state.ctx.new_event(None))
            .collect::<Result<_, _>>()
            .map_err(drv("recording an event"))?;
        for k in 0..self.pieces.len().min(RING) {
            self.issue::<R>(k).map_err(drv("reading back the image"))?;
        }
        Ok(())
    }

    /// Copy piece k's planes into ring buffer k % RING (after the piece is
    /// computed), then record the buffer's event.
    fn issue<R: GpuReal>(&mut self, k: usize) -> Result<(), DriverError> {
        let (nv, npix, elem) = (self.nv, self.npix, self.elem);
        let r = self.pieces[k].clone();
        let len = r.len();
        let st = &mut *self.state;
        st.copy.wait(&self.done[k])?;
        let out = st.out.ptr;
        let slot = st.ring[k % RING].slice_mut::<R>(nv * len);
        for j in 0..nv {
            let src = out + ((j * npix + r.start) * elem) as u64;
            // SAFETY: the piece of plane j lies inside the output; the slot
            // is not read until the event recorded after these copies
            unsafe {
                dresult::memcpy_dtoh_async(
                    &mut slot[j * len..(j + 1) * len],
                    src,
                    st.copy.cu_stream(),
                )
            }?;
        }
        self.copied[k % RING].record(&st.copy)
    }

    /// Put each piece into `windows` as its copy arrives (one window per
    /// plane: the full-detector plane from index `base` on, covering this
    /// part's rows; possibly uninitialised, every pixel of the part is
    /// written), issuing the later pieces' copies as ring buffers free up;
    /// the kernels' GPU time (seconds). Call [`PartRun::start_copies`] first.
    pub(super) fn read_back<R: GpuReal>(
        &mut self,
        pixels: &Pixels,
        fp: usize,
        windows: &mut [&mut [MaybeUninit<f64>]],
        base: usize,
    ) -> Result<f64, EngineError> {
        let (nv, npix) = (self.nv, self.npix);
        self.state
            .ctx
            .bind_to_thread()
            .map_err(drv("binding the context"))?;
        let n = self.pieces.len();
        for k in 0..n {
            self.copied[k % RING]
                .synchronize()
                .map_err(drv("reading back the image"))?;
            let r = self.pieces[k].clone();
            let len = r.len();
            let slot = self.state.ring[k % RING].slice_mut::<R>(nv * len);
            // every plane at once (each plane's values in parallel too)
            windows.par_iter_mut().enumerate().for_each(|(j, w)| {
                scatter(
                    std::slice::from_mut(w),
                    pixels,
                    fp,
                    npix,
                    base,
                    r.start,
                    &slot[j * len..(j + 1) * len],
                )
            });
            if k + RING < n {
                self.issue::<R>(k + RING)
                    .map_err(drv("reading back the image"))?;
            }
        }
        let secs = match &self.end {
            Some(end) => self
                .start
                .elapsed_ms(end)
                .map(|ms| ms as f64 / 1000.0)
                .unwrap_or(0.0),
            None => 0.0,
        };
        Ok(secs)
    }
}
