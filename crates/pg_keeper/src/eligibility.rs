//! The facts behind `keeper_core::eligibility`, and its commit rule applied in backends.
//!
//! Master mode reads who PostgreSQL waits for (`pg_stat_replication`) and how far it has
//! released waiting commits (`WalSndCtl->lsn`), names the eligible standbys in its heartbeat,
//! and publishes the commit rule in shared memory as WAL sender pids. A backend whose commit
//! waited for synchronous replication then checks, once the commit is durable and before the
//! client is told (`gate.rs`), that each of those WAL senders reports the commit flushed
//! (written / applied for `remote_write` / `remote_apply`).

use crate::shared;
use keeper_core::eligibility::{eligible_now, CommitRule, Released, WalSender};
use keeper_core::{Node, SyncConfig};
use pgrx::prelude::*;

/// What master mode read of its WAL senders this round.
pub struct Replication {
    pub senders: Vec<WalSender>,
    /// WAL sender pid of each standby, by application_name.
    pub pids: Vec<(String, i32)>,
    /// [`released_up_to`], read before the rows.
    pub acknowledged: Released,
    /// Standbys in state `streaming` (connected and caught up): the sync guard's input, from
    /// the same read (one pg_stat_replication query per round).
    pub streaming: Vec<String>,
}

pub fn read(floor: u64) -> Result<Replication, String> {
    // The release position first: every row read after it has flushed at least as far.
    let acknowledged = released_up_to().at_least(floor);
    let rows = crate::tx::transaction(|| {
        Spi::connect(|c| {
            let mut out = Vec::new();
            for row in crate::plans::select(
                c,
                "SELECT application_name, pid, sync_state IN ('sync', 'quorum'), \
                 coalesce(write_lsn, '0/0')::text, coalesce(flush_lsn, '0/0')::text, \
                 coalesce(replay_lsn, '0/0')::text, state = 'streaming' FROM pg_catalog.pg_stat_replication",
            )? {
                let lsn =
                    |i: usize| row.get::<String>(i).map(|s| s.and_then(|s| keeper_core::lsn::parse(&s)).unwrap_or(0));
                out.push((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<i32>(2)?.unwrap_or(0),
                    row.get::<bool>(3)?.unwrap_or(false),
                    Released { write: lsn(4)?, flush: lsn(5)?, apply: lsn(6)? },
                    row.get::<bool>(7)?.unwrap_or(false),
                ));
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })
    .map_err(|e| e.to_string())?;
    Ok(Replication {
        acknowledged,
        senders: rows.iter().map(|(n, _, w, f, _)| WalSender { name: n.clone(), waited_for: *w, at: *f }).collect(),
        pids: rows.iter().map(|(n, p, _, _, _)| (n.clone(), *p)).collect(),
        streaming: rows.iter().filter(|r| r.4).map(|r| r.0.clone()).collect(),
    })
}

/// Up to where PostgreSQL released commits waiting for synchronous replication, per level
/// (`WalSndCtl->lsn[SYNC_REP_WAIT_WRITE / FLUSH / APPLY]`): every acknowledged synchronous
/// commit ends at or before the position of the level it waited for.
pub fn released_up_to() -> Released {
    unsafe {
        let ctl = pg_sys::WalSndCtl;
        if ctl.is_null() {
            return Released::default();
        }
        let l = |i: usize| std::ptr::read_volatile(&(*ctl).lsn[i]);
        Released { write: l(0), flush: l(1), apply: l(2) }
    }
}

/// What the set was computed from, for the log.
pub fn describe(r: &Replication) -> String {
    let f = keeper_core::lsn::format;
    let mut s = format!("released write {} flush {}", f(r.acknowledged.write), f(r.acknowledged.flush));
    for w in &r.senders {
        s.push_str(&format!(
            "; {}{} write {} flush {}",
            w.name,
            if w.waited_for { " (waited for)" } else { "" },
            f(w.at.write),
            f(w.at.flush)
        ));
    }
    s
}

/// The set to tell the voters now (None: asynchronous).
pub fn eligible(me: &str, nodes: &[Node], repl: &Replication) -> Option<Vec<String>> {
    let configured = matches!(SyncConfig::parse(&crate::sync_state::sync_names_now()), Ok(Some(_)));
    let synchronous = configured || repl.senders.iter().any(|s| s.waited_for);
    let registered: Vec<&str> =
        nodes.iter().filter(|n| n.name != me && !n.is_witness).map(|n| n.name.as_str()).collect();
    eligible_now(synchronous, &repl.senders, repl.acknowledged, &registered)
}

/// Publish the commit rule for the backends.
pub fn publish(rule: &CommitRule, repl: &Replication) {
    let mut st = shared::STATE.exclusive();
    match rule {
        CommitRule::Asynchronous => st.sync_rule = shared::SYNC_RULE_ASYNC,
        CommitRule::Wait => st.sync_rule = shared::SYNC_RULE_WAIT,
        CommitRule::OnEvery(names) => {
            let mut n = 0;
            let mut missing = false;
            for name in names {
                match repl.pids.iter().find(|(a, _)| a == name) {
                    Some((_, pid)) if n < shared::MAX_PEERS => {
                        st.sync_pids[n] = *pid;
                        n += 1;
                    }
                    _ => missing = true,
                }
            }
            st.sync_npids = n as u32;
            st.sync_missing = missing;
            st.sync_rule = shared::SYNC_RULE_ON_EVERY;
        }
    }
}

/// A backend, after its commit is durable: is a commit that waited for synchronous
/// replication on every standby the rule names? True when no rule applies (asynchronous,
/// a commit that did not wait, not a master).
/// `end`: where the commit record ends (for PREPARE and COMMIT / ROLLBACK PREPARED, whose
/// record end is not exported: the WAL flushed now, which is past it).
pub fn commit_reached_every(end: u64) -> Option<bool> {
    use pg_sys::SyncCommitLevel::*;
    let level = unsafe { pg_sys::synchronous_commit } as u32;
    if level <= SYNCHRONOUS_COMMIT_LOCAL_FLUSH || end == 0 || !shared::available() {
        return Some(true);
    }
    let st = *shared::STATE.share();
    match st.sync_rule {
        shared::SYNC_RULE_ASYNC => return Some(true),
        shared::SYNC_RULE_WAIT => return None,
        _ => {}
    }
    if st.sync_missing {
        return Some(false);
    }
    let pids = &st.sync_pids[..st.sync_npids as usize];
    Some(pids.iter().all(|pid| sender_has(*pid, end, level)))
}

/// The WAL sender `pid` reports `end` written / flushed / applied (by `level`). Read without
/// its spinlock: one aligned 8-byte value, and a stale one only makes the commit wait longer.
fn sender_has(pid: i32, end: u64, level: u32) -> bool {
    use pg_sys::SyncCommitLevel::*;
    unsafe {
        let ctl = pg_sys::WalSndCtl;
        if ctl.is_null() {
            return false;
        }
        let slots = (*ctl).walsnds.as_ptr();
        for i in 0..pg_sys::max_wal_senders.max(0) as usize {
            let w = slots.add(i);
            if std::ptr::read_volatile(&(*w).pid) != pid {
                continue;
            }
            let at = match level {
                SYNCHRONOUS_COMMIT_REMOTE_WRITE => std::ptr::read_volatile(&(*w).write),
                SYNCHRONOUS_COMMIT_REMOTE_APPLY => std::ptr::read_volatile(&(*w).apply),
                _ => std::ptr::read_volatile(&(*w).flush),
            };
            return at >= end;
        }
        false
    }
}
