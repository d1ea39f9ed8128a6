//! When a deposed master's worker starts the automatic rejoin (`pg_keeper.auto_rejoin`):
//! the adapter (auto_rejoin.rs) supplies the facts and starts `pgkeeper rejoin --auto`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoRejoin {
    /// pg_keeper.auto_rejoin is off: the operator runs `pgkeeper rejoin`.
    Off,
    /// The last automatic rejoin failed: the operator runs `pgkeeper rejoin` (no retry loop
    /// on a failure that needs a look).
    Failed,
    /// One was started recently and may still run.
    Underway,
    /// The node that deposed this one is not in this node's node_info.
    NewMasterUnknown,
    /// Start it once the new master answers as writable (before, the helper would find
    /// nothing to rejoin).
    StartOnceWritable,
}

/// `last_failed`: the outcome file of the previous run says it failed. `started_ago`: since
/// this worker started one (None: never).
pub fn auto_rejoin(
    enabled: bool,
    last_failed: bool,
    started_ago: Option<Duration>,
    keepalive_time: Duration,
    new_master_registered: bool,
) -> AutoRejoin {
    if !enabled {
        AutoRejoin::Off
    } else if last_failed {
        AutoRejoin::Failed
    } else if started_ago.is_some_and(|t| t < crate::timing::rejoin_retry_after(keepalive_time)) {
        AutoRejoin::Underway
    } else if !new_master_registered {
        AutoRejoin::NewMasterUnknown
    } else {
        AutoRejoin::StartOnceWritable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_rejoin_starts_once_and_never_over_a_failure() {
        let k = Duration::from_secs(1);
        assert_eq!(auto_rejoin(false, false, None, k, true), AutoRejoin::Off);
        assert_eq!(auto_rejoin(true, true, None, k, true), AutoRejoin::Failed);
        assert_eq!(auto_rejoin(true, false, Some(Duration::from_secs(1)), k, true), AutoRejoin::Underway);
        assert_eq!(auto_rejoin(true, false, Some(Duration::from_secs(60)), k, true), AutoRejoin::StartOnceWritable);
        assert_eq!(auto_rejoin(true, false, None, k, false), AutoRejoin::NewMasterUnknown);
        assert_eq!(auto_rejoin(true, false, None, k, true), AutoRejoin::StartOnceWritable);
    }
}
