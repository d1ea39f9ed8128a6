//! Calm under load (issue 4/7): a busy master is not declared dead. At the fast profile
//! (0.2 s x 2, the tightest the README recommends) a master saturated by pgbench on this
//! 2-core machine, with checkpoints, keeps its lease and is not replaced; and clients that
//! hold every connection slot do not cut pg_keeper off (its connections are kept, and a new
//! one as superuser uses the reserved slots).

use keeper_integration::*;
use std::process::Command;
use std::time::{Duration, Instant};

const FAST: [&str; 2] = ["pg_keeper.keepalive_time = 0.2", "pg_keeper.keepalive_count = 2"];
const SYNC: &str = "FIRST 1 (node2, node3, node1)";

fn pgbench(master: &Node, args: &[&str]) -> std::process::Output {
    Command::new(keeper_harness::pg_bindir().join("pgbench"))
        .args(["-h", master.addr(), "-p", &master.port().to_string(), "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .output()
        .expect("pgbench runs (package postgresql-15)")
}

/// Nothing pg_keeper logs when a master is replaced or loses its lease.
fn assert_calm(cluster: &Cluster) {
    for n in cluster.nodes().iter().skip(1) {
        let p = log_lines(n, "pg_keeper: promoting");
        assert!(p.is_empty(), "{} promoted under load: {p:?}", n.name());
        let s = log_lines(n, "stands in term");
        assert!(s.len() <= 1, "{} stood for election under load: {s:?}", n.name());
    }
    let m = cluster.node("node1");
    let fenced = log_lines(m, "pg_keeper: fenced");
    assert!(fenced.is_empty(), "the master lost its lease under load: {fenced:?}");
    assert_eq!(writable(cluster), vec!["node1".to_string()]);
}

#[test]
fn a_saturated_master_keeps_its_lease_and_is_not_replaced() {
    let cluster = keeper_cluster("load-pgbench", 2, Some(SYNC), &FAST);
    let m = cluster.node("node1");
    for s in ["node2", "node3"] {
        wait_title(cluster.node(s), "standby (connected to node1)").unwrap();
    }
    let init = pgbench(m, &["-i", "-q", "-s", "10"]);
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            // A burst of writes and fsyncs every 15 s.
            let mut next = Instant::now() + Duration::from_secs(15);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if Instant::now() >= next {
                    let _ = m.execute("CHECKPOINT");
                    next += Duration::from_secs(15);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let out = pgbench(m, &["-n", "-c", "8", "-j", "2", "-T", "60"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench failed:\n{text}");
    assert!(
        !text.contains("number of failed transactions: ") || text.contains("number of failed transactions: 0 "),
        "{text}"
    );
    eprintln!(
        "{}",
        text.lines().filter(|l| l.starts_with("tps") || l.contains("transactions")).collect::<Vec<_>>().join("\n")
    );
    assert_calm(&cluster);
}

#[test]
fn clients_holding_every_connection_slot_do_not_cut_pg_keeper_off() {
    let cluster = keeper_cluster("load-slots", 2, Some(SYNC), &FAST);
    let m = cluster.node("node1");
    for s in ["node2", "node3"] {
        wait_title(cluster.node(s), "standby (connected to node1)").unwrap();
    }
    m.execute("CREATE ROLE app LOGIN").unwrap();
    // Every slot an ordinary role may take.
    let ci = format!("host={} port={} user=app dbname=postgres connect_timeout=2", m.addr(), m.port());
    let mut held = Vec::new();
    let refused = loop {
        match postgres::Client::connect(&ci, postgres::NoTls) {
            Ok(c) => held.push(c),
            Err(e) => break db_message(&e),
        }
        assert!(held.len() < 1000, "no connection limit reached");
    };
    assert!(refused.contains("connection slots") || refused.contains("too many"), "{refused}");
    eprintln!("{} client connections hold every ordinary slot: {refused}", held.len());
    // A standby restarts meanwhile: its worker must connect to the full master again.
    cluster.node("node3").restart().unwrap();
    wait_title(cluster.node("node3"), "standby (connected to node1)").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_calm(&cluster);
    drop(held);
}
