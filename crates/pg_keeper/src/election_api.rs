//! The SQL face of elections and leases (issue 5/5), called by other nodes' workers with
//! parameters: `_poll` (state, and master mode's heartbeat), `request_vote`, `_witness_sync`;
//! and `stand_for_election` for a planned switchover. The rules are keeper-core's
//! (`keeper_core::election`); this file reads the facts and persists the record.

use crate::api::{fail, required};
use crate::RULES;
use crate::{gucs, registry_sql, shared, votes};
use keeper_core::election::{
    decide_vote, on_heartbeat, release_applies, votes_as_master, Refusal, Term, VoteRequest, VoterView,
};
use keeper_core::gate::Setting;
use keeper_core::lsn::Position;
use keeper_core::registry::diff;
use keeper_core::{lsn, Node};
use pgrx::prelude::*;
use std::time::Duration;

/// This server's node name, for functions that need it and the shared state.
fn cluster_node_or_fail() -> String {
    let me = gucs::node_name().unwrap_or_else(|| {
        fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_keeper.node_name is not set on this server",
            None,
        )
    });
    if !shared::available() {
        fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_keeper is not in shared_preload_libraries",
            None,
        );
    }
    me
}

/// For the node-to-node functions: no lock wait in this transaction outlasts a fraction of
/// the caller's round (`keeper_core::timing::lock_timeout`), e.g. while this standby replays
/// an AccessExclusiveLock on node_info. Read-only SPI: works on a hot standby.
pub fn bound_lock_waits() {
    let k = Duration::from_secs_f64(gucs::KEEPALIVE_TIME.get().max(gucs::MIN_KEEPALIVE_TIME));
    let ms = keeper_core::timing::lock_timeout(k).as_millis() as i64;
    let value = std::ffi::CString::new(format!("{ms}ms")).expect("no NUL in a number");
    // As `SET LOCAL lock_timeout` (set_config(..., true)), without a query to parse.
    let ok = unsafe {
        pg_sys::set_config_option(
            c"lock_timeout".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        )
    };
    if ok <= 0 {
        fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "pg_keeper: cannot set lock_timeout", None);
    }
}

/// The postmaster is shutting down (postmaster.pid's status line says `stopping`). The
/// postmaster rewrites the file to change that line: read it only when its modification
/// time changed (a stat per `_poll`, not a read).
fn shutting_down() -> bool {
    thread_local! {
        static LAST: std::cell::Cell<Option<(std::time::SystemTime, bool)>> = const { std::cell::Cell::new(None) };
    }
    let dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
    let path = format!("{dir}/postmaster.pid");
    let Ok(mtime) = std::fs::metadata(&path).and_then(|m| m.modified()) else { return false };
    if let Some((t, stopping)) = LAST.with(|l| l.get()) {
        if t == mtime {
            return stopping;
        }
    }
    let stopping = std::fs::read_to_string(&path)
        .map(|pid| pid.lines().nth(7).is_some_and(|l| l.starts_with("stopping")))
        .unwrap_or(false);
    LAST.with(|l| l.set(Some((mtime, stopping))));
    stopping
}

fn in_recovery() -> bool {
    unsafe { pg_sys::RecoveryInProgress() }
}

/// WAL this server has received, with its timeline: the newest of received and replayed (a
/// standby that restarted has replayed WAL it did not receive in this life). None on a master.
pub fn received_position() -> Option<Position> {
    if !in_recovery() {
        return None;
    }
    let (mut rtli, mut ptli) = (0u32, 0u32);
    let received = unsafe { pg_sys::GetWalRcvFlushRecPtr(std::ptr::null_mut(), &mut rtli) };
    let replayed = unsafe { pg_sys::GetXLogReplayRecPtr(&mut ptli) };
    let pos =
        if received > replayed && rtli != 0 { Position::new(rtli, received) } else { Position::new(ptli, replayed) };
    Some(pos)
}

/// On a node out of recovery: where its timeline began (the switch point in its newest
/// timeline history file, on the parent timeline), else its flushed WAL on its timeline
/// (conservative).
fn timeline_start() -> Result<Position, pgrx::spi::Error> {
    let (history, flushed, tli) = Spi::connect(|c| {
        let row = c
            .select(
                "SELECT pg_catalog.pg_read_file('pg_wal/' || t || '.history', 0, 1048576, true), \
                 pg_catalog.pg_current_wal_flush_lsn()::text, ('x' || t)::bit(32)::bigint \
                 FROM (SELECT substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8) AS t) s",
                None,
                &[],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((row.get::<String>(1)?, row.get::<String>(2)?, row.get::<i64>(3)?))
    })?;
    let flushed = Position::new(tli.unwrap_or(0) as u32, flushed.and_then(|s| lsn::parse(&s)).unwrap_or(u64::MAX));
    Ok(history.as_deref().and_then(lsn::last_switch).map(|(t, l)| Position::new(t, l)).unwrap_or(flushed))
}

/// This node's answer to a vote request, the record persisted before it. Needs a
/// transaction (SPI reads node_info and the WAL position). Used for the candidate's own vote
/// too, so that it obeys the same rules. `dry` (a pre-vote): the same rules, nothing persisted
/// or adopted, so a candidate that cannot win pushes no term up.
pub fn answer_vote(
    me: &str,
    req: &VoteRequest,
    dry: bool,
) -> Result<(Result<(), Refusal>, Term, Option<Position>), String> {
    let witness = gucs::WITNESS.get();
    let registry = Spi::connect(registry_sql::read_registry).map_err(|e| e.to_string())?.unwrap_or_default();
    let nodes = registry.nodes;
    let is_master = !in_recovery() && !witness;
    let mut mine = if witness { None } else { received_position() };
    // A writable node that may not hold the lease votes like a standby (below); its WAL up to
    // where its timeline began is what it had received (every commit acknowledged with it as
    // the synchronous standby included): a candidate behind that must be refused.
    if is_master {
        mine = Some(timeline_start().map_err(|e| e.to_string())?);
    }
    let registered_master = nodes.iter().any(|n| n.name == me && n.is_master);
    let (answer, term) = votes::with_record(me, |rec, st| {
        if !st.hold_ready {
            // Right after a start the worker has not yet set the hold that covers a lease
            // this server may have acknowledged before it stopped.
            return ((Err(Refusal::LeaseHeld { left_ms: 0 }), rec.term), rec.clone());
        }
        let view = VoterView {
            me,
            nodes: &nodes,
            // A master votes only if it may never hold a lease (promoted outside an
            // election): it has none to protect, and a cluster of three must still be able to
            // replace the real master with the other standby. Between winning and the end of
            // its promotion a candidate votes like a master.
            is_master: votes_as_master(is_master, RULES.may_hold_lease(rec, registered_master), st.promoting),
            my_lsn: mine.map_or(0, |p| p.lsn),
            my_tli: mine.map_or(0, |p| p.tli),
            hold_left: Duration::from_millis((st.hold_until - shared::boot_ms()).max(0) as u64),
            membership: registry.membership,
        };
        st.seen_term = st.seen_term.max(req.term);
        let (answer, new) = decide_vote(rec, req, &view);
        if dry {
            return ((answer, rec.term), rec.clone());
        }
        ((answer, new.term), new)
    })?;
    Ok((answer, term, mine))
}

/// A node's state for pollers; with `from_node`, `term` and `lease_ms` it is master mode's
/// heartbeat, and this node refuses to vote until the lease (plus a margin) has surely ended.
/// The term is read, the hold set and the answer built in one critical section (the one
/// `request_vote` decides in): a vote granted in between would let the master count a node
/// that already voted in a newer term.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn _poll(
    from_node: default!(Option<&str>, "NULL"),
    term: default!(Option<i64>, "NULL"),
    lease_ms: default!(Option<i64>, "NULL"),
    sync_standbys: default!(Option<Vec<String>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(in_recovery, bool),
        name!(fenced, bool),
        name!(term, i64),
        name!(witness, bool),
        name!(deposed, bool),
        name!(elected, bool),
        name!(membership, i64),
    ),
> {
    bound_lock_waits();
    if shutting_down() {
        // A smart shutdown waits for every session to end, pg_keeper's kept ones included:
        // this answer makes the caller drop its connection, and its next probe, refused,
        // counts as failed (as when every probe connected afresh).
        fail(PgSqlErrorCode::ERRCODE_CANNOT_CONNECT_NOW, "the database system is shutting down", None);
    }
    let heartbeat = match (from_node, term, lease_ms) {
        (Some(_), Some(t), Some(ms)) => {
            if !(1..=3_600_000).contains(&ms) || t < 0 {
                fail(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    "invalid heartbeat (term >= 0, 1 <= lease_ms <= 3600000)",
                    None,
                );
            }
            if let Some(bad) = sync_standbys.iter().flatten().find(|n| keeper_core::registry::check_name(n).is_err()) {
                fail(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("invalid node name {bad:?} in sync_standbys"),
                    None,
                );
            }
            Some((t as u64, Duration::from_millis(ms as u64)))
        }
        _ => None,
    };
    let recovery = in_recovery();
    let witness = gucs::WITNESS.get();
    let mut new_master = false;
    let (my_term, gate, elected, membership) = match gucs::node_name() {
        Some(me) if shared::available() => votes::with_record(&me, |rec, st| {
            let mut new = rec.clone();
            if let Some((t, lease)) = heartbeat {
                st.seen_term = st.seen_term.max(t);
                new_master = t > st.heartbeat_term;
                st.heartbeat_term = st.heartbeat_term.max(t);
                // The hold, and who may be elected (persisted, when it changed, before the
                // answer that lets the master count this node: keeper_core::eligibility).
                let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
                let eligible = sync_standbys.clone().map(|mut v| {
                    v.sort();
                    v.dedup();
                    v
                });
                let (hold, told) =
                    on_heartbeat(rec, t, lease, ms(shared::boot_ms()), ms(st.hold_until), RULES.to_persist(eligible));
                st.hold_until = hold.as_millis() as i64;
                new = told;
            }
            let answer =
                (rec.term, shared::gate_locked(st), RULES.may_hold_lease(rec, st.registered_master), st.membership);
            (answer, new)
        })
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, format!("pg_keeper vote record: {e}"), None)),
        _ => (0, shared::Gate::Open, false, 0),
    };
    if new_master && recovery {
        shared::notify_worker(true, false);
    }
    let fenced = !recovery && !witness && gate != shared::Gate::Open;
    let deposed = !recovery && matches!(gate, shared::Gate::Deposed { .. } | shared::Gate::SteppedDown);
    TableIterator::once((
        recovery,
        fenced,
        my_term as i64,
        witness,
        deposed,
        !recovery && !witness && elected,
        membership as i64,
    ))
}

/// Having voted for `candidate` (a standby, before it can win): take WAL from it rather than
/// from the old master, at once and before answering (see Worker::stream_from_candidate,
/// the worker's fallback, for why). ALTER SYSTEM from this transaction; a failure is logged
/// and changes nothing else.
fn stream_from_candidate(me: &str, candidate: &str) {
    if !in_recovery() || gucs::WITNESS.get() || candidate == me {
        return;
    }
    let node = Spi::connect(registry_sql::read_nodes)
        .ok()
        .flatten()
        .and_then(|nodes| nodes.into_iter().find(|n| n.name == candidate && !n.is_witness));
    let Some(node) = node else { return };
    let Ok(value) = crate::standby::primary_conninfo_for(me, &node) else { return };
    if crate::actions::config_option(c"primary_conninfo") == value {
        return;
    }
    // (a PostgreSQL ERROR here fails this request after the vote was persisted: the
    // candidate does not count it; catching it without a subtransaction would leave locks)
    match crate::actions::alter_system_here("primary_conninfo", Some(&value)) {
        Ok(()) => {
            crate::actions::reload_config();
            log!("pg_keeper: voted for {candidate}: streaming from it rather than from the old master");
        }
        Err(e) => warning!("pg_keeper: cannot stream from {candidate}: {e}"),
    }
    // and the worker re-checks at once
    shared::notify_worker(false, false);
}

/// Grant or refuse this node's vote to `candidate` for `term`. The answer is persisted
/// (fsynced) before it is returned. See keeper_core::election::decide_vote for the rules.
/// `dry_run`: a pre-vote, answered by the same rules and persisting nothing.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn request_vote(
    candidate: Option<&str>,
    term: Option<i64>,
    candidate_lsn: Option<&str>,
    dry_run: default!(Option<bool>, "false"),
    candidate_membership: default!(Option<i64>, "0"),
    candidate_tli: default!(Option<i64>, "0"),
) -> TableIterator<
    'static,
    (name!(granted, bool), name!(term, i64), name!(lsn, Option<String>), name!(reason, String), name!(tli, i64)),
> {
    let candidate = required(candidate, "candidate");
    let Some(term) = term else { fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "term must not be NULL", None) };
    let lsn_text = required(candidate_lsn, "candidate_lsn");
    if term < 1 {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("term must be at least 1, not {term}"), None);
    }
    let Some(candidate_lsn) = lsn::parse(lsn_text) else {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("invalid WAL position \"{lsn_text}\""), None)
    };
    if let Err(e) = keeper_core::registry::check_name(candidate) {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string(), None);
    }
    let me = cluster_node_or_fail();
    let Some(dry) = dry_run else {
        fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "dry_run must not be NULL", None)
    };
    let membership = match candidate_membership {
        Some(m) if m >= 0 => m as u64,
        Some(m) => fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("candidate_membership must be at least 0, not {m}"),
            None,
        ),
        None => fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "candidate_membership must not be NULL", None),
    };
    let candidate_tli = match candidate_tli {
        Some(t) if (0..=u32::MAX as i64).contains(&t) => t as u32,
        Some(t) => fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("invalid timeline {t}"), None),
        None => fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "candidate_tli must not be NULL", None),
    };
    bound_lock_waits();
    let req = VoteRequest {
        term: term as u64,
        candidate: candidate.to_string(),
        candidate_lsn,
        candidate_tli,
        candidate_membership: membership,
    };
    let (answer, now_term, mine) = answer_vote(&me, &req, dry)
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_IO_ERROR, format!("pg_keeper: cannot vote: {e}"), None));
    let reason = match &answer {
        Ok(()) => {
            if !dry {
                log!("pg_keeper: voted for {candidate} in term {term}");
                stream_from_candidate(&me, candidate);
            }
            String::new()
        }
        Err(r) => r.to_string(),
    };
    TableIterator::once((
        answer.is_ok(),
        now_term as i64,
        mine.map(|p| lsn::format(p.lsn)),
        reason,
        mine.map_or(0, |p| p.tli as i64),
    ))
}

/// Planned switchover: make this standby stand for election at its worker's next rounds (for
/// 30 s, or until it is elected), whether or not the master answers. It still needs a majority of votes, which nodes grant
/// only once the old master's lease has surely ended. Returns false when no worker runs.
/// `failover`: asked by `pgkeeper failover --to` (the master is gone), not a switchover: the
/// history says so.
#[pg_extern(volatile, parallel_unsafe)]
fn stand_for_election(failover: default!(Option<bool>, "false")) -> bool {
    if !in_recovery() {
        fail(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "stand_for_election runs on a standby", None);
    }
    if !shared::available() {
        return false;
    }
    {
        let mut st = shared::STATE.exclusive();
        st.stand_until = shared::boot_ms() + 30_000;
        st.stand_for_failover = failover.unwrap_or(false);
    }
    // (the registry flag makes the worker run a round at once)
    shared::notify_worker(true, false)
}

/// Planned switchover, on the master: close the commit gate until the next restart (commits
/// fail from now on), let the worker finish its round without sending heartbeats, then
/// release every node's vote hold, so that the target can be elected at once. Safe because
/// the lease those holds protect no longer matters: this node takes no write anyway.
/// Returns how many other nodes released their hold.
/// `to_node`: the switchover's target. It becomes eligible under synchronous replication on
/// this node and on every node that releases its hold (the switchover makes sure it has
/// all of this master's WAL before it stands; this master acknowledges nothing from now on).
#[pg_extern(volatile, parallel_unsafe)]
fn step_down(to_node: default!(Option<&str>, "NULL")) -> i32 {
    if in_recovery() || gucs::WITNESS.get() {
        fail(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "step_down runs on the master", None);
    }
    let me = cluster_node_or_fail();
    {
        let st = shared::STATE.share();
        if st.vote_loaded && !RULES.may_hold_lease(&st.record(), st.registered_master) {
            // Its release would end holds that protect the real master's lease.
            fail(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "step_down runs on the elected master; this node was promoted outside an election",
                Some("Run it on the master named in pgkeeper.node_info."),
            );
        }
    }
    if let Some(t) = to_node {
        if let Err(e) = keeper_core::registry::check_name(t) {
            fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string(), None);
        }
    }
    let term = {
        let mut st = shared::STATE.exclusive();
        st.set_gate(Setting::SteppedDown);
        st.heartbeats_stopped = false;
        st.term
    };
    if let Some(t) = to_node {
        if let Err(e) = make_eligible(&me, t, term) {
            warning!("pg_keeper: {e}");
        }
    }
    log!("pg_keeper: stepping down for a planned switchover: commits are refused from now on");
    let to: Vec<&str> = [me.as_str()].into_iter().chain(to_node).collect();
    crate::history::record(keeper_core::history::Kind::SteppedDown, term, &to, "planned switchover");
    // Wake the worker and wait for a round that saw the flag (it sends no heartbeat); a
    // round in progress ends within its probe deadline.
    shared::notify_worker(true, false);
    let t = std::time::Instant::now();
    loop {
        let st = *shared::STATE.share();
        if st.heartbeats_stopped || st.worker_pid == 0 || t.elapsed() > keeper_core::timing::STEP_DOWN_ROUND_WAIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        pg_sys::check_for_interrupts!();
    }
    let nodes = Spi::connect(registry_sql::read_nodes)
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
        .unwrap_or_default();
    let db = gucs::database();
    let deadline = keeper_core::timing::RELEASE_DEADLINE;
    let futs = nodes.iter().filter(|n| n.name != me).map(|n| {
        let cfg = crate::probe::config(&n.conninfo, Some(&db));
        let me = me.clone();
        async move { crate::probe::release(cfg?, deadline, &me, term, to_node).await }
    });
    let results = crate::probe::runtime().block_on(futures_util::future::join_all(futs));
    results.iter().filter(|r| r.is_ok()).count() as i32
}

/// The other side of step_down: the master `from_node` of `term` takes no more writes, so
/// the hold its heartbeats put on this node's vote ends now.
#[pg_extern(volatile, parallel_unsafe)]
fn _release(from_node: Option<&str>, term: Option<i64>, candidate: default!(Option<&str>, "NULL")) -> bool {
    let from = required(from_node, "from_node");
    let Some(term) = term else { fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "term must not be NULL", None) };
    let Some(me) = gucs::node_name() else { return false };
    if !shared::available() {
        return false;
    }
    let my_term = votes::current(&me).map(|r| r.term).unwrap_or(u64::MAX);
    if !release_applies(term, my_term) {
        return false;
    }
    if let Some(c) = candidate {
        if keeper_core::registry::check_name(c).is_err() {
            return false;
        }
        if let Err(e) = make_eligible(&me, c, term as u64) {
            warning!("pg_keeper: {e}");
            return false;
        }
    }
    let now = shared::boot_ms();
    shared::STATE.exclusive().hold_until = now;
    log!("pg_keeper: {from} stepped down (term {term}): vote hold released");
    true
}

/// Add `who` to this node's eligible set, as the master of `term` says
/// (`VoteRecord::with_target`).
fn make_eligible(me: &str, who: &str, term: Term) -> Result<(), String> {
    votes::with_record(me, |rec, _| ((), rec.with_target(who, term)))
}

/// On a witness: replace the local copy of node_info with the master's rows. Returns the
/// number of rows changed.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
fn _witness_sync(
    seqnos: Vec<i32>,
    names: Vec<String>,
    conninfos: Vec<String>,
    masters: Vec<bool>,
    nexts: Vec<bool>,
    syncs: Vec<bool>,
    witnesses: Vec<bool>,
    membership: default!(Option<i64>, "NULL"),
) -> i32 {
    if !gucs::WITNESS.get() {
        fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "this server is not a witness (pg_keeper.witness)",
            None,
        );
    }
    let n = seqnos.len();
    if [names.len(), conninfos.len(), masters.len(), nexts.len(), syncs.len(), witnesses.len()].iter().any(|l| *l != n)
    {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "all arrays must have the same length", None);
    }
    let new: Vec<Node> = (0..n)
        .map(|i| Node {
            seqno: seqnos[i],
            name: names[i].clone(),
            conninfo: conninfos[i].clone(),
            is_master: masters[i],
            is_nextmaster: nexts[i],
            is_sync: syncs[i],
            is_witness: witnesses[i],
        })
        .collect();
    bound_lock_waits();
    Spi::connect_mut(|c| {
        c.update("LOCK TABLE pgkeeper.node_info IN SHARE ROW EXCLUSIVE MODE", None, &[])?;
        let old = registry_sql::read_nodes(c)?.unwrap_or_default();
        let changes = diff(&old, &new);
        let _guard = registry_sql::WriteGuard::open();
        registry_sql::apply(c, &changes)?;
        // The master's membership version, never going back.
        if let Some(v) = membership {
            c.update("UPDATE pgkeeper.membership SET version = $1 WHERE version < $1", None, &[v.into()])?;
        }
        Ok::<_, pgrx::spi::Error>(changes.len() as i32)
    })
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
}
