//! `pgkeeper demo`: a real local 3-node cluster with pg_keeper, configured as in the seed's
//! example (node2 synchronous), registered, and shown.

use crate::status;
use anyhow::{Context, Result};
use keeper_harness::{wait_until, Cluster};
use std::path::Path;
use std::time::Duration;

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
        for (pid, title) in n
            .children()
            .into_iter()
            .filter(|(_, t)| t.contains("pg_keeper"))
        {
            println!("{:<6} pid {pid:<7} {title}", n.name());
        }
    }

    step("pgkeeper status (every node asked)");
    print!("{}", status::render(&m.conninfo())?);

    if keep {
        let base = cluster.base_dir().to_path_buf();
        let port = m.port();
        let nodes: Vec<String> = cluster
            .nodes()
            .iter()
            .map(|n| format!("{:<6} {}", n.name(), n.conninfo()))
            .collect();
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

/// Stop every server of a cluster left by `demo --keep` and remove its directory.
pub fn stop(base: &Path) -> Result<()> {
    anyhow::ensure!(
        base.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("pgk-")),
        "{} is not a directory made by pgkeeper demo",
        base.display()
    );
    for entry in std::fs::read_dir(base).with_context(|| format!("reading {}", base.display()))? {
        let data = entry?.path().join("data");
        if data.join("postmaster.pid").exists() {
            eprintln!("stopping {}", data.display());
            let d = data.display().to_string();
            let _ =
                keeper_harness::run_as_pg("pg_ctl", ["stop", "-m", "fast", "-w", "-D", d.as_str()])
                    .stdout(std::process::Stdio::null())
                    .status();
        }
    }
    std::fs::remove_dir_all(base).with_context(|| format!("removing {}", base.display()))?;
    eprintln!("removed {}", base.display());
    Ok(())
}

fn print_node_info(c: &mut postgres::Client) -> Result<()> {
    println!(
        "{:>5} | {:<6} | {:<56} | is_master | is_nextmaster | is_sync",
        "seqno", "name", "conninfo"
    );
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
