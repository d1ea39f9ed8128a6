//! Master mode's heartbeat round, as a sans-IO state machine: the worker
//! (crates/pg_keeper/src/master.rs) and the simulation drive this very code.
//!
//! A round tells every other registered node this master's term and lease (a heartbeat,
//! which sets their vote hold: `election::voter_hold`), or, from a master that may not hold
//! the lease (promoted outside an election), only looks at them. Each answer acts the moment
//! it arrives ([`HeartbeatRound::on_answer`]): the lease is renewed from the round's start as
//! soon as a majority counts, and an answer from another writable node ends it at once, with
//! nothing renewing it in that round. The end of the round ([`HeartbeatRound::finish`]) reads
//! all the answers (`election::master_verdict`) and says what becomes of the gate.

use crate::election::{lease_effect, master_verdict, LeaseEffect, MasterVerdict, PeerAnswer, Term};
use crate::failover::is_majority;
use crate::Node;
use std::time::Duration;

/// Whether the cluster can elect another master without this one, so that the master
/// needs a lease: three registered nodes or more, or two with `two_node_failover`, or two
/// before the other node has the current membership (`settled`: until then it may still
/// count over the three nodes it had before a del_node and elect itself with the deleted
/// node's vote). Otherwise (two data nodes, no witness) the gate opens without a lease.
pub fn can_fail_over(registered: usize, two_node_failover: bool, settled: bool) -> bool {
    registered >= 3 || (registered == 2 && (two_node_failover || !settled))
}

/// What the master knows when the round starts.
#[derive(Debug, Clone)]
pub struct RoundStart {
    /// Its vote record's term (the term it won).
    pub term: Term,
    /// It may hold the lease (`election::may_hold_lease`): it sends heartbeats.
    pub entitled: bool,
    /// The cluster can elect another master without it (else the gate opens without a
    /// lease: two data nodes, no witness, membership settled).
    pub can_fail_over: bool,
    /// node_info as this round read it (this node included).
    pub nodes: Vec<Node>,
    pub me: String,
    /// When the round starts, and the lease a renewal grants from then.
    pub started: Duration,
    pub lease: Duration,
}

/// What an answer does to the lease now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseNow {
    Unchanged,
    /// End the lease at once (another node accepts writes).
    End,
    /// Extend the lease to `until`, if the gate is (still) waiting for a lease
    /// (`gate::Setting::Lease`: not open without one, not closed for good).
    Extend {
        until: Duration,
    },
}

/// What the end of a round does to the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateStep {
    /// A node elected in a newer term accepts writes: closed for good (`gate::Setting::Deposed`).
    Deposed { by: String, term: Term },
    /// No lease (and any running ends): another node of an older or equal term accepts
    /// writes, or this node may never hold one.
    Revoke { why: String },
    /// Two data nodes without a witness: open without a lease, if node_info did not change
    /// since this round read it (`gate::open_without_lease`).
    OpenWithoutLease,
    /// Waits for a lease; `extend_to`: renewed (by a majority this round) until then.
    NeedLease { why: String, extend_to: Option<Duration> },
}

#[derive(Debug, Clone)]
pub struct RoundEnd {
    pub verdict: MasterVerdict,
    pub gate: GateStep,
    /// Each other registered node and its answer (None: none within the deadline).
    pub answers: Vec<(String, Option<PeerAnswer>)>,
}

#[derive(Debug, Clone)]
pub struct HeartbeatRound {
    start: RoundStart,
    /// Rule 2 (`rules::Rules::per_answer_lease`): answers act as they arrive. Off (the
    /// simulation's older model): the lease is renewed only at the end of the round.
    per_answer: bool,
    /// Answers that count so far (this node included), and whether one came from another
    /// writable node.
    counted: usize,
    conflict: bool,
    answers: Vec<(String, Option<PeerAnswer>)>,
}

impl HeartbeatRound {
    pub fn new(start: RoundStart, per_answer: bool) -> HeartbeatRound {
        let answers = start.nodes.iter().filter(|n| n.name != start.me).map(|n| (n.name.clone(), None)).collect();
        HeartbeatRound { start, per_answer, counted: 1, conflict: false, answers }
    }

    /// Send heartbeats (else plain polls: a master that may not hold the lease must not hold
    /// the voters from electing the real master's successor).
    pub fn heartbeat(&self) -> bool {
        self.start.entitled
    }

    /// The nodes to ask.
    pub fn peers(&self) -> Vec<String> {
        self.answers.iter().map(|(n, _)| n.clone()).collect()
    }

    /// `from` answered already this round.
    pub fn answered(&self, from: &str) -> bool {
        self.answers.iter().any(|(n, a)| n == from && a.is_some())
    }

    /// One node answered (a second answer from it is ignored).
    pub fn on_answer(&mut self, from: &str, a: &PeerAnswer) -> LeaseNow {
        let Some(slot) = self.answers.iter_mut().find(|(n, x)| n == from && x.is_none()) else {
            return LeaseNow::Unchanged;
        };
        slot.1 = Some(*a);
        if !self.start.entitled {
            return LeaseNow::Unchanged;
        }
        match lease_effect(self.start.term, a) {
            LeaseEffect::EndsLease => {
                self.conflict = true;
                if self.per_answer {
                    LeaseNow::End
                } else {
                    LeaseNow::Unchanged
                }
            }
            LeaseEffect::Counts => {
                self.counted += 1;
                if self.per_answer
                    && self.start.can_fail_over
                    && !self.conflict
                    && is_majority(self.counted, self.start.nodes.len())
                {
                    LeaseNow::Extend { until: self.start.started + self.start.lease }
                } else {
                    LeaseNow::Unchanged
                }
            }
            LeaseEffect::Ignored => LeaseNow::Unchanged,
        }
    }

    /// A majority answered this round's heartbeat in this term or older, and no other node
    /// accepts writes: they all persisted what it carried (the eligible set).
    pub fn majority_heard(&self) -> bool {
        self.start.entitled && !self.conflict && is_majority(self.counted, self.start.nodes.len())
    }

    /// The round is over (every answer in, or the deadline).
    pub fn finish(self) -> RoundEnd {
        let s = &self.start;
        let verdict = master_verdict(s.term, &s.nodes, &self.answers);
        let gate = match &verdict {
            MasterVerdict::OtherMaster { name, term, newer: true } => GateStep::Deposed { by: name.clone(), term: *term },
            MasterVerdict::OtherMaster { name, .. } => GateStep::Revoke { why: format!("{name} also accepts writes") },
            _ if !s.entitled => GateStep::Revoke {
                why: format!(
                    "this node was promoted outside an election (term {}): it never holds the master's lease",
                    s.term
                ),
            },
            _ if !s.can_fail_over => GateStep::OpenWithoutLease,
            MasterVerdict::NoMajority { reached, registered } => GateStep::NeedLease {
                why: format!(
                    "it has not heard from a majority of the cluster: {reached} of {registered} registered nodes answered"
                ),
                extend_to: None,
            },
            MasterVerdict::Renew { .. } => GateStep::NeedLease {
                why: "its lease ran out".into(),
                extend_to: (!self.conflict).then_some(s.started + s.lease),
            },
        };
        RoundEnd { verdict, gate, answers: self.answers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node {
                seqno: i as i32 + 1,
                name: format!("n{i}"),
                conninfo: String::new(),
                is_master: i == 0,
                is_nextmaster: false,
                is_sync: false,
                is_witness: false,
            })
            .collect()
    }

    fn start(n: usize) -> RoundStart {
        RoundStart {
            term: 2,
            entitled: true,
            can_fail_over: true,
            nodes: nodes(n),
            me: "n0".into(),
            started: Duration::from_secs(10),
            lease: Duration::from_secs(2),
        }
    }

    fn standby(term: Term) -> PeerAnswer {
        PeerAnswer {
            in_recovery: true,
            fenced: false,
            term,
            witness: false,
            deposed: false,
            elected: false,
            membership: 0,
        }
    }

    #[test]
    fn renewed_the_moment_a_majority_answers() {
        let mut r = HeartbeatRound::new(start(5), true);
        assert_eq!(r.peers().len(), 4);
        assert_eq!(r.on_answer("n1", &standby(2)), LeaseNow::Unchanged);
        assert_eq!(r.on_answer("n2", &standby(3)), LeaseNow::Unchanged, "a newer term does not count");
        assert_eq!(r.on_answer("n3", &standby(1)), LeaseNow::Extend { until: Duration::from_secs(12) });
        assert!(r.majority_heard());
        let end = r.finish();
        assert_eq!(
            end.gate,
            GateStep::NeedLease { why: "its lease ran out".into(), extend_to: Some(Duration::from_secs(12)) }
        );
    }

    #[test]
    fn another_writable_node_ends_the_lease_and_nothing_renews_it() {
        let mut r = HeartbeatRound::new(start(3), true);
        let master = PeerAnswer { in_recovery: false, elected: true, ..standby(2) };
        assert_eq!(r.on_answer("n1", &master), LeaseNow::End);
        assert_eq!(r.on_answer("n2", &standby(2)), LeaseNow::Unchanged);
        assert!(!r.majority_heard());
        assert!(matches!(r.finish().gate, GateStep::Revoke { .. }));
        let mut r = HeartbeatRound::new(start(3), true);
        r.on_answer("n1", &PeerAnswer { term: 3, ..master });
        assert_eq!(r.finish().gate, GateStep::Deposed { by: "n1".into(), term: 3 });
    }

    #[test]
    fn a_master_promoted_by_hand_never_holds_a_lease() {
        let mut r = HeartbeatRound::new(RoundStart { entitled: false, ..start(3) }, true);
        assert!(!r.heartbeat());
        assert_eq!(r.on_answer("n1", &standby(0)), LeaseNow::Unchanged);
        assert_eq!(r.on_answer("n2", &standby(0)), LeaseNow::Unchanged);
        assert!(matches!(r.finish().gate, GateStep::Revoke { .. }));
    }
}
