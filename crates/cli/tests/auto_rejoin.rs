//! Issue 2/7 item 3: the old master rejoins by itself (`pg_keeper.auto_rejoin`), with
//! pg_rewind, and the cluster then survives a second failure.

use keeper_integration::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

fn conf() -> Vec<String> {
    vec![
        "pg_keeper.keepalive_time = 1".into(),
        "pg_keeper.keepalive_count = 2".into(),
        "pg_keeper.auto_rejoin = on".into(),
        format!("pg_keeper.pgkeeper_program = '{}'", env!("CARGO_BIN_EXE_pgkeeper")),
    ]
}

/// A multi-host URI over every node, for a writer that follows the master.
fn uri(cluster: &Cluster) -> String {
    let hosts: Vec<String> = cluster.nodes().iter().map(|n| format!("{}:{}", n.addr(), n.port())).collect();
    format!("postgresql://postgres@{}/postgres?target_session_attrs=read-write&connect_timeout=1", hosts.join(","))
}

fn master_of(cluster: &Cluster, among: &[&str]) -> Option<String> {
    among.iter().find(|n| cluster.node(n).is_in_recovery().ok() == Some(false)).map(|n| n.to_string())
}

#[test]
fn killed_master_started_again_rejoins_by_itself_and_the_cluster_fails_over_again() {
    let conf = conf();
    let conf: Vec<&str> = conf.iter().map(String::as_str).collect();
    let cluster = keeper_cluster("ar-kill", 2, Some("FIRST 1 (node2, node3, node1)"), &conf);
    let n1 = cluster.node("node1");
    for n in ["node2", "node3"] {
        wait_title(cluster.node(n), "standby (connected to node1)").unwrap();
    }
    n1.execute(WRITES_TABLE).unwrap();
    let writer = Writer::start(&uri(&cluster), Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(2));
    n1.kill9();
    wait_until(PATIENCE, || master_of(&cluster, &["node2", "node3"]).is_some()).expect("a new master");
    let first = master_of(&cluster, &["node2", "node3"]).unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // The old master comes back: deposed, it turns itself into a standby of the new master.
    let started = Instant::now();
    n1.start().unwrap();
    wait_until(Duration::from_secs(120), || streams_from(cluster.node(&first), "node1"))
        .unwrap_or_else(|_| panic!("node1 rejoins by itself:\n{}", n1.log_tail(60)));
    let rejoin_s = started.elapsed().as_secs_f64();
    wait_until(PATIENCE, || n1.log_contents().contains("is a standby of")).expect("the helper reports its outcome");
    let log = n1.log_contents();
    assert!(log.contains("rejoining it automatically"), "{}", n1.log_tail(60));
    assert!(
        log.contains("is a standby of") && log.contains("(pg_rewind;"),
        "rewound, no base backup:\n{}",
        n1.log_tail(60)
    );
    assert!(!log.contains("pg_basebackup from the master"), "{}", n1.log_tail(60));
    let outcome = std::fs::read_to_string(n1.data_dir().join("pg_keeper.node1.rejoin")).unwrap_or_default();
    assert!(outcome.starts_with("ok "), "{outcome}");
    assert!(n1.is_in_recovery().unwrap());
    // node_info and status agree: node1 is a standby, the new master is the master.
    wait_until(PATIENCE, || node_info(cluster.node(&first)).iter().any(|r| r.1 == first && r.2 == "t"))
        .expect("node_info names the new master");
    let o = Command::new(env!("CARGO_BIN_EXE_pgkeeper"))
        .args(["status", &cluster.node(&first).conninfo()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    let row1 = table.lines().find(|l| l.starts_with("node1")).unwrap_or_default().to_string();
    assert!(row1.contains("standby") && !row1.contains("unreachable"), "{table}");
    eprintln!("auto-rejoin: node1 streamed from {first} {rejoin_s:.1} s after its start");

    // The second failure: the new master killed; another node is elected.
    std::thread::sleep(Duration::from_secs(3));
    let killed_at = Instant::now();
    cluster.node(&first).kill9();
    let others: Vec<&str> = ["node1", "node2", "node3"].into_iter().filter(|n| *n != first).collect();
    wait_until(PATIENCE, || master_of(&cluster, &others).is_some()).expect("a second failover");
    let second = master_of(&cluster, &others).unwrap();
    let failover_s = killed_at.elapsed().as_secs_f64();
    eprintln!("second failover: {second} writable {failover_s:.1} s after {first} was killed");
    std::thread::sleep(Duration::from_secs(3));
    let acked = writer.stop();
    let have: BTreeSet<i64> = rows(cluster.node(&second)).into_iter().collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged rows missing on {second}", lost.len());
    assert!(acked.len() > 50, "the writer went on ({} rows)", acked.len());
}

/// Issue 2/7 item 5: five nodes under `FIRST 1` over every node, a writer, the master frozen
/// until a standby is elected, ten times. After each failover every other standby streams
/// from the new master with no rejoin (the winner fetches WAL a standby has beyond it), and
/// the old master, thawed and deposed, rejoins by itself with pg_rewind every time.
#[test]
fn ten_freeze_failovers_leave_nobody_behind() {
    let conf = conf();
    let conf: Vec<&str> = conf.iter().map(String::as_str).collect();
    let cluster = keeper_cluster("ar-ten", 4, Some("FIRST 1 (node2, node3, node4, node5, node1)"), &conf);
    let all = ["node1", "node2", "node3", "node4", "node5"];
    for n in &all[1..] {
        wait_title(cluster.node(n), "standby (connected to node1)").unwrap();
    }
    cluster.node("node1").execute(WRITES_TABLE).unwrap();
    let writer = Writer::start(&uri(&cluster), Duration::from_millis(10));
    let mut master = "node1".to_string();
    let (mut failovers, mut rejoins) = (Vec::new(), Vec::new());
    for round in 1..=10 {
        std::thread::sleep(Duration::from_secs(2));
        let old = cluster.node(&master);
        let others: Vec<&str> = all.iter().copied().filter(|n| *n != master).collect();
        let cannot_follow: Vec<usize> =
            others.iter().map(|n| log_lines(cluster.node(n), "cannot follow new master").len()).collect();
        let rewinds_before = log_lines(old, "is a standby of").len();
        let frozen_at = Instant::now();
        old.sigstop();
        wait_until(PATIENCE, || master_of(&cluster, &others).is_some())
            .unwrap_or_else(|_| panic!("round {round}: nobody elected while {master} is frozen"));
        let new = master_of(&cluster, &others).unwrap();
        failovers.push(frozen_at.elapsed().as_secs_f64());
        old.sigcont();
        let thawed_at = Instant::now();
        for s in others.iter().filter(|n| **n != new) {
            wait_until(PATIENCE, || streams_from(cluster.node(&new), s))
                .unwrap_or_else(|_| panic!("round {round}: {s} streams from {new}:\n{}", cluster.node(s).log_tail(30)));
        }
        for (s, before) in others.iter().zip(&cannot_follow) {
            let now = log_lines(cluster.node(s), "cannot follow new master").len();
            assert_eq!(now, *before, "round {round}: {s} was left behind:\n{}", cluster.node(s).log_tail(30));
        }
        wait_until(Duration::from_secs(120), || {
            streams_from(cluster.node(&new), &master) && log_lines(old, "is a standby of").len() > rewinds_before
        })
        .unwrap_or_else(|_| panic!("round {round}: {master} rejoins by itself:\n{}", old.log_tail(60)));
        rejoins.push(thawed_at.elapsed().as_secs_f64());
        let last = log_lines(old, "is a standby of").pop().unwrap();
        assert!(last.contains("(pg_rewind;"), "round {round}: {last}");
        eprintln!(
            "round {round}: {master} frozen, {new} elected after {:.1} s; {master} rejoined in {:.1} s",
            failovers.last().unwrap(),
            rejoins.last().unwrap()
        );
        master = new;
    }
    std::thread::sleep(Duration::from_secs(2));
    let acked = writer.stop();
    let have: BTreeSet<i64> = rows(cluster.node(&master)).into_iter().collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged rows missing on {master}", lost.len());
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    eprintln!(
        "10 freeze failovers: elected after median {:.1} s; old master rejoined (pg_rewind 10 of 10) after median {:.1} s; {} rows acknowledged, none lost",
        median(&mut failovers),
        median(&mut rejoins),
        acked.len()
    );
}

/// When pg_rewind cannot be used (neither wal_log_hints nor data checksums), the automatic
/// rejoin changes nothing: the old master is started again as it was, stays deposed (no
/// commit, no client session), and its status says why; it does not try again by itself.
#[test]
fn an_old_master_that_cannot_be_rewound_stays_deposed_and_says_why() {
    let mut conf = conf();
    conf.push("wal_log_hints = off".into());
    let conf: Vec<&str> = conf.iter().map(String::as_str).collect();
    let cluster = keeper_cluster("ar-norewind", 2, None, &conf);
    let n1 = cluster.node("node1");
    for n in ["node2", "node3"] {
        wait_title(cluster.node(n), "standby (connected to node1)").unwrap();
    }
    n1.kill9();
    wait_until(PATIENCE, || master_of(&cluster, &["node2", "node3"]).is_some()).expect("a new master");
    n1.start().unwrap();
    let state = || n1.query_one("SELECT state FROM pgkeeper.status()").ok().flatten().unwrap_or_default();
    wait_until(Duration::from_secs(120), || state().contains("automatic rejoin failed"))
        .unwrap_or_else(|_| panic!("{}\n{}", state(), n1.log_tail(40)));
    let s = state();
    assert!(s.contains("wal_log_hints"), "{s}");
    assert!(!n1.is_in_recovery().unwrap(), "started again as it was");
    let outcome = std::fs::read_to_string(n1.data_dir().join("pg_keeper.node1.rejoin")).unwrap_or_default();
    assert!(outcome.starts_with("failed "), "{outcome}");
    let e = format!("{:#}", n1.execute("CREATE TABLE after_failed_rejoin (id int)").unwrap_err());
    assert!(e.contains("no longer the master"), "{e}");
    // Not retried: one attempt in the log after a while.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(log_lines(n1, "rejoining it automatically").len(), 1, "{}", n1.log_tail(40));
}
