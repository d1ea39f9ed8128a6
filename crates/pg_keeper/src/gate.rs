//! The commit gate: how a master that lost its lease (or was deposed) acknowledges no write.
//!
//! A transaction callback, registered in every backend through `_PG_init`, runs just before a
//! client's commit (and PREPARE TRANSACTION) writes its commit record. When the transaction
//! wrote something and the gate is not open, the commit waits (fenced: the lease may come
//! back, and then it proceeds; it gives up with an ERROR after about
//! `(keepalive_count + 2) × keepalive_time`) or fails at once (deposed: another node was
//! elected in a newer term; or stepped down for a switchover).
//! Nothing is written before the gate, so a commit that never passes it is simply rolled
//! back: other sessions never see it, and no client is told it succeeded.
//!
//! Why this and not the alternatives: a `synchronous_standby_names` nobody matches lets
//! sessions with `synchronous_commit = local` or `off` through, and a commit waiting there is
//! already visible to readers; stopping the server (Patroni's demote) takes seconds and
//! cannot be undone when the partition heals a moment later. The gate costs one shared-memory
//! read per writing commit.
//!
//! `COMMIT PREPARED` and `ROLLBACK PREPARED` pass the same gate, through a ProcessUtility
//! hook, before they decide anything: the prepared transaction is on the standbys too, and
//! the master elected there decides its fate; a fenced old master must not decide it
//! differently and tell its client so.
//!
//! Gated processes: every process that can commit a transaction with an XID, but pg_keeper's
//! own worker (it records the cluster's changes while fenced). In PostgreSQL 15 those are
//! client backends; WAL senders of `replication=database` connections, which run SQL;
//! background workers (logical replication apply workers, pg_cron jobs, ...: a fenced
//! subscriber stops applying, and the publisher's changes go to the master that holds the
//! lease); autovacuum workers (ANALYZE writes pg_statistic). Parallel workers never assign an
//! XID (their leader commits), and the other auxiliary processes (startup, checkpointer,
//! background writer, WAL writer and receiver, archiver, logger) run no transactions.
//!
//! After the commit: the commit record, its flush, the synchronous-replication wait and the
//! reply to the client all come after PRE_COMMIT. A master frozen in between (SIGSTOP, a
//! stalled disk, a descheduled VM) could tell its client "committed" after a standby was
//! elected. So once the commit is durable (XACT_EVENT_COMMIT / PREPARE, before the reply is
//! even written) the gate is read again, waiting for a lost lease to come back as at the
//! gate; deposed, stepped down or still fenced after that wait, the client gets no reply at
//! all: its connection is shut down and the session ends, so the outcome is unknown to it, as
//! after a crash, never "committed". The same holds when the synchronous-replication wait was
//! cancelled (PostgreSQL would otherwise answer COMMIT with a WARNING). And the reply itself
//! is written later still (at the end of the command): every write to the client until it
//! is out asks the gate again (csrc/reply.c, [`reply_check`]), so that a master frozen after
//! the check does not say "COMMIT" once thawed.

use crate::{gucs, shared};
use keeper_core::gate::Setting;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

pub fn register() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(on_utility);
    }
}

/// Whether this process is one whose commits the gate guards (see the module comment): any
/// but pg_keeper's own worker, on a server that is part of a cluster as a data node.
fn guarded_process() -> bool {
    // Not part of a cluster (no node name), or a witness: nothing to fence.
    !IN_KEEPER_WORKER.load(Ordering::Relaxed) && gucs::node_name().is_some() && !gucs::WITNESS.get()
}

/// This transaction passed the gate before writing its commit (or COMMIT/ROLLBACK PREPARED):
/// the gate is read again once the commit is durable.
static PASSED_GATE: AtomicBool = AtomicBool::new(false);

/// A commit of this backend was made durable and checked, and its acknowledgement is not
/// written to the client yet: csrc/reply.c asks [`reply_check`] before each write.
static ACK_PENDING: AtomicBool = AtomicBool::new(false);
/// Since then ReadyForQuery was buffered: the commit's reply is in the buffer, and the next
/// flush hands it over. (A flush before it, of a NOTICE sent during the commit, must not
/// end the check.)
static REPLY_BUFFERED: AtomicBool = AtomicBool::new(false);
static IN_REPLY_CHECK: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    fn pgk_install_reply_gate(
        check: extern "C" fn(flushing: std::ffi::c_int, msgtype: std::ffi::c_int) -> std::ffi::c_int,
    );
}

/// Before a write to the client (`flushing`: the buffered replies go out now): while a
/// commit awaits its acknowledgement, write only if the gate is open (waiting for a lost
/// lease as after the commit). The check after the commit and the write of its reply are
/// apart (PostgreSQL writes CommandComplete and ReadyForQuery out at the end of the
/// command): a master frozen in between must not tell its client "COMMIT" once a standby may
/// have been elected. 0: nothing is written, and the session ends.
extern "C" fn reply_check(flushing: std::ffi::c_int, msgtype: std::ffi::c_int) -> std::ffi::c_int {
    if !ACK_PENDING.load(Ordering::Relaxed) || IN_REPLY_CHECK.swap(true, Ordering::Relaxed) {
        return 1;
    }
    let open = lease_after_commit();
    IN_REPLY_CHECK.store(false, Ordering::Relaxed);
    if open {
        if flushing == 0 && msgtype == b'Z' as std::ffi::c_int {
            REPLY_BUFFERED.store(true, Ordering::Relaxed);
        } else if flushing != 0 && REPLY_BUFFERED.load(Ordering::Relaxed) {
            // The reply goes out now, while this node still holds the lease. (A write that
            // then blocks on a client that does not read may finish later: out of reach.)
            ACK_PENDING.store(false, Ordering::Relaxed);
            REPLY_BUFFERED.store(false, Ordering::Relaxed);
        }
        return 1;
    }
    ACK_PENDING.store(false, Ordering::Relaxed);
    withhold_acknowledgement();
    0
}

/// This transaction changes the membership to this version (0: it does not). See
/// [`membership_change_commits`].
static MEMBERSHIP_CHANGE: AtomicU64 = AtomicU64::new(0);
/// `open_needs_version` before this transaction raised it, to put back if it aborts after
/// its PRE_COMMIT (u64::MAX: not raised). The node_info lock serializes such transactions.
static OPEN_NEEDS_BEFORE: AtomicU64 = AtomicU64::new(u64::MAX);

/// add_node / del_node: this transaction makes membership version `version`. At its
/// PRE_COMMIT, atomically with passing the gate: a gate open without a lease (two data nodes)
/// closes, and only a round that read `version` may open it again; the commit itself passes
/// as it would have a moment before, and its acknowledgement waits for a lease like any other.
pub fn membership_change_commits(version: u64) {
    MEMBERSHIP_CHANGE.store(version, Ordering::Relaxed);
    CHANGE_SUBXACT.store(unsafe { pg_sys::GetCurrentSubTransactionId() }, Ordering::Relaxed);
}

/// The subtransaction that made the membership change: rolled back (ROLLBACK TO SAVEPOINT, an
/// EXCEPTION block), the change is gone and must not close the gate at commit.
static CHANGE_SUBXACT: AtomicU32 = AtomicU32::new(0);

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB
        && MEMBERSHIP_CHANGE.load(Ordering::Relaxed) != 0
        && my_subid <= CHANGE_SUBXACT.load(Ordering::Relaxed)
    {
        MEMBERSHIP_CHANGE.store(0, Ordering::Relaxed);
    }
}

/// The transaction has an XID: it wrote something.
fn has_xid() -> bool {
    let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() };
    xid != pg_sys::InvalidTransactionId
}

/// At PRE_COMMIT of a membership change: true when it found the gate open (and closed it).
fn close_open_gate(version: u64) -> bool {
    if !shared::available() {
        return false;
    }
    let mut st = shared::STATE.exclusive();
    OPEN_NEEDS_BEFORE.store(st.open_needs_version, Ordering::Relaxed);
    st.open_needs_version = st.open_needs_version.max(version);
    let open = shared::gate_locked(&mut st) == shared::Gate::Open && st.gate_setting() == Setting::Open;
    if open {
        st.revoke_lease("a membership change is being made");
    }
    open
}

/// Set in the pg_keeper worker's process: its own writes (node_info) are not gated.
pub static IN_KEEPER_WORKER: AtomicBool = AtomicBool::new(false);

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

// PostgreSQL's own function, declared here unwrapped: pgrx's binding would catch every error
// of every utility statement and re-raise it as a copy without its CONTEXT, cursor position
// and table/column/constraint fields.
unsafe extern "C-unwind" {
    #[link_name = "standard_ProcessUtility"]
    fn pg_standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query: *const std::ffi::c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

/// Deliberately not `#[pg_guard]` and holding nothing to drop: errors raised by the statement
/// itself pass through this frame untouched. The gate has its own guarded function.
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn on_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    unsafe {
        gate_before_utility(pstmt);
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(pstmt, query, read_only_tree, context, params, query_env, dest, qc),
            None => pg_standard_process_utility(pstmt, query, read_only_tree, context, params, query_env, dest, qc),
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn gate_before_utility(pstmt: *mut pg_sys::PlannedStmt) {
    unsafe {
        // On a standby these statements fail anyway (read-only); only a master waits.
        if decides_prepared((*pstmt).utilityStmt) && guarded_process() && !pg_sys::RecoveryInProgress() {
            wait_at_gate();
            // Checked again when the statement's own transaction commits, before the reply.
            PASSED_GATE.store(true, Ordering::Relaxed);
        }
    }
}

/// `COMMIT PREPARED` or `ROLLBACK PREPARED`.
unsafe fn decides_prepared(stmt: *mut pg_sys::Node) -> bool {
    use pg_sys::TransactionStmtKind::*;
    unsafe {
        if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_TransactionStmt {
            return false;
        }
        let kind = (*(stmt as *mut pg_sys::TransactionStmt)).kind;
        kind == TRANS_STMT_COMMIT_PREPARED || kind == TRANS_STMT_ROLLBACK_PREPARED
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PRE_PREPARE => {
            let change = MEMBERSHIP_CHANGE.load(Ordering::Relaxed);
            if change != 0 && event == XACT_EVENT_PRE_PREPARE {
                // Its fate would be decided later, by COMMIT or ROLLBACK PREPARED, with the gate
                // already closed for a version that may never come.
                crate::api::fail(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "pgkeeper.add_node and pgkeeper.del_node cannot be part of a prepared transaction",
                    Some("Run them in a transaction of their own."),
                );
            }
            if has_xid() && guarded_process() {
                if change == 0 || !close_open_gate(change) {
                    wait_at_gate();
                }
                PASSED_GATE.store(true, Ordering::Relaxed);
            }
        }
        XACT_EVENT_COMMIT | XACT_EVENT_PREPARE => {
            MEMBERSHIP_CHANGE.store(0, Ordering::Relaxed);
            OPEN_NEEDS_BEFORE.store(u64::MAX, Ordering::Relaxed);
            // Every commit that wrote, including one whose XID came after PRE_COMMIT (NOTIFY),
            // and COMMIT/ROLLBACK PREPARED (their own transaction has none).
            let wrote = has_xid() && guarded_process();
            let passed = PASSED_GATE.swap(false, Ordering::Relaxed);
            // On every standby that may be elected (synchronous commits), then under the lease.
            // (PREPARE and COMMIT / ROLLBACK PREPARED: their record end is not exported; the
            // WAL flushed now is past it)
            let end = if wrote && event == XACT_EVENT_COMMIT {
                unsafe { pg_sys::XactLastCommitEnd }
            } else {
                unsafe { pg_sys::GetFlushRecPtr(std::ptr::null_mut()) }
            };
            let sync_ok =
                !(wrote || passed) || unsafe { pg_sys::RecoveryInProgress() } || on_every_eligible_standby(end);
            if !sync_ok || ((passed || wrote) && !lease_after_commit()) {
                withhold_acknowledgement();
            } else if (passed || wrote) && unsafe { !pg_sys::MyProcPort.is_null() } {
                ACK_PENDING.store(true, Ordering::Relaxed);
                REPLY_BUFFERED.store(false, Ordering::Relaxed);
                unsafe { pgk_install_reply_gate(reply_check) };
            }
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => {
            PASSED_GATE.store(false, Ordering::Relaxed);
            // A change that did not commit: the version it announced will not come.
            MEMBERSHIP_CHANGE.store(0, Ordering::Relaxed);
            let before = OPEN_NEEDS_BEFORE.swap(u64::MAX, Ordering::Relaxed);
            if before != u64::MAX && shared::available() {
                shared::STATE.exclusive().open_needs_version = before;
            }
        }
        _ => {}
    }
}

/// Once the commit is durable: may its client be told? Yes while the lease runs. Fenced, wait
/// for the lease to come back as a commit does at the gate (a synchronous standby that is back
/// may acknowledge before the next heartbeat round renews the lease): a lease renewed after
/// the commit was durable is as good, since no voter of a newer term counts toward it. No
/// when deposed or stepped down, after the gate's longest wait, or when the backend is being
/// terminated (interrupts are held here, so the wait checks for that itself).
fn lease_after_commit() -> bool {
    if shared::gate_open_now() {
        return true;
    }
    let started = std::time::Instant::now();
    let limit = max_wait();
    loop {
        match shared::gate() {
            g if crate::RULES.acknowledge(&g) => return true,
            shared::Gate::Fenced { .. } if started.elapsed() < limit => {
                if unsafe { (&raw const pg_sys::ProcDiePending).read_volatile() } != 0 {
                    return false;
                }
                // Exiting here on postmaster death would abort a committed transaction: a
                // PANIC. Withhold, and let the next interrupt check end the session.
                if nap(false) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Once the commit is durable, for a commit that waited for synchronous replication: is it on
/// every standby the voters may elect (`crate::eligibility`)? Waits, as for a lease, while
/// the master has not told a majority yet or one of them lags, and says no after the gate's
/// longest wait or when the backend is being terminated.
fn on_every_eligible_standby(end: u64) -> bool {
    let started = std::time::Instant::now();
    let limit = max_wait();
    loop {
        if crate::eligibility::commit_reached_every(end) == Some(true) {
            return true;
        }
        if started.elapsed() >= limit || unsafe { (&raw const pg_sys::ProcDiePending).read_volatile() } != 0 {
            return false;
        }
        if nap(false) {
            return false;
        }
    }
}

/// The commit is durable but the lease ended since it passed the gate: this node may no
/// longer be the master, so nobody may be told "committed". The reply is not written yet (the
/// commit callbacks run before it): shut the client's socket down, so that nothing more
/// reaches it, and end the session at its next interrupt check (after the commit is done:
/// an ERROR here would be a PANIC). A background worker (no client) is ended the same way,
/// before it can report its progress anywhere.
fn withhold_acknowledgement() {
    unsafe {
        let port = pg_sys::MyProcPort;
        if !port.is_null() {
            // pgrx binds Port as opaque; its first member is `pgsocket sock` (libpq-be.h,
            // PostgreSQL 13 to 18).
            let sock = *(port as *const libc::c_int);
            libc::shutdown(sock, libc::SHUT_RDWR);
            pg_sys::ClientConnectionLost = 1;
        } else {
            pg_sys::ProcDiePending = 1;
        }
        pg_sys::InterruptPending = 1;
    }
    // LOG goes to the server log only (and the socket is closed anyway).
    log!(
        "pg_keeper: the commit gate closed while this commit was being made durable (the node was frozen, its disk stalled, or it waited for synchronous replication): the commit is on disk but the client is not told it succeeded; ending the session"
    );
}

/// How long a commit waits at a shut gate (`keeper_core::timing::gate_wait`).
fn max_wait() -> std::time::Duration {
    let k = std::time::Duration::from_secs_f64(gucs::KEEPALIVE_TIME.get().max(gucs::MIN_KEEPALIVE_TIME));
    keeper_core::timing::gate_wait(k, gucs::KEEPALIVE_COUNT.get().max(1) as u32)
}

fn wait_at_gate() {
    use crate::api::fail;
    use PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION as READ_ONLY;
    let started = std::time::Instant::now();
    let limit = max_wait();
    loop {
        match shared::gate() {
            shared::Gate::Open => return,
            shared::Gate::Deposed { by, term } => fail(
                READ_ONLY,
                format!("pg_keeper: this node is no longer the master: {by} was elected in term {term}; the transaction is rolled back"),
                Some("Connect to the new master. Turn this node into its standby with pgkeeper rejoin."),
            ),
            shared::Gate::SteppedDown => fail(
                READ_ONLY,
                "pg_keeper: this node stepped down for a planned switchover; the transaction is rolled back",
                Some("Connect to the new master once the switchover is done."),
            ),
            shared::Gate::Fenced { why } if started.elapsed() >= limit => fail(
                READ_ONLY,
                format!(
                    "pg_keeper: this master is fenced ({why}); the transaction is rolled back after waiting {:.1} s",
                    limit.as_secs_f64()
                ),
                Some(
                    "Another node may have been elected master: reconnect (a multi-host connection string with target_session_attrs=read-write finds it). If this server is in no cluster, check its pg_keeper settings and the server log.",
                ),
            ),
            shared::Gate::Fenced { .. } => {
                // Cancel and termination interrupt the wait.
                nap(true);
                pg_sys::check_for_interrupts!();
            }
        }
    }
}

/// Wait on the latch for at most 50 ms. When the postmaster dies: exit (`exit_on_pm_death`),
/// else return true.
fn nap(exit_on_pm_death: bool) -> bool {
    let death = if exit_on_pm_death { pg_sys::WL_EXIT_ON_PM_DEATH } else { pg_sys::WL_POSTMASTER_DEATH };
    unsafe {
        let rc = pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | death) as i32,
            50,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        rc & pg_sys::WL_POSTMASTER_DEATH as i32 != 0
    }
}
