//! `pgkeeper-bench overhead [--runs N] [--out DIR]`: what pg_keeper costs a busy master.
//!
//! Two local 3-node clusters side by side, identical but for pg_keeper (asynchronous
//! streaming replication in both): `plain`, and `pg_keeper` at keepalive_time 1 s and
//! keepalive_count 3 (heartbeats every 0.5 s, every writing commit through the commit gate).
//! Both run for the whole benchmark, so the background load is the same for both
//! measurements. After loading (scale 10), VACUUM, CHECKPOINT and one unrecorded warm-up run
//! each, every run is one `pgbench -N` (simple updates, 4 clients, 2 threads, 10 s, after a
//! CHECKPOINT) on each master, the order alternating from run to run. Reported: transactions per second
//! (min / median / max) and the difference of the medians; the CPU time the three pg_keeper
//! workers used per second of wall time. Results: `overhead.md`, `overhead.json`.

use super::{machine, now_utc, prepare, quantiles, write_json};
use anyhow::{anyhow, Context, Result};
use keeper_harness::{Cluster, Node};
use serde_json::json;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const SECONDS: u32 = 10;
const CLIENTS: u32 = 4;
const SCALE: u32 = 10;

pub fn run(runs: usize, out: &Path) -> Result<()> {
    let started = Instant::now();
    let plain = Cluster::builder("bench-plain").standbys(2).keeper(false).build().context("plain cluster")?;
    let keeper = Cluster::builder("bench-keeper")
        .standbys(2)
        .keeper(true)
        .conf("pg_keeper.keepalive_time = 1")
        .conf("pg_keeper.keepalive_count = 3")
        .build()
        .context("pg_keeper cluster")?;
    prepare(&keeper, "SELECT 1")?;
    // Same starting point for both: loaded, vacuumed, checkpointed, then one unrecorded
    // warm-up run each (caches, the first checkpoint's full-page writes).
    for c in [&plain, &keeper] {
        pgbench(c.master(), &["-i", "-q", "-s", &SCALE.to_string()])?;
        c.master().execute("VACUUM ANALYZE")?;
        c.master().execute("CHECKPOINT")?;
        measure(c.master())?;
    }
    let cpu_before = worker_cpu_seconds(&keeper)?;
    let wall = Instant::now();
    let (mut tps_plain, mut tps_keeper) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let order: [(&Cluster, &mut Vec<f64>); 2] = if i % 2 == 0 {
            [(&plain, &mut tps_plain), (&keeper, &mut tps_keeper)]
        } else {
            [(&keeper, &mut tps_keeper), (&plain, &mut tps_plain)]
        };
        for (c, into) in order {
            c.master().execute("CHECKPOINT")?;
            let tps = measure(c.master())?;
            eprintln!("bench overhead: run {}/{runs}: {} {tps:.0} tps", i + 1, c.base_dir().display());
            into.push(tps);
        }
    }
    let cpu = (worker_cpu_seconds(&keeper)? - cpu_before) / wall.elapsed().as_secs_f64();
    write(out, runs, &tps_plain, &tps_keeper, cpu, started.elapsed().as_secs_f64())
}

/// One timed `pgbench -N` run; its tps (without the initial connection time).
fn measure(master: &Node) -> Result<f64> {
    let o = pgbench(master, &["-n", "-N", "-c", &CLIENTS.to_string(), "-j", "2", "-T", &SECONDS.to_string()])?;
    o.lines()
        .find(|l| l.starts_with("tps =") && l.contains("without initial connection time"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no tps in pgbench's output:\n{o}"))
}

pub(crate) fn pgbench(master: &Node, args: &[&str]) -> Result<String> {
    let port = master.port().to_string();
    let o = Command::new(keeper_harness::pg_bindir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .output()
        .context("running pgbench (package postgresql-15)")?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    anyhow::ensure!(o.status.success(), "pgbench {args:?} failed:\n{text}");
    Ok(text)
}

/// User + system CPU seconds of every pg_keeper worker of the cluster so far.
fn worker_cpu_seconds(c: &Cluster) -> Result<f64> {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0.0;
    for n in c.nodes() {
        let (pid, _) = n
            .children()
            .into_iter()
            .find(|(_, title)| title.contains("pg_keeper"))
            .ok_or_else(|| anyhow!("{}: no pg_keeper worker", n.name()))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // After the command name's closing parenthesis: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
        total += ticks / tick;
    }
    Ok(total)
}

fn write(out: &Path, runs: usize, plain: &[f64], keeper: &[f64], cpu: f64, took_s: f64) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let (date, machine) = (now_utc(), machine());
    let stat = |v: &[f64]| quantiles(v.to_vec()).map(|q| (q.min, q.median, q.max)).unwrap_or_default();
    let (p, k) = (stat(plain), stat(keeper));
    let diff = (k.1 - p.1) / p.1 * 100.0;
    // Each run measured both masters back to back: the paired differences cancel the drift
    // that both share (checkpoints, table growth, the machine).
    let paired: Vec<f64> = plain.iter().zip(keeper).map(|(p, k)| (k - p) / p * 100.0).collect();
    let (pmin, pmed, pmax) = stat(&paired);
    let mut md = String::new();
    writeln!(md, "# What pg_keeper costs a busy master (`pgkeeper-bench overhead`)\n")?;
    writeln!(md, "{date}; {machine}; {runs} runs of `pgbench -N -c {CLIENTS} -j 2 -T {SECONDS}` (scale {SCALE}) on each master, alternating; took {took_s:.0} s.\n")?;
    writeln!(md, "| cluster (3 nodes, async streaming) | tps min | tps median | tps max |")?;
    writeln!(md, "|---|---:|---:|---:|")?;
    writeln!(md, "| plain | {:.0} | {:.0} | {:.0} |", p.0, p.1, p.2)?;
    writeln!(md, "| pg_keeper 1 s × 3 | {:.0} | {:.0} | {:.0} |", k.0, k.1, k.2)?;
    writeln!(md, "\nDifference of the medians: {diff:+.1} %. Paired difference (pg_keeper against plain within each run): median {pmed:+.1} %, from {pmin:+.1} % to {pmax:+.1} %. The three pg_keeper workers used {:.1} ms of CPU per second of wall time together ({:.2} % of one core).", cpu * 1000.0, cpu * 100.0)?;
    std::fs::write(out.join("overhead.md"), &md)?;
    print!("{md}");
    write_json(
        &out.join("overhead.json"),
        &date,
        &machine,
        "runs",
        runs,
        json!({
            "pgbench": format!("-N -c {CLIENTS} -j 2 -T {SECONDS}, scale {SCALE}"),
            "plain_tps": plain, "keeper_tps": keeper,
            "plain_median_tps": p.1, "keeper_median_tps": k.1,
            "median_difference_percent": (diff * 10.0).round() / 10.0,
            "paired_difference_percent": paired.iter().map(|d| (d * 10.0).round() / 10.0).collect::<Vec<_>>(),
            "paired_difference_median_percent": (pmed * 10.0).round() / 10.0,
            "keeper_workers_cpu_ms_per_s": (cpu * 10000.0).round() / 10.0,
        }),
    )
}
