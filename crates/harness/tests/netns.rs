//! Network-namespace mode and partition API (needs root, iproute2, nftables).
//! Run with: cargo test -p keeper-harness -- --test-threads=1

use std::process::Command;
use std::time::Duration;

use keeper_harness::{proc, wait_until, ClusterBuilder};

const PROBE: Duration = Duration::from_secs(2);

fn ip_out(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().expect("ip");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn netns_cluster_partitions() {
    if !keeper_harness::is_root() {
        eprintln!("skipping: netns mode needs root");
        return;
    }
    let cluster = ClusterBuilder::new("netns").standbys(2).netns(true).build().expect("build");
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));

    // ---- addressing
    let ns: Vec<String> = cluster.nodes().iter().map(|n| n.ns().expect("namespace").to_string()).collect();
    assert!(n1.addr().starts_with("10.213."), "{}", n1.addr());
    assert_eq!(n2.conninfo(), format!("host={} port={} user=postgres dbname=postgres", n2.addr(), n2.port()));
    assert!(n1.admin_conninfo().contains(&n1.sock_dir().display().to_string()));
    let auto = std::fs::read_to_string(n2.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains(&format!("host={} ", n1.addr())) && auto.contains("application_name=node2"), "{auto}");
    // the root namespace has no route to the nodes: nothing of ours in it
    let x = n1.addr().split('.').nth(2).unwrap().to_string();
    assert!(!ip_out(&["-o", "addr"]).contains(&format!("10.213.{x}.")));

    // ---- replication works over the namespace addresses
    let rows = n1.query("SELECT application_name, state, client_addr FROM pg_stat_replication ORDER BY 1").unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (r, s) in rows.iter().zip([n2, n3]) {
        assert_eq!(r[0].as_deref(), Some(s.name()));
        assert_eq!(r[1].as_deref(), Some("streaming"));
        assert_eq!(r[2].as_deref(), Some(s.addr()), "walreceiver comes from its namespace");
    }
    n1.execute("CREATE TABLE t(id int primary key, v text); INSERT INTO t VALUES (1, 'hi')").unwrap();
    for s in [n2, n3] {
        wait_until(Duration::from_secs(20), || {
            s.query_one("SELECT v FROM t WHERE id = 1").ok().flatten().as_deref() == Some("hi")
        })
        .unwrap_or_else(|e| panic!("{} did not replicate: {e}", s.name()));
    }

    // ---- cut: node2 <-> node1 black-holed, node3 unaffected
    assert!(cluster.can_connect("node2", "node1", PROBE), "baseline");
    cluster.cut("node1", "node2").unwrap();
    cluster.cut("node1", "node2").unwrap(); // idempotent
    assert!(!cluster.can_connect("node2", "node1", PROBE));
    assert!(!cluster.can_connect("node1", "node2", PROBE));
    assert!(cluster.can_connect("node3", "node1", PROBE));
    assert!(cluster.can_connect("node2", "node3", PROBE));
    // the test process still reaches every node over its UNIX socket
    for n in cluster.nodes() {
        assert_eq!(n.query_one("SELECT 1").unwrap().as_deref(), Some("1"));
    }
    cluster.heal_all().unwrap();
    assert!(cluster.can_connect("node2", "node1", PROBE));

    // ---- heal(a, b) undoes a cut
    cluster.cut("node1", "node3").unwrap();
    assert!(!cluster.can_connect("node3", "node1", PROBE));
    cluster.heal("node3", "node1").unwrap();
    assert!(cluster.can_connect("node3", "node1", PROBE));

    // ---- isolate: nobody reaches node1 and node1 reaches nobody
    cluster.isolate("node1").unwrap();
    assert!(!cluster.can_connect("node2", "node1", PROBE));
    assert!(!cluster.can_connect("node3", "node1", PROBE));
    assert!(!cluster.can_connect("node1", "node3", PROBE));
    assert!(cluster.can_connect("node2", "node3", PROBE));
    assert_eq!(n1.query_one("SELECT 1").unwrap().as_deref(), Some("1"));
    cluster.heal_all().unwrap();
    assert!(cluster.can_connect("node2", "node1", PROBE));

    // ---- one-way: packets node1 -> node2 are dropped.
    // node1 -> node2: node1's SYN is dropped, connect fails.
    // node2 -> node1: node2's SYN arrives, but node1's SYN-ACK (node1 -> node2)
    // is dropped, so the TCP handshake never completes either. That is the
    // point: node2 "talks" to node1 but never hears back.
    cluster.cut_oneway("node1", "node2").unwrap();
    assert!(!cluster.can_connect("node1", "node2", PROBE));
    assert!(!cluster.can_connect("node2", "node1", PROBE));
    assert!(cluster.can_connect("node3", "node1", PROBE));
    assert!(cluster.can_connect("node3", "node2", PROBE));
    cluster.heal("node1", "node2").unwrap();
    assert!(cluster.can_connect("node1", "node2", PROBE));
    assert!(cluster.can_connect("node2", "node1", PROBE));

    // after healing, replication still / again streams to both standbys
    cluster.wait_streaming(Duration::from_secs(30)).unwrap();

    // ---- teardown removes namespaces, interfaces and processes
    let base = cluster.base_dir().display().to_string();
    drop(cluster);
    let list = ip_out(&["netns", "list"]);
    for n in &ns {
        assert!(!list.split_whitespace().any(|w| w == n), "namespace {n} left: {list}");
    }
    assert!(!list.contains(&format!("pgk{x}sw")), "{list}");
    let links = ip_out(&["-o", "link"]);
    assert!(!links.contains(&format!("pk{x}")), "{links}");
    assert!(!std::path::Path::new(&format!("/tmp/pgk-netns/pgk{x}")).exists());
    let left: Vec<i32> = proc::pids_with_cmdline_containing(&base);
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn partitions_need_netns() {
    let cluster = ClusterBuilder::new("nonet").standbys(1).build().expect("build");
    assert!(cluster.cut("node1", "node2").is_err());
    assert!(cluster.isolate("node1").is_err());
    assert!(cluster.heal_all().is_err());
    assert!(cluster.node("node1").ns().is_none());
    assert_eq!(cluster.node("node1").addr(), "127.0.0.1");
    // SQL helpers use the unix socket in loopback mode too
    assert!(cluster.node("node2").admin_conninfo().starts_with("host=/"));
    cluster.node("node2").query_one("SELECT 1").unwrap();
}
