//! Host-side phase marks of one render, logged as one line at the end
//! (`RUST_LOG=braggrun::cuda=debug`). They replace the trace lines once
//! written as each phase ended: each took microseconds of its own and
//! stretched the phases after it. These marks cost a clock read and a
//! push each and stay in memory until the render ends (with the debug log
//! off, a thread-local look-up).

use std::cell::RefCell;
use std::fmt::Write;
use std::time::Instant;

type Marks = Vec<(&'static str, Instant)>;

thread_local! {
    /// The marks of the render on this thread (None: not recording).
    static MARKS: RefCell<Option<Marks>> = const { RefCell::new(None) };
}

/// One render's recording on this thread: its marks are logged when it is
/// dropped, after an error too. It puts back the marks of a render it
/// interrupted (a rayon thread waiting inside one render can run another).
pub(super) struct Recording {
    outer: Option<Marks>,
    on: bool,
}

/// Start recording this thread's marks when the debug log is on.
pub(super) fn begin() -> Recording {
    if !tracing::enabled!(target: "braggrun::cuda", tracing::Level::DEBUG) {
        return Recording {
            outer: None,
            on: false,
        };
    }
    let mut v = Vec::with_capacity(32);
    v.push(("begin", Instant::now()));
    let outer = MARKS.with(|m| m.borrow_mut().replace(v));
    Recording { outer, on: true }
}

/// Mark the end of phase `name` (nothing when not recording: on another
/// thread, or with the debug log off).
pub(super) fn mark(name: &'static str) {
    MARKS.with(|m| {
        if let Some(v) = m.borrow_mut().as_mut() {
            v.push((name, Instant::now()));
        }
    });
}

impl Drop for Recording {
    /// Log each phase's length and end (microseconds from `begin`).
    fn drop(&mut self) {
        if !self.on {
            return;
        }
        let Some(v) = MARKS.with(|m| std::mem::replace(&mut *m.borrow_mut(), self.outer.take()))
        else {
            return;
        };
        let t0 = v[0].1;
        let mut line = String::new();
        let mut prev = t0;
        for (name, t) in &v[1..] {
            let _ = write!(
                line,
                " {name} {:.1} (at {:.1});",
                (*t - prev).as_secs_f64() * 1e6,
                (*t - t0).as_secs_f64() * 1e6
            );
            prev = *t;
        }
        tracing::debug!(target: "braggrun::cuda", "host phases, us:{line}");
    }
}
