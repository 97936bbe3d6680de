//! Host-side phase marks of one render, logged as one line at the end
//! (`RUST_LOG=braggrun::cuda=debug`). A trace line written as each phase
//! ends took microseconds of its own and stretched the phases after it;
//! these marks cost one clock read each and stay in memory until the end.

use std::cell::RefCell;
use std::fmt::Write;
use std::time::Instant;

thread_local! {
    /// The marks of the render on this thread (None: not recording).
    static MARKS: RefCell<Option<Vec<(&'static str, Instant)>>> = const { RefCell::new(None) };
}

/// Start recording this thread's marks when the debug log is on.
pub(super) fn begin() {
    if tracing::enabled!(target: "braggrun::cuda", tracing::Level::DEBUG) {
        MARKS.with(|m| *m.borrow_mut() = Some(vec![("begin", Instant::now())]));
    }
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

/// Stop recording and log each phase's length and end (microseconds from
/// `begin`).
pub(super) fn end() {
    let Some(v) = MARKS.with(|m| m.borrow_mut().take()) else {
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
