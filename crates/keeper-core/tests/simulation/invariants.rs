//! The invariants, checked after every event, and what a stuck cluster is stuck on.

use super::*;

impl Sim {
    /// Invariant 1 (never two unfenced masters), and invariant 5 once the liveness bound has
    /// passed in the healed cluster (the same master unfenced at every instant).
    pub(super) fn check(&mut self) {
        let mut up: Option<usize> = None;
        for i in 0..self.n {
            if self.unfenced(i) {
                if let Some(j) = up {
                    let m = format!(
                        "two unfenced masters: n{j} (term {}, lease to its local {}) and n{i} (term {}, lease to its local {})",
                        self.nodes[j].master_term, self.nodes[j].lease_until, self.nodes[i].master_term, self.nodes[i].lease_until
                    );
                    self.fail(m);
                    return;
                }
                up = Some(i);
            }
        }
        // Rule 1: only a node that may hold the lease ever has its gate open.
        if let Some(i) = up.filter(|&i| !self.entitled(i)) {
            let m = format!("n{i}, promoted outside an election (record {:?}), accepts writes", self.nodes[i].rec);
            self.fail(m);
            return;
        }
        // Invariant 4, exactly: a master that could accept a write now must not be older than
        // a promotion that already happened.
        if let (Some(i), Some(w)) = (up, self.max_won_term) {
            if w > self.nodes[i].master_term {
                let when = self.wins.iter().find(|x| x.0 == w).map(|x| x.2).unwrap_or(0);
                let m = format!(
                    "n{i} (term {}) accepts writes after term {w} was won at {:.4}s",
                    self.nodes[i].master_term,
                    when as f64 / 1e6
                );
                self.fail(m);
                return;
            }
        }
        if let Some(m) = self.live_master {
            if up != Some(m) {
                let m = format!(
                    "n{m}, the healed cluster's master, is no longer the unfenced master (now {up:?}): {}",
                    self.state_summary()
                );
                self.fail_liveness(m);
            }
        }
    }

    /// The liveness bound after the heal has passed: an unfenced master must exist now (and
    /// stay, see [`Sim::check`]), unless the rules do not promise one ([`Sim::stuck_reason`]).
    pub(super) fn live_check(&mut self) {
        let up = (0..self.n).find(|&i| self.unfenced(i));
        match up {
            Some(m) => {
                tr!(self, "liveness bound: n{m} is the unfenced master");
                self.live_master = Some(m);
                self.stats.liveness_checked = true;
            }
            None => match self.stuck_reason() {
                Some((category, why)) if !self.strict_liveness => {
                    tr!(self, "liveness bound: no master, and none promised ({category}): {why}");
                    self.stats.stuck = Some((category, format!("{why} | {}", self.state_summary())));
                }
                _ => {
                    let m = format!(
                        "no unfenced master {:.3}s after the heal: {}",
                        self.live_bound as f64 / 1e6,
                        self.state_summary()
                    );
                    self.fail_liveness(m);
                }
            },
        }
    }

    /// Why the healed cluster (all links up, every node up but at most one data node) may have
    /// no master under the current rules; None when they promise one. They promise one when
    /// - the newest master is up, not deposed, and a majority of registered nodes (itself
    ///   included) are up with a record term not newer than its term: its heartbeats hold
    ///   them (no term moves past it) and their answers count, so it renews; or
    /// - every master that is up is deposed or older than some free voter, and the voters up
    ///   that no running master's heartbeats hold (record term newer than every such master's
    ///   term) are a majority, and one of them is the data standby with the most WAL among the
    ///   standbys up (every candidate yields to a node with more WAL that answers).
    ///
    /// Otherwise a master that lost an election refuses votes for good (until rejoined), a
    /// master whose heartbeats hold voters cannot renew because answers from newer terms do not
    /// count, and nobody can be elected: that is reported (`stuck`), not failed.
    pub(super) fn stuck_reason(&self) -> Option<(&'static str, String)> {
        let n = self.n;
        // (A node promoted by hand is no master here: it never holds the lease, sends no
        // heartbeat and votes like a standby, rule 1; a stepped-down master is as deposed.)
        let newest = (0..n).filter(|&i| self.entitled(i)).max_by_key(|&i| self.nodes[i].master_term)?;
        let nm = &self.nodes[newest];
        let answering = 1
            + (0..n)
                .filter(|&i| i != newest && self.nodes[i].alive && self.nodes[i].rec.term <= nm.master_term)
                .count();
        let gone = |i: usize| self.nodes[i].deposed || self.nodes[i].stepped_down;
        let can_renew = nm.alive && !gone(newest) && answering * 2 > n;
        // Masters that heartbeat.
        let beating: Vec<usize> = (0..n).filter(|&i| self.nodes[i].alive && self.entitled(i) && !gone(i)).collect();
        let free = |i: usize| {
            let s = &self.nodes[i];
            s.alive && !self.entitled(i) && beating.iter().all(|&j| self.nodes[j].master_term < s.rec.term)
        };
        let free_count = (0..n).filter(|&i| free(i)).count();
        let top_lsn = (0..n)
            .filter(|&i| self.nodes[i].alive && !self.nodes[i].master && !self.nodes[i].witness)
            .map(|i| self.nodes[i].lsn)
            .max();
        let best_free = (0..n).any(|i| free(i) && !self.nodes[i].witness && Some(self.nodes[i].lsn) == top_lsn);
        let can_elect = free_count * 2 > n && best_free;
        if can_renew || can_elect {
            return None;
        }
        let alive_voters = (0..n).filter(|&i| self.nodes[i].alive && !self.entitled(i)).count();
        let alive = (0..n).filter(|&i| self.nodes[i].alive).count();
        let category = if nm.alive && !gone(newest) && alive * 2 > n {
            STUCK_TERMS
        } else if alive_voters * 2 <= n {
            STUCK_MASTERS
        } else if free_count * 2 <= n {
            STUCK_HELD
        } else {
            STUCK_WAL
        };
        Some((
            category,
            format!(
                "newest master n{newest} (term {}, up {}, deposed {}): {answering}/{n} nodes would count for it; \
                 {free_count}/{n} voters free of every running master's hold; best standby free: {best_free}",
                nm.master_term, nm.alive, nm.deposed
            ),
        ))
    }

    pub(super) fn state_summary(&self) -> String {
        let parts: Vec<String> = (0..self.n)
            .map(|i| {
                let s = &self.nodes[i];
                let role = if s.witness {
                    "witness".to_string()
                } else if s.master {
                    format!(
                        "master(t{}{}{}{}{})",
                        s.master_term,
                        if s.hand_promoted { ",by hand" } else { "" },
                        if s.deposed { ",deposed" } else { "" },
                        if s.stepped_down { ",stepped down" } else { "" },
                        if self.unfenced(i) { ",unfenced" } else { "" }
                    )
                } else {
                    format!("standby(polls n{}, failed {})", s.known, s.keeper.standby.failed_rounds)
                };
                let members = if self.faults.membership.is_some() {
                    let names: Vec<String> =
                        (0..self.n).filter(|&p| self.in_view(i, p)).map(|p| format!("n{p}")).collect();
                    format!(" node_info v{} [{}]", self.version(i), names.join(" "))
                } else {
                    String::new()
                };
                format!(
                    "n{i}:{}{}{} rec(t{} {:?}{}) lsn {} hold {}ms{members}",
                    if s.alive { "" } else { "DOWN " },
                    if self.frozen(i) { "FROZEN " } else { "" },
                    role,
                    s.rec.term,
                    s.rec.voted_for.as_deref().unwrap_or("-"),
                    if s.rec.elected { " elected" } else { "" },
                    s.lsn,
                    s.hold_until.saturating_sub(self.local(i)) / 1000
                )
            })
            .collect();
        parts.join("; ")
    }
}
