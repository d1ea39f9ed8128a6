//! The synchronous-replication guard of master mode: properties over random rounds.
use keeper_core::sync_guard::{SyncAction, SyncGuard, SyncState};
use keeper_core::SyncConfig;
use proptest::prelude::*;

proptest! {
    /// Over any sequence of rounds: the guard degrades only after `count` consecutive short
    /// rounds and only while this master reaches a majority, never while enough standbys
    /// stream; it restores exactly when enough stream again; degrade and restore alternate.
    #[test]
    fn guard_properties(rounds in proptest::collection::vec((proptest::collection::vec(0usize..4, 0..4), any::<bool>()), 1..60),
                        count in 1u32..4, any in any::<bool>(), num in 1usize..3) {
        let names = ["s0", "s1", "s2", "s3"];
        let spec = format!("{} {num} (s0, s1, s2)", if any { "ANY" } else { "FIRST" });
        let cfg = SyncConfig::parse(&spec).unwrap().unwrap();
        let mut g = SyncGuard::new(None);
        let mut short_run = 0u32;
        let mut degraded = false;
        for (r, majority) in rounds {
            let streaming: Vec<&str> = r.iter().map(|i| names[*i]).collect();
            let enough = cfg.satisfied_by(streaming.iter().copied());
            let action = g.on_round(Some(&cfg), &streaming, count, majority);
            match action {
                SyncAction::Degrade { .. } => {
                    prop_assert!(!degraded && !enough && majority);
                    prop_assert!(short_run + 1 >= count);
                    degraded = true;
                }
                SyncAction::Hold { .. } => {
                    prop_assert!(!degraded && !enough && !majority);
                    prop_assert!(short_run + 1 >= count);
                }
                SyncAction::Restore { .. } => {
                    prop_assert!(degraded && enough);
                    degraded = false;
                }
                SyncAction::None => {
                    if degraded { prop_assert!(!enough); }
                }
            }
            short_run = if enough || degraded { 0 } else { short_run + 1 };
            if matches!(action, SyncAction::Degrade { .. }) { short_run = 0; }
            prop_assert_eq!(degraded, matches!(g.state, SyncState::Degraded { .. }));
        }
    }
}
