//! Standing for election: vote for ourselves (persisted, under the same rules as any
//! voter), ask every other registered node at once, count (keeper-core's `tally`), and
//! promote only with a majority. The lease taken on winning starts when the requests went
//! out, which is no later than any vote was granted.

use crate::election_api::{answer_vote, received_lsn};
use crate::worker::{shutdown_requested, Worker};
use crate::{gucs, probe, shared};
use futures_util::future::join_all;
use keeper_core::election::{master_lease, may_promote, next_term, tally, Refusal, Tally, VoteReply, VoteRequest};
use keeper_core::{lsn, Node};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

impl Worker {
    pub(crate) fn stand(&mut self, me: &str, nodes: &[Node], old_master: &str, failed_rounds: u32) -> String {
        // The old master's lease, as acknowledged here, must be over first: then wait for it
        // rather than for a whole round (plus a little, as the others acknowledged it later).
        let hold_left = shared::STATE.share().hold_until - shared::mono_ms();
        if hold_left > 0 {
            self.retry_at = Some(Instant::now() + Duration::from_millis(hold_left as u64 + 50));
            return format!("master unreachable, {failed_rounds} rounds; waiting {hold_left} ms for its lease to end");
        }
        let started = shared::mono_ms();
        let my_lsn = match BackgroundWorker::transaction(received_lsn) {
            Ok(Some(l)) => l,
            Ok(None) => return "not standing: not in recovery".into(),
            Err(e) => return format!("not standing: cannot read the WAL position: {e}"),
        };
        let term = match crate::votes::current(me) {
            Ok(rec) => next_term(&rec, self.seen_term),
            Err(e) => return format!("not standing: {e}"),
        };
        let lease = master_lease(self.settings.keepalive_time);
        let req = VoteRequest { term, candidate: me.to_string(), candidate_lsn: my_lsn };
        match BackgroundWorker::transaction(|| answer_vote(me, &req, lease)) {
            Ok((Ok(()), _, _)) => {}
            Ok((Err(r), t, _)) => {
                self.seen_term = self.seen_term.max(t);
                if let Refusal::LeaseHeld { .. } = r {
                    self.retry_at = Some(Instant::now() + Duration::from_millis(100));
                }
                return format!("not standing: own vote refused: {r}");
            }
            Err(e) => return format!("not standing: {e}"),
        }
        log!("pg_keeper: {me} stands for election in term {term} (WAL received up to {})", lsn::format(my_lsn));

        let deadline = self.probe_deadline();
        let db = gucs::database();
        let voters: Vec<&Node> = nodes.iter().filter(|n| n.name != me && n.name != old_master).collect();
        let futs = voters.iter().map(|n| {
            let cfg = probe::config(&n.conninfo, Some(&db));
            async move { probe::request_vote(cfg?, deadline, me, term, my_lsn, lease).await }
        });
        let Some(results) = probe::block_on_cancellable(&self.rt, join_all(futs), shutdown_requested) else {
            return "stopping".into();
        };
        let mut replies =
            vec![(me.to_string(), VoteReply { granted: true, term, lsn: Some(my_lsn), reason: String::new() })];
        let mut refusals = Vec::new();
        for (n, r) in voters.iter().zip(results) {
            match r {
                Ok(reply) => {
                    if !reply.granted {
                        refusals.push(format!("{}: {}", n.name, reply.reason));
                    }
                    replies.push((n.name.clone(), reply));
                }
                Err(e) => refusals.push(format!("{}: no answer ({e})", n.name)),
            }
        }
        let two_node = gucs::TWO_NODE_FAILOVER.get();
        match tally(me, nodes, my_lsn, &replies, two_node) {
            Tally::Won { votes } => {
                // Still "this term, voted for me"? (We kept answering requests while waiting.)
                // From this check to the end of the promotion, vote like a master.
                let won = crate::votes::with_record(me, |rec, st| {
                    let ok = may_promote(me, term, rec);
                    if ok {
                        st.promoting = true;
                        st.fence = 1;
                        st.lease_until = started + lease.as_millis() as i64;
                    }
                    (ok, rec.clone())
                });
                match won {
                    Ok(true) => {}
                    Ok(false) => return format!("election term {term}: a newer term started meanwhile"),
                    Err(e) => return format!("election term {term}: {e}"),
                }
                let state = self.promote(me, old_master, term, &votes, nodes.len());
                shared::STATE.exclusive().promoting = false;
                state
            }
            Tally::Yield { to, lsn: theirs } => {
                self.notice_once(format!(
                    "pg_keeper: not promoting in term {term}: {to} has more WAL ({} > {}); it should stand",
                    lsn::format(theirs),
                    lsn::format(my_lsn)
                ));
                format!("election term {term}: yielding to {to}")
            }
            Tally::Lost { votes, needed, newest_term } => {
                self.seen_term = self.seen_term.max(newest_term);
                self.notice_once(format!(
                    "pg_keeper: election in term {term} lost: {} of {needed} votes needed ({}); refused: {}",
                    votes.len(),
                    votes.join(", "),
                    refusals.join("; ")
                ));
                format!("election term {term}: {} of {needed} votes", votes.len())
            }
        }
    }
}
