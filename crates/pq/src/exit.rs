//! No libpq call on another thread while the process exits.
//!
//! Probes run on helper threads. When the process exits, `exit()` runs OpenSSL's cleanup
//! (registered by the postmaster's or libpq's OpenSSL initialisation) while those threads
//! still run: one that woke from poll(2) into libpq's TLS code then would use freed state and
//! could crash the process, and a crashed PostgreSQL child makes the postmaster reinitialise
//! without a shutdown checkpoint. So every libpq call happens "inside" (a counter), poll(2)
//! waits outside, and `close` (from the process's exit callbacks, before `exit()`) stops new
//! calls and waits briefly for the ones running.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

static CLOSING: AtomicBool = AtomicBool::new(false);
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// Held while a thread may call libpq.
pub(crate) struct Inside(());

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.fetch_sub(1, SeqCst);
    }
}

/// Permission to call libpq, or None once the process exits.
pub(crate) fn enter() -> Option<Inside> {
    INSIDE.fetch_add(1, SeqCst);
    if CLOSING.load(SeqCst) {
        INSIDE.fetch_sub(1, SeqCst);
        return None;
    }
    Some(Inside(()))
}

/// Run `f` (a wait that calls no libpq function) outside: `close` does not wait for it.
/// False when the process started exiting meanwhile (the caller must not call libpq again).
pub(crate) fn outside<T>(_held: &Inside, f: impl FnOnce() -> T) -> (T, bool) {
    INSIDE.fetch_sub(1, SeqCst);
    let r = f();
    INSIDE.fetch_add(1, SeqCst);
    (r, !CLOSING.load(SeqCst))
}

/// The process is exiting: no libpq call from now on (connections are left to the exit);
/// wait up to `max_wait` for calls under way (a DNS lookup inside libpq may take longer: then
/// the exit goes on regardless). Returns how many were still under way.
pub fn close(max_wait: Duration) -> usize {
    CLOSING.store(true, SeqCst);
    let t = Instant::now();
    while INSIDE.load(SeqCst) > 0 && t.elapsed() < max_wait {
        std::thread::sleep(Duration::from_millis(1));
    }
    INSIDE.load(SeqCst)
}
