//! Issue 2/7 item 4: clients never stick to a deposed master. After a freeze-and-thaw
//! failover the old master is back, deposed, and listed first (node_info order); libpq with
//! `target_session_attrs=read-write` and `=primary` must reach the new master and commit.
//! Clients here are psql (libpq itself), as applications would be.

use keeper_integration::*;
use std::process::Command;
use std::time::Duration;

fn pgkeeper(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgkeeper")).args(args).output().expect("run pgkeeper")
}

/// Insert `id` through libpq with `conninfo`; the port of the server that committed it.
fn psql_insert(conninfo: &str, id: i64) -> Result<String, String> {
    let o = Command::new(keeper_harness::pg_bindir().join("psql"))
        .args([conninfo, "-XAtqc"])
        .arg(format!("INSERT INTO pgk_writes (id) VALUES ({id}) RETURNING inet_server_port()"))
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// node1 frozen until a standby is elected, then thawed: it is deposed. The new master.
fn freeze_and_thaw_failover(cluster: &Cluster) -> &'static str {
    let n1 = cluster.node("node1");
    for n in ["node2", "node3"] {
        wait_title(cluster.node(n), "standby (connected to node1)").unwrap();
    }
    n1.execute(WRITES_TABLE).unwrap();
    n1.sigstop();
    let elected = || ["node2", "node3"].into_iter().find(|n| cluster.node(n).is_in_recovery().ok() == Some(false));
    wait_until(PATIENCE, || elected().is_some()).expect("a standby elected");
    n1.sigcont();
    wait_log(n1, "was elected master in term").unwrap();
    elected().unwrap()
}

#[test]
fn clients_skip_a_deposed_master_listed_first() {
    let cluster =
        keeper_cluster("rt-deposed", 2, None, &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 2"]);
    let n1 = cluster.node("node1");
    let new = freeze_and_thaw_failover(&cluster);
    let new_port = cluster.node(new).port().to_string();

    let o = pgkeeper(&["uri", &cluster.node(new).conninfo()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let uri = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(uri.contains(&format!("{}:{},", n1.addr(), n1.port())), "the old master is listed first: {uri}");
    let hosts = ["node1", "node2", "node3"].map(|n| cluster.node(n).addr().to_string()).join(",");
    let ports = ["node1", "node2", "node3"].map(|n| cluster.node(n).port().to_string()).join(",");
    let mut id = 0;
    for attrs in ["read-write", "primary"] {
        let by_uri = uri.replace("target_session_attrs=read-write", &format!("target_session_attrs={attrs}"));
        let by_kv = format!("host={hosts} port={ports} user=postgres dbname=postgres target_session_attrs={attrs}");
        for conninfo in [by_uri, by_kv] {
            id += 1;
            let port = psql_insert(&conninfo, id).unwrap_or_else(|e| panic!("{conninfo}: {e}"));
            assert_eq!(port, new_port, "{conninfo} committed on the new master");
        }
    }
    assert_eq!(rows(cluster.node(new)).len(), 4);
    // The old master itself says why it refuses, and stays reachable for the operator's tools.
    let e = psql_insert(&n1.conninfo(), 99).unwrap_err();
    assert!(e.contains("no longer the master") && e.contains(new), "{e}");
    let o = pgkeeper(&["status", &n1.conninfo()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("deposed"), "{out}{}", String::from_utf8_lossy(&o.stderr));
    // status's enum columns: what tools match on instead of the free-text state. Their SQL
    // enums list exactly keeper-core's values.
    let row = n1
        .query(
            "SELECT gate::text, attention::text, \
                    array_to_string(enum_range(NULL::pgkeeper.gate), ','), \
                    array_to_string(enum_range(NULL::pgkeeper.attention), ',') FROM pgkeeper.status()",
        )
        .unwrap();
    let col = |i: usize| row[0][i].clone().unwrap_or_default();
    assert_eq!((col(0).as_str(), col(1).as_str()), ("deposed", "needs_rejoin"));
    let gates: Vec<&str> = keeper_core::gate::GateKind::ALL.iter().map(|k| k.as_str()).collect();
    let attention: Vec<&str> = keeper_core::gate::Attention::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!((col(2), col(3)), (gates.join(","), attention.join(",")));
    let gate =
        |n: &str| cluster.node(n).query_one("SELECT gate::text FROM pgkeeper.status()").unwrap().unwrap_or_default();
    assert_eq!(gate(new), "open");
    std::thread::sleep(Duration::from_millis(10));
}

/// A deposed master that restarts while the new master is down stays deposed: it refuses
/// clients and commits from its start, though nobody tells it again (the deposition is on
/// disk, `$PGDATA/pg_keeper.<node>.deposed`).
#[test]
fn a_deposed_master_restarted_alone_stays_deposed() {
    let cluster =
        keeper_cluster("rt-restart", 2, None, &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 2"]);
    let n1 = cluster.node("node1");
    let new = freeze_and_thaw_failover(&cluster);
    // The new master and the other standby go down; the old master restarts alone.
    for n in ["node2", "node3"] {
        cluster.node(n).kill9();
    }
    n1.kill9();
    n1.start().unwrap();
    let e = psql_insert(&n1.conninfo(), 1).unwrap_err();
    assert!(e.contains("no longer the master") && e.contains(new), "{e}");
    let commits = n1.query_one("SELECT commits FROM pgkeeper.status()").unwrap().unwrap_or_default();
    assert!(commits.starts_with("deposed by"), "{commits}");
    let e = format!("{:#}", n1.execute("CREATE TABLE after_restart (id int)").unwrap_err());
    assert!(e.contains("no longer the master"), "{e}");
}
