//! Master mode: poll every registered node, notice another writable node, and keep
//! node_info true to the topology (this node the master; the next master a streaming
//! standby).

use crate::probe;
use crate::registry_sql::{self, WriteGuard};
use crate::sync_state::{observe, sync_names_now};
use crate::worker::{shutdown_requested, Mode, PeerResult, Worker};
use futures_util::future::join_all;
use keeper_core::failover::is_majority;
use keeper_core::registry::{diff, master_view};
use keeper_core::{Node, SyncConfig};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::Duration;

impl Worker {
    pub(crate) fn master_round(&mut self, me: &str, nodes: &[Node]) {
        self.drop_self_from_sync_names(me);
        let deadline = self.probe_deadline();
        let peers: Vec<&Node> = nodes.iter().filter(|n| n.name != me).collect();
        let futs = peers.iter().map(|n| {
            let cfg = probe::config(&n.conninfo, None);
            async move { probe::poll(cfg?, deadline).await }
        });
        let Some(results) = probe::block_on_cancellable(&self.rt, join_all(futs), shutdown_requested) else {
            return;
        };
        let writable: Vec<String> = peers
            .iter()
            .zip(&results)
            .filter(|(_, r)| matches!(r, Ok(a) if !a.in_recovery))
            .map(|(n, _)| n.name.clone())
            .collect();
        let peer_results: Vec<PeerResult> = peers
            .iter()
            .zip(results)
            .map(|(n, r)| PeerResult {
                name: n.name.clone(),
                ok: r.is_ok(),
                latency: r.as_ref().map(|a| a.latency).unwrap_or(Duration::ZERO),
                error: match r {
                    Ok(a) if !a.in_recovery => "writable: a second master".into(),
                    Ok(_) => String::new(),
                    Err(e) => e,
                },
            })
            .collect();
        let connected = peer_results.iter().filter(|p| p.ok).count();
        let state = if !writable.is_empty() {
            // Two masters. Fencing is issue 5/5; until then say it loudly and do not touch
            // node_info, which the other master may be keeping too.
            let msg = format!(
                "pg_keeper: CONFLICT: {} also accept(s) writes; this node ({me}) is writable too: one of them must be rejoined as a standby",
                writable.join(", ")
            );
            if self.last_notice != msg {
                warning!("{msg}");
                self.last_notice = msg;
            }
            format!("CONFLICT: {} also writable", writable.join(", "))
        } else {
            let unanswered: Vec<String> = peer_results.iter().filter(|p| !p.ok).map(|p| p.name.clone()).collect();
            let reaches_majority = is_majority(1 + connected, nodes.len());
            match observe() {
                Ok(obs) => {
                    self.guard_sync(me, &obs, &unanswered, reaches_majority);
                    self.keep_node_info(me, nodes, &obs.streaming);
                }
                Err(e) => warning!("pg_keeper: cannot read replication state: {e}"),
            }
            if peers.is_empty() {
                "no standbys".to_string()
            } else {
                format!("connected, {connected}")
            }
        };
        self.publish(Mode::Master, &state, &peer_results);
    }

    /// Write node_info as keeper-core says the master must keep it, when it differs.
    fn keep_node_info(&mut self, me: &str, nodes: &[Node], streaming: &[String]) {
        // Read after the guard: a degrade or restore this round is already applied here.
        let sync = sync_names_now();
        let sync = match SyncConfig::parse(&sync) {
            Ok(s) => s,
            Err(e) => {
                self.notice_once(format!("pg_keeper: not maintaining node_info: {e}"));
                return;
            }
        };
        let streaming: Vec<&str> = streaming.iter().map(String::as_str).collect();
        let wanted = master_view(nodes, me, sync.as_ref(), &streaming);
        let changes = diff(nodes, &wanted);
        if changes.is_empty() {
            return;
        }
        let written = BackgroundWorker::transaction(|| {
            Spi::connect_mut(|c| {
                // Metadata only: never let the worker wait on synchronous replication (a
                // worker stuck in a commit could not fix the very thing it waits for).
                c.update("SET LOCAL synchronous_commit = local", None, &[])?;
                let _guard = WriteGuard::open();
                registry_sql::apply(c, &changes)
            })
        });
        match written {
            Ok(()) => {
                let master = wanted.iter().find(|n| n.is_master).map(|n| n.name.as_str()).unwrap_or("-");
                let next = wanted.iter().find(|n| n.is_nextmaster).map(|n| n.name.as_str()).unwrap_or("none");
                log!("pg_keeper: node_info updated: master {master}, next master {next}");
            }
            Err(e) => warning!("pg_keeper: cannot update node_info: {e}"),
        }
    }
}
