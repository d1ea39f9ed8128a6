//! docs/design.md's "State machines" tables name every state and step the code has. The
//! exhaustive matches below stop compiling when a variant is added: then add it here and to
//! the table.

use keeper_core::candidacy::Step;
use keeper_core::failover::{Decision, Next};
use keeper_core::gate::Setting;
use keeper_core::heartbeat::{GateStep, LeaseNow};

fn section() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/design.md");
    let doc = std::fs::read_to_string(path).expect("docs/design.md");
    let start = doc.find("## State machines").expect("a \"State machines\" section");
    let rest = &doc[start + 3..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

fn setting(s: Setting) -> &'static str {
    match s {
        Setting::Unknown => "Unknown",
        Setting::Open => "Open",
        Setting::Lease => "Lease",
        Setting::Deposed => "Deposed",
        Setting::SteppedDown => "SteppedDown",
    }
}

fn step(s: &Step) -> &'static str {
    match s {
        Step::Wait { .. } => "Wait",
        Step::CastOwnVote { .. } => "CastOwnVote",
        Step::Ask { .. } => "Ask",
        Step::Promote { .. } => "Promote",
    }
}

fn next(n: &Next) -> &'static str {
    match n {
        Next::Follow(_) => "Follow",
        Next::Stand { .. } => "Stand",
        Next::WaitFor { .. } => "WaitFor",
        Next::Report(d) => match d {
            Decision::MasterAlive => "MasterAlive",
            Decision::Suspect { .. } => "Suspect",
            Decision::Hold { .. } => "Hold",
            Decision::Stand { .. } => "Stand",
        },
    }
}

fn gate_step(g: &GateStep) -> &'static str {
    match g {
        GateStep::Deposed { .. } => "GateStep::Deposed",
        GateStep::Revoke { .. } => "GateStep::Revoke",
        GateStep::OpenWithoutLease => "GateStep::OpenWithoutLease",
        GateStep::NeedLease { .. } => "GateStep::NeedLease",
    }
}

fn lease_now(l: LeaseNow) -> &'static str {
    match l {
        LeaseNow::Unchanged => "LeaseNow::Unchanged",
        LeaseNow::End => "LeaseNow::End",
        LeaseNow::Extend { .. } => "LeaseNow::Extend",
    }
}

#[test]
fn every_state_and_step_is_in_the_tables() {
    use keeper_core::election::VoteRequest;
    use keeper_core::failover::Hold;
    use std::time::Duration;
    let req =
        VoteRequest { term: 1, candidate: String::new(), candidate_lsn: 0, candidate_tli: 1, candidate_membership: 0 };
    let mut names: Vec<&str> = Vec::new();
    names
        .extend([Setting::Unknown, Setting::Open, Setting::Lease, Setting::Deposed, Setting::SteppedDown].map(setting));
    names.extend(
        [
            Step::Wait { state: String::new(), notice: None, retry_at: None, seen: 0 },
            Step::CastOwnVote { request: req.clone(), dry: true },
            Step::Ask { request: req, dry: false, to: vec![], deadline: Duration::ZERO },
            Step::Promote { term: 1, votes: vec![], fetch_from: None, check_own_record: true, lease_from: None },
        ]
        .iter()
        .map(step),
    );
    names.extend(
        [
            Next::Follow(String::new()),
            Next::Stand { old_master: String::new(), failed_rounds: 0, on_request: false },
            Next::WaitFor { who: String::new(), term: 0 },
            Next::Report(Decision::MasterAlive),
            Next::Report(Decision::Suspect { failed_rounds: 0 }),
            Next::Report(Decision::Hold { failed_rounds: 0, why: Hold::Paused }),
        ]
        .iter()
        .map(next),
    );
    names.extend(
        [
            GateStep::Deposed { by: String::new(), term: 0 },
            GateStep::Revoke { why: String::new() },
            GateStep::OpenWithoutLease,
            GateStep::NeedLease { why: String::new(), extend_to: None },
        ]
        .iter()
        .map(gate_step),
    );
    names.extend([LeaseNow::Unchanged, LeaseNow::End, LeaseNow::Extend { until: Duration::ZERO }].map(lease_now));
    let tables = section();
    let missing: Vec<&&str> = names.iter().filter(|n| !tables.contains(**n)).collect();
    assert!(missing.is_empty(), "docs/design.md's state tables lack {missing:?}");
}
