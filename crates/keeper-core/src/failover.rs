//! Standby mode's rule for standing in an election.
//!
//! After `keepalive_count` consecutive failed rounds (see [`crate::polling`]: the master did
//! not answer as a writable master, directly or through any standby), standbys stand for
//! election ([`crate::election`]) in rank order: the next master at once, every other
//! standby one round later per rank ([`crate::election::candidate_rank`]), so that in the
//! common case exactly one node asks, and a dead or cut-off next master only delays the
//! failover by a round per rank. Whether a candidate promotes is decided by the votes.
//!
//! Two-node clusters (master + one standby) can never have a majority without the master;
//! there the seed's behaviour (promote on its own observation) is available behind
//! `two_node_failover`, off by default because a mere network cut then yields two masters.
//! A witness is the safe way to run two data nodes.

use crate::election::candidate_rank;
use crate::polling::{evaluate, Indirect, RoundObservation, RoundOutcome};
use crate::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverConfig {
    pub keepalive_count: u32,
    pub two_node_failover: bool,
    /// Automatic failover paused (a planned switchover is under way).
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Another standby ranks before this one and answered this round: wait `rank` more rounds.
    WaitingTurn { rank: usize },
    /// This node is not registered, is a witness, or node_info names no master.
    NotCandidate,
    /// Automatic failover is paused: a planned switchover is under way.
    Paused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The master answered (directly or through a standby).
    MasterAlive,
    /// The master did not answer; not yet `keepalive_count` rounds in a row.
    Suspect { failed_rounds: u32 },
    /// Enough failed rounds, but this node does not stand (now).
    Hold { failed_rounds: u32, why: Hold },
    /// Stand for election (ask for votes).
    Stand { old_master: String, failed_rounds: u32 },
}

/// Standby mode's memory between rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandbyMode {
    pub failed_rounds: u32,
}

/// Strict majority of `registered` nodes.
pub fn is_majority(count: usize, registered: usize) -> bool {
    count * 2 > registered
}

impl StandbyMode {
    /// Feed one round's observation; get what to do.
    pub fn on_round(&mut self, me: &str, nodes: &[Node], obs: &RoundObservation, cfg: FailoverConfig) -> Decision {
        if evaluate(obs) == RoundOutcome::MasterAlive {
            self.failed_rounds = 0;
            return Decision::MasterAlive;
        }
        self.failed_rounds = self.failed_rounds.saturating_add(1);
        let failed_rounds = self.failed_rounds;
        let count = cfg.keepalive_count.max(1);
        if failed_rounds < count {
            return Decision::Suspect { failed_rounds };
        }
        let master = nodes.iter().find(|n| n.is_master && n.name != me);
        let answered: Vec<&str> =
            obs.indirect.iter().filter(|(_, r)| *r != Indirect::NoAnswer).map(|(n, _)| n.as_str()).collect();
        let (Some(master), Some(rank)) = (master, candidate_rank(me, nodes, &answered)) else {
            return Decision::Hold { failed_rounds, why: Hold::NotCandidate };
        };
        if cfg.paused {
            return Decision::Hold { failed_rounds, why: Hold::Paused };
        }
        if (failed_rounds - count) < rank as u32 {
            return Decision::Hold { failed_rounds, why: Hold::WaitingTurn { rank } };
        }
        Decision::Stand { old_master: master.name.clone(), failed_rounds }
    }
}

/// Which writable node a standby should stream from, given what it saw this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// Keep the current upstream.
    Stay,
    /// The registered master is gone and exactly this other node is writable: follow it.
    NewMaster(String),
    /// Several nodes are writable: follow nobody, and say so.
    Conflict(Vec<String>),
}

/// `master_alive`: the registered master answered this round. `writable`: other registered
/// nodes (not the registered master) that answered and are not in recovery.
pub fn follow(master_alive: bool, writable: &[String]) -> Follow {
    match (master_alive, writable) {
        (_, []) => Follow::Stay,
        (false, [one]) => Follow::NewMaster(one.clone()),
        (true, w) => {
            // The registered master and another node both writable.
            Follow::Conflict(w.to_vec())
        }
        (false, w) => Follow::Conflict(w.to_vec()),
    }
}
