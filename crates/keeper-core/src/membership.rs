//! Membership changes (add_node, del_node) that cannot split the majority.
//!
//! Every node counts majorities over its own replayed copy of node_info, so two nodes can
//! count over different memberships while a change travels (a paused replay, a lagging or
//! cut-off standby). The rule is Raft's single-server change:
//! - each change adds or removes one node and bumps the membership version (a counter in
//!   `pgkeeper.membership`, replicated with node_info);
//! - a change is made only once the previous one is *acknowledged*: a majority of the current
//!   members reported its version in their heartbeat answers as followers of this master's
//!   term or an older one ([`acknowledged`], [`follower_has`]);
//! - a voter refuses a candidate whose membership version is older than its own (the vote
//!   request carries it; `election::decide_vote`);
//! - a two-data-node cluster without witness (which runs without the lease) does so only once
//!   its other node has the current version ([`known_to_all`]); until then it needs the lease.
//!   A change made while the gate is open without a lease closes it at once, and only a round
//!   that read the new version may open it again (the adapter's `open_needs_version`);
//! - a writable node that is not in its own node_info (a deleted standby promoted on a stale
//!   copy) stays fenced.
//!
//! Why it is safe (docs/design.md has the argument in full): any majority of a membership and
//! any majority of one that differs from it by one node share a node. Only versions `k` (the
//! newest) and `k - 1` can elect: a change to `k` waited until a majority of `C(k-1)` had
//! `k - 1`, those nodes refuse every candidate of version `k - 2` or older, and any majority
//! of `C(k-2)` contains one of them. So every candidate's majority and every master's
//! majority come from memberships one change apart, and intersect.

use crate::election::{PeerAnswer, Term};
use crate::failover::is_majority;
use crate::Node;

/// +1 per add_node / del_node; 0 before the first registration.
pub type Version = u64;

/// Whether `version` (the current one, of `nodes`) has reached a majority of `nodes`: `me`
/// has it, and so have the others whose heartbeat answers count ([`follower_has`]).
pub fn acknowledged(
    version: Version,
    nodes: &[Node],
    me: &str,
    my_term: Term,
    answers: &[(String, Option<PeerAnswer>)],
) -> bool {
    is_majority(have(version, nodes, me, my_term, answers), nodes.len())
}

/// Whether every one of `nodes` has `version` (or a newer one), by the same count.
pub fn known_to_all(
    version: Version,
    nodes: &[Node],
    me: &str,
    my_term: Term,
    answers: &[(String, Option<PeerAnswer>)],
) -> bool {
    have(version, nodes, me, my_term, answers) == nodes.len()
}

/// A heartbeat answer says a node has `version` of *this* master's membership only when it
/// comes from a follower (a standby or a witness) in `my_term` or older. A master's answer,
/// or one from a newer term, may carry the same number for another master's change (the new
/// master of a term elected meanwhile counts its own changes), and must not count.
pub fn follower_has(version: Version, my_term: Term, a: &PeerAnswer) -> bool {
    (a.in_recovery || a.witness) && a.term <= my_term && a.membership >= version
}

fn have(version: Version, nodes: &[Node], me: &str, my_term: Term, answers: &[(String, Option<PeerAnswer>)]) -> usize {
    nodes
        .iter()
        .filter(|n| {
            n.name == me
                || answers
                    .iter()
                    .any(|(name, a)| *name == n.name && a.is_some_and(|a| follower_has(version, my_term, &a)))
        })
        .count()
}

/// Whether the registry change from `old` to `new` changes the membership (who votes and
/// counts), as opposed to the roles (master, next master, sync) of the same nodes.
pub fn changes_membership(old: &[Node], new: &[Node]) -> bool {
    fn names(ns: &[Node]) -> Vec<&str> {
        let mut v: Vec<&str> = ns.iter().map(|n| n.name.as_str()).collect();
        v.sort_unstable();
        v
    }
    names(old) != names(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<Node> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Node {
                seqno: i as i32 + 1,
                name: n.to_string(),
                conninfo: format!("host=10.0.0.{} port=5432", i + 1),
                is_master: i == 0,
                is_nextmaster: i == 1,
                is_sync: false,
                is_witness: false,
            })
            .collect()
    }

    /// Answers of standbys in term 1 with these versions.
    fn rep(v: &[(&str, Version)]) -> Vec<(String, Option<PeerAnswer>)> {
        v.iter().map(|(n, v)| (n.to_string(), Some(standby(1, *v)))).collect()
    }

    fn standby(term: Term, membership: Version) -> PeerAnswer {
        PeerAnswer {
            in_recovery: true,
            fenced: false,
            term,
            witness: false,
            deposed: false,
            elected: false,
            membership,
        }
    }

    #[test]
    fn a_change_needs_a_majority_with_its_version() {
        let c = nodes(&["a", "b", "c"]);
        assert!(!acknowledged(5, &c, "a", 1, &rep(&[("b", 4), ("c", 4)])));
        assert!(acknowledged(5, &c, "a", 1, &rep(&[("b", 5), ("c", 4)])));
        assert!(acknowledged(5, &c, "a", 1, &rep(&[("b", 6)])));
        // A node that is not a member does not count.
        assert!(!acknowledged(5, &c, "a", 1, &rep(&[("x", 5), ("y", 5)])));
        // Alone, the master is its own majority (the first registration).
        assert!(acknowledged(1, &nodes(&["a"]), "a", 0, &[]));
    }

    #[test]
    fn only_followers_of_this_term_count() {
        let c = nodes(&["a", "b", "c"]);
        // b answers from a newer term (it voted for another master, whose changes it counts).
        let newer = vec![("b".to_string(), Some(standby(2, 5)))];
        assert!(!acknowledged(5, &c, "a", 1, &newer));
        // b is a master (elected meanwhile, or promoted by hand): its number is its own.
        let master = PeerAnswer { in_recovery: false, fenced: true, ..standby(1, 5) };
        assert!(!acknowledged(5, &c, "a", 1, &[("b".to_string(), Some(master))]));
        // A witness is a follower.
        let witness = PeerAnswer { in_recovery: false, witness: true, ..standby(1, 5) };
        assert!(acknowledged(5, &c, "a", 1, &[("b".to_string(), Some(witness))]));
        assert!(!known_to_all(5, &nodes(&["a", "b"]), "a", 1, &newer));
    }

    #[test]
    fn two_nodes_settle_only_when_both_have_it() {
        let c = nodes(&["a", "b"]);
        assert!(!known_to_all(3, &c, "a", 1, &rep(&[("b", 2)])));
        assert!(!known_to_all(3, &c, "a", 1, &[]));
        assert!(known_to_all(3, &c, "a", 1, &rep(&[("b", 3)])));
    }

    #[test]
    fn roles_are_not_membership() {
        let a = nodes(&["a", "b", "c"]);
        let mut roles = a.clone();
        roles[1].is_nextmaster = false;
        roles[2].is_nextmaster = true;
        assert!(!changes_membership(&a, &roles));
        assert!(changes_membership(&a, &nodes(&["a", "b"])));
        assert!(changes_membership(&a, &nodes(&["a", "b", "c", "d"])));
    }

    /// The property behind the rule: majorities of memberships one change apart intersect;
    /// two changes apart they need not.
    #[test]
    fn majorities_one_change_apart_intersect() {
        fn majorities(m: &[&str]) -> Vec<Vec<String>> {
            let n = m.len();
            (0u32..1 << n)
                .filter(|bits| is_majority(bits.count_ones() as usize, n))
                .map(|bits| (0..n).filter(|i| bits & (1 << i) != 0).map(|i| m[i].to_string()).collect())
                .collect()
        }
        let all = ["a", "b", "c", "d", "e"];
        for size in 1..=4 {
            let old = &all[..size];
            let new = &all[..size + 1];
            for x in majorities(old) {
                for y in majorities(new) {
                    assert!(x.iter().any(|n| y.contains(n)), "{x:?} and {y:?} share no node");
                }
            }
        }
        // {a,b,c} -> {a,b,c,d} -> {a,b,c,d,e}: {a,b} and {c,d,e} are majorities of the first
        // and the last, and share nothing: hence one change at a time.
        let (x, y) = (vec!["a", "b"], vec!["c", "d", "e"]);
        assert!(is_majority(x.len(), 3) && is_majority(y.len(), 5) && !x.iter().any(|n| y.contains(n)));
    }
}
