//! What the cluster looks like right after a failover (issue 4/7): the other standbys stream
//! from the new master at once, the new master keeps synchronous replication (no degrade
//! caused by the failover itself), and the connections between the nodes are kept, replaced
//! after a restart, and never hide a dead peer.

use keeper_integration::*;
use std::time::{Duration, Instant, SystemTime};

/// The README's recommendation: every candidate listed, on every node.
const SYNC: &str = "FIRST 1 (node2, node3, node1)";

/// The pids of pg_keeper's own backends on `n` (the connections other nodes' probes use).
fn keeper_backends(n: &Node) -> Vec<i64> {
    let mut c = n.try_connect().expect("connect");
    let mut v: Vec<i64> = c
        .query(
            "SELECT pid::bigint FROM pg_stat_activity WHERE application_name = 'pg_keeper' AND pid <> pg_backend_pid()",
            &[],
        )
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.sort();
    v
}

/// At 1 s x 1 a short round degrades at once: the first guard round of the new master comes
/// right after its promotion, before node3's WAL receiver has switched to the new timeline.
/// node3 must stream from node2 within moments of the promotion, and node2 must keep
/// `FIRST 1 (node3, node1)` with node3 as its synchronous standby, for good.
#[test]
fn the_standbys_stream_from_the_new_master_at_once_and_nothing_degrades() {
    let cluster =
        keeper_cluster("af-repoint", 2, Some(SYNC), &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 1"]);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    n1.execute(WRITES_TABLE).unwrap();
    for s in [n2, n3] {
        wait_title(s, "standby (connected to node1)").unwrap();
    }
    let writer = Writer::start(&n1.conninfo(), Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(2));
    let kill = SystemTime::now();
    n1.kill9_all();
    wait_until(PATIENCE, || n2.is_in_recovery().ok() == Some(false)).expect("node2 promoted");
    let promoted_seen = Instant::now();
    wait_until(PATIENCE, || streams_from(n2, "node3")).expect("node3 streams from node2");
    let streaming_after = promoted_seen.elapsed();
    let acked = writer.stop();
    let promoted = log_lines(n2, "pg_keeper: node2 promoted");
    let at = log_line_time(n2, promoted.last().expect("promotion line")).unwrap();
    eprintln!(
        "node2 promoted {:.2} s after the kill; node3 streaming from it {:.3} s after node2 was seen writable",
        secs_after(at, kill),
        streaming_after.as_secs_f64()
    );
    // Past the re-point grace and a few guard rounds: still synchronous, node3 the standby.
    std::thread::sleep(Duration::from_secs(12));
    let degraded = log_lines(n2, "degraded to asynchronous");
    assert!(degraded.is_empty(), "the new master degraded: {degraded:?}");
    assert_eq!(n2.query_one("SHOW synchronous_standby_names").unwrap().as_deref(), Some("FIRST 1 (node3, node1)"));
    assert_eq!(
        n2.query_one("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'node3'").unwrap().as_deref(),
        Some("sync")
    );
    // A commit on the new master waits for node3, and nothing acknowledged was lost.
    n2.execute("INSERT INTO pgk_writes (id) VALUES (-1)").unwrap();
    wait_replayed(n2, n3).unwrap();
    let have = rows(n2);
    let lost: Vec<_> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    assert!(rows(n3).contains(&-1));
}

/// A master that restarts (crash, immediate stop) comes back before anyone fails over, but
/// its standbys' WAL receivers reconnect only after `wal_retrieve_retry_interval`: 8 s here,
/// longer than the 3 short rounds after which the guard degrades at 1 s x 3. Within the
/// re-point grace (10 s) the master must wait for them instead of switching to asynchronous
/// replication.
#[test]
fn a_master_restart_does_not_degrade_while_its_standbys_reconnect() {
    let cluster =
        keeper_cluster("af-restart", 2, Some(SYNC), &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 3"]);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    for s in [n2, n3] {
        s.append_conf("wal_retrieve_retry_interval = '8s'").unwrap();
        s.reload().unwrap();
        wait_title(s, "standby (connected to node1)").unwrap();
    }
    n1.execute(WRITES_TABLE).unwrap();
    n1.stop_immediate().unwrap();
    n1.start().unwrap();
    let back = Instant::now();
    wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).expect("both stream again");
    eprintln!("standbys streaming again {:.1} s after node1's restart", back.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(writable(&cluster), vec!["node1".to_string()], "nobody took over");
    let degraded = log_lines(n1, "degraded to asynchronous");
    assert!(degraded.is_empty(), "the restarted master degraded: {degraded:?}");
    assert!(!log_lines(n1, "waiting up to 10 s for").is_empty(), "the master did not say it waited for its standbys");
    n1.execute("INSERT INTO pgk_writes (id) VALUES (1)").unwrap();
    assert_eq!(
        n1.query_one("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'node2'").unwrap().as_deref(),
        Some("sync")
    );
}

/// The probes reuse their connections: over 3 s of 0.2 s rounds (15 rounds, about 60 probes
/// to node1) few distinct pg_keeper backends serve node1 (fresh connections would show new
/// pids every round). A restarted node
/// gets new ones and nobody fails over; a smart shutdown, which waits for every session,
/// pg_keeper's kept ones included, completes; a node whose server is killed still fails its
/// probes (a kept connection does not hide it).
#[test]
fn connections_between_nodes_are_kept_replaced_after_a_restart_and_hide_no_dead_peer() {
    let cluster =
        keeper_cluster("af-conns", 2, Some(SYNC), &["pg_keeper.keepalive_time = 0.2", "pg_keeper.keepalive_count = 2"]);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    for s in [n2, n3] {
        wait_title(s, "standby (connected to node1)").unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let first = keeper_backends(n1);
    assert!(!first.is_empty(), "no pg_keeper backend on node1");
    let mut seen = std::collections::BTreeSet::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        seen.extend(keeper_backends(n1));
        std::thread::sleep(Duration::from_millis(100));
    }
    // node1 serves (N - 1)^2 = 4 kept connections: node2's and node3's workers, and the
    // backend on each standby that runs the other's indirect poll. At most two generations
    // of them in 3 s.
    assert!(seen.len() <= 8, "pg_keeper's connections to node1 are not kept: {} backends in 3 s: {seen:?}", seen.len());
    assert!(first.iter().all(|p| seen.contains(p)));

    // node3 restarts: its kept connections go, new ones come, node1 stays the master.
    n3.restart().unwrap();
    wait_title(n3, "standby (connected to node1)").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(writable(&cluster), vec!["node1".to_string()]);

    // A smart shutdown of node3 is not held back by the sessions the others keep there.
    let t = Instant::now();
    n3.stop_smart().expect("node3 stops (smart) within 60 s");
    eprintln!("node3's smart shutdown took {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(writable(&cluster), vec!["node1".to_string()]);
    n3.start().unwrap();
    wait_title(n3, "standby (connected to node1)").unwrap();

    // The master killed: its kept connections must not make it look alive.
    n1.kill9_all();
    wait_until(PATIENCE, || writable(&cluster) == vec!["node2".to_string()]).expect("node2 takes over");
}
