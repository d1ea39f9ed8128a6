//! Small /proc helpers (Linux only): process liveness, parent/child relations,
//! command lines (process titles) and signals.

use std::path::Path;

/// `(state, ppid)` from `/proc/<pid>/stat`, or None if the process is gone.
pub fn stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Format: "pid (comm) state ppid ..."; comm may contain spaces/parens,
    // so parse after the LAST ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True if `pid` exists and is not a zombie/dead.
pub fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some((st, _)) if st != 'Z' && st != 'X')
}

/// Command line (process title for postgres processes) with NULs replaced by spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let s: String = String::from_utf8_lossy(&raw).replace('\0', " ");
    Some(s.trim().to_string())
}

/// All numeric pids currently in /proc.
pub fn all_pids() -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                v.push(pid);
            }
        }
    }
    v
}

/// Direct (live) children of `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    all_pids().into_iter().filter(|&p| matches!(stat(p), Some((st, pp)) if pp == parent && st != 'Z')).collect()
}

/// All live descendants of `root` (not including root), breadth first.
pub fn descendants(root: i32) -> Vec<i32> {
    // One /proc scan, then walk the tree in memory.
    let table: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| match stat(p) {
            Some((st, pp)) if st != 'Z' => Some((p, pp)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &table {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// Send a signal; errors (e.g. ESRCH) are ignored.
pub fn signal(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: plain kill(2) syscall.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Postmaster pid from the first line of `<data_dir>/postmaster.pid` (may be stale).
pub fn pidfile_pid(data_dir: &Path) -> Option<i32> {
    let s = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    s.lines().next()?.trim().parse().ok().filter(|&p: &i32| p > 0)
}

/// Live processes whose command line mentions `needle` (e.g. a data dir path).
pub fn pids_with_cmdline_containing(needle: &str) -> Vec<i32> {
    all_pids().into_iter().filter(|&p| alive(p) && cmdline(p).is_some_and(|c| c.contains(needle))).collect()
}

/// Reap `pid` if it is a zombie child of this process (no-op otherwise).
pub fn reap(pid: i32) {
    if pid > 1 {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG; ECHILD is ignored.
        unsafe {
            libc::waitpid(pid, &mut status, libc::WNOHANG);
        }
    }
}

/// True if `/proc/<pid>` no longer exists (zombies count as existing).
pub fn gone(pid: i32) -> bool {
    reap(pid);
    stat(pid).is_none()
}

/// Wait until none of `pids` is alive (zombies count as dead), at most
/// `timeout`; zombie children of ours are reaped. Returns true if all dead.
pub fn wait_gone(pids: &[i32], timeout: std::time::Duration) -> bool {
    crate::wait_until(timeout, || pids.iter().all(|&p| gone(p) || !alive(p))).is_ok()
}

/// Make this process a "child subreaper" (Linux prctl): daemonized postmasters
/// started through pg_ctl get re-parented to us instead of PID 1, so we can
/// reap them right after a kill. Without this, a SIGKILLed postmaster may stay
/// a zombie (if PID 1 reaps lazily) and PostgreSQL refuses to start again
/// because kill(pid, 0) on the zombie succeeds ("lock file already exists").
pub fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    });
}
