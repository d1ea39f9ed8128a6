//! `pgkeeper demo`: a real local 3-node cluster with pg_keeper, configured as in the seed's
//! example (node2 synchronous), registered, and shown.

use crate::{status, writer};
use anyhow::{Context, Result};
use keeper_harness::{wait_until, Cluster};
use std::path::Path;
use std::time::{Duration, Instant};

fn step(s: &str) {
    eprintln!("\n==> {s}");
}

pub fn run(keep: bool) -> Result<()> {
    step("building a local cluster: node1 (master), node2 (synchronous standby), node3 (standby)");
    let cluster = Cluster::builder("demo")
        .standbys(2)
        .synchronous_standby_names("node2")
        .keeper(true)
        .conf("pg_keeper.keepalive_time = 1")
        .conf("pg_keeper.keepalive_count = 3")
        .build()
        .context("building the demo cluster")?;
    let m = cluster.master();
    println!("every node: shared_preload_libraries = 'pg_keeper', pg_keeper.node_name = '<node>',");
    println!("            pg_keeper.keepalive_time = 1, pg_keeper.keepalive_count = 3");
    println!("node1:      synchronous_standby_names = 'node2'");

    step("CREATE EXTENSION pg_keeper on the master, then pgkeeper.add_node() for every node");
    let mut c = m.try_connect()?;
    c.batch_execute("CREATE EXTENSION pg_keeper")?;
    for n in cluster.nodes() {
        let ci = n.conninfo();
        c.query_one("SELECT pgkeeper.add_node($1, $2)", &[&n.name(), &ci])?;
        println!("SELECT pgkeeper.add_node('{}', '{}');  -> t", n.name(), ci);
    }

    step("pgkeeper.node_info on the master");
    print_node_info(&mut c)?;

    step("waiting for every worker to see its peers");
    for n in cluster.nodes() {
        let peers = (cluster.nodes().len() - 1) as i64;
        let all_ok = || -> Result<bool> {
            let row = n.try_connect()?.query_one(
                "SELECT count(*) = $1 AND coalesce(bool_and(p->>'result' = 'ok'), false) \
                 FROM pgkeeper.status(), jsonb_array_elements(peers) p",
                &[&peers],
            )?;
            Ok(row.get(0))
        };
        wait_until(Duration::from_secs(30), || all_ok().unwrap_or(false))
            .with_context(|| format!("{}: worker did not connect", n.name()))?;
    }
    let s3 = cluster.node("node3");
    step("pgkeeper.node_info on node3 (a hot standby: it arrived by replication)");
    print_node_info(&mut s3.try_connect()?)?;

    step("workers' process titles");
    for n in cluster.nodes() {
        for (pid, title) in n.children().into_iter().filter(|(_, t)| t.contains("pg_keeper")) {
            println!("{:<6} pid {pid:<7} {title}", n.name());
        }
    }

    step("pgkeeper status (every node asked)");
    print!("{}", status::render(&m.conninfo())?);

    failover(&cluster)?;

    if keep {
        let base = cluster.base_dir().to_path_buf();
        let port = m.port();
        let nodes: Vec<String> = cluster.nodes().iter().map(|n| format!("{:<6} {}", n.name(), n.conninfo())).collect();
        cluster.keep_running();
        step("the cluster keeps running");
        for n in nodes {
            println!("  {n}");
        }
        println!("  connect:  psql 'host=127.0.0.1 port={port} user=postgres'");
        println!("  status:   pgkeeper status 'host=127.0.0.1 port={port} user=postgres'");
        println!("  stop:     pgkeeper demo --stop {}", base.display());
    } else {
        step("stopping the cluster (use --keep to leave it running)");
    }
    Ok(())
}

/// A client writing through a multi-host connection string, the master killed, and the
/// cluster re-forming around node2.
fn failover(cluster: &Cluster) -> Result<()> {
    let hosts: Vec<String> = cluster.nodes().iter().map(|_| "127.0.0.1".to_string()).collect();
    let ports: Vec<String> = cluster.nodes().iter().map(|n| n.port().to_string()).collect();
    let uri = format!(
        "host={} port={} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=1",
        hosts.join(","),
        ports.join(",")
    );
    cluster.master().execute("CREATE TABLE demo_writes (id bigint PRIMARY KEY, node text)")?;
    step(&format!("a client inserts a row every 100 ms, each on a new connection to\n    {uri}"));
    let writer = writer::Writer::start(&uri, Duration::from_millis(100))?;
    std::thread::sleep(Duration::from_secs(3));
    let before = writer.acked();
    println!(
        "{} rows acknowledged so far, all by {}",
        before.len(),
        before.last().map(|a| a.1.as_str()).unwrap_or("-")
    );

    step("kill -9 of node1's postmaster");
    let killed = Instant::now();
    cluster.master().kill9();
    // An insert already inside node1 when its postmaster died may still be acknowledged
    // by node1's backend (synchronously replicated, so it is kept): writes have resumed only
    // once another node acknowledges one.
    let first_elsewhere = || writer.acked_since(killed).into_iter().find(|(_, node)| node != "node1");
    let (at, new_master) = loop {
        if let Some(ack) = first_elsewhere() {
            break ack;
        }
        anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "no failover within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = at.duration_since(killed);
    println!("writes resumed on {new_master} {:.2} s after the kill", took.as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    let acked = writer.stop();

    step("what the workers logged");
    for n in &cluster.nodes()[1..] {
        for line in n.log_contents().lines().filter(|l| {
            l.contains("stands for election")
                || l.contains("pg_keeper: promoting")
                || l.contains("promoted;")
                || l.contains("following new master")
                || l.contains("node_info updated")
                || l.contains("not promoting")
                || l.contains("lost:")
        }) {
            println!("{:<6} {}", n.name(), line.split("LOG:").last().unwrap_or(line).trim());
        }
    }

    let n2 = cluster.node(&new_master);
    let mut c = n2.try_connect()?;
    let have: i64 = c.query_one("SELECT count(*) FROM demo_writes", &[])?.get(0);
    step(&format!("{} rows acknowledged in all; {have} rows on {new_master}: none lost", acked.len()));
    anyhow::ensure!(have as usize >= acked.len(), "acknowledged rows are missing on {new_master}");

    step(&format!("pgkeeper status (asked on {new_master}; node1 is down and needs a rejoin)"));
    print!("{}", status::render(&n2.conninfo())?);

    let n1 = cluster.node("node1");
    step(&format!("pgkeeper rejoin --pgdata {} --name node1 '{}'", n1.data_dir().display(), n2.conninfo()));
    crate::rejoin::rejoin(&crate::rejoin::Opts {
        pgdata: n1.data_dir().to_path_buf(),
        name: "node1".into(),
        cluster: n2.conninfo(),
        basebackup: false,
        no_start: false,
        log: None,
        auto: false,
    })?;

    step("pgkeeper status: the cluster is whole again");
    let _ = wait_until(Duration::from_secs(30), || status::gather(&n2.conninfo()).is_ok_and(|r| r.warnings.is_empty()));
    print!("{}", status::render(&n2.conninfo())?);

    step("pgkeeper history: what happened, from every node");
    // (the new master copies its own events into the replicated table within a round)
    let _ = wait_until(Duration::from_secs(10), || {
        crate::history::gather(&n2.conninfo()).is_ok_and(|(e, _)| e.iter().any(|e| e.event == "rejoined"))
    });
    let (events, _) = crate::history::gather(&n2.conninfo())?;
    print!("{}", crate::history::table(&events));
    Ok(())
}

/// Stop every server of a cluster left by `demo --keep` and remove its directory.
pub fn stop(base: &Path) -> Result<()> {
    anyhow::ensure!(
        base.file_name().is_some_and(|n| n.to_string_lossy().starts_with("pgk-")),
        "{} is not a directory made by pgkeeper demo",
        base.display()
    );
    for entry in std::fs::read_dir(base).with_context(|| format!("reading {}", base.display()))? {
        let data = entry?.path().join("data");
        if data.join("postmaster.pid").exists() {
            eprintln!("stopping {}", data.display());
            let d = data.display().to_string();
            let _ = keeper_harness::run_as_pg("pg_ctl", ["stop", "-m", "fast", "-w", "-D", d.as_str()])
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
    std::fs::remove_dir_all(base).with_context(|| format!("removing {}", base.display()))?;
    eprintln!("removed {}", base.display());
    Ok(())
}

fn print_node_info(c: &mut keeper_harness::postgres::Client) -> Result<()> {
    println!("{:>5} | {:<6} | {:<56} | is_master | is_nextmaster | is_sync", "seqno", "name", "conninfo");
    for r in c.query(
        "SELECT seqno, name, conninfo, is_master, is_nextmaster, is_sync FROM pgkeeper.node_info ORDER BY seqno",
        &[],
    )? {
        let b = |i: usize| if r.get::<_, bool>(i) { "t" } else { "f" };
        println!(
            "{:>5} | {:<6} | {:<56} | {:<9} | {:<13} | {}",
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            b(3),
            b(4),
            b(5)
        );
    }
    Ok(())
}
