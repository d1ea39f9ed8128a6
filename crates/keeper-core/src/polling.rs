//! One polling round of standby mode: the master polled directly, and indirectly through
//! every other standby (the seed's "indirect polling"). A round fails only when the master
//! is unreachable directly AND through every standby that answered.

/// What one standby said when asked to poll the master for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indirect {
    /// It answered and reached the master.
    Reached,
    /// It answered and could not reach the master: a confirmation that the master is gone.
    Unreached,
    /// It did not answer (down, or cut off from us): no information.
    NoAnswer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundObservation {
    /// Did the master answer our own poll?
    pub direct_ok: bool,
    /// Answers of the other standbys, by name.
    pub indirect: Vec<(String, Indirect)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Someone (we, or a standby for us) reached the master.
    MasterAlive,
    /// Nobody reached it. `confirmed_by` lists the standbys that answered and confirmed
    /// (this node not included).
    MasterUnreachable { confirmed_by: Vec<String> },
}

pub fn evaluate(obs: &RoundObservation) -> RoundOutcome {
    if obs.direct_ok || obs.indirect.iter().any(|(_, r)| *r == Indirect::Reached) {
        return RoundOutcome::MasterAlive;
    }
    let confirmed_by = obs.indirect.iter().filter(|(_, r)| *r == Indirect::Unreached).map(|(n, _)| n.clone()).collect();
    RoundOutcome::MasterUnreachable { confirmed_by }
}

/// Whether a standby's round asks the other standbys to poll the master for it (the
/// indirect polls): they only decide anything when the master does not answer this standby
/// directly as a live master, and asking every other standby every round costs the cluster
/// the square of its node count (issue 4/7). So a round asks them when the direct poll has
/// not answered as a live master within [`crate::timing::indirect_hedge`] (a refusal, a
/// fenced or recovering master, no answer yet: at once, concurrently with the direct poll
/// still running), and otherwise only every [`crate::timing::ASK_OTHERS_EVERY`] rounds, for
/// what their answers also show (a second writable node, a node just elected).
/// `live_in_time`: the direct poll answered as a live (writable) master within the hedge.
pub fn ask_others(live_in_time: bool, round: u64) -> bool {
    !live_in_time || round.is_multiple_of(crate::timing::ASK_OTHERS_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(direct_ok: bool, ind: &[(&str, Indirect)]) -> RoundObservation {
        RoundObservation { direct_ok, indirect: ind.iter().map(|(n, r)| (n.to_string(), *r)).collect() }
    }

    #[test]
    fn link_b_cut_is_not_a_failure() {
        // The seed's diagram: standby2 cannot reach the master but standby1 can.
        let o = obs(false, &[("standby1", Indirect::Reached), ("standby3", Indirect::NoAnswer)]);
        assert_eq!(evaluate(&o), RoundOutcome::MasterAlive);
    }

    #[test]
    fn unreachable_lists_only_confirmations() {
        let o = obs(false, &[("a", Indirect::Unreached), ("b", Indirect::NoAnswer)]);
        assert_eq!(evaluate(&o), RoundOutcome::MasterUnreachable { confirmed_by: vec!["a".into()] });
        assert_eq!(evaluate(&obs(false, &[])), RoundOutcome::MasterUnreachable { confirmed_by: vec![] });
    }

    #[test]
    fn the_others_are_asked_whenever_the_master_did_not_answer_in_time() {
        let every = crate::timing::ASK_OTHERS_EVERY;
        assert!(ask_others(false, 1) && ask_others(false, every + 1), "no live answer in time: always");
        assert!(!ask_others(true, 1) && !ask_others(true, every - 1));
        assert!(ask_others(true, 0) && ask_others(true, every), "and every ASK_OTHERS_EVERY rounds anyway");
    }

    #[test]
    fn direct_success_wins() {
        assert_eq!(evaluate(&obs(true, &[("a", Indirect::Unreached)])), RoundOutcome::MasterAlive);
    }
}
