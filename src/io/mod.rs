//! File formats crystallographers already read: HKL text, MOSFLM A matrix,
//! source lists, SMV (ADSC) images, raw float images, PGM and PNG.
//!
//! Every writer goes through [`atomic_write`]: the bytes land in a temporary
//! file in the destination's folder and are renamed into place, so a reader
//! never sees a half-written file.

pub mod float_image;
pub mod hkl;
pub mod mosflm;
pub mod pgm;
pub mod plot;
pub mod png_image;
pub mod smv;
pub mod sources;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An input or output file problem, naming the file (and line where known).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

impl IoError {
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        IoError::File {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    pub fn line(path: &Path, line: usize, msg: impl Into<String>) -> Self {
        IoError::Line {
            path: path.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
    /// The 1-based line number, where the problem has one.
    pub fn line_number(&self) -> Option<usize> {
        match self {
            IoError::Line { line, .. } => Some(*line),
            IoError::File { .. } => None,
        }
    }
}

/// Read a whole file, mapping the OS error to an [`IoError`] naming it.
/// Only regular files are read (not /dev/zero, a fifo or a folder), and
/// none larger than the memory budget.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, IoError> {
    let meta =
        std::fs::metadata(path).map_err(|e| IoError::file(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(IoError::file(path, "not a regular file"));
    }
    let (limit, src) = crate::physics::budget::limit();
    if meta.len() > limit {
        return Err(IoError::file(
            path,
            format!(
                "{} bytes, more than the memory limit of {} ({src})",
                meta.len(),
                crate::physics::budget::human(limit)
            ),
        ));
    }
    std::fs::read(path).map_err(|e| IoError::file(path, format!("cannot read: {e}")))
}

/// Read a whole text file (UTF-8; invalid bytes are an error naming the file).
pub fn read_text(path: &Path) -> Result<String, IoError> {
    let bytes = read_bytes(path)?;
    String::from_utf8(bytes).map_err(|e| IoError::file(path, format!("not UTF-8 text: {e}")))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `path` all at once: a temporary file beside it is written,
/// flushed to disk and renamed over `path`. On any failure the temporary file
/// is removed and `path` is left as it was.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let name = path
        .file_name()
        .ok_or_else(|| IoError::file(path, "not a file name"))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let (guard, mut f) = crate::platform::signals::create_temp(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        guard.test_hook();
        std::fs::rename(&tmp, path)
    })();
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(IoError::file(path, format!("cannot write: {e}")))
        }
    }
}

/// Format a number as C's `printf("%g")` does (6 significant digits, trailing
/// zeros removed, exponent form below 1e-4 or from 1e6 on, `nan`/`inf`).
/// nanoBragg writes its SMV header and PGM comment this way.
pub fn c_fmt_g(x: f64) -> String {
    c_fmt_g_prec(x, 6)
}

/// `printf("%.{prec}g")`.
pub fn c_fmt_g_prec(x: f64, prec: usize) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() {
            "-nan".into()
        } else {
            "nan".into()
        };
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf".into() } else { "inf".into() };
    }
    let p = prec.max(1);
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // The exponent after rounding to p significant digits decides the style.
    let sci = format!("{:.*e}", p - 1, x);
    let (mant, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    if exp < -4 || exp >= p as i32 {
        let mant = strip_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{:.*}", decimals, x)).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_fmt_g_matches_printf() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (100.0, "100"),
            (0.1, "0.1"),
            (6.2, "6.2"),
            (51.25, "51.25"),
            (1.0 / 3.0, "0.333333"),
            (123456.0, "123456"),
            (1234567.0, "1.23457e+06"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (-2.5, "-2.5"),
            (999999.5, "1e+06"),
            (1e100, "1e+100"),
            (f64::NAN, "nan"),
            (55000.0 / 3.0, "18333.3"),
        ];
        for (x, want) in cases {
            assert_eq!(c_fmt_g(*x), *want, "{x}");
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        atomic_write(&p, b"first").unwrap();
        atomic_write(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn atomic_write_failure_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no_such_dir").join("x.bin");
        let e = atomic_write(&p, b"x").unwrap_err();
        assert!(e.to_string().contains("x.bin"), "{e}");
    }
}
