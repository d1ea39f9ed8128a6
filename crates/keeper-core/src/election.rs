//! Leader election and the master's lease (issue 5/5). Leader election only: PostgreSQL's
//! WAL is the log, so there is no log matching beyond "never vote for a candidate behind you".
//!
//! The pieces, each a pure function:
//! - [`decide_vote`]: a voter's answer to a vote request, and the record it must persist
//!   (fsynced) before it answers. At most one vote per term; never for a candidate that is
//!   not registered, is a witness, or is behind the voter in received WAL; never while the
//!   voter still honours a master's lease ([`voter_hold`]).
//! - [`tally`]: a candidate's count. It promotes only with a strict majority of the
//!   registered nodes, and yields when any node that answered holds more WAL. It may count
//!   before every reply is in, once [`early_count_after`] has passed ([`may_promote`] then
//!   says whether the winner may promote).
//! - [`candidate_rank`]: who stands first when the master is gone: the next master, then the
//!   synchronous standbys, then by seqno; each rank waits one more round.
//! - [`master_verdict`]: master mode's reading of one heartbeat round: renew the lease (a
//!   majority answered in this term or older), let it run out (fenced when it expires), or
//!   stand down for good (a writable node of a newer term exists: deposed).
//!
//! Why the lease makes the old master fenced before any promotion (the timing argument, also
//! in docs/design.md): a master renews its lease until `s + L` only from a round started at
//! `s` in which a majority answered its heartbeat. Each node that answers at `a >= s` refuses
//! votes until `a + voter_hold(L) > s + L` on its own clock. A candidate needs a majority of
//! votes, and any two majorities share a node `x`. If `x` answered before it voted, its vote
//! came after `s + L`: the lease was over. If `x` voted first, it answered the heartbeat with
//! the newer term, and the master does not count such answers. So at the promotion instant
//! no lease of the old master is running, and its commits are refused from the lease's end.
//!
//! Two consequences the adapter must honour (tests/simulation/ finds two masters taking
//! writes at once without either):
//! - Every lease must be covered by holds. [`decide_vote`] takes no hold, so a lease counted
//!   from a winner's vote requests is covered by nothing: a second candidate can win a newer
//!   term with the same voters while it runs. Two safe ways: the winner promotes fenced and
//!   takes writes only once a heartbeat round of its own renews (every lease then comes from
//!   a heartbeat round); or every vote granted sets the voter's hold as a heartbeat does
//!   (`voter_hold(lease)` from the grant) and the lease counts from the requests. Both are
//!   safe in the simulation; the second costs liveness: a vote given to a candidate that
//!   loses locks the voter for a whole hold, so split votes repeat and elections can fail
//!   round after round (more so if the candidate's own vote holds it too: two candidates
//!   then refuse each other each time they stand).
//! - The argument counts the master itself in its majority, so the master must not have
//!   voted in a newer term: a candidate that granted (or adopted) a newer term while it
//!   waited for its replies does not promote ([`may_promote`]).

use crate::failover::is_majority;
use crate::lsn::Position;
use crate::Node;
use std::fmt;
use std::time::Duration;

pub type Term = u64;

/// What every node persists in `$PGDATA/pg_keeper.<node>.vote`, fsynced before it answers:
/// the newest term it took part in, whom it voted for in that term, and whether it won that
/// term (persisted before it promotes: only an elected master may hold a lease,
/// [`may_hold_lease`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoteRecord {
    pub term: Term,
    pub voted_for: Option<String>,
    /// This node won `term` (set by [`VoteRecord::elected_in`]; cleared by a newer term, and
    /// by the adapter when the node runs as a standby again).
    pub elected: bool,
    /// The standbys the master's last heartbeat said may be elected (`crate::eligibility`):
    /// None while replication is asynchronous (any node may be), else only these (perhaps
    /// none). Kept across terms: it describes the WAL, not the election.
    pub eligible: Option<Vec<String>>,
    /// The term of the heartbeat that carried `eligible`: a set from an older term (an old
    /// master not yet aware it is deposed) never replaces it ([`VoteRecord::told`]).
    pub eligible_term: Term,
}

impl VoteRecord {
    /// File form: `term 3\nvoted_for node2\nelected\n` (the second line absent when nobody,
    /// the third unless this node won the term).
    pub fn to_file(&self) -> String {
        let mut s = format!("term {}\n", self.term);
        if let Some(c) = &self.voted_for {
            s.push_str(&format!("voted_for {c}\n"));
        }
        if self.elected {
            s.push_str("elected\n");
        }
        if let Some(e) = &self.eligible {
            s.push_str("sync");
            for n in e {
                s.push(' ');
                s.push_str(n);
            }
            s.push('\n');
        }
        if self.eligible_term > 0 {
            s.push_str(&format!("sync_term {}\n", self.eligible_term));
        }
        s
    }

    /// This record after a heartbeat of `term` said who may be elected: adopted unless the
    /// set it has came with a newer term.
    pub fn told(&self, term: Term, eligible: Option<Vec<String>>) -> VoteRecord {
        if term < self.eligible_term {
            return self.clone();
        }
        VoteRecord { eligible, eligible_term: term, ..self.clone() }
    }

    /// This record after the master of `term` named `who` its switchover's target
    /// (`step_down(to_node)`, `_release`): `who` joins the eligible set, unless the set came
    /// with a newer term or replication is asynchronous (no set: anyone may be elected).
    pub fn with_target(&self, who: &str, term: Term) -> VoteRecord {
        let mut new = self.clone();
        if term < self.eligible_term {
            return new;
        }
        if let Some(set) = &mut new.eligible {
            if !set.iter().any(|n| n == who) {
                set.push(who.to_string());
                set.sort();
            }
        }
        new
    }

    /// This record with `elected` set for `term` (the win persisted before the promotion).
    pub fn won(&self, me: &str, term: Term) -> VoteRecord {
        VoteRecord {
            eligible: self.eligible.clone(),
            eligible_term: self.eligible_term,
            ..VoteRecord::elected_in(me, term)
        }
    }

    /// The record of a node that won `term` with the votes it asked for.
    pub fn elected_in(me: &str, term: Term) -> VoteRecord {
        VoteRecord { term, voted_for: Some(me.to_string()), elected: true, eligible: None, eligible_term: 0 }
    }

    pub fn parse(s: &str) -> Result<VoteRecord, String> {
        let mut rec = VoteRecord::default();
        let mut seen_term = false;
        for line in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line == "elected" {
                rec.elected = true;
                continue;
            }
            if line == "sync" || line.starts_with("sync ") {
                rec.eligible = Some(line[4..].split_whitespace().map(str::to_string).collect());
                continue;
            }
            match line.split_once(' ') {
                Some(("term", t)) => {
                    rec.term = t.trim().parse().map_err(|_| format!("bad term {t:?}"))?;
                    seen_term = true;
                }
                Some(("voted_for", c)) => rec.voted_for = Some(c.trim().to_string()),
                Some(("sync_term", t)) => {
                    rec.eligible_term = t.trim().parse().map_err(|_| format!("bad sync_term {t:?}"))?
                }
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        if !seen_term {
            return Err("no term line".into());
        }
        Ok(rec)
    }
}

/// How long a master stays unfenced after a round in which a majority answered, counted from
/// the round's start: one keepalive_time, while heartbeats go out every half of it
/// ([`heartbeat_interval`]), so one slow round never fences a healthy master.
pub fn master_lease(keepalive_time: Duration) -> Duration {
    keepalive_time
}

pub fn heartbeat_interval(keepalive_time: Duration) -> Duration {
    keepalive_time / 2
}

/// How long a node that acknowledged a heartbeat granting `lease` refuses to vote, counted
/// from the acknowledgement on its own clock: the lease plus a quarter, a margin for
/// clock-rate differences between hosts and for a commit that checked the lease just before
/// it ran out and is still writing its commit record.
/// A forced failover's term is this far above every term its node saw: room for elections
/// held without it (a forced term equal to a term won elsewhere would depose nobody).
pub const FORCED_TERM_GAP: Term = 100;

pub fn voter_hold(lease: Duration) -> Duration {
    lease + lease / 4
}

/// A voter receives a heartbeat of `term` granting `lease` at `now` (its own clock; the
/// hold it has runs until `hold_until`): the hold to keep, and the record to persist before
/// it answers (the eligible set the heartbeat carries, [`VoteRecord::told`]). A heartbeat
/// from an older term is from a master this node may have voted against: it changes nothing.
pub fn on_heartbeat(
    rec: &VoteRecord,
    term: Term,
    lease: Duration,
    now: Duration,
    hold_until: Duration,
    eligible: Option<Vec<String>>,
) -> (Duration, VoteRecord) {
    if term < rec.term {
        return (hold_until, rec.clone());
    }
    (hold_until.max(now + voter_hold(lease)), rec.told(term, eligible))
}

/// Whether a voter answers as a master (refuses every vote): a writable node that may hold
/// the lease (one promoted outside an election has none to protect, and a cluster of three
/// must still be able to replace the real master with the other standby: it votes like a
/// standby), and a candidate between its win and the end of its promotion.
pub fn votes_as_master(writable: bool, entitled: bool, promoting: bool) -> bool {
    (writable && entitled) || promoting
}

/// Whether a node that accepts writes may hold the master's lease (and so send heartbeats,
/// refuse votes as a master and open its commit gate): only as the master of a term it won,
/// or as the master registered in node_info before any election (term 0, the cluster's first
/// master). A standby promoted any other way (`pg_ctl promote`, `pg_promote()`, a trigger
/// file, `recovery_target_action = promote`) never may: at an equal term it could otherwise
/// gather a majority of answers beside the real master and both would take commits.
/// `registered_master`: node_info names this node as the master.
pub fn may_hold_lease(rec: &VoteRecord, registered_master: bool) -> bool {
    rec.elected || (rec.term == 0 && registered_master)
}

/// A vote request, as passed (as parameters) to `pgkeeper.request_vote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteRequest {
    pub term: Term,
    pub candidate: String,
    /// WAL the candidate has received, and its timeline.
    pub candidate_lsn: u64,
    pub candidate_tli: u32,
    /// The membership version of the node_info the candidate counts over (`membership`).
    pub candidate_membership: crate::membership::Version,
}

/// What the voter knows about itself when a request arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterView<'a> {
    pub me: &'a str,
    pub nodes: &'a [Node],
    /// This node accepts writes (not in recovery) and is not a witness: a master never votes.
    pub is_master: bool,
    /// WAL this node has received (0 for a witness, which has none of the cluster's), and
    /// its timeline (0 for a witness).
    pub my_lsn: u64,
    pub my_tli: u32,
    /// Time left of the last master lease this node acknowledged ([`voter_hold`]).
    pub hold_left: Duration,
    /// The membership version of this node's node_info.
    pub membership: crate::membership::Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The voter is a master: a candidate that reaches it does not need to replace it.
    IAmMaster,
    /// The voter still honours the master's lease.
    LeaseHeld { left_ms: u64 },
    /// The request's term is older than the voter's.
    StaleTerm { current: Term },
    /// The voter already voted in this term.
    AlreadyVoted { term: Term, candidate: String },
    /// The candidate is not in the voter's node_info, is the registered master, or a witness.
    NotEligible,
    /// The candidate has received less WAL than the voter (timeline first: [`Position`]).
    Behind { voter: Position, candidate: Position },
    /// Synchronous replication is in force and the candidate is not one of the standbys the
    /// master's last heartbeat named as holding every acknowledged commit.
    NotSynchronous { eligible: Vec<String> },
    /// The candidate counts over an older membership than the voter's (`membership`).
    OlderMembership { voter: crate::membership::Version, candidate: crate::membership::Version },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::IAmMaster => write!(f, "this node is a master"),
            Refusal::LeaseHeld { left_ms } => write!(f, "the master's lease is still running here ({left_ms} ms left)"),
            Refusal::StaleTerm { current } => write!(f, "term is older than this node's term {current}"),
            Refusal::AlreadyVoted { term, candidate } => write!(f, "already voted for {candidate} in term {term}"),
            Refusal::NotEligible => write!(f, "the candidate is not a registered data node here"),
            Refusal::OlderMembership { voter, candidate } => {
                write!(f, "the candidate has an older node_info (membership version {candidate}, this node {voter})")
            }
            Refusal::Behind { voter, candidate } => {
                write!(f, "the candidate is behind (it has {candidate}, this node {voter})")
            }
            Refusal::NotSynchronous { eligible } if eligible.is_empty() => write!(
                f,
                "synchronous replication is in force and no standby had every acknowledged commit at the master's last heartbeat: nobody may be elected"
            ),
            Refusal::NotSynchronous { eligible } => write!(
                f,
                "synchronous replication is in force and the candidate is not a synchronous standby with every acknowledged commit (eligible: {})",
                eligible.join(", ")
            ),
        }
    }
}

/// The voter's answer and the record as it must be persisted before answering (equal to
/// `rec` when nothing changed). A newer term is adopted even when the vote is refused for
/// eligibility or WAL, so that two candidates never both win one term; it is never adopted
/// while a lease is held (a disconnected candidate cannot push terms onto a healthy cluster).
pub fn decide_vote(rec: &VoteRecord, req: &VoteRequest, v: &VoterView<'_>) -> (Result<(), Refusal>, VoteRecord) {
    if v.is_master {
        return (Err(Refusal::IAmMaster), rec.clone());
    }
    if !v.hold_left.is_zero() {
        return (Err(Refusal::LeaseHeld { left_ms: v.hold_left.as_millis() as u64 }), rec.clone());
    }
    if req.term < rec.term {
        return (Err(Refusal::StaleTerm { current: rec.term }), rec.clone());
    }
    let mut new = rec.clone();
    if req.term > rec.term {
        new = VoteRecord {
            term: req.term,
            voted_for: None,
            elected: false,
            eligible: rec.eligible.clone(),
            eligible_term: rec.eligible_term,
        };
    }
    if !v.nodes.iter().any(|n| n.name == req.candidate && !n.is_master && !n.is_witness) {
        return (Err(Refusal::NotEligible), new);
    }
    if let Some(c) = &new.voted_for {
        if *c != req.candidate {
            return (Err(Refusal::AlreadyVoted { term: new.term, candidate: c.clone() }), new);
        }
    }
    if req.candidate_membership < v.membership {
        return (Err(Refusal::OlderMembership { voter: v.membership, candidate: req.candidate_membership }), new);
    }
    let mine = Position::new(v.my_tli, v.my_lsn);
    let theirs = Position::new(req.candidate_tli, req.candidate_lsn);
    if let Some(eligible) = &new.eligible {
        // An eligible voter holds every acknowledged commit of its set; a candidate with at
        // least its WAL on its timeline holds them too. (Two voters whose sets differ, one
        // told of a degrade and one not, would otherwise refuse each other forever.) The
        // sets a majority relies on are still enforced by the voters that hold them.
        let has_all_i_have = eligible.iter().any(|n| n == v.me) && theirs.tli == mine.tli && theirs >= mine;
        if !eligible.contains(&req.candidate) && !has_all_i_have {
            return (Err(Refusal::NotSynchronous { eligible: eligible.clone() }), new);
        }
    }
    // Under synchronous replication every acknowledged commit is on each eligible standby, so
    // WAL this voter has past an eligible candidate's (on the same timeline) was never
    // acknowledged: grant, and the winner fetches it before promoting
    // ([`fast_forward_source`]), so that this node can follow it.
    let unacknowledged_lead = new.eligible.is_some() && theirs.tli == mine.tli;
    if theirs < mine && !unacknowledged_lead {
        return (Err(Refusal::Behind { voter: mine, candidate: theirs }), new);
    }
    new.voted_for = Some(req.candidate.clone());
    (Ok(()), new)
}

/// One voter's reply as the candidate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteReply {
    pub granted: bool,
    /// The voter's term after the request.
    pub term: Term,
    /// The voter's received WAL (None for a witness), and its timeline.
    pub lsn: Option<u64>,
    pub tli: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// A strict majority of registered nodes voted for the candidate: promote.
    Won { votes: Vec<String> },
    /// A node that answered holds more WAL and may be elected: let it stand instead.
    Yield { to: String, at: Position },
    /// Not enough votes. `newest_term` is the highest term any voter reported.
    Lost { votes: Vec<String>, needed: usize, newest_term: Term },
}

/// Count the replies (the candidate's own vote among them, under its own name). `two_node`:
/// pg_keeper.two_node_failover in a two-node registry, where one vote is enough (unsafe: a
/// cut link then yields two masters; documented so). `eligible`: the candidate's record's
/// [`VoteRecord::eligible`]: a node ahead that may not be elected is no reason to yield (the
/// winner fetches its WAL first: [`fast_forward_source`]).
pub fn tally(
    me: &str,
    nodes: &[Node],
    mine: Position,
    replies: &[(String, VoteReply)],
    two_node: bool,
    eligible: Option<&[String]>,
) -> Tally {
    let registered = |name: &str| nodes.iter().any(|n| n.name == name);
    // Restricted: every eligible node has every acknowledged commit, so WAL any node has
    // beyond this one was never acknowledged: no reason to yield (that node may not even
    // know it is eligible, and would never stand); the winner fetches it.
    if let Some((who, at)) = replies
        .iter()
        .filter(|(n, _)| eligible.is_none() && n != me && registered(n))
        .filter_map(|(n, r)| r.lsn.map(|l| (n, Position::new(r.tli, l))).filter(|(_, p)| *p > mine))
        .max_by_key(|(_, p)| *p)
    {
        return Tally::Yield { to: who.clone(), at };
    }
    let votes: Vec<String> =
        replies.iter().filter(|(n, r)| r.granted && registered(n)).map(|(n, _)| n.clone()).collect();
    let enough = if two_node && nodes.len() == 2 { !votes.is_empty() } else { is_majority(votes.len(), nodes.len()) };
    if enough && votes.iter().any(|v| v == me) {
        return Tally::Won { votes };
    }
    let newest_term = replies.iter().map(|(_, r)| r.term).max().unwrap_or(0);
    Tally::Lost { votes, needed: nodes.len() / 2 + 1, newest_term }
}

/// The node a winner should fetch WAL from before it promotes (pg_auto_failover's
/// fast_forward): the replier with the most WAL on the winner's own timeline, if it has more.
/// Without it, a standby that received WAL the winner lacks (WAL nobody acknowledged: see
/// [`decide_vote`]) could not follow the new timeline and would need a rewind.
pub fn fast_forward_source(me: &str, mine: Position, replies: &[(String, VoteReply)]) -> Option<(String, Position)> {
    replies
        .iter()
        .filter(|(n, _)| n != me)
        .filter_map(|(n, r)| r.lsn.map(|l| (n.clone(), Position::new(r.tli, l))))
        .filter(|(_, p)| p.tli == mine.tli && p.lsn > mine.lsn)
        .max_by_key(|(_, p)| *p)
}

/// `_release` from a master that stepped down in `term`: it ends this voter's hold unless the
/// voter's record is in a newer term (a release from an old master must not end the hold a
/// newer master's lease relies on).
pub fn release_applies(term: i64, my_term: Term) -> bool {
    term >= 0 && term as u64 >= my_term
}

/// Where a winner's fetch of WAL from [`fast_forward_source`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastForward {
    /// It has the WAL up to the target: promote.
    Fetched,
    /// Not yet: look again shortly.
    Wait,
    /// The time allowed ran out: promote without it (that node will need a rejoin).
    GiveUp,
}

/// `have`: this node's received position now; `elapsed` since the fetch began.
pub fn fast_forward_progress(
    have: Option<Position>,
    target: Position,
    elapsed: Duration,
    keepalive_time: Duration,
) -> FastForward {
    if have.is_some_and(|p| p >= target) {
        FastForward::Fetched
    } else if elapsed >= crate::timing::fast_forward_limit(keepalive_time) {
        FastForward::GiveUp
    } else {
        FastForward::Wait
    }
}

pub use crate::timing::early_count_after;

/// Whether a candidate that [`tally`] declared the winner of `term` may promote, given its
/// own vote record as it is now. A candidate keeps answering vote requests while it waits for
/// its replies: if meanwhile it granted a vote in a newer term (or adopted one), a candidate
/// of that term may win with its vote while this one, promoted, counts itself towards its own
/// lease, two majorities that meet only in this node; and master mode would heartbeat with
/// the record's term, one it did not win. So promote only while the record still says "this
/// term, voted for me": read it under the lock that serialises votes, and refuse every vote
/// request from that check until the promotion is done (as a master does).
pub fn may_promote(me: &str, term: Term, rec: &VoteRecord) -> bool {
    rec.term == term && rec.voted_for.as_deref() == Some(me)
}

/// Term for a new election: past every term this node has seen.
pub fn next_term(rec: &VoteRecord, seen: Term) -> Term {
    rec.term.max(seen) + 1
}

/// Order in which standbys stand when the master is gone: the next master, then synchronous
/// standbys, then the lowest seqno. Only `me` and the standbys that answered this round
/// compete (a dead next master must not make the others wait for it forever). None when
/// `me` may not stand (not registered, a witness, or the registered master).
pub fn candidate_rank(me: &str, nodes: &[Node], answered: &[&str]) -> Option<usize> {
    let me_row = nodes.iter().find(|n| n.name == me)?;
    if me_row.is_master || me_row.is_witness {
        return None;
    }
    let mut competing: Vec<&Node> = nodes
        .iter()
        .filter(|n| !n.is_master && !n.is_witness && (n.name == me || answered.contains(&n.name.as_str())))
        .collect();
    competing.sort_by_key(|n| (!n.is_nextmaster, !n.is_sync, n.seqno));
    competing.iter().position(|n| n.name == me)
}

/// What a peer said to master mode's heartbeat (`pgkeeper._poll` with the heartbeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAnswer {
    pub in_recovery: bool,
    /// A master (not in recovery) that refuses commits: fenced or deposed.
    pub fenced: bool,
    pub term: Term,
    pub witness: bool,
    /// A master that stood down for good (deposed by a newer term, or stepped down for a
    /// switchover): fenced, and never coming back as it is.
    pub deposed: bool,
    /// A master that may hold the lease ([`may_hold_lease`]): elected, or the cluster's first
    /// master. A node promoted outside an election is not, and nobody waits for it.
    pub elected: bool,
    /// The membership version of its node_info (`membership`).
    pub membership: crate::membership::Version,
}

impl PeerAnswer {
    /// Accepts writes now.
    pub fn writable(&self) -> bool {
        !self.in_recovery && !self.fenced && !self.witness
    }

    /// A node just elected (a master not yet holding its lease, or holding it) in `term` or a
    /// newer one: a standby waits for it rather than stand against it, which would only push
    /// terms up and keep the new master from counting that standby's answers.
    pub fn just_elected(&self, term: Term) -> bool {
        !self.in_recovery && !self.witness && !self.deposed && self.elected && self.term >= term
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterVerdict {
    /// A majority answered in this term or older: extend the lease from the round's start.
    Renew { reached: usize },
    /// Too few answered: let the lease run out (the master is fenced when it does).
    NoMajority { reached: usize, registered: usize },
    /// Another node accepts writes: never renew while it does. `newer`: its term is newer than
    /// ours, so it was elected after us and this node is deposed for good (until rejoined).
    OtherMaster { name: String, term: Term, newer: bool },
}

/// Master mode's reading of one heartbeat round. `answers`: each other registered node and
/// what it said (None: no answer within the deadline).
/// What one heartbeat answer does to the master's lease, the moment it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEffect {
    /// Counts toward the majority that renews the lease.
    Counts,
    /// A newer term: that node may have voted against us already; not counted.
    Ignored,
    /// Another node accepts writes: the lease ends at once, and nothing renews it this round.
    EndsLease,
}

pub fn lease_effect(my_term: Term, a: &PeerAnswer) -> LeaseEffect {
    if a.writable() {
        LeaseEffect::EndsLease
    } else if a.term <= my_term {
        LeaseEffect::Counts
    } else {
        LeaseEffect::Ignored
    }
}

pub fn master_verdict(my_term: Term, nodes: &[Node], answers: &[(String, Option<PeerAnswer>)]) -> MasterVerdict {
    let registered = |name: &str| nodes.iter().any(|n| n.name == name);
    if let Some((name, a)) = answers
        .iter()
        .filter(|(n, _)| registered(n))
        .filter_map(|(n, a)| a.filter(PeerAnswer::writable).map(|a| (n, a)))
        .max_by_key(|(_, a)| a.term)
    {
        return MasterVerdict::OtherMaster { name: name.clone(), term: a.term, newer: a.term > my_term };
    }
    // Answers from a newer term do not count: that node may have voted against us already.
    let reached = 1 + answers
        .iter()
        .filter(|(n, a)| registered(n) && a.is_some_and(|a| lease_effect(my_term, &a) == LeaseEffect::Counts))
        .count();
    if is_majority(reached, nodes.len()) {
        MasterVerdict::Renew { reached }
    } else {
        MasterVerdict::NoMajority { reached, registered: nodes.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switchover_target_joins_the_set_of_its_term_only() {
        let rec = VoteRecord { eligible: Some(vec!["b".into()]), eligible_term: 5, ..Default::default() };
        assert_eq!(rec.with_target("c", 5).eligible, Some(vec!["b".into(), "c".into()]));
        assert_eq!(rec.with_target("c", 4), rec, "a set from a newer term stays");
        assert_eq!(rec.with_target("b", 6), rec);
        let asynchronous = VoteRecord::default();
        assert_eq!(asynchronous.with_target("c", 9), asynchronous);
        assert!(release_applies(5, 5) && release_applies(6, 5));
        assert!(!release_applies(4, 5) && !release_applies(-1, 0));
    }

    fn node(seqno: i32, name: &str, master: bool, next: bool, sync: bool, witness: bool) -> Node {
        Node {
            seqno,
            name: name.into(),
            conninfo: format!("host={name}"),
            is_master: master,
            is_nextmaster: next,
            is_sync: sync,
            is_witness: witness,
        }
    }

    fn cluster() -> Vec<Node> {
        vec![
            node(1, "a", true, false, false, false),
            node(2, "b", false, true, true, false),
            node(3, "c", false, false, false, false),
            node(4, "w", false, false, false, true),
        ]
    }

    fn view<'a>(me: &'a str, nodes: &'a [Node], lsn: u64) -> VoterView<'a> {
        VoterView { me, nodes, is_master: false, my_lsn: lsn, my_tli: 1, hold_left: Duration::ZERO, membership: 0 }
    }

    fn req(term: Term, c: &str, lsn: u64) -> VoteRequest {
        VoteRequest { term, candidate: c.into(), candidate_lsn: lsn, candidate_tli: 1, candidate_membership: 0 }
    }

    #[test]
    fn record_round_trips() {
        for r in [
            VoteRecord::default(),
            VoteRecord { term: 7, voted_for: Some("node2".into()), elected: false, eligible: None, eligible_term: 0 },
        ] {
            assert_eq!(VoteRecord::parse(&r.to_file()).unwrap(), r);
        }
        let won = VoteRecord::elected_in("node2", 4);
        assert_eq!(won.to_file(), "term 4\nvoted_for node2\nelected\n");
        assert_eq!(VoteRecord::parse(&won.to_file()).unwrap(), won);
        assert!(VoteRecord::parse("").is_err());
        assert!(VoteRecord::parse("term x\n").is_err());
        assert!(VoteRecord::parse("term 1\nbogus\n").is_err());
    }

    #[test]
    fn only_an_elected_or_first_registered_master_holds_a_lease() {
        let nodes = cluster();
        // The cluster's first master, before any election.
        assert!(may_hold_lease(&VoteRecord::default(), true));
        // A standby promoted by hand: not elected, not the registered master.
        assert!(!may_hold_lease(&VoteRecord::default(), false));
        let voted =
            VoteRecord { term: 3, voted_for: Some("b".into()), elected: false, eligible: None, eligible_term: 0 };
        assert!(!may_hold_lease(&voted, false), "standing is not winning");
        assert!(may_hold_lease(&VoteRecord::elected_in("b", 3), false));
        // The registered master after elections happened: only by winning.
        assert!(!may_hold_lease(
            &VoteRecord { term: 2, voted_for: None, elected: false, eligible: None, eligible_term: 0 },
            true
        ));
        // A newer term adopted by a vote clears the win.
        let (_, adopted) = decide_vote(&VoteRecord::elected_in("b", 3), &req(4, "c", 10), &view("b", &nodes, 5));
        assert!(!adopted.elected && adopted.term == 4);
    }

    #[test]
    fn a_candidate_with_an_older_membership_is_refused() {
        let nodes = cluster();
        let mut v = view("c", &nodes, 5);
        v.membership = 7;
        let mut r = req(2, "b", 10);
        r.candidate_membership = 6;
        let (answer, rec) = decide_vote(&VoteRecord::default(), &r, &v);
        assert_eq!(answer, Err(Refusal::OlderMembership { voter: 7, candidate: 6 }));
        // The term is adopted all the same (two candidates never both win it).
        assert_eq!(rec.term, 2);
        r.candidate_membership = 7;
        assert_eq!(decide_vote(&VoteRecord::default(), &r, &v).0, Ok(()));
        r.candidate_membership = 8;
        assert_eq!(decide_vote(&VoteRecord::default(), &r, &v).0, Ok(()));
    }

    #[test]
    fn one_vote_per_term() {
        let nodes = cluster();
        let rec = VoteRecord { term: 1, voted_for: None, elected: false, eligible: None, eligible_term: 0 };
        let (r, rec) = decide_vote(&rec, &req(2, "b", 10), &view("c", &nodes, 5));
        assert_eq!(r, Ok(()));
        assert_eq!(
            rec,
            VoteRecord { term: 2, voted_for: Some("b".into()), elected: false, eligible: None, eligible_term: 0 }
        );
        // Same candidate again (a retry): granted, nothing changes.
        assert_eq!(decide_vote(&rec, &req(2, "b", 10), &view("c", &nodes, 5)), (Ok(()), rec.clone()));
        // Another candidate in the same term: refused.
        let (r, same) = decide_vote(&rec, &req(2, "c", 10), &view("c", &nodes, 5));
        assert!(matches!(r, Err(Refusal::AlreadyVoted { term: 2, .. })));
        assert_eq!(same, rec);
        // Older term: refused.
        assert!(matches!(decide_vote(&rec, &req(1, "c", 10), &view("c", &nodes, 5)).0, Err(Refusal::StaleTerm { .. })));
    }

    #[test]
    fn refusals() {
        let nodes = cluster();
        let rec = VoteRecord::default();
        let mut v = view("c", &nodes, 50);
        assert!(matches!(decide_vote(&rec, &req(1, "b", 10), &v).0, Err(Refusal::Behind { .. })));
        // The newer term is adopted even though the vote is refused.
        assert_eq!(
            decide_vote(&rec, &req(1, "b", 10), &v).1,
            VoteRecord { term: 1, voted_for: None, elected: false, eligible: None, eligible_term: 0 }
        );
        assert_eq!(decide_vote(&rec, &req(1, "w", 90), &v).0, Err(Refusal::NotEligible));
        assert_eq!(decide_vote(&rec, &req(1, "a", 90), &v).0, Err(Refusal::NotEligible));
        assert_eq!(decide_vote(&rec, &req(1, "zz", 90), &v).0, Err(Refusal::NotEligible));
        v.hold_left = Duration::from_millis(300);
        assert_eq!(decide_vote(&rec, &req(1, "b", 90), &v), (Err(Refusal::LeaseHeld { left_ms: 300 }), rec.clone()));
        v.hold_left = Duration::ZERO;
        v.is_master = true;
        assert_eq!(decide_vote(&rec, &req(1, "b", 90), &v), (Err(Refusal::IAmMaster), rec.clone()));
    }

    fn reply(granted: bool, term: Term, lsn: Option<u64>) -> VoteReply {
        VoteReply { granted, term, lsn, tli: 1, reason: String::new() }
    }

    #[test]
    fn tally_needs_a_majority_of_registered_nodes() {
        let nodes = cluster(); // 4 registered: 3 votes needed
        let r = |v: &[(&str, bool)]| -> Vec<(String, VoteReply)> {
            v.iter().map(|(n, g)| (n.to_string(), reply(*g, 2, if *n == "w" { None } else { Some(10) }))).collect()
        };
        assert!(matches!(
            tally("b", &nodes, Position::new(1, 10), &r(&[("b", true), ("c", true)]), false, None),
            Tally::Lost { needed: 3, .. }
        ));
        assert!(matches!(
            tally("b", &nodes, Position::new(1, 10), &r(&[("b", true), ("c", true), ("w", true)]), false, None),
            Tally::Won { .. }
        ));
        // Without its own vote a candidate never wins.
        assert!(matches!(
            tally("b", &nodes, Position::new(1, 10), &r(&[("c", true), ("w", true), ("a", true)]), false, None),
            Tally::Lost { .. }
        ));
    }

    #[test]
    fn tally_yields_to_a_node_with_more_wal() {
        let nodes = cluster();
        let replies = vec![
            ("b".to_string(), reply(true, 2, Some(10))),
            ("c".to_string(), reply(false, 2, Some(11))),
            ("w".to_string(), reply(true, 2, None)),
        ];
        assert_eq!(
            tally("b", &nodes, Position::new(1, 10), &replies, false, None),
            Tally::Yield { to: "c".into(), at: Position::new(1, 11) }
        );
    }

    #[test]
    fn two_node_setting() {
        let nodes = vec![node(1, "a", true, false, false, false), node(2, "b", false, true, false, false)];
        let replies = vec![("b".to_string(), reply(true, 1, Some(1)))];
        assert!(matches!(tally("b", &nodes, Position::new(1, 1), &replies, false, None), Tally::Lost { .. }));
        assert!(matches!(tally("b", &nodes, Position::new(1, 1), &replies, true, None), Tally::Won { .. }));
    }

    #[test]
    fn record_keeps_the_eligible_set() {
        for e in [Some(vec![]), Some(vec!["b".to_string(), "c".to_string()])] {
            let r = VoteRecord { term: 3, voted_for: Some("b".into()), elected: true, eligible: e, eligible_term: 3 };
            assert_eq!(VoteRecord::parse(&r.to_file()).unwrap(), r);
        }
        let r = VoteRecord { eligible: Some(vec!["b".into()]), ..VoteRecord::default() };
        assert_eq!(r.won("b", 4).eligible, r.eligible);
        // A newer term keeps it.
        let nodes = cluster();
        let (_, adopted) = decide_vote(&r, &req(5, "c", 10), &view("d", &nodes, 5));
        assert_eq!((adopted.term, adopted.eligible), (5, r.eligible.clone()));
    }

    #[test]
    fn a_set_from_an_older_term_never_replaces_a_newer_one() {
        let r = VoteRecord::default().told(2, Some(vec!["a".into()]));
        assert_eq!((r.eligible_term, r.eligible.as_deref()), (2, Some(&["a".to_string()][..])));
        // The deposed master of term 1, not yet aware, still heartbeats.
        assert_eq!(r.told(1, Some(vec!["b".into()])), r);
        assert_eq!(r.told(3, None).eligible, None);
        assert_eq!(VoteRecord::parse(&r.to_file()).unwrap(), r);
    }

    #[test]
    fn under_synchronous_replication_only_an_eligible_standby_wins() {
        let nodes = cluster();
        let rec = VoteRecord { eligible: Some(vec!["b".into()]), ..VoteRecord::default() };
        // c is the most advanced, but not synchronous: refused by every voter that was told.
        let (r, new) = decide_vote(&rec, &req(1, "c", 90), &view("d", &nodes, 50));
        assert_eq!(r, Err(Refusal::NotSynchronous { eligible: vec!["b".into()] }));
        assert_eq!(new.term, 1);
        // b is behind this voter, but what the voter has beyond b was never acknowledged.
        assert_eq!(decide_vote(&rec, &req(1, "b", 10), &view("d", &nodes, 50)).0, Ok(()));
        // ... on the same timeline only.
        let mut old_tli = req(1, "b", 10);
        old_tli.candidate_tli = 0;
        assert!(matches!(decide_vote(&rec, &old_tli, &view("d", &nodes, 50)).0, Err(Refusal::Behind { .. })));
        // An eligible voter grants a candidate that has all its WAL, eligible or not.
        assert_eq!(decide_vote(&rec, &req(1, "c", 90), &view("b", &nodes, 50)).0, Ok(()));
        assert!(matches!(
            decide_vote(&rec, &req(1, "c", 40), &view("b", &nodes, 50)).0,
            Err(Refusal::NotSynchronous { .. })
        ));
        // Nobody eligible: nobody wins.
        let none = VoteRecord { eligible: Some(vec![]), ..VoteRecord::default() };
        assert!(matches!(
            decide_vote(&none, &req(1, "b", 90), &view("d", &nodes, 5)).0,
            Err(Refusal::NotSynchronous { .. })
        ));
        // The candidate does not yield to a node ahead that may not win; it fetches its WAL.
        let replies = vec![
            ("b".to_string(), reply(true, 1, Some(10))),
            ("c".to_string(), reply(true, 1, Some(90))),
            ("w".to_string(), reply(true, 1, None)),
        ];
        let eligible = ["b".to_string()];
        assert!(matches!(
            tally("b", &nodes, Position::new(1, 10), &replies, false, Some(&eligible)),
            Tally::Won { .. }
        ));
        assert!(matches!(tally("b", &nodes, Position::new(1, 10), &replies, false, None), Tally::Yield { .. }));
        // Nor to an eligible one: every eligible node has every acknowledged commit.
        let both = ["b".to_string(), "c".to_string()];
        assert!(matches!(tally("b", &nodes, Position::new(1, 10), &replies, false, Some(&both)), Tally::Won { .. }));
        assert_eq!(fast_forward_source("b", Position::new(1, 10), &replies), Some(("c".into(), Position::new(1, 90))));
        assert_eq!(fast_forward_source("b", Position::new(1, 95), &replies), None);
        assert_eq!(
            fast_forward_source("b", Position::new(2, 10), &replies),
            None,
            "another timeline's WAL cannot be fetched"
        );
    }

    #[test]
    fn wal_of_an_old_timeline_past_the_fork_is_not_ahead() {
        let nodes = cluster();
        // c stayed on timeline 1 and received WAL past the fork of timeline 2.
        let mut r = req(3, "c", 0x9000000);
        r.candidate_tli = 1;
        let mut v = view("b", &nodes, 0x5000100);
        v.my_tli = 2;
        assert!(matches!(decide_vote(&VoteRecord::default(), &r, &v).0, Err(Refusal::Behind { .. })));
        // And a candidate on timeline 2 does not yield to it.
        let replies = vec![(
            "c".to_string(),
            VoteReply { granted: false, term: 3, lsn: Some(0x9000000), tli: 1, reason: String::new() },
        )];
        assert!(!matches!(tally("b", &nodes, Position::new(2, 0x5000100), &replies, false, None), Tally::Yield { .. }));
    }

    #[test]
    fn promote_only_with_own_vote_in_that_term() {
        let mine =
            VoteRecord { term: 3, voted_for: Some("b".into()), elected: false, eligible: None, eligible_term: 0 };
        assert!(may_promote("b", 3, &mine));
        // Voted for another candidate in a newer term while waiting for the replies.
        assert!(!may_promote(
            "b",
            3,
            &VoteRecord { term: 4, voted_for: Some("c".into()), elected: false, eligible: None, eligible_term: 0 }
        ));
        // Adopted a newer term without voting.
        assert!(!may_promote(
            "b",
            3,
            &VoteRecord { term: 4, voted_for: None, elected: false, eligible: None, eligible_term: 0 }
        ));
        assert!(!may_promote("c", 3, &mine));
    }

    #[test]
    fn rank_order() {
        let mut nodes = cluster();
        nodes.push(node(5, "d", false, false, true, false));
        let all = ["b", "c", "d", "w"];
        assert_eq!(candidate_rank("b", &nodes, &all), Some(0));
        assert_eq!(candidate_rank("d", &nodes, &all), Some(1)); // synchronous before c
        assert_eq!(candidate_rank("c", &nodes, &all), Some(2));
        // The next master did not answer: the others move up.
        assert_eq!(candidate_rank("d", &nodes, &["c"]), Some(0));
        assert_eq!(candidate_rank("c", &nodes, &["d"]), Some(1));
        assert_eq!(candidate_rank("w", &nodes, &all), None);
        assert_eq!(candidate_rank("a", &nodes, &all), None);
        assert_eq!(candidate_rank("x", &nodes, &all), None);
    }

    fn ans(in_recovery: bool, fenced: bool, term: Term) -> Option<PeerAnswer> {
        Some(PeerAnswer {
            in_recovery,
            fenced,
            term,
            witness: false,
            deposed: false,
            elected: !in_recovery,
            membership: 0,
        })
    }

    #[test]
    fn verdicts() {
        let nodes = cluster(); // a master, 4 registered: 3 needed
        let a = |v: Vec<(&str, Option<PeerAnswer>)>| v.into_iter().map(|(n, x)| (n.to_string(), x)).collect::<Vec<_>>();
        assert_eq!(
            master_verdict(1, &nodes, &a(vec![("b", ans(true, false, 1)), ("c", ans(true, false, 0))])),
            MasterVerdict::Renew { reached: 3 }
        );
        assert_eq!(
            master_verdict(1, &nodes, &a(vec![("b", ans(true, false, 1)), ("c", None)])),
            MasterVerdict::NoMajority { reached: 2, registered: 4 }
        );
        // An answer from a newer term does not count.
        assert_eq!(
            master_verdict(1, &nodes, &a(vec![("b", ans(true, false, 2)), ("c", ans(true, false, 1))])),
            MasterVerdict::NoMajority { reached: 2, registered: 4 }
        );
        assert_eq!(
            master_verdict(1, &nodes, &a(vec![("b", ans(false, false, 2)), ("c", ans(true, false, 1))])),
            MasterVerdict::OtherMaster { name: "b".into(), term: 2, newer: true }
        );
        assert_eq!(
            master_verdict(3, &nodes, &a(vec![("b", ans(false, false, 2))])),
            MasterVerdict::OtherMaster { name: "b".into(), term: 2, newer: false }
        );
        // A fenced old master elsewhere is not a rival.
        assert!(matches!(
            master_verdict(3, &nodes, &a(vec![("b", ans(false, true, 2)), ("c", ans(true, false, 3))])),
            MasterVerdict::Renew { .. }
        ));
    }

    #[test]
    fn early_count_leaves_time_for_every_answer() {
        for ms in [100u64, 1000, 5000] {
            let k = Duration::from_millis(ms);
            // Well inside the probe deadline (0.8 × keepalive_time), well above a round trip.
            assert!(early_count_after(k) * 2 < k * 4 / 5);
            assert!(early_count_after(k) >= k / 5);
        }
    }

    #[test]
    fn hold_outlasts_lease() {
        for ms in [100u64, 1000, 5000] {
            let lease = master_lease(Duration::from_millis(ms));
            assert!(voter_hold(lease) > lease);
            assert!(heartbeat_interval(Duration::from_millis(ms)) * 2 <= lease);
        }
    }
}
