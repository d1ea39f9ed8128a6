//! The worker's transactions, with PostgreSQL's errors caught: a statement that fails (a lock
//! wait past `lock_timeout`, a relation that is locked by a replayed ACCESS EXCLUSIVE lock, a
//! query that errors) rolls its transaction back and comes back as `Err`, and the worker goes
//! on with its loop. `BackgroundWorker::transaction` would let the ERROR end the worker,
//! which the postmaster restarts a few seconds later with its memory (rounds counted, the
//! synchronous replication guard) lost.

use pgrx::pg_sys;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::PgTryBuilder;
use std::fmt::Display;
use std::panic::{RefUnwindSafe, UnwindSafe};

/// Why a worker transaction failed: the error's message, and its SQLSTATE when PostgreSQL
/// raised it.
#[derive(Debug, Clone)]
pub struct TxError {
    pub message: String,
    pub code: Option<PgSqlErrorCode>,
}

impl TxError {
    /// A lock wait that ran past `lock_timeout` (SQLSTATE 55P03, whatever lc_messages says).
    pub fn is_lock_timeout(&self) -> bool {
        self.code == Some(PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE)
    }
}

impl Display for TxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub fn transaction<T, E: Display>(
    body: impl FnOnce() -> Result<T, E> + UnwindSafe + RefUnwindSafe,
) -> Result<T, TxError> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let out = PgTryBuilder::new(|| Ok(body().map_err(|e| TxError { message: e.to_string(), code: None })))
        .catch_others(|e| {
            let r = match &e {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
                CaughtError::RustPanic { ereport, .. } => ereport,
            };
            Err(TxError { message: r.message().to_string(), code: Some(r.sql_error_code()) })
        })
        .execute();
    match out {
        Ok(result) => unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
            result
        },
        Err(e) => {
            // (the snapshot, SPI and locks are released by the abort)
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(e)
        }
    }
}
