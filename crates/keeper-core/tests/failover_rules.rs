//! The promotion rule of standby mode: unit cases and properties over random partitions.

use keeper_core::failover::{follow, is_majority, Decision, FailoverConfig, Follow, Hold, StandbyMode};
use keeper_core::polling::{Indirect, RoundObservation};
use keeper_core::{registry, Node, SyncConfig};
use proptest::prelude::*;

fn cluster(n: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 1..=n {
        nodes = registry::add(&nodes, &format!("n{i}"), &format!("host=10.0.0.{i}"), None).unwrap();
    }
    nodes // n1 master, n2 next master
}

const CFG: FailoverConfig = FailoverConfig { keepalive_count: 3, two_node_failover: false, paused: false };

fn dead_round(others: &[(&str, Indirect)]) -> RoundObservation {
    RoundObservation { direct_ok: false, indirect: others.iter().map(|(n, r)| (n.to_string(), *r)).collect() }
}

#[test]
fn promotes_after_count_rounds_with_majority() {
    let nodes = cluster(3);
    let mut sm = StandbyMode::default();
    let obs = dead_round(&[("n3", Indirect::Unreached)]);
    assert_eq!(sm.on_round("n2", &nodes, &obs, CFG), Decision::Suspect { failed_rounds: 1 });
    assert_eq!(sm.on_round("n2", &nodes, &obs, CFG), Decision::Suspect { failed_rounds: 2 });
    assert_eq!(
        sm.on_round("n2", &nodes, &obs, CFG),
        Decision::Promote { old_master: "n1".into(), failed_rounds: 3, confirmed_by: vec!["n3".into()] }
    );
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
fn isolated_next_master_holds() {
    let nodes = cluster(3);
    let mut sm = StandbyMode::default();
    let obs = dead_round(&[("n3", Indirect::NoAnswer)]);
    for _ in 0..2 {
        sm.on_round("n2", &nodes, &obs, CFG);
    }
    assert_eq!(
        sm.on_round("n2", &nodes, &obs, CFG),
        Decision::Hold { failed_rounds: 3, why: Hold::NoMajority { confirmations: 1, registered: 3 } }
    );
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
fn only_the_next_master_promotes() {
    let nodes = cluster(3);
    let mut sm = StandbyMode::default();
    let obs = dead_round(&[("n2", Indirect::Unreached)]);
    let one = FailoverConfig { keepalive_count: 1, ..CFG };
    assert_eq!(sm.on_round("n3", &nodes, &obs, one), Decision::Hold { failed_rounds: 1, why: Hold::NotNextMaster });
}

#[test]
fn two_nodes_need_the_setting() {
    let nodes = cluster(2);
    let one = FailoverConfig { keepalive_count: 1, ..CFG };
    let obs = dead_round(&[]);
    let d = StandbyMode::default().on_round("n2", &nodes, &obs, one);
    assert_eq!(d, Decision::Hold { failed_rounds: 1, why: Hold::NoMajority { confirmations: 1, registered: 2 } });
    let d = StandbyMode::default().on_round("n2", &nodes, &obs, FailoverConfig { two_node_failover: true, ..one });
    assert!(matches!(d, Decision::Promote { .. }), "{d:?}");
}

#[test]
fn confirmations_from_unknown_or_master_names_do_not_count() {
    let nodes = cluster(5);
    let one = FailoverConfig { keepalive_count: 1, ..CFG };
    let obs = dead_round(&[("n1", Indirect::Unreached), ("zz", Indirect::Unreached), ("n3", Indirect::Unreached)]);
    let d = StandbyMode::default().on_round("n2", &nodes, &obs, one);
    assert_eq!(d, Decision::Hold { failed_rounds: 1, why: Hold::NoMajority { confirmations: 2, registered: 5 } });
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
    let nodes = registry::add(&cluster(3), "n4", "host=10.0.0.4", sync.as_ref()).unwrap();
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

    /// Over any partition: at most one node promotes; when one promotes while the master is
    /// alive, the master reaches only a minority (which is what lets it fence itself, 5/5);
    /// and when the master is down and the next master reaches a majority, it promotes.
    #[test]
    fn promotion_properties(w in world(5), count in 1u32..4) {
        let nodes = cluster(w.n);
        let cfg = FailoverConfig { keepalive_count: count, two_node_failover: false, paused: false };
        let mut promoted = Vec::new();
        for me in 1..w.n {
            if !w.up[me] { continue; }
            let mut sm = StandbyMode::default();
            let mut last = Decision::MasterAlive;
            for _ in 0..count {
                last = sm.on_round(&format!("n{}", me + 1), &nodes, &w.observe(me), cfg);
            }
            if matches!(last, Decision::Promote { .. }) { promoted.push(me); }
        }
        prop_assert!(promoted.len() <= 1, "{promoted:?}");
        if let Some(&p) = promoted.first() {
            prop_assert_eq!(p, 1, "only the next master");
            if w.up[0] {
                let master_reaches = (0..w.n).filter(|x| w.reach(0, *x)).count();
                prop_assert!(!is_majority(master_reaches, w.n), "master alive with a majority yet {p} promoted");
            }
        }
        if !w.up[0] && w.up[1] {
            let reachable = (1..w.n).filter(|x| w.reach(1, *x)).count();
            if is_majority(reachable, w.n) {
                prop_assert_eq!(promoted, vec![1]);
            }
        }
    }
}
