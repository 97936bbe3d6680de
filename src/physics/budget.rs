//! The memory budget: one check, with checked arithmetic, of what a render
//! will allocate (image, derivative planes, scalar buffers, sources,
//! orientation tables, HKL grid, mask), made from the configuration before
//! anything is allocated. `setup::resolve` runs it (so `runner validate`,
//! `runner plan`, `runner run` and `runner nanobragg` all refuse the same
//! inputs) and `matrix::validate` runs it again per cell with the cell's
//! scalar type and derivative directions.
//!
//! The limit defaults to 1/2 of `MemAvailable` (/proc/meminfo; 4 GiB when
//! that cannot be read); `--memory-limit SIZE` or the environment variable
//! `BRAGGRUN_MEMORY_LIMIT=SIZE` sets it (SIZE: bytes, or a number with
//! K, M, G or T, powers of 1024).

use super::setup::{invalid, SetupError};
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that sets the limit (the flag wins).
pub const LIMIT_ENV: &str = "BRAGGRUN_MEMORY_LIMIT";
/// The limit when /proc/meminfo cannot be read.
pub const FALLBACK_LIMIT: u64 = 4 << 30;

static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Parse a size: `123`, `512M`, `1.5G`, `2T` (powers of 1024; a trailing
/// `B`/`iB` is allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 8G, 512M, 1000000)"))?;
    let bytes = x * mult as f64;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("'{s}' is not a size between 1 byte and 16 EiB"));
    }
    Ok(bytes as u64)
}

/// Set the limit for this process (the `--memory-limit` flag).
pub fn set_limit(bytes: u64) {
    LIMIT.store(bytes.max(1), Ordering::Relaxed);
}

fn mem_available() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    let l = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The limit in force and where it comes from.
pub fn limit() -> (u64, String) {
    let set = LIMIT.load(Ordering::Relaxed);
    if set > 0 {
        return (set, "--memory-limit".into());
    }
    if let Ok(v) = std::env::var(LIMIT_ENV) {
        if let Ok(b) = parse_size(&v) {
            return (b, format!("{LIMIT_ENV}={v}"));
        }
    }
    match mem_available() {
        Some(a) => (a / 2, "1/2 of MemAvailable".into()),
        None => (FALLBACK_LIMIT, "default, /proc/meminfo unreadable".into()),
    }
}

/// Check the environment variable's value (an error names it).
pub fn check_env() -> Result<(), String> {
    match std::env::var(LIMIT_ENV) {
        Ok(v) => parse_size(&v)
            .map(|_| ())
            .map_err(|e| format!("{LIMIT_ENV}: {e}")),
        Err(_) => Ok(()),
    }
}

/// A number for a message: plain when moderate, else in exponent form
/// (1e300, not three hundred digits).
pub fn num(x: f64) -> String {
    if x == 0.0 || (x.is_finite() && (1e-4..1e9).contains(&x.abs())) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// Human-readable bytes.
pub fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = b as f64;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < units.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", units[i])
    }
}

/// What a render needs: labelled items; None marks an overflow.
#[derive(Debug, Default, Clone)]
pub struct Need {
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
    /// Refuse (naming `key`) when the total exceeds the limit or overflows.
    pub fn check(&self, key: &str) -> Result<u64, SetupError> {
        let (lim, src) = limit();
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
    fn sizes_parse_and_overflow_is_caught() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("1e30").is_err());
        let mut n = Need::default();
        n.add("x", u64::MAX, 2);
        assert_eq!(n.total(), None);
        let n = render_need(16384, 16383, 4, 1, 1, 1, 0, false, false, 0);
        assert!(n.total().unwrap() > 3 << 30);
    }
}
