//! The worker never hangs on a lock (issue 11, item 6): every lock wait of pg_keeper's own SQL
//! is bounded by a fraction of a round, so a lock held elsewhere costs a round's work, never
//! the loop, the failover or a shutdown.

use keeper_integration::*;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KT: &str = "pg_keeper.keepalive_time = 1";
const KC: &str = "pg_keeper.keepalive_count = 3";

/// The only synchronous standby dies and, at once, `del_node` of another standby: its commit
/// waits for the dead standby while it holds node_info's lock. The worker must not block on
/// that lock: it degrades synchronous replication after `keepalive_count` rounds, the
/// del_node returns, and writes resume. (Before: del_node had not returned after 29 s.)
#[test]
fn del_node_while_the_sync_standby_is_dead_returns_and_writes_resume() {
    let cluster = keeper_cluster("lw-delnode", 3, Some("node2"), &[KT, KC]);
    let m = cluster.node("node1");
    m.execute(WRITES_TABLE).unwrap();
    wait_until(PATIENCE, || commit_gate(m) == "open").expect("node1 holds its lease");
    wait_until(PATIENCE, || streams_from(m, "node2")).expect("node2 streams");
    cluster.node("node2").kill9();
    let killed = Instant::now();
    let (tx, rx) = mpsc::channel();
    let ci = m.admin_conninfo();
    std::thread::spawn(move || {
        let r = (|| -> anyhow::Result<bool> {
            let mut c: postgres::Client = postgres::Client::connect(&ci, postgres::NoTls)?;
            Ok(c.query_one("SELECT pgkeeper.del_node('node4')", &[])?.get(0))
        })();
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let deleted = rx.recv_timeout(PATIENCE).expect("del_node returns");
    println!("del_node returned {deleted:?} {:.1} s after the kill", killed.elapsed().as_secs_f64());
    assert_eq!(deleted, Ok(true));
    let t = Instant::now();
    // (in a thread: a commit waiting for a synchronous standby ignores statement_timeout)
    let (tx, rx) = mpsc::channel();
    let ci = m.admin_conninfo();
    std::thread::spawn(move || {
        let r = postgres::Client::connect(&ci, postgres::NoTls)
            .and_then(|mut c| c.execute("INSERT INTO pgk_writes (id) VALUES (1)", &[]))
            .map_err(|e| db_message(&e));
        let _ = tx.send(r);
    });
    rx.recv_timeout(PATIENCE).expect("the write returns").expect("writes resume");
    println!(
        "a write acknowledged {:.1} s after the kill ({:.1} s after del_node returned)",
        killed.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(node_info(m).iter().filter(|r| r.1 == "node4").count(), 0, "node4 is gone from node_info");
    wait_log(m, "synchronous replication degraded").unwrap();
}

/// A standby replays an ACCESS EXCLUSIVE lock on node_info (taken on the master, as VACUUM
/// FULL or ALTER EXTENSION would): its worker's reads time out instead of waiting, its loop
/// goes on with the last copy, and a fast shutdown of that standby completes while the lock
/// is still held. The master's worker, blocked the same way, keeps its lease: no failover.
#[test]
fn a_replayed_lock_on_node_info_stalls_neither_the_worker_nor_its_shutdown() {
    let cluster = keeper_cluster("lw-replay", 2, None, &[KT, KC]);
    let (m, s2) = (cluster.node("node1"), cluster.node("node2"));
    wait_until(PATIENCE, || commit_gate(m) == "open").expect("node1 holds its lease");
    // Every worker has read the whole node_info (the copy it goes on with while it is locked).
    wait_title(m, "connected, 2").unwrap();
    for s in ["node2", "node3"] {
        wait_title(cluster.node(s), "connected to node1").unwrap();
    }
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (locked_tx, locked_rx) = mpsc::channel();
    let ci = m.admin_conninfo();
    let holder = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&ci, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("LOCK TABLE pgkeeper.node_info IN ACCESS EXCLUSIVE MODE").unwrap();
        // The lock is WAL-logged at its XID: give it one.
        tx.batch_execute("SELECT pg_current_xact_id()").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(120));
        tx.commit().unwrap();
        Instant::now()
    });
    locked_rx.recv_timeout(PATIENCE).unwrap();
    wait_log(s2, "node_info is locked").expect("node2's worker meets the replayed lock and goes on");
    let rounds =
        || s2.query_one("SELECT rounds FROM pgkeeper.status()").ok().flatten().and_then(|r| r.parse::<i64>().ok());
    let r0 = rounds().expect("status answers on node2");
    wait_until(PATIENCE, || rounds().is_some_and(|r| r >= r0 + 3))
        .expect("node2's rounds go on while the lock is held");
    // node1's worker reads the same lock on its own node_info: it goes on with its last copy,
    // keeps its lease, and nobody fails over.
    std::thread::sleep(Duration::from_secs(5));
    let logs = || {
        format!(
            "status: {:?}\n--- node1 ---\n{}\n--- node2 ---\n{}",
            m.query("SELECT state, rounds, peers::text FROM pgkeeper.status()"),
            m.log_tail(30),
            s2.log_tail(30)
        )
    };
    wait_until(PATIENCE, || commit_gate(m) == "open")
        .unwrap_or_else(|_| panic!("node1 holds no lease while node_info is locked: {}\n{}", commit_gate(m), logs()));
    assert_eq!(writable(&cluster), vec!["node1".to_string()], "no failover\n{}", logs());
    let t = Instant::now();
    s2.stop().expect("fast shutdown of node2");
    let stopped = Instant::now();
    println!("node2 stopped in {:.2} s while the lock was held", t.elapsed().as_secs_f64());
    release_tx.send(()).unwrap();
    let released = holder.join().unwrap();
    assert!(stopped < released, "node2's shutdown waited for the lock to be released");
}

/// The same hazard made certain: a transaction takes node_info's lock (as add_node / del_node
/// do), writes, and commits after the only synchronous standby died, so its commit waits for
/// synchronous replication with the lock held. The worker must then move the next master off
/// the dead standby (an UPDATE of node_info, blocked by that lock): it must give up on the lock
/// within a round, degrade synchronous replication after `keepalive_count` rounds, and so let
/// the waiting commit complete.
#[test]
fn a_commit_holding_node_info_while_waiting_for_a_dead_sync_standby_does_not_stall_the_worker() {
    let cluster = keeper_cluster("lw-holder", 2, Some("node2"), &[KT, KC]);
    let m = cluster.node("node1");
    m.execute(WRITES_TABLE).unwrap();
    wait_until(PATIENCE, || commit_gate(m) == "open").expect("node1 holds its lease");
    wait_until(PATIENCE, || {
        m.query_one("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node2' AND sync_state = 'sync'")
            .ok()
            .flatten()
            .as_deref()
            == Some("1")
    })
    .expect("node2 is the synchronous standby");
    assert_eq!(node_info(m).iter().find(|r| r.3 == "t").map(|r| r.1.clone()).as_deref(), Some("node2"));
    let mut c = m.try_connect().unwrap();
    c.batch_execute(
        "BEGIN; LOCK TABLE pgkeeper.node_info IN SHARE ROW EXCLUSIVE MODE; INSERT INTO pgk_writes (id) VALUES (7)",
    )
    .unwrap();
    cluster.node("node2").kill9();
    let killed = Instant::now();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(c.batch_execute("COMMIT").map_err(|e| db_message(&e)));
    });
    let r = done_rx.recv_timeout(PATIENCE).expect("the waiting commit completes");
    println!("commit holding node_info's lock completed {:.1} s after the kill: {r:?}", killed.elapsed().as_secs_f64());
    r.expect("committed");
    // (the worker logs the degrade right after its reload, which is what released the commit)
    wait_log(m, "synchronous replication degraded").unwrap();
    wait_until(PATIENCE, || node_info(m).iter().find(|r| r.3 == "t").map(|r| r.1.clone()).as_deref() == Some("node3"))
        .expect("the next master moves to node3 once the lock is free");
}
