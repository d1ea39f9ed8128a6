//! Standing for election: a pre-vote (would a majority grant? nothing persisted, so a
//! candidate that cannot win pushes no term up), then the vote itself: vote for ourselves
//! (persisted, under the same rules as any voter), ask every other registered node at once,
//! count (keeper-core's `tally`), and promote only with a majority. The new master takes no
//! lease from the votes: it starts fenced, and its first heartbeat round that a majority
//! answers opens its gate (every lease then comes from heartbeats, which set the voters'
//! holds). The simulation in keeper-core checks these rules.

use crate::election_api::{answer_vote, received_position};
use crate::worker::{shutdown_requested, Worker};
use crate::{gucs, probe, shared};
use futures_util::stream::{FuturesUnordered, StreamExt};
use keeper_core::election::{
    early_count_after, fast_forward_source, may_promote, next_term, tally, Refusal, Tally, VoteReply, VoteRequest,
};
use keeper_core::lsn::Position;
use keeper_core::Node;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// One round of requests: the count, the replies (own vote included) and why others refused.
struct Ballot {
    tally: Tally,
    replies: Vec<(String, VoteReply)>,
    refusals: Vec<String>,
}

impl Worker {
    pub(crate) fn stand(&mut self, me: &str, nodes: &[Node], old_master: &str, failed_rounds: u32) -> String {
        // After a lost ballot, wait a random part of a round before standing again: two
        // candidates whose rounds happen to line up would otherwise split the votes round
        // after round (Raft's randomized election timeout).
        if let Some(t) = self.stand_not_before {
            if Instant::now() < t {
                self.retry_at = Some(t);
                return format!(
                    "master unreachable, {failed_rounds} rounds; standing again shortly (lost the last ballot)"
                );
            }
        }
        // The old master's lease, as acknowledged here, must be over first: then wait for it
        // rather than for a whole round (plus a little, as the others acknowledged it later).
        let hold_left = shared::STATE.share().hold_until - shared::boot_ms();
        if hold_left > 0 {
            self.retry_at = Some(Instant::now() + Duration::from_millis(hold_left as u64 + 50));
            return format!("master unreachable, {failed_rounds} rounds; waiting {hold_left} ms for its lease to end");
        }
        let Some(mine) = received_position() else { return "not standing: not in recovery".into() };
        let seen = shared::STATE.share().seen_term;
        let (term, eligible) = match crate::votes::current(me) {
            Ok(rec) => (next_term(&rec, seen), rec.eligible),
            Err(e) => return format!("not standing: {e}"),
        };
        // Pre-vote, then the vote.
        for dry in [true, false] {
            let req = VoteRequest {
                term,
                candidate: me.to_string(),
                candidate_lsn: mine.lsn,
                candidate_tli: mine.tli,
                candidate_membership: self.membership,
            };
            match crate::tx::transaction(|| answer_vote(me, &req, dry)) {
                Ok((Ok(()), _, _)) => {}
                Ok((Err(r), t, _)) => {
                    shared::note_term(t);
                    if let Refusal::LeaseHeld { .. } = r {
                        self.retry_at = Some(Instant::now() + Duration::from_millis(100));
                    } else {
                        self.notice_once(format!("pg_keeper: master unreachable, but this node does not stand: {r}"));
                    }
                    return format!("not standing: own vote refused: {r}");
                }
                Err(e) => return format!("not standing: {e}"),
            }
            if !dry {
                log!("pg_keeper: {me} stands for election in term {term} (WAL received up to {mine})");
            }
            let Some(ballot) = self.ballot(me, nodes, old_master, term, mine, dry, eligible.as_deref()) else {
                return "stopping".into();
            };
            let what = if dry { "pre-vote" } else { "election" };
            match ballot.tally {
                Tally::Won { votes } if !dry => {
                    let source = fast_forward_source(me, mine, &ballot.replies);
                    return self.won(me, nodes, old_master, term, &votes, source);
                }
                Tally::Won { .. } => {}
                Tally::Yield { to, at: theirs } => {
                    self.notice_once(format!(
                        "pg_keeper: not promoting ({what}, term {term}): {to} has more WAL ({theirs} > {mine}); it should stand"
                    ));
                    return format!("{what} term {term}: yielding to {to}");
                }
                Tally::Lost { votes, needed, newest_term } => {
                    shared::note_term(newest_term);
                    let k = self.settings.keepalive_time;
                    self.stand_not_before = Some(Instant::now() + k.mul_f64(random_unit()));
                    self.notice_once(format!(
                        "pg_keeper: {what} in term {term} lost: {} of {needed} votes needed ({}); refused: {}",
                        votes.len(),
                        votes.join(", "),
                        ballot.refusals.join("; ")
                    ));
                    return format!("{what} term {term}: {} of {needed} votes", votes.len());
                }
            }
        }
        unreachable!("the real vote returns")
    }

    /// Ask every registered node but us and the old master, at once. Once
    /// `early_count_after(keepalive_time)` has passed, stop as soon as the replies so far win:
    /// a silent node must not hold every election for the whole deadline (candidates of other
    /// ranks would stand meanwhile, and each newer term voids the one running).
    #[allow(clippy::too_many_arguments)]
    fn ballot(
        &mut self,
        me: &str,
        nodes: &[Node],
        old_master: &str,
        term: u64,
        mine: Position,
        dry: bool,
        eligible: Option<&[String]>,
    ) -> Option<Ballot> {
        let deadline = self.probe_deadline();
        let membership = self.membership;
        let early = early_count_after(self.settings.keepalive_time);
        let db = gucs::database();
        let two_node = gucs::TWO_NODE_FAILOVER.get();
        let own = (
            me.to_string(),
            VoteReply { granted: true, term, lsn: Some(mine.lsn), tli: mine.tli, reason: String::new() },
        );
        let replies_of = |got: &[(String, Result<VoteReply, String>)]| {
            let mut replies = vec![own.clone()];
            replies.extend(got.iter().filter_map(|(n, r)| r.as_ref().ok().map(|r| (n.clone(), r.clone()))));
            replies
        };
        let count =
            |got: &[(String, Result<VoteReply, String>)]| tally(me, nodes, mine, &replies_of(got), two_node, eligible);
        let mut pending: FuturesUnordered<_> = nodes
            .iter()
            .filter(|n| n.name != me && n.name != old_master)
            .map(|n| {
                let cfg = probe::config(&n.conninfo, Some(&db));
                let name = n.name.clone();
                async move {
                    let r = match cfg {
                        Ok(cfg) => probe::request_vote(cfg, deadline, me, term, mine, membership, dry).await,
                        Err(e) => Err(e),
                    };
                    (name, r)
                }
            })
            .collect();
        let collect = async {
            let early_at = tokio::time::Instant::now() + early;
            let mut got = Vec::new();
            loop {
                tokio::select! {
                    r = pending.next() => match r {
                        Some(x) => got.push(x),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(early_at), if tokio::time::Instant::now() < early_at => {}
                }
                if tokio::time::Instant::now() >= early_at && matches!(count(&got), Tally::Won { .. }) {
                    break;
                }
            }
            got
        };
        let got = probe::block_on_cancellable(&self.rt, collect, shutdown_requested)?;
        let refusals = got
            .iter()
            .filter_map(|(n, r)| match r {
                Ok(r) if !r.granted => Some(format!("{n}: {}", r.reason)),
                Ok(_) => None,
                Err(e) => Some(format!("{n}: no answer ({e})")),
            })
            .collect();
        Some(Ballot { tally: count(&got), replies: replies_of(&got), refusals })
    }

    fn won(
        &mut self,
        me: &str,
        nodes: &[Node],
        old_master: &str,
        term: u64,
        votes: &[String],
        fetch_from: Option<(String, Position)>,
    ) -> String {
        // Still "this term, voted for me"? (We kept answering requests while waiting.) From
        // this check to the end of the promotion, vote like a master. No lease yet: the first
        // heartbeat round a majority answers opens the gate.
        // The win is persisted with the record before the promotion: only an elected master
        // may hold a lease (`may_hold_lease`), after a restart too.
        let won = crate::votes::with_record(me, |rec, st| {
            let ok = may_promote(me, term, rec);
            if ok {
                st.promoting = true;
                st.revoke_lease("elected: its first heartbeat round with a majority opens the gate");
            }
            (ok, if ok { rec.won(me, term) } else { rec.clone() })
        });
        match won {
            Ok(true) => {}
            Ok(false) => return format!("election term {term}: a newer term started meanwhile"),
            Err(e) => return format!("election term {term}: {e}"),
        }
        if let Some((from, target)) = fetch_from {
            self.fast_forward(me, nodes, &from, target);
        }
        let state = self.promote(me, old_master, term, votes, nodes.len());
        let mut st = shared::STATE.exclusive();
        st.promoting = false;
        st.stand_until = 0;
        drop(st);
        state
    }
}

/// A number in [0, 1) that differs between processes and calls (no cryptographic use).
fn random_unit() -> f64 {
    let mut x = (shared::boot_ms() as u64) ^ ((unsafe { pg_sys::MyProcPid } as u64) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    x ^= u64::from(nanos).rotate_left(17);
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}
