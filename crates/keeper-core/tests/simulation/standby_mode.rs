//! Standby mode: the polling round (keeper_core::failover::StandbyMode::round) and the node's Candidacy (keeper_core::candidacy), carried out as the adapter's worker does.

use super::*;

impl Sim {
    pub(super) fn start_poll(&mut self, i: usize) {
        // A win belongs to its promotion: a node running as a standby must win anew (rule 1).
        if self.rules.lease_entitlement && self.nodes[i].rec.elected {
            let rec = VoteRecord { elected: false, ..self.nodes[i].rec.clone() };
            self.persist(i, rec);
        }
        let rid = self.next_rid();
        let start_l = self.local(i);
        let m = self.nodes[i].known;
        let gen = self.nodes[i].gen;
        let via = Vec::new();
        let mut pending = 0;
        if m != i {
            self.send(i, m, Body::Poll { gen, rid });
            pending += 1;
        }
        self.nodes[i].polls += 1;
        let s = &mut self.nodes[i];
        s.rid = rid;
        s.round = Round::Poll {
            start_l,
            direct_ok: false,
            via,
            pending,
            elected: None,
            writable_via: Vec::new(),
            asked: false,
        };
        let deadline = self.at_local(i, start_l + self.k * 4 / 5);
        self.push(deadline, Ev::RoundEnd { n: i, gen, rid });
        // As standby.rs: the others are asked once the direct poll has not answered as a live
        // master within the hedge (keeper_core::polling::ask_others).
        let hedge = us(keeper_core::timing::indirect_hedge(Duration::from_micros(self.k * 4 / 5)));
        if m == i {
            self.ask_others(i);
        } else {
            let at = self.at_local(i, start_l + hedge);
            self.push(at, Ev::Hedge { n: i, gen, rid });
        }
    }

    /// The direct poll answered: as a live master in time, the others are asked only every
    /// `ASK_OTHERS_EVERY` rounds; otherwise now.
    pub(super) fn direct_answered(&mut self, i: usize, live: bool) {
        let (start_l, polls) = match &self.nodes[i].round {
            Round::Poll { start_l, .. } => (*start_l, self.nodes[i].polls),
            _ => return,
        };
        let hedge = us(keeper_core::timing::indirect_hedge(Duration::from_micros(self.k * 4 / 5)));
        let in_time = self.local(i) <= start_l + hedge;
        if keeper_core::polling::ask_others(live && in_time, polls - 1) {
            self.ask_others(i);
        }
    }

    /// Ask every other standby to poll the master (once per round).
    pub(super) fn ask_others(&mut self, i: usize) {
        let m = self.nodes[i].known;
        let (gen, rid) = (self.nodes[i].gen, self.nodes[i].rid);
        let targets: Vec<usize> = (0..self.n).filter(|&v| v != i && v != m && self.in_view(i, v)).collect();
        let Round::Poll { via, pending, asked, .. } = &mut self.nodes[i].round else { return };
        if *asked {
            return;
        }
        *asked = true;
        for &v in &targets {
            via.push((v, Indirect::NoAnswer));
            *pending += 1;
        }
        for v in targets {
            self.send(i, v, Body::ViaReq { gen, rid, target: m });
        }
    }

    pub(super) fn end_round(&mut self, i: usize) {
        let round = std::mem::replace(&mut self.nodes[i].round, Round::Idle);
        match round {
            Round::Idle => {}
            Round::Poll { start_l, direct_ok, via, elected, writable_via, .. } => {
                self.end_poll(i, start_l, direct_ok, via, elected, writable_via)
            }
            Round::Ballot { .. } => {}
            Round::Beat { start_l, round, version, .. } => self.end_beat(i, start_l, *round, version),
        }
    }

    pub(super) fn schedule_next(&mut self, i: usize, start_l: u64, every: u64) {
        let t = self.at_local(i, start_l + every);
        let gen = self.nodes[i].gen;
        self.push(t, Ev::Tick { n: i, gen });
    }

    pub(super) fn end_poll(
        &mut self,
        i: usize,
        start_l: u64,
        direct_ok: bool,
        via: Vec<(usize, Indirect)>,
        elected: Option<(usize, Term)>,
        writable_via: Vec<usize>,
    ) {
        let obs = RoundObservation {
            direct_ok,
            indirect: via.iter().map(|(v, r)| (self.nodes[*v].name.clone(), *r)).collect(),
        };
        let cfg = FailoverConfig { paused: self.nodes[i].paused_until > self.now, ..self.cfg };
        let seen = Sightings {
            writable: writable_via.iter().map(|v| self.nodes[*v].name.clone()).collect(),
            just_elected: elected.map(|(e, t)| (self.nodes[e].name.clone(), t)),
            stand_requested: self.nodes[i].stand_until > self.local(i),
        };
        let s = &mut self.nodes[i];
        let round = s.keeper.standby_round(&s.name, &s.view, &obs, &seen, cfg);
        match round.next {
            Next::Stand { old_master, .. } => self.stand(i, start_l, &old_master),
            Next::Report(Decision::MasterAlive) => self.schedule_next(i, start_l, self.k),
            next => {
                if self.trace.is_some() {
                    let known = self.nodes[i].known;
                    tr!(self, "n{i} round (master n{known}): {next:?}");
                }
                // (Follow: standbys here stream from the sender of the newest heartbeat.)
                self.schedule_next(i, start_l, self.k)
            }
        }
    }

    pub(super) fn hold_left(&self, i: usize) -> Duration {
        let s = &self.nodes[i];
        Duration::from_micros(s.hold_until.max(s.standing_until).saturating_sub(self.local(i)))
    }

    /// Standby mode says stand: this node's `Candidacy` decides every step from here, as in
    /// the adapter's candidate.rs; the simulation only carries its steps out.
    pub(super) fn stand(&mut self, i: usize, start_l: u64, old_master: &str) {
        let now = Duration::from_micros(self.local(i));
        let hold_left = self.hold_left(i);
        let membership = self.vote_version(i);
        let s = &mut self.nodes[i];
        let standing = Stand {
            me: &s.name,
            nodes: &s.view,
            old_master,
            mine: Position::new(s.tli, s.lsn),
            rec: &s.rec,
            seen: s.seen,
            hold_left,
            membership,
            two_node: false,
            keepalive_time: Duration::from_micros(self.k),
        };
        let step = s.keeper.candidacy.stand(now, &standing);
        self.carry_out(i, start_l, step);
    }

    pub(super) fn carry_out(&mut self, i: usize, start_l: u64, step: Step) {
        match step {
            Step::CastOwnVote { request, dry } => {
                let s = &self.nodes[i];
                let view = VoterView {
                    me: &s.name,
                    nodes: &s.view,
                    is_master: false,
                    my_lsn: s.lsn,
                    my_tli: s.tli,
                    hold_left: self.hold_left(i),
                    membership: self.vote_version(i),
                };
                let (res, new) = decide_vote(&s.rec, &request, &view);
                let term = request.term;
                if !dry {
                    self.persist(i, new);
                    if res.is_ok() && self.rules.hold_on_own_vote {
                        let until = self.local(i) + self.hold;
                        let s = &mut self.nodes[i];
                        s.hold_until = s.hold_until.max(until);
                    }
                    match &res {
                        Ok(()) => tr!(self, "n{i} stands in term {term} (lsn {})", request.candidate_lsn),
                        Err(r) => tr!(self, "n{i} stands in term {term}: own vote refused: {r}"),
                    }
                } else if let Err(r) = &res {
                    tr!(self, "n{i} pre-vote for term {term}: own vote would be refused: {r}");
                }
                let now = Duration::from_micros(self.local(i));
                let rec_term = self.nodes[i].rec.term;
                let next = self.nodes[i].keeper.candidacy.own_vote(now, res, rec_term);
                self.carry_out(i, start_l, next);
            }
            Step::Ask { request, dry, to, deadline: _ } => {
                let rid = self.next_rid();
                let gen = self.nodes[i].gen;
                let send_l = self.local(i);
                if !dry && self.rules.hold_while_standing {
                    self.nodes[i].standing_until = send_l + self.k * 4 / 5;
                }
                let (term, lsn, tli, mv) =
                    (request.term, request.candidate_lsn, request.candidate_tli, request.candidate_membership);
                for v in to.iter().map(|n| idx(n)) {
                    let body = if dry {
                        Body::PreVoteReq { gen, rid, term, lsn, tli, mv }
                    } else {
                        Body::VoteReq { gen, rid, term, lsn, tli, mv }
                    };
                    self.send(i, v, body);
                }
                let s = &mut self.nodes[i];
                s.rid = rid;
                s.round = Round::Ballot { start_l };
                self.ballot_progress(i, true);
            }
            Step::Promote { term, votes, fetch_from, check_own_record, lease_from } => {
                self.nodes[i].standing_until = 0;
                if self.tally_won(i, term) {
                    return;
                }
                if check_own_record && !may_promote(&self.nodes[i].name, term, &self.nodes[i].rec) {
                    tr!(
                        self,
                        "n{i} won term {term} with {votes:?} but its record is now {:?}: no promotion",
                        self.nodes[i].rec
                    );
                    self.schedule_next(i, start_l, self.k);
                    return;
                }
                tr!(self, "n{i} WINS term {term} with {votes:?}");
                if votes.iter().any(|v| self.nodes[idx(v)].hand_promoted && self.nodes[idx(v)].master) {
                    self.stats.hand_votes += 1;
                    self.stats.hand_votes_healed += self.healed as u64;
                }
                if self.faults.synchronous {
                    self.fast_forward(i, fetch_from);
                }
                self.win(i, term, lease_from.map(|t| t.as_micros() as u64));
            }
            Step::Wait { state, notice: _, retry_at, seen } => {
                self.nodes[i].standing_until = 0;
                let s = &mut self.nodes[i];
                s.seen = s.seen.max(seen);
                tr!(self, "n{i}: {state}");
                // As the adapter's retry_at: the next round no later than a round from now.
                let next = retry_at.map_or(start_l + self.k, |t| (t.as_micros() as u64).min(start_l + self.k));
                let t = self.at_local(i, next);
                let gen = self.nodes[i].gen;
                self.push(t, Ev::Tick { n: i, gen });
            }
        }
    }

    /// After a reply, a refusal or a timer: count if the Candidacy is ready; else, when `arm`
    /// (the ballot just started, or its timer fired), wake it at its `poll_timeout`.
    pub(super) fn ballot_progress(&mut self, i: usize, arm: bool) {
        let Round::Ballot { start_l } = self.nodes[i].round else { return };
        let now = Duration::from_micros(self.local(i));
        if self.nodes[i].keeper.candidacy.ready(now) {
            self.nodes[i].round = Round::Idle;
            let step = self.nodes[i].keeper.candidacy.count(now);
            return self.carry_out(i, start_l, step);
        }
        if let Some(t) = self.nodes[i].keeper.candidacy.poll_timeout(now).filter(|_| arm) {
            let (gen, rid) = (self.nodes[i].gen, self.nodes[i].rid);
            let at = self.at_local(i, t.as_micros() as u64);
            self.push(at, Ev::BallotTimer { n: i, gen, rid });
        }
    }

    /// Invariant 2, over every count that said Won (promoted or not). True on a violation.
    pub(super) fn tally_won(&mut self, i: usize, term: Term) -> bool {
        if let Some(&(_, w)) = self.counted_wins.iter().find(|w| w.0 == term && w.1 != i) {
            let m = format!("two winners in term {term}: n{w} and n{i}");
            self.fail(m);
            return true;
        }
        self.counted_wins.push((term, i));
        false
    }

    pub(super) fn win(&mut self, i: usize, term: Term, lease_from: Option<u64>) {
        self.wins.push((term, i, self.now));
        if self.faults.synchronous {
            self.new_timeline(i);
            self.check_acknowledged_kept(i, term);
        }
        self.max_won_term = Some(self.max_won_term.map_or(term, |t| t.max(term)));
        let lease_until = lease_from.map_or(0, |t| t + self.lease);
        let name = self.nodes[i].name.clone();
        // The promotion ends recovery: every node_info change received is replayed first.
        if self.nodes[i].received.len() > self.nodes[i].hist.len() {
            let received = self.nodes[i].received.clone();
            let view = self.changes[received[received.len() - 1]].0.clone();
            tr!(self, "n{i} replays node_info up to version {} at its promotion", received.len());
            self.set_view(i, view);
            self.nodes[i].hist = received;
        }
        if self.rules.lease_entitlement {
            // Persisted with the record before the promotion (rule 1).
            self.persist(i, VoteRecord::elected_in(&name, term));
        }
        let s = &mut self.nodes[i];
        s.master = true;
        s.master_term = term;
        s.deposed = false;
        s.lease_until = lease_until;
        s.gen += 1;
        s.known = i;
        for row in s.view.iter_mut() {
            row.is_master = row.name == name;
        }
        s.reg_master = s.view.iter().any(|r| r.name == name);
        let gen = s.gen;
        self.push(self.now, Ev::Tick { n: i, gen });
    }
}
