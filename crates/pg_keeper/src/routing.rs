//! Clients never stick to a deposed master (issue 2/7 item 4).
//!
//! A deposed or stepped-down master is still out of recovery, so it reports
//! `in_hot_standby = off` and `transaction_read_only = off`: libpq with
//! `target_session_attrs=read-write` or `primary` would settle on it when it is listed first,
//! and every commit would then fail. So such a node refuses ordinary client sessions during
//! authentication, before libpq has seen "authentication ok", with SQLSTATE 57P03
//! (cannot_connect_now): the one error after which libpq tries the next host of a multi-host
//! connection string whatever target_session_attrs says (as for a server still starting up).
//!
//! Let through: connections over a Unix-domain socket (an operator on the host) and pg_keeper's
//! own (application_name `pg_keeper`: the other nodes' workers; `pgkeeper`: the CLI's status,
//! rejoin and switchover). A `replication=database` connection runs SQL: refused.
//!
//! Physical replication: a stepped-down master lets its switchover target stream (it needs
//! the shutdown checkpoint). A deposed master refuses it, and ends its WAL senders when it
//! learns it is deposed ([`end_wal_senders`]): its WAL past the new timeline's fork point
//! would leave a standby unable to follow the new master (its clean shutdown for a rejoin
//! would ship all of it).

use crate::shared;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::ffi::{c_int, CStr};

type AuthHook = Option<unsafe extern "C-unwind" fn(*mut pg_sys::Port, c_int)>;

unsafe extern "C-unwind" {
    // auth.h; not in pgrx's bindings.
    static mut ClientAuthentication_hook: AuthHook;
}

unsafe extern "C" {
    fn pgk_port_application_name(port: *const pg_sys::Port) -> *const std::ffi::c_char;
    fn pgk_port_is_local(port: *const pg_sys::Port) -> c_int;
}

static mut PREV: AuthHook = None;

pub fn register() {
    unsafe {
        PREV = ClientAuthentication_hook;
        ClientAuthentication_hook = Some(on_authenticated);
    }
}

/// application_name values of pg_keeper's own connections.
pub const OWN_APPLICATION_NAMES: [&str; 2] = ["pg_keeper", "pgkeeper"];

#[pg_guard]
unsafe extern "C-unwind" fn on_authenticated(port: *mut pg_sys::Port, status: c_int) {
    unsafe {
        if let Some(prev) = PREV {
            prev(port, status);
        }
        if status != pg_sys::STATUS_OK as c_int || port.is_null() || !shared::available() {
            return;
        }
        if pg_sys::RecoveryInProgress() {
            return;
        }
        let physical = pg_sys::am_walsender && !pg_sys::am_db_walsender;
        if pgk_port_is_local(port) != 0 {
            return;
        }
        let app = pgk_port_application_name(port);
        let app = if app.is_null() { String::new() } else { CStr::from_ptr(app).to_string_lossy().into_owned() };
        if OWN_APPLICATION_NAMES.contains(&app.as_str()) {
            return;
        }
        let why = match shared::gate() {
            shared::Gate::Deposed { by, term } => {
                format!("pg_keeper: this node is no longer the master: {by} was elected in term {term}")
            }
            shared::Gate::SteppedDown if !physical => {
                "pg_keeper: this node stepped down for a planned switchover".to_string()
            }
            _ => return,
        };
        ErrorReport::new(PgSqlErrorCode::ERRCODE_CANNOT_CONNECT_NOW, why, function_name!())
            .set_hint(
                "Connect to the new master: a multi-host connection string (pgkeeper uri) moves on to the next host.",
            )
            .report(PgLogLevel::FATAL);
    }
}

/// On becoming deposed: end every WAL sender (the standbys still streaming from this node).
pub fn end_wal_senders() {
    let ended = crate::tx::transaction(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_replication",
                None,
                &[],
            )?
            .first()
            .get_one::<i64>()
        })
    });
    match ended {
        Ok(Some(n)) if n > 0 => {
            log!("pg_keeper: deposed: ended {n} WAL sender(s); standbys stream from the new master")
        }
        Ok(_) => {}
        Err(e) => warning!("pg_keeper: cannot end the WAL senders: {e}"),
    }
}
