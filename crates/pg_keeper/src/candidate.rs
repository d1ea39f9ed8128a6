//! Standing for election: the driver of keeper-core's `Candidacy` (every step and timer of
//! the election is decided there; this file casts the own vote through the same function as
//! any voter's, sends the requests, feeds the replies back, and promotes). The new master
//! takes no lease from the votes: it starts fenced, and its first heartbeat round that a
//! majority answers opens its gate.

use crate::election_api::{answer_vote, received_position};
use crate::worker::{shutdown_requested, Worker};
use crate::{gucs, probe, shared};
use futures_util::stream::{FuturesUnordered, StreamExt};
use keeper_core::candidacy::{Stand, Step};
use keeper_core::election::{may_promote, VoteReply};
use keeper_core::lsn::Position;
use keeper_core::Node;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// The clock the Candidacy reads (through the worker): CLOCK_BOOTTIME, as the holds.
pub(crate) fn now() -> Duration {
    Duration::from_millis(shared::boot_ms().max(0) as u64)
}

/// The Instant for one of the Candidacy's times.
fn instant_of(at: Duration) -> Instant {
    Instant::now() + at.saturating_sub(now())
}

impl Worker {
    pub(crate) fn stand(&mut self, me: &str, nodes: &[Node], old_master: &str, failed_rounds: u32) -> String {
        let Some(mine) = received_position() else { return "not standing: not in recovery".into() };
        let rec = match crate::votes::current(me) {
            Ok(rec) => rec,
            Err(e) => return format!("not standing: {e}"),
        };
        let (seen, hold_left) = {
            let st = shared::STATE.share();
            (st.seen_term, Duration::from_millis((st.hold_until - shared::boot_ms()).max(0) as u64))
        };
        let standing = Stand {
            me,
            nodes,
            old_master,
            mine,
            rec: &rec,
            seen,
            hold_left,
            membership: self.membership,
            two_node: gucs::TWO_NODE_FAILOVER.get(),
            keepalive_time: self.settings.keepalive_time,
        };
        let mut step = self.keeper.candidacy.stand(now(), &standing);
        // The term of a real (not dry-run) request sent: a Wait after it is a lost election.
        let mut asked: Option<u64> = None;
        loop {
            step = match step {
                Step::CastOwnVote { request, dry } => match crate::tx::transaction(|| answer_vote(me, &request, dry)) {
                    Ok((res, term, _)) => {
                        if res.is_ok() && !dry {
                            log!(
                                "pg_keeper: {me} stands for election in term {} (WAL received up to {mine})",
                                request.term
                            );
                        }
                        self.keeper.candidacy.own_vote(now(), res, term)
                    }
                    Err(e) => {
                        self.keeper.candidacy.abandon();
                        return format!("not standing: {e}");
                    }
                },
                Step::Ask { request, dry, to, deadline } => {
                    if !dry {
                        asked = Some(request.term);
                    }
                    if !self.ask(nodes, &request, dry, &to, deadline) {
                        self.keeper.candidacy.abandon();
                        return "stopping".into();
                    }
                    self.keeper.candidacy.count(now())
                }
                Step::Promote { term, votes, fetch_from, check_own_record, lease_from: _ } => {
                    return self.won(me, nodes, old_master, term, &votes, fetch_from, check_own_record);
                }
                Step::Wait { state, notice, retry_at, seen } => {
                    shared::note_term(seen);
                    if let Some(t) = asked {
                        crate::history::record(keeper_core::history::Kind::ElectionLost, t, &[me], &state);
                    }
                    if let Some(n) = notice {
                        self.notice_once(n);
                    }
                    if let Some(t) = retry_at {
                        self.retry_at = Some(instant_of(t));
                    }
                    return format!("master unreachable, {failed_rounds} rounds; {state}");
                }
            };
        }
    }

    /// Send the requests at once and feed the replies to the Candidacy until it is ready to
    /// count (or its deadline). False if the server is shutting down.
    fn ask(
        &mut self,
        nodes: &[Node],
        request: &keeper_core::election::VoteRequest,
        dry: bool,
        to: &[String],
        deadline: Duration,
    ) -> bool {
        let db = gucs::database();
        let mut pending: FuturesUnordered<_> = nodes
            .iter()
            .filter(|n| to.contains(&n.name))
            .map(|n| {
                let cfg = probe::config(&n.conninfo, Some(&db));
                let name = n.name.clone();
                async move {
                    let r: Result<VoteReply, String> = match cfg {
                        Ok(cfg) => probe::request_vote(cfg, deadline, request, dry).await,
                        Err(e) => Err(e),
                    };
                    (name, r)
                }
            })
            .collect();
        let candidacy = &mut self.keeper.candidacy;
        let collect = async {
            while !candidacy.ready(now()) {
                let wake = candidacy.poll_timeout(now()).map(instant_of).unwrap_or_else(Instant::now);
                tokio::select! {
                    r = pending.next() => match r {
                        Some((name, r)) => candidacy.on_reply(&name, r),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(wake.into()) => {}
                }
            }
        };
        probe::block_on_cancellable(self.rt, collect, shutdown_requested).is_some()
    }

    #[allow(clippy::too_many_arguments)]
    fn won(
        &mut self,
        me: &str,
        nodes: &[Node],
        old_master: &str,
        term: u64,
        votes: &[String],
        fetch_from: Option<(String, Position)>,
        check_own_record: bool,
    ) -> String {
        // Still "this term, voted for me"? (We kept answering requests while waiting.) From
        // this check to the end of the promotion, vote like a master. No lease yet: the first
        // heartbeat round a majority answers opens the gate.
        // The win is persisted with the record before the promotion: only an elected master
        // may hold a lease (`may_hold_lease`), after a restart too.
        let won = crate::votes::with_record(me, |rec, st| {
            let ok = !check_own_record || may_promote(me, term, rec);
            if ok {
                st.promoting = true;
                st.revoke_lease("elected: its first heartbeat round with a majority opens the gate");
            }
            (ok, if ok { rec.won(me, term) } else { rec.clone() })
        });
        match won {
            Ok(true) => {
                let voters: Vec<&str> = votes.iter().map(String::as_str).collect();
                crate::history::record(
                    keeper_core::history::Kind::ElectionWon,
                    term,
                    &voters,
                    &format!("votes of {} of {} registered nodes; old master {old_master}", votes.len(), nodes.len()),
                );
            }
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
