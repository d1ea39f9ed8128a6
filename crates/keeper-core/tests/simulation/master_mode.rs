//! Master mode: the heartbeat round (keeper_core::heartbeat::HeartbeatRound) and the voters' side of votes, as the adapter runs them.

use super::*;

impl Sim {
    pub(super) fn start_beat(&mut self, i: usize) {
        let entitled = self.entitled(i);
        // The adapter's master heartbeats with its vote record's term (shared state `term`):
        // with `may_promote`, that is the term it won, for good (a master refuses every vote).
        if entitled && self.rules.check_own_record && self.nodes[i].rec.term != self.nodes[i].master_term {
            let m = format!(
                "master n{i} won term {} but its record says term {}",
                self.nodes[i].master_term, self.nodes[i].rec.term
            );
            self.fail(m);
        }
        if !entitled {
            // (Promoted by hand: it votes like a standby, so its term moves.)
            self.nodes[i].master_term = self.nodes[i].rec.term;
        }
        let rid = self.next_rid();
        let start_l = self.local(i);
        let gen = self.nodes[i].gen;
        let term = self.nodes[i].master_term;
        // Two data nodes without witness cannot elect anyone else: the gate needs no lease
        // there, once the other node has the current membership (rule 6).
        let len = self.nodes[i].view.len();
        let settled =
            !self.rules.two_node_settled || self.nodes[i].known_to_all_v.is_some_and(|v| v >= self.version(i));
        let can_fail_over = keeper_core::heartbeat::can_fail_over(len, false, settled);
        let round = self.nodes[i].keeper.heartbeat_round(RoundStart {
            term,
            entitled,
            can_fail_over,
            nodes: self.nodes[i].view.clone(),
            me: self.nodes[i].name.clone(),
            started: Duration::from_micros(start_l),
            lease: Duration::from_micros(self.lease),
        });
        let eligible = self.tell_eligible(i, entitled, term);
        let mut pending = 0;
        for p in round.peers().iter().map(|n| idx(n)) {
            self.send(i, p, Body::Beat { gen, rid, term, lease: self.lease, hb: round.heartbeat(), eligible });
            pending += 1;
        }
        let version = self.version(i);
        let s = &mut self.nodes[i];
        s.rid = rid;
        s.round = Round::Beat { start_l, pending, round: Box::new(round), version };
        let deadline = self.at_local(i, start_l + self.hb * 4 / 5);
        self.push(deadline, Ev::RoundEnd { n: i, gen, rid });
        if let Some((target, race)) = self.nodes[i].step_down_armed.take() {
            let t = self.now + self.rng2.range(0, 4_000);
            self.push(t, Ev::StepDown { n: i, gen, target, race });
        }
    }

    /// The gate back to "lease" (`set_gate(Setting::Lease)`, through `Rules::gate_then`):
    /// never undoes a step_down (rule 3), unless that rule is off.
    pub(super) fn fence_for_lease(&mut self, i: usize) {
        let core = self.rules.core();
        let s = &mut self.nodes[i];
        s.gate_open = false;
        let current = if s.stepped_down { Setting::SteppedDown } else { Setting::Lease };
        if s.stepped_down && core.gate_then(current, Setting::Lease) != Setting::SteppedDown {
            s.stepped_down = false;
            tr!(self, "n{i}: a round in flight resets the gate after step_down");
        }
    }

    pub(super) fn end_beat(&mut self, i: usize, start_l: u64, round: HeartbeatRound, version: u64) {
        let term = self.nodes[i].master_term;
        // A majority persisted the set this round carried (master.rs).
        if round.majority_heard() {
            self.nodes[i].told.majority_persisted();
        }
        let RoundEnd { verdict, gate, answers } = round.finish();
        if self.faults.membership.is_some() {
            let view = self.nodes[i].view.clone();
            self.note_membership(i, term, &view, &answers);
        }
        if !self.rules.per_answer_lease {
            // The model as it was before rule 2: only a renewal and a deposition act.
            match gate {
                GateStep::NeedLease { extend_to: Some(until), .. } => {
                    let was = self.unfenced(i);
                    let s = &mut self.nodes[i];
                    s.lease_until = s.lease_until.max(until.as_micros() as u64);
                    if !was {
                        tr!(self, "n{i} (term {term}) lease renewed: unfenced");
                    }
                }
                GateStep::Deposed { .. } => {
                    tr!(self, "n{i} (term {term}) {verdict:?}: deposed");
                    self.nodes[i].deposed = true;
                    return;
                }
                _ => {}
            }
            return self.schedule_next(i, start_l, self.hb);
        }
        match gate {
            GateStep::Deposed { .. } => {
                tr!(self, "n{i} (term {term}) {verdict:?}: deposed");
                self.nodes[i].deposed = true;
                self.release(i);
                return;
            }
            GateStep::Revoke { why } => {
                tr!(self, "n{i} (term {term}) {verdict:?}: {why}");
                self.fence_for_lease(i);
                self.nodes[i].lease_until = 0;
            }
            GateStep::OpenWithoutLease => {
                self.fence_for_lease(i);
                // (set_gate(Open): a no-op once stepped down, rule 3)
                if keeper_core::gate::without_lease(version, self.nodes[i].open_needs).is_ok() {
                    let was = self.unfenced(i);
                    self.nodes[i].gate_open = true;
                    if !was && self.unfenced(i) {
                        tr!(self, "n{i} (term {term}): two data nodes, settled: the gate opens without a lease");
                    }
                }
            }
            GateStep::NeedLease { why, extend_to } => {
                let was = self.unfenced(i);
                self.fence_for_lease(i);
                if let Some(until) = extend_to {
                    let s = &mut self.nodes[i];
                    s.lease_until = s.lease_until.max(until.as_micros() as u64);
                }
                if !was && self.unfenced(i) {
                    tr!(self, "n{i} (term {term}) lease renewed: unfenced");
                } else if extend_to.is_none() && self.trace.is_some() && self.nodes[i].lease_until > 0 {
                    tr!(self, "n{i} (term {term}) {why}");
                }
            }
        }
        self.schedule_next(i, start_l, self.hb);
    }

    /// Which membership versions the answers carried (master.rs `note_membership`): the
    /// current version is acknowledged once a majority has it, settled once every node has it.
    pub(super) fn note_membership(
        &mut self,
        i: usize,
        term: Term,
        view: &[Node],
        list: &[(String, Option<PeerAnswer>)],
    ) {
        let v = self.version(i);
        let me = self.nodes[i].name.clone();
        if membership::acknowledged(v, view, &me, term, list) {
            self.nodes[i].macked = self.nodes[i].macked.max(v);
        }
        if membership::known_to_all(v, view, &me, term, list) {
            self.nodes[i].known_to_all_v = Some(v);
        }
    }
    /// Voter v's answer to `from`'s (pre-)vote request, by `decide_vote` as the adapter asks
    /// it (`election_api::answer_vote`), and the record it would persist.
    pub(super) fn decide(
        &mut self,
        v: usize,
        from: usize,
        term: Term,
        at: Position,
        mv: u64,
    ) -> (Result<(), keeper_core::election::Refusal>, VoteRecord) {
        if self.rules.note_terms {
            self.nodes[v].seen = self.nodes[v].seen.max(term);
        }
        let req = VoteRequest {
            term,
            candidate: self.nodes[from].name.clone(),
            candidate_lsn: at.lsn,
            candidate_tli: at.tli,
            candidate_membership: mv,
        };
        let hold_left = self.hold_left(v);
        // A writable node that may not hold the lease votes like a standby (rule 1), its WAL
        // counting as 0 (received_lsn() is NULL out of recovery).
        let entitled = self.rules.core().may_hold_lease(&self.nodes[v].rec, self.registered_master(v));
        let is_master =
            keeper_core::election::votes_as_master(self.nodes[v].master && !self.nodes[v].witness, entitled, false);
        let membership = self.vote_version(v);
        let s = &self.nodes[v];
        let my_lsn = if s.witness || s.master { 0 } else { s.lsn };
        let view = VoterView { me: &s.name, nodes: &s.view, is_master, my_lsn, my_tli: s.tli, hold_left, membership };
        decide_vote(&s.rec, &req, &view)
    }
}
