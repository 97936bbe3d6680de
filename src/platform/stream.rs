//! Standard output and standard error that never panic.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe returns `EPIPE` and
//! `println!` panics on it (exit 101). Every line the runner prints goes
//! through [`outln!`](crate::outln) / [`errln!`](crate::errln) instead:
//!
//! - stdout: the first failed write is remembered and later writes are
//!   skipped. The command still finishes its work (a run still writes its
//!   bundle and `sha256.txt`); then [`exit_code`] turns a closed pipe
//!   (`EPIPE`, e.g. `runner plan X | head -3`) into exit 141 (128 + SIGPIPE,
//!   what a shell reports for a C tool killed by the signal) with nothing
//!   printed, and any other stdout failure (e.g. `>/dev/full`) into exit 1
//!   with one line on stderr.
//! - stderr (diagnostics, progress, the tracing log): failures are ignored
//!   and never change the exit code; the work in progress goes on.
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

const OK: u8 = 0;
const PIPE: u8 = 1;
const OTHER: u8 = 2;

static STDOUT: AtomicU8 = AtomicU8::new(OK);
static STDOUT_ERR: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
static STDERR: AtomicU8 = AtomicU8::new(OK);

/// Exit status of a command whose stdout was closed (128 + SIGPIPE).
pub const EXIT_CLOSED_STDOUT: i32 = 141;

/// Write to stdout; never panics (see the module doc).
pub fn out_fmt(args: std::fmt::Arguments) {
    if STDOUT.load(Ordering::Relaxed) != OK {
        return;
    }
    let mut o = std::io::stdout().lock();
    // stdout is line-buffered: a complete line reaches the fd (and its error
    // comes back) here; exit_code flushes any rest.
    if let Err(e) = o.write_fmt(args) {
        note_stdout_error(&e);
    }
}

fn note_stdout_error(e: &std::io::Error) {
    let code = if e.kind() == std::io::ErrorKind::BrokenPipe {
        PIPE
    } else {
        OTHER
    };
    if STDOUT
        .compare_exchange(OK, code, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        if let Ok(mut g) = STDOUT_ERR.lock() {
            *g = Some(e.to_string());
        }
    }
}

/// Write to stderr; errors are ignored (and later writes skipped).
pub fn err_fmt(args: std::fmt::Arguments) {
    if STDERR.load(Ordering::Relaxed) != OK {
        return;
    }
    let mut e = std::io::stderr().lock();
    if e.write_fmt(args).and_then(|_| e.flush()).is_err() {
        STDERR.store(OTHER, Ordering::Relaxed);
    }
}

/// Whether stdout has failed (closed pipe or other error).
pub fn stdout_failed() -> bool {
    STDOUT.load(Ordering::Relaxed) != OK
}

/// The process exit code given the command's own `code`: a closed stdout
/// gives 141, another stdout failure 1 (a message on stderr), else `code`.
/// Flushes stdout first.
pub fn exit_code(code: i32) -> i32 {
    if let Err(e) = std::io::stdout().lock().flush() {
        note_stdout_error(&e);
    }
    match STDOUT.load(Ordering::Relaxed) {
        PIPE => EXIT_CLOSED_STDOUT,
        OTHER => {
            let why = STDOUT_ERR
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_default();
            err_fmt(format_args!("error: cannot write to stdout: {why}\n"));
            if code == 0 {
                1
            } else {
                code
            }
        }
        _ => code,
    }
}

/// A `Write` for the tracing log: stderr, errors swallowed.
#[derive(Clone, Copy, Default)]
pub struct SafeStderr;

impl Write for SafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if STDERR.load(Ordering::Relaxed) == OK {
            let mut e = std::io::stderr().lock();
            if e.write_all(buf).is_err() {
                STDERR.store(OTHER, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `println!` to stdout that never panics.
#[macro_export]
macro_rules! outln {
    () => { $crate::platform::stream::out_fmt(format_args!("\n")) };
    ($($t:tt)*) => { $crate::platform::stream::out_fmt(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` to stdout that never panics.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::platform::stream::out_fmt(format_args!($($t)*)) };
}

/// `eprintln!` that never panics and never stops the work.
#[macro_export]
macro_rules! errln {
    () => { $crate::platform::stream::err_fmt(format_args!("\n")) };
    ($($t:tt)*) => { $crate::platform::stream::err_fmt(format_args!("{}\n", format_args!($($t)*))) };
}
