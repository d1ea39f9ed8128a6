//! Every timing rule of pg_keeper in one place: deadlines of its probes and of its own
//! work, and when a candidate counts. (The lease and the holds, which the timing argument
//! is about, are `election::voter_hold` and master mode's lease.)

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

/// How long any probe of a round may take (a poll, a heartbeat, a vote request): most of a
/// round, so that the round ends before the next one is due, and never more than 10 s (a
/// black-holed peer costs that much at most).
pub fn probe_deadline(keepalive_time: Duration) -> Duration {
    keepalive_time.mul_f64(0.8).min(Duration::from_secs(10))
}

/// The deadline a standby polled through gets for its own probe of the master: half of the
/// asker's, so that its answer ("could not reach it") arrives within the asker's deadline.
pub fn nested_deadline(probe_deadline: Duration) -> Duration {
    probe_deadline / 2
}

/// How long a commit waits at a shut gate (before its commit, after it, before its reply)
/// before it gives up: past the time in which either a majority answers again or the
/// standbys elect another master (keepalive_count rounds, plus two), at least 2 s.
/// `statement_timeout` does not apply at commit (PostgreSQL disarms it before committing),
/// so without this bound a client of an isolated master would wait forever.
pub fn gate_wait(keepalive_time: Duration, keepalive_count: u32) -> Duration {
    (keepalive_time * (keepalive_count.max(1) + 2)).max(Duration::from_secs(2))
}

/// Master mode does its slower duties (the synchronous guard, node_info, the witnesses)
/// every this many heartbeat rounds (a heartbeat round is half a polling round: these then
/// run once per keepalive_time).
pub const SLOW_DUTIES_EVERY: u64 = 2;

/// A deposed master that started its automatic rejoin does not start another one for this
/// long (the helper stops the server, rewinds it, and starts it again as a standby).
pub fn rejoin_retry_after(keepalive_time: Duration) -> Duration {
    keepalive_time * 10
}

/// How long add_node / del_node wait for the previous membership change to reach a
/// majority before they refuse (right after a change it usually takes one heartbeat round).
pub fn membership_change_wait(keepalive_time: Duration) -> Duration {
    keepalive_time * 3 + Duration::from_secs(2)
}

/// The deadline of `indirect_polling()` when the caller gives none: half a polling round,
/// so that the caller's own deadline always covers it; 50 ms to 10 s.
pub fn indirect_poll_deadline(keepalive_time: Duration) -> Duration {
    (keepalive_time / 2).clamp(Duration::from_millis(50), Duration::from_secs(10))
}

/// `step_down()` waits at most this long for a worker round that saw the flag (a round in
/// progress ends within its probe deadline, at most 10 s).
pub const STEP_DOWN_ROUND_WAIT: Duration = Duration::from_secs(10);

/// The deadline of each `_release` a stepping-down master sends (and of add_node's check
/// that the node answers: [`ADD_NODE_DEADLINE`]).
pub const RELEASE_DEADLINE: Duration = Duration::from_secs(2);
pub const ADD_NODE_DEADLINE: Duration = Duration::from_secs(5);

/// A candidate whose own vote was refused for a lease it still honours stands again this
/// long after that hold ends (the other voters acknowledged the lease a little later).
pub const AFTER_HOLD: Duration = Duration::from_millis(50);

/// When a candidate may count the replies it has without waiting for the others: once this
/// long after its requests went out, it counts as soon as [`crate::election::tally`] over the replies so far
/// says `Won` (else it waits for every reply or the deadline, as before). Without it, an
/// unreachable node makes every election last the whole deadline, and candidates of several
/// ranks then stand during each other's elections round after round: each new term voids the
/// election running (see [`crate::election::may_promote`]) and nobody ever promotes. Healthy nodes answer well
/// within this time, so a node with more WAL still makes the candidate yield.
pub fn early_count_after(keepalive_time: Duration) -> Duration {
    keepalive_time / 4
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
        assert_eq!(probe_deadline(Duration::from_secs(1)), Duration::from_millis(800));
        assert_eq!(probe_deadline(Duration::from_secs(60)), Duration::from_secs(10));
        assert_eq!(nested_deadline(Duration::from_millis(800)), Duration::from_millis(400));
        assert_eq!(gate_wait(Duration::from_secs(1), 3), Duration::from_secs(5));
        assert_eq!(gate_wait(Duration::from_millis(100), 1), Duration::from_secs(2));
    }
}

/// How long a new master (or one that restarted) lets the listed synchronous standbys that
/// answer its polls re-point their WAL receivers to it before its sync guard may degrade
/// (`sync_guard::SyncGuard::on_master_round`): twice the failure-detection time, at least
/// 10 s (a WAL receiver that just failed retries after `wal_retrieve_retry_interval`, 5 s by
/// default), at most 60 s. Commits wait meanwhile, as they do for any synchronous standby.
pub fn repoint_grace(keepalive_time: Duration, keepalive_count: u32) -> Duration {
    (keepalive_time * keepalive_count.max(1) * 2).clamp(Duration::from_secs(10), Duration::from_secs(60))
}

/// How long a winner waits for its promotion (the end of recovery) before it reports it as
/// not completed.
pub const PROMOTION_WAIT: Duration = Duration::from_secs(60);

/// Master mode reads its WAL senders (the eligible set, the sync guard's streaming list) every
/// this many heartbeat rounds: every round down to 1 s rounds, every other one below, where a
/// round comes every 0.1 s and the read (pg_stat_replication snapshots every backend) was the
/// largest part of an idle master's CPU. Between reads the heartbeat carries the set told last,
/// which is safe: a commit is checked against the positions its eligible standbys report at
/// commit time; a change of the set (a new synchronous standby) is told one round later.
pub fn replication_read_every(keepalive_time: Duration) -> u64 {
    if keepalive_time < Duration::from_secs(1) {
        2
    } else {
        1
    }
}

/// How long a kept node-to-node connection serves before the next probe makes a new one
/// (`probe.rs`): then a node that takes no new connections (its postmaster stopped, a
/// password or pg_hba.conf changed) fails its probes as it did when every probe connected
/// afresh, and connections to deleted nodes go. A minute: a new connection costs the node
/// asked a fork, an authentication and cold caches (with an age of 12 probe deadlines this
/// doubled an idle cluster's CPU at 1 s rounds). A smart shutdown does not wait for it: a
/// stopping server refuses `_poll`, and the caller drops its connection at once.
pub const CONNECTION_MAX_AGE: Duration = Duration::from_secs(60);

/// How long a standby's direct poll may take to answer as a live master before the round also
/// asks the other standbys (`polling::ask_others`): an eighth of the probe deadline, at most
/// 25 ms. A live master answers a kept connection in a millisecond or two; a busy one that
/// takes longer only makes that round cost what every round cost before. The indirect polls
/// then get the rest of the probe deadline, so a round still ends within it.
pub fn indirect_hedge(probe_deadline: Duration) -> Duration {
    (probe_deadline / 8).min(Duration::from_millis(25))
}

/// A standby whose master answers asks the others anyway every this many rounds, for what
/// their answers also show (a second writable node: a conflict to report).
pub const ASK_OTHERS_EVERY: u64 = 10;
