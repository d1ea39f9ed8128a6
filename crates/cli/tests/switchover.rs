//! `pgkeeper switchover` on a real cluster with a client writing: there and back, no
//! acknowledged row lost, never two writable nodes; and its refusals.

use keeper_integration::*;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn pgkeeper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgkeeper")).args(args).output().expect("run pgkeeper")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Samples every node every 20 ms; remembers the largest number of writable nodes seen.
fn prober(cluster: &Cluster) -> (Arc<AtomicBool>, Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicUsize::new(0));
    let cis: Vec<String> = cluster.nodes().iter().map(|n| n.admin_conninfo()).collect();
    let (s, m) = (stop.clone(), max.clone());
    let h = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let writable = cis
                .iter()
                .filter(|ci| {
                    let mut cfg: postgres::Config = ci.parse().unwrap();
                    cfg.connect_timeout(Duration::from_millis(500));
                    cfg.connect(postgres::NoTls)
                        .and_then(|mut c| {
                            c.query_one("SELECT NOT pg_is_in_recovery()", &[]).map(|r| r.get::<_, bool>(0))
                        })
                        .unwrap_or(false)
                })
                .count();
            m.fetch_max(writable, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (stop, max, h)
}

fn switch(cluster: &Cluster, from: &str, to: &str) {
    let f = cluster.node(from);
    let o = pgkeeper(&["switchover", "--to", to, "--pgdata", f.data_dir().to_str().unwrap(), &f.conninfo()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "switchover {from} -> {to} failed:\n{out}\n{}", stderr(&o));
    assert!(out.contains(&format!("switchover done: {to} is the master")), "{out}");
    eprintln!("{}", out.trim());
}

#[test]
fn switchover_there_and_back_with_a_writer() {
    let cluster = keeper_cluster("cli-switch", 2, Some("node2"), &["pg_keeper.keepalive_time = 1"]);
    let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    n1.execute(WRITES_TABLE).unwrap();
    wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).unwrap();
    let ports: Vec<String> = cluster.nodes().iter().map(|n| n.port().to_string()).collect();
    let uri = format!(
        "host=127.0.0.1,127.0.0.1,127.0.0.1 port={} user=postgres dbname=postgres target_session_attrs=read-write",
        ports.join(",")
    );
    let writer = Writer::start(&uri, Duration::from_millis(20));
    let (stop, max_writable, probe) = prober(&cluster);
    std::thread::sleep(Duration::from_secs(1));

    switch(&cluster, "node1", "node2");
    assert!(!n2.is_in_recovery().unwrap());
    assert!(n1.is_in_recovery().unwrap());
    wait_until(PATIENCE, || streams_from(n2, "node1") && streams_from(n2, "node3")).unwrap_or_else(|e| {
        panic!("everyone follows node2: {e}\n--- node2\n{}\n--- node3\n{}", n2.log_tail(40), n3.log_tail(40))
    });
    wait_until(PATIENCE, || node_info(n2).iter().any(|r| r.1 == "node2" && r.2 == "t"))
        .expect("node_info: node2 master");
    // node2 removed itself from synchronous_standby_names; that is no standby lost.
    assert!(!n2.log_contents().contains("synchronous replication degraded"), "{}", n2.log_tail(30));
    std::thread::sleep(Duration::from_secs(2));

    switch(&cluster, "node2", "node1");
    wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).expect("everyone follows node1");
    std::thread::sleep(Duration::from_secs(1));

    stop.store(true, Ordering::Relaxed);
    probe.join().unwrap();
    let acked = writer.stop();
    assert_eq!(max_writable.load(Ordering::Relaxed), 1, "two nodes accepted writes at once");
    let have = rows(n1);
    let lost: Vec<_> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    assert!(acked.len() > 50, "the writer barely wrote: {}", acked.len());
    // No automatic failover happened meanwhile: every election was a requested one (node2,
    // then node1), and node3 never stood.
    for n in [n1, n2, n3] {
        let log = n.log_contents();
        let stood = log.matches("stands for election").count();
        let requested = log.matches("standing for election on request").count();
        assert_eq!(stood, requested, "{}: an election nobody asked for", n.name());
    }
    assert!(!n3.log_contents().contains("stands for election"));
    wait_replayed(n1, n3).unwrap();
    assert_eq!(rows(n3), rows(n1));
}

#[test]
fn switchover_refusals() {
    let cluster = keeper_cluster("cli-switch-no", 2, None, &["pg_keeper.keepalive_time = 1"]);
    let n1 = cluster.node("node1");
    let d1 = n1.data_dir().to_str().unwrap().to_string();
    let ci = n1.conninfo();
    let refuse = |args: &[&str], needle: &str| {
        let o = pgkeeper(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    };
    refuse(&["switchover", "--to", "nodeX", "--pgdata", &d1, &ci], "not a registered node");
    refuse(&["switchover", "--to", "node1", "--pgdata", &d1, &ci], "already the master");
    let d2 = cluster.node("node2").data_dir().to_str().unwrap().to_string();
    refuse(&["switchover", "--to", "node3", "--pgdata", &d2, &ci], "is not the data directory of the master");
    cluster.node("node3").stop().unwrap();
    refuse(&["switchover", "--to", "node3", "--pgdata", &d1, &ci], "does not answer");
    // Nothing changed: node1 is still the only master and node2 still streams from it.
    assert_eq!(writable(&cluster), vec!["node1".to_string()]);
    assert!(streams_from(n1, "node2"));
}

/// Under synchronous replication only the synchronous standby may be elected in a failover;
/// a switchover may target another standby: the stepping-down master makes it eligible
/// (`step_down(to_node)`), and the switchover waits until it has all the master's WAL.
#[test]
fn switchover_to_a_standby_that_is_not_the_synchronous_one() {
    let cluster =
        keeper_cluster("cli-switch-async", 2, Some("FIRST 1 (node2, node3, node1)"), &["pg_keeper.keepalive_time = 1"]);
    let (n1, n3) = (cluster.node("node1"), cluster.node("node3"));
    n1.execute(WRITES_TABLE).unwrap();
    n1.execute("INSERT INTO pgk_writes (id) SELECT generate_series(1, 100)").unwrap();
    wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).unwrap();
    let vote = n3.data_dir().join("pg_keeper.node3.vote");
    wait_until(PATIENCE, || std::fs::read_to_string(&vote).is_ok_and(|s| s.contains("sync node2\n")))
        .expect("node3 knows node2 is the eligible one");
    switch(&cluster, "node1", "node3");
    assert!(!n3.is_in_recovery().unwrap());
    assert_eq!(rows(n3).len(), 100);
    wait_until(PATIENCE, || streams_from(n3, "node1") && streams_from(n3, "node2")).expect("everyone follows node3");
}
