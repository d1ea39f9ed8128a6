//! The commit gate: how a master that lost its lease (or was deposed) acknowledges no write.
//!
//! A transaction callback, registered in every backend through `_PG_init`, runs just before a
//! client's commit (and PREPARE TRANSACTION) writes its commit record. When the transaction
//! wrote something and the gate is not open, the commit waits (fenced: the lease may come
//! back, and then it proceeds) or fails (deposed: another node was elected in a newer term).
//! Nothing is written before the gate, so a commit that never passes it is simply rolled
//! back: other sessions never see it, and no client is told it succeeded.
//!
//! Why this and not the alternatives: a `synchronous_standby_names` nobody matches lets
//! sessions with `synchronous_commit = local` or `off` through, and a commit waiting there is
//! already visible to readers; stopping the server (Patroni's demote) takes seconds and
//! cannot be undone when the partition heals a moment later. The gate costs one shared-memory
//! read per writing commit.
//!
//! Not gated: background processes (autovacuum, the pg_keeper worker itself, logical
//! replication apply workers) and `COMMIT PREPARED` of a transaction prepared before the fence
//! (prepared while open, by definition).

use crate::{gucs, shared};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::c_void;

pub fn register() {
    unsafe { pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut()) };
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    if event != XACT_EVENT_PRE_COMMIT && event != XACT_EVENT_PRE_PREPARE {
        return;
    }
    unsafe {
        if pg_sys::MyBackendType != pg_sys::BackendType::B_BACKEND
            || pg_sys::GetTopTransactionIdIfAny() == pg_sys::InvalidTransactionId
        {
            return;
        }
    }
    // Not part of a cluster (no node name), or a witness: nothing to fence.
    if gucs::node_name().is_none() || gucs::WITNESS.get() {
        return;
    }
    wait_at_gate();
}

fn wait_at_gate() {
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
