//! The promotion rule of standby mode: unit cases and properties over random partitions.

use keeper_core::conninfo::testing::words;
use keeper_core::failover::{follow, Decision, FailoverConfig, Follow, Hold, Next, Sightings, StandbyMode};
use keeper_core::polling::{Indirect, RoundObservation};
use keeper_core::{registry, Node, SyncConfig};
use proptest::prelude::*;

fn cluster(n: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 1..=n {
        nodes = registry::add(&nodes, &format!("n{i}"), &format!("host=10.0.0.{i}"), false, None, &words).unwrap();
    }
    nodes // n1 master, n2 next master
}

const CFG: FailoverConfig =
    FailoverConfig { keepalive_count: 3, two_node_failover: false, paused: false, wait_for_elected: true };

fn dead_round(others: &[(&str, Indirect)]) -> RoundObservation {
    RoundObservation { direct_ok: false, indirect: others.iter().map(|(n, r)| (n.to_string(), *r)).collect() }
}

#[test]
fn next_master_stands_after_count_rounds() {
    let nodes = cluster(3);
    let mut sm = StandbyMode::default();
    let obs = dead_round(&[("n3", Indirect::Unreached)]);
    assert_eq!(sm.on_round("n2", &nodes, &obs, CFG), Decision::Suspect { failed_rounds: 1 });
    assert_eq!(sm.on_round("n2", &nodes, &obs, CFG), Decision::Suspect { failed_rounds: 2 });
    assert_eq!(sm.on_round("n2", &nodes, &obs, CFG), Decision::Stand { old_master: "n1".into(), failed_rounds: 3 });
}

#[test]
fn a_round_follows_waits_or_stands_on_request() {
    let nodes = cluster(3);
    let dead = dead_round(&[("n3", Indirect::Unreached)]);
    let one = FailoverConfig { keepalive_count: 1, ..CFG };
    // The master gone and one other node writable: follow it, never stand.
    let seen = Sightings { writable: vec!["n3".into()], ..Default::default() };
    assert_eq!(StandbyMode::default().round("n2", &nodes, &dead, &seen, one).next, Next::Follow("n3".into()));
    // A node just elected answered: wait for it (unless the rule is off).
    let seen = Sightings { just_elected: Some(("n3".into(), 4)), ..Default::default() };
    assert_eq!(
        StandbyMode::default().round("n2", &nodes, &dead, &seen, one).next,
        Next::WaitFor { who: "n3".into(), term: 4 }
    );
    let off = FailoverConfig { wait_for_elected: false, ..one };
    assert!(matches!(StandbyMode::default().round("n2", &nodes, &dead, &seen, off).next, Next::Stand { .. }));
    // A switchover's request stands while the master answers, unless another node writes.
    let alive = RoundObservation { direct_ok: true, indirect: vec![] };
    let asked = Sightings { stand_requested: true, ..Default::default() };
    assert_eq!(
        StandbyMode::default().round("n3", &nodes, &alive, &asked, CFG).next,
        Next::Stand { old_master: "n1".into(), failed_rounds: 0, on_request: true }
    );
    let both = Sightings { writable: vec!["n2".into()], ..asked };
    let r = StandbyMode::default().round("n3", &nodes, &alive, &both, CFG);
    assert_eq!((r.next, r.conflict), (Next::Report(Decision::MasterAlive), Some(vec!["n2".to_string()])));
}

#[test]
fn a_live_round_resets_the_count() {
    let nodes = cluster(3);
    let mut sm = StandbyMode::default();
    let dead = dead_round(&[("n3", Indirect::Unreached)]);
    let alive = dead_round(&[("n3", Indirect::Reached)]);
    sm.on_round("n2", &nodes, &dead, CFG);
    sm.on_round("n2", &nodes, &dead, CFG);
    assert_eq!(sm.on_round("n2", &nodes, &alive, CFG), Decision::MasterAlive);
    assert_eq!(sm.on_round("n2", &nodes, &dead, CFG), Decision::Suspect { failed_rounds: 1 });
}

#[test]
fn paused_failover_holds() {
    let nodes = cluster(3);
    let obs = dead_round(&[("n3", Indirect::Unreached)]);
    let paused = FailoverConfig { keepalive_count: 1, paused: true, ..CFG };
    assert_eq!(
        StandbyMode::default().on_round("n2", &nodes, &obs, paused),
        Decision::Hold { failed_rounds: 1, why: Hold::Paused }
    );
}

#[test]
fn other_standbys_wait_their_turn() {
    let nodes = cluster(4);
    let one = FailoverConfig { keepalive_count: 1, ..CFG };
    // n2 (next master) answers: n3 waits one round, n4 two.
    let obs = dead_round(&[("n2", Indirect::Unreached), ("n4", Indirect::Unreached)]);
    let mut sm = StandbyMode::default();
    assert_eq!(
        sm.on_round("n3", &nodes, &obs, one),
        Decision::Hold { failed_rounds: 1, why: Hold::WaitingTurn { rank: 1 } }
    );
    assert!(matches!(sm.on_round("n3", &nodes, &obs, one), Decision::Stand { failed_rounds: 2, .. }));
    // n2 gone (no answer): n3 ranks first and stands at once.
    let obs = dead_round(&[("n2", Indirect::NoAnswer), ("n4", Indirect::Unreached)]);
    assert!(matches!(
        StandbyMode::default().on_round("n3", &nodes, &obs, one),
        Decision::Stand { failed_rounds: 1, .. }
    ));
}

#[test]
fn witnesses_and_unknown_nodes_never_stand() {
    let nodes = registry::add(&cluster(2), "w", "host=10.0.0.9", true, None, &words).unwrap();
    let one = FailoverConfig { keepalive_count: 1, ..CFG };
    let obs = dead_round(&[("n2", Indirect::Unreached)]);
    let hold = Decision::Hold { failed_rounds: 1, why: Hold::NotCandidate };
    assert_eq!(StandbyMode::default().on_round("w", &nodes, &obs, one), hold);
    assert_eq!(StandbyMode::default().on_round("zz", &nodes, &obs, one), hold);
}

#[test]
fn follow_rules() {
    assert_eq!(follow(true, &[]), Follow::Stay);
    assert_eq!(follow(false, &[]), Follow::Stay);
    assert_eq!(follow(false, &["n2".into()]), Follow::NewMaster("n2".into()));
    assert_eq!(follow(true, &["n2".into()]), Follow::Conflict(vec!["n2".into()]));
    assert_eq!(follow(false, &["n2".into(), "n3".into()]), Follow::Conflict(vec!["n2".into(), "n3".into()]));
}

#[test]
fn master_view_after_promotion() {
    let sync = SyncConfig::parse("n2").unwrap();
    let nodes = registry::add(&cluster(3), "n4", "host=10.0.0.4", false, sync.as_ref(), &words).unwrap();
    // n2 promoted; n3 and n4 stream from it; the old master n1 does not.
    let v = registry::master_view(&nodes, "n2", sync.as_ref(), &["n3", "n4"]);
    let flags: Vec<_> = v.iter().map(|n| (n.name.as_str(), n.is_master, n.is_nextmaster)).collect();
    assert_eq!(flags, vec![("n1", false, false), ("n2", true, false), ("n3", false, true), ("n4", false, false)]);
    // Nothing streams: the next master is kept (but never the master itself).
    let v2 = registry::master_view(&v, "n2", sync.as_ref(), &[]);
    assert_eq!(v2, v);
    let v3 = registry::master_view(&nodes, "n2", sync.as_ref(), &[]);
    assert!(v3.iter().all(|n| !n.is_nextmaster), "n2 was next master and is now master");
}

/// A random world: which nodes are up and which links work (symmetric).
#[derive(Debug, Clone)]
struct World {
    n: usize,
    up: Vec<bool>,
    link: Vec<Vec<bool>>,
}

fn world(max: usize) -> impl Strategy<Value = World> {
    (3..=max).prop_flat_map(|n| {
        (proptest::collection::vec(any::<bool>(), n), proptest::collection::vec(any::<bool>(), n * n)).prop_map(
            move |(up, l)| {
                let mut link = vec![vec![true; n]; n];
                for i in 0..n {
                    for j in 0..n {
                        if i != j {
                            let v = l[i.min(j) * n + i.max(j)];
                            link[i][j] = v;
                        }
                    }
                }
                World { n, up, link }
            },
        )
    })
}

impl World {
    fn reach(&self, a: usize, b: usize) -> bool {
        self.up[a] && self.up[b] && (a == b || self.link[a][b])
    }

    /// What standby `me` observes of the master (node 0) in one round.
    fn observe(&self, me: usize) -> RoundObservation {
        RoundObservation {
            direct_ok: self.reach(me, 0),
            indirect: (1..self.n)
                .filter(|s| *s != me)
                .map(|s| {
                    let r = if !self.reach(me, s) {
                        Indirect::NoAnswer
                    } else if self.reach(s, 0) {
                        Indirect::Reached
                    } else {
                        Indirect::Unreached
                    };
                    (format!("n{}", s + 1), r)
                })
                .collect(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Over any partition: a node stands only when neither it nor any standby it reaches can
    /// reach the master; with the master down, some standby that is up stands within
    /// `count + n` rounds; and the first to stand is the best-ranked one that is up and
    /// reached by it (whether it wins is up to the votes: see the simulation).
    #[test]
    fn standing_properties(w in world(5), count in 1u32..4) {
        let nodes = cluster(w.n);
        let cfg = FailoverConfig { keepalive_count: count, ..CFG };
        let rounds = count + w.n as u32;
        let mut first_stand: Vec<(u32, usize)> = Vec::new();
        for me in 1..w.n {
            if !w.up[me] { continue; }
            let mut sm = StandbyMode::default();
            for r in 1..=rounds {
                let d = sm.on_round(&format!("n{}", me + 1), &nodes, &w.observe(me), cfg);
                if matches!(d, Decision::Stand { .. }) {
                    let reaches_master = w.reach(me, 0) || (1..w.n).any(|s| s != me && w.reach(me, s) && w.reach(s, 0));
                    prop_assert!(!reaches_master, "n{} stood though the master is reachable", me + 1);
                    prop_assert!(r >= count);
                    first_stand.push((r, me));
                    break;
                }
            }
        }
        if !w.up[0] && (1..w.n).any(|i| w.up[i]) {
            prop_assert!(!first_stand.is_empty(), "master down and nobody stood");
        }
        if w.up[1] && !w.up[0] {
            // The next master, when up, stands after exactly `count` rounds.
            prop_assert!(first_stand.contains(&(count, 1)), "{first_stand:?}");
        }
    }
}

#[test]
fn a_standby_streaming_from_another_server_than_the_live_master_repoints() {
    use keeper_core::failover::streams_elsewhere;
    let master =
        Node { name: "node1".into(), conninfo: "host=h1 port=5432 dbname=postgres".into(), ..cluster(1)[0].clone() };
    // Streams from node3 (a cascade left by a switchover): back to the master.
    assert!(streams_elsewhere(true, None, &master, "host=h3 port=5432 application_name=node2", &words));
    // Already from the master, whatever the other keys.
    assert!(!streams_elsewhere(true, None, &master, "host=H1 application_name=node2", &words));
    // The master did not answer directly: nothing to judge.
    assert!(!streams_elsewhere(false, None, &master, "host=h3", &words));
    // Knowingly following the master (checked its timeline): left alone.
    assert!(!streams_elsewhere(true, Some("node1"), &master, "host=h3", &words));
    // No or unparsable primary_conninfo: left alone.
    assert!(!streams_elsewhere(true, None, &master, "", &words));
    assert!(!streams_elsewhere(true, None, &master, "host", &words));
}
