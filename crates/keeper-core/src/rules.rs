//! The safety rules where the protocol had a choice, as data: [`Rules::AS_BUILT`] is what
//! pg_keeper runs; every other value exists so that the simulation (tests/simulation/) can
//! show what each rule protects against, by running this very code with it reverted
//! (`must_find_unsafe` there).

use crate::candidacy;
use crate::election::{may_hold_lease, VoteRecord};
use crate::eligibility::{CommitRule, Told};
use crate::gate::{Gate, Setting};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The election's own rules (pre-vote, when to count, the own-record check, the win's
    /// lease).
    pub candidacy: candidacy::Rules,
    /// Rule 1: only an elected master (or node_info's master before any election) holds the
    /// lease ([`may_hold_lease`]). Off: every writable node acts as an elected master.
    pub lease_entitlement: bool,
    /// Rule 2: heartbeat answers act as they arrive (`heartbeat::HeartbeatRound::new`).
    pub per_answer_lease: bool,
    /// Rule 3: deposed and stepped down are for good ([`Setting::then`]). Off: a round in
    /// flight sets the gate back to "lease".
    pub sticky_gate: bool,
    /// Rule 5: a commit is acknowledged only if the gate is still open once it is durable
    /// (and while its reply is written). Off: whenever it becomes durable.
    pub post_commit_check: bool,
    /// Rule 7 (issue 2/7): each voter persists the eligible set a heartbeat carries (the
    /// master its own) and votes only for a member. Off: the set is dropped on arrival, and
    /// the voter with the most WAL wins as without synchronous replication.
    pub eligible_votes: bool,
    /// Rule 8: a synchronous commit is acknowledged only once it is on every standby of every
    /// eligible set a voter may hold ([`Told::commit_rule`]). Off: once PostgreSQL released it.
    pub commit_on_eligible: bool,
}

impl Rules {
    pub const AS_BUILT: Rules = Rules {
        candidacy: candidacy::Rules::AS_BUILT,
        lease_entitlement: true,
        per_answer_lease: true,
        sticky_gate: true,
        post_commit_check: true,
        eligible_votes: true,
        commit_on_eligible: true,
    };

    /// Whether a writable node may hold the master's lease (heartbeat, count answers, open its
    /// gate, vote as a master).
    pub fn may_hold_lease(&self, rec: &VoteRecord, registered_master: bool) -> bool {
        !self.lease_entitlement || may_hold_lease(rec, registered_master)
    }

    /// The gate's setting after someone sets `new`.
    pub fn gate_then(&self, current: Setting, new: Setting) -> Setting {
        if self.sticky_gate {
            current.then(new)
        } else {
            new
        }
    }

    /// Whether a durable commit may be acknowledged, given the gate now.
    pub fn acknowledge(&self, gate_now: &Gate) -> bool {
        !self.post_commit_check || *gate_now == Gate::Open
    }

    /// The eligible set to persist, of one a heartbeat carries (or a master tells).
    pub fn to_persist(&self, eligible: Option<Vec<String>>) -> Option<Vec<String>> {
        eligible.filter(|_| self.eligible_votes)
    }

    /// What the post-commit check requires of a synchronous commit, given the sets told.
    pub fn commit_rule(&self, told: &Told) -> CommitRule {
        if self.commit_on_eligible {
            told.commit_rule()
        } else {
            CommitRule::Asynchronous
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::AS_BUILT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_built_keeps_every_rule() {
        let r = Rules::AS_BUILT;
        assert_eq!(r.gate_then(Setting::SteppedDown, Setting::Lease), Setting::SteppedDown);
        assert!(!r.may_hold_lease(&VoteRecord { term: 2, ..Default::default() }, true));
        assert!(r.may_hold_lease(&VoteRecord::default(), true), "the first master, term 0");
        assert!(!r.acknowledge(&Gate::Fenced { why: String::new() }));
        let off = Rules { sticky_gate: false, lease_entitlement: false, post_commit_check: false, ..r };
        assert_eq!(off.gate_then(Setting::SteppedDown, Setting::Lease), Setting::Lease);
        assert!(off.may_hold_lease(&VoteRecord { term: 2, ..Default::default() }, true));
        assert!(off.acknowledge(&Gate::Fenced { why: String::new() }));
    }
}
