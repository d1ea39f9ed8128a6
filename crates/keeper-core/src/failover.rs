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
    /// A standby that would stand waits for a node just elected ([`Next::WaitFor`]).
    pub wait_for_elected: bool,
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

/// The master answers, but this standby streams from elsewhere (`primary_conninfo` names
/// another server: a standby that became the new master's standby after a switchover, or an
/// old master) and does not knowingly follow another node: stream from the master itself, as
/// every pg_keeper standby does. An unparsable or empty `primary_conninfo` is left alone.
pub fn streams_elsewhere(
    direct_ok: bool,
    following: Option<&str>,
    master: &Node,
    primary_conninfo: &str,
    parse: crate::conninfo::Parse,
) -> bool {
    if !direct_ok || following == Some(master.name.as_str()) {
        return false;
    }
    let target = |ci: &str| parse(ci).ok().map(|c| c.target());
    let upstream = target(primary_conninfo);
    upstream.is_some() && upstream != target(&master.conninfo)
}

/// What a standby saw in a round besides whether the master answered (the indirect polls'
/// own answers, and a planned switchover's request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sightings {
    /// Other registered nodes (not the registered master) that answered as writable.
    pub writable: Vec<String>,
    /// A node polled through answered as one just elected (`PeerAnswer::just_elected`): who,
    /// and its term.
    pub just_elected: Option<(String, crate::election::Term)>,
    /// `stand_for_election()` asked this node to stand (a planned switchover), and the
    /// request still runs.
    pub stand_requested: bool,
}

/// What standby mode does after a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The registered master is gone and exactly this other node accepts writes: stream
    /// from it rather than stand.
    Follow(String),
    /// Stand for election (`on_request`: asked by a planned switchover, whatever the master
    /// does, unless another node already accepts writes).
    Stand { old_master: String, failed_rounds: u32, on_request: bool },
    /// This node would stand, but a node just elected answered: wait for it to take writes
    /// rather than stand against it (which would only push terms up and keep the new master
    /// from counting this standby's answers).
    WaitFor { who: String, term: crate::election::Term },
    /// Nothing to do beyond saying what is seen (master alive, suspect, hold).
    Report(Decision),
}

/// One round's outcome: what to do, and the writable nodes when more than one accepts
/// writes (follow none of them; say so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyRound {
    pub next: Next,
    pub conflict: Option<Vec<String>>,
}

impl StandbyMode {
    /// A whole standby round: [`StandbyMode::on_round`], then what the sightings change
    /// (a switchover's request, a node to follow, a node just elected to wait for).
    pub fn round(
        &mut self,
        me: &str,
        nodes: &[Node],
        obs: &RoundObservation,
        seen: &Sightings,
        cfg: FailoverConfig,
    ) -> StandbyRound {
        let mut decision = self.on_round(me, nodes, obs, cfg);
        let master_alive = decision == Decision::MasterAlive;
        let mut on_request = false;
        if seen.stand_requested && seen.writable.is_empty() {
            let old_master = nodes.iter().find(|n| n.is_master).map(|n| n.name.clone()).unwrap_or_default();
            decision = Decision::Stand { old_master, failed_rounds: self.failed_rounds };
            on_request = true;
        }
        let conflict = match follow(master_alive, &seen.writable) {
            Follow::NewMaster(new) => return StandbyRound { next: Next::Follow(new), conflict: None },
            Follow::Conflict(w) => Some(w),
            Follow::Stay => None,
        };
        let next = match decision {
            Decision::Stand { .. } if cfg.wait_for_elected && seen.just_elected.is_some() => {
                let (who, term) = seen.just_elected.clone().unwrap_or_default();
                Next::WaitFor { who, term }
            }
            Decision::Stand { old_master, failed_rounds } => Next::Stand { old_master, failed_rounds, on_request },
            d => Next::Report(d),
        };
        StandbyRound { next, conflict }
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
