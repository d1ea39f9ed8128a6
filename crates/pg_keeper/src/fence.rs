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
//! Gated processes: client backends and background workers (logical replication apply
//! workers, pg_cron jobs, ...: a fenced subscriber stops applying, and the publisher's
//! changes go to the master that holds the lease). Not gated: the pg_keeper worker itself
//! (it records the cluster's changes while fenced), autovacuum, parallel workers (their
//! leader commits).

use crate::{gucs, shared};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

pub fn register() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(on_utility);
    }
}

/// Whether this process is one whose commits the gate guards: a client backend or a
/// background worker (but pg_keeper's own) of a server that is part of a cluster as a data
/// node.
fn guarded_process() -> bool {
    use pg_sys::BackendType::*;
    let kind = unsafe { pg_sys::MyBackendType };
    let gated = kind == B_BACKEND || (kind == B_BG_WORKER && !IN_KEEPER_WORKER.load(Ordering::Relaxed));
    // Not part of a cluster (no node name), or a witness: nothing to fence.
    gated && gucs::node_name().is_some() && !gucs::WITNESS.get()
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
    if event != XACT_EVENT_PRE_COMMIT && event != XACT_EVENT_PRE_PREPARE {
        return;
    }
    let wrote = unsafe { pg_sys::GetTopTransactionIdIfAny() } != pg_sys::InvalidTransactionId;
    if wrote && guarded_process() {
        wait_at_gate();
    }
}

/// How long a commit waits at a shut gate before it gives up: past the time in which either
/// a majority answers again or the standbys elect another master (keepalive_count rounds and
/// the lease). `statement_timeout` does not apply at commit (PostgreSQL disarms it before
/// committing), so without this bound a client of an isolated master would wait forever.
fn max_wait() -> std::time::Duration {
    let k = gucs::KEEPALIVE_TIME.get().max(gucs::MIN_KEEPALIVE_TIME);
    let rounds = gucs::KEEPALIVE_COUNT.get().max(1) as f64 + 2.0;
    std::time::Duration::from_secs_f64((k * rounds).max(2.0))
}

fn wait_at_gate() {
    let started = std::time::Instant::now();
    let limit = max_wait();
    loop {
        match shared::gate() {
            shared::Gate::Open => return,
            shared::Gate::Deposed { by, term } => {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
                    format!(
                        "pg_keeper: this node is no longer the master: {by} was elected in term {term}; the transaction is rolled back"
                    ),
                    "Connect to the new master. Turn this node into its standby with pgkeeper rejoin."
                );
            }
            shared::Gate::SteppedDown => {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
                    "pg_keeper: this node is stepping down for a planned switchover; the transaction is rolled back",
                    "Connect to the new master once the switchover is done."
                );
            }
            shared::Gate::Fenced if started.elapsed() >= limit => {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
                    format!(
                        "pg_keeper: this master is fenced (it has not heard from a majority of the cluster); the transaction is rolled back after waiting {:.1} s",
                        limit.as_secs_f64()
                    ),
                    "Another node may have been elected master: reconnect (a multi-host connection string with target_session_attrs=read-write finds it)."
                );
            }
            shared::Gate::Fenced => unsafe {
                // Wakes up every 50 ms; cancel, statement_timeout and termination interrupt it.
                pg_sys::WaitLatch(
                    pg_sys::MyLatch,
                    (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                    50,
                    pg_sys::PG_WAIT_EXTENSION,
                );
                pg_sys::ResetLatch(pg_sys::MyLatch);
                pg_sys::check_for_interrupts!();
            },
        }
    }
}
