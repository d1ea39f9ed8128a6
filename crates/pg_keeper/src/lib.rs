//! pg_keeper: the PostgreSQL side. A thin adapter around `keeper-core`: settings, the
//! background worker loop, SPI access to node_info, shared memory, outgoing probes.

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;
use std::time::Duration;

::pgrx::pg_module_magic!(name, version);

mod actions;
mod api;
mod auto_rejoin;
mod candidate;
mod election_api;
mod eligibility;
mod fast_forward;
mod forced;
mod gate;

/// The protocol's rules, as pg_keeper runs them (keeper_core::rules).
pub(crate) const RULES: keeper_core::rules::Rules = keeper_core::rules::Rules::AS_BUILT;
mod gucs;
mod history;
mod http;
mod master;
mod metrics;
mod plans;
mod probe;
mod registry_sql;
mod routing;
mod schema;
mod shared;
mod standby;
mod sync_state;
mod tx;
mod votes;
mod worker;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Settings, shared memory and the worker exist only when preloaded; loaded later (by a
    // function call), the library offers its SQL functions alone.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    gucs::register();
    shared::init();
    gate::register();
    routing::register();
    http::register();
    BackgroundWorkerBuilder::new("pg_keeper")
        .set_type("pg_keeper")
        .set_library("pg_keeper")
        .set_function("pg_keeper_worker_main")
        .enable_spi_access()
        // After enable_spi_access (which resets it): start on hot standbys too.
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(2)))
        .load();
}
