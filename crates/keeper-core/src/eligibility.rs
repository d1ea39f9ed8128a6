//! Who may be elected while synchronous replication is in force (issue 2/7), and what a
//! commit must reach before its client is told.
//!
//! A commit acknowledged under synchronous replication is on the master and on the standbys
//! PostgreSQL waited for. A majority of voters can leave all of those out (5 nodes, `FIRST 1`:
//! the commit is on 2, a majority is 3), so "the most advanced voter wins" can lose it. The
//! rule: the master names in each heartbeat the standbys that hold every acknowledged commit
//! (the eligible set: PostgreSQL's synchronous standbys that have every
//! acknowledged commit); every voter persists it with its vote record and votes only for a
//! member ([`crate::election::decide_vote`]). The argument:
//!
//! 1. An election needs a majority of votes; the set a master relies on was persisted by a
//!    majority; the two share a voter, and it votes only for members of that set or of a
//!    set the master sent later.
//! 2. So a commit may be acknowledged only when it is on every member of the set a majority
//!    persisted and of every set sent since ([`Told::commit_rule`]): the post-commit check
//!    waits for that, as it waits for a lease, and ends the session unanswered if it never
//!    comes. A standby that joins the set must already hold every acknowledged commit
//!    ([`eligible_now`]), one that leaves it stops counting only once a majority persisted a
//!    set without it.
//! 3. A voter that persisted "asynchronous" votes for anyone: while any voter of the relied-on
//!    majority may hold that, commits are not protected, so a synchronous commit waits until a
//!    restricted set reached a majority.
//!
//! After a degrade to asynchronous replication (the sync guard), the heartbeat says
//! "asynchronous" and any node may be elected again: commits acknowledged while degraded are
//! asynchronous commits, lost if the master fails before a standby received them, and so are
//! commits acknowledged before the degrade that only the lost synchronous standby held.

/// One row of the master's `pg_stat_replication`, as this module needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSender {
    /// The standby's application_name (its pg_keeper node name).
    pub name: String,
    /// PostgreSQL waits for it: `sync_state` is `sync` (FIRST k) or `quorum` (ANY k).
    pub waited_for: bool,
    /// WAL the standby has written, flushed and applied.
    pub at: Released,
}

/// WAL positions by synchronous-commit level: up to where PostgreSQL released commits that
/// wait for `remote_write`, `on` (flush) and `remote_apply` (`WalSndCtl->lsn`); or what a
/// standby reports it wrote, flushed and applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    pub write: u64,
    pub flush: u64,
    pub apply: u64,
}

impl Released {
    /// Holds every commit released up to `other`: written as far as the write level and
    /// flushed as far as the flush level. (Not the apply level: a commit waiting for
    /// `remote_apply` ends at or before the flush level's position, and the WAL is what an
    /// election needs; requiring the replay would empty the set whenever replay lags.)
    pub fn covers(&self, other: &Released) -> bool {
        self.write >= other.write && self.flush >= other.flush
    }

    /// Every level raised to at least `floor`.
    pub fn at_least(&self, floor: u64) -> Released {
        Released { write: self.write.max(floor), flush: self.flush.max(floor), apply: self.apply.max(floor) }
    }
}

/// The eligible set the master tells the voters now. None when replication is asynchronous
/// (`synchronous_standby_names` empty: any node may be elected). Else the registered standbys
/// PostgreSQL waits for that have, at each level (write, flush, apply), what PostgreSQL
/// released waiting commits for (`acknowledged`): perhaps none, while a standby that just
/// became synchronous catches up. With ANY k every quorum member is named, so a commit is
/// acknowledged only once each of them has it (ANY k then waits for all of its listed
/// standbys that stream: use FIRST k for the fastest commits).
pub fn eligible_now(
    synchronous: bool,
    senders: &[WalSender],
    acknowledged: Released,
    registered: &[&str],
) -> Option<Vec<String>> {
    if !synchronous {
        return None;
    }
    let mut set: Vec<String> = senders
        .iter()
        .filter(|s| s.waited_for && s.at.covers(&acknowledged) && registered.contains(&s.name.as_str()))
        .map(|s| s.name.clone())
        .collect();
    set.sort();
    set.dedup();
    Some(set)
}

/// What the post-commit check requires of a commit that waited for synchronous replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitRule {
    /// The master tells "asynchronous": nothing beyond PostgreSQL's own wait.
    Asynchronous,
    /// Synchronous, but no restricted set reached a majority yet (or an "asynchronous" one
    /// may still be persisted there): wait.
    Wait,
    /// Acknowledge only once every one of these standbys has the commit.
    OnEvery(Vec<String>),
}

/// The master's side: the sets it told and which one a majority persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Told {
    /// The set the newest heartbeat round that a majority answered carried.
    majority: Option<Option<Vec<String>>>,
    /// Sets sent since (each perhaps persisted by a minority), the current one last.
    since: Vec<Option<Vec<String>>>,
}

impl Told {
    /// A heartbeat round is about to carry `set`.
    pub fn send(&mut self, set: Option<Vec<String>>) {
        if self.since.last() != Some(&set) {
            self.since.push(set);
        }
    }

    /// The round that carried the newest set was answered by a majority (counted as for the
    /// lease: answers of this term or older).
    pub fn majority_persisted(&mut self) {
        if let Some(last) = self.since.pop() {
            self.majority = Some(last);
            self.since.clear();
        }
    }

    /// The set being told now.
    pub fn current(&self) -> Option<&Option<Vec<String>>> {
        self.since.last().or(self.majority.as_ref())
    }

    pub fn commit_rule(&self) -> CommitRule {
        match self.current() {
            None | Some(None) => return CommitRule::Asynchronous,
            Some(Some(_)) => {}
        }
        let Some(Some(relied)) = &self.majority else { return CommitRule::Wait };
        let mut every = relied.clone();
        for s in &self.since {
            match s {
                None => return CommitRule::Wait,
                Some(s) => every.extend(s.iter().cloned()),
            }
        }
        every.sort();
        every.dedup();
        CommitRule::OnEvery(every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(name: &str, waited_for: bool, flush: u64) -> WalSender {
        WalSender { name: name.into(), waited_for, at: Released { write: flush + 10, flush, apply: flush } }
    }

    fn upto(flush: u64) -> Released {
        Released { write: flush, flush, apply: 0 }
    }

    fn set(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn eligible_are_the_caught_up_synchronous_standbys() {
        let reg = ["n2", "n3", "n4"];
        let senders = [ws("n2", true, 100), ws("n3", false, 200), ws("n4", true, 90), ws("x", true, 500)];
        assert_eq!(eligible_now(false, &senders, upto(100), &reg), None);
        assert_eq!(eligible_now(true, &senders, upto(100), &reg), set(&["n2"]));
        assert_eq!(eligible_now(true, &senders, upto(90), &reg), set(&["n2", "n4"]));
        assert_eq!(eligible_now(true, &senders, upto(101), &reg), set(&[]));
        // Written ahead of what is flushed is no lag: commits waiting for a flush were
        // released at the flush level (comparing the flush with the write level made the set
        // empty under load, and no failover possible).
        let ahead = Released { write: 105, flush: 100, apply: 0 };
        assert_eq!(eligible_now(true, &senders, ahead, &reg), set(&["n2"]));
        assert_eq!(eligible_now(true, &senders, Released { write: 111, flush: 100, apply: 0 }, &reg), set(&[]));
    }

    #[test]
    fn a_commit_must_reach_every_set_a_voter_may_hold() {
        let mut t = Told::default();
        assert_eq!(t.commit_rule(), CommitRule::Asynchronous);
        t.send(set(&["n2"]));
        assert_eq!(t.commit_rule(), CommitRule::Wait, "no majority persisted it yet");
        t.majority_persisted();
        assert_eq!(t.commit_rule(), CommitRule::OnEvery(vec!["n2".into()]));
        // n2 fails, n3 becomes synchronous: until a majority persisted {n3}, a voter may
        // still elect n2, so commits must be on both.
        t.send(set(&["n3"]));
        assert_eq!(t.commit_rule(), CommitRule::OnEvery(vec!["n2".into(), "n3".into()]));
        t.majority_persisted();
        assert_eq!(t.commit_rule(), CommitRule::OnEvery(vec!["n3".into()]));
        // Degraded: asynchronous from now on.
        t.send(None);
        assert_eq!(t.commit_rule(), CommitRule::Asynchronous);
        t.majority_persisted();
        // Restored: a majority may still hold "asynchronous".
        t.send(set(&["n3"]));
        assert_eq!(t.commit_rule(), CommitRule::Wait);
        t.majority_persisted();
        assert_eq!(t.commit_rule(), CommitRule::OnEvery(vec!["n3".into()]));
        // Nobody caught up: no election can succeed, so nothing more is needed.
        t.send(set(&[]));
        t.majority_persisted();
        assert_eq!(t.commit_rule(), CommitRule::OnEvery(vec![]));
    }
}
