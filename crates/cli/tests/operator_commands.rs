//! The operator's commands added with the HTTP endpoints (issue 6/7) on real clusters:
//! `pause` / `resume` (cluster-wide, replicated), `failover --to` (and its refusal while a
//! healthy master holds its lease), `failover --force` on a cluster that cannot elect,
//! `clone` growing a 3-node cluster to 4 with the new node voting in the next election,
//! `history` after a failover, a switchover and a degrade/restore read from every node,
//! `uri --keyvalue`.

use keeper_integration::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn pgkeeper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgkeeper")).args(args).output().expect("run pgkeeper")
}

fn pgkeeper_stdin(args: &[&str], input: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgkeeper"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgkeeper");
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn ok(o: Output, what: &str) -> String {
    let (out, err) = text(&o);
    assert!(o.status.success(), "{what} failed:\n{out}\n{err}");
    eprintln!("{what}:\n{out}{err}");
    out
}

/// The events `pgkeeper.history()` returns on `n`: "node event" per row.
fn history_on(n: &Node) -> Vec<String> {
    n.query("SELECT node_name || ' ' || event FROM pgkeeper.history()")
        .unwrap()
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect()
}

fn paused_on(n: &Node) -> bool {
    n.query_one("SELECT paused FROM pgkeeper.status()").unwrap().as_deref() == Some("t")
}

#[test]
fn pause_resume_and_failover_to() {
    let cluster = keeper_cluster(
        "cli-pause",
        2,
        Some("FIRST 1 (node2, node3)"),
        &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 2"],
    );
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).unwrap();
    wait_until(PATIENCE, || commit_gate(n1) == "open").unwrap();

    // uri --keyvalue: a conninfo libpq connects with, to the master.
    let kv = ok(pgkeeper(&["uri", "--keyvalue", &n3.conninfo()]), "uri --keyvalue").trim().to_string();
    assert!(kv.contains("host=127.0.0.1,127.0.0.1,127.0.0.1") && kv.contains("target_session_attrs=read-write"), "{kv}");
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut c = keeper_pq::Conn::connect(&kv, &[], until).expect("connect with the key=value form");
    let rec: bool = c.query_one("SELECT pg_is_in_recovery()", &[], until).unwrap().get(0);
    assert!(!rec);

    // A healthy master holds its lease: failover --to refuses, nothing changes.
    let o = pgkeeper(&["failover", "--to", "node2", &n1.conninfo()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("node1 is the master and holds its lease"), "{err}");
    assert!(n2.is_in_recovery().unwrap());

    // pause: written on the master, seen by every node, in status and the table.
    ok(pgkeeper(&["pause", "--reason", "kernel upgrade", &n2.conninfo()]), "pause");
    for n in [n1, n2, n3] {
        assert!(paused_on(n), "{} paused", n.name());
    }
    let table = ok(pgkeeper(&["status", &n1.conninfo()]), "status");
    assert!(table.contains("PAUSED: automatic failover is paused cluster-wide"), "{table}");
    // Survives a restart (a table, not shared memory).
    n3.restart().unwrap();
    wait_until(PATIENCE, || paused_on(n3)).expect("node3 paused after its restart");

    // The master killed while paused: no standby promotes by itself.
    n1.kill9_all();
    std::thread::sleep(Duration::from_secs(8));
    assert!(n2.is_in_recovery().unwrap() && n3.is_in_recovery().unwrap(), "a standby promoted while paused");
    wait_log(n2, "paused cluster-wide").unwrap();

    // The operator picks node2 (the synchronous standby: node3 may not be elected, it may
    // lack acknowledged commits).
    let out = ok(pgkeeper(&["failover", "--to", "node2", &n3.conninfo()]), "failover --to node2");
    assert!(out.contains("failover done: node2 is the master"), "{out}");
    assert!(!n2.is_in_recovery().unwrap());
    wait_until(PATIENCE, || commit_gate(n2) == "open").expect("node2 takes writes");
    // Still paused (the mode is in the replicated table), until resume on the new master.
    assert!(paused_on(n2));
    ok(pgkeeper(&["resume", &n3.conninfo()]), "resume");
    wait_until(PATIENCE, || !paused_on(n2) && !paused_on(n3)).expect("resumed everywhere");

    // The history, read from both nodes that are up.
    let want = ["node1 paused", "node2 election won", "node2 failover", "node2 resumed"];
    for n in [n2, n3] {
        wait_until(PATIENCE, || {
            let h = history_on(n);
            want.iter().all(|e| h.iter().any(|x| x == e))
        })
        .unwrap_or_else(|e| panic!("{e}: {} has {:?}", n.name(), history_on(n)));
    }
    let v: serde_json::Value =
        serde_json::from_str(&ok(pgkeeper(&["history", "--json", &n3.conninfo()]), "history --json")).unwrap();
    let fail = v["events"].as_array().unwrap().iter().find(|e| e["event"] == "failover").expect("a failover event");
    assert!(fail["reason"].as_str().unwrap().contains("pgkeeper failover --to node2"), "{fail}");
    assert_eq!(fail["nodes"], serde_json::json!(["node1", "node2"]));
    assert!(v["unreachable"].as_array().unwrap().iter().any(|u| u["name"] == "node1"), "{v}");
}

#[test]
fn failover_force_on_a_cluster_that_cannot_elect() {
    let cluster = keeper_cluster("cli-force", 2, None, &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 2"]);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).unwrap();
    n1.execute(WRITES_TABLE).unwrap();
    n1.execute("INSERT INTO pgk_writes (id) VALUES (1)").unwrap();
    wait_replayed(n1, n2).unwrap();
    // Refused while the nodes named answer, or when the master is not among them; nothing
    // changes.
    let refused = |sql: &str| n2.query(sql).err().map(|e| format!("{e:#}")).unwrap_or_default();
    let e = refused("SELECT pgkeeper._force_failover(ARRAY['node1', 'node3'])");
    assert!(e.contains("node1 answers this node: it is not gone"), "{e}");
    let e = refused("SELECT pgkeeper._force_failover(ARRAY['node3'])");
    assert!(e.contains("the master in node_info, node1, is not among the removed nodes"), "{e}");
    let e = refused("SELECT pgkeeper._force_failover(ARRAY['node2'])");
    assert!(e.contains("cannot be one of the removed"), "{e}");
    let e = refused("SELECT pgkeeper._force_failover(ARRAY['nodeX'])");
    assert!(e.contains("\"nodeX\" is not in node_info"), "{e}");
    let e = refused("SELECT pgkeeper._force_failover(NULL)");
    assert!(e.contains("must not be NULL"), "{e}");
    assert!(n2.is_in_recovery().unwrap());
    assert!(!n2.data_dir().join("pg_keeper.node2.forced").exists());
    // Two of three gone: node2 cannot be elected.
    n1.kill9_all();
    n3.stop_immediate().unwrap();
    let o = pgkeeper(&["failover", "--to", "node2", "--wait", "8", &n2.conninfo()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(n2.is_in_recovery().unwrap());
    // --force says what may be lost and asks; a wrong answer changes nothing.
    let o = pgkeeper_stdin(&["failover", "--to", "node2", "--force", &n2.conninfo()], "no\n");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("FORCED FAILOVER to node2") && err.contains("node1, node3"), "{err}");
    assert!(err.contains("not confirmed"), "{err}");
    assert!(n2.is_in_recovery().unwrap());
    // --yes is a usage error without --force.
    assert_eq!(pgkeeper(&["failover", "--to", "node2", "--yes"]).status.code(), Some(2));

    let out = ok(pgkeeper(&["failover", "--to", "node2", "--force", "--yes", &n2.conninfo()]), "failover --force");
    assert!(out.contains("forced failover done: node2 is the master"), "{out}");
    // It takes writes, keeps what it had, and node_info is the nodes that answered.
    wait_until(PATIENCE, || commit_gate(n2) == "open").unwrap_or_else(|e| panic!("{e}\n{}", n2.log_tail(30)));
    n2.execute("INSERT INTO pgk_writes (id) VALUES (2)").unwrap();
    assert_eq!(rows(n2), vec![1, 2]);
    wait_until(PATIENCE, || node_info(n2).iter().map(|r| r.1.clone()).collect::<Vec<_>>() == vec!["node2".to_string()])
        .unwrap_or_else(|e| panic!("{e}: {:?}", node_info(n2)));
    assert!(history_on(n2).iter().any(|e| e == "node2 forced failover"), "{:?}", history_on(n2));
    // Done: the record is gone once node_info no longer has the removed nodes.
    wait_until(PATIENCE, || !n2.data_dir().join("pg_keeper.node2.forced").exists()).unwrap();
    // Refusals: on a master, naming itself, a node not gone.
    let o = pgkeeper(&["failover", "--to", "node2", "--force", "--yes", &n2.conninfo()]);
    assert_eq!(o.status.code(), Some(1));
}

/// Stops a server the harness does not know (the clone) at the end, whatever happens.
struct Stop(std::path::PathBuf);
impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(keeper_harness::pg_bindir().join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.0)
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn clone_grows_the_cluster_and_the_new_node_votes() {
    let cluster = keeper_cluster("cli-clone", 2, None, &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 2"]);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).unwrap();
    let dir = cluster.base_dir().join("node4");
    let pgdata = dir.join("data");
    let port = free_port();
    let _stop = Stop(pgdata.clone());
    // Argument errors first: exit code 2.
    assert_eq!(pgkeeper(&["clone", "--from", &n2.conninfo(), "--name", "node4"]).status.code(), Some(2));
    let out = ok(
        pgkeeper(&[
            "clone",
            "--from",
            &n2.conninfo(),
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--name",
            "node4",
            "--port",
            &port.to_string(),
        ]),
        "clone",
    );
    assert!(out.contains("node4 is a standby of node1 and registered"), "{out}");
    assert!(streams_from(n1, "node4"));
    assert_eq!(node_info(n1).len(), 4);
    // Again: refused, the name is taken.
    let o = pgkeeper(&["clone", "--from", &n2.conninfo(), "--pgdata", "/tmp/pgk-nope", "--name", "node4", "--port", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("already in node_info"));
    let node4 = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let n4 = |sql: &str| -> Option<String> {
        let until = std::time::Instant::now() + Duration::from_secs(3);
        let mut c = keeper_pq::Conn::connect(&node4, &[], until).ok()?;
        c.query_one(sql, &[], until).ok().map(|r| r.get::<String>(0))
    };
    wait_until(PATIENCE, || n4("SELECT mode FROM pgkeeper.status()").as_deref() == Some("standby"))
        .expect("node4's worker in standby mode");
    wait_until(PATIENCE, || n4("SELECT count(*)::text FROM pgkeeper.node_info").as_deref() == Some("4")).unwrap();

    // Four nodes: a majority is three. node1 and node3 down leaves node2 and node4, which
    // cannot elect; node3 back, the three of them elect: node4's vote counts.
    n1.kill9_all();
    n3.stop_immediate().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert!(n2.is_in_recovery().unwrap(), "two of four elected a master");
    n3.start().unwrap();
    let node4_master = || n4("SELECT (NOT pg_is_in_recovery())::text").as_deref() == Some("true");
    wait_until(PATIENCE, || !n2.is_in_recovery().unwrap_or(true) || !n3.is_in_recovery().unwrap_or(true) || node4_master())
        .unwrap_or_else(|e| {
            let log4 = std::fs::read_to_string(pgdata.join("pgkeeper-clone.log")).unwrap_or_default();
            let tail4: Vec<&str> = log4.lines().rev().take(30).collect();
            panic!(
                "a new master elected by node2, node3 and node4: {e}\n--- node2\n{}\n--- node3\n{}\n--- node4\n{}",
                n2.log_tail(30),
                n3.log_tail(30),
                tail4.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        });
    // Three votes of four nodes: node4's was one of them (its record names the winner), or it
    // won itself.
    let voted = std::fs::read_to_string(pgdata.join("pg_keeper.node4.vote")).unwrap_or_default();
    assert!(["node2", "node3", "node4"].iter().any(|w| voted.contains(&format!("voted_for {w}"))), "node4's vote record: {voted}");
    if node4_master() {
        assert!(voted.contains("voted_for node4"), "{voted}");
        let streaming = || {
            n4("SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_replication WHERE state = 'streaming'")
        };
        wait_until(PATIENCE, || streaming().as_deref() == Some("node2,node3")).unwrap_or_else(|e| panic!("{e}: {:?}", streaming()));
    } else {
        let master = if n2.is_in_recovery().unwrap() { n3 } else { n2 };
        wait_until(PATIENCE, || streams_from(master, "node4")).expect("node4 follows the new master");
    }
}

/// The history of a degrade and restore, a failover, a rejoin and a switchover, read from
/// every node (the replicated table), and the whole of it (each node's own log too) from
/// `pgkeeper history`.
#[test]
fn history_from_every_node() {
    let cluster = keeper_cluster(
        "cli-history",
        2,
        Some("FIRST 1 (node2)"),
        &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 2", "wal_log_hints = on"],
    );
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).unwrap();
    // The synchronous standby stopped: degraded (node3 still answers: a majority); started
    // again: restored.
    n2.stop().unwrap();
    wait_log(n1, "synchronous replication degraded").unwrap();
    n2.start().unwrap();
    wait_log(n1, "synchronous replication restored").unwrap();
    wait_until(PATIENCE, || history_on(n1).iter().any(|e| e == "node1 restored")).unwrap();
    wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).unwrap();
    // Failover.
    n1.kill9_all();
    wait_until(PATIENCE, || !n2.is_in_recovery().unwrap_or(true) || !n3.is_in_recovery().unwrap_or(true)).unwrap();
    let (new, other) = if n2.is_in_recovery().unwrap() { (n3, n2) } else { (n2, n3) };
    wait_until(PATIENCE, || commit_gate(new) == "open").unwrap();
    // node1 back: deposed (its own log), then rejoined.
    n1.start().unwrap();
    wait_log(n1, "was elected master in term").unwrap();
    ok(
        pgkeeper(&["rejoin", "--pgdata", n1.data_dir().to_str().unwrap(), "--name", "node1", &new.conninfo()]),
        "rejoin node1",
    );
    wait_until(PATIENCE, || streams_from(new, "node1")).unwrap();
    // Switchover back to node1: it becomes master and copies its own log (deposed, rejoined).
    ok(
        pgkeeper(&["switchover", "--to", "node1", "--pgdata", new.data_dir().to_str().unwrap(), &new.conninfo()]),
        "switchover to node1",
    );
    wait_until(PATIENCE, || commit_gate(n1) == "open").unwrap();
    let replicated = ["node1 degraded", "node1 restored", "election won", "failover", "node1 switchover", "node1 deposed", "node1 rejoined"];
    for n in [n1, n2, n3] {
        wait_until(PATIENCE, || {
            let h = history_on(n);
            replicated.iter().all(|e| h.iter().any(|x| x.ends_with(e) || x.contains(e)))
        })
        .unwrap_or_else(|e| panic!("{e}: {} has {:?}", n.name(), history_on(n)));
    }
    let table = ok(pgkeeper(&["history", &other.conninfo()]), "history");
    for e in ["degraded", "restored", "election won", "failover", "deposed", "rejoined", "stepped down", "switchover"] {
        assert!(table.contains(e), "{e} in\n{table}");
    }
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("TIME (UTC)") && header.contains("REASON"), "{header}");
}
