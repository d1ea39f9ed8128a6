//! The worker's live state in shared memory: what `pgkeeper.status()` shows, and the flags
//! through which SQL functions ask the worker to reload (the seed's SIGUSR1 / SIGUSR2).
//!
//! Fixed-size and `Copy`, as PostgreSQL shared memory requires (no heap pointers).

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::*;
use std::sync::atomic::{AtomicBool, Ordering};

pub const MAX_PEERS: usize = 32;
pub const NAME_LEN: usize = 64;
pub const TEXT_LEN: usize = 128;

#[derive(Copy, Clone)]
pub struct PeerState {
    pub name: [u8; NAME_LEN],
    /// 0 = never polled, 1 = answered, 2 = did not answer.
    pub result: u8,
    pub latency_us: u32,
    pub last_ok_ms: i64,
    pub error: [u8; TEXT_LEN],
}

#[derive(Copy, Clone)]
pub struct KeeperState {
    pub worker_pid: i32,
    pub reload_registry: bool,
    pub reload_settings: bool,
    /// 0 = not running, 1 = master mode, 2 = standby mode, 3 = idle (not configured).
    pub mode: u8,
    pub state: [u8; TEXT_LEN],
    pub failed_rounds: u32,
    pub rounds: u64,
    pub last_round_ms: i64,
    pub last_failover_ms: i64,
    /// Automatic failover paused until then (a planned switchover is under way).
    pub paused_until_ms: i64,
    /// 0 = none configured, 1 = synchronous, 2 = degraded, 3 = guard off (bad value).
    pub sync_state: u8,
    pub sync_since_ms: i64,
    pub sync_reason: [u8; 256],
    pub npeers: u32,
    pub peers: [PeerState; MAX_PEERS],
    /// The vote record (`votes.rs`), mirrored once loaded from its file.
    pub vote_loaded: bool,
    pub term: u64,
    pub voted_for: [u8; NAME_LEN],
    /// Commit gate (`fence.rs`): 0 = open (not in a cluster that can fail over without this
    /// node), 1 = lease (commits pass while `lease_until` is ahead), 2 = deposed for good,
    /// 3 = stepped down for a planned switchover (until restarted).
    pub fence: u8,
    /// Monotonic ms ([`mono_ms`]): end of the master's lease.
    pub lease_until: i64,
    pub deposed_by: [u8; NAME_LEN],
    pub deposed_term: u64,
    /// Monotonic ms: no vote is granted before (a master's lease acknowledged here).
    pub hold_until: i64,
    /// The worker set `hold_until` after this server's start; no vote before that.
    pub hold_ready: bool,
    /// Stand for election every round until then (monotonic ms), whatever the master does
    /// (planned switchover).
    pub stand_until: i64,
    /// Newest term seen in heartbeats, vote requests and vote replies (not adopted: a
    /// candidate goes past it).
    pub seen_term: u64,
    /// Won an election, promotion under way: vote like a master (refuse).
    pub promoting: bool,
    /// Master mode ran a round with the gate closed for good (deposed or stepped down): it
    /// sends no more heartbeats (what step_down waits for).
    pub heartbeats_stopped: bool,
}

impl Default for PeerState {
    fn default() -> Self {
        PeerState { name: [0; NAME_LEN], result: 0, latency_us: 0, last_ok_ms: 0, error: [0; TEXT_LEN] }
    }
}

impl Default for KeeperState {
    fn default() -> Self {
        KeeperState {
            worker_pid: 0,
            reload_registry: false,
            reload_settings: false,
            mode: 0,
            state: [0; TEXT_LEN],
            failed_rounds: 0,
            rounds: 0,
            last_round_ms: 0,
            last_failover_ms: 0,
            paused_until_ms: 0,
            sync_state: 0,
            sync_since_ms: 0,
            sync_reason: [0; 256],
            npeers: 0,
            peers: [PeerState::default(); MAX_PEERS],
            vote_loaded: false,
            term: 0,
            voted_for: [0; NAME_LEN],
            // A master starts fenced: it must hear from a majority before it takes writes
            // (it may be an old master coming back after a failover).
            fence: 1,
            lease_until: 0,
            deposed_by: [0; NAME_LEN],
            deposed_term: 0,
            hold_until: 0,
            hold_ready: false,
            stand_until: 0,
            seen_term: 0,
            promoting: false,
            heartbeats_stopped: false,
        }
    }
}

unsafe impl PGRXSharedMemory for KeeperState {}

pub static STATE: PgLwLock<KeeperState> = unsafe { PgLwLock::new(c"pg_keeper_state") };

/// Set in _PG_init when the shared memory was requested; inherited by every forked backend.
/// Without it (library not preloaded) touching STATE would panic.
static SHMEM_READY: AtomicBool = AtomicBool::new(false);

pub fn init() {
    pgrx::pg_shmem_init!(STATE);
    SHMEM_READY.store(true, Ordering::Relaxed);
}

pub fn available() -> bool {
    SHMEM_READY.load(Ordering::Relaxed)
}

pub fn put_str(dst: &mut [u8], s: &str) {
    dst.fill(0);
    // Cut on a char boundary, keep one NUL.
    let mut end = s.len().min(dst.len() - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    dst[..end].copy_from_slice(&s.as_bytes()[..end]);
}

pub fn get_str(src: &[u8]) -> String {
    let end = src.iter().position(|b| *b == 0).unwrap_or(src.len());
    String::from_utf8_lossy(&src[..end]).into_owned()
}

pub fn sync_state_name(s: u8) -> &'static str {
    match s {
        1 => "synchronous",
        2 => "degraded",
        3 => "guard off",
        _ => "none configured",
    }
}

pub fn mode_name(mode: u8) -> &'static str {
    match mode {
        1 => "master",
        2 => "standby",
        3 => "idle",
        4 => "witness",
        _ => "not running",
    }
}

/// Ask the worker to reload its registry view and/or settings, and wake it.
/// Returns false when no worker is running.
pub fn notify_worker(registry: bool, settings: bool) -> bool {
    if !available() {
        return false;
    }
    let pid = {
        let mut st = STATE.exclusive();
        st.reload_registry |= registry;
        st.reload_settings |= settings;
        st.worker_pid
    };
    if pid <= 0 {
        return false;
    }
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if proc_.is_null() {
            return false;
        }
        pg_sys::SetLatch(&raw mut (*proc_).procLatch);
    }
    true
}

/// Milliseconds of CLOCK_MONOTONIC: the same clock in every process of this host, never set
/// back. Leases and vote holds are measured on it.
pub fn mono_ms() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// Remember a term seen in a heartbeat, a vote request or a vote reply: the next election
/// goes past it.
pub fn note_term(term: u64) {
    let mut st = STATE.exclusive();
    st.seen_term = st.seen_term.max(term);
}

/// What the commit gate says right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// No lease: commits wait (a lease may come back).
    Fenced,
    /// Another node was elected master in a newer term: commits fail until rejoined.
    Deposed {
        by: String,
        term: u64,
    },
    /// Stepped down for a planned switchover: commits fail until restarted.
    SteppedDown,
}

pub fn gate() -> Gate {
    if !available() {
        return Gate::Open;
    }
    let st = STATE.share();
    match st.fence {
        0 => Gate::Open,
        2 => Gate::Deposed { by: get_str(&st.deposed_by), term: st.deposed_term },
        3 => Gate::SteppedDown,
        _ if mono_ms() < st.lease_until => Gate::Open,
        _ => Gate::Fenced,
    }
}

pub fn gate_name(g: &Gate) -> String {
    match g {
        Gate::Open => "open".into(),
        Gate::Fenced => "fenced".into(),
        Gate::Deposed { by, term } => format!("deposed by {by} (term {term})"),
        Gate::SteppedDown => "stepped down (switchover)".into(),
    }
}
