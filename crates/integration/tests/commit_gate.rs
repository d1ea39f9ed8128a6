//! Which processes the commit gate holds: a fenced master's logical replication apply worker
//! (a background worker) commits nothing either.

use keeper_integration::*;
use std::time::Duration;

const KT: &str = "pg_keeper.keepalive_time = 1";
const KC: &str = "pg_keeper.keepalive_count = 3";

fn count(n: &Node) -> String {
    n.query_one("SELECT count(*) FROM feed").ok().flatten().unwrap_or_default()
}

/// The master of a pg_keeper cluster subscribes to a publication elsewhere. Both its standbys
/// stopped, it no longer reaches a majority and fences: the apply worker commits nothing of
/// what the publisher sends (the change would be lost to whichever node is elected). With a
/// standby back, the lease returns and the change is applied.
#[test]
fn fenced_master_applies_no_logical_replication() {
    let publisher = Cluster::builder("gate-pub").standbys(0).keeper(false).conf("wal_level = logical").build().unwrap();
    let p = publisher.master();
    p.execute("CREATE TABLE feed (id int PRIMARY KEY); CREATE PUBLICATION feed_pub FOR TABLE feed").unwrap();
    let cluster = keeper_cluster("gate-sub", 2, None, &[KT, KC]);
    let m = cluster.node("node1");
    let gate = || commit_gate(m);
    wait_until(PATIENCE, || gate() == "open").expect("node1 holds its lease");
    m.execute("CREATE TABLE feed (id int PRIMARY KEY)").unwrap();
    let conninfo = p.conninfo().replace('\'', "''");
    m.execute(&format!("CREATE SUBSCRIPTION feed_sub CONNECTION '{conninfo}' PUBLICATION feed_pub")).unwrap();
    p.execute("INSERT INTO feed VALUES (1)").unwrap();
    wait_until(PATIENCE, || count(m) == "1").expect("the subscription applies");

    cluster.node("node2").stop().unwrap();
    cluster.node("node3").stop().unwrap();
    wait_until(PATIENCE, || gate() == "fenced").expect("node1 fenced without a majority");
    p.execute("INSERT INTO feed VALUES (2)").unwrap();
    // Longer than the gate's longest wait ((3 + 2) x 1 s): the apply worker gave up at least once.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(count(m), "1", "a fenced master applied a replicated change");
    assert!(m.log_contents().contains("this master is fenced"), "{}", m.log_tail(30));

    cluster.node("node2").start().unwrap();
    wait_until(PATIENCE, || gate() == "open").expect("node1 holds its lease again");
    wait_until(PATIENCE, || count(m) == "2").expect("applied once the lease is back");
    m.execute("DROP SUBSCRIPTION feed_sub").unwrap();
}
