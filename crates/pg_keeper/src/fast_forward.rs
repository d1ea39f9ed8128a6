//! Before a winner promotes: fetch the WAL a standby that answered has beyond its own
//! (`keeper_core::election::fast_forward_source`, pg_auto_failover's fast_forward), by
//! streaming from that standby for a bounded time (`keeper_core::timing::fast_forward_limit`).
//! Then that standby can follow the new timeline without a rewind.

use crate::actions;
use crate::election_api::received_position;
use crate::worker::{shutdown_requested, Worker};
use keeper_core::election::{fast_forward_progress, FastForward};
use keeper_core::lsn::Position;
use keeper_core::Node;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

impl Worker {
    pub(crate) fn fast_forward(&mut self, me: &str, nodes: &[Node], from: &str, target: Position) {
        let Some(node) = nodes.iter().find(|n| n.name == from) else { return };
        let mut ci = match keeper_pq::conninfo::node(&node.conninfo) {
            Ok(c) => c,
            Err(e) => {
                warning!("pg_keeper: cannot fetch WAL from {from}: {e}");
                return;
            }
        };
        ci.set("application_name", me);
        ci.remove("dbname");
        let before = received_position();
        if let Err(e) = actions::alter_system("primary_conninfo", Some(&ci.to_string())) {
            warning!("pg_keeper: cannot fetch WAL from {from}: {e}");
            return;
        }
        actions::reload_config();
        log!(
            "pg_keeper: {from} has WAL up to {target}, this node up to {}: streaming from {from} before promoting",
            before.map(|p| p.to_string()).unwrap_or_default()
        );
        let started = Instant::now();
        loop {
            let now = received_position();
            match fast_forward_progress(now, target, started.elapsed(), self.settings.keepalive_time) {
                FastForward::Fetched => {
                    log!("pg_keeper: fetched WAL up to {target} from {from} in {} ms", started.elapsed().as_millis());
                    return;
                }
                FastForward::Wait if !shutdown_requested() => std::thread::sleep(Duration::from_millis(20)),
                FastForward::Wait | FastForward::GiveUp => {
                    warning!(
                        "pg_keeper: could not fetch WAL up to {target} from {from} within {} ms (have {}); promoting without it: {from} will need pgkeeper rejoin",
                        started.elapsed().as_millis(),
                        now.map(|p| p.to_string()).unwrap_or_default()
                    );
                    return;
                }
            }
        }
    }
}
