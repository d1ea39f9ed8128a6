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
