//! SIGINT, SIGTERM and SIGHUP: temporary files are removed and the process
//! exits with 128 + the signal number. Every temporary file the runner writes
//! (atomic writes of bundle files and nanoBragg outputs) is registered here
//! while it exists; a `runner run` so interrupted leaves a bundle without
//! `sha256.txt` whose finished cells are kept: `runner run FILE --resume
//! BUNDLE` completes it (the bundle lock is released with the process).
//!
//! The signals are blocked in every thread and taken by one thread with
//! `sigwait`, so no work happens in a signal handler. Child processes start
//! with an empty signal mask (the standard library resets it).
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static NOTE: Mutex<Option<String>> = Mutex::new(None);

/// Test hook: send this process SIGTERM while a temporary file of this name
/// (file name ending) is being written.
pub const SIGNAL_IN_WRITE_ENV: &str = "RUNNER_TEST_SIGNAL_IN_WRITE";

/// Block the signals and start the thread that handles them. Call before any
/// other thread starts (threads inherit the mask).
pub fn install() {
    // SAFETY: plain libc calls on a zeroed sigset_t that sigemptyset
    // initialises; no handler runs in signal context.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut sig: libc::c_int = 0;
                if libc::sigwait(&set, &mut sig) == 0 {
                    on_signal(sig);
                }
            });
        if spawned.is_err() {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

fn on_signal(sig: i32) {
    let name = match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    };
    // The registry stays locked until the process exits: no temporary
    // file can be created (creation happens under this lock) after the
    // registered ones are removed.
    let mut guard = TEMPS.lock().unwrap_or_else(|e| e.into_inner());
    let removed = std::mem::take(&mut *guard)
        .iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count();
    let note = NOTE.lock().ok().and_then(|n| n.clone());
    crate::errln!(
        "runner: {name}: stopped; {removed} temporary file(s) removed{}",
        note.map(|n| format!("; {n}")).unwrap_or_default()
    );
    std::process::exit(128 + sig);
}

/// Remove every registered temporary file; returns how many were removed.
pub fn remove_temps() -> usize {
    let list = match TEMPS.lock() {
        Ok(mut g) => std::mem::take(&mut *g),
        Err(_) => return 0,
    };
    list.iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count()
}

/// What to tell the user when a signal stops the process (e.g. how to
/// resume a bundle).
pub fn set_note(note: Option<String>) {
    if let Ok(mut g) = NOTE.lock() {
        *g = note;
    }
}

/// A registered temporary file; dropping it unregisters (not removes) it.
pub struct TempGuard(PathBuf);

/// Create (or truncate) a temporary file and register it for removal on a
/// signal, both under the registry's lock (see `on_signal`).
pub fn create_temp(path: &Path) -> std::io::Result<(TempGuard, std::fs::File)> {
    let mut g = TEMPS.lock().unwrap_or_else(|e| e.into_inner());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    g.push(path.to_path_buf());
    Ok((TempGuard(path.to_path_buf()), f))
}

impl TempGuard {
    /// The test hook (see [`SIGNAL_IN_WRITE_ENV`]): called after the
    /// temporary file has its bytes, before the rename.
    pub fn test_hook(&self) {
        if let Ok(want) = std::env::var(SIGNAL_IN_WRITE_ENV) {
            let name = self.0.to_string_lossy();
            if !want.is_empty() && name.contains(&want) {
                // SAFETY: kill(2) on our own pid; the signal thread takes it.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
        }
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Ok(mut g) = TEMPS.lock() {
            if let Some(i) = g.iter().rposition(|p| *p == self.0) {
                g.swap_remove(i);
            }
        }
    }
}
