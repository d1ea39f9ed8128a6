//! Issue 2/7 item 2: WAL positions are compared with their timelines. A standby that kept WAL
//! of an old timeline past the new timeline's fork point has a larger LSN than the nodes on
//! the new timeline, yet it is less advanced: it never wins against them.

use keeper_integration::*;
use std::time::Duration;

const CONF: &[&str] = &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 2"];

fn lsn_of(n: &Node) -> String {
    n.query_one("SELECT greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text")
        .unwrap()
        .unwrap_or_default()
}

#[test]
fn wal_of_an_old_timeline_past_the_fork_never_wins() {
    let cluster = keeper_cluster("tl-fork", 4, None, CONF);
    let n1 = cluster.node("node1");
    let n3 = cluster.node("node3");
    for n in &cluster.nodes()[1..] {
        wait_title(n, "standby (connected to node1)").unwrap();
    }
    n1.execute(WRITES_TABLE).unwrap();
    for n in &cluster.nodes()[1..] {
        wait_replayed(n1, n).unwrap();
    }
    // node3 alone receives a lot more WAL of timeline 1 ...
    signal_wal_senders(n1, &["node2", "node4", "node5"], "-STOP");
    n1.execute("INSERT INTO pgk_writes (id) SELECT generate_series(1, 20000)").unwrap();
    wait_replayed(n1, n3).unwrap();
    // ... and is down when the master dies: the others elect one of them, on timeline 2.
    n3.stop_immediate().unwrap();
    n1.kill9_all();
    let tl2 = ["node2", "node4", "node5"];
    let writable_of = |among: &[&str]| {
        among.iter().find(|n| cluster.node(n).is_in_recovery().ok() == Some(false)).map(|n| n.to_string())
    };
    wait_until(PATIENCE, || writable_of(&tl2).is_some()).expect("a master on timeline 2");
    let first = writable_of(&tl2).unwrap();
    let m = cluster.node(&first);
    m.execute("INSERT INTO pgk_writes (id) SELECT generate_series(100001, 100010)").unwrap();
    let rest: Vec<&str> = tl2.iter().copied().filter(|n| *n != first).collect();
    for s in &rest {
        wait_until(PATIENCE, || streams_from(m, s)).unwrap();
        wait_replayed(m, cluster.node(s)).unwrap();
    }
    // node3 comes back with WAL of timeline 1 past the fork: it cannot follow.
    n3.start().unwrap();
    wait_log(n3, "cannot follow new master").unwrap();
    eprintln!("node3 (timeline 1) at {}, {} (timeline 2) at {}", lsn_of(n3), rest[0], lsn_of(cluster.node(rest[0])));
    // The new master dies: node3 and the two timeline-2 standbys are a majority of five.
    m.kill9_all();
    let survivors = [rest[0], rest[1], "node3"];
    wait_until(PATIENCE, || writable_of(&survivors).is_some()).expect("a second failover");
    let second = writable_of(&survivors).unwrap();
    assert_ne!(second, "node3", "node3 won with WAL of an old timeline:\n{}", n3.log_tail(30));
    let have = rows(cluster.node(&second));
    assert!((100001..=100010).all(|id| have.contains(&id)), "timeline 2's commits are on {second}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(n3.is_in_recovery().unwrap(), "node3 never promotes");
}
