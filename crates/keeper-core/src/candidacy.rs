//! Standing for election, as a sans-IO state machine (quinn-proto beside quinn): the worker
//! (crates/pg_keeper/src/candidate.rs) and the simulation (tests/simulation/) both drive
//! this very code; neither decides anything about the election itself.
//!
//! The order: wait out a backoff after a lost ballot and any master lease this node still
//! honours; cast its own vote (a pre-vote first, if [`Rules::pre_vote`]: would a majority
//! grant? nothing is persisted, so a candidate that cannot win pushes no term up); ask every
//! other registered node but the old master at once; count ([`tally`]) when every reply is
//! in, at the deadline, or as soon as the replies so far win once [`timing::early_count_after`]
//! has passed; then promote, yield, or back off a random part of a round.
//!
//! ```text
//!   stand ──► CastOwnVote{dry} ──own_vote(ok)──► Ask ──on_reply…/ready──► count
//!     │              │                                                     │
//!     └─ Wait ◄──────┴─ refused ◄────────── Lost (backoff) / Yield ◄───────┤
//!                                      pre-vote Won ──► CastOwnVote{real} ◄┤
//!                                            vote Won ──► Promote ◄────────┘
//! ```
//!
//! Time is whatever the driver says it is (`now`, a [`Duration`] since any fixed origin of
//! a monotonic clock); randomness comes from a seed the driver gives.

use crate::election::{
    fast_forward_source, next_term, tally, Refusal, Tally, Term, VoteRecord, VoteReply, VoteRequest,
};
use crate::lsn::Position;
use crate::timing;
use crate::Node;
use std::time::Duration;

/// When a new master's lease starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinLease {
    /// At the win, from the instant the vote requests went out (as candidate.rs was first
    /// written). Unsafe: votes take no hold, so nothing stops a second candidate from winning
    /// a newer term with the same voters while this lease runs.
    FromVoteRequests,
    /// Only from the new master's first heartbeat round that a majority answers: every lease
    /// then comes from a heartbeat round, which is what the timing argument covers.
    FromFirstRenewal,
}

/// When a candidate counts its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// When every node answered, or at the deadline.
    AllOrDeadline,
    /// Also as soon as [`tally`] over the replies so far says Won, once
    /// [`timing::early_count_after`] has passed since the requests went out.
    EarlyAfterGrace,
    /// Same with this grace, per mille of keepalive_time (0: at once).
    EarlyAfterPermille(u64),
}

/// The election's rules where there was a choice. [`Rules::AS_BUILT`] is what pg_keeper runs;
/// the others exist so that the simulation can show what each rule protects against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Ask first whether a majority would grant (Raft's pre-vote).
    pub pre_vote: bool,
    pub count: Count,
    /// Promote only if the candidate's own record still says "this term, voted for me"
    /// ([`crate::election::may_promote`]), checked under the lock that serialises votes.
    pub check_own_record: bool,
    pub win_lease: WinLease,
}

impl Rules {
    pub const AS_BUILT: Rules = Rules {
        pre_vote: true,
        count: Count::EarlyAfterGrace,
        check_own_record: true,
        win_lease: WinLease::FromFirstRenewal,
    };
}

impl Default for Rules {
    fn default() -> Self {
        Rules::AS_BUILT
    }
}

/// What the node knows when it considers standing.
#[derive(Debug, Clone)]
pub struct Stand<'a> {
    pub me: &'a str,
    /// node_info as this node reads it.
    pub nodes: &'a [Node],
    pub old_master: &'a str,
    /// WAL this node has received, and its timeline.
    pub mine: Position,
    /// Its vote record now.
    pub rec: &'a VoteRecord,
    /// The newest term seen in heartbeats, vote requests and replies.
    pub seen: Term,
    /// Time left of the last master lease acknowledged here ([`crate::election::voter_hold`]).
    pub hold_left: Duration,
    /// The membership version of `nodes`.
    pub membership: crate::membership::Version,
    /// pg_keeper.two_node_failover.
    pub two_node: bool,
    pub keepalive_time: Duration,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not standing now. `state`: for the status; `notice`: worth a log line (once);
    /// `retry_at`: run again then rather than a whole round later; `seen`: a term to note.
    Wait { state: String, notice: Option<String>, retry_at: Option<Duration>, seen: Term },
    /// Answer `request` as a voter would, on this node's own record ([`crate::election::decide_vote`]:
    /// persisted unless `dry`), and give the result to [`Candidacy::own_vote`].
    CastOwnVote { request: VoteRequest, dry: bool },
    /// Send `request` (a pre-vote if `dry`) to each of `to`, each within `deadline`; give each
    /// outcome to [`Candidacy::on_reply`]; wake at [`Candidacy::poll_timeout`]; once
    /// [`Candidacy::ready`], call [`Candidacy::count`].
    Ask { request: VoteRequest, dry: bool, to: Vec<String>, deadline: Duration },
    /// Won `term`: if `check_own_record`, promote only if `may_promote` holds under the vote
    /// lock (persist the win with the record first); fetch WAL from `fetch_from` first; the
    /// lease starts at `lease_from` (None: at the first heartbeat round a majority answers).
    Promote {
        term: Term,
        votes: Vec<String>,
        fetch_from: Option<(String, Position)>,
        check_own_record: bool,
        lease_from: Option<Duration>,
    },
}

#[derive(Debug, Clone)]
struct Ballot {
    me: String,
    nodes: Vec<Node>,
    old_master: String,
    request: VoteRequest,
    dry: bool,
    mine: Position,
    eligible: Option<Vec<String>>,
    two_node: bool,
    keepalive_time: Duration,
    /// When the requests went out (None: own vote not cast yet).
    sent_at: Option<Duration>,
    asked: Vec<String>,
    replies: Vec<(String, VoteReply)>,
    failures: Vec<(String, String)>,
}

/// One node's candidacy: between elections it only remembers the backoff.
#[derive(Debug, Clone)]
pub struct Candidacy {
    rules: Rules,
    ballot: Option<Ballot>,
    /// After a lost ballot: do not stand before then.
    not_before: Option<Duration>,
    rng: u64,
}

impl Candidacy {
    pub fn new(rules: Rules, seed: u64) -> Candidacy {
        Candidacy { rules, ballot: None, not_before: None, rng: seed ^ 0x9E37_79B9_7F4A_7C15 }
    }

    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// A ballot is under way (own vote cast or replies awaited).
    pub fn in_ballot(&self) -> bool {
        self.ballot.is_some()
    }

    /// The term of the ballot under way.
    pub fn term(&self) -> Option<Term> {
        self.ballot.as_ref().map(|b| b.request.term)
    }

    /// Drop the ballot under way (the node changed mode, restarted, or is stopping).
    pub fn abandon(&mut self) {
        self.ballot = None;
    }

    /// The master is gone and standby mode says stand: the first step.
    pub fn stand(&mut self, now: Duration, s: &Stand<'_>) -> Step {
        self.ballot = None;
        if let Some(t) = self.not_before.filter(|t| now < *t) {
            return Step::Wait {
                state: "standing again shortly (lost the last ballot)".into(),
                notice: None,
                retry_at: Some(t),
                seen: 0,
            };
        }
        // The old master's lease, as acknowledged here, must be over first: wait for it
        // rather than for a whole round (plus a little, as the others acknowledged it later).
        if !s.hold_left.is_zero() {
            return Step::Wait {
                state: format!("waiting {} ms for its lease to end", s.hold_left.as_millis()),
                notice: None,
                retry_at: Some(now + s.hold_left + timing::AFTER_HOLD),
                seen: 0,
            };
        }
        let request = VoteRequest {
            term: next_term(s.rec, s.seen),
            candidate: s.me.to_string(),
            candidate_lsn: s.mine.lsn,
            candidate_tli: s.mine.tli,
            candidate_membership: s.membership,
        };
        let dry = self.rules.pre_vote;
        self.ballot = Some(Ballot {
            me: s.me.to_string(),
            nodes: s.nodes.to_vec(),
            old_master: s.old_master.to_string(),
            request: request.clone(),
            dry,
            mine: s.mine,
            eligible: s.rec.eligible.clone(),
            two_node: s.two_node,
            keepalive_time: s.keepalive_time,
            sent_at: None,
            asked: Vec::new(),
            replies: Vec::new(),
            failures: Vec::new(),
        });
        Step::CastOwnVote { request, dry }
    }

    /// The answer this node gave its own request (`term`: its record's term after it).
    pub fn own_vote(&mut self, now: Duration, res: Result<(), Refusal>, term: Term) -> Step {
        let Some(b) = self.ballot.as_mut() else {
            return Step::Wait { state: "not standing".into(), notice: None, retry_at: None, seen: term };
        };
        if let Err(r) = res {
            self.ballot = None;
            let (notice, retry_at) = match &r {
                // A lease acknowledged since the check: stand once it is over.
                Refusal::LeaseHeld { left_ms } => {
                    (None, Some(now + Duration::from_millis(*left_ms) + timing::AFTER_HOLD))
                }
                _ => (Some(format!("pg_keeper: master unreachable, but this node does not stand: {r}")), None),
            };
            return Step::Wait { state: format!("not standing: own vote refused: {r}"), notice, retry_at, seen: term };
        }
        let own = VoteReply {
            granted: true,
            term: b.request.term,
            lsn: Some(b.mine.lsn),
            tli: b.mine.tli,
            reason: String::new(),
        };
        b.replies = vec![(b.me.clone(), own)];
        b.failures.clear();
        b.asked = b.nodes.iter().filter(|n| n.name != b.me && n.name != b.old_master).map(|n| n.name.clone()).collect();
        b.sent_at = Some(now);
        Step::Ask {
            request: b.request.clone(),
            dry: b.dry,
            to: b.asked.clone(),
            deadline: timing::probe_deadline(b.keepalive_time),
        }
    }

    /// One node's reply (or why there was none). Replies from nodes not asked, or twice, are
    /// ignored.
    pub fn on_reply(&mut self, from: &str, reply: Result<VoteReply, String>) {
        let Some(b) = self.ballot.as_mut().filter(|b| b.sent_at.is_some()) else { return };
        if !b.asked.iter().any(|n| n == from)
            || b.replies.iter().any(|(n, _)| n == from)
            || b.failures.iter().any(|(n, _)| n == from)
        {
            return;
        }
        match reply {
            Ok(r) => b.replies.push((from.to_string(), r)),
            Err(e) => b.failures.push((from.to_string(), e)),
        }
    }

    fn early_at(&self, b: &Ballot) -> Option<Duration> {
        let sent = b.sent_at?;
        match self.rules.count {
            Count::AllOrDeadline => None,
            Count::EarlyAfterGrace => Some(sent + timing::early_count_after(b.keepalive_time)),
            Count::EarlyAfterPermille(p) => Some(sent + b.keepalive_time * p as u32 / 1000),
        }
    }

    fn deadline_at(b: &Ballot) -> Option<Duration> {
        Some(b.sent_at? + timing::probe_deadline(b.keepalive_time))
    }

    fn tally_now(b: &Ballot) -> Tally {
        tally(&b.me, &b.nodes, b.mine, &b.replies, b.two_node, b.eligible.as_deref())
    }

    /// When time alone may make the ballot [`Candidacy::ready`]: the end of the early-count
    /// grace, else the deadline. None: no ballot awaiting replies.
    pub fn poll_timeout(&self, now: Duration) -> Option<Duration> {
        let b = self.ballot.as_ref()?;
        let deadline = Self::deadline_at(b)?;
        match self.early_at(b) {
            Some(e) if e > now && e < deadline => Some(e),
            _ => Some(deadline),
        }
    }

    /// The ballot can be counted now: every reply is in, the deadline passed, or (past the
    /// grace) the replies so far win.
    pub fn ready(&self, now: Duration) -> bool {
        let Some(b) = self.ballot.as_ref() else { return false };
        let Some(deadline) = Self::deadline_at(b) else { return false };
        if now >= deadline || b.replies.len() + b.failures.len() > b.asked.len() {
            return true;
        }
        self.early_at(b).is_some_and(|e| now >= e) && matches!(Self::tally_now(b), Tally::Won { .. })
    }

    /// Count the ballot (call once [`Candidacy::ready`]).
    pub fn count(&mut self, now: Duration) -> Step {
        let Some(b) = self.ballot.take() else {
            return Step::Wait { state: "not standing".into(), notice: None, retry_at: None, seen: 0 };
        };
        let term = b.request.term;
        let what = if b.dry { "pre-vote" } else { "election" };
        match Self::tally_now(&b) {
            Tally::Won { .. } if b.dry => {
                let request = b.request.clone();
                self.ballot = Some(Ballot { dry: false, sent_at: None, ..b });
                Step::CastOwnVote { request, dry: false }
            }
            Tally::Won { votes } => Step::Promote {
                term,
                votes,
                fetch_from: fast_forward_source(&b.me, b.mine, &b.replies),
                check_own_record: self.rules.check_own_record,
                lease_from: match self.rules.win_lease {
                    WinLease::FromVoteRequests => b.sent_at,
                    WinLease::FromFirstRenewal => None,
                },
            },
            Tally::Yield { to, at } => Step::Wait {
                state: format!("{what} term {term}: yielding to {to}"),
                notice: Some(format!(
                    "pg_keeper: not promoting ({what}, term {term}): {to} has more WAL ({at} > {}); it should stand",
                    b.mine
                )),
                retry_at: None,
                seen: 0,
            },
            Tally::Lost { votes, needed, newest_term } => {
                // Wait a random part of a round before standing again: two candidates whose
                // rounds line up would otherwise split the votes round after round (Raft's
                // randomized election timeout).
                self.not_before = Some(now + b.keepalive_time.mul_f64(self.random_unit()));
                let refused: Vec<String> = b
                    .replies
                    .iter()
                    .filter(|(_, r)| !r.granted)
                    .map(|(n, r)| format!("{n}: {}", r.reason))
                    .chain(b.failures.iter().map(|(n, e)| format!("{n}: no answer ({e})")))
                    .collect();
                Step::Wait {
                    state: format!("{what} term {term}: {} of {needed} votes", votes.len()),
                    notice: Some(format!(
                        "pg_keeper: {what} in term {term} lost: {} of {needed} votes needed ({}); refused: {}",
                        votes.len(),
                        votes.join(", "),
                        refused.join("; ")
                    )),
                    retry_at: None,
                    seen: newest_term,
                }
            }
        }
    }

    /// splitmix64: a number in [0, 1).
    fn random_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.rng;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<Node> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| Node {
                seqno: i as i32 + 1,
                name: n.to_string(),
                conninfo: format!("host={n}"),
                is_master: i == 0,
                is_nextmaster: false,
                is_sync: false,
                is_witness: false,
            })
            .collect()
    }

    fn reply(granted: bool, lsn: u64) -> VoteReply {
        VoteReply { granted, term: 1, lsn: Some(lsn), tli: 1, reason: if granted { "" } else { "no" }.into() }
    }

    const K: Duration = Duration::from_secs(1);

    fn stand(c: &mut Candidacy, now: Duration, rec: &VoteRecord, hold: Duration) -> Step {
        let n = nodes();
        c.stand(
            now,
            &Stand {
                me: "b",
                nodes: &n,
                old_master: "a",
                mine: Position::new(1, 100),
                rec,
                seen: 0,
                hold_left: hold,
                membership: 0,
                two_node: false,
                keepalive_time: K,
            },
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pre_vote_then_vote_then_promote() {
        let mut c = Candidacy::new(Rules::AS_BUILT, 1);
        let rec = VoteRecord::default();
        let Step::CastOwnVote { request, dry: true } = stand(&mut c, ms(0), &rec, Duration::ZERO) else { panic!() };
        assert_eq!(request.term, 1);
        let Step::Ask { to, dry: true, deadline, .. } = c.own_vote(ms(1), Ok(()), 1) else { panic!() };
        assert_eq!((to, deadline), (vec!["c".to_string()], ms(800)));
        assert!(!c.ready(ms(2)));
        assert_eq!(c.poll_timeout(ms(2)), Some(ms(251)), "the end of the grace");
        c.on_reply("c", Ok(reply(true, 90)));
        assert!(c.ready(ms(3)), "every reply in");
        assert_eq!(c.count(ms(3)), Step::CastOwnVote { request: request.clone(), dry: false });
        let Step::Ask { dry: false, .. } = c.own_vote(ms(4), Ok(()), 1) else { panic!() };
        c.on_reply("c", Ok(reply(true, 90)));
        let Step::Promote { term: 1, votes, check_own_record: true, lease_from: None, fetch_from: None } =
            c.count(ms(5))
        else {
            panic!()
        };
        assert_eq!(votes, vec!["b".to_string(), "c".to_string()]);
    }

    #[test]
    fn a_lost_ballot_backs_off_and_a_held_lease_waits() {
        let mut c = Candidacy::new(Rules::AS_BUILT, 7);
        let rec = VoteRecord::default();
        let Step::Wait { retry_at: Some(t), .. } = stand(&mut c, ms(0), &rec, ms(300)) else { panic!() };
        assert_eq!(t, ms(350));
        stand(&mut c, ms(400), &rec, Duration::ZERO);
        c.own_vote(ms(400), Ok(()), 1);
        c.on_reply("c", Err("timeout".into()));
        assert!(c.ready(ms(401)));
        let Step::Wait { notice: Some(n), .. } = c.count(ms(401)) else { panic!() };
        assert!(n.contains("lost: 1 of 2") && n.contains("c: no answer (timeout)"), "{n}");
        let Step::Wait { retry_at: Some(t), .. } = stand(&mut c, ms(401), &rec, Duration::ZERO) else { panic!() };
        assert!(t > ms(401) && t <= ms(1401));
        assert!(matches!(stand(&mut c, ms(1401), &rec, Duration::ZERO), Step::CastOwnVote { .. }));
    }

    #[test]
    fn early_count_only_after_the_grace_and_yield_to_more_wal() {
        let mut c = Candidacy::new(Rules { pre_vote: false, ..Rules::AS_BUILT }, 3);
        let n: Vec<Node> = (0..5)
            .map(|i| Node {
                seqno: i + 1,
                name: format!("n{i}"),
                conninfo: String::new(),
                is_master: i == 0,
                is_nextmaster: false,
                is_sync: false,
                is_witness: false,
            })
            .collect();
        let rec = VoteRecord::default();
        let s = Stand {
            me: "n1",
            nodes: &n,
            old_master: "n0",
            mine: Position::new(1, 100),
            rec: &rec,
            seen: 4,
            hold_left: Duration::ZERO,
            membership: 0,
            two_node: false,
            keepalive_time: K,
        };
        let Step::CastOwnVote { request, dry: false } = c.stand(ms(0), &s) else { panic!() };
        assert_eq!(request.term, 5, "past the terms seen");
        c.own_vote(ms(0), Ok(()), 5);
        c.on_reply("n2", Ok(reply(true, 10)));
        c.on_reply("n3", Ok(reply(true, 10)));
        assert!(!c.ready(ms(100)), "a majority, but within the grace: a node with more WAL may still answer");
        c.on_reply("n4", Ok(reply(false, 200)));
        assert!(c.ready(ms(100)));
        assert!(matches!(c.count(ms(100)), Step::Wait { state, .. } if state.contains("yielding to n4")));
    }
}
