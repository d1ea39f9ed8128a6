//! The history (keeper_core::history): each node appends what it sees to its own log,
//! `$PGDATA/pg_keeper.<node>.history` (outside WAL: a fenced or deposed master keeps its
//! events, and `pgkeeper rejoin` carries the file through pg_rewind), and master mode copies
//! its own log into the replicated table `pgkeeper.history` while its gate is open, so every
//! node reads the failovers. `pgkeeper.history()` is the table plus this node's log.

use crate::{gucs, shared};
use keeper_core::history::{parse_log, Event, Kind};
use pgrx::prelude::*;
use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;

pub fn path(node: &str) -> PathBuf {
    crate::votes::node_file(node, "history")
}

/// This node's log (empty when there is none yet).
pub fn local(node: &str) -> Vec<Event> {
    std::fs::read_to_string(path(node)).map(|t| parse_log(&t).0).unwrap_or_default()
}

thread_local! {
    /// The length of this node's log when master mode last copied all of it into the table:
    /// the log only grows, so the same length means nothing new (no read each round).
    static PUBLISHED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Append one event to this node's log (and count it for /metrics). Failing to write is
/// logged, never fatal: the history is for people.
pub fn record(kind: Kind, term: u64, nodes: &[&str], reason: &str) {
    if shared::available() {
        let mut st = shared::STATE.exclusive();
        match kind {
            Kind::Degraded => st.degrades += 1,
            Kind::Restored => st.restores += 1,
            Kind::ElectionWon => st.elections_won += 1,
            Kind::ElectionLost => st.elections_lost += 1,
            _ => {}
        }
    }
    let Some(me) = gucs::node_name() else { return };
    if let Err(e) = append(&me, kind, term, nodes, reason) {
        warning!("pg_keeper: cannot record \"{}\" in {}: {e}", kind.as_str(), path(&me).display());
    }
}

fn append(me: &str, kind: Kind, term: u64, nodes: &[&str], reason: &str) -> std::io::Result<()> {
    let p = path(me);
    // Appends are rare (events, not rounds): reading the log for the next seq is cheap.
    let next = std::fs::read_to_string(&p).map(|t| parse_log(&t).1).unwrap_or(1);
    let e = Event {
        seq: next,
        at_ms: crate::worker::now_ms(),
        node: me.to_string(),
        kind,
        term,
        nodes: nodes.iter().map(|s| s.to_string()).collect(),
        reason: reason.to_string(),
    };
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p)?;
    // A torn last line (a crash while appending) must not swallow this event.
    let torn = std::fs::read(&p).map(|b| b.last().is_some_and(|c| *c != b'\n')).unwrap_or(false);
    let line = if torn { format!("\n{}", e.to_line()) } else { e.to_line() };
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// Master mode, gate open: copy what this node's log holds beyond the table into it, with
/// `synchronous_commit = local` (a history row must never wait for a standby).
pub fn publish(me: &str) {
    let Ok(len) = std::fs::metadata(path(me)).map(|m| m.len()) else { return };
    if PUBLISHED.with(|p| p.get()) == Some(len) {
        return;
    }
    let events = local(me);
    let r = crate::tx::transaction(|| {
        Spi::connect_mut(|c| {
            c.update("SELECT set_config('synchronous_commit', 'local', true)", None, &[])?;
            // (a lock on the table must not hold up the round: the next one tries again)
            c.update("SELECT set_config('lock_timeout', '50ms', true)", None, &[])?;
            // Every event of the log: (node, seq, at) names it, so a log that started again
            // at 1 (a node cloned anew under the same name) adds its events too.
            for e in &events {
                c.update(
                    "INSERT INTO pgkeeper.history (node_name, seq, at, event, term, nodes, reason) \
                     VALUES ($1, $2, to_timestamp($3::float8 / 1000), $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    None,
                    &[
                        e.node.as_str().into(),
                        (e.seq as i64).into(),
                        (e.at_ms as f64).into(),
                        e.kind.as_str().into(),
                        (e.term as i64).into(),
                        e.nodes.clone().into(),
                        e.reason.as_str().into(),
                    ],
                )?;
            }
            Ok::<_, pgrx::spi::Error>(())
        })
    });
    match r {
        Ok(()) => PUBLISHED.with(|p| p.set(Some(len))),
        Err(e) => warning!("pg_keeper: cannot copy this node's history into pgkeeper.history: {e}"),
    }
}

/// This node's log, for `pgkeeper.history()`.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn _local_history() -> TableIterator<
    'static,
    (
        name!(node_name, String),
        name!(seq, i64),
        name!(at_epoch, f64),
        name!(event, String),
        name!(term, i64),
        name!(nodes, Vec<String>),
        name!(reason, String),
    ),
> {
    let events = gucs::node_name().map(|me| local(&me)).unwrap_or_default();
    TableIterator::new(events.into_iter().map(|e| {
        (e.node, e.seq as i64, e.at_ms as f64 / 1000.0, e.kind.as_str().to_string(), e.term as i64, e.nodes, e.reason)
    }))
}
