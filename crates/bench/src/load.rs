//! `pgkeeper-bench load [--out DIR]`: no false failover under load (issue 4/7).
//!
//! For the fast profile (0.2 s x 2) and 1 s x 1: a fresh 3-node cluster with the README's
//! synchronous replication (`FIRST 1 (node2, node3, node1)`), `pgbench -c 8 -j 2` (TPC-B
//! like, scale 10) saturating the master on this machine for `BENCH_LOAD_SECONDS` (default
//! 600) with a CHECKPOINT every 30 s (a burst of writes and fsyncs). Counted from the
//! servers' logs and pgbench: failovers (a standby promoting), lease losses (the master's
//! gate closing for want of a majority), fenced or failed transactions. Target: 0 of each.
//! Results: `load.md`, `load.json`.

use super::overhead::pgbench;
use super::{machine, now_utc, prepare, write_json, SYNC_NAMES};
use anyhow::{Context, Result};
use keeper_harness::Cluster;
use serde_json::json;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

const PROFILES: [(&str, f64, u32); 2] = [("0.2 s x 2 (fast profile)", 0.2, 2), ("1 s x 1", 1.0, 1)];

struct Outcome {
    profile: &'static str,
    seconds: u64,
    tps: f64,
    failovers: usize,
    lease_losses: usize,
    failed_transactions: u64,
    pgbench_error: Option<String>,
}

pub fn run(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let seconds: u64 = std::env::var("BENCH_LOAD_SECONDS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(600);
    let started = Instant::now();
    let mut all = Vec::new();
    for (label, k, c) in PROFILES {
        let o = one(label, k, c, seconds).with_context(|| label.to_string())?;
        eprintln!(
            "bench load: {label}: {:.0} tps, {} failovers, {} lease losses, {} failed transactions{}",
            o.tps,
            o.failovers,
            o.lease_losses,
            o.failed_transactions,
            o.pgbench_error.as_deref().map(|e| format!(" (pgbench: {e})")).unwrap_or_default()
        );
        all.push(o);
    }
    write(out, &all, started.elapsed())?;
    print!("{}", std::fs::read_to_string(out.join("load.md"))?);
    Ok(())
}

fn one(label: &'static str, k: f64, c: u32, seconds: u64) -> Result<Outcome> {
    let cluster = Cluster::builder("bench-load")
        .standbys(2)
        .synchronous_standby_names(SYNC_NAMES)
        .keeper(true)
        .conf(&format!("pg_keeper.keepalive_time = {k}"))
        .conf(&format!("pg_keeper.keepalive_count = {c}"))
        .build()
        .context("building the cluster")?;
    prepare(&cluster, "SELECT 1")?;
    let master = cluster.node("node1");
    pgbench(master, &["-i", "-q", "-s", "10"])?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (res, _) = std::thread::scope(|s| {
        let cp = s.spawn(|| {
            let mut next = Instant::now() + Duration::from_secs(30);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if Instant::now() >= next {
                    let _ = master.execute("CHECKPOINT");
                    next += Duration::from_secs(30);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let r = pgbench(master, &["-n", "-c", "8", "-j", "2", "-T", &seconds.to_string()]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = cp.join();
        (r, ())
    });
    let (tps, failed, err) = match &res {
        Ok(o) => (
            o.lines()
                .find(|l| l.starts_with("tps =") && l.contains("without initial connection time"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            o.lines()
                .find(|l| l.starts_with("number of failed transactions"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            None,
        ),
        Err(e) => (0.0, 0, Some(format!("{e:#}").lines().last().unwrap_or("").to_string())),
    };
    let failovers = cluster
        .nodes()
        .iter()
        .skip(1)
        .map(|n| n.log_contents().lines().filter(|l| l.contains("pg_keeper: promoting")).count())
        .sum();
    let lease_losses = master
        .log_contents()
        .lines()
        .filter(|l| l.contains("pg_keeper: fenced") || l.contains("lease ran out") || l.contains("deposed"))
        .count();
    Ok(Outcome {
        profile: label,
        seconds,
        tps,
        failovers,
        lease_losses,
        failed_transactions: failed,
        pgbench_error: err,
    })
}

fn write(out: &Path, all: &[Outcome], took: Duration) -> Result<()> {
    let (date, machine) = (now_utc(), machine());
    let mut md = String::new();
    writeln!(md, "# No false failover under load (`pgkeeper-bench load`)\n")?;
    writeln!(md, "- date: {date}")?;
    writeln!(md, "- machine: {machine}")?;
    writeln!(
        md,
        "- method: 3 local nodes, `synchronous_standby_names = '{SYNC_NAMES}'`, `pgbench -c 8 -j 2` (scale 10) on the \
         master for the whole run, a CHECKPOINT every 30 s; failovers and lease losses from the servers' logs. {:.0} min \
         in all.\n",
        took.as_secs_f64() / 60.0
    )?;
    writeln!(md, "| profile | seconds | tps | failovers | lease losses | failed transactions | target | met |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---|---|")?;
    for o in all {
        let ok = o.failovers == 0 && o.lease_losses == 0 && o.failed_transactions == 0 && o.pgbench_error.is_none();
        writeln!(
            md,
            "| {} | {} | {:.0} | {} | {} | {}{} | 0, 0, 0 | {} |",
            o.profile,
            o.seconds,
            o.tps,
            o.failovers,
            o.lease_losses,
            o.failed_transactions,
            o.pgbench_error.as_deref().map(|e| format!(" (pgbench: {e})")).unwrap_or_default(),
            if ok { "yes" } else { "**no**" }
        )?;
    }
    std::fs::write(out.join("load.md"), md)?;
    let v: Vec<serde_json::Value> = all
        .iter()
        .map(|o| {
            json!({"profile": o.profile, "seconds": o.seconds, "tps": o.tps, "failovers": o.failovers,
                   "lease_losses": o.lease_losses, "failed_transactions": o.failed_transactions, "pgbench_error": o.pgbench_error})
        })
        .collect();
    write_json(&out.join("load.json"), &date, &machine, "profiles", all.len(), json!({ "runs": v }))
}
