//! Failover, elections and fencing under network partitions (issues 2/5 and 5/5), each node
//! in its own network namespace, links cut with nftables (packets dropped: a black hole).

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

/// The next master cut off from every node, then the master killed (5 nodes): the isolated
/// node never promotes (it cannot gather votes), and another standby is elected instead.
/// Asynchronous replication: with node2 the synchronous standby, nobody else may be elected
/// (it alone holds every acknowledged commit: tests/sync_eligibility.rs).
#[test]
fn isolated_next_master_never_promotes_another_does() {
    let cluster = keeper_cluster_netns("part-iso", 4, None, &[KT, KC]);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    wait_title(n2, "standby (connected to node1)").unwrap();
    cluster.isolate("node2").unwrap();
    n1.kill9();
    let elected = || writable_by_write(&cluster).into_iter().find(|n| n != "node1");
    wait_until(PATIENCE, || elected().is_some()).unwrap_or_else(|e| {
        let tails: Vec<String> =
            ["node3", "node4", "node5"].iter().map(|n| format!("--- {n}\n{}", cluster.node(n).log_tail(25))).collect();
        panic!("a new master is elected: {e}\n{}", tails.join("\n"))
    });
    let new = elected().unwrap();
    assert_ne!(new, "node2");
    let m = cluster.node(&new);
    assert!(m.log_contents().contains("elected in term"), "{}", m.log_tail(20));
    for other in ["node3", "node4", "node5"].iter().filter(|n| **n != new) {
        wait_until(PATIENCE, || streams_from(m, other)).unwrap_or_else(|_| panic!("{other} follows {new}"));
    }
    std::thread::sleep(QUIET);
    assert!(n2.is_in_recovery().unwrap(), "the isolated next master promoted");
    assert_eq!(writable(&cluster), vec![new]);
}

/// Master isolated from every standby (a partition, not a crash) while a client keeps writing
/// to it through its local socket (asynchronous replication). The old master fences itself
/// when its lease ends, before node2 is promoted: no write is acknowledged by it after the
/// promotion instant. After healing it sees the newer term and stays fenced for good.
#[test]
fn isolated_master_fences_before_the_promotion_and_stays_fenced() {
    let cluster = keeper_cluster_netns("part-master", 2, None, &[KT, KC]);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    n1.execute(WRITES_TABLE).unwrap();
    wait_title(n2, "standby (connected to node1)").unwrap();
    let mut writer = Writer::start(&n1.admin_conninfo(), Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(1));
    cluster.isolate("node1").unwrap();
    // The first instant the test sees node2 writable: at or after the promotion instant.
    wait_until(PATIENCE, || n2.is_in_recovery().ok() == Some(false)).expect("node2 promoted");
    let promoted_seen = std::time::Instant::now();
    wait_until(PATIENCE, || streams_from(n2, "node3")).expect("node3 follows node2");
    std::thread::sleep(Duration::from_secs(2));
    writer.halt();
    let acked = writer.acked_at();
    let last = acked.iter().map(|(_, t)| *t).max().expect("some writes were acknowledged");
    assert!(last < promoted_seen, "the old master acknowledged a write after node2 was promoted");
    eprintln!(
        "margin: last write acknowledged by the old master {:?} before node2 was seen promoted",
        promoted_seen - last
    );
    let state = n1.query_one("SELECT commits FROM pgkeeper.status()").unwrap().unwrap_or_default();
    assert_eq!(state, "fenced");
    cluster.heal_all().unwrap();
    wait_log(n1, "was elected master in term").unwrap();
    let state = n1.query_one("SELECT state FROM pgkeeper.status()").unwrap().unwrap_or_default();
    assert!(state.contains("deposed by node2") && state.contains("needs rejoin"), "{state}");
    let err = format!("{:#}", n1.execute("INSERT INTO pgk_writes (id) VALUES (-1)").unwrap_err());
    assert!(err.contains("no longer the master"), "{err}");
    assert_eq!(writable_by_write(&cluster), vec!["node2".to_string()]);
}

/// The master isolated for a moment, shorter than a failover takes: it fences (a commit
/// started meanwhile waits at the gate), and when the partition heals before anyone was
/// elected it unfences on its own: the waiting commit completes, new writes go through, no
/// election took place, and node1 is still the only writable node.
#[test]
fn briefly_isolated_master_unfences_and_the_waiting_commit_completes() {
    // keepalive_count = 10: the standbys need about 10 s before standing; the master fences
    // about 1 s after the cut, and the heal comes right after.
    let cluster = keeper_cluster_netns("part-brief", 2, None, &[KT, "pg_keeper.keepalive_count = 10"]);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    n1.execute(WRITES_TABLE).unwrap();
    wait_title(n2, "standby (connected to node1)").unwrap();
    let gate = || commit_gate(n1);
    wait_until(PATIENCE, || gate() == "open").expect("node1 holds its lease");
    let term_before = n2.query_one("SELECT term FROM pgkeeper.status()").unwrap();
    cluster.isolate("node1").unwrap();
    wait_until(Duration::from_secs(4), || gate() == "fenced").expect("node1 fenced within its lease");
    std::thread::scope(|s| {
        let waiting = s.spawn(|| n1.execute("INSERT INTO pgk_writes (id) VALUES (1)"));
        // The commit is waiting at the gate (WaitLatch with PG_WAIT_EXTENSION), not merely
        // slow to arrive.
        let at_gate = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE 'INSERT INTO pgk_writes%'";
        let seen = wait_until(Duration::from_secs(5), || n1.query_one(at_gate).ok().flatten().as_deref() == Some("1"));
        assert!(seen.is_ok() && !waiting.is_finished(), "no commit waiting at the gate of a fenced master");
        cluster.heal_all().unwrap();
        waiting.join().unwrap().expect("the commit that waited at the gate completes after healing");
    });
    wait_until(PATIENCE, || gate() == "open").expect("node1 unfenced");
    n1.execute("INSERT INTO pgk_writes (id) VALUES (2)").unwrap();
    assert_eq!(n1.query_one("SELECT count(*) FROM pgk_writes").unwrap().as_deref(), Some("2"));
    assert_eq!(writable_by_write(&cluster), vec!["node1".to_string()]);
    for n in ["node2", "node3"] {
        let log = cluster.node(n).log_contents();
        assert!(!log.contains("stands for election"), "{n} stood for election:\n{}", cluster.node(n).log_tail(20));
    }
    assert_eq!(n2.query_one("SELECT term FROM pgkeeper.status()").unwrap(), term_before, "a new term began");
}

/// A transaction prepared on the master (two-phase commit) while it held its lease, then the
/// master isolated: once it is fenced it neither commits nor rolls back the prepared
/// transaction (the new master has it too and decides its fate); deposed, it refuses at once.
/// The transaction stays prepared on the old master and is committed on the new one.
#[test]
fn fenced_master_does_not_decide_prepared_transactions() {
    let cluster = keeper_cluster_netns("part-2pc", 2, None, &[KT, KC, "max_prepared_transactions = 5"]);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    n1.execute(WRITES_TABLE).unwrap();
    wait_title(n2, "standby (connected to node1)").unwrap();
    n1.execute("BEGIN; INSERT INTO pgk_writes (id) VALUES (1); PREPARE TRANSACTION 'pgk_2pc'").unwrap();
    wait_replayed(n1, n2).unwrap();
    cluster.isolate("node1").unwrap();
    wait_until(PATIENCE, || n2.is_in_recovery().ok() == Some(false)).expect("node2 promoted");
    // Fenced (or already deposed): refused, after waiting at most the gate's limit.
    let err = format!("{:#}", n1.execute("COMMIT PREPARED 'pgk_2pc'").unwrap_err());
    assert!(err.contains("fenced") || err.contains("no longer the master"), "{err}");
    cluster.heal_all().unwrap();
    wait_log(n1, "was elected master in term").unwrap();
    let err = format!("{:#}", n1.execute("ROLLBACK PREPARED 'pgk_2pc'").unwrap_err());
    assert!(err.contains("no longer the master"), "{err}");
    let prepared = "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'pgk_2pc'";
    assert_eq!(n1.query_one(prepared).unwrap().as_deref(), Some("1"), "the old master decided it");
    assert_eq!(n1.query_one("SELECT count(*) FROM pgk_writes").unwrap().as_deref(), Some("0"));
    // The new master decides: committed there, the row exists.
    assert_eq!(n2.query_one(prepared).unwrap().as_deref(), Some("1"));
    n2.execute("COMMIT PREPARED 'pgk_2pc'").unwrap();
    assert_eq!(n2.query_one("SELECT count(*) FROM pgk_writes WHERE id = 1").unwrap().as_deref(), Some("1"));
}

/// The next master is behind another standby (asynchronous replication, node2 cut from the
/// master while node3 keeps receiving); then the master dies. node3 refuses to vote for the
/// behind node2, node2 yields to node3, and node3 is elected: nothing node3 had is lost, and
/// node2 (behind, so able to follow) streams from it.
#[test]
fn the_most_advanced_standby_is_elected() {
    let cluster = keeper_cluster_netns("part-ahead", 2, None, &[KT, KC]);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    wait_title(n2, "standby (connected to node1)").unwrap();
    cluster.cut("node1", "node2").unwrap();
    n1.execute("CREATE TABLE ahead AS SELECT g FROM generate_series(1, 1000) g").unwrap();
    wait_replayed(n1, n3).unwrap();
    n1.kill9();
    wait_until(PATIENCE, || n3.is_in_recovery().ok() == Some(false)).expect("node3 elected");
    assert!(n2.is_in_recovery().unwrap(), "the behind node2 promoted");
    assert_eq!(n3.query_one("SELECT count(*) FROM ahead").unwrap().as_deref(), Some("1000"));
    // node2 either stood first and yielded, or node3 stood first and got node2's vote.
    let log2 = n2.log_contents();
    assert!(log2.contains("node3 has more WAL") || log2.contains("voted for node3"), "{}", n2.log_tail(30));
    wait_until(PATIENCE, || streams_from(n3, "node2")).expect("node2 follows node3");
    assert_eq!(writable(&cluster), vec!["node3".to_string()]);
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
    wait_log(n1, "was elected master in term").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let acked = writer.stop();
    let have = rows(n2);
    let lost: Vec<_> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "writes acknowledged by the old master are missing on node2: {lost:?}");
    assert!(!acked.is_empty());
    assert!(!n1.log_contents().contains("synchronous replication degraded"));
}

/// Probe every node with a real write, many times, while `during` runs: never two nodes
/// acknowledge in one probe. Returns the number of probes.
fn at_most_one_writable(cluster: &Cluster, during: impl FnOnce() + Send) -> usize {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut probes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let w = writable_by_write(cluster);
                assert!(w.len() <= 1, "two nodes acknowledged writes in the same probe: {w:?}");
                probes += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            probes
        });
        // (stop the prober even when `during` fails, or the scope would wait for it forever)
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(during));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let probes = prober.join().expect("prober");
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
        probes
    })
}

/// One-way partition: the master can send but receives nothing from the standbys. New
/// connections fail both ways, the old streams stall: a standby is elected (node2, or node3 if
/// it received more WAL); never two writable.
#[test]
fn one_way_partition_never_two_writable() {
    let cluster = keeper_cluster_netns("part-oneway", 2, None, &[KT, KC]);
    let n2 = cluster.node("node2");
    wait_title(n2, "standby (connected to node1)").unwrap();
    let probes = at_most_one_writable(&cluster, || {
        cluster.cut_oneway("node2", "node1").unwrap();
        cluster.cut_oneway("node3", "node1").unwrap();
        let promoted = || ["node2", "node3"].iter().any(|n| cluster.node(n).is_in_recovery().ok() == Some(false));
        wait_until(PATIENCE, promoted).expect("a standby elected");
        std::thread::sleep(Duration::from_secs(3));
    });
    assert!(probes >= 10, "{probes} probes");
    let w = writable_by_write(&cluster);
    assert!(w == ["node2"] || w == ["node3"], "{w:?}");
}

/// A flapping link: the master loses and regains the network every second or two. Whatever
/// happens (failovers or not), never two writable nodes; once stable, exactly one.
#[test]
fn flapping_master_link_never_two_writable() {
    let cluster = keeper_cluster_netns("part-flap", 2, None, &[KT, "pg_keeper.keepalive_count = 2"]);
    wait_title(cluster.node("node2"), "standby (connected to node1)").unwrap();
    let probes = at_most_one_writable(&cluster, || {
        for i in 0..8u64 {
            let master = cluster.current_primary().map(|n| n.name().to_string()).unwrap_or("node1".into());
            cluster.isolate(&master).unwrap();
            std::thread::sleep(Duration::from_millis(1200 + 300 * (i % 4)));
            cluster.heal_all().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
        }
    });
    assert!(probes >= 20, "{probes} probes");
    wait_until(PATIENCE, || writable_by_write(&cluster).len() == 1).expect("exactly one writable node in the end");
}
