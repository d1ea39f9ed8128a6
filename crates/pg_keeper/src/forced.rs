//! Forced failover (`pgkeeper failover --to NODE --force`): for a cluster that cannot elect
//! because a majority of node_info is gone. The operator names the nodes that are gone; this
//! standby checks they do not answer, waits out every lease they may have granted, and its
//! worker promotes it in a term of its own (a win without votes). From then on the master
//! counts its majority over node_info without those nodes, and deletes them from node_info as
//! soon as it takes writes: the cluster is the nodes that answered.
//!
//! The record of it, `$PGDATA/pg_keeper.<node>.forced` (`term N` / the names), survives a
//! restart until the deletion is done.

use crate::api::{fail, required};
use crate::{gucs, probe, shared};
use keeper_core::history::Kind;
use keeper_core::Node;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn path(node: &str) -> PathBuf {
    let dir = unsafe { CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
    PathBuf::from(dir).join(format!("pg_keeper.{node}.forced"))
}

/// The nodes a forced failover removed, while node_info still has some of them.
pub fn removed(me: &str) -> Vec<String> {
    std::fs::read_to_string(path(me))
        .map(|t| t.lines().skip(1).flat_map(|l| l.split_whitespace()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// node_info without the removed nodes (what a forced master counts over).
pub fn view(me: &str, nodes: Vec<Node>) -> Vec<Node> {
    let gone = removed(me);
    if gone.is_empty() {
        return nodes;
    }
    nodes.into_iter().filter(|n| !gone.contains(&n.name)).collect()
}

/// Master mode, gate open: delete the removed nodes from node_info (one membership change),
/// then forget the record.
pub fn finish(me: &str, all: &[Node]) {
    let gone = removed(me);
    if gone.is_empty() {
        return;
    }
    let rows: Vec<i32> = all.iter().filter(|n| gone.contains(&n.name)).map(|n| n.seqno).collect();
    if !rows.is_empty() {
        let r = crate::tx::transaction(|| {
            Spi::connect_mut(|c| {
                c.update("SET LOCAL synchronous_commit = local", None, &[])?;
                let _guard = crate::registry_sql::WriteGuard::open();
                let changes: Vec<_> = rows.iter().map(|s| keeper_core::registry::Change::Delete(*s)).collect();
                crate::registry_sql::apply(c, &changes)?;
                crate::registry_sql::bump_membership(c)
            })
        });
        match r {
            Ok(()) => log!("pg_keeper: forced failover: {} removed from node_info", gone.join(", ")),
            Err(e) => {
                warning!("pg_keeper: forced failover: cannot remove {} from node_info: {e}", gone.join(", "));
                return;
            }
        }
    }
    let _ = std::fs::remove_file(path(me));
}

/// Worker, standby mode: the nodes to remove if `_force_failover` asked for a promotion.
pub fn take_request() -> Option<Vec<String>> {
    let mut st = shared::STATE.exclusive();
    if !st.force_requested {
        return None;
    }
    st.force_requested = false;
    Some(shared::get_str(&st.force_removed).split_whitespace().map(str::to_string).collect())
}

/// Before the promotion: a term of its own, won without votes, persisted; the removal on disk.
pub fn prepare(me: &str, gone: &[String]) -> Result<u64, String> {
    let term = crate::votes::with_record(me, |rec, st| {
        let t = rec.term.max(st.seen_term) + 1;
        st.promoting = true;
        st.revoke_lease("forced failover: its first heartbeat round opens the gate");
        (t, rec.won(me, t))
    })?;
    crate::votes::durable_write(&path(me), &format!("term {term}\n{}\n", gone.join(" ")))?;
    crate::history::record(
        Kind::ForcedFailover,
        term,
        &std::iter::once(me).chain(gone.iter().map(String::as_str)).collect::<Vec<_>>(),
        &format!("pgkeeper failover --force: {} removed (did not answer)", gone.join(", ")),
    );
    Ok(term)
}

/// `pgkeeper._force_failover(removed)`, on the standby to promote: checks, waits out the
/// leases, asks the worker to promote, waits for it. Returns the new term.
#[pg_extern(volatile, parallel_unsafe)]
fn _force_failover(removed: Option<Vec<Option<String>>>) -> i64 {
    let code = PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
    let removed: Vec<String> = removed
        .unwrap_or_else(|| fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "removed must not be NULL", None))
        .into_iter()
        .map(|n| required(n.as_deref(), "a removed node").to_string())
        .collect();
    if removed.is_empty() {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "name the nodes that are gone", None);
    }
    if unsafe { !pg_sys::RecoveryInProgress() } || gucs::WITNESS.get() || !shared::available() {
        fail(code, "_force_failover runs on a standby with pg_keeper running", None);
    }
    let Some(me) = gucs::node_name() else { fail(code, "pg_keeper.node_name is not set", None) };
    let nodes = Spi::connect(crate::registry_sql::read_nodes)
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
        .unwrap_or_default();
    for r in &removed {
        if *r == me {
            fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "the new master cannot be one of the removed nodes", None);
        }
        if !nodes.iter().any(|n| n.name == *r) {
            fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("\"{r}\" is not in node_info"), None);
        }
    }
    // Each one removed must not answer now (a node only cut off from the operator may be
    // well): a forced failover is for nodes that are gone.
    let deadline = Duration::from_secs(2);
    for n in nodes.iter().filter(|n| removed.contains(&n.name)) {
        let cfg = probe::config(&n.conninfo, None).unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, None));
        if probe::runtime().block_on(probe::poll(cfg, deadline)).is_ok() {
            fail(
                code,
                format!("{} answers this node: it is not gone", n.name),
                Some("Use pgkeeper failover without --force, or pgkeeper switchover."),
            );
        }
    }
    // A lease granted by a removed node may still run: wait until the longest one this node
    // could not see has surely ended (a hold from this node's own last contact with them).
    let hold = keeper_core::election::voter_hold(keeper_core::election::master_lease(Duration::from_secs_f64(
        gucs::KEEPALIVE_TIME.get().max(gucs::MIN_KEEPALIVE_TIME),
    )));
    let until = {
        let st = shared::STATE.share();
        let now_wall = crate::worker::now_ms();
        let last_contact = st.peers[..(st.npeers as usize).min(shared::MAX_PEERS)]
            .iter()
            .filter(|p| removed.contains(&shared::get_str(&p.name)))
            .map(|p| p.last_ok_ms)
            .max()
            .unwrap_or(0);
        let since = (now_wall - last_contact).max(0);
        st.hold_until.max(shared::boot_ms() + (hold.as_millis() as i64 - since).max(0))
    };
    while shared::boot_ms() < until {
        std::thread::sleep(Duration::from_millis(20));
        pg_sys::check_for_interrupts!();
    }
    {
        let mut st = shared::STATE.exclusive();
        st.force_requested = true;
        shared::put_str(&mut st.force_removed, &removed.join(" "));
    }
    shared::notify_worker(true, false);
    let started = Instant::now();
    while unsafe { pg_sys::RecoveryInProgress() } {
        if started.elapsed() > Duration::from_secs(90) {
            fail(code, "the worker did not promote this node within 90 s (see the server log)", None);
        }
        std::thread::sleep(Duration::from_millis(20));
        pg_sys::check_for_interrupts!();
    }
    shared::STATE.share().term as i64
}
