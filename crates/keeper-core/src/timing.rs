//! Deadlines of pg_keeper's own work that are not part of the election's timing argument
//! (that one, the lease and the holds, is in `election`).

use std::time::Duration;

/// The longest any lock wait of pg_keeper's own SQL may last: the worker's statements and the
/// node-to-node functions (`_poll`, `request_vote`, `_witness_sync`). A quarter of a round, so
/// that a lock held elsewhere (an `add_node` whose commit waits for a dead synchronous standby,
/// a standby replaying an AccessExclusiveLock on node_info) costs a round's work at most and
/// never stalls the loop: the probes that follow must still fit in the round.
pub fn lock_timeout(keepalive_time: Duration) -> Duration {
    (keepalive_time / 4).clamp(Duration::from_millis(50), Duration::from_secs(2))
}

/// How long a winner fetches WAL from a standby that has more before it promotes
/// (`election::fast_forward_source`): two rounds, at least 1 s (a WAL receiver reconnect),
/// at most 10 s. Past it the winner promotes all the same and that standby needs a rewind:
/// the cluster is without a master meanwhile, so this is kept short.
pub fn fast_forward_limit(keepalive_time: Duration) -> Duration {
    (keepalive_time * 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_round_within_bounds() {
        assert_eq!(lock_timeout(Duration::from_secs(1)), Duration::from_millis(250));
        assert_eq!(lock_timeout(Duration::from_millis(100)), Duration::from_millis(50));
        assert_eq!(lock_timeout(Duration::from_secs(60)), Duration::from_secs(2));
        assert_eq!(fast_forward_limit(Duration::from_millis(200)), Duration::from_secs(1));
        assert_eq!(fast_forward_limit(Duration::from_secs(30)), Duration::from_secs(10));
    }
}
