//! The worker's live state in shared memory: what `pgkeeper.status()` shows, and the flags
//! through which SQL functions ask the worker to reload (the seed's SIGUSR1 / SIGUSR2).
//!
//! Fixed-size and `Copy`, as PostgreSQL shared memory requires (no heap pointers).

use keeper_core::gate::Setting;
use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::*;
use std::sync::atomic::{AtomicBool, Ordering};

pub const MAX_PEERS: usize = 32;
pub const NAME_LEN: usize = 64;
pub const TEXT_LEN: usize = 128;
pub const ELIGIBLE_LEN: usize = MAX_PEERS * NAME_LEN;

/// Commits are asynchronous (or no rule yet): nothing to check after PostgreSQL's own wait.
pub const SYNC_RULE_ASYNC: u8 = 0;
/// Synchronous, but the voters may not all know it yet: commits that waited for synchronous
/// replication wait for the next heartbeat round a majority answers.
pub const SYNC_RULE_WAIT: u8 = 1;
/// Such commits must be on every standby in `sync_pids`.
pub const SYNC_RULE_ON_EVERY: u8 = 2;

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
    /// `keeper_core::gate::Attention` code: what the last round found that needs an operator.
    pub attention: u8,
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
    pub elected: bool,
    /// The record's eligible set (`VoteRecord::eligible`): `eligible_known` false = None;
    /// else the names, space-separated.
    pub eligible_known: bool,
    pub eligible: [u8; ELIGIBLE_LEN],
    pub eligible_term: u64,
    /// Master mode's rule for commits that waited for synchronous replication
    /// (`keeper_core::eligibility::CommitRule`, checked after the commit in `gate.rs`): one
    /// of the `SYNC_RULE_*` values; with `SYNC_RULE_ON_EVERY`, the WAL sender pids of the
    /// standbys that must have the commit, and whether one of them has no WAL sender now.
    pub sync_rule: u8,
    pub sync_npids: u32,
    pub sync_pids: [i32; MAX_PEERS],
    pub sync_missing: bool,
    /// Master mode: the newest membership version a majority of the nodes has reported
    /// (add_node / del_node make the next change only once the current one is here).
    pub membership_acked: u64,
    /// Master mode opens the gate without a lease (two data nodes, no witness) only from a
    /// round that read at least this membership version: add_node / del_node raise it before
    /// their commit and close such a gate, so a round in flight with the old node_info cannot
    /// reopen it.
    pub open_needs_version: u64,
    /// The membership version of the node_info the worker counts over (its last read), for
    /// `_poll`'s answer: no table read there, so a lock on node_info cannot make this node
    /// look dead.
    pub membership: u64,
    /// node_info names this node as the master (the worker's last read): with term 0, the
    /// cluster's first master, which may hold a lease without an election.
    pub registered_master: bool,
    /// The commit gate's setting (`gate.rs`): a `keeper_core::gate::Setting` code. Change it
    /// only through [`KeeperState::set_gate`]: deposed and stepped down are for good.
    pub gate: u8,
    /// Why the gate is fenced, for the refusal (what the worker last saw).
    pub gate_reason: [u8; TEXT_LEN],
    /// Boot-clock ms ([`boot_ms`]): end of the master's lease.
    pub lease_until: i64,
    pub deposed_by: [u8; NAME_LEN],
    pub deposed_term: u64,
    /// Boot-clock ms: no vote is granted before (a master's lease acknowledged here).
    pub hold_until: i64,
    /// The worker set `hold_until` after this server's start; no vote before that.
    pub hold_ready: bool,
    /// Stand for election every round until then (boot-clock ms), whatever the master does
    /// (planned switchover).
    pub stand_until: i64,
    /// Newest term seen in heartbeats, vote requests and vote replies (not adopted: a
    /// candidate goes past it).
    pub seen_term: u64,
    /// Term of the newest heartbeat handled: the first heartbeat of a newer term (a new
    /// master) wakes the worker for a round at once, so that a standby that did not vote
    /// follows the new master without waiting for its next round.
    pub heartbeat_term: u64,
    /// Won an election, promotion under way: vote like a master (refuse).
    pub promoting: bool,
    /// Master mode ran a round with the gate closed for good (deposed or stepped down): it
    /// sends no more heartbeats (what step_down waits for).
    pub heartbeats_stopped: bool,
    /// Counters for /metrics, since this server started (the history keeps the events).
    pub degrades: u64,
    pub restores: u64,
    pub elections_won: u64,
    pub elections_lost: u64,
    /// Cluster-wide maintenance mode (`pgkeeper pause`), as the worker last read it.
    pub cluster_paused: bool,
    /// `stand_until` was set by `pgkeeper failover --to` rather than a switchover.
    pub stand_for_failover: bool,
    /// `_force_failover` asks the worker to promote this standby, removing these nodes
    /// (space-separated).
    pub force_requested: bool,
    /// The request's term, and until when (boot-clock ms) the worker may act on it.
    pub force_term: u64,
    pub force_deadline: i64,
    pub force_removed: [u8; ELIGIBLE_LEN],
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
            attention: 0,
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
            elected: false,
            eligible_known: false,
            eligible: [0; ELIGIBLE_LEN],
            eligible_term: 0,
            sync_rule: SYNC_RULE_ASYNC,
            sync_npids: 0,
            sync_pids: [0; MAX_PEERS],
            sync_missing: false,
            membership_acked: 0,
            open_needs_version: 0,
            membership: 0,
            registered_master: false,
            // Decided at the first commit (or worker round): a cluster member starts fenced,
            // it must hear from a majority before it takes writes (it may be an old master
            // coming back after a failover); a server in no cluster is not fenced.
            gate: Setting::Unknown.code(),
            gate_reason: [0; TEXT_LEN],
            lease_until: 0,
            deposed_by: [0; NAME_LEN],
            deposed_term: 0,
            hold_until: 0,
            hold_ready: false,
            stand_until: 0,
            seen_term: 0,
            heartbeat_term: 0,
            promoting: false,
            heartbeats_stopped: false,
            degrades: 0,
            restores: 0,
            elections_won: 0,
            elections_lost: 0,
            cluster_paused: false,
            stand_for_failover: false,
            force_requested: false,
            force_term: 0,
            force_deadline: 0,
            force_removed: [0; ELIGIBLE_LEN],
        }
    }
}

unsafe impl PGRXSharedMemory for KeeperState {}

impl KeeperState {
    pub fn gate_setting(&self) -> Setting {
        Setting::from_code(self.gate)
    }

    /// Every change of the gate goes through here: deposed and stepped down are never undone
    /// (a round already in flight must not reopen what `step_down` or a newer term closed).
    pub fn set_gate(&mut self, s: Setting) {
        self.gate = crate::RULES.gate_then(self.gate_setting(), s).code();
    }

    /// Fenced (a lease is needed and none runs now), saying why.
    pub fn need_lease(&mut self, why: &str) {
        self.set_gate(Setting::Lease);
        put_str(&mut self.gate_reason, why);
    }

    /// Fenced, saying why, and any lease this node held is over.
    pub fn revoke_lease(&mut self, why: &str) {
        self.need_lease(why);
        self.lease_until = 0;
    }

    /// The vote record as mirrored here (valid once `vote_loaded`).
    pub fn record(&self) -> keeper_core::election::VoteRecord {
        keeper_core::election::VoteRecord {
            term: self.term,
            voted_for: Some(get_str(&self.voted_for)).filter(|s| !s.is_empty()),
            elected: self.elected,
            eligible: self
                .eligible_known
                .then(|| get_str(&self.eligible).split_whitespace().map(str::to_string).collect()),
            eligible_term: self.eligible_term,
        }
    }
}

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

/// Milliseconds of CLOCK_BOOTTIME: the same clock in every process of this host, never set
/// back, and (unlike CLOCK_MONOTONIC) still counting while the host is suspended, so a lease
/// never looks valid after a resume. Leases and vote holds are measured on it.
pub fn boot_ms() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// Remember a term seen in a heartbeat, a vote request or a vote reply: the next election
/// goes past it.
pub fn note_term(term: u64) {
    let mut st = STATE.exclusive();
    st.seen_term = st.seen_term.max(term);
}

pub use keeper_core::gate::Gate;

/// What the commit gate says right now.
pub fn gate() -> Gate {
    if !available() {
        return Gate::Open;
    }
    let known = {
        let st = STATE.share();
        (st.gate_setting() != Setting::Unknown).then(|| gate_of(&st))
    };
    known.unwrap_or_else(|| gate_locked(&mut STATE.exclusive()))
}

/// The gate is open right now (the reply gate's fast path: no allocation, one shared lock).
/// False also when nothing is decided yet: the caller then asks [`gate`].
pub fn gate_open_now() -> bool {
    if !available() {
        return true;
    }
    let st = STATE.share();
    match st.gate_setting() {
        Setting::Open => true,
        Setting::Lease => boot_ms() < st.lease_until,
        _ => false,
    }
}

/// The gate, with the state already locked exclusively (resolves `Setting::Unknown`).
pub fn gate_locked(st: &mut KeeperState) -> Gate {
    if st.gate_setting() == Setting::Unknown {
        resolve_membership(st);
    }
    gate_of(st)
}

/// No worker round yet since the server started: a node that ever saw itself registered
/// (its vote record exists: the worker writes it at its first registered round) starts
/// fenced; any other server (never in a cluster, or its worker never ran) is not fenced.
fn resolve_membership(st: &mut KeeperState) {
    let me = crate::gucs::node_name();
    let member = me.as_deref().is_some_and(crate::votes::exists);
    // A master deposed before this start stays deposed (a rejoined node starts in recovery).
    let deposed =
        me.as_deref().filter(|_| unsafe { !pg_sys::RecoveryInProgress() }).and_then(crate::votes::load_deposed);
    if let (true, Some((by, term))) = (member, deposed) {
        st.gate = Setting::Deposed.code();
        put_str(&mut st.deposed_by, &by);
        st.deposed_term = term;
    } else if member {
        st.gate = Setting::Lease.code();
        if get_str(&st.gate_reason).is_empty() {
            put_str(
                &mut st.gate_reason,
                "the pg_keeper worker has not yet heard from a majority since this server started",
            );
        }
    } else {
        st.gate = Setting::Open.code();
    }
}

fn gate_of(st: &KeeperState) -> Gate {
    let deposed = get_str(&st.deposed_by);
    st.gate_setting().gate(boot_ms(), st.lease_until, &get_str(&st.gate_reason), (&deposed, st.deposed_term))
}
