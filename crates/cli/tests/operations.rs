//! The operator's commands on real clusters: `pgkeeper status` (table and JSON, healthy,
//! with a standby down, after a failover), `pgkeeper rejoin` (pg_rewind and base backup),
//! `pgkeeper uri`, and their refusals.

use keeper_integration::*;
use std::process::{Command, Output};
use std::time::Duration;

fn pgkeeper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgkeeper")).args(args).output().expect("run pgkeeper")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no row {name} in\n{table}"))
}

#[test]
fn status_table_json_and_uri() {
    let cluster = keeper_cluster("cli-status", 2, Some("node2"), &["pg_keeper.keepalive_time = 1"]);
    let m = cluster.node("node1");
    wait_title(cluster.node("node3"), "standby (connected to node1)").unwrap();
    wait_until(PATIENCE, || streams_from(m, "node2") && streams_from(m, "node3")).unwrap();

    let o = pgkeeper(&["status", &m.conninfo()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(row(&out, "node1").contains("master"), "{out}");
    assert!(row(&out, "node2").contains("sync standby"), "{out}");
    assert!(row(&out, "node2").contains("yes"), "next master\n{out}");
    assert!(row(&out, "node3").contains(" standby"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");

    let o = pgkeeper(&["status", &cluster.node("node3").conninfo(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["nodes"][0]["role"], "master");
    assert_eq!(v["nodes"][1]["role"], "sync standby");
    assert_eq!(v["nodes"][2]["wal_receiver"], "streaming");
    assert_eq!(v["warnings"].as_array().unwrap().len(), 0);

    // The URI reaches the master whichever node is first.
    let o = pgkeeper(&["uri", &cluster.node("node2").conninfo()]);
    let uri = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(uri.contains("target_session_attrs=read-write"), "{uri}");
    let mut c = keeper_harness::postgres::Client::connect(&uri, keeper_harness::postgres::NoTls).expect("connect with the URI");
    let rec: bool = c.query_one("SELECT pg_is_in_recovery()", &[]).unwrap().get(0);
    assert!(!rec);

    // A standby down: still a full report, with a warning, exit code 0.
    cluster.node("node3").stop().unwrap();
    let o = pgkeeper(&["status", &m.conninfo()]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(row(&out, "node3").contains("unreachable"), "{out}");
    assert!(out.contains("WARNING: node3 does not answer"), "{out}");

    // Bad input: exit code 2 and a usage message for arguments, 1 for an unreachable node.
    assert_eq!(pgkeeper(&["status", "host=127.0.0.1 port=1"]).status.code(), Some(1));
    for bad in [
        vec!["frobnicate"],
        vec![],
        vec!["status", "--bogus"],
        vec!["status", "host=a", "host=b"],
        vec!["status", "--watch", "soon", "host=a"],
        vec!["switchover", "--to", "node2", "host=a"],
        vec!["uri", "host=a", "--json"],
        vec!["demo", "--keep", "--stop", "/tmp/x"],
    ] {
        let o = pgkeeper(&bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o).1);
        let e = text(&o).1;
        assert!(e.contains("Usage:") || e.contains("try '--help'"), "{bad:?}: {e}");
    }
    // `--watch 5 CONNINFO`: 5 is the interval, the conninfo the conninfo (it used to be
    // taken as the conninfo): an unreachable node then fails at once with exit code 1.
    let o = pgkeeper(&["status", "--watch", "5", "host=127.0.0.1 port=1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert!(!text(&o).1.contains("invalid conninfo"), "{}", text(&o).1);
    // --help per command and --version.
    let o = pgkeeper(&["status", "--help"]);
    assert!(o.status.success() && text(&o).0.contains("--json") && text(&o).0.contains("--watch"), "{}", text(&o).0);
    let o = pgkeeper(&["rejoin", "--help"]);
    assert!(o.status.success() && text(&o).0.contains("--basebackup"), "{}", text(&o).0);
    let o = pgkeeper(&["--version"]);
    assert!(o.status.success() && text(&o).0.starts_with("pgkeeper "), "{}", text(&o).0);
    // No CONNINFO: libpq's environment says where (here a port nothing listens on).
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pgkeeper"))
        .args(["status"])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("port 1"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// kill -9 of the master, failover to node2, then the old master rejoined by pg_rewind (the
/// harness enables wal_log_hints), or by a new base backup.
fn rejoin_case(name: &str, extra: &[&str]) {
    let cluster =
        keeper_cluster(name, 2, Some("node2"), &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 2"]);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    n1.execute("CREATE TABLE before_failover AS SELECT g FROM generate_series(1, 100) g").unwrap();
    wait_replayed(n1, n2).unwrap();
    // node3 too: a standby that received WAL past the new master's fork point cannot follow
    // it (issue 11 item 5, open); this test is about rejoining the old master.
    wait_replayed(n1, cluster.node("node3")).unwrap();
    n1.kill9();
    wait_until(PATIENCE, || n2.is_in_recovery().ok() == Some(false)).expect("failover");
    // The new master takes commits from its first heartbeat round a majority answers (on a
    // loaded machine that can take longer than the gate's 4 s wait for one commit).
    wait_until(PATIENCE, || commit_gate(n2) == "open").expect("node2's gate opens");
    n2.execute("CREATE TABLE after_failover AS SELECT g FROM generate_series(1, 50) g").unwrap();
    // Status after the failover, asked on the new master: node1 unreachable, node2 master.
    let (out, _) = text(&pgkeeper(&["status", &n2.conninfo()]));
    assert!(row(&out, "node1").contains("unreachable"), "{out}");
    assert!(row(&out, "node2").contains("master"), "{out}");
    assert!(out.contains("WARNING: node1 does not answer"), "{out}");
    // The old master comes back (restarted as it was): it starts fenced, sees node2's newer
    // term and stays deposed; status shows it as an old master that needs a rejoin.
    n1.start().unwrap();
    wait_until(PATIENCE, || {
        let (out, _) = text(&pgkeeper(&["status", &n2.conninfo()]));
        row(&out, "node1").contains("old master") && out.contains("needs rejoin")
    })
    .unwrap_or_else(|_| panic!("{}", text(&pgkeeper(&["status", &n2.conninfo()])).0));
    let err = format!("{:#}", n1.execute("CREATE TABLE on_the_old_master (i int)").unwrap_err());
    assert!(err.contains("no longer the master"), "{err}");

    let mut args = vec!["rejoin", "--pgdata", n1.data_dir().to_str().unwrap(), "--name", "node1"];
    args.extend_from_slice(extra);
    let ci = n2.conninfo();
    args.push(&ci);
    let o = pgkeeper(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "rejoin failed:\n{out}\n{err}");
    assert!(out.contains("node1 is a standby of node2 again"), "{out}");
    assert!(n1.is_in_recovery().unwrap());
    assert!(streams_from(n2, "node1"));
    wait_replayed(n2, n1).unwrap();
    assert_eq!(n1.query_one("SELECT count(*) FROM after_failover").unwrap().as_deref(), Some("50"));
    // node3 sometimes received WAL past node2's fork point and cannot follow it (issue 11
    // item 5, open): the operator's way out, which status prints, is to rejoin it too.
    let n3 = cluster.node("node3");
    std::thread::sleep(std::time::Duration::from_secs(3));
    if text(&pgkeeper(&["status", &n2.conninfo()])).0.contains("node3: cannot follow") {
        println!("node3 cannot follow node2 (issue 11 item 5): rejoining it as well");
        let d3 = n3.data_dir().to_str().unwrap().to_string();
        let o = pgkeeper(&["rejoin", "--pgdata", &d3, "--name", "node3", &ci]);
        assert!(o.status.success(), "rejoin of node3 failed:\n{}\n{}", text(&o).0, text(&o).1);
    }
    // The cluster is whole again: one master, everybody streaming, no warnings.
    wait_until(PATIENCE, || {
        let (out, _) = text(&pgkeeper(&["status", &n2.conninfo()]));
        !out.contains("WARNING") && row(&out, "node1").contains("standby")
    })
    .unwrap_or_else(|_| panic!("{}", text(&pgkeeper(&["status", &n2.conninfo()])).0));
    assert_eq!(writable(&cluster), vec!["node2".to_string()]);
    // Running it on the master is refused.
    let o = pgkeeper(&["rejoin", "--pgdata", n2.data_dir().to_str().unwrap(), "--name", "node2", &ci]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("no other node accepts writes"), "{err}");
}

#[test]
fn rejoin_old_master_with_pg_rewind() {
    rejoin_case("cli-rewind", &[]);
}

#[test]
fn rejoin_old_master_with_basebackup() {
    rejoin_case("cli-basebackup", &["--basebackup"]);
}

#[test]
fn rejoin_refusals() {
    let cluster = keeper_cluster("cli-refuse", 1, None, &["pg_keeper.keepalive_time = 1"]);
    let s = cluster.node("node2");
    let ci = cluster.node("node1").conninfo();
    let o = pgkeeper(&["rejoin", "--pgdata", s.data_dir().to_str().unwrap(), "--name", "nodeX", &ci]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("not in node_info"), "{}", text(&o).1);
    let o = pgkeeper(&["rejoin", "--pgdata", "/nonexistent", "--name", "node2", &ci]);
    assert!(text(&o).1.contains("not a PostgreSQL data directory"));
    assert_eq!(pgkeeper(&["rejoin", "--name", "node2"]).status.code(), Some(2), "--pgdata is required");
    std::thread::sleep(Duration::from_millis(10));
}
