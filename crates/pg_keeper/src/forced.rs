//! Forced failover (`pgkeeper failover --to NODE --force`): for a cluster that cannot elect
//! because a majority of node_info is gone. The operator names the nodes that are gone (the
//! registered master among them); this standby checks that none of them answers it and that
//! none answers any node that stays, takes a term of its own (from then on it acknowledges
//! no heartbeat of the old master), waits until every lease the old master may hold has
//! surely ended, checks again, and its worker promotes it as if it had won that term. From
//! then on master mode counts its majority over node_info without those nodes, and deletes
//! them from node_info as soon as it takes writes: the cluster is the nodes that answered.
//!
//! The operator's claim stays a claim: nodes alive behind a partition that leaves every
//! remaining node cut off from them could still hold a majority of the old node_info. The
//! CLI says so; when such a partition heals the old master sees the newer term and is deposed.
//!
//! `$PGDATA/pg_keeper.<node>.forced` (`term N` / the names) survives a restart until the
//! deletion is done; it counts only while this node is the master elected in that term.

use crate::api::{fail, required};
use crate::{gucs, probe, shared};
use keeper_core::election::VoteRecord;
use keeper_core::history::Kind;
use keeper_core::Node;
use pgrx::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn path(node: &str) -> PathBuf {
    crate::votes::node_file(node, "forced")
}

/// The nodes a forced failover removed, while it is still being completed: only on the
/// master elected in the file's term (a stale file, from a failed promotion or an older
/// term, is deleted).
fn removed(me: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path(me)) else { return vec![] };
    let term = text.lines().next().and_then(|l| l.strip_prefix("term ")).and_then(|t| t.trim().parse::<u64>().ok());
    let (now_term, elected) = {
        let st = shared::STATE.share();
        (st.term, st.elected)
    };
    if term != Some(now_term) || !elected || unsafe { pg_sys::RecoveryInProgress() } {
        let _ = std::fs::remove_file(path(me));
        return vec![];
    }
    text.lines().skip(1).flat_map(|l| l.split_whitespace()).map(str::to_string).collect()
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
                // Metadata: no wait for a standby, no long lock wait in the round.
                c.update("SELECT set_config('synchronous_commit', 'local', true)", None, &[])?;
                c.update("SELECT set_config('lock_timeout', '50ms', true)", None, &[])?;
                let _guard = crate::registry_sql::WriteGuard::open();
                let changes: Vec<_> = rows.iter().map(|s| keeper_core::registry::Change::Delete(*s)).collect();
                crate::registry_sql::apply(c, &changes)?;
                crate::registry_sql::bump_membership(c)
            })
        });
        match r {
            Ok(()) => log!("pg_keeper: forced failover: {} removed from node_info", gone.join(", ")),
            Err(e) => {
                warning!("pg_keeper: forced failover: cannot remove {} from node_info yet: {e}", gone.join(", "));
                return;
            }
        }
    }
    let _ = std::fs::remove_file(path(me));
}

/// Worker, standby mode: a forced promotion `_force_failover` asked for (its term and the
/// nodes removed), if the request has not expired (the function waits for it a few seconds
/// at most; a request found later belongs to a call that gave up).
pub fn take_request() -> Option<(u64, Vec<String>)> {
    let mut st = shared::STATE.exclusive();
    if !st.force_requested {
        return None;
    }
    st.force_requested = false;
    if shared::boot_ms() > st.force_deadline {
        return None;
    }
    Some((st.force_term, shared::get_str(&st.force_removed).split_whitespace().map(str::to_string).collect()))
}

/// Before the promotion: still this node's own term (no vote given to anyone since), now
/// won; the removal on disk. Err leaves nothing behind.
pub fn prepare(me: &str, term: u64, gone: &[String]) -> Result<(), String> {
    let ok = crate::votes::with_record(me, |rec, st| {
        let mine = rec.term == term && rec.voted_for.as_deref() == Some(me) && shared::boot_ms() >= st.hold_until;
        if mine {
            st.promoting = true;
            st.revoke_lease("forced failover: its first heartbeat round opens the gate");
        }
        (mine, if mine { rec.won(me, term) } else { rec.clone() })
    })?;
    if !ok {
        return Err(format!("term {term} is no longer this node's own (a vote or a heartbeat of a newer term came)"));
    }
    if let Err(e) = crate::votes::durable_write(&path(me), &format!("term {term}\n{}\n", gone.join(" "))) {
        abandon(me);
        return Err(e);
    }
    crate::history::record(
        Kind::ForcedFailover,
        term,
        &std::iter::once(me).chain(gone.iter().map(String::as_str)).collect::<Vec<_>>(),
        &format!("pgkeeper failover --force: {} removed (did not answer)", gone.join(", ")),
    );
    Ok(())
}

/// The promotion did not happen: no win kept, no removal, votes answered again.
pub fn abandon(me: &str) {
    let _ = crate::votes::with_record(me, |rec, st| {
        st.promoting = false;
        ((), VoteRecord { elected: false, ..rec.clone() })
    });
    let _ = std::fs::remove_file(path(me));
}

/// Clears a request when `_force_failover` returns or fails (an ERROR unwinds through it).
struct RequestGuard;
impl Drop for RequestGuard {
    fn drop(&mut self) {
        shared::STATE.exclusive().force_requested = false;
    }
}

fn check_gone(removed: &[&Node], stay: &[&Node]) {
    let code = PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
    let deadline = Duration::from_secs(2);
    let rt = probe::runtime();
    for n in removed {
        let cfg = probe::config(&n.conninfo, None).unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, None));
        if rt.block_on(probe::poll(cfg, deadline)).is_ok() {
            fail(code, format!("{} answers this node: it is not gone", n.name), Some("Use pgkeeper failover without --force, or pgkeeper switchover."));
        }
    }
    // Every node that stays must answer, and reach none of the removed: a node that does
    // could be acknowledging the old master's lease.
    for s in stay {
        let cfg = probe::config(&s.conninfo, Some(&gucs::database()))
            .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, None));
        let st = rt.block_on(probe::state(cfg, deadline, None)).unwrap_or_else(|e| {
            fail(code, format!("{} does not answer ({e}): name it as removed too, or bring it back", s.name), None)
        });
        if !st.answer.in_recovery && !st.answer.witness {
            fail(code, format!("{} is not a standby: a master (fenced or not) is there", s.name), Some("Bring back its peers, or stop it and name it as removed."));
        }
        for n in removed {
            let cfg = probe::config(&s.conninfo, Some(&gucs::database()))
                .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, None));
            match rt.block_on(probe::poll_via(cfg, &n.conninfo, Duration::from_secs(4), deadline, false)) {
                Ok(v) if v.reached => fail(code, format!("{} still reaches {}: it is not gone", s.name, n.name), None),
                Ok(_) => {}
                Err(e) => fail(code, format!("cannot ask {} whether it reaches {}: {e}", s.name, n.name), None),
            }
        }
    }
}

/// `pgkeeper._force_failover(removed)`, on the standby to promote: checks, a term of its
/// own, waits out every lease, checks again, has the worker promote it. Returns the term.
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
    if !nodes.iter().any(|n| n.name == me) {
        fail(code, format!("{me} is not in node_info"), None);
    }
    for r in &removed {
        if *r == me {
            fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "the new master cannot be one of the removed nodes", None);
        }
        if !nodes.iter().any(|n| n.name == *r) {
            fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("\"{r}\" is not in node_info"), None);
        }
    }
    match nodes.iter().find(|n| n.is_master) {
        Some(m) if removed.contains(&m.name) => {}
        Some(m) => fail(code, format!("the master in node_info, {}, is not among the removed nodes", m.name), Some("A forced failover replaces a master that is gone.")),
        None => fail(code, "node_info names no master", None),
    }
    let gone: Vec<&Node> = nodes.iter().filter(|n| removed.contains(&n.name)).collect();
    let stay: Vec<&Node> = nodes.iter().filter(|n| !removed.contains(&n.name) && n.name != me).collect();
    check_gone(&gone, &stay);

    // A term of its own, with its own vote: from now on heartbeats of the old master (an
    // older term) extend no hold here. The gap leaves room for elections it never heard of.
    let term = crate::votes::with_record(&me, |rec, st| {
        let t = rec.term.max(st.seen_term) + keeper_core::election::FORCED_TERM_GAP;
        (t, VoteRecord { term: t, voted_for: Some(me.clone()), elected: false, ..rec.clone() })
    })
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e, None));
    // The old master's lease was acknowledged at the latest just before the checks (here or
    // by a node that stays): it has ended one voter hold from now, and this node's own hold.
    let hold = keeper_core::election::voter_hold(keeper_core::election::master_lease(Duration::from_secs_f64(
        gucs::KEEPALIVE_TIME.get().max(gucs::MIN_KEEPALIVE_TIME),
    )));
    let wait_from = shared::boot_ms();
    loop {
        let until = shared::STATE.share().hold_until.max(wait_from + hold.as_millis() as i64);
        if shared::boot_ms() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        pg_sys::check_for_interrupts!();
    }
    check_gone(&gone, &stay);
    let _guard = RequestGuard;
    {
        let mut st = shared::STATE.exclusive();
        st.force_requested = true;
        st.force_term = term;
        // (a round under way ends within its probe deadline, at most 10 s)
        st.force_deadline = shared::boot_ms() + 15_000;
        shared::put_str(&mut st.force_removed, &removed.join(" "));
    }
    if !shared::notify_worker(true, false) {
        fail(code, "no pg_keeper worker runs on this node", None);
    }
    let started = Instant::now();
    while unsafe { pg_sys::RecoveryInProgress() } {
        if started.elapsed() > Duration::from_secs(90) {
            fail(code, "this node is not promoted after 90 s: the promotion may still be under way, see the server log before anything else", None);
        }
        std::thread::sleep(Duration::from_millis(20));
        pg_sys::check_for_interrupts!();
    }
    term as i64
}
