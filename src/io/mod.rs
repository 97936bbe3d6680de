//! File formats crystallographers already read: HKL text, MOSFLM A matrix,
//! source lists, SMV (ADSC) images, raw float images, PGM and PNG; and the
//! process's memory limit ([`memory`]), which bounds what is read.
//!
//! Readers return plain data (numbers, arrays, rows); the model builds its
//! own structures from them. Nothing here depends on the model.
//!
//! Every file the crate writes goes through [`write_atomic`]: the bytes land
//! in a temporary file in the destination's folder and are renamed into
//! place, so a reader never sees a half-written file.

pub mod float_image;
pub mod hkl;
pub mod memory;
pub mod mosflm;
pub mod npy;
pub mod pgm;
pub mod picture;
pub mod smv;
pub mod sources;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An input or output file problem, naming the file (and line where known).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A problem with a whole file (missing, unreadable, wrong size).
    #[error("{}: {msg}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A problem at one line of a text file.
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

impl IoError {
    /// A problem with a whole file.
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        IoError::File {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    /// A problem at a line of a text file (1-based).
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
    let (limit, src) = memory::limit();
    if meta.len() > limit {
        return Err(IoError::file(
            path,
            format!(
                "{} bytes, more than the memory limit of {} ({src})",
                meta.len(),
                memory::human(limit)
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

/// Write `bytes` to `path` all at once: a temporary file beside it (a name
/// unique to this process and call, registered for removal should a signal
/// stop the process) is written, flushed to disk and renamed over `path`;
/// then the folder is synced, so the rename itself survives a crash. On any
/// failure the temporary file is removed and `path` is left as it was.
/// Safe to call from several threads at once.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
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
        Ok(()) => {
            // Best effort: some filesystems cannot sync a folder; the file
            // itself is complete and in place either way.
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
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
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn write_atomic_failure_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no_such_dir").join("x.bin");
        let e = write_atomic(&p, b"x").unwrap_err();
        assert!(e.to_string().contains("x.bin"), "{e}");
    }

    /// Threads writing at once each get their own temporary file: every
    /// file ends with its own bytes and no temporary file is left.
    #[test]
    fn write_atomic_from_many_threads() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let dir = dir.path();
                s.spawn(move || {
                    for i in 0..20 {
                        let p = dir.join(format!("f{}.txt", (t + i) % 4));
                        write_atomic(&p, format!("{t} {i}").repeat(100).as_bytes()).unwrap();
                    }
                });
            }
        });
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["f0.txt", "f1.txt", "f2.txt", "f3.txt"]);
        for n in &names {
            let text = std::fs::read_to_string(dir.path().join(n)).unwrap();
            let unit = &text[..text.len() / 100];
            assert_eq!(text, unit.repeat(100), "{n} holds one write, whole");
        }
    }

    /// A path that names a folder is refused, and the folder is untouched.
    #[test]
    fn write_atomic_over_a_folder_fails() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("keep"), b"k").unwrap();
        assert!(write_atomic(&sub, b"x").is_err());
        assert_eq!(std::fs::read(sub.join("keep")).unwrap(), b"k");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
