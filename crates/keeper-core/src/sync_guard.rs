//! Master mode's synchronous-replication guard.
//!
//! Under synchronous replication a commit waits for the synchronous standbys forever. When
//! fewer of them than `synchronous_standby_names` requires are reachable and streaming for
//! `keepalive_count` consecutive rounds, the guard *degrades*: the adapter sets
//! `synchronous_standby_names = ''` so waiting commits complete. It remembers the configured
//! value and *restores* it as soon as enough of the listed standbys stream again, caught up
//! (PostgreSQL reports `streaming` only once a standby has caught up; `catchup` before).
//!
//! No degrade without a majority: a master that does not reach a majority of the registered
//! nodes (itself included) may be the isolated side of a partition while the standbys
//! promote; degrading there would acknowledge writes the new master never sees. It holds
//! instead, and its commits keep waiting (under synchronous replication, that is a fence).

use crate::sync_names::SyncConfig;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// Synchronous replication as configured (or none configured).
    Synchronous,
    /// Degraded to asynchronous; the configured value is kept by the adapter.
    Degraded { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAction {
    None,
    /// Set synchronous_standby_names to '' (remembering the configured value first).
    Degrade {
        reason: String,
    },
    /// Put the configured value back.
    Restore {
        reason: String,
    },
    /// Too few synchronous standbys, but this master does not reach a majority: no degrade.
    Hold {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGuard {
    pub state: SyncState,
    /// Consecutive rounds with too few synchronous standbys.
    pub short_rounds: u32,
}

impl SyncGuard {
    pub fn new(degraded: Option<String>) -> SyncGuard {
        let state = match degraded {
            Some(reason) => SyncState::Degraded { reason },
            None => SyncState::Synchronous,
        };
        SyncGuard { state, short_rounds: 0 }
    }

    /// One master-mode round, as the worker runs it: [`SyncGuard::on_round`], except that
    /// for a while after this node became master (a failover, a switchover, a restart:
    /// `since_master`, up to [`crate::timing::repoint_grace`]) too few synchronous standbys
    /// streaming is no short round as long as the listed standbys that answered this round's
    /// poll from recovery (`answering`: up, re-pointing their WAL receivers to this node) would
    /// be enough:
    /// the failover itself must not switch the new master to asynchronous replication, just
    /// when a second failure is most likely. A listed standby that does not answer gets no
    /// grace, and neither does one that answers but never streams, past the bound.
    #[allow(clippy::too_many_arguments)]
    pub fn on_master_round(
        &mut self,
        configured: Option<&SyncConfig>,
        streaming: &[&str],
        answering: &[&str],
        since_master: Duration,
        keepalive_time: Duration,
        keepalive_count: u32,
        reaches_majority: bool,
    ) -> SyncAction {
        if let Some(cfg) = configured {
            let grace = crate::timing::repoint_grace(keepalive_time, keepalive_count);
            let up = || streaming.iter().chain(answering.iter()).copied();
            if self.state == SyncState::Synchronous
                && !cfg.satisfied_by(streaming.iter().copied())
                && since_master < grace
                && cfg.satisfied_by(up())
            {
                // (still counted: once the grace is over, a standby that never streamed is
                // handled at once, not after `keepalive_count` more rounds)
                self.short_rounds = self.short_rounds.saturating_add(1);
                let waiting: Vec<&str> =
                    answering.iter().copied().filter(|s| cfg.lists(s) && !streaming.contains(s)).collect();
                return SyncAction::Hold {
                    reason: format!(
                        "new master: waiting up to {} s for {} to stream from it before judging synchronous replication",
                        grace.as_secs(),
                        waiting.join(", ")
                    ),
                };
            }
        }
        self.on_round(configured, streaming, keepalive_count, reaches_majority)
    }

    /// One master-mode round. `configured`: the value to honour (the remembered one while
    /// degraded). `streaming`: standbys that answered this round's poll AND are in state
    /// 'streaming' in pg_stat_replication (a hung standby can stay 'streaming' there until
    /// wal_sender_timeout, so the poll matters).
    /// `reaches_majority`: this master reached a strict majority of the registered nodes,
    /// itself included, in this round.
    pub fn on_round(
        &mut self,
        configured: Option<&SyncConfig>,
        streaming: &[&str],
        keepalive_count: u32,
        reaches_majority: bool,
    ) -> SyncAction {
        let Some(cfg) = configured else {
            // Nothing to guard; a degraded state with nothing configured is simply over.
            self.short_rounds = 0;
            if matches!(self.state, SyncState::Degraded { .. }) {
                self.state = SyncState::Synchronous;
            }
            return SyncAction::None;
        };
        let enough = cfg.satisfied_by(streaming.iter().copied());
        let listed: Vec<&str> = streaming.iter().copied().filter(|s| cfg.lists(s)).collect();
        match &self.state {
            SyncState::Synchronous if enough => {
                self.short_rounds = 0;
                SyncAction::None
            }
            SyncState::Synchronous => {
                self.short_rounds += 1;
                if self.short_rounds < keepalive_count.max(1) {
                    return SyncAction::None;
                }
                if !reaches_majority {
                    return SyncAction::Hold {
                        reason: format!(
                            "{} of the {} required synchronous standbys streaming, but this master does not reach a majority of the registered nodes: not degrading (a standby may be promoted; commits wait)",
                            listed.len(),
                            cfg.num_sync
                        ),
                    };
                }
                let reason = format!(
                    "{} of the {} required synchronous standbys streaming for {} rounds ({}; streaming: {})",
                    listed.len(),
                    cfg.num_sync,
                    self.short_rounds,
                    cfg,
                    if listed.is_empty() { "none".to_string() } else { listed.join(", ") }
                );
                self.state = SyncState::Degraded { reason: reason.clone() };
                self.short_rounds = 0;
                SyncAction::Degrade { reason }
            }
            SyncState::Degraded { .. } if enough => {
                self.state = SyncState::Synchronous;
                SyncAction::Restore { reason: format!("streaming and caught up again: {}", listed.join(", ")) }
            }
            SyncState::Degraded { .. } => SyncAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_master_waits_for_its_standbys_to_re_point_within_the_grace() {
        let c = SyncConfig::parse("FIRST 1 (node3, node1)").unwrap().unwrap();
        let (k, n) = (Duration::from_secs(1), 1);
        let grace = crate::timing::repoint_grace(k, n);
        let mut g = SyncGuard::new(None);
        // node3 answers but does not stream yet: no degrade, however many rounds.
        for _ in 0..5 {
            let a = g.on_master_round(Some(&c), &[], &["node3"], Duration::from_secs(1), k, n, true);
            assert!(matches!(a, SyncAction::Hold { .. }), "{a:?}");
        }
        assert_eq!(
            g.on_master_round(Some(&c), &["node3"], &["node3"], Duration::from_secs(2), k, n, true),
            SyncAction::None
        );
        // A listed standby that does not answer: no grace.
        let mut g = SyncGuard::new(None);
        let a = g.on_master_round(Some(&c), &[], &["node2"], Duration::from_secs(1), k, n, true);
        assert!(matches!(a, SyncAction::Degrade { .. }), "{a:?}");
        // Past the bound, one that answers but never streams no longer holds it back.
        let mut g = SyncGuard::new(None);
        let a = g.on_master_round(Some(&c), &[], &["node3"], grace, k, n, true);
        assert!(matches!(a, SyncAction::Degrade { .. }), "{a:?}");
    }

    fn cfg(s: &str) -> Option<SyncConfig> {
        SyncConfig::parse(s).unwrap()
    }

    #[test]
    fn degrades_after_count_rounds_and_restores_at_once() {
        let c = cfg("node2");
        let mut g = SyncGuard::new(None);
        assert_eq!(g.on_round(c.as_ref(), &["node2"], 3, true), SyncAction::None);
        assert_eq!(g.on_round(c.as_ref(), &[], 3, true), SyncAction::None);
        assert_eq!(g.on_round(c.as_ref(), &["node3"], 3, true), SyncAction::None);
        assert!(matches!(g.on_round(c.as_ref(), &[], 3, true), SyncAction::Degrade { .. }));
        assert_eq!(g.on_round(c.as_ref(), &[], 3, true), SyncAction::None);
        assert!(matches!(g.on_round(c.as_ref(), &["node2"], 3, true), SyncAction::Restore { .. }));
        assert_eq!(g.state, SyncState::Synchronous);
    }

    #[test]
    fn a_good_round_resets_the_count() {
        let c = cfg("node2");
        let mut g = SyncGuard::new(None);
        g.on_round(c.as_ref(), &[], 2, true);
        g.on_round(c.as_ref(), &["node2"], 2, true);
        assert_eq!(g.on_round(c.as_ref(), &[], 2, true), SyncAction::None);
    }

    #[test]
    fn any_one_of_two() {
        let c = cfg("ANY 1 (s1, s2)");
        let mut g = SyncGuard::new(None);
        for _ in 0..5 {
            assert_eq!(g.on_round(c.as_ref(), &["s2"], 1, true), SyncAction::None);
        }
        assert!(matches!(g.on_round(c.as_ref(), &[], 1, true), SyncAction::Degrade { .. }));
    }

    #[test]
    fn first_two_needs_two() {
        let c = cfg("FIRST 2 (a, b, c)");
        let mut g = SyncGuard::new(None);
        assert_eq!(g.on_round(c.as_ref(), &["a", "c"], 1, true), SyncAction::None);
        let a = g.on_round(c.as_ref(), &["c"], 1, true);
        match a {
            SyncAction::Degrade { reason } => {
                assert!(reason.contains("1 of the 2 required"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.on_round(c.as_ref(), &["b"], 1, true), SyncAction::None);
        assert!(matches!(g.on_round(c.as_ref(), &["b", "a"], 1, true), SyncAction::Restore { .. }));
    }

    #[test]
    fn no_degrade_without_a_majority() {
        let c = cfg("node2");
        let mut g = SyncGuard::new(None);
        assert!(matches!(g.on_round(c.as_ref(), &[], 1, false), SyncAction::Hold { .. }));
        assert!(matches!(g.on_round(c.as_ref(), &[], 1, false), SyncAction::Hold { .. }));
        assert_eq!(g.state, SyncState::Synchronous);
        // Contact with the majority back, standby still gone: degrade now.
        assert!(matches!(g.on_round(c.as_ref(), &[], 1, true), SyncAction::Degrade { .. }));
    }

    #[test]
    fn nothing_configured_nothing_to_do() {
        let mut g = SyncGuard::new(Some("old".into()));
        assert_eq!(g.on_round(None, &[], 1, true), SyncAction::None);
        assert_eq!(g.state, SyncState::Synchronous);
    }
}
