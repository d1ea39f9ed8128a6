//! `pgkeeper-bench [failover] [--runs N] [--out DIR]` (`make bench`): failover time of pg_keeper on real local
//! 3-node clusters, measured from a client's point of view.
//!
//! For each configuration (keepalive_time x keepalive_count) and each run: a fresh cluster
//! (node2 synchronous), a client writing every 50 ms on a fresh multi-host connection with
//! `target_session_attrs=read-write`, `kill -9` of node1's postmaster at a random point of the
//! polling loop, and the time from the kill to the first acknowledged write after it. Then the
//! acknowledged rows are checked on the new master. Results: `failover.md`, `failover.svg`,
//! `failover.json` in the output directory (default `bench/results`). See `bench/README.md`.
//!
//! `pgkeeper-bench sync` (module [`sync`]) measures the master's synchronous-replication guard;
//! `pgkeeper-bench switchover` (module [`switchover`]) the write unavailability of a planned
//! `pgkeeper switchover`; `pgkeeper-bench partition` (module [`partition`]) failover and fencing when the master is isolated by a network
//! partition; `pgkeeper-bench overhead` (module [`overhead`]) what pg_keeper costs a busy
//! master in throughput and CPU; `pgkeeper-bench cost` (module [`cost`]) what it costs an idle
//! cluster of 3, 5 and 7 nodes in CPU; `pgkeeper-bench load` (module [`load`]) counts false
//! failovers under a saturating load; `pgkeeper-bench` without a kind runs all seven.

mod cost;
mod load;
mod overhead;
mod partition;
mod switchover;
mod sync;

use anyhow::{anyhow, bail, Context, Result};
use keeper_harness::{wait_until, Cluster, Node};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_RUNS: usize = 10;
/// The failover benchmark's probes: one writer per node, each on a fresh connection this often.
const WRITE_EVERY: Duration = Duration::from_millis(100);
const ATTEMPT_BOUND: Duration = Duration::from_secs(1);
const FAILOVER_DEADLINE: Duration = Duration::from_secs(60);
const WRITES_TABLE: &str = "CREATE TABLE bench_writes (id bigint PRIMARY KEY, \
     client_start_s double precision NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())";
const PEERS: &str = "measured the same way (3 nodes, synchronous, a probe per node every 100 ms, whole-server kill, \
     5 runs, medians): repmgr 0.70 s at its fastest (asynchronous, promotes on one refused connection), \
     pg_auto_failover 4.78 s at aggressive settings, Patroni 20.07 s at its floor (ttl 20)";

/// One benchmarked configuration.
#[derive(Clone, Copy)]
struct Conf {
    label: &'static str,
    keepalive_time: f64,
    keepalive_count: u32,
    /// Target for the median failover time, seconds.
    target: f64,
    /// Cluster size (the scale runs: the same target as with 3).
    nodes: usize,
}

/// The README's recommended synchronous replication: every candidate listed, on every node
/// (a new master drops itself from the list).
pub(crate) const SYNC_NAMES: &str = "FIRST 1 (node2, node3, node1)";

/// [`SYNC_NAMES`] for a cluster of `nodes` nodes.
fn sync_names(nodes: usize) -> String {
    let standbys: Vec<String> = (2..=nodes).map(|i| format!("node{i}")).collect();
    format!("FIRST 1 ({}, node1)", standbys.join(", "))
}

const CONFS: [Conf; 6] = [
    Conf { label: "5 s x 1 (defaults)", keepalive_time: 5.0, keepalive_count: 1, target: 6.5, nodes: 3 },
    Conf { label: "1 s x 1", keepalive_time: 1.0, keepalive_count: 1, target: 1.4, nodes: 3 },
    Conf { label: "1 s x 3", keepalive_time: 1.0, keepalive_count: 3, target: 3.4, nodes: 3 },
    Conf { label: "0.2 s x 2 (fast profile)", keepalive_time: 0.2, keepalive_count: 2, target: 0.45, nodes: 3 },
    Conf { label: "1 s x 1, 5 nodes", keepalive_time: 1.0, keepalive_count: 1, target: 1.4, nodes: 5 },
    Conf { label: "1 s x 1, 7 nodes", keepalive_time: 1.0, keepalive_count: 1, target: 1.4, nodes: 7 },
];

/// What one run measured. Times in seconds, relative to the kill unless said otherwise.
#[derive(Default, Clone)]
struct Run {
    conf: usize,
    index: usize,
    /// Random delay between the writer's first ack and the kill.
    delay_s: f64,
    /// Kill -> first acknowledged write after the kill (None: did not fail over).
    failover_s: Option<f64>,
    /// When the attempt that gave that first ack started (relative to the kill).
    first_ack_started_s: Option<f64>,
    new_master: Option<String>,
    acked: usize,
    attempts: usize,
    lost: Option<usize>,
    /// Writes acknowledged by node1 (an orphaned backend) after its postmaster was killed.
    acked_by_old_after_kill: usize,
    /// From node2's log: kill -> "promoting node2", kill -> "node2 promoted".
    promoting_s: Option<f64>,
    promoted_s: Option<f64>,
    /// The new master switched to asynchronous replication after the kill (its log).
    degraded: bool,
    error: Option<String>,
}

// ------------------------------------------------------------------------------ arguments

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("pgkeeper-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let mut runs = match std::env::var("BENCH_RUNS") {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse::<usize>().map_err(|_| anyhow!("BENCH_RUNS={v:?} is not a number"))?
        }
        _ => DEFAULT_RUNS,
    };
    let mut out = PathBuf::from("bench/results");
    let mut kind: Option<&str> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            k @ ("failover" | "sync" | "switchover" | "partition" | "overhead" | "cost" | "load") => {
                if kind.is_some() {
                    bail!("bench: give one kind at most ({USAGE})");
                }
                kind = Some(k);
            }
            "--runs" => {
                let v = it.next().ok_or_else(|| anyhow!("--runs needs a number"))?;
                runs = v.parse().map_err(|_| anyhow!("--runs {v:?} is not a number"))?;
            }
            "--out" => out = PathBuf::from(it.next().ok_or_else(|| anyhow!("--out needs a directory"))?),
            other => bail!("bench: unknown argument {other:?} ({USAGE})"),
        }
    }
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    match kind {
        Some("failover") => failover(runs, &out),
        Some("sync") => sync::run(runs, &out),
        Some("switchover") => switchover::run(runs, &out),
        Some("partition") => partition::run(runs, &out),
        Some("overhead") => overhead::run(runs, &out),
        Some("cost") => cost::run(&out),
        Some("load") => load::run(&out),
        _ => {
            // All five; each runs even if an earlier one failed.
            let f = failover(runs, &out);
            if let Err(e) = &f {
                eprintln!("bench failover: {e:#}");
            }
            let s = sync::run(runs, &out);
            if let Err(e) = &s {
                eprintln!("bench sync: {e:#}");
            }
            let w = switchover::run(runs, &out);
            if let Err(e) = &w {
                eprintln!("bench switchover: {e:#}");
            }
            let p = partition::run(runs, &out);
            if let Err(e) = &p {
                eprintln!("bench partition: {e:#}");
            }
            let o = overhead::run(runs, &out);
            if let Err(e) = &o {
                eprintln!("bench overhead: {e:#}");
            }
            let c = cost::run(&out);
            if let Err(e) = &c {
                eprintln!("bench cost: {e:#}");
            }
            let l = load::run(&out);
            f.context("bench failover")?;
            s.context("bench sync")?;
            w.context("bench switchover")?;
            p.context("bench partition")?;
            o.context("bench overhead")?;
            c.context("bench cost")?;
            l.context("bench load")
        }
    }
}

const USAGE: &str =
    "usage: pgkeeper-bench [failover|sync|switchover|partition|overhead|cost|load] [--runs N] [--out DIR]; no kind: all seven";

fn failover(runs: usize, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rng = XorShift::from_time();
    let mut all: Vec<Run> = Vec::new();
    let started = Instant::now();
    for (ci, conf) in CONFS.iter().enumerate() {
        for i in 0..runs {
            let mut r = Run { conf: ci, index: i + 1, ..Default::default() };
            if let Err(e) = one_run(conf, &mut rng, &mut r) {
                r.failover_s = None;
                r.error = Some(format!("{e:#}"));
            }
            match (r.failover_s, &r.error) {
                (Some(t), _) => eprintln!(
                    "run {}/{runs} {}: {t:.2} s (new master {}, lost {}, kill delay {:.2} s{})",
                    i + 1,
                    conf.label,
                    r.new_master.as_deref().unwrap_or("?"),
                    r.lost.map(|l| l.to_string()).unwrap_or("?".into()),
                    r.delay_s,
                    match (r.promoting_s, r.promoted_s) {
                        (Some(a), Some(b)) => format!("; promoting at {a:.2} s, promoted at {b:.2} s"),
                        _ => String::new(),
                    } + if r.degraded { "; DEGRADED to asynchronous" } else { "" }
                ),
                (None, e) => eprintln!("run {}/{runs} {}: FAILED: {}", i + 1, conf.label, e.as_deref().unwrap_or("?")),
            }
            all.push(r);
            // Partial results survive an interrupted benchmark.
            write_outputs(out, runs, &all, started.elapsed())?;
        }
    }
    write_outputs(out, runs, &all, started.elapsed())?;
    print!("{}", std::fs::read_to_string(out.join("failover.md"))?);
    eprintln!("results in {}", out.display());
    Ok(())
}

// ------------------------------------------------------------------------------ one run

/// A fresh 3-node cluster: node1 master, node2 and node3 standbys, `sync_names` on every
/// node, pg_keeper loaded with these settings.
fn build_cluster(name: &str, keepalive_time: f64, keepalive_count: u32, sync_names: &str) -> Result<Cluster> {
    build_cluster_of(name, 3, keepalive_time, keepalive_count, sync_names)
}

/// The same with `nodes` nodes (node1 the master).
fn build_cluster_of(
    name: &str,
    nodes: usize,
    keepalive_time: f64,
    keepalive_count: u32,
    sync_names: &str,
) -> Result<Cluster> {
    Cluster::builder(name)
        .standbys(nodes - 1)
        .synchronous_standby_names(sync_names)
        .keeper(true)
        .conf(&format!("pg_keeper.keepalive_time = {keepalive_time}"))
        .conf(&format!("pg_keeper.keepalive_count = {keepalive_count}"))
        .build()
        .context("building the cluster")
}

/// `CREATE EXTENSION pg_keeper`, every node registered (parameterised `add_node`), the
/// benchmark's table; then wait until every worker is connected.
fn prepare(cluster: &Cluster, table_sql: &str) -> Result<()> {
    {
        let mut c = cluster.node("node1").try_connect()?;
        c.batch_execute("CREATE EXTENSION pg_keeper")?;
        for n in cluster.nodes() {
            let ci = n.conninfo();
            c.query_one("SELECT pgkeeper.add_node($1, $2)", &[&n.name(), &ci])
                .with_context(|| format!("add_node {}", n.name()))?;
        }
        c.batch_execute(table_sql)?;
    }
    wait_connected(cluster)
}

fn one_run(conf: &Conf, rng: &mut XorShift, r: &mut Run) -> Result<()> {
    let cluster =
        build_cluster_of("bench", conf.nodes, conf.keepalive_time, conf.keepalive_count, &sync_names(conf.nodes))?;
    let res = measure(&cluster, conf, rng, r);
    drop(cluster); // tear down before the next run
    res
}

fn measure(cluster: &Cluster, conf: &Conf, rng: &mut XorShift, r: &mut Run) -> Result<()> {
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    prepare(cluster, WRITES_TABLE)?;

    let port_names: Vec<(i32, String)> =
        cluster.nodes().iter().map(|n| (n.port() as i32, n.name().to_string())).collect();
    let epoch = Instant::now();
    // A probe per node, as the peers were measured: a fresh connection every 100 ms to each.
    let writers = cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| Writer::start_at(&format!("{} connect_timeout=1", n.conninfo()), epoch, i as i64))
        .collect::<Result<Vec<_>>>()?;
    let writer = Writers(writers);

    // At least one write acknowledged by node1 before the kill.
    wait_until(Duration::from_secs(20), || writer.snapshot().iter().any(|a| a.ok))
        .map_err(|_| anyhow!("the writer got no acknowledgement before the kill: {:?}", writer.last_error()))?;
    r.delay_s = conf.keepalive_time * rng.unit();
    std::thread::sleep(Duration::from_secs_f64(r.delay_s));
    let kill_wall = SystemTime::now();
    let kill_at = epoch.elapsed().as_secs_f64();
    n1.kill9_all();

    // First acknowledged write after the kill, from another node than node1.
    let deadline = Instant::now() + FAILOVER_DEADLINE;
    let first = loop {
        let found = writer
            .snapshot()
            .iter()
            .filter(|a| a.ok && a.end > kill_at && a.port != Some(n1.port() as i32))
            .min_by(|a, b| a.end.total_cmp(&b.end))
            .cloned();
        if let Some(a) = found {
            break Some(a);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Let the writer go on a little on the new master, then stop it.
    if first.is_some() {
        std::thread::sleep(Duration::from_millis(500));
    }
    let attempts = writer.stop();
    r.attempts = attempts.len();
    let acked: Vec<i64> = attempts.iter().filter(|a| a.ok).map(|a| a.id).collect();
    r.acked = acked.len();
    r.acked_by_old_after_kill =
        attempts.iter().filter(|a| a.ok && a.end > kill_at && a.port == Some(n1.port() as i32)).count();
    let (promoting, promoted) = log_breakdown(n2, kill_wall);
    r.promoting_s = promoting;
    r.promoted_s = promoted;
    r.degraded = cluster.nodes().iter().skip(1).any(|n| {
        log_line_after(&n.log_contents(), "pg_keeper: synchronous replication degraded to asynchronous", kill_wall)
            .is_some()
    });

    let Some(first) = first else {
        let states: Vec<String> = cluster
            .nodes()
            .iter()
            .skip(1)
            .map(|n| {
                format!(
                    "{}: {:?}",
                    n.name(),
                    n.query_one("SELECT state FROM pgkeeper.status()").unwrap_or_else(|e| Some(e.to_string()))
                )
            })
            .collect();
        bail!(
            "no acknowledged write within {FAILOVER_DEADLINE:?} of the kill; last client error: {:?}; {}",
            attempts.iter().rev().find_map(|a| a.err.clone()),
            states.join("; ")
        );
    };
    r.failover_s = Some(first.end - kill_at);
    r.first_ack_started_s = Some(first.start - kill_at);
    let new_master = port_names
        .iter()
        .find(|(p, _)| Some(*p) == first.port)
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| format!("port {:?}", first.port));
    r.new_master = Some(new_master.clone());

    // No acknowledged row may be missing on the new master.
    let node: &Node = cluster.get_node(&new_master).unwrap_or(n2);
    let have: std::collections::HashSet<i64> =
        node.try_connect()?.query("SELECT id FROM bench_writes", &[])?.iter().map(|row| row.get(0)).collect();
    r.lost = Some(acked.iter().filter(|id| !have.contains(id)).count());
    Ok(())
}

/// The benchmarks' client: one multi-host conninfo over all the nodes, connecting only to the
/// one that accepts writes.
fn client_conninfo(cluster: &Cluster) -> String {
    let hosts: Vec<&str> = cluster.nodes().iter().map(|n| n.addr()).collect();
    let ports: Vec<String> = cluster.nodes().iter().map(|n| n.port().to_string()).collect();
    format!(
        "host={} port={} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=1 application_name=pgkeeper-bench",
        hosts.join(","),
        ports.join(",")
    )
}

/// The first column of the first row of `sql` on `n`, as text; "" on an error or NULL.
fn q(n: &Node, sql: &str) -> String {
    n.query_one(sql).ok().flatten().unwrap_or_default()
}

/// Every worker connected: node1 'connected, N-1', the standbys 'connected to node1...'.
fn wait_connected(cluster: &Cluster) -> Result<()> {
    let state = |n: &Node| q(n, "SELECT state FROM pgkeeper.status()");
    let ok = || {
        cluster.nodes().iter().all(|n| {
            let s = state(n);
            if n.name() == "node1" {
                s == format!("connected, {}", cluster.nodes().len() - 1)
            } else {
                s.starts_with("connected to node1")
            }
        })
    };
    wait_until(Duration::from_secs(60), ok).map_err(|_| {
        let states: Vec<String> = cluster.nodes().iter().map(|n| format!("{}: {:?}", n.name(), state(n))).collect();
        anyhow!("workers did not all connect within 60 s: {}", states.join("; "))
    })
}

/// Seconds from the kill to node2's "promoting node2" and "node2 promoted" log lines.
/// The log's timestamps (`%m`, UTC in these clusters) have millisecond resolution.
fn log_breakdown(n2: &Node, kill: SystemTime) -> (Option<f64>, Option<f64>) {
    let log = n2.log_contents();
    (log_line_after(&log, "pg_keeper: promoting node2", kill), log_line_after(&log, "pg_keeper: node2 promoted", kill))
}

/// Seconds from `since` to the first log line containing `needle` logged at or after it
/// (10 ms of slack for the log's millisecond resolution).
fn log_line_after(log: &str, needle: &str, since: SystemTime) -> Option<f64> {
    let since_s = since.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    log.lines().filter(|l| l.contains(needle)).filter_map(parse_log_time).map(|t| t - since_s).find(|d| *d > -0.01)
}

/// `2026-11-25 18:40:56.123 UTC ...` -> seconds since the epoch (UTC/GMT only).
fn parse_log_time(line: &str) -> Option<f64> {
    let mut parts = line.split_whitespace();
    let (date, time, tz) = (parts.next()?, parts.next()?, parts.next()?);
    if tz != "UTC" && tz != "GMT" {
        return None;
    }
    let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<f64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    let days = days_from_civil(d[0], d[1], d[2]);
    Some(days as f64 * 86400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2])
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

// ------------------------------------------------------------------------------ the client

#[derive(Clone, Debug)]
struct Attempt {
    id: i64,
    /// Seconds since the run's epoch.
    start: f64,
    end: f64,
    ok: bool,
    /// `inet_server_port()` of the server that acknowledged.
    port: Option<i32>,
    err: Option<String>,
}

/// Writes every 50 ms (`WRITE_EVERY`; [`Writer::start_every`]: any interval) on a fresh
/// connection, each attempt on its own thread; the loop waits at most 1 s for an attempt, so a
/// hung connect never stalls it longer than that.
struct Writer {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    in_flight: Arc<AtomicUsize>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start_every(conninfo: &str, epoch: Instant, every: Duration) -> Result<Writer> {
        Writer::start_with(conninfo, epoch, every, 0)
    }

    /// Writer number `k` of several at once (its ids start at k × 10⁹), every `WRITE_EVERY`.
    fn start_at(conninfo: &str, epoch: Instant, k: i64) -> Result<Writer> {
        Writer::start_with(conninfo, epoch, WRITE_EVERY, k * 1_000_000_000)
    }

    fn start_with(conninfo: &str, epoch: Instant, every: Duration, first_id: i64) -> Result<Writer> {
        let cfg: postgres::Config = conninfo.parse().context("writer conninfo")?;
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (s, at, inf) = (stop.clone(), attempts.clone(), in_flight.clone());
        let handle = std::thread::Builder::new().name("bench-writer".into()).spawn(move || {
            let mut id = first_id;
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                id += 1;
                let (cfg, at, inf, my) = (cfg.clone(), at.clone(), inf.clone(), id);
                inf.fetch_add(1, Ordering::SeqCst);
                let t = std::thread::spawn(move || {
                    let start = epoch.elapsed().as_secs_f64();
                    let res = (|| -> Result<i32, postgres::Error> {
                        let mut c = cfg.connect(postgres::NoTls)?;
                        let row = c.query_one(
                            "INSERT INTO bench_writes (id, client_start_s) VALUES ($1, $2) \
                             RETURNING inet_server_port()",
                            &[&my, &start],
                        )?;
                        Ok(row.get(0))
                    })();
                    let end = epoch.elapsed().as_secs_f64();
                    let a = match res {
                        Ok(port) => Attempt { id: my, start, end, ok: true, port: Some(port), err: None },
                        Err(e) => Attempt { id: my, start, end, ok: false, port: None, err: Some(e.to_string()) },
                    };
                    at.lock().unwrap().push(a);
                    inf.fetch_sub(1, Ordering::SeqCst);
                });
                let t0 = Instant::now();
                while !t.is_finished() && t0.elapsed() < ATTEMPT_BOUND {
                    std::thread::sleep(Duration::from_millis(2));
                }
                pace(&mut next, every);
            }
        })?;
        Ok(Writer { stop, attempts, in_flight, handle: Some(handle) })
    }

    fn snapshot(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    fn last_error(&self) -> Option<String> {
        self.attempts.lock().unwrap().iter().rev().find_map(|a| a.err.clone())
    }

    /// Stop, give in-flight attempts up to 3 s to finish, and return what was recorded
    /// (an attempt still unfinished then counts as not acknowledged).
    fn stop(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = wait_until(Duration::from_secs(3), || self.in_flight.load(Ordering::SeqCst) == 0);
        let mut v = self.snapshot();
        v.sort_by_key(|a| a.id);
        v
    }
}

/// Several writers as one: what they recorded, merged.
struct Writers(Vec<Writer>);

impl Writers {
    fn snapshot(&self) -> Vec<Attempt> {
        self.0.iter().flat_map(|w| w.snapshot()).collect()
    }

    fn last_error(&self) -> Option<String> {
        self.0.iter().find_map(|w| w.last_error())
    }

    fn stop(self) -> Vec<Attempt> {
        let mut v: Vec<Attempt> = self.0.into_iter().flat_map(|w| w.stop()).collect();
        v.sort_by(|a, b| a.start.total_cmp(&b.start));
        v
    }
}

/// Sleeps until `next` + `every` and moves `next` there; a loop that fell behind starts again
/// from now instead of catching up.
fn pace(next: &mut Instant, every: Duration) {
    *next += every;
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    } else {
        *next = now;
    }
}

// ------------------------------------------------------------------------------ statistics

/// The failover times of one configuration (None from [`stats`]: no run failed over).
struct Stats {
    runs: usize,
    failures: usize,
    q: Quantiles,
    lost: usize,
}

fn stats(runs: &[&Run]) -> Option<Stats> {
    let s = summary(runs, |r| r.failover_s);
    Some(Stats { runs: s.runs, failures: s.failures, q: s.q?, lost: runs.iter().filter_map(|r| r.lost).sum() })
}

/// One measure over some runs: how many runs, how many gave no value, the quantiles of the
/// values (None: no value at all).
struct Summary {
    runs: usize,
    failures: usize,
    q: Option<Quantiles>,
}

fn summary<R>(rs: &[R], f: impl Fn(&R) -> Option<f64>) -> Summary {
    let v: Vec<f64> = rs.iter().filter_map(f).collect();
    Summary { runs: rs.len(), failures: rs.len() - v.len(), q: quantiles(v) }
}

impl Summary {
    /// The JSON summary object; the runs without a value counted under `failures_key`.
    fn json(&self, failures_key: &str) -> Value {
        Value::Object(summary_json(self.runs, failures_key, self.failures, self.q))
    }

    /// Markdown cells `min | median | p95 | max`, in seconds ("-" when nothing was measured).
    fn md_cells(&self) -> String {
        let f = |g: fn(&Quantiles) -> f64| self.q.as_ref().map(|q| format!("{:.2}", g(q))).unwrap_or("-".into());
        [f(|q| q.min), f(|q| q.median), f(|q| q.p95), f(|q| q.max)].join(" | ")
    }
}

/// min, median, p95 (nearest rank), max of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Quantiles {
    min: f64,
    median: f64,
    p95: f64,
    max: f64,
}

/// Median: middle value (mean of the two middle ones for an even count).
/// p95: nearest rank, the ceil(0.95 n)-th smallest value.
fn quantiles(mut v: Vec<f64>) -> Option<Quantiles> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
    Some(Quantiles { min: v[0], median: median_of(v.clone())?, p95: v[rank - 1], max: v[n - 1] })
}

fn median_of(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

// ------------------------------------------------------------------------------ outputs

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn now_utc() -> String {
    sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

fn machine() -> String {
    format!("{} CPUs (nproc), Linux {} (uname -r)", sh("nproc", &[]), sh("uname", &["-r"]))
}

/// Seconds as the result files give them: rounded to 0.1 ms.
fn secs(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The statistics object of the result files: `{"runs", <failures_key>, "min_s", "median_s",
/// "p95_s", "max_s"}`, the quantiles only when some run measured something.
fn summary_json(runs: usize, failures_key: &str, failures: usize, q: Option<Quantiles>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("runs".into(), runs.into());
    m.insert(failures_key.into(), failures.into());
    if let Some(q) = q {
        for (k, v) in [("min_s", q.min), ("median_s", q.median), ("p95_s", q.p95), ("max_s", q.max)] {
            m.insert(k.into(), secs(v).into());
        }
    }
    m
}

/// Writes a result file's JSON, pretty-printed: the common header (date, machine, the runs per
/// configuration under `runs_key`), then the fields of `fields` (an object).
fn write_json(path: &Path, date: &str, machine: &str, runs_key: &str, runs: usize, fields: Value) -> Result<()> {
    let mut doc = Map::new();
    doc.insert("date".into(), date.into());
    doc.insert("machine".into(), machine.into());
    doc.insert(runs_key.into(), runs.into());
    match fields {
        Value::Object(m) => doc.extend(m),
        other => bail!("write_json: fields must be an object, not {other}"),
    }
    let mut s = serde_json::to_string_pretty(&Value::Object(doc))?;
    s.push('\n');
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn write_outputs(out: &Path, runs_per_conf: usize, all: &[Run], took: Duration) -> Result<()> {
    let (date, machine) = (now_utc(), machine());
    let per_conf: Vec<Vec<&Run>> = (0..CONFS.len()).map(|ci| all.iter().filter(|r| r.conf == ci).collect()).collect();
    let stats: Vec<Option<Stats>> = per_conf.iter().map(|rs| stats(rs)).collect();

    // ---- markdown
    let mut md = String::new();
    writeln!(md, "# pg_keeper failover benchmark\n")?;
    writeln!(md, "- date: {date}")?;
    writeln!(md, "- machine: {machine}")?;
    writeln!(
        md,
        "- method: `pgkeeper-bench failover` ({runs_per_conf} runs per configuration, {:.0} min in all); \
         3 local nodes (5 and 7 in the scale rows), `synchronous_standby_names = '{SYNC_NAMES}'` (every \
         standby listed) on every node, the README's recommendation; one probe per node writes every 100 ms on a fresh connection \
         (`connect_timeout=1`); node1's whole server (postmaster and every child) is killed with \
         SIGKILL at a random point of the polling loop; failover time = first acknowledged write \
         after the kill minus the kill instant. See `bench/README.md`.\n",
        took.as_secs_f64() / 60.0
    )?;
    writeln!(md, "| keepalive_time x count | runs | failures | min s | median s | p95 s | max s | lost rows | degraded | new master | target (median) | met |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")?;
    for (ci, conf) in CONFS.iter().enumerate() {
        let rs = &per_conf[ci];
        let masters = {
            let mut m: Vec<(String, usize)> = Vec::new();
            for r in rs.iter().filter_map(|r| r.new_master.clone()) {
                match m.iter_mut().find(|(n, _)| *n == r) {
                    Some(e) => e.1 += 1,
                    None => m.push((r, 1)),
                }
            }
            m.iter().map(|(n, c)| format!("{n} x{c}")).collect::<Vec<_>>().join(", ")
        };
        match &stats[ci] {
            Some(s) => writeln!(
                md,
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | <= {} s | {} |",
                conf.label,
                s.runs,
                s.failures,
                s.q.min,
                s.q.median,
                s.q.p95,
                s.q.max,
                s.lost,
                rs.iter().filter(|r| r.degraded).count(),
                masters,
                conf.target,
                if s.q.median <= conf.target && s.failures == 0 && s.lost == 0 && !rs.iter().any(|r| r.degraded) {
                    "yes"
                } else if s.q.median <= conf.target {
                    "median yes, but see failures / lost rows / degrades"
                } else {
                    "**no**"
                }
            )?,
            None if rs.is_empty() => {
                writeln!(md, "| {} | 0 | - | - | - | - | - | - | - | - | <= {} s | not run |", conf.label, conf.target)?
            }
            None => writeln!(
                md,
                "| {} | {} | {} | - | - | - | - | - | - | - | <= {} s | **no** |",
                conf.label,
                rs.len(),
                rs.len(),
                conf.target
            )?,
        }
    }
    writeln!(
        md,
        "\nTargets (medians of the first acknowledged write): <= 6.5 s at the defaults (the lease wait of 1.25 x 5 s is \
         the floor there), <= 1.4 s at 1 s x 1, <= 3.4 s at 1 s x 3, <= 0.45 s at the fast profile; no lost row and no \
         degrade to asynchronous replication in any run."
    )?;
    writeln!(md, "\nPeers, for comparison (issue 4/7), {PEERS}.")?;

    writeln!(md, "\n## Where the time goes (medians, seconds after the kill)\n")?;
    writeln!(md, "From node2's server log (`pg_keeper: promoting node2`, `node2 promoted`) and the client.\n")?;
    writeln!(md, "| keepalive_time x count | kill delay (random) | promotion decided | promoted | first ack | decided -> promoted | promoted -> first ack |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    let f = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or("-".into());
    for (ci, conf) in CONFS.iter().enumerate() {
        let rs = &per_conf[ci];
        let col = |g: &dyn Fn(&Run) -> Option<f64>| median_of(rs.iter().filter_map(|r| g(r)).collect());
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            conf.label,
            f(col(&|r| Some(r.delay_s))),
            f(col(&|r| r.promoting_s)),
            f(col(&|r| r.promoted_s)),
            f(col(&|r| r.failover_s)),
            f(col(&|r| Some(r.promoted_s? - r.promoting_s?))),
            f(col(&|r| Some(r.failover_s? - r.promoted_s?))),
        )?;
    }
    let failed: Vec<&Run> = all.iter().filter(|r| r.failover_s.is_none()).collect();
    if !failed.is_empty() {
        writeln!(md, "\n## Failed runs\n")?;
        for r in failed {
            writeln!(
                md,
                "- {} run {}: {}",
                CONFS[r.conf].label,
                r.index,
                r.error.as_deref().unwrap_or("?").replace('\n', " ")
            )?;
        }
    }
    let orphan: usize = all.iter().map(|r| r.acked_by_old_after_kill).sum();
    if orphan > 0 {
        writeln!(md, "\nNote: {orphan} write(s) were acknowledged by node1's orphaned backends after its postmaster was killed (counted as acknowledged, not as failover).")?;
    }
    writeln!(md, "\nRaw numbers: `failover.json`; chart: `failover.svg`.")?;
    std::fs::write(out.join("failover.md"), md)?;

    // ---- json
    let configurations: Vec<Value> = CONFS
        .iter()
        .zip(&per_conf)
        .zip(&stats)
        .map(|((conf, rs), st)| {
            let summary = st.as_ref().map(|s| {
                let mut m = summary_json(s.runs, "failures", s.failures, Some(s.q));
                m.insert("lost_rows".into(), s.lost.into());
                m
            });
            let runs: Vec<Value> = rs
                .iter()
                .map(|r| {
                    json!({
                        "run": r.index,
                        "kill_delay_s": secs(r.delay_s),
                        "failover_s": r.failover_s.map(secs),
                        "first_ack_attempt_started_s": r.first_ack_started_s.map(secs),
                        "new_master": r.new_master,
                        "promoting_s": r.promoting_s.map(secs),
                        "promoted_s": r.promoted_s.map(secs),
                        "degraded": r.degraded,
                        "attempts": r.attempts,
                        "acked": r.acked,
                        "acked_by_old_after_kill": r.acked_by_old_after_kill,
                        "lost_rows": r.lost,
                        "error": r.error,
                    })
                })
                .collect();
            json!({
                "label": conf.label,
                "keepalive_time_s": conf.keepalive_time,
                "keepalive_count": conf.keepalive_count,
                "target_median_s": conf.target,
                "summary": summary,
                "runs": runs,
            })
        })
        .collect();
    write_json(
        &out.join("failover.json"),
        &date,
        &machine,
        "runs_per_configuration",
        runs_per_conf,
        json!({ "write_interval_ms": WRITE_EVERY.as_millis() as u64, "configurations": configurations }),
    )?;

    // ---- svg
    std::fs::write(out.join("failover.svg"), svg(&per_conf, &stats, &date))?;
    Ok(())
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One band per configuration: min-max line, each run as a small dot, p95 tick, median
/// diamond, target as a dashed red mark; x axis in seconds.
fn svg(per_conf: &[Vec<&Run>], stats: &[Option<Stats>], date: &str) -> String {
    let (w, left, right, top, band) = (860.0, 170.0, 40.0, 60.0, 90.0);
    let plot_w = w - left - right;
    let n = CONFS.len() as f64;
    let axis_y = top + band * n;
    let h = axis_y + 110.0;
    let mut vmax: f64 = CONFS.iter().map(|c| c.target).fold(0.0, f64::max);
    for s in stats.iter().flatten() {
        vmax = vmax.max(s.q.max);
    }
    let step = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0].into_iter().find(|s| vmax * 1.05 / s <= 12.0).unwrap_or(100.0);
    let xmax = ((vmax * 1.05) / step).ceil().max(1.0) * step;
    let x = |v: f64| left + v / xmax * plot_w;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="26" font-size="17" font-weight="bold" text-anchor="middle">pg_keeper failover time after kill -9 of the master (client view)</text>"#,
        w / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="45" fill="#555" text-anchor="middle">3 local nodes (5, 7 in the scale rows), FIRST 1 over every standby, a probe per node every 100 ms; {}</text>"##,
        w / 2.0,
        xml(date)
    );
    // grid and ticks
    let mut t = 0.0;
    while t <= xmax + 1e-9 {
        let xx = x(t);
        let _ = writeln!(s, r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{axis_y}" stroke="#e4e4e4"/>"##);
        let _ = writeln!(s, r##"<line x1="{xx:.1}" y1="{axis_y}" x2="{xx:.1}" y2="{}" stroke="#333"/>"##, axis_y + 5.0);
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"#,
            axis_y + 20.0,
            if step < 1.0 { format!("{t:.1}") } else { format!("{t:.0}") }
        );
        t += step;
    }
    let _ = writeln!(s, r##"<line x1="{left}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##, left + plot_w);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds from kill -9 to the first acknowledged write</text>"#,
        left + plot_w / 2.0,
        axis_y + 40.0
    );

    for (ci, conf) in CONFS.iter().enumerate() {
        let cy = top + band * ci as f64 + band / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" font-weight="bold">{}</text>"#,
            left - 12.0,
            cy - 4.0,
            xml(conf.label)
        );
        let runs = &per_conf[ci];
        let fails = runs.iter().filter(|r| r.failover_s.is_none()).count();
        let sub = match &stats[ci] {
            Some(st) => format!(
                "median {:.2} s, n={}{}",
                st.q.median,
                st.runs,
                if fails > 0 { format!(", {fails} failed") } else { String::new() }
            ),
            None if runs.is_empty() => "not run".into(),
            None => format!("{} runs, all failed", runs.len()),
        };
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#555" font-size="11">{}</text>"##,
            left - 12.0,
            cy + 12.0,
            xml(&sub)
        );
        // target
        let tx = x(conf.target);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="#d62728" stroke-width="2" stroke-dasharray="5,3"/>"##,
            cy - 28.0,
            cy + 28.0
        );
        let _ = writeln!(
            s,
            r##"<text x="{tx:.1}" y="{}" text-anchor="middle" fill="#d62728" font-size="11">target {}</text>"##,
            cy - 31.0,
            conf.target
        );
        let Some(st) = &stats[ci] else { continue };
        let (x0, x1) = (x(st.q.min), x(st.q.max));
        let _ =
            writeln!(s, r##"<line x1="{x0:.1}" y1="{cy}" x2="{x1:.1}" y2="{cy}" stroke="#1f77b4" stroke-width="2"/>"##);
        for xe in [x0, x1] {
            let _ = writeln!(
                s,
                r##"<line x1="{xe:.1}" y1="{}" x2="{xe:.1}" y2="{}" stroke="#1f77b4" stroke-width="2"/>"##,
                cy - 7.0,
                cy + 7.0
            );
        }
        for r in runs.iter().filter_map(|r| r.failover_s) {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{}" r="2.5" fill="#1f77b4" fill-opacity="0.45"/>"##,
                x(r),
                cy + 14.0
            );
        }
        let px = x(st.q.p95);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{}" stroke="#ff7f0e" stroke-width="3"/>"##,
            cy - 12.0,
            cy + 12.0
        );
        let mx = x(st.q.median);
        let _ = writeln!(
            s,
            r##"<polygon points="{:.1},{} {:.1},{} {:.1},{} {:.1},{}" fill="#2ca02c" stroke="#1a661a"/>"##,
            mx,
            cy - 8.0,
            mx + 8.0,
            cy,
            mx,
            cy + 8.0,
            mx - 8.0,
            cy
        );
    }
    // legend
    let ly = axis_y + 70.0;
    let mut lx = left;
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="#1f77b4" stroke-width="2"/><text x="{}" y="{}">min–max</text>"##,
        lx + 30.0,
        lx + 36.0,
        ly + 4.0
    );
    lx += 120.0;
    let _ = writeln!(
        s,
        r##"<circle cx="{}" cy="{ly}" r="2.5" fill="#1f77b4" fill-opacity="0.45"/><text x="{}" y="{}">each run</text>"##,
        lx + 10.0,
        lx + 20.0,
        ly + 4.0
    );
    lx += 110.0;
    let _ = writeln!(
        s,
        r##"<polygon points="{},{} {},{} {},{} {},{}" fill="#2ca02c" stroke="#1a661a"/><text x="{}" y="{}">median</text>"##,
        lx + 10.0,
        ly - 8.0,
        lx + 18.0,
        ly,
        lx + 10.0,
        ly + 8.0,
        lx + 2.0,
        ly,
        lx + 24.0,
        ly + 4.0
    );
    lx += 100.0;
    let _ = writeln!(
        s,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ff7f0e" stroke-width="3"/><text x="{}" y="{}">p95</text>"##,
        lx + 10.0,
        ly - 10.0,
        lx + 10.0,
        ly + 10.0,
        lx + 20.0,
        ly + 4.0
    );
    lx += 80.0;
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="{}" x2="{lx}" y2="{}" stroke="#d62728" stroke-width="2" stroke-dasharray="5,3"/><text x="{}" y="{}">target for the median</text>"##,
        ly - 10.0,
        ly + 10.0,
        lx + 10.0,
        ly + 4.0
    );
    let _ = writeln!(s, "</svg>");
    s
}

// ------------------------------------------------------------------------------ randomness

/// xorshift64*, seeded from the clock and the pid: enough to place the kill at a random
/// point of the polling loop.
struct XorShift(u64);

impl XorShift {
    fn from_time() -> XorShift {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        XorShift((t ^ ((std::process::id() as u64) << 32)) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_time_parses_utc() {
        let t = parse_log_time("1970-01-02 00:00:01.500 UTC [12] background worker x").unwrap();
        assert!((t - 86401.5).abs() < 1e-9);
        assert!(parse_log_time("2026-11-25 18:40:56.123 CET [1]").is_none());
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }

    #[test]
    fn stats_median_and_p95() {
        let rs: Vec<Run> = (1..=10)
            .map(|i| Run { failover_s: Some(i as f64), lost: Some(0), ..Default::default() })
            .chain(std::iter::once(Run::default()))
            .collect();
        let refs: Vec<&Run> = rs.iter().collect();
        let s = stats(&refs).unwrap();
        assert_eq!((s.runs, s.failures), (11, 1));
        assert_eq!((s.q.min, s.q.median, s.q.p95, s.q.max), (1.0, 5.5, 10.0, 10.0));
    }

    #[test]
    fn summary_json_and_cells() {
        let rs = [Some(0.12344), None, Some(0.5)];
        let s = summary(&rs, |r| *r);
        assert_eq!(
            s.json("missing"),
            json!({"runs": 3, "missing": 1, "min_s": 0.1234, "median_s": 0.3117, "p95_s": 0.5, "max_s": 0.5})
        );
        assert_eq!(s.md_cells(), "0.12 | 0.31 | 0.50 | 0.50");
        let none = summary(&[None::<f64>], |r| *r);
        assert_eq!(none.json("failures"), json!({"runs": 1, "failures": 1}));
        assert_eq!(none.md_cells(), "- | - | - | -");
    }

    #[test]
    fn unit_in_range() {
        let mut r = XorShift(12345);
        assert!((0..1000).map(|_| r.unit()).all(|u| (0.0..1.0).contains(&u)));
    }
}
