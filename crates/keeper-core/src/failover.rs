//! Standby mode's promotion rule.
//!
//! After `keepalive_count` consecutive failed rounds (see [`crate::polling`]), the next master
//! promotes itself, but only when the nodes that confirmed the master unreachable, itself
//! included, form a strict majority of the registered nodes. A next master cut off from
//! everyone therefore never creates a second primary: it cannot gather confirmations.
//!
//! Two-node clusters (master + one standby) can never have such a majority without the
//! master; there the seed's behaviour (promote on its own observation) is available behind
//! `two_node_failover`, off by default because a mere network cut then yields two masters.
//!
//! The candidate is fixed here (`is_nextmaster`); the election of another candidate when the
//! next master is itself gone plugs in at [`Hold::NotNextMaster`] (issue 5/5).

use crate::polling::{evaluate, RoundObservation, RoundOutcome};
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
    /// Enough failed rounds, but this node is not the next master.
    NotNextMaster,
    /// Not enough nodes confirm: `confirmations` (this node included) of `registered`.
    NoMajority { confirmations: usize, registered: usize },
    /// This node is not registered, or node_info names no master.
    NotInRegistry,
    /// Automatic failover is paused: a planned switchover is under way.
    Paused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The master answered (directly or through a standby).
    MasterAlive,
    /// The master did not answer; not yet `keepalive_count` rounds in a row.
    Suspect { failed_rounds: u32 },
    /// Enough failed rounds, but this node must not promote.
    Hold { failed_rounds: u32, why: Hold },
    /// Promote this node.
    Promote { old_master: String, failed_rounds: u32, confirmed_by: Vec<String> },
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
        let confirmed_by = match evaluate(obs) {
            RoundOutcome::MasterAlive => {
                self.failed_rounds = 0;
                return Decision::MasterAlive;
            }
            RoundOutcome::MasterUnreachable { confirmed_by } => confirmed_by,
        };
        self.failed_rounds = self.failed_rounds.saturating_add(1);
        let failed_rounds = self.failed_rounds;
        if failed_rounds < cfg.keepalive_count.max(1) {
            return Decision::Suspect { failed_rounds };
        }
        let me_row = nodes.iter().find(|n| n.name == me);
        let master = nodes.iter().find(|n| n.is_master && n.name != me);
        let (Some(me_row), Some(master)) = (me_row, master) else {
            return Decision::Hold { failed_rounds, why: Hold::NotInRegistry };
        };
        if cfg.paused {
            return Decision::Hold { failed_rounds, why: Hold::Paused };
        }
        if !me_row.is_nextmaster {
            return Decision::Hold { failed_rounds, why: Hold::NotNextMaster };
        }
        // Only confirmations from registered nodes other than the master count.
        let confirmed_by: Vec<String> = confirmed_by
            .into_iter()
            .filter(|c| c != me && nodes.iter().any(|n| &n.name == c && !n.is_master))
            .collect();
        let confirmations = 1 + confirmed_by.len();
        let registered = nodes.len();
        let two_node = registered == 2 && cfg.two_node_failover;
        if !is_majority(confirmations, registered) && !two_node {
            return Decision::Hold { failed_rounds, why: Hold::NoMajority { confirmations, registered } };
        }
        Decision::Promote { old_master: master.name.clone(), failed_rounds, confirmed_by }
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
