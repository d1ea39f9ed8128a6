//! The network: links up or down, partitions, and message delivery to the nodes' handlers.

use super::synchronous::names;
use super::*;

impl Sim {
    pub(super) fn net(&mut self, action: NetAction, dur: u64) {
        let n = self.n;
        let mut links = Vec::new();
        let mut slow = false;
        match action {
            NetAction::Partition { group } => {
                for a in 0..n {
                    for b in 0..n {
                        if (group >> a) & 1 != (group >> b) & 1 {
                            links.push((a, b));
                        }
                    }
                }
            }
            NetAction::Isolate { target, dir } => {
                let x = self.resolve(target);
                for o in (0..n).filter(|&o| o != x) {
                    if dir != 2 {
                        links.push((x, o));
                    }
                    if dir != 1 {
                        links.push((o, x));
                    }
                }
            }
            NetAction::Cut { a, b, both } => {
                links.push((a, b));
                if both {
                    links.push((b, a));
                }
            }
            NetAction::SlowNode { target } => {
                let x = self.resolve(target);
                slow = true;
                for o in (0..n).filter(|&o| o != x) {
                    links.push((x, o));
                    links.push((o, x));
                }
            }
        }
        tr!(self, "{} {:?} for {:.3}s", if slow { "slow" } else { "cut" }, links, dur as f64 / 1e6);
        for (a, b) in links {
            if slow {
                self.slow[a * n + b] += 1;
                self.push(self.now + dur, Ev::SlowOff { a, b });
            } else {
                self.down[a * n + b] += 1;
                self.push(self.now + dur, Ev::LinkUp { a, b });
            }
        }
    }

    /// A request reached the host of a server that is down: the connection is refused.
    pub(super) fn refuse(&mut self, from: usize, to: usize, body: Body) {
        let (gen, rid, what) = match body {
            Body::Poll { gen, rid } => (gen, rid, Req::Poll),
            Body::ViaReq { gen, rid, .. } => (gen, rid, Req::Via),
            Body::NestedReq { key, gen_v, .. } => (0, 0, Req::Nested { key, gen_v }),
            Body::Beat { gen, rid, .. } => (gen, rid, Req::Beat),
            Body::VoteReq { gen, rid, .. } => (gen, rid, Req::Vote),
            Body::PreVoteReq { gen, rid, .. } => (gen, rid, Req::PreVote),
            _ => return, // answers to a dead requester are just lost
        };
        self.send(to, from, Body::Refused { gen, rid, what });
    }

    /// The requester learns that one request failed: one answer fewer to wait for.
    pub(super) fn refused(&mut self, to: usize, from: usize, gen: u64, rid: u64, what: Req) {
        if let Req::Nested { key, gen_v } = what {
            return self.deliver(from, to, Body::NestedAns { key, gen_v, reached: false });
        }
        let s = &mut self.nodes[to];
        if s.gen != gen || s.rid != rid {
            return;
        }
        let pending = match (&mut s.round, what) {
            (Round::Poll { pending, .. }, Req::Poll) => {
                *pending -= 1;
                // Refused: the others are asked at once.
                self.direct_answered(to, false);
                if let Round::Poll { pending: 0, .. } = self.nodes[to].round {
                    self.end_round(to);
                }
                return;
            }
            (Round::Poll { via, pending, .. }, Req::Via) => {
                // The via-node did not answer: no information (stays NoAnswer).
                if !via.iter().any(|e| e.0 == from && e.1 == Indirect::NoAnswer) {
                    return;
                }
                pending
            }
            (Round::Beat { pending, .. }, Req::Beat) => pending,
            (Round::Ballot { .. }, Req::Vote | Req::PreVote) => {
                let name = self.nodes[from].name.clone();
                self.nodes[to].keeper.candidacy.on_reply(&name, Err("connection refused".into()));
                return self.ballot_progress(to, false);
            }
            _ => return,
        };
        *pending -= 1;
        if *pending == 0 {
            self.end_round(to);
        }
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, body: Body) {
        match body {
            Body::Poll { gen, rid } => {
                let ans = self.answer(to);
                self.send(to, from, Body::PollAns { gen, rid, ans });
            }
            Body::PollAns { gen, rid, ans } => {
                if self.nodes[to].gen != gen || self.nodes[to].rid != rid {
                    return;
                }
                let s = &mut self.nodes[to];
                s.seen = s.seen.max(ans.term);
                if let Round::Poll { direct_ok, pending, .. } = &mut s.round {
                    *direct_ok = ans.writable();
                    *pending -= 1;
                    self.direct_answered(to, ans.writable());
                    if let Round::Poll { pending: 0, .. } = self.nodes[to].round {
                        self.end_round(to);
                    }
                }
            }
            Body::ViaReq { gen, rid, target } => {
                let v = to;
                self.next_key += 1;
                let key = self.next_key;
                let gen_v = self.nodes[v].gen;
                self.nodes[v].via.push(ViaEntry { key, s: from, gen_s: gen, rid, done: false });
                let nested = self.at_local(v, self.local(v) + self.k * 2 / 5);
                self.push(nested, Ev::ViaDue { v, gen: gen_v, key });
                if target != v {
                    let d1 = self.delay(v, target);
                    let d2 = self.delay(target, v);
                    if self.now + d1 + d2 <= nested {
                        self.send_after(v, target, Body::NestedReq { key, gen_v, back: d2 }, d1);
                    }
                }
            }
            Body::NestedReq { key, gen_v, back } => {
                let reached = self.answer(to).writable();
                self.send_after(to, from, Body::NestedAns { key, gen_v, reached }, back);
            }
            Body::NestedAns { key, gen_v, reached } => {
                let v = to;
                if self.nodes[v].gen != gen_v {
                    return;
                }
                if let Some(e) = self.nodes[v].via.iter_mut().find(|e| e.key == key && !e.done) {
                    e.done = true;
                    let (s, gen, rid) = (e.s, e.gen_s, e.rid);
                    let me = self.answer(v);
                    self.send(v, s, Body::ViaAns { gen, rid, reached, me });
                }
            }
            Body::ViaAns { gen, rid, reached, me } => {
                if self.nodes[to].gen != gen || self.nodes[to].rid != rid {
                    return;
                }
                let my_term = self.nodes[to].rec.term;
                if let Round::Poll { via, pending, elected, writable_via, .. } = &mut self.nodes[to].round {
                    if me.just_elected(my_term) {
                        *elected = Some((from, me.term));
                    }
                    if me.writable() && !writable_via.contains(&from) {
                        writable_via.push(from);
                    }
                    if let Some(e) = via.iter_mut().find(|e| e.0 == from && e.1 == Indirect::NoAnswer) {
                        e.1 = if reached { Indirect::Reached } else { Indirect::Unreached };
                        *pending -= 1;
                        if *pending == 0 {
                            self.end_round(to);
                        }
                    }
                }
            }
            Body::Beat { gen, rid, term, lease, hb, eligible } => {
                // Rule 4: term read, hold set, eligible set persisted and answer built in one
                // step.
                let p = to;
                let local = self.local(p);
                if hb {
                    let eligible = self.rules.core().to_persist(eligible.map(names));
                    let s = &mut self.nodes[p];
                    let (hold, told) = on_heartbeat(
                        &s.rec,
                        term,
                        Duration::from_micros(lease),
                        Duration::from_micros(local),
                        Duration::from_micros(s.hold_until),
                        eligible,
                    );
                    s.hold_until = us(hold);
                    if told != s.rec {
                        self.persist(p, told);
                    }
                }
                let s = &mut self.nodes[p];
                if hb && self.rules.note_terms {
                    s.seen = s.seen.max(term);
                }
                if hb && !s.master && !s.witness && term >= s.known_term {
                    s.known = from;
                    s.known_term = term;
                }
                let ans = self.answer(p);
                self.send(p, from, Body::BeatAns { gen, rid, ans });
            }
            Body::Release { term } => {
                // `_release`: a master that stepped down ends the holds its lease set.
                let l = self.local(to);
                let s = &mut self.nodes[to];
                if term >= s.rec.term {
                    s.hold_until = l;
                }
            }
            Body::BeatAns { gen, rid, ans } => {
                if self.nodes[to].gen != gen || self.nodes[to].rid != rid {
                    return;
                }
                let was = self.unfenced(to);
                let now_l = self.local(to);
                let name = self.nodes[from].name.clone();
                let s = &mut self.nodes[to];
                let Round::Beat { pending, round, .. } = &mut s.round else { return };
                if round.answered(&name) {
                    return;
                }
                *pending -= 1;
                let done = *pending == 0;
                // master.rs `on_answer`, the moment the answer arrives.
                let mut renewed = false;
                match round.on_answer(&name, &ans) {
                    LeaseNow::End => s.lease_until = 0,
                    LeaseNow::Extend { until } => {
                        // (only while the gate waits for a lease: gate::Setting::Lease)
                        if !s.gate_open && !s.stepped_down && !s.deposed {
                            s.lease_until = s.lease_until.max(until.as_micros() as u64);
                            renewed = !was && now_l < s.lease_until;
                        }
                    }
                    LeaseNow::Unchanged => {}
                }
                if renewed {
                    tr!(
                        self,
                        "n{to} (term {}) lease renewed by a majority of answers: unfenced",
                        self.nodes[to].master_term
                    );
                }
                if done {
                    self.end_round(to);
                }
            }
            Body::VoteReq { gen, rid, term, lsn, tli, mv } => {
                let v = to;
                let (res, new) = self.decide(v, from, term, Position::new(tli, lsn), mv);
                if self.trace.is_some() {
                    let what = match &res {
                        Ok(()) => "grants".to_string(),
                        Err(r) => format!("refuses ({r})"),
                    };
                    tr!(self, "n{v} {what} n{from} term {term}");
                }
                self.persist(v, new);
                if res.is_ok() && self.rules.hold_on_grant {
                    let until = self.local(v) + self.hold;
                    let s = &mut self.nodes[v];
                    s.hold_until = s.hold_until.max(until);
                }
                let s = &self.nodes[v];
                // As the adapter's received_lsn(): WAL received, NULL when not in recovery.
                let reply_lsn = if s.witness || s.master { None } else { Some(s.lsn) };
                let body =
                    Body::VoteAns { gen, rid, granted: res.is_ok(), term: s.rec.term, lsn: reply_lsn, tli: s.tli };
                self.send(v, from, body);
            }
            Body::Refused { gen, rid, what } => self.refused(to, from, gen, rid, what),
            Body::PreVoteReq { gen, rid, term, lsn, tli, mv } => {
                let v = to;
                let (res, _) = self.decide(v, from, term, Position::new(tli, lsn), mv);
                let s = &self.nodes[v];
                let reply_lsn = if s.witness || s.master { None } else { Some(s.lsn) };
                let body =
                    Body::PreVoteAns { gen, rid, granted: res.is_ok(), term: s.rec.term, lsn: reply_lsn, tli: s.tli };
                self.send(v, from, body);
            }
            Body::PreVoteAns { gen, rid, granted, term, lsn, tli }
            | Body::VoteAns { gen, rid, granted, term, lsn, tli } => {
                if self.nodes[to].gen != gen || self.nodes[to].rid != rid {
                    return;
                }
                let name = self.nodes[from].name.clone();
                let s = &mut self.nodes[to];
                s.seen = s.seen.max(term);
                s.keeper.candidacy.on_reply(&name, Ok(VoteReply { granted, term, lsn, tli, reason: String::new() }));
                self.ballot_progress(to, false);
            }
        }
    }
}
