//! What the worker does to its own server: promote it, change a setting with ALTER SYSTEM,
//! reload the configuration, run after_command. Each is logged by the caller.

use pgrx::prelude::*;
use std::ffi::CString;
use std::process::{Child, Command};

/// `pg_promote(wait => true)`: returns once this server accepts writes (or after 60 s).
/// Runs through the read-only SPI path, which works during recovery.
pub fn promote() -> Result<bool, String> {
    let signalled = crate::tx::transaction(|| {
        Spi::connect(|c| c.select("SELECT pg_catalog.pg_promote(false)", None, &[])?.first().get_one::<bool>())
    })
    .map(|v| v.unwrap_or(false))
    .map_err(|e| e.to_string())?;
    if !signalled {
        return Ok(false);
    }
    // pg_promote(true) looks every 100 ms; the end of recovery usually takes a few ms here,
    // and every one of them is write unavailability.
    let started = std::time::Instant::now();
    while started.elapsed() < keeper_core::timing::PROMOTION_WAIT {
        if unsafe { !pg_sys::RecoveryInProgress() } {
            return Ok(true);
        }
        if crate::worker::shutdown_requested() {
            return Ok(false);
        }
        // A latch wait, not a sleep: the worker exits with the postmaster, and absorbs the
        // interrupts the startup process may wait for (a ProcSignalBarrier) meanwhile.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                2,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
    Ok(false)
}

/// `ALTER SYSTEM SET name = value` (or `RESET name` for None), built as a parse tree and handed
/// to PostgreSQL's own ALTER SYSTEM code: no SQL text, so no quoting of the value. ALTER
/// SYSTEM refuses to run through SPI, hence this route.
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
pub fn alter_system(name: &str, value: Option<&str>) -> Result<(), String> {
    crate::tx::transaction(|| alter_system_here(name, value)).map_err(|e| e.to_string())
}

/// The same, in the transaction already running (a SQL function's): ALTER SYSTEM writes the
/// file at once, whatever becomes of the transaction. Errors are PostgreSQL ERRORs.
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
pub fn alter_system_here(name: &str, value: Option<&str>) -> Result<(), String> {
    let name_c = CString::new(name).map_err(|e| e.to_string())?;
    let value_c = match value {
        Some(v) => Some(CString::new(v).map_err(|e| e.to_string())?),
        None => None,
    };
    unsafe {
        let set = pg_sys::palloc0(std::mem::size_of::<pg_sys::VariableSetStmt>()) as *mut pg_sys::VariableSetStmt;
        (*set).type_ = pg_sys::NodeTag::T_VariableSetStmt;
        (*set).name = pg_sys::pstrdup(name_c.as_ptr());
        match &value_c {
            Some(v) => {
                (*set).kind = pg_sys::VariableSetKind::VAR_SET_VALUE;
                let con = pg_sys::palloc0(std::mem::size_of::<pg_sys::A_Const>()) as *mut pg_sys::A_Const;
                (*con).type_ = pg_sys::NodeTag::T_A_Const;
                (*con).val.sval.type_ = pg_sys::NodeTag::T_String;
                (*con).val.sval.sval = pg_sys::pstrdup(v.as_ptr());
                (*con).location = -1;
                (*set).args = pg_sys::lappend(std::ptr::null_mut(), con.cast());
            }
            None => (*set).kind = pg_sys::VariableSetKind::VAR_RESET,
        }
        let stmt = pg_sys::palloc0(std::mem::size_of::<pg_sys::AlterSystemStmt>()) as *mut pg_sys::AlterSystemStmt;
        (*stmt).type_ = pg_sys::NodeTag::T_AlterSystemStmt;
        (*stmt).setstmt = set;
        pg_sys::AlterSystemSetConfigFile(stmt);
    }
    Ok(())
}

#[cfg(any(feature = "pg13", feature = "pg14"))]
pub fn alter_system(_name: &str, _value: Option<&str>) -> Result<(), String> {
    Err("ALTER SYSTEM from the worker is implemented for PostgreSQL 15 and later".into())
}

#[cfg(any(feature = "pg13", feature = "pg14"))]
pub fn alter_system_here(_name: &str, _value: Option<&str>) -> Result<(), String> {
    Err("ALTER SYSTEM from pg_keeper is implemented for PostgreSQL 15 and later".into())
}

/// What pg_reload_conf() does: SIGHUP to the postmaster, which passes it on.
pub fn reload_config() {
    unsafe {
        libc::kill(pg_sys::PostmasterPid, libc::SIGHUP);
    }
}

/// Start `pg_keeper.after_command` in the background; the worker checks on it each loop.
pub fn spawn_after_command(cmd: &str, old_master: &str, new_master: &str) -> std::io::Result<Child> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("PG_KEEPER_OLD_MASTER", old_master)
        .env("PG_KEEPER_NEW_MASTER", new_master)
        .env("PG_KEEPER_NODE_NAME", new_master)
        .stdin(std::process::Stdio::null())
        .spawn()
}

/// A setting's current value in this process ('' when unset).
pub fn config_option(name: &std::ffi::CStr) -> String {
    unsafe {
        let v = pg_sys::GetConfigOption(name.as_ptr(), false, false);
        if v.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned()
        }
    }
}
