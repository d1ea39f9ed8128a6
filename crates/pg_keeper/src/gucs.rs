//! The `pg_keeper.*` settings. Registered only when the library is loaded through
//! shared_preload_libraries; every one is reloadable with SIGHUP except `database`.

use keeper_core::settings::{resolve, Aliased, Settings};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::ffi::CString;
use std::time::Duration;

pub static NODE_NAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static KEEPALIVE_TIME: GucSetting<f64> = GucSetting::<f64>::new(5.0);
pub static KEEPALIVE_COUNT: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static AFTER_COMMAND: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static TWO_NODE_FAILOVER: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static AUTO_REJOIN: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static PGKEEPER_PROGRAM: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WITNESS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static HTTP_LISTEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
// The seed's README also spells these two with an "s"; 0 means "not set".
pub static ALIAS_KEEPALIVES_TIME: GucSetting<f64> = GucSetting::<f64>::new(0.0);
pub static ALIAS_KEEPALIVES_COUNT: GucSetting<i32> = GucSetting::<i32>::new(0);

pub const MIN_KEEPALIVE_TIME: f64 = 0.1;

pub fn register() {
    GucRegistry::define_string_guc(
        c"pg_keeper.node_name",
        c"Name of this node in the pg_keeper cluster (mandatory).",
        c"Must be unique and equal to the application_name this node streams with.",
        &NODE_NAME,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"pg_keeper.keepalive_time",
        c"Interval between polling rounds.",
        c"In seconds; fractions allowed ('0.5', '200ms').",
        &KEEPALIVE_TIME,
        MIN_KEEPALIVE_TIME,
        3600.0,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pg_keeper.keepalive_count",
        c"Consecutive failed polling rounds before pg_keeper acts.",
        c"",
        &KEEPALIVE_COUNT,
        1,
        1000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_keeper.after_command",
        c"Shell command run once on a node after it was promoted.",
        c"",
        &AFTER_COMMAND,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_bool_guc(
        c"pg_keeper.two_node_failover",
        c"Allow the standby of a two-node cluster to promote on its own observation (the seed's behaviour).",
        c"Unsafe: a network cut between the two nodes then yields two masters. Off by default.",
        &TWO_NODE_FAILOVER,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_keeper.auto_rejoin",
        c"A deposed old master turns itself into a standby of the new master (pg_rewind, never a base backup).",
        c"Runs pgkeeper rejoin --auto, detached, once the new master takes writes. Off: run pgkeeper rejoin by hand.",
        &AUTO_REJOIN,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"pg_keeper.pgkeeper_program",
        c"Path of the pgkeeper program the automatic rejoin runs.",
        c"Empty: pgkeeper on the server's PATH, in /usr/local/bin, /usr/bin or beside postgres.",
        &PGKEEPER_PROGRAM,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_bool_guc(
        c"pg_keeper.witness",
        c"This server is a witness: it votes and answers polls, holds no data, never promotes.",
        c"Register it on the master with pgkeeper.add_node(name, conninfo, is_witness => true).",
        &WITNESS,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_keeper.database",
        c"Database in which CREATE EXTENSION pg_keeper was run; the worker reads pgkeeper.node_info there.",
        c"",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_keeper.http_listen",
        c"host:port on which pg_keeper serves its HTTP health checks and /metrics (empty: off).",
        c"Patroni's paths: /primary, /replica, /read-only, /health, /liveness, /readiness, /metrics, /cluster.",
        &HTTP_LISTEN,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"pg_keeper.keepalives_time",
        c"Deprecated alias of pg_keeper.keepalive_time.",
        c"0 means not set.",
        &ALIAS_KEEPALIVES_TIME,
        0.0,
        3600.0,
        GucContext::Sighup,
        GucFlags::UNIT_S | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"pg_keeper.keepalives_count",
        c"Deprecated alias of pg_keeper.keepalive_count.",
        c"0 means not set.",
        &ALIAS_KEEPALIVES_COUNT,
        0,
        1000,
        GucContext::Sighup,
        GucFlags::NO_SHOW_ALL,
    );
    // Refuse misspelled pg_keeper.* settings instead of silently ignoring them.
    #[cfg(any(feature = "pg13", feature = "pg14"))]
    unsafe {
        pg_sys::EmitWarningsOnPlaceholders(c"pg_keeper".as_ptr())
    };
    #[cfg(not(any(feature = "pg13", feature = "pg14")))]
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"pg_keeper".as_ptr())
    };
}

fn string(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get().map(|c| c.to_string_lossy().into_owned()).filter(|v| !v.is_empty())
}

pub fn node_name() -> Option<String> {
    string(&NODE_NAME)
}

pub fn pgkeeper_program() -> Option<String> {
    string(&PGKEEPER_PROGRAM).filter(|s| !s.is_empty())
}

pub fn after_command() -> Option<String> {
    string(&AFTER_COMMAND)
}

pub fn http_listen() -> Option<String> {
    string(&HTTP_LISTEN)
}

pub fn database() -> String {
    string(&DATABASE).unwrap_or_else(|| "postgres".into())
}

/// Current settings, with the seed's aliases resolved. `explicit` tells whether the
/// documented names were set explicitly (their source is not the default); it is read from
/// pg_settings by the caller. Returns the settings and the deprecation warnings to log.
pub fn current(explicit_time: bool, explicit_count: bool) -> (Settings, Vec<String>) {
    let mut warnings = Vec::new();
    let alias_time = Some(ALIAS_KEEPALIVES_TIME.get()).filter(|v| *v > 0.0);
    let alias_count = Some(ALIAS_KEEPALIVES_COUNT.get()).filter(|v| *v > 0);
    let (time, warn) = resolve(Aliased { documented: (KEEPALIVE_TIME.get(), explicit_time), alias: alias_time });
    if warn {
        warnings.push(format!(
            "pg_keeper.keepalives_time is deprecated: use pg_keeper.keepalive_time (using {time} s{})",
            if explicit_time { ", the documented setting wins" } else { "" }
        ));
    }
    let (count, warn) = resolve(Aliased { documented: (KEEPALIVE_COUNT.get(), explicit_count), alias: alias_count });
    if warn {
        warnings.push(format!(
            "pg_keeper.keepalives_count is deprecated: use pg_keeper.keepalive_count (using {count}{})",
            if explicit_count { ", the documented setting wins" } else { "" }
        ));
    }
    let settings = Settings {
        keepalive_time: Duration::from_secs_f64(time.max(MIN_KEEPALIVE_TIME)),
        keepalive_count: count.max(1) as u32,
    };
    (settings, warnings)
}
