//! Registry rules: master first, next-master choice, sync flags, deletions.

use keeper_core::conninfo::testing::words;
use keeper_core::registry::{self, diff, Change, Selector};
use keeper_core::{Node, RegistryError, SyncConfig};
use proptest::prelude::*;

fn sync(s: &str) -> Option<SyncConfig> {
    SyncConfig::parse(s).unwrap()
}

fn build(names: &[&str], s: &str) -> Vec<Node> {
    let cfg = sync(s);
    let mut nodes = Vec::new();
    for (i, n) in names.iter().enumerate() {
        nodes = registry::add(&nodes, n, &format!("host=10.0.0.{} port=5432", i + 1), false, cfg.as_ref(), &words).unwrap();
    }
    nodes
}

fn flags(nodes: &[Node]) -> Vec<(&str, bool, bool, bool)> {
    nodes.iter().map(|n| (n.name.as_str(), n.is_master, n.is_nextmaster, n.is_sync)).collect()
}

#[test]
fn first_node_is_master_and_seed_example_holds() {
    // The seed's example: synchronous_standby_names = 'pgserver2, pgserver3'.
    let nodes = build(&["pgserver1", "pgserver2", "pgserver3"], "pgserver2, pgserver3");
    assert_eq!(
        flags(&nodes),
        vec![("pgserver1", true, false, false), ("pgserver2", false, true, true), ("pgserver3", false, false, true),]
    );
    assert_eq!(nodes.iter().map(|n| n.seqno).collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn next_master_is_first_sync_in_list_order_not_seqno() {
    let nodes = build(&["m", "a", "b", "c"], "FIRST 1 (c, b)");
    assert_eq!(nodes.iter().find(|n| n.is_nextmaster).unwrap().name, "c");
    assert!(!nodes[1].is_sync);
}

#[test]
fn without_sync_the_lowest_seqno_standby_is_next_master() {
    let nodes = build(&["m", "a", "b"], "");
    assert_eq!(flags(&nodes)[1], ("a", false, true, false));
    assert!(nodes.iter().all(|n| !n.is_sync));
}

#[test]
fn master_alone_has_no_next_master() {
    let nodes = build(&["m"], "m");
    assert_eq!(flags(&nodes), vec![("m", true, false, false)]);
}

#[test]
fn refusals_change_nothing() {
    let nodes = build(&["m", "a"], "");
    let e = registry::add(&nodes, "A", "host=10.9.9.9", false, None, &words).unwrap_err();
    assert_eq!(e, RegistryError::DuplicateName("a".into()));
    let e = registry::add(&nodes, "x", "host=10.0.0.2 port=5432 dbname=other", false, None, &words).unwrap_err();
    assert!(matches!(e, RegistryError::DuplicateConninfo { .. }), "{e}");
    assert!(matches!(registry::add(&nodes, "", "host=h", false, None, &words), Err(RegistryError::BadName(_))));
    assert!(matches!(registry::add(&nodes, "a b", "host=h", false, None, &words), Err(RegistryError::BadName(_))));
    assert!(matches!(registry::add(&nodes, "x", "", false, None, &words), Err(RegistryError::BadConninfo(_))));
    assert!(matches!(registry::add(&nodes, "x", "nonsense", false, None, &words), Err(RegistryError::BadConninfo(_))));
    assert!(matches!(registry::add(&[], "w", "host=h", true, None, &words), Err(RegistryError::WitnessFirst(_))));
    assert_eq!(registry::delete(&nodes, Selector::Name("m"), None), Err(RegistryError::DeleteMaster("m".into())));
    assert_eq!(registry::delete(&nodes, Selector::Name("zz"), None), Err(RegistryError::UnknownName("zz".into())));
    assert_eq!(registry::delete(&nodes, Selector::Seqno(7), None), Err(RegistryError::UnknownSeqno(7)));
}

#[test]
fn deleting_the_next_master_elects_another() {
    let cfg = sync("b, c");
    let nodes = build(&["m", "a", "b", "c"], "b, c");
    let after = registry::delete(&nodes, Selector::Name("b"), cfg.as_ref()).unwrap();
    assert_eq!(after.iter().find(|n| n.is_nextmaster).unwrap().name, "c");
    let after = registry::delete(&after, Selector::Seqno(4), cfg.as_ref()).unwrap();
    assert_eq!(after.iter().find(|n| n.is_nextmaster).unwrap().name, "a");
    let again = registry::add(&after, "d", "host=10.1.1.1", false, cfg.as_ref(), &words).unwrap();
    assert_eq!(again.last().unwrap().seqno, 3); // max + 1
}

#[test]
fn diff_lists_only_what_changed() {
    let nodes = build(&["m", "a"], "");
    let more = registry::add(&nodes, "b", "host=10.7.7.7", false, sync("b").as_ref(), &words).unwrap();
    let d = diff(&nodes, &more);
    assert_eq!(d.len(), 2, "{d:?}"); // a loses next master, b inserted as next master + sync
    assert!(d.iter().any(|c| matches!(c, Change::Insert(n) if n.name == "b" && n.is_nextmaster && n.is_sync)));
    assert!(diff(&more, &more).is_empty());
}

proptest! {
    /// Whatever the sequence of adds and deletes and whatever the sync list: one master (the
    /// first node), exactly one next master whenever a standby exists, never the master, and
    /// is_sync exactly for listed standbys.
    #[test]
    fn invariants_hold_under_any_sequence(ops in proptest::collection::vec((0u8..3, 0usize..6), 1..30),
                                          listed in proptest::collection::vec(0usize..6, 0..4)) {
        let names = ["n0", "n1", "n2", "n3", "n4", "n5"];
        let list: Vec<&str> = listed.iter().map(|i| names[*i]).collect();
        let cfg = if list.is_empty() { None } else { sync(&list.join(", ")) };
        let mut nodes: Vec<Node> = Vec::new();
        for (op, i) in ops {
            let r = if op < 2 {
                // op 1: a witness (refused as the first node).
                registry::add(&nodes, names[i], &format!("host=h{i}"), op == 1, cfg.as_ref(), &words)
            } else {
                registry::delete(&nodes, Selector::Name(names[i]), cfg.as_ref())
            };
            if let Ok(n) = r { nodes = n; }
            let masters = nodes.iter().filter(|n| n.is_master).count();
            prop_assert_eq!(masters, usize::from(!nodes.is_empty()));
            if let Some(first) = nodes.first() { prop_assert!(first.is_master); }
            let next: Vec<&Node> = nodes.iter().filter(|n| n.is_nextmaster).collect();
            let data_standbys = nodes.iter().filter(|n| !n.is_master && !n.is_witness).count();
            prop_assert_eq!(next.len(), usize::from(data_standbys > 0));
            for n in &nodes {
                prop_assert!(!(n.is_master && n.is_nextmaster));
                prop_assert!(!(n.is_witness && (n.is_master || n.is_nextmaster || n.is_sync)));
                prop_assert_eq!(n.is_sync, !n.is_master && !n.is_witness && list.iter().any(|l| *l == n.name));
            }
            if let Some(nm) = next.first() {
                if nodes.iter().any(|n| n.is_sync) {
                    prop_assert!(nm.is_sync);
                }
            }
        }
    }
}
