//! The process's memory limit: what a render may allocate and the largest
//! input file read (see `physics::budget` for the check itself).
//!
//! The limit defaults to 1/2 of `MemAvailable` (/proc/meminfo; 4 GiB when
//! that cannot be read); `--memory-limit SIZE` ([`set_limit`]) or the
//! environment variable `BRAGGRUN_MEMORY_LIMIT=SIZE` sets it (SIZE: bytes, or
//! a number with K, M, G or T, powers of 1024). It lives in io, below
//! physics, because reading it reads a file and the environment.

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

/// The limit in force (bytes) and where it comes from.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("1e30").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
