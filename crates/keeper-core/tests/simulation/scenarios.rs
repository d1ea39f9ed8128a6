//! The scenarios: shapes, faults and rules, each a #[test].

use super::runner::*;
use super::*;

#[test]
fn three_nodes() {
    run_many("three_nodes", Shape { data: 3, witnesses: 0 }, 0x3_0000, 2000, AS_BUILT);
}

#[test]
fn five_nodes() {
    run_many("five_nodes", Shape { data: 5, witnesses: 0 }, 0x5_0000, 2000, AS_BUILT);
}

#[test]
fn two_data_nodes_and_a_witness() {
    run_many("two_data_nodes_and_a_witness", Shape { data: 2, witnesses: 1 }, 0x21_0000, 300, AS_BUILT);
}

#[test]
fn four_data_nodes_and_a_witness() {
    run_many("four_data_nodes_and_a_witness", Shape { data: 4, witnesses: 1 }, 0x41_0000, 300, AS_BUILT);
}

/// The rules without the pre-vote and the wait for a node just elected are safe and live too
/// (liveness as asserted here; more clusters are left without a master for good: see
/// `STUCK_TERMS`).
#[test]
fn three_nodes_without_pre_vote() {
    run_many("three_nodes_without_pre_vote", Shape { data: 3, witnesses: 0 }, 0x3_1000, 300, CORRECTED);
}

#[test]
fn five_nodes_without_pre_vote() {
    run_many("five_nodes_without_pre_vote", Shape { data: 5, witnesses: 0 }, 0x5_1000, 300, CORRECTED);
}

/// The adapter as of commit 04c091e (a granted vote, its own included, holds the voter; the
/// lease starts at the vote requests; `may_promote`; every reply or the deadline; wait for a
/// node just elected) is safe; its liveness is counted, not asserted: split votes lock voters
/// for a whole hold and elections can fail round after round (see the report in
/// keeper_core::election's module doc).
#[test]
fn adapter_as_of_04c091e_is_safe() {
    run_many_with(
        "adapter_as_of_04c091e_is_safe",
        Shape { data: 5, witnesses: 0 },
        0x04c0_91e0,
        300,
        AS_OF_04C091E,
        false,
    );
}

/// The rules as the adapter first had them (lease from the vote requests, promotion without
/// a look at its own record) let two masters take writes at once: the simulation must keep
/// finding that within a few schedules, or it has lost the power to find it.
#[test]
fn rules_as_first_written_are_unsafe() {
    let shape = Shape { data: 5, witnesses: 0 };
    for i in 0..200 {
        let seed = seed_of(0xBAD_0000, i);
        let (out, _) = Sim::new(shape, seed, AS_FIRST_WRITTEN, Faults::default(), false).run();
        if let Some(v) = out.violation.filter(|v| !is_liveness(v)) {
            println!(
                "as first written, schedule {i} (seed {seed}) breaks safety: {v}\n  replay: PGK_SIM_RULES=as_first_written \
                 PGK_SIM_SEED={seed} cargo test -p keeper-core --test simulation five_nodes -- --nocapture"
            );
            return;
        }
    }
    panic!("no safety violation in 200 schedules under the rules as first written");
}

// ---------------------------------------------------------------------------------------------
// Rules 1 to 6: hand promotion, frozen masters with commits in flight, switchovers, membership
// changes. Each schedule is the base schedule of its seed plus the faults below; each rule is
// also shown necessary: without it the same schedules find two masters (or an acknowledgement
// after a newer election) within a few hundred seeds.

/// `rules` must break safety (not liveness) in one of `max` schedules that the rules as built
/// pass: the schedules are strong enough to find what the rule left out prevents. `lease_only`:
/// count only violations where no master had its gate open without a lease (the two-node and
/// not-registered cases of the adapter, see `membership_changes_mid_partition`). `env`: its
/// `PGK_SIM_RULES` for the replay of `replay_test` (which runs the same shape and faults).
#[allow(clippy::too_many_arguments)]
fn must_find_unsafe(
    what: &str,
    replay_test: &str,
    env: &str,
    shape: Shape,
    faults: Faults,
    base: u64,
    max: u64,
    rules: Rules,
    lease_only: bool,
) {
    let started = Instant::now();
    for i in 0..max {
        let seed = seed_of(base, i);
        let (out, _) = simulate(shape, faults, seed, rules, false, false);
        if lease_only && out.open_gate {
            continue;
        }
        if let Some(v) = out.violation.filter(|v| !is_liveness(v)) {
            if simulate(shape, faults, seed, AS_BUILT, false, false).0.violation.is_some_and(|v| !is_liveness(&v)) {
                continue; // unsafe as built too: not this rule's doing
            }
            println!(
                "{what}: schedule {i} (seed {seed}, {:.1}s) breaks safety: {v}\n  replay: PGK_SIM_RULES={env} \
                 PGK_SIM_SEED={seed} cargo test -p keeper-core --test simulation {replay_test} -- --nocapture",
                started.elapsed().as_secs_f64()
            );
            return;
        }
    }
    panic!("{what}: no safety violation in {max} schedules: the schedules lost the power to find it");
}

/// The fixes of 1/7 live in keeper-core (`keeper_core::rules::Rules`, `candidacy::Rules`):
/// the tests below revert one at a time inside the very code the adapter runs, and the
/// simulation must find the schedule that breaks safety. This one: a candidate that promotes
/// without checking that its own record still says "this term, voted for me" (it granted a
/// newer term while it waited for its replies) persists its win over that newer record.
#[test]
fn promoting_without_the_own_record_check_is_unsafe() {
    must_find_unsafe(
        "promotion without the own-record check",
        "scenarios::three_nodes",
        "as_built,no_own_record_check",
        Shape { data: 3, witnesses: 0 },
        NO_FAULTS,
        0x3_0000,
        2000,
        Rules { check_own_record: false, ..AS_BUILT },
        false,
    );
}

const HAND_PROMOTION: Faults = Faults { hand_promotions: 1, kill_master_at_heal: true, commits: true, ..NO_FAULTS };

const NO_FAULTS: Faults = Faults {
    hand_promotions: 0,
    kill_master_at_heal: false,
    freezes: false,
    commits: false,
    switchovers: false,
    membership: None,
    calm: false,
    synchronous: false,
};

/// (a) A standby promoted by hand (no election) at a random time: it never holds the lease
/// (no commit is ever acknowledged at two nodes at once), votes like a standby, and once the
/// real master is gone for good (crashed at the heal) the remaining standby is elected, with
/// the hand-promoted node's vote (liveness asserted; counted in the output).
#[test]
fn hand_promotion_three_nodes() {
    let stats = run_scenario(
        "hand_promotion_three_nodes",
        Shape { data: 3, witnesses: 0 },
        HAND_PROMOTION,
        0xA_3000,
        400,
        AS_BUILT,
        true,
    );
    if env_u64("PGK_SIM_SEED").is_none() {
        assert!(stats.hand_votes_healed > 0, "no election after the heal was won with a hand-promoted node's vote");
    }
}

#[test]
fn hand_promotion_five_nodes() {
    let faults = Faults { hand_promotions: 2, ..HAND_PROMOTION };
    run_scenario("hand_promotion_five_nodes", Shape { data: 5, witnesses: 0 }, faults, 0xA_5000, 150, AS_BUILT, true);
}

/// Without rule 1 a hand-promoted standby heartbeats and takes a lease beside the real master.
#[test]
fn hand_promoted_node_with_a_lease_is_unsafe() {
    must_find_unsafe(
        "hand promotion without rule 1",
        "hand_promotion_three_nodes",
        "as_built,no_lease_entitlement",
        Shape { data: 3, witnesses: 0 },
        HAND_PROMOTION,
        0xA_B000,
        300,
        Rules { lease_entitlement: false, ..AS_BUILT },
        false,
    );
}

const FROZEN_MASTER: Faults = Faults { freezes: true, commits: true, ..NO_FAULTS };

/// (b) Commits pass the gate, the master freezes (0.02 to 15 s) with commits in flight, a
/// standby may be elected meanwhile, the master thaws: with rule 5 no commit is acknowledged
/// after the newer election, nor while another node accepts writes.
#[test]
fn frozen_master_with_commits_in_flight() {
    run_scenario(
        "frozen_master_with_commits_in_flight",
        Shape { data: 3, witnesses: 0 },
        FROZEN_MASTER,
        0xB_3000,
        400,
        AS_BUILT,
        true,
    );
}

#[test]
fn frozen_master_five_nodes() {
    run_scenario(
        "frozen_master_five_nodes",
        Shape { data: 5, witnesses: 0 },
        FROZEN_MASTER,
        0xB_5000,
        150,
        AS_BUILT,
        true,
    );
}

/// Without rule 5 (acknowledged whenever durable) a thawed master acknowledges after the
/// election of its successor.
#[test]
fn acknowledging_without_post_commit_check_is_unsafe() {
    must_find_unsafe(
        "acknowledgements without the post-commit check",
        "frozen_master_with_commits_in_flight",
        "as_built,no_post_commit_check",
        Shape { data: 3, witnesses: 0 },
        FROZEN_MASTER,
        0xB_B000,
        300,
        Rules { post_commit_check: false, ..AS_BUILT },
        false,
    );
}

const SWITCHOVERS: Faults = Faults { switchovers: true, commits: true, calm: true, ..NO_FAULTS };

/// (c) Planned switchovers at random instants (so mostly while a heartbeat round is in
/// flight): step_down, the releases once a round saw the flag, then either the clean stop and
/// the target standing (a quarter roll back: the old master restarts), or the target asked to
/// stand while the old master still runs.
#[test]
fn switchover_racing_rounds_in_flight() {
    run_scenario(
        "switchover_racing_rounds_in_flight",
        Shape { data: 3, witnesses: 0 },
        SWITCHOVERS,
        0xC_3000,
        400,
        AS_BUILT,
        true,
    );
}

/// Without rule 3 a round in flight at step_down reopens the gate, the master heartbeats again,
/// and the target, its hold released, is elected beside it.
#[test]
fn step_down_reopened_by_a_round_in_flight_is_unsafe() {
    must_find_unsafe(
        "step_down without rule 3",
        "switchover_racing_rounds_in_flight",
        "as_built,no_sticky_step_down",
        Shape { data: 3, witnesses: 0 },
        SWITCHOVERS,
        0xC_B000,
        300,
        Rules { sticky_step_down: false, ..AS_BUILT },
        false,
    );
}

const MEMBERSHIP: Faults = Faults { membership: Some(3), commits: true, freezes: true, ..NO_FAULTS };

/// (d) add_node / del_node on the master (often two in a row), between 2 and 5 members out of
/// 5 data nodes, with per-node replay lags and pauses of node_info, over the base schedule's
/// partitions and crashes. Safety only (what the rules promise for liveness after a heal is
/// not computed for changing memberships).
#[test]
fn membership_changes_mid_partition() {
    run_scenario(
        "membership_changes_mid_partition",
        Shape { data: 5, witnesses: 0 },
        MEMBERSHIP,
        0xD_5000,
        400,
        AS_BUILT,
        false,
    );
}

/// Without the version check in votes, a candidate that lags two changes behind counts over a
/// membership whose majorities need not meet the master's.
#[test]
fn membership_without_version_check_is_unsafe() {
    must_find_unsafe(
        "membership changes without the version check in votes",
        "membership_changes_mid_partition",
        "as_built,no_membership_check",
        Shape { data: 5, witnesses: 0 },
        MEMBERSHIP,
        0xD_B000,
        600,
        Rules { membership_check: false, ..AS_BUILT },
        true,
    );
}

/// Without one change at a time, two changes in a row leave memberships two changes apart.
#[test]
fn membership_changes_without_waiting_are_unsafe() {
    must_find_unsafe(
        "membership changes without waiting for the previous one",
        "membership_changes_mid_partition",
        "as_built,no_one_change_at_a_time",
        Shape { data: 5, witnesses: 0 },
        MEMBERSHIP,
        0xD_C000,
        600,
        Rules { one_change_at_a_time: false, ..AS_BUILT },
        true,
    );
}

/// Without `known_to_all`, a master left with one other node opens its gate without a lease
/// while a deleted node and a lagging standby still count over three.
#[test]
fn two_nodes_without_lease_before_settled_is_unsafe() {
    must_find_unsafe(
        "two nodes without the lease before the other has the version",
        "membership_changes_mid_partition",
        "as_built,no_two_node_settled",
        Shape { data: 5, witnesses: 0 },
        MEMBERSHIP,
        0xD_D000,
        400,
        Rules { two_node_settled: false, ..AS_BUILT },
        false,
    );
}

// ---------------------------------------------------------------------------------------------
// Rules 7 and 8: synchronous replication, `FIRST 1` over every other data node (see
// synchronous.rs). Safety only: the sync guard's degrade is not modelled, so a cluster whose
// eligible standbys are all down stays without a master, as the rules promise.

const SYNCHRONOUS: Faults = Faults { synchronous: true, commits: true, freezes: true, ..NO_FAULTS };

/// No acknowledged synchronous commit is lost by an election, the ones acknowledged just
/// before a failover, by a frozen master, or while the synchronous standby changes included.
#[test]
fn synchronous_five_nodes() {
    run_scenario(
        "synchronous_five_nodes",
        Shape { data: 5, witnesses: 0 },
        SYNCHRONOUS,
        0x5_5000,
        400,
        AS_BUILT,
        false,
    );
}

#[test]
fn synchronous_three_nodes() {
    run_scenario(
        "synchronous_three_nodes",
        Shape { data: 3, witnesses: 0 },
        SYNCHRONOUS,
        0x3_5000,
        400,
        AS_BUILT,
        false,
    );
}

/// Rule 7 is necessary: voters that drop the eligible set elect the node with the most WAL
/// among them, which a majority without the synchronous standby lacks acknowledged commits.
#[test]
fn election_without_the_eligible_set_loses_commits() {
    must_find_unsafe(
        "voters ignoring the eligible set",
        "scenarios::synchronous_five_nodes",
        "as_built,no_eligible_votes",
        Shape { data: 5, witnesses: 0 },
        SYNCHRONOUS,
        0x5_5000,
        2000,
        Rules { eligible_votes: false, ..AS_BUILT },
        false,
    );
}

/// Rule 8 is necessary: a commit acknowledged once PostgreSQL released it (on the synchronous
/// standby of the moment) may miss a standby that voters still hold eligible.
#[test]
fn acknowledging_before_every_eligible_standby_has_it_loses_commits() {
    must_find_unsafe(
        "acknowledging on PostgreSQL's release alone",
        "scenarios::synchronous_five_nodes",
        "as_built,no_commit_on_eligible",
        Shape { data: 5, witnesses: 0 },
        SYNCHRONOUS,
        0x5_5000,
        2000,
        Rules { commit_on_eligible: false, ..AS_BUILT },
        false,
    );
}
