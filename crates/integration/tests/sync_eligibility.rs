//! Issue 2/7 item 1: under synchronous replication only a standby that holds every
//! acknowledged commit may be elected. Five nodes, `FIRST 1 (node2, node3, node4, node5,
//! node1)`: a commit is on node1 and node2 only, and a majority (3) can leave both out.
//!
//! To make the others lack acknowledged commits, the master's WAL senders to node3..node5 are
//! frozen (SIGSTOP) for a while: node2 keeps acknowledging, the others fall behind.

use keeper_integration::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const CONF: &[&str] = &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 3"];
const SYNC: &str = "FIRST 1 (node2, node3, node4, node5, node1)";

/// A cluster with a writer on node1 that has had node2 acknowledge for `secs` while node3..5
/// received nothing. Returns the cluster and the writer (still running).
fn behind_the_sync_standby(name: &str, secs: u64) -> (Cluster, Writer) {
    let cluster = keeper_cluster(name, 4, Some(SYNC), CONF);
    let n1 = cluster.node("node1");
    for n in &cluster.nodes()[1..] {
        wait_title(n, "standby (connected to node1)").unwrap();
    }
    n1.execute(WRITES_TABLE).unwrap();
    for n in &cluster.nodes()[1..] {
        wait_replayed(n1, n).unwrap();
    }
    // The heartbeat names node2 as the one eligible standby, and every voter persisted it.
    let standbys: Vec<&Node> = cluster.nodes()[1..].iter().collect();
    wait_eligible_persisted(n1, &standbys, &["node2"]).unwrap();
    let writer = Writer::start(&n1.conninfo(), Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(1));
    signal_wal_senders(n1, &["node3", "node4", "node5"], "-STOP");
    std::thread::sleep(Duration::from_secs(secs));
    (cluster, writer)
}

fn missing(on: &Node, acked: &[i64]) -> Vec<i64> {
    let have: BTreeSet<i64> = rows(on).into_iter().collect();
    acked.iter().copied().filter(|id| !have.contains(id)).collect()
}

/// The master and its only synchronous standby die together: node3..node5, which lack
/// acknowledged commits, elect nobody, and say why.
#[test]
fn master_and_its_synchronous_standby_killed_together_elect_nobody_lacking_a_commit() {
    let (cluster, mut writer) = behind_the_sync_standby("se-both", 2);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    n1.kill9_all();
    n2.kill9_all();
    writer.halt();
    let acked = writer.acked();
    assert!(acked.len() > 20, "the writer was acknowledged ({} rows)", acked.len());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        for w in writable(&cluster) {
            let lost = missing(cluster.node(&w), &acked);
            assert!(lost.is_empty(), "{w} was elected without {} acknowledged rows", lost.len());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(writable(&cluster).is_empty(), "no standby holds every acknowledged commit");
    eprintln!("master and node2 killed with {} acknowledged rows: no node writable for 20 s", acked.len());
    // Each says why it does not stand.
    for n in ["node3", "node4", "node5"] {
        let log = cluster.node(n).log_contents();
        assert!(
            log.contains("not a synchronous standby with every acknowledged commit (eligible: node2)"),
            "{n}: {}",
            cluster.node(n).log_tail(30)
        );
    }
    let title = worker(cluster.node("node3")).map(|w| w.1).unwrap_or_default();
    assert!(title.contains("synchronous"), "{title}");
}

/// The synchronous standby frozen when the master dies: nobody else is elected while it is
/// frozen; thawed, it is elected with every acknowledged row, and the others follow it.
#[test]
fn a_frozen_synchronous_standby_is_waited_for_and_elected() {
    let (cluster, mut writer) = behind_the_sync_standby("se-slow", 2);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    n2.sigstop();
    n1.kill9_all();
    writer.halt();
    let acked = writer.acked();
    assert!(acked.len() > 20, "the writer was acknowledged ({} rows)", acked.len());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        assert!(writable(&cluster).is_empty(), "a standby lacking commits was elected: {:?}", writable(&cluster));
        std::thread::sleep(Duration::from_millis(200));
    }
    n2.sigcont();
    let thawed = Instant::now();
    wait_until(PATIENCE, || writable(&cluster) == vec!["node2".to_string()]).expect("node2 elected");
    assert_eq!(missing(n2, &acked), Vec::<i64>::new());
    eprintln!(
        "node2 writable {:.1} s after its thaw, with all {} acknowledged rows",
        thawed.elapsed().as_secs_f64(),
        acked.len()
    );
    for other in ["node3", "node4", "node5"] {
        wait_until(PATIENCE, || streams_from(n2, other)).unwrap_or_else(|_| panic!("{other} follows node2"));
    }
}

/// A standby ahead of the synchronous one (it received WAL nobody acknowledged) is no reason
/// to elect nobody, nor is it left behind: the synchronous standby wins, fetches that WAL
/// from it first, then promotes, and the other streams from it with no rewind.
#[test]
fn the_winner_fetches_what_a_standby_ahead_of_it_has() {
    let cluster = keeper_cluster("se-ahead", 2, Some("FIRST 1 (node2, node3, node1)"), CONF);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    for n in [n2, n3] {
        wait_title(n, "standby (connected to node1)").unwrap();
    }
    n1.execute(WRITES_TABLE).unwrap();
    wait_replayed(n1, n2).unwrap();
    wait_replayed(n1, n3).unwrap();
    // Else node3 refuses node2 as behind it, stands itself, and node2 (eligible) grants it:
    // safe (node3 has all node2 has) but not the schedule this test is about.
    wait_eligible_persisted(n1, &[n2, n3], &["node2"]).unwrap();
    // node2 stops receiving: commits wait for it (never acknowledged), node3 gets their WAL.
    signal_wal_senders(n1, &["node2"], "-STOP");
    let conninfo = n1.conninfo();
    for i in 0..4 {
        let ci = conninfo.clone();
        std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&ci, postgres::NoTls) {
                let _ = c.execute(
                    "INSERT INTO pgk_writes (id) SELECT generate_series($1::bigint * 1000, $1::bigint * 1000 + 999)",
                    &[&(i as i64 + 1)],
                );
            }
        });
    }
    let lsn = |n: &Node| {
        n.query_one("SELECT pg_last_wal_receive_lsn() - '0/0'::pg_lsn")
            .unwrap()
            .unwrap_or_default()
            .parse::<f64>()
            .unwrap_or(0.0)
    };
    wait_until(PATIENCE, || lsn(n3) > lsn(n2) + 1000.0).expect("node3 ahead of node2");
    n1.kill9_all();
    wait_until(PATIENCE, || writable(&cluster) == vec!["node2".to_string()])
        .unwrap_or_else(|_| panic!("node2 elected:\n{}\n--- node3\n{}", n2.log_tail(40), n3.log_tail(20)));
    assert!(!log_lines(n2, "fetched WAL up to").is_empty(), "{}", n2.log_tail(40));
    wait_until(PATIENCE, || streams_from(n2, "node3"))
        .unwrap_or_else(|_| panic!("node3 follows node2:\n{}", n3.log_tail(30)));
    assert!(log_lines(n3, "cannot follow").is_empty(), "{}", n3.log_tail(30));
}
