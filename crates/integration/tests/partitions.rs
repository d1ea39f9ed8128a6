//! Failover decisions under network partitions (issue 2/5), each node in its own network
//! namespace, links cut with nftables (packets dropped: peers see a black hole).

use keeper_integration::*;
use std::time::Duration;

const KT: &str = "pg_keeper.keepalive_time = 1";
const KC: &str = "pg_keeper.keepalive_count = 3";
/// 3 x keepalive_time x keepalive_count, plus slack.
const QUIET: Duration = Duration::from_secs(3 * 3 + 2);

fn rounds(n: &Node) -> i64 {
    n.query_one("SELECT rounds FROM pgkeeper.status()").unwrap().unwrap().parse().unwrap()
}

/// The seed's diagram, link (b): the master and the next master cannot talk, but both talk
/// to node3. The next master polls the master through node3 and must not fail over; a
/// black-holed peer must not stall anybody's loop either.
#[test]
fn link_b_cut_causes_no_failover() {
    let cluster = keeper_cluster_netns("part-b", 2, Some("node2"), &[KT, KC]);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    wait_title(n2, "standby (connected to node1)").unwrap();
    cluster.cut("node1", "node2").unwrap();
    let (r1, r2) = (rounds(n1), rounds(n2));
    std::thread::sleep(QUIET);
    assert_eq!(writable(&cluster), vec!["node1".to_string()]);
    assert!(!n2.log_contents().contains("promoting node2"));
    // node2 could not reach node1 itself, yet its rounds succeeded through node3.
    let direct = n2
        .query_one(
            "SELECT p->>'result' FROM pgkeeper.status(), jsonb_array_elements(peers) p WHERE p->>'name' = 'node1'",
        )
        .unwrap();
    assert_eq!(direct.as_deref(), Some("failed"));
    assert_eq!(n2.query_one("SELECT failed_rounds FROM pgkeeper.status()").unwrap().as_deref(), Some("0"));
    assert!(rounds(n1) - r1 >= 8 && rounds(n2) - r2 >= 8, "a loop stalled on a black-holed peer");
    cluster.heal_all().unwrap();
    wait_title(n2, "standby (connected to node1)").unwrap();
}

/// The next master cut off from every node, then the master killed: the isolated node
/// must not promote (it is 1 of 3), and node3 must not either (it is not the next master;
/// electing another candidate is issue 5/5).
#[test]
fn isolated_next_master_never_promotes() {
    let cluster = keeper_cluster_netns("part-iso", 2, Some("node2"), &[KT, KC]);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    wait_title(n2, "standby (connected to node1)").unwrap();
    cluster.isolate("node2").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    n1.kill9();
    wait_log(n2, "not promoting: only 1 of 3 registered nodes confirm it").unwrap();
    wait_log(n3, "not promoting: this node is not the next master").unwrap();
    std::thread::sleep(QUIET);
    assert!(n2.is_in_recovery().unwrap(), "the isolated next master promoted");
    assert!(n3.is_in_recovery().unwrap());
    assert!(writable(&cluster).is_empty());
}

/// Master isolated from both standbys (a real partition, not a crash): the standbys
/// confirm each other, node2 promotes, node3 follows it.
#[test]
fn isolated_master_is_replaced() {
    let cluster = keeper_cluster_netns("part-master", 2, Some("node2"), &[KT, KC]);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    wait_title(n2, "standby (connected to node1)").unwrap();
    cluster.isolate("node1").unwrap();
    wait_until(PATIENCE, || n2.is_in_recovery().ok() == Some(false)).expect("node2 promoted");
    wait_until(PATIENCE, || streams_from(n2, "node3")).expect("node3 follows node2");
    // The old master is still up, cut off: its worker sees nobody (fencing it is 5/5).
    assert!(!n1.is_in_recovery().unwrap());
    wait_title(n1, "master (connected, 0)").unwrap();
}

/// A standby that holds WAL the new master lacks cannot follow it: it says so in its log and
/// its status instead of being left behind silently. (Asynchronous replication, node2 cut
/// from the master while node3 keeps receiving; then the master dies and node2 promotes.)
#[test]
fn standby_ahead_of_new_master_reports_it_cannot_follow() {
    let cluster = keeper_cluster_netns("part-ahead", 2, None, &[KT, KC]);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    wait_title(n2, "standby (connected to node1)").unwrap();
    cluster.cut("node1", "node2").unwrap();
    n1.execute("CREATE TABLE ahead AS SELECT g FROM generate_series(1, 1000) g").unwrap();
    wait_replayed(n1, n3).unwrap();
    n1.kill9();
    wait_until(PATIENCE, || n2.is_in_recovery().ok() == Some(false)).expect("node2 promoted");
    wait_log(n3, "cannot follow new master \"node2\"").unwrap();
    wait_until(PATIENCE, || {
        n3.query_one("SELECT state FROM pgkeeper.status()").ok().flatten().is_some_and(|s| s.contains("needs rejoin"))
    })
    .expect("status says needs rejoin");
    assert!(!streams_from(n2, "node3"));
    assert!(n3.is_in_recovery().unwrap());
}

/// The master cut off from every standby while a client keeps writing to it (through its
/// local socket, which no partition cuts). Under synchronous replication the old master
/// must not degrade (it does not reach a majority), so no write it acknowledges after the
/// partition can be missing from the new master; after healing, it still acknowledges none.
#[test]
fn isolated_master_does_not_degrade_and_loses_no_acknowledged_write() {
    let cluster = keeper_cluster_netns("part-nodegrade", 2, Some("node2"), &[KT, KC]);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    n1.execute(WRITES_TABLE).unwrap();
    wait_title(n2, "standby (connected to node1)").unwrap();
    let writer = Writer::start(&n1.admin_conninfo(), Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(1));
    cluster.isolate("node1").unwrap();
    wait_until(PATIENCE, || n2.is_in_recovery().ok() == Some(false)).expect("node2 promoted");
    wait_log(n1, "does not reach a majority of the registered nodes: not degrading").unwrap();
    std::thread::sleep(QUIET);
    assert!(!n1.log_contents().contains("synchronous replication degraded"), "the isolated master degraded");
    cluster.heal_all().unwrap();
    wait_log(n1, "CONFLICT: node2 also accept(s) writes").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let acked = writer.stop();
    let have = rows(n2);
    let lost: Vec<_> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "writes acknowledged by the old master are missing on node2: {lost:?}");
    assert!(!acked.is_empty());
    assert!(!n1.log_contents().contains("synchronous replication degraded"));
}
