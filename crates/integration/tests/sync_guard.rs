//! Master mode's synchronous-replication guard on real clusters (issue 3/5): writes keep
//! flowing when synchronous standbys die, synchronous replication comes back with them.

use keeper_integration::*;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KT: &str = "pg_keeper.keepalive_time = 1";
const KC: &str = "pg_keeper.keepalive_count = 3";
/// 3 x keepalive_time x keepalive_count, plus slack.
const QUIET: Duration = Duration::from_secs(3 * 3 + 2);

/// Start one INSERT on its own thread; the receiver yields when it was acknowledged.
fn commit(node: &Node, id: i64) -> mpsc::Receiver<Result<(), String>> {
    let (tx, rx) = mpsc::channel();
    let ci = node.admin_conninfo();
    std::thread::spawn(move || {
        let r = (|| -> Result<(), String> {
            let mut c = ci
                .parse::<postgres::Config>()
                .map_err(|e| e.to_string())?
                .connect(postgres::NoTls)
                .map_err(|e| e.to_string())?;
            c.execute("INSERT INTO pgk_writes (id) VALUES ($1)", &[&id]).map_err(|e| db_message(&e))?;
            Ok(())
        })();
        let _ = tx.send(r);
    });
    rx
}

fn sync_state(n: &Node) -> String {
    n.query_one("SELECT sync_state FROM pgkeeper.status()").unwrap().unwrap_or_default()
}

fn show_sync(n: &Node) -> String {
    n.query_one("SHOW synchronous_standby_names").unwrap().unwrap_or_default()
}

fn is_sync(n: &Node, name: &str) -> String {
    node_info(n).into_iter().find(|r| r.1 == name).map(|r| r.4).unwrap_or_default()
}

fn wait_sync_state(n: &Node, want: &str) {
    wait_until(PATIENCE, || sync_state(n) == want)
        .unwrap_or_else(|_| panic!("sync_state never became {want}: {}\n{}", sync_state(n), n.log_tail(20)));
}

#[test]
fn dead_sync_standby_degrades_then_returns_and_is_restored() {
    let cluster = keeper_cluster("sg-kill", 2, Some("node2"), &[KT, KC]);
    let (m, s2) = (cluster.node("node1"), cluster.node("node2"));
    m.execute(WRITES_TABLE).unwrap();
    wait_sync_state(m, "synchronous");
    assert_eq!(is_sync(m, "node2"), "t");

    // kill -9 of the synchronous standby while a client commits.
    s2.kill9();
    let killed = Instant::now();
    let blocked = commit(m, 1);
    blocked.recv_timeout(PATIENCE).expect("the blocked commit completes").unwrap();
    eprintln!("blocked commit completed {:?} after the kill", killed.elapsed());
    wait_log(m, "synchronous replication degraded to asynchronous").unwrap();
    assert_eq!(show_sync(m), "");
    let auto = std::fs::read_to_string(m.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("synchronous_standby_names = ''"), "{auto}");
    assert_eq!(sync_state(m), "degraded");
    wait_until(PATIENCE, || is_sync(m, "node2") == "f").expect("is_sync cleared");
    // The master keeps accepting writes.
    commit(m, 2).recv_timeout(Duration::from_secs(10)).expect("write while degraded").unwrap();

    // The standby returns: synchronous replication is restored.
    s2.start().unwrap();
    wait_sync_state(m, "synchronous");
    wait_log(m, "synchronous replication restored").unwrap();
    assert_eq!(show_sync(m), "node2");
    wait_until(PATIENCE, || is_sync(m, "node2") == "t").expect("is_sync set again");

    // Durability is back: with the standby hung, a commit waits ...
    s2.sigstop();
    let waiting = commit(m, 3);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(waiting.try_recv().is_err(), "a commit completed without its synchronous standby");
    let ev = m.query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").unwrap();
    assert_eq!(ev.as_deref(), Some("1"));
    // ... until the next degrade.
    waiting.recv_timeout(PATIENCE).expect("completes after the degrade").unwrap();
    assert_eq!(sync_state(m), "degraded");
    s2.sigcont();
    wait_sync_state(m, "synchronous");
}

/// `ANY 1 (node2, node3)` in a 5-node cluster (node4 and node5 asynchronous): one of the two
/// gone is still enough; both gone, the master still reaches a majority (itself, node4,
/// node5), so it degrades. (In a 3-node cluster, both standbys gone leaves the master alone:
/// it does not degrade then, see partitions.rs.)
#[test]
fn any_one_of_two_degrades_only_when_both_are_gone() {
    let cluster = keeper_cluster("sg-any", 4, Some("ANY 1 (node2, node3)"), &[KT, KC]);
    let m = cluster.node("node1");
    m.execute(WRITES_TABLE).unwrap();
    wait_sync_state(m, "synchronous");
    cluster.node("node2").kill9();
    commit(m, 1).recv_timeout(Duration::from_secs(10)).expect("node3 still acknowledges").unwrap();
    std::thread::sleep(QUIET);
    assert_eq!(sync_state(m), "synchronous");
    assert_eq!(show_sync(m), "ANY 1 (node2, node3)");
    cluster.node("node3").kill9();
    let blocked = commit(m, 2);
    blocked.recv_timeout(PATIENCE).expect("completes after the degrade").unwrap();
    assert_eq!(sync_state(m), "degraded");
    assert_eq!(show_sync(m), "");
}

/// Both standbys of a 3-node cluster gone: the master cannot tell that from being cut off,
/// so it does not degrade (it would risk acknowledging writes beside a promoted standby);
/// it says why, and the commit waits.
#[test]
fn no_degrade_when_the_master_is_alone() {
    let cluster = keeper_cluster("sg-alone", 2, Some("node2"), &[KT, KC]);
    let m = cluster.node("node1");
    m.execute(WRITES_TABLE).unwrap();
    wait_sync_state(m, "synchronous");
    cluster.node("node2").kill9();
    cluster.node("node3").kill9();
    let blocked = commit(m, 1);
    wait_log(m, "does not reach a majority of the registered nodes: not degrading").unwrap();
    std::thread::sleep(QUIET);
    assert!(blocked.try_recv().is_err(), "a commit completed with no standby and no majority");
    assert_eq!(sync_state(m), "synchronous");
    // One standby back: majority again, and synchronous replication is there: it completes.
    cluster.node("node2").start().unwrap();
    blocked.recv_timeout(PATIENCE).expect("completes once node2 is back").unwrap();
}

#[test]
fn degraded_state_survives_a_server_restart_and_operator_changes_win() {
    let cluster = keeper_cluster("sg-restart", 2, Some("node2"), &[KT, KC]);
    let (m, s2) = (cluster.node("node1"), cluster.node("node2"));
    m.execute(WRITES_TABLE).unwrap();
    wait_sync_state(m, "synchronous");
    s2.stop().unwrap();
    wait_sync_state(m, "degraded");
    m.restart().unwrap();
    m.wait_ready(PATIENCE).unwrap();
    wait_sync_state(m, "degraded");
    assert_eq!(show_sync(m), "");
    s2.start().unwrap();
    wait_sync_state(m, "synchronous");
    assert_eq!(show_sync(m), "node2");

    // While degraded, the operator names another standby: that value is kept.
    s2.stop().unwrap();
    wait_sync_state(m, "degraded");
    m.execute("ALTER SYSTEM SET synchronous_standby_names = 'node3'").unwrap();
    m.reload().unwrap();
    wait_log(m, "it is the value to keep from now on").unwrap();
    wait_sync_state(m, "synchronous");
    assert_eq!(show_sync(m), "node3");
    commit(m, 1).recv_timeout(Duration::from_secs(10)).expect("node3 acknowledges").unwrap();
}
