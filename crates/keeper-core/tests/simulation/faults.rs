//! Faults and operator actions: crashes, restarts, the heal, hand promotions, switchovers, membership changes; the clients' writes and replication.

use keeper_core::conninfo::testing::words;
use super::*;

impl Sim {
    pub(super) fn crash(&mut self, i: usize) {
        tr!(self, "crash n{i}");
        let survives = self.deposed_survives_restart;
        let s = &mut self.nodes[i];
        s.alive = false;
        s.gen += 1;
        s.lease_until = 0;
        s.hold_until = 0;
        s.standing_until = 0;
        s.keeper = Keeper::new(self.rules.core(), i as u64 ^ (s.gen << 8));
        s.seen = 0;
        s.round = Round::Idle;
        s.via.clear();
        if !survives {
            s.deposed = false;
        }
        // Shared memory and the worker's memory are lost; the record and node_info are not.
        s.stepped_down = false;
        s.gate_open = false;
        s.release_pending = None;
        s.step_down_armed = None;
        s.macked = 0;
        s.open_needs = 0;
        s.known_to_all_v = None;
        s.frozen_until = 0;
        s.stand_until = 0;
        s.paused_until = 0;
        // The worker's sets told and PostgreSQL's release position (its WAL is on disk).
        s.told = Default::default();
        s.released = 0;
        s.ack_floor = None;
        s.streaming = 0;
    }

    pub(super) fn restart(&mut self, i: usize) {
        let hold = self.local(i) + self.hold;
        let s = &mut self.nodes[i];
        s.alive = true;
        s.gen += 1;
        s.hold_until = hold;
        let gen = s.gen;
        let runs = !(s.witness || (s.master && s.deposed));
        tr!(self, "restart n{i}{}", if self.nodes[i].master { " (master, fenced)" } else { "" });
        if runs {
            let first = self.now + self.rng.range(1_000, self.k / 2);
            self.push(first, Ev::Tick { n: i, gen });
        }
    }

    pub(super) fn heal(&mut self) {
        self.healed = true;
        for x in self.down.iter_mut() {
            *x = 0;
        }
        for x in self.slow.iter_mut() {
            *x = 0;
        }
        // At most one data node stays down: one already down, or one crashed now (maybe the
        // master), or none.
        let data = self.shape.data;
        for s in self.nodes.iter_mut() {
            s.paused_until = 0;
            s.replay_paused_until = 0;
        }
        let keep = if self.faults.kill_master_at_heal {
            (0..data).filter(|&i| self.nodes[i].alive && self.entitled(i)).max_by_key(|&i| self.nodes[i].master_term)
        } else {
            self.heal_keep(data)
        };
        tr!(
            self,
            "HEAL: all links up; {}",
            match keep {
                Some(i) => format!("n{i} stays down"),
                None => "all nodes up".into(),
            }
        );
        for i in 0..self.n {
            if Some(i) == keep {
                if self.nodes[i].alive {
                    self.crash(i);
                }
                self.nodes[i].perma_down = true;
            } else if !self.nodes[i].alive {
                self.restart(i);
            }
        }
        // (With membership changes, what the rules promise is not computed: liveness is not
        // checked.)
        if self.faults.membership.is_none() {
            self.push(self.now + self.live_bound, Ev::LiveCheck);
        }
    }

    /// The heal's usual choice of the data node that stays down, if any.
    pub(super) fn heal_keep(&mut self, data: usize) -> Option<usize> {
        match self.rng.below(3) {
            0 => None,
            1 => {
                let downs: Vec<usize> = (0..data).filter(|&i| !self.nodes[i].alive).collect();
                if downs.is_empty() {
                    None
                } else {
                    Some(downs[self.rng.below(downs.len() as u64) as usize])
                }
            }
            _ => {
                let t = if self.rng.chance(1, 2) {
                    Target::Master
                } else {
                    Target::Node(self.rng.below(data as u64) as usize)
                };
                let i = self.resolve(t);
                if self.nodes[i].witness {
                    None
                } else {
                    Some(i)
                }
            }
        }
    }

    pub(super) fn replicate_and_write(&mut self) {
        let sync = self.faults.synchronous;
        if sync {
            for s in self.nodes.iter_mut() {
                s.streaming = 0;
            }
        }
        for i in 0..self.n {
            let s = &self.nodes[i];
            if !s.alive || s.master || s.witness || self.frozen(i) {
                continue;
            }
            let m = s.known;
            if m != i
                && self.nodes[m].alive
                && self.nodes[m].master
                && !self.frozen(m)
                && self.link_up(m, i)
                && self.link_up(i, m)
            {
                if sync {
                    self.stream(i, m);
                    continue;
                }
                let l = self.nodes[m].lsn;
                let s = &mut self.nodes[i];
                s.lsn = s.lsn.max(l);
                if self.faults.membership.is_some() {
                    // The WAL received carries node_info's changes; a standby that received
                    // changes another master lost cannot follow this one.
                    let (mh, rh) = (&self.nodes[m].hist, &self.nodes[i].received);
                    if mh.len() > rh.len() && mh[..rh.len()] == rh[..] {
                        self.nodes[i].received = mh.clone();
                    }
                    self.replay(i, m);
                }
            }
        }
        for i in 0..self.n {
            if self.unfenced(i) && !self.frozen(i) {
                let term = self.nodes[i].master_term;
                if let Some(w) = self.max_won_term {
                    if w > term {
                        let when = self.wins.iter().find(|x| x.0 == w).map(|x| x.2).unwrap_or(0);
                        let m =
                            format!("write at n{i} (term {term}) after term {w} was won at {:.4}s", when as f64 / 1e6);
                        self.fail(m);
                    }
                }
                self.nodes[i].lsn += 1;
                if sync {
                    self.nodes[i].wal.push(term);
                }
                self.stats.writes += 1;
                if self.faults.commits {
                    // The commit record's flush and the synchronous-replication wait.
                    let d = match self.rng2.below(100) {
                        0..=84 => self.rng2.range(100, 3_000),
                        85..=96 => self.rng2.range(3_000, 100_000),
                        _ => self.rng2.range(100_000, 1_500_000),
                    };
                    let (gen, term) = (self.nodes[i].gen, self.nodes[i].master_term);
                    let pos = if sync { self.nodes[i].lsn } else { 0 };
                    self.push(self.now + d, Ev::CommitDone { n: i, gen, term, passed: self.now, pos });
                }
            }
        }
        if sync {
            self.release_and_settle();
        }
    }

    /// A commit of node n, which passed the gate at `passed`, is durable: acknowledged to the
    /// client, unless the post-commit check (rule 5) finds the gate closed now. Every
    /// acknowledgement must come before any promotion in a newer term, and at an instant when
    /// no other node accepts writes.
    pub(super) fn commit_done(&mut self, n: usize, gen: u64, term: Term, passed: u64, pos: u64) {
        if !self.nodes[n].alive || self.nodes[n].gen != gen {
            return; // lost with the server
        }
        if self.faults.synchronous {
            // Durable here; now PostgreSQL's wait for the synchronous standby, then the
            // post-commit check (synchronous.rs).
            self.waiting.push(synchronous::Waiting { n, gen, term, passed, pos, give_up: None });
            return self.settle();
        }
        let gate = if self.unfenced(n) { Gate::Open } else { Gate::Fenced { why: String::new() } };
        if !self.rules.core().acknowledge(&gate) {
            self.stats.withheld += 1;
            tr!(
                self,
                "n{n}: commit that passed the gate at {:.4}s is durable, the gate is closed: not acknowledged",
                passed as f64 / 1e6
            );
            return;
        }
        self.acknowledged(n, term, passed);
    }

    /// Invariant 6: a commit acknowledged now by node n (of term `term`, through its gate at
    /// `passed`) comes before any promotion in a newer term, and at an instant when no other
    /// node accepts writes.
    pub(super) fn acknowledged(&mut self, n: usize, term: Term, passed: u64) {
        self.stats.acks += 1;
        if let Some(&(w, by, at)) = self.wins.iter().filter(|x| x.0 > term && x.2 <= self.now).min_by_key(|x| x.2) {
            let m = format!(
                "n{n} (term {term}) acknowledges a commit that passed its gate at {:.4}s, after n{by} won term {w} at {:.4}s",
                passed as f64 / 1e6,
                at as f64 / 1e6
            );
            return self.fail(m);
        }
        if let Some(j) = (0..self.n).find(|&j| j != n && self.unfenced(j)) {
            let m = format!(
                "n{n} (term {term}) acknowledges a commit that passed its gate at {:.4}s while n{j} (term {}) accepts writes",
                passed as f64 / 1e6,
                self.nodes[j].master_term
            );
            self.fail(m);
        }
    }

    /// `pg_ctl promote` on a random standby: writable, not elected (rule 1: no lease ever).
    pub(super) fn hand_promote(&mut self) {
        let cands: Vec<usize> = (0..self.shape.data)
            .filter(|&i| self.nodes[i].alive && !self.nodes[i].master && self.in_view(i, i) && !self.frozen(i))
            .collect();
        if cands.is_empty() {
            return;
        }
        let i = cands[self.rng2.below(cands.len() as u64) as usize];
        self.stats.hand_promotions += 1;
        tr!(self, "n{i} PROMOTED BY HAND (record {:?}): writable, not elected", self.nodes[i].rec);
        let s = &mut self.nodes[i];
        s.master = true;
        s.hand_promoted = true;
        s.master_term = s.rec.term;
        s.deposed = false;
        s.lease_until = 0;
        s.gate_open = false;
        s.standing_until = 0;
        s.gen += 1;
        s.round = Round::Idle;
        s.via.clear();
        s.known = i;
        let gen = s.gen;
        if self.faults.synchronous {
            self.new_timeline(i);
        }
        self.push(self.now, Ev::Tick { n: i, gen });
    }

    /// The newest elected master whose gate is open and which runs: where an administrator's
    /// call (switchover, add_node, del_node) lands and commits.
    pub(super) fn acting_master(&self) -> Option<usize> {
        (0..self.n)
            .filter(|&i| self.entitled(i) && self.unfenced(i) && !self.frozen(i))
            .max_by_key(|&i| self.nodes[i].master_term)
    }

    /// `pgkeeper switchover` to a random standby: pause failover everywhere, then step_down on
    /// the master (`step_down`). A round that finds every answer in lasts a few ms only: in
    /// three of four switchovers the step_down lands right after a heartbeat round started, so
    /// that it races the round in flight.
    pub(super) fn switchover(&mut self, race: bool) {
        let Some(m) = self.acting_master() else { return };
        let targets: Vec<usize> = (0..self.shape.data)
            .filter(|&t| {
                t != m && self.nodes[t].alive && !self.nodes[t].master && self.in_view(m, t) && self.in_view(t, t)
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let target = targets[self.rng2.below(targets.len() as u64) as usize];
        self.stats.switchovers += 1;
        tr!(
            self,
            "SWITCHOVER n{m} -> n{target} ({}): failover paused",
            if race { "the target stands while the old master runs" } else { "the old master stops first" }
        );
        for s in self.nodes.iter_mut() {
            s.paused_until = self.now + 120_000_000;
        }
        if !matches!(self.nodes[m].round, Round::Beat { .. }) && self.rng2.chance(3, 4) {
            self.nodes[m].step_down_armed = Some((target, race));
        } else {
            self.step_down(m, target, race);
        }
    }

    /// step_down() on master m (rule 3: for good until a restart); `release` goes on once a
    /// round saw the flag.
    pub(super) fn step_down(&mut self, m: usize, target: usize, race: bool) {
        if !self.nodes[m].alive || !self.nodes[m].master || self.nodes[m].stepped_down {
            return;
        }
        tr!(
            self,
            "n{m}: step_down(){}",
            if matches!(self.nodes[m].round, Round::Beat { .. }) { " (a round in flight)" } else { "" }
        );
        let s = &mut self.nodes[m];
        s.stepped_down = true;
        s.release_pending = Some((target, race));
        let gen = s.gen;
        let t = self.at_local(m, self.local(m) + 10_000_000);
        self.push(t, Ev::ReleaseTimeout { n: m, gen });
    }

    /// step_down's end (a round saw the flag, or 10 s passed): `_release` on every other node;
    /// then the switchover's clean stop of the old master (with a rollback restart in a quarter
    /// of them) and `stand_for_election` on the target; or, in a race, the target is asked to
    /// stand while the old master still runs.
    pub(super) fn release(&mut self, m: usize) {
        let Some((target, race)) = self.nodes[m].release_pending.take() else { return };
        let term = self.nodes[m].rec.term;
        tr!(self, "n{m} releases the vote holds (term {term})");
        for p in 0..self.n {
            if p != m && self.in_view(m, p) {
                self.send(m, p, Body::Release { term });
            }
        }
        let stand_at = if race {
            self.now + self.rng2.range(0, 300_000)
        } else {
            let stop = self.now + self.rng2.range(5_000, 100_000);
            let down_for = if self.rng2.chance(1, 4) { self.rng2.range(500_000, 5_000_000) } else { u64::MAX / 4 };
            self.push(stop, Ev::Crash { target: Target::Node(m), down_for });
            stop + self.rng2.range(10_000, 200_000)
        };
        self.push(stand_at, Ev::StandRequest { n: target });
        let end = stand_at + self.rng2.range(1_000_000, 8_000_000);
        self.push(end, Ev::Unpause);
    }

    /// add_node or del_node on the acting master: the change commits (the gate is open) only
    /// once the previous one is acknowledged (rule 6; the API retries until `until`).
    pub(super) fn member_change(&mut self, add: bool, until: u64) {
        let Some(m) = self.acting_master() else { return };
        let v = self.version(m);
        let me = self.nodes[m].name.clone();
        let alone = self.nodes[m].view.iter().all(|r| r.name == me);
        if self.rules.one_change_at_a_time && !alone && self.nodes[m].macked < v {
            if self.now + 100_000 < until {
                self.push(self.now + 100_000, Ev::Member { add, until });
            } else {
                self.stats.member_refused += 1;
                tr!(self, "n{m}: membership change refused: version {v} not acknowledged");
            }
            return;
        }
        let view = &self.nodes[m].view;
        let spares: Vec<usize> = (0..self.shape.data).filter(|&p| !self.in_view(m, p)).collect();
        let removable: Vec<usize> =
            view.iter().filter(|r| !r.is_master && !r.is_witness && r.name != me).map(|r| idx(&r.name)).collect();
        let add = !spares.is_empty() && (add || view.len() <= 2 || removable.is_empty());
        if !add && (removable.is_empty() || view.len() <= 2) {
            return;
        }
        let (p, new) = if add {
            let p = spares[self.rng2.below(spares.len() as u64) as usize];
            (p, registry::add(view, &format!("n{p}"), &format!("host=h{p}"), false, None, &words).expect("registry::add"))
        } else {
            let p = removable[self.rng2.below(removable.len() as u64) as usize];
            (p, registry::delete(view, Selector::Name(&format!("n{p}")), None).expect("registry::delete"))
        };
        // api.rs: a gate open without a lease closes before the change commits, and opens
        // again only from a round that read it.
        self.nodes[m].open_needs = self.nodes[m].open_needs.max(v + 1);
        if self.nodes[m].gate_open {
            self.fence_for_lease(m);
            self.nodes[m].lease_until = 0;
        }
        let id = self.changes.len();
        self.changes.push((new.clone(), self.now));
        self.set_view(m, new);
        self.nodes[m].hist.push(id);
        self.nodes[m].received.push(id);
        // The change is a commit: WAL that a standby has received or not.
        self.nodes[m].lsn += 1;
        self.stats.member_changes += 1;
        tr!(self, "n{m} {} n{p}: node_info version {}", if add { "add_node" } else { "del_node" }, v + 1);
    }

    /// Standby i replays node_info from the WAL it received (from master m): the changes
    /// older than its replay lag, unless its replay is paused.
    pub(super) fn replay(&mut self, i: usize, m: usize) {
        if self.now < self.nodes[i].replay_paused_until {
            return;
        }
        let (mh, sh) = (&self.nodes[i].received, &self.nodes[i].hist);
        let lag = self.nodes[i].replay_lag;
        let mut j = sh.len();
        while j < mh.len() && self.changes[mh[j]].1 + lag <= self.now {
            j += 1;
        }
        if j > sh.len() {
            let hist = mh[..j].to_vec();
            let view = self.changes[mh[j - 1]].0.clone();
            tr!(self, "n{i} replays node_info version {j} (from n{m})");
            self.set_view(i, view);
            self.nodes[i].hist = hist;
        }
        // Caught up with m: the roles in node_info (a new master's row) too.
        if self.nodes[i].hist == self.nodes[m].hist && self.nodes[i].view != self.nodes[m].view {
            let view = self.nodes[m].view.clone();
            self.set_view(i, view);
        }
    }
}
