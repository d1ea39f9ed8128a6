//! Synchronous replication (`Faults::synchronous`): `synchronous_standby_names = 'FIRST 1
//! (n0, n1, ...)'` on every node, the eligible set (keeper_core::eligibility) and invariant 8,
//! "no acknowledged synchronous commit lost".
//!
//! What is modelled:
//! - Each node's WAL is the list of the terms of the masters that wrote its records (`wal`;
//!   `lsn` is its length) on a timeline (`tli`): a promotion starts a new one, a standby takes
//!   its master's. A standby streams from the master it knows, over working links, only while
//!   its WAL is a prefix of the master's (else it would need pg_rewind, not modelled: it stays
//!   where it is, and does not stream).
//! - PostgreSQL's wait: the synchronous standby is the lowest-numbered standby streaming from
//!   the master; the master releases waiting commits up to its WAL (`released`, monotone,
//!   lost at a restart as `WalSndCtl->lsn`).
//! - Master mode: every heartbeat round computes the eligible set with `eligible_now` (floored
//!   at the WAL the node had at its first master round, as master.rs), `Told::send`s it,
//!   persists it in its own record and sends it; a round a majority answered calls
//!   `Told::majority_persisted`. Voters persist it through `on_heartbeat` before answering
//!   (rule 7: `Rules::to_persist`), and `decide_vote` refuses non-members.
//! - A commit, durable, waits for the release, then for the post-commit check: the gate open
//!   (`Rules::acknowledge`) and the commit on every standby that `Rules::commit_rule` names
//!   (rule 8: streaming from this master with the record), up to the gate's longest wait
//!   (`timing::gate_wait`) from the release; then the session ends unanswered.
//! - A winner first fetches the WAL of the node `Step::Promote` names (`fast_forward_source`),
//!   when it can reach it and that WAL extends its own (instantly: no time is modelled for it).
//!
//! Invariant 8: at every election win, the winner's WAL holds every commit acknowledged
//! before, at its position.
//!
//! Not modelled: the degrade to asynchronous replication (the sync guard) and its restore;
//! ANY k; replay lag (the eligible set counts flushed WAL); hand promotions and membership
//! changes with synchronous replication.

use super::*;
use keeper_core::eligibility::{eligible_now, CommitRule, Released, WalSender};

/// A durable commit waiting for PostgreSQL's release and the post-commit check.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiting {
    pub(super) n: usize,
    pub(super) gen: u64,
    pub(super) term: Term,
    pub(super) passed: u64,
    /// Its position in n's WAL.
    pub(super) pos: u64,
    /// Set at the release: the session ends unanswered then (global time).
    pub(super) give_up: Option<u64>,
}

/// Node names of a bit set of sim indexes.
pub(super) fn names(set: u32) -> Vec<String> {
    (0..32).filter(|j| set >> j & 1 == 1).map(|j| format!("n{j}")).collect()
}

fn bits(names: &[String]) -> u32 {
    names.iter().fold(0, |m, n| m | 1 << idx(n))
}

impl Sim {
    /// Standby i streams from master m: takes the WAL it lacks, if its own is a prefix of m's.
    pub(super) fn stream(&mut self, i: usize, m: usize) {
        if !self.nodes[m].wal.starts_with(&self.nodes[i].wal) {
            return;
        }
        let (wal, tli) = (self.nodes[m].wal.clone(), self.nodes[m].tli);
        let s = &mut self.nodes[i];
        s.wal = wal;
        s.lsn = s.wal.len() as u64;
        s.tli = tli;
        self.nodes[m].streaming |= 1 << i;
    }

    /// After a replication tick: each master releases commits up to its synchronous
    /// standby's WAL (the lowest-numbered one streaming), and the waiting commits settle.
    pub(super) fn release_and_settle(&mut self) {
        for m in 0..self.n {
            let streaming = self.nodes[m].streaming;
            if streaming != 0 {
                let sync = streaming.trailing_zeros() as usize;
                let upto = self.nodes[sync].lsn.min(self.nodes[m].lsn);
                let s = &mut self.nodes[m];
                s.released = s.released.max(upto);
            }
        }
        self.settle();
    }

    /// The waiting commits that can end now: acknowledged, or their session ended unanswered.
    pub(super) fn settle(&mut self) {
        let core = self.rules.core();
        let wait = us(keeper_core::timing::gate_wait(Duration::from_micros(self.k), self.cfg.keepalive_count));
        for mut c in std::mem::take(&mut self.waiting) {
            let s = &self.nodes[c.n];
            if !s.alive || s.gen != c.gen {
                continue; // lost with the server
            }
            if self.frozen(c.n) || s.released < c.pos {
                self.waiting.push(c);
                continue;
            }
            let give_up = *c.give_up.get_or_insert(self.now + wait);
            let on_every = match core.commit_rule(&s.told) {
                CommitRule::Asynchronous => true,
                CommitRule::Wait => false,
                CommitRule::OnEvery(v) => {
                    v.iter().all(|name| s.streaming >> idx(name) & 1 == 1 && self.nodes[idx(name)].lsn >= c.pos)
                }
            };
            let gate = if self.unfenced(c.n) { Gate::Open } else { Gate::Fenced { why: String::new() } };
            if on_every && core.acknowledge(&gate) {
                self.acked.push((c.pos, c.term, c.n, self.now));
                self.acknowledged(c.n, c.term, c.passed);
            } else if self.now >= give_up {
                self.stats.withheld += 1;
                tr!(self, "n{}: synchronous commit at {} not acknowledged (the session ends)", c.n, c.pos);
            } else {
                self.waiting.push(c);
            }
        }
    }

    /// Master mode's eligible set this round (master.rs): told, persisted in its own record,
    /// and carried by the heartbeat. None without synchronous replication.
    pub(super) fn tell_eligible(&mut self, i: usize, entitled: bool, term: Term) -> Option<u32> {
        if !self.faults.synchronous {
            return None;
        }
        let s = &self.nodes[i];
        let floor = s.ack_floor.unwrap_or(s.lsn);
        let waited_for = if s.streaming == 0 { None } else { Some(s.streaming.trailing_zeros() as usize) };
        let senders: Vec<WalSender> = (0..self.n)
            .filter(|&j| s.streaming >> j & 1 == 1)
            .map(|j| {
                let l = self.nodes[j].lsn;
                WalSender {
                    name: self.nodes[j].name.clone(),
                    waited_for: Some(j) == waited_for,
                    at: Released { write: l, flush: l, apply: l },
                }
            })
            .collect();
        let r = s.released;
        let acknowledged = Released { write: r, flush: r, apply: r }.at_least(floor);
        let registered: Vec<&str> =
            s.view.iter().filter(|n| n.name != s.name && !n.is_witness).map(|n| n.name.as_str()).collect();
        let set = eligible_now(true, &senders, acknowledged, &registered);
        self.nodes[i].ack_floor = Some(floor);
        if entitled {
            let rec = self.nodes[i].rec.told(term, self.rules.core().to_persist(set.clone()));
            self.persist(i, rec);
            self.nodes[i].told.send(set.clone());
        }
        set.as_deref().map(bits)
    }

    /// A promotion starts a new timeline; the master mode's memory starts empty.
    pub(super) fn new_timeline(&mut self, i: usize) {
        let s = &mut self.nodes[i];
        s.tli = self.next_tli;
        s.told = Default::default();
        s.released = 0;
        s.ack_floor = None;
        self.next_tli += 1;
    }

    /// Before promoting, the winner fetches the WAL `fetch_from` has beyond its own.
    pub(super) fn fast_forward(&mut self, i: usize, fetch_from: Option<(String, Position)>) {
        let Some((from, target)) = fetch_from else { return };
        let f = idx(&from);
        let reachable = self.nodes[f].alive && !self.frozen(f) && self.link_up(i, f) && self.link_up(f, i);
        if !reachable || !self.nodes[f].wal.starts_with(&self.nodes[i].wal) {
            tr!(self, "n{i} cannot fetch WAL up to {target} from {from}: promotes without it");
            return;
        }
        let upto = (target.lsn as usize).min(self.nodes[f].wal.len());
        let wal = self.nodes[f].wal[..upto].to_vec();
        tr!(self, "n{i} fetches WAL from {} to {upto} from {from}", self.nodes[i].lsn);
        let s = &mut self.nodes[i];
        s.wal = wal;
        s.lsn = upto as u64;
    }

    /// Invariant 8: the winner of `term` holds every commit acknowledged so far.
    pub(super) fn check_acknowledged_kept(&mut self, i: usize, term: Term) {
        self.stats.sync_wins_checked += 1;
        let wal = &self.nodes[i].wal;
        let lost = self.acked.iter().find(|&&(pos, t, _, _)| wal.get(pos as usize - 1) != Some(&t));
        if let Some(&(pos, t, by, at)) = lost {
            let m = format!(
                "acknowledged synchronous commit lost: n{by} (term {t}) acknowledged its record {pos} at {:.4}s; \
                 n{i} wins term {term} with {} records, its record {pos} {}",
                at as f64 / 1e6,
                wal.len(),
                match wal.get(pos as usize - 1) {
                    Some(o) => format!("written in term {o}"),
                    None => "missing".into(),
                }
            );
            self.fail(m);
        }
    }
}
