//! One node's pg_keeper as keeper-core holds it: the rules it runs under and the state
//! machines of its modes. The worker (crates/pg_keeper/src/worker.rs) and each simulated
//! node (tests/simulation/) own one `Keeper` and drive it the same way: standby mode feeds
//! each round's observations to [`Keeper::standby_round`] and, when told to stand, the
//! [`Candidacy`]'s steps; master mode runs each heartbeat round through
//! [`Keeper::heartbeat_round`]. Time comes in as `now`; [`Keeper::poll_timeout`] says when
//! the node must be woken for a ballot under way.

use crate::candidacy::Candidacy;
use crate::failover::{FailoverConfig, Sightings, StandbyMode, StandbyRound};
use crate::heartbeat::{HeartbeatRound, RoundStart};
use crate::polling::RoundObservation;
use crate::rules::Rules;
use crate::Node;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Keeper {
    pub rules: Rules,
    /// Standby mode's memory (consecutive failed rounds).
    pub standby: StandbyMode,
    /// Standing for election: the ballot under way, the backoff.
    pub candidacy: Candidacy,
}

impl Keeper {
    /// `seed`: for the candidacy's random backoff (different on every node and start).
    pub fn new(rules: Rules, seed: u64) -> Keeper {
        Keeper { rules, standby: StandbyMode::default(), candidacy: Candidacy::new(rules.candidacy, seed) }
    }

    /// The node changed mode (master, standby, witness, idle): standby mode starts over and
    /// a ballot under way is dropped (the backoff stays).
    pub fn enter_mode(&mut self) {
        self.standby = StandbyMode::default();
        self.candidacy.abandon();
    }

    /// One standby-mode round ([`StandbyMode::round`]).
    pub fn standby_round(
        &mut self,
        me: &str,
        nodes: &[Node],
        obs: &RoundObservation,
        seen: &Sightings,
        cfg: FailoverConfig,
    ) -> StandbyRound {
        self.standby.round(me, nodes, obs, seen, cfg)
    }

    /// A heartbeat round starting now, under this node's rules.
    pub fn heartbeat_round(&self, start: RoundStart) -> HeartbeatRound {
        HeartbeatRound::new(start, self.rules.per_answer_lease)
    }

    /// When to wake the node for its ballot under way (None: no timer needed).
    pub fn poll_timeout(&self, now: Duration) -> Option<Duration> {
        self.candidacy.poll_timeout(now)
    }
}
