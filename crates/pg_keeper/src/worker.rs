//! The background worker: one per server. Decides its mode itself (master mode when not in
//! recovery, standby mode otherwise), polls its peers every keepalive_time with deadlines,
//! and publishes what it sees in shared memory and in its process title.
//!
//! The rules (what a round means, when to act) live in keeper-core; this file gathers the
//! observations and carries out the actions.

use crate::{gucs, probe, registry_sql, shared};
use keeper_core::election::{heartbeat_interval, master_lease, voter_hold};
use keeper_core::gate::Setting;
use keeper_core::settings::Settings;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::ffi::CString;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Master,
    Standby,
    /// Not configured (no pg_keeper.node_name): does nothing until it is set.
    Idle,
    /// pg_keeper.witness = on: votes and answers (through SQL functions), nothing else.
    Witness,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Master => 1,
            Mode::Standby => 2,
            Mode::Idle => 3,
            Mode::Witness => 4,
        }
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_keeper_worker_main(_arg: pg_sys::Datum) {
    crate::gate::IN_KEEPER_WORKER.store(true, std::sync::atomic::Ordering::Relaxed);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // A standby promoted by hand before this worker's first round must not start open.
    if gucs::node_name().is_some() && unsafe { pg_sys::RecoveryInProgress() } {
        shared::STATE.exclusive().need_lease("this node was a standby and holds no lease yet");
    }
    // Said first, kept if the connection fails (FATAL): a fenced commit names the cause.
    let db = gucs::database();
    shared::put_str(
        &mut shared::STATE.exclusive().gate_reason,
        &format!("the pg_keeper worker cannot connect to database \"{db}\" (pg_keeper.database; see the server log)"),
    );
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    // The worker's small catalog queries are no work for the JIT: compiling them took half
    // its CPU (issue 4/7).
    unsafe {
        pg_sys::SetConfigOption(
            c"jit".as_ptr(),
            c"off".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
    shared::put_str(
        &mut shared::STATE.exclusive().gate_reason,
        "the pg_keeper worker has not yet heard from a majority since it started",
    );
    Worker::new().run();
}

/// SIGTERM seen (read without consuming pgrx's flag; set by its handler).
pub(crate) fn shutdown_requested() -> bool {
    unsafe { (&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0 }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn set_title(s: &str) {
    if let Ok(c) = CString::new(s) {
        unsafe { pg_sys::set_ps_display(c.as_ptr()) };
    }
}

pub(crate) struct Worker {
    pub(crate) rt: &'static tokio::runtime::Runtime,
    /// When this worker entered master mode (the sync guard's grace for re-pointing standbys).
    pub(crate) master_since: Instant,
    /// Standby mode: what the other standbys answered when last asked (shown in the status
    /// while rounds do not ask them: `keeper_core::polling::ask_others`).
    pub(crate) last_indirect: Vec<PeerResult>,
    pub(crate) settings: Settings,
    mode: Option<Mode>,
    /// This node's keeper-core state machines (standby mode, the candidacy) and rules.
    pub(crate) keeper: keeper_core::Keeper,
    pub(crate) rounds: u64,
    /// Last process title, to set it only when it changes.
    last_title: String,
    /// Last notable condition logged (a hold, a conflict), to log changes once.
    pub(crate) last_notice: String,
    /// The history has a "fenced" with no "unfenced" after it (master mode).
    pub(crate) fenced_recorded: bool,
    /// after_command started after a promotion, until it exits.
    pub(crate) after_command: Option<std::process::Child>,
    /// The node this standby re-pointed primary_conninfo at.
    pub(crate) following: Option<String>,
    /// Run the next round at once (after a promotion or a re-pointing).
    pub(crate) hurry: bool,
    /// Master mode's synchronous-replication guard (loaded on the first master round).
    pub(crate) sync_guard: Option<keeper_core::sync_guard::SyncGuard>,
    /// What is remembered while synchronous replication is degraded.
    pub(crate) degraded: Option<crate::sync_state::Degraded>,
    /// Master mode rounds (heartbeats) since entering master mode.
    pub(crate) master_rounds: u64,
    /// Run the next round no later than this (an election waiting for a lease to end).
    pub(crate) retry_at: Option<Instant>,
    /// What this round found that needs an operator (status's `attention`), published with
    /// the round's state.
    pub(crate) attention: keeper_core::gate::Attention,
    /// The vote record is on disk (this node's evidence of membership).
    member_recorded: bool,
    /// The membership version of the node_info read this round (the same snapshot).
    pub(crate) membership: keeper_core::membership::Version,
    /// The last node_info read, for a round in which node_info is locked.
    registry: Option<registry_sql::Registry>,
    /// Master mode: the newest membership version every node has reported (a two-node
    /// cluster runs without the lease only at the current one).
    pub(crate) membership_known_to_all: Option<keeper_core::membership::Version>,
    /// Master mode: the eligible sets told to the voters (`keeper_core::eligibility`).
    pub(crate) told: keeper_core::eligibility::Told,
    /// When this worker last started an automatic rejoin (`auto_rejoin.rs`).
    pub(crate) rejoin_started: Option<std::time::Instant>,
    /// The newest term in which this standby streamed from the candidate it voted for.
    pub(crate) candidate_term: u64,
    /// Master mode: the WAL flushed when this server started its master rounds
    /// (`eligibility::read`); None in standby mode.
    pub(crate) ack_floor: Option<u64>,
}

/// Result of one peer's probe in a round, for shared memory.
#[derive(Clone)]
pub(crate) struct PeerResult {
    pub(crate) name: String,
    pub(crate) ok: bool,
    pub(crate) latency: Duration,
    pub(crate) error: String,
}

impl Worker {
    /// The node_info this worker read last.
    pub(crate) fn registry_nodes(&self) -> Vec<keeper_core::Node> {
        self.registry.as_ref().map(|r| r.nodes.clone()).unwrap_or_default()
    }

    fn new() -> Worker {
        Worker {
            rt: probe::runtime(),
            master_since: Instant::now(),
            last_indirect: Vec::new(),
            settings: Settings::default(),
            mode: None,
            keeper: keeper_core::Keeper::new(
                crate::RULES,
                (unsafe { pg_sys::MyProcPid } as u64) << 32
                    ^ shared::boot_ms() as u64
                    ^ std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| u64::from(d.subsec_nanos()).rotate_left(17))
                        .unwrap_or(0),
            ),
            rounds: 0,
            last_title: String::new(),
            last_notice: String::new(),
            fenced_recorded: false,
            after_command: None,
            following: None,
            hurry: false,
            sync_guard: None,
            degraded: None,
            master_rounds: 0,
            retry_at: None,
            attention: Default::default(),

            member_recorded: false,
            membership: 0,
            registry: None,
            membership_known_to_all: None,
            told: Default::default(),
            rejoin_started: None,
            candidate_term: 0,
            ack_floor: None,
        }
    }

    fn run(&mut self) {
        {
            let mut st = shared::STATE.exclusive();
            st.worker_pid = unsafe { pg_sys::MyProcPid };
        }
        log!("pg_keeper: worker started");
        self.load_settings();
        self.init_election_state();
        let mut next_round = Instant::now();
        loop {
            if let Some(at) = self.retry_at.take() {
                next_round = next_round.min(at);
            }
            // After a promotion or a re-pointing (`hurry`), the next round runs at once.
            let wait = if self.hurry { Duration::ZERO } else { next_round.saturating_duration_since(Instant::now()) };
            if !BackgroundWorker::wait_latch(Some(wait)) {
                break;
            }
            let mut reload = BackgroundWorker::sighup_received();
            if reload {
                unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            }
            let (registry_changed, settings_changed) = {
                let mut st = shared::STATE.exclusive();
                let flags = (st.reload_registry, st.reload_settings);
                st.reload_registry = false;
                st.reload_settings = false;
                flags
            };
            reload |= settings_changed;
            if reload {
                self.load_settings();
            }
            self.check_after_command();
            if self.mode == Some(Mode::Standby) {
                if let Some(me) = gucs::node_name() {
                    self.stream_from_candidate(&me);
                }
            }
            // A registry change or new settings start a round at once; otherwise keep time.
            if !(registry_changed || reload || self.hurry) && Instant::now() < next_round {
                continue;
            }
            self.hurry = false;
            // Master mode heartbeats twice per keepalive_time (its lease lasts one).
            next_round = Instant::now()
                + if self.mode == Some(Mode::Master) {
                    heartbeat_interval(self.settings.keepalive_time)
                } else {
                    self.settings.keepalive_time
                };
            self.round();
            if shutdown_requested() {
                break;
            }
        }
        let mut st = shared::STATE.exclusive();
        st.worker_pid = 0;
        st.mode = 0;
        drop(st);
        log!("pg_keeper: worker stopping");
        // Exit code 1: if this was not a server shutdown (pg_terminate_backend, a stray
        // SIGTERM), the postmaster starts the worker again after the restart interval.
        unsafe { pg_sys::proc_exit(1) };
    }

    /// Settings with the seed's aliases resolved; whether the documented names were set
    /// explicitly comes from pg_settings.source.
    fn load_settings(&mut self) {
        let explicit = crate::tx::transaction(|| {
            Spi::connect(|c| {
                let mut time = false;
                let mut count = false;
                let rows = c.select(
                    "SELECT name, source <> 'default' FROM pg_catalog.pg_settings \
                     WHERE name IN ('pg_keeper.keepalive_time', 'pg_keeper.keepalive_count')",
                    None,
                    &[],
                )?;
                for row in rows {
                    let name = row.get::<String>(1)?.unwrap_or_default();
                    let set = row.get::<bool>(2)?.unwrap_or(false);
                    if name.ends_with("time") {
                        time = set;
                    } else {
                        count = set;
                    }
                }
                Ok::<_, pgrx::spi::Error>((time, count))
            })
        })
        .unwrap_or((true, true));
        let (settings, warnings) = gucs::current(explicit.0, explicit.1);
        // No lock wait of the worker's own statements outlasts a fraction of a round.
        let lock_ms = keeper_core::timing::lock_timeout(settings.keepalive_time).as_millis() as i64;
        let set = crate::tx::transaction(|| {
            Spi::connect(|c| {
                c.select("SELECT set_config('lock_timeout', $1, false)", None, &[format!("{lock_ms}ms").into()])
                    .map(|_| ())
            })
        });
        if let Err(e) = set {
            warning!("pg_keeper: cannot set lock_timeout: {e}");
        }
        for w in warnings {
            warning!("pg_keeper: {w}");
        }
        if settings != self.settings || self.rounds == 0 {
            log!(
                "pg_keeper: settings: node_name={}, keepalive_time={}s, keepalive_count={}",
                gucs::node_name().unwrap_or_default(),
                settings.keepalive_time.as_secs_f64(),
                settings.keepalive_count
            );
        }
        self.settings = settings;
    }

    /// Before any vote: this server may have acknowledged a master's lease just before it
    /// stopped, so it honours one whole hold from now; and its term is read from disk.
    fn init_election_state(&mut self) {
        let hold = voter_hold(master_lease(self.settings.keepalive_time));
        {
            let mut st = shared::STATE.exclusive();
            if !st.hold_ready {
                st.hold_until = st.hold_until.max(shared::boot_ms() + hold.as_millis() as i64);
                st.hold_ready = true;
            }
        }
        if let Some(me) = gucs::node_name() {
            // What every node had before a restart (two-node clusters; `votes::load_settled`).
            if let Some(v) = crate::votes::load_settled(&me) {
                self.membership_known_to_all = Some(v);
                let mut st = shared::STATE.exclusive();
                st.membership_acked = st.membership_acked.max(v);
            }
            match crate::votes::current(&me) {
                Ok(r) => log!(
                    "pg_keeper: term {}{}",
                    r.term,
                    r.voted_for.map(|v| format!(", voted for {v}")).unwrap_or_default()
                ),
                Err(e) => warning!("pg_keeper: cannot read the vote record: {e}; this node will not vote"),
            }
        }
    }

    /// Deadline of one probe: below keepalive_time so a round always ends before the next
    /// one is due, and capped so that a long interval never means a long wait on a dead peer.
    pub(crate) fn probe_deadline(&self) -> Duration {
        keeper_core::timing::probe_deadline(self.settings.keepalive_time)
    }

    fn set_mode(&mut self, mode: Mode) {
        if self.mode != Some(mode) {
            match mode {
                Mode::Master => log!("pg_keeper: entering master mode"),
                Mode::Standby => log!("pg_keeper: entering standby mode"),
                Mode::Idle => warning!(
                    "pg_keeper: pg_keeper.node_name is not set; the worker stays idle until it is set and the configuration is reloaded"
                ),
                Mode::Witness => log!("pg_keeper: entering witness mode"),
            }
            self.mode = Some(mode);
            self.master_since = Instant::now();
            self.keeper.enter_mode();
            self.following = None;
            self.sync_guard = None;
            self.master_rounds = 0;
        }
    }

    fn round(&mut self) {
        self.rounds += 1;
        let Some(me) = gucs::node_name() else {
            self.set_mode(Mode::Idle);
            self.publish(Mode::Idle, "pg_keeper.node_name is not set", &[]);
            return;
        };
        let mode = if gucs::WITNESS.get() {
            Mode::Witness
        } else if unsafe { pg_sys::RecoveryInProgress() } {
            Mode::Standby
        } else {
            Mode::Master
        };
        self.set_mode(mode);
        // (a short lock wait: a held lock then costs this round 50 ms, and the last copy serves)
        let read = crate::tx::transaction(|| {
            Spi::connect(|c| {
                crate::plans::select(c, "SELECT set_config('lock_timeout', '50ms', true)")?;
                registry_sql::read_registry(c)
            })
        });
        let read = match (read, self.registry.clone()) {
            // A lock on node_info (ACCESS EXCLUSIVE on the master, or replayed here): go on with
            // the last copy. No change can commit while that lock is held, so it is at most the
            // one change behind that any node may be (keeper_core::membership); a master whose
            // copy is older than a change it made fences (open_needs_version).
            (Err(e), Some(last)) if e.is_lock_timeout() => {
                self.notice_once(format!("pg_keeper: node_info is locked ({e}); using the last copy read"));
                Ok(Some(last))
            }
            (r, _) => r,
        };
        let nodes = match read {
            Ok(Some(r)) => {
                self.membership = r.membership;
                {
                    let mut st = shared::STATE.exclusive();
                    st.membership = r.membership;
                    st.cluster_paused = r.paused;
                }
                self.registry = Some(r.clone());
                r.nodes
            }
            Ok(None) => {
                // No extension in pg_keeper.database: a server in no cluster, unless it was a
                // member (its vote record exists: pg_keeper.database changed?): then fenced.
                let mut st = shared::STATE.exclusive();
                match keeper_core::gate::unregistered(crate::votes::exists(&me)) {
                    Setting::Open => st.set_gate(Setting::Open),
                    _ => st.revoke_lease(&format!(
                        "pgkeeper is not installed in database \"{}\" (pg_keeper.database)",
                        gucs::database()
                    )),
                }
                drop(st);
                self.publish(mode, "extension not created", &[]);
                return;
            }
            // (locked before any copy was read: nothing to decide on this round)
            Err(e) if e.is_lock_timeout() => {
                self.notice_once(format!("pg_keeper: node_info is locked ({e}); skipping this round"));
                return;
            }
            Err(e) => {
                warning!("pg_keeper: cannot read pgkeeper.node_info: {e}");
                return;
            }
        };
        // After a forced failover, master mode counts without the nodes it removed.
        let all = nodes.clone();
        let nodes = if mode == Mode::Master { crate::forced::view(&me, nodes) } else { nodes };
        shared::STATE.exclusive().registered_master = nodes.iter().any(|n| n.name == me && n.is_master);
        if !nodes.iter().any(|n| n.name == me) {
            // Not (yet) part of a cluster: nothing to fence. Registration happens on the
            // first node before any standby exists. But a node that was a member (its vote
            // record exists) and is missing now was deleted: written to while deleted (a
            // standby elected on a stale node_info that then replayed its own deletion, or
            // promoted by hand), it could take commits beside the real master: fenced.
            let mut st = shared::STATE.exclusive();
            match keeper_core::gate::unregistered(crate::votes::exists(&me)) {
                Setting::Open => st.set_gate(Setting::Open),
                _ => st.revoke_lease("this node is not in its node_info (deleted with del_node?)"),
            }
            drop(st);
            self.publish(mode, &format!("not registered ({} nodes in node_info)", nodes.len()), &[]);
            return;
        }
        // Registered: from now on this server starts fenced after every restart.
        if !self.member_recorded {
            match crate::votes::ensure_stored(&me) {
                Ok(()) => self.member_recorded = true,
                Err(e) => warning!("pg_keeper: cannot write the vote record: {e}"),
            }
        }
        match mode {
            Mode::Master => {
                self.master_round(&me, &nodes);
                if shared::gate_open_now() {
                    crate::forced::finish(&me, &all);
                }
            }
            Mode::Standby => self.standby_round(&me, &nodes),
            Mode::Witness => {
                let term = shared::STATE.share().term;
                self.publish(Mode::Witness, &format!("witness: term {term}, {} nodes in node_info", nodes.len()), &[]);
            }
            Mode::Idle => {}
        }
    }

    /// Log how after_command ended, once it has.
    fn check_after_command(&mut self) {
        if let Some(child) = self.after_command.as_mut() {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    log!("pg_keeper: after_command finished successfully")
                }
                Ok(Some(status)) => warning!("pg_keeper: after_command failed: {status}"),
                Ok(None) => return,
                Err(e) => warning!("pg_keeper: after_command: {e}"),
            }
            self.after_command = None;
        }
    }

    /// Log `msg` at LOG level once, until another notice replaces it.
    pub(crate) fn notice_once(&mut self, msg: String) {
        if self.last_notice != msg {
            log!("{msg}");
            self.last_notice = msg;
        }
    }

    pub(crate) fn publish(&mut self, mode: Mode, state: &str, peers: &[PeerResult]) {
        let now = now_ms();
        {
            let mut st = shared::STATE.exclusive();
            st.mode = mode.code();
            shared::put_str(&mut st.state, state);
            st.attention = std::mem::take(&mut self.attention).code();
            st.failed_rounds = self.keeper.standby.failed_rounds;
            st.rounds = self.rounds;
            st.last_round_ms = now;
            // Keep last_ok of peers we already knew.
            let old = st.peers;
            let old_n = st.npeers as usize;
            st.npeers = peers.len().min(shared::MAX_PEERS) as u32;
            for (i, p) in peers.iter().take(shared::MAX_PEERS).enumerate() {
                let prev_ok =
                    old[..old_n].iter().find(|o| shared::get_str(&o.name) == p.name).map(|o| o.last_ok_ms).unwrap_or(0);
                let slot = &mut st.peers[i];
                shared::put_str(&mut slot.name, &p.name);
                slot.result = if p.ok { 1 } else { 2 };
                slot.latency_us = p.latency.as_micros().min(u32::MAX as u128) as u32;
                slot.last_ok_ms = if p.ok { now } else { prev_ok };
                shared::put_str(&mut slot.error, &p.error);
            }
        }
        let title = format!("{} ({state})", shared::mode_name(mode.code()));
        if title != self.last_title {
            set_title(&title);
            self.last_title = title;
        }
    }
}
