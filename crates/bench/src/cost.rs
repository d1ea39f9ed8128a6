//! `pgkeeper-bench cost [--out DIR]`: what pg_keeper costs an idle cluster in CPU.
//!
//! For 3, 5 and 7 nodes, a fresh local cluster without pg_keeper (`plain`) and with it at the
//! defaults (5 s x 1), at 1 s x 3 and at the fast profile (0.2 s x 2), each with the README's
//! synchronous replication (`FIRST 1` over every other node). After every worker is
//! connected and 5 s of settling, 30 s are measured two ways: the CPU time of every process
//! of every node (each postmaster with what it reaped, and its live descendants: workers,
//! WAL senders and receivers, the backends other nodes' probes start), and the machine's
//! (`/proc/stat`, everything running, this program included, steal time excluded). Results: `cost.md`,
//! `cost.json`.

use super::{machine, now_utc, write_json};
use anyhow::{anyhow, Context, Result};
use keeper_harness::{proc, wait_until, Cluster};
use serde_json::json;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [3, 5, 7];
const SETTLE: Duration = Duration::from_secs(5);
const MEASURE: Duration = Duration::from_secs(30);

/// (label, keepalive_time, keepalive_count); None: without pg_keeper.
const PROFILES: [(&str, Option<(f64, u32)>); 4] = [
    ("plain streaming replication", None),
    ("5 s x 1 (defaults)", Some((5.0, 1))),
    ("1 s x 3", Some((1.0, 3))),
    ("0.2 s x 2 (fast profile)", Some((0.2, 2))),
];

/// CPU targets of issue 4/7 for 3 nodes (ms/s beyond plain), by profile.
fn target(label: &str) -> Option<f64> {
    match label {
        "1 s x 3" => Some(10.0),
        "0.2 s x 2 (fast profile)" => Some(40.0),
        _ => None,
    }
}

struct Row {
    nodes: usize,
    profile: &'static str,
    /// ms of CPU per second of wall time.
    cluster_ms_s: f64,
    machine_ms_s: f64,
}

pub fn run(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let mut rows = Vec::new();
    for &n in &SIZES {
        for (label, p) in PROFILES {
            let (cluster_ms_s, machine_ms_s) = measure_one(n, p).with_context(|| format!("{n} nodes, {label}"))?;
            eprintln!("bench cost: {n} nodes, {label}: {cluster_ms_s:.1} ms/s (machine {machine_ms_s:.1} ms/s)");
            rows.push(Row { nodes: n, profile: label, cluster_ms_s, machine_ms_s });
        }
    }
    write(out, &rows, started.elapsed())?;
    print!("{}", std::fs::read_to_string(out.join("cost.md"))?);
    Ok(())
}

fn measure_one(n: usize, p: Option<(f64, u32)>) -> Result<(f64, f64)> {
    let others: Vec<String> = (2..=n).map(|i| format!("node{i}")).collect();
    let sync = format!("FIRST 1 ({}, node1)", others.join(", "));
    let mut b = Cluster::builder("bench-cost").standbys(n - 1).synchronous_standby_names(&sync).keeper(p.is_some());
    if let Some((k, c)) = p {
        b = b.conf(&format!("pg_keeper.keepalive_time = {k}")).conf(&format!("pg_keeper.keepalive_count = {c}"));
    }
    let cluster = b.build().context("building the cluster")?;
    if p.is_some() {
        let mut c = cluster.node("node1").try_connect()?;
        c.batch_execute("CREATE EXTENSION pg_keeper")?;
        for node in cluster.nodes() {
            c.query_one("SELECT pgkeeper.add_node($1, $2)", &[&node.name(), &node.conninfo()])?;
        }
        let state = |node: &keeper_harness::Node| {
            node.query_one("SELECT state FROM pgkeeper.status()").ok().flatten().unwrap_or_default()
        };
        wait_until(Duration::from_secs(60), || {
            cluster.nodes().iter().all(|node| {
                let s = state(node);
                if node.name() == "node1" {
                    s.starts_with("connected")
                } else {
                    s.starts_with("connected to node1")
                }
            })
        })
        .map_err(|_| anyhow!("the workers did not all connect within 60 s"))?;
    } else {
        cluster.wait_streaming(Duration::from_secs(60))?;
    }
    std::thread::sleep(SETTLE);
    let (c0, m0, t0) = (cluster_cpu(&cluster)?, machine_cpu()?, Instant::now());
    std::thread::sleep(MEASURE);
    let (c1, m1, wall) = (cluster_cpu(&cluster)?, machine_cpu()?, t0.elapsed().as_secs_f64());
    Ok(((c1 - c0) * 1000.0 / wall, (m1 - m0) * 1000.0 / wall))
}

/// CPU seconds of every process of the cluster so far: each postmaster's own and what it
/// reaped (cutime, cstime: the backends that exited), plus its live descendants' own.
fn cluster_cpu(c: &Cluster) -> Result<f64> {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0.0;
    for n in c.nodes() {
        let pm = n.postmaster_pid().ok_or_else(|| anyhow!("{}: no postmaster", n.name()))?;
        total += ticks(pm, true).unwrap_or(0.0);
        for kid in proc::descendants(pm) {
            total += ticks(kid, false).unwrap_or(0.0);
        }
    }
    Ok(total / tick)
}

/// utime + stime (and, with `reaped`, cutime + cstime) of a process, in clock ticks.
fn ticks(pid: i32, reaped: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name's closing parenthesis: utime is field 14, stime 15, cutime 16,
    // cstime 17 (state, field 3, first).
    let f: Vec<f64> =
        stat[stat.rfind(')')? + 2..].split_whitespace().skip(11).take(4).filter_map(|x| x.parse().ok()).collect();
    (f.len() == 4).then(|| f[0] + f[1] + if reaped { f[2] + f[3] } else { 0.0 })
}

/// CPU seconds the machine spent not idle so far (`/proc/stat`, all CPUs).
fn machine_cpu() -> Result<f64> {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let s = std::fs::read_to_string("/proc/stat")?;
    let cpu = s.lines().next().ok_or_else(|| anyhow!("empty /proc/stat"))?;
    let v: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice: user to softirq but
    // idle and iowait (steal is the hypervisor's, guest is counted in user already).
    let busy: f64 = v.iter().take(7).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
    Ok(busy / tick)
}

fn write(out: &Path, rows: &[Row], took: Duration) -> Result<()> {
    let (date, machine) = (now_utc(), machine());
    let mut md = String::new();
    writeln!(md, "# What pg_keeper costs an idle cluster (`pgkeeper-bench cost`)\n")?;
    writeln!(md, "- date: {date}")?;
    writeln!(md, "- machine: {machine}")?;
    writeln!(
        md,
        "- method: fresh local clusters, `FIRST 1` over every other node; after every worker is connected and {} s \
         of settling, {} s measured: the CPU of every process of every node (postmasters with what they reaped, and \
         their live descendants), and the machine's (`/proc/stat`). {:.0} min in all.\n",
        SETTLE.as_secs(),
        MEASURE.as_secs(),
        took.as_secs_f64() / 60.0
    )?;
    writeln!(
        md,
        "| nodes | profile | cluster CPU ms/s | beyond plain ms/s | machine CPU ms/s | target (3 nodes) | met |"
    )?;
    writeln!(md, "|---:|---|---:|---:|---:|---|---|")?;
    for r in rows {
        let plain = rows.iter().find(|p| p.nodes == r.nodes && p.profile == PROFILES[0].0).map(|p| p.cluster_ms_s);
        let extra = plain.map(|p| r.cluster_ms_s - p);
        let t = target(r.profile).filter(|_| r.nodes == 3);
        writeln!(
            md,
            "| {} | {} | {:.1} | {} | {:.1} | {} | {} |",
            r.nodes,
            r.profile,
            r.cluster_ms_s,
            extra.map(|e| format!("{e:.1}")).unwrap_or("-".into()),
            r.machine_ms_s,
            t.map(|t| format!("<= {t} ms/s")).unwrap_or_default(),
            match (t, extra) {
                (Some(t), Some(e)) if e <= t => "yes",
                (Some(_), Some(_)) => "**no**",
                _ => "",
            }
        )?;
    }
    writeln!(md, "\nRaw numbers: `cost.json`.")?;
    std::fs::write(out.join("cost.md"), md)?;
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| json!({"nodes": r.nodes, "profile": r.profile, "cluster_cpu_ms_per_s": r.cluster_ms_s, "machine_cpu_ms_per_s": r.machine_ms_s}))
        .collect();
    write_json(&out.join("cost.json"), &date, &machine, "measure_s", MEASURE.as_secs() as usize, json!({ "rows": v }))
}
