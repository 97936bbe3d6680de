//! The memory budget: one check, with checked arithmetic, of what a render
//! will allocate (image, derivative planes, scalar buffers, sources,
//! orientation tables, HKL grid, mask), made from the configuration before
//! anything is allocated. `setup::resolve` runs it (so `runner validate`,
//! `runner plan`, `runner run` and `runner nanobragg` all refuse the same
//! inputs) and `matrix::validate` runs it again per cell with the cell's
//! scalar type and derivative directions.
//!
//! The limit itself (flag, `BRAGGRUN_MEMORY_LIMIT`, 1/2 of MemAvailable) is
//! the process's, read in `io::memory`; it is re-exported here for callers.

pub use crate::io::memory::{
    check_env, human, limit, parse_size, set_limit, FALLBACK_LIMIT, LIMIT_ENV,
};

use super::error::{invalid, SetupError};

/// A number for a message: plain when moderate, else in exponent form
/// (1e300, not three hundred digits).
pub fn num(x: f64) -> String {
    if x == 0.0 || (x.is_finite() && (1e-4..1e9).contains(&x.abs())) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// What a render needs: labelled items; None marks an overflow.
#[derive(Debug, Default, Clone)]
pub struct Need {
    /// (label, bytes) of each allocation; None where the size overflows.
    pub items: Vec<(String, Option<u64>)>,
}

impl Need {
    /// `count` things of `each` bytes (checked).
    pub fn add(&mut self, label: impl Into<String>, count: u64, each: u64) -> &mut Self {
        self.items.push((label.into(), count.checked_mul(each)));
        self
    }
    /// The total, None on overflow.
    pub fn total(&self) -> Option<u64> {
        self.items
            .iter()
            .try_fold(0u64, |acc, (_, b)| acc.checked_add((*b)?))
    }
    fn describe(&self) -> String {
        self.items
            .iter()
            .filter(|(_, b)| *b != Some(0))
            .map(|(l, b)| match b {
                Some(b) => format!("{l} {}", human(*b)),
                None => format!("{l} beyond 2^64 bytes"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// Refuse (naming `key`) when the total exceeds the process's limit
    /// ([`limit`]) or overflows.
    pub fn check(&self, key: &str) -> Result<u64, SetupError> {
        self.check_within(key, &limit())
    }

    /// Refuse (naming `key`) when the total exceeds `limit` (bytes, and
    /// where that figure comes from) or overflows.
    pub fn check_within(&self, key: &str, limit: &(u64, String)) -> Result<u64, SetupError> {
        let (lim, src) = (limit.0, &limit.1);
        match self.total() {
            Some(t) if t <= lim => Ok(t),
            Some(t) => Err(invalid(
                key,
                format!(
                    "needs {} of memory ({}), more than the limit of {} ({src}); raise it with --memory-limit SIZE or {LIMIT_ENV}=SIZE",
                    human(t),
                    self.describe(),
                    human(lim)
                ),
            )),
            None => Err(invalid(
                key,
                format!(
                    "needs more memory than can be counted ({}); the limit is {} ({src})",
                    self.describe(),
                    human(lim)
                ),
            )),
        }
    }
}

/// The budget of one configuration while it is resolved: a whole-detector
/// render (no derivatives, float64) of `fpixels` x `spixels` with or without
/// a mask, against a given limit.
#[derive(Clone, Copy, Debug)]
pub struct RenderBudget<'a> {
    fpixels: u64,
    spixels: u64,
    mask: bool,
    limit: &'a (u64, String),
}

impl<'a> RenderBudget<'a> {
    /// The budget of a `fpixels` x `spixels` render (with a mask buffer when
    /// `mask`) against `limit`: bytes, and where they come from (`io::memory::limit`).
    pub fn new(fpixels: usize, spixels: usize, mask: bool, limit: &'a (u64, String)) -> Self {
        RenderBudget {
            fpixels: fpixels as u64,
            spixels: spixels as u64,
            mask,
            limit,
        }
    }

    /// Check what the render needs with the counts known so far (0 for those
    /// not yet known), naming `key`.
    pub fn check(
        &self,
        key: &str,
        sources: u64,
        phisteps: u64,
        domains: u64,
        hkl_points: u64,
    ) -> Result<u64, SetupError> {
        render_need(
            self.fpixels,
            self.spixels,
            0,
            sources,
            phisteps,
            domains,
            hkl_points,
            self.mask,
            false,
            0,
        )
        .check_within(key, self.limit)
    }
}

/// Bytes of one scalar: f64 or f32 (`f32`), carrying `dirs` derivative
/// directions (at most 8 at once: more are rendered in passes).
pub fn scalar_bytes(f32: bool, dirs: usize) -> u64 {
    let base = if f32 { 4 } else { 8 };
    if dirs == 0 {
        base
    } else {
        base * (1 + dirs.min(8) as u64) + 8
    }
}

/// What one render of `setup` allocates: the whole-detector f64 image (and
/// one copy of it for the caller), `dirs` whole-detector derivative planes,
/// the ROI's pixel list and scalar values (the CPU engine renders the ROI
/// only), sources, orientation tables (phi steps x mosaic domains, first
/// sweep and the rest), the HKL grid (`hkl_points`) and the mask.
#[allow(clippy::too_many_arguments)]
pub fn render_need(
    fpixels: u64,
    spixels: u64,
    roi_pixels: u64,
    sources: u64,
    phisteps: u64,
    domains: u64,
    hkl_points: u64,
    mask: bool,
    f32: bool,
    dirs: usize,
) -> Need {
    let t = scalar_bytes(f32, dirs);
    let n = fpixels.saturating_mul(spixels);
    let mut need = Need::default();
    need.add("image (f64)", n, 8)
        .add("image copy (f64)", n, 8)
        .add("derivative planes", n, 8u64.saturating_mul(dirs as u64))
        .add("ROI pixels and values", roi_pixels, 16 + 2 * (t + 8))
        .add("sources", sources, 48 + 4 * t)
        .add(
            "orientations",
            phisteps.saturating_mul(domains),
            2 * 9 * 3 * t,
        )
        .add("mosaic domains", domains, 64 + 9 * t)
        .add("HKL grid", hkl_points, 8)
        .add("mask", if mask { n } else { 0 }, 2);
    need
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_caught() {
        let mut n = Need::default();
        n.add("x", u64::MAX, 2);
        assert_eq!(n.total(), None);
        let n = render_need(16384, 16383, 4, 1, 1, 1, 0, false, false, 0);
        assert!(n.total().unwrap() > 3 << 30);
    }

    /// The resolution-time check against a given limit: a 1024 x 1024
    /// float64 image and its copy are 16 MiB, which a 10 MiB limit refuses,
    /// naming the key, the items and the limit's source.
    #[test]
    fn render_budget_names_key_items_and_limit() {
        let limit = (10u64 << 20, "test limit".to_string());
        let b = RenderBudget::new(1024, 1024, false, &limit);
        let e = b.check("detector", 0, 0, 0, 0).unwrap_err().to_string();
        assert_eq!(
            e,
            "detector: needs 16.0 MiB of memory (image (f64) 8.0 MiB, image copy (f64) 8.0 MiB), \
             more than the limit of 10.0 MiB (test limit); raise it with --memory-limit SIZE or \
             BRAGGRUN_MEMORY_LIMIT=SIZE"
        );
        let small = RenderBudget::new(512, 512, true, &limit);
        // 2 x 2 MiB image, 0.5 MiB mask, 1000 sources of 80 bytes
        assert_eq!(
            small.check("beam", 1000, 0, 0, 0).unwrap(),
            (4 << 20) + (1 << 19) + 80_000
        );
    }
}
