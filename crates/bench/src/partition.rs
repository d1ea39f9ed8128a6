//! `pgkeeper-bench partition [--runs N] [--out DIR]`: failover when the master is cut off by a
//! network partition (not killed), and the old master's fence, on real 3-node clusters whose
//! nodes each run in their own network namespace.
//!
//! For each configuration (keepalive_time x keepalive_count) and each run: a fresh cluster
//! (asynchronous replication), a client writing to node1 every 20 ms through node1's UNIX
//! socket, a random delay, then `isolate("node1")` at instant I. Three pollers, each on its
//! own thread and kept UNIX-socket connection, every 10 ms: node1's
//! `SELECT commits FROM pgkeeper.status()` (first answer other than 'open': the fence F), and
//! node2's and node3's `pg_is_in_recovery()` (first false: the promotion seen). The promotion
//! instant P is the new master's log line `pg_keeper: promoting <node>: elected in term`
//! (millisecond timestamps; the poll is the fallback). Per run: I->F (time to fence), I->P
//! (failover time), P-F (safety margin, must be > 0), and every write acknowledged by node1
//! must have been acknowledged before P (violations, must be 0).
//!
//! Results: `partition.md`, `partition.json` in the output directory. See `bench/README.md`.
//!

use super::{machine, median_of, now_utc, pace, parse_log_time, secs, summary, write_json, Summary, XorShift};
use anyhow::{anyhow, bail, Context, Result};
use keeper_harness::{wait_until, Cluster, Node};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WRITE_EVERY: Duration = Duration::from_millis(20);
const POLL_EVERY: Duration = Duration::from_millis(10);
/// The writer's loop waits at most this long for one attempt before it starts the next.
const ATTEMPT_BOUND: Duration = Duration::from_secs(1);
/// I -> promotion seen, at most.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(60);
/// The client goes on writing to node1 this long after the promotion is seen.
const WRITE_AFTER_P: Duration = Duration::from_millis(500);
const TABLE: &str = "CREATE TABLE bench_partition (id bigint PRIMARY KEY, \
     at timestamptz NOT NULL DEFAULT clock_timestamp())";

/// One benchmarked configuration.
#[derive(Clone, Copy)]
struct Conf {
    label: &'static str,
    keepalive_time: f64,
    keepalive_count: u32,
}

impl Conf {
    /// How long a commit waits at node1's closed gate before it is rolled back (the
    /// extension's `fence::max_wait`): (keepalive_count + 2) x keepalive_time, at least 2 s.
    fn gate_wait(&self) -> f64 {
        (self.keepalive_time * (self.keepalive_count as f64 + 2.0)).max(2.0)
    }
}

/// The defaults (5 s x 1) are left out: one run of them took 46 s here (slower start, 3-10 s
/// to fail over, 15 s for the commits blocked at node1's gate to be rolled back), against
/// 10-20 s for the others: 10 runs of the three would take ~12 min, over the mode's 10-minute
/// budget on the 2-core machine.
const CONFS: [Conf; 2] = [
    Conf { label: "1 s x 3", keepalive_time: 1.0, keepalive_count: 3 },
    Conf { label: "1 s x 1", keepalive_time: 1.0, keepalive_count: 1 },
];

/// What one run measured. Times in seconds relative to I (the end of the `isolate` call)
/// unless said otherwise.
#[derive(Default, Clone)]
struct Run {
    conf: usize,
    index: usize,
    /// Random delay between the client's first acknowledged write and the isolation.
    delay_s: f64,
    /// How long `cluster.isolate("node1")` took (nft in node1's namespace); I is its end.
    isolate_call_s: f64,
    /// First poll of node1 answering commits <> 'open', and that answer.
    fence_s: Option<f64>,
    fence_state: Option<String>,
    /// Gap between that poll and the previous one (the fence instant's uncertainty).
    fence_bracket_s: Option<f64>,
    /// Polls of node1 with commits <> 'open' before the isolation (expected 0).
    closed_before_i: usize,
    /// Polls of node1 answering 'open' again after F (expected 0).
    reopened_after_f: usize,
    /// The standby that promoted, first poll seeing it out of recovery, its uncertainty.
    new_master: Option<String>,
    promotion_poll_s: Option<f64>,
    promotion_poll_bracket_s: Option<f64>,
    /// The new master's log: `promoting <it>: elected in term`, `<it> promoted`.
    promoting_log_s: Option<f64>,
    promoted_log_s: Option<f64>,
    /// Standbys seen out of recovery (expected 1), and when each was first seen so.
    promoted_standbys: usize,
    promotions: Vec<(String, f64)>,
    /// Only when more than one standby left recovery: every node's `pgkeeper.status()` at the
    /// end of the run and the standbys' `pg_keeper:` log lines after the isolation.
    anomaly_status: Vec<String>,
    anomaly_log: Vec<String>,
    /// The last write acknowledged by node1 (relative to I), and how many node1
    /// acknowledged after F and after P.
    last_ack_s: Option<f64>,
    acks_after_f: usize,
    acks_after_p: usize,
    attempts: usize,
    acked: usize,
    /// Attempts still unfinished when the client was stopped (blocked at the gate past the
    /// wait; they count as not acknowledged).
    unresolved: usize,
    /// The first error of a write refused by node1 after F.
    refusal: Option<String>,
    /// Writes acknowledged by node1 missing on the new master (asynchronous replication:
    /// expected for the writes acknowledged between the isolation and the fence).
    lost: Option<usize>,
    error: Option<String>,
}

impl Run {
    /// The promotion instant used: the log line, else the poll.
    fn p(&self) -> Option<f64> {
        self.promoting_log_s.or(self.promotion_poll_s)
    }
    fn margin(&self) -> Option<f64> {
        Some(self.p()? - self.fence_s?)
    }
    fn margin_poll(&self) -> Option<f64> {
        Some(self.promotion_poll_s? - self.fence_s?)
    }
    /// P minus the last ack by node1 (must be > 0).
    fn ack_margin(&self) -> Option<f64> {
        Some(self.p()? - self.last_ack_s?)
    }
    fn ok(&self) -> bool {
        self.error.is_none() && self.fence_s.is_some() && self.p().is_some()
    }
    /// A run is unsafe when node1 acknowledged after P or P came before F.
    fn violation(&self) -> bool {
        self.acks_after_p > 0 || self.margin().is_some_and(|m| m <= 0.0)
    }
}

/// The 1/5/15-minute load averages when the benchmark started (other work on the machine
/// shows in the timings).
static LOAD_AT_START: Mutex<Option<String>> = Mutex::new(None);

pub(super) fn run(runs: usize, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rng = XorShift::from_time();
    *LOAD_AT_START.lock().unwrap() = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let mut all: Vec<Run> = Vec::new();
    let started = Instant::now();
    for (ci, conf) in CONFS.iter().enumerate() {
        for i in 0..runs {
            let mut r = Run { conf: ci, index: i + 1, ..Default::default() };
            let t0 = Instant::now();
            if let Err(e) = one_run(conf, &mut rng, &mut r) {
                r.error = Some(format!("{e:#}"));
            }
            let f = |x: Option<f64>| x.map(|v| format!("{v:.3} s")).unwrap_or("-".into());
            eprintln!(
                "partition run {}/{runs} {}: I->F {}, I->P {} ({}), P-F {}, last node1 ack {}, acks after P {}, new master {}, lost {} (run took {:.0} s){}",
                i + 1,
                conf.label,
                f(r.fence_s),
                f(r.p()),
                if r.promoting_log_s.is_some() { "log" } else { "poll" },
                f(r.margin()),
                f(r.last_ack_s),
                r.acks_after_p,
                r.new_master.as_deref().unwrap_or("?"),
                r.lost.map(|l| l.to_string()).unwrap_or("?".into()),
                t0.elapsed().as_secs_f64(),
                r.error.as_deref().map(|e| format!("; FAILED: {e}")).unwrap_or_default()
            );
            if r.promoted_standbys > 1 {
                eprintln!(
                    "partition run {}/{runs} {}: ANOMALY: {} standbys left recovery: {:?}; status: {}\n  {}",
                    i + 1,
                    conf.label,
                    r.promoted_standbys,
                    r.promotions,
                    r.anomaly_status.join("; "),
                    r.anomaly_log.join("\n  ")
                );
            }
            all.push(r);
            write_outputs(out, runs, &all, started.elapsed())?;
        }
    }
    write_outputs(out, runs, &all, started.elapsed())?;
    print!("{}", std::fs::read_to_string(out.join("partition.md"))?);
    eprintln!("results in {}", out.display());
    Ok(())
}

// ------------------------------------------------------------------------------ one run

fn one_run(conf: &Conf, rng: &mut XorShift, r: &mut Run) -> Result<()> {
    let cluster = Cluster::builder("bench-part")
        .netns(true)
        .standbys(2)
        .keeper(true)
        .conf(&format!("pg_keeper.keepalive_time = {}", conf.keepalive_time))
        .conf(&format!("pg_keeper.keepalive_count = {}", conf.keepalive_count))
        .build()
        .context("building the cluster")?;
    let res = measure(&cluster, conf, rng, r);
    drop(cluster); // tear down (servers, namespaces) before the next run
    res
}

/// `CREATE EXTENSION pg_keeper`, the three nodes registered with their network addresses
/// (so the partition cuts pg_keeper's traffic), the table; then every worker connected and
/// node1's commit gate open.
fn prepare(cluster: &Cluster) -> Result<()> {
    {
        let mut c = cluster.node("node1").try_connect()?;
        c.batch_execute("CREATE EXTENSION pg_keeper")?;
        for n in cluster.nodes() {
            let ci = n.conninfo();
            c.query_one("SELECT pgkeeper.add_node($1, $2)", &[&n.name(), &ci])
                .with_context(|| format!("add_node {}", n.name()))?;
        }
        c.batch_execute(TABLE)?;
    }
    let status = |n: &Node| {
        n.query("SELECT state, commits FROM pgkeeper.status()")
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default()))
            .unwrap_or_default()
    };
    let ok = || {
        cluster.nodes().iter().all(|n| {
            let (state, commits) = status(n);
            if n.name() == "node1" {
                state.starts_with("connected, 2") && commits == "open"
            } else {
                state.starts_with("connected to node1")
            }
        })
    };
    wait_until(Duration::from_secs(60), ok).map_err(|_| {
        let s: Vec<String> = cluster.nodes().iter().map(|n| format!("{}: {:?}", n.name(), status(n))).collect();
        anyhow!("workers did not all connect within 60 s: {}", s.join("; "))
    })
}

fn measure(cluster: &Cluster, conf: &Conf, rng: &mut XorShift, r: &mut Run) -> Result<()> {
    let n1 = cluster.node("node1");
    prepare(cluster)?;
    let standbys: Vec<&Node> = cluster.nodes().iter().filter(|n| n.name() != "node1").collect();

    let epoch = Instant::now();
    let writer = Writer::start(unix_config(n1, "pgkeeper-bench-writer"), epoch)?;
    let fence_poll = Poller::start(n1, "SELECT commits FROM pgkeeper.status()", epoch)?;
    let rec_polls: Vec<Poller> =
        standbys.iter().map(|n| Poller::start(n, "SELECT pg_is_in_recovery()::text", epoch)).collect::<Result<_>>()?;

    let warm = wait_until(Duration::from_secs(20), || writer.snapshot().iter().any(|a| a.ok));
    if warm.is_err() {
        bail!("node1 acknowledged no write before the isolation: {:?}", writer.last_error());
    }
    r.delay_s = conf.keepalive_time * rng.unit();
    std::thread::sleep(Duration::from_secs_f64(r.delay_s));
    let call = Instant::now();
    let i_start_wall = SystemTime::now();
    cluster.isolate("node1").context("isolating node1")?;
    let i_wall = SystemTime::now();
    let i = epoch.elapsed().as_secs_f64();
    r.isolate_call_s = call.elapsed().as_secs_f64();

    // Until a standby is seen out of recovery, then the client a little longer.
    let deadline = Instant::now() + FAILOVER_DEADLINE;
    let seen = loop {
        if rec_polls.iter().any(|p| p.first_after(i, |v| v == "false").is_some()) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if seen {
        std::thread::sleep(WRITE_AFTER_P);
    }
    // Stop the client; commits blocked at node1's gate give up after gate_wait().
    let attempts = writer.stop(Duration::from_secs_f64(conf.gate_wait() + 1.0));
    let fence_samples = fence_poll.stop();
    let rec_samples: Vec<Vec<Sample>> = rec_polls.into_iter().map(|p| p.stop()).collect();
    let rel = |t: f64| t - i;

    // ---- node1's fence
    r.closed_before_i = fence_samples.iter().filter(|s| s.t < i && s.v.as_deref().is_some_and(|v| v != "open")).count();
    if let Some(k) = fence_samples.iter().position(|s| s.t >= i && s.v.as_deref().is_some_and(|v| v != "open")) {
        let s = &fence_samples[k];
        r.fence_s = Some(rel(s.t));
        r.fence_state = s.v.clone();
        r.fence_bracket_s = k.checked_sub(1).map(|j| s.t - fence_samples[j].t);
        r.reopened_after_f = fence_samples[k..].iter().filter(|x| x.v.as_deref() == Some("open")).count();
    }

    // ---- the promotion: polls, then the new master's log
    let mut firsts: Vec<(usize, usize)> = Vec::new(); // (standby index, sample index)
    for (si, ss) in rec_samples.iter().enumerate() {
        if let Some(k) = ss.iter().position(|s| s.t >= i && s.v.as_deref() == Some("false")) {
            firsts.push((si, k));
        }
    }
    r.promoted_standbys = firsts.len();
    r.promotions = firsts.iter().map(|&(si, k)| (standbys[si].name().to_string(), rel(rec_samples[si][k].t))).collect();
    if firsts.len() > 1 {
        r.anomaly_status = cluster
            .nodes()
            .iter()
            .map(|n| {
                let row = n
                    .query("SELECT mode, state, commits, term, pg_is_in_recovery() FROM pgkeeper.status()")
                    .ok()
                    .and_then(|rows| rows.into_iter().next())
                    .map(|r| r.into_iter().map(|c| c.unwrap_or_default()).collect::<Vec<_>>().join(" / "))
                    .unwrap_or_else(|| "?".into());
                format!("{}: {row}", n.name())
            })
            .collect();
        let wall = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let (since, i_s) = (wall(i_start_wall) - 0.01, wall(i_wall));
        for n in &standbys {
            for l in n.log_contents().lines().filter(|l| l.contains("pg_keeper:")) {
                if let Some(t) = parse_log_time(l) {
                    if t >= since {
                        let msg = l.split_once("pg_keeper:").map(|x| x.1).unwrap_or(l).trim();
                        r.anomaly_log.push(format!("{} {:+.3} s: {msg}", n.name(), t - i_s));
                    }
                }
            }
        }
    }
    if let Some(&(si, k)) = firsts.iter().min_by(|a, b| rec_samples[a.0][a.1].t.total_cmp(&rec_samples[b.0][b.1].t)) {
        let node = standbys[si];
        let ss = &rec_samples[si];
        r.new_master = Some(node.name().to_string());
        r.promotion_poll_s = Some(rel(ss[k].t));
        r.promotion_poll_bracket_s = k.checked_sub(1).map(|j| ss[k].t - ss[j].t);
        let log = node.log_contents();
        let name = node.name();
        r.promoting_log_s =
            log_time(&log, &format!("pg_keeper: promoting {name}: elected in term"), i_start_wall, i_wall);
        r.promoted_log_s = log_time(&log, &format!("pg_keeper: {name} promoted"), i_start_wall, i_wall);
    }

    // ---- the client
    r.attempts = attempts.started;
    r.unresolved = attempts.started.saturating_sub(attempts.done.len());
    let acked: Vec<&Attempt> = attempts.done.iter().filter(|a| a.ok).collect();
    r.acked = acked.len();
    r.last_ack_s = acked.iter().map(|a| rel(a.end)).max_by(|a, b| a.total_cmp(b));
    if let Some(f) = r.fence_s {
        r.acks_after_f = acked.iter().filter(|a| rel(a.end) > f).count();
        r.refusal = attempts
            .done
            .iter()
            .filter(|a| !a.ok && rel(a.end) > f)
            .min_by(|a, b| a.end.total_cmp(&b.end))
            .and_then(|a| a.err.clone());
    }
    if let Some(p) = r.p() {
        r.acks_after_p = acked.iter().filter(|a| rel(a.end) >= p).count();
    }

    // ---- node1's acknowledged writes on the new master (asynchronous: some are lost)
    if let Some(nm) = r.new_master.clone() {
        let node = cluster.node(&nm);
        let have: std::collections::HashSet<i64> =
            node.try_connect()?.query("SELECT id FROM bench_partition", &[])?.iter().map(|row| row.get(0)).collect();
        r.lost = Some(acked.iter().filter(|a| !have.contains(&a.id)).count());
    }

    if !seen {
        bail!(
            "no standby left recovery within {FAILOVER_DEADLINE:?} of the isolation; node1 commits {:?}; {}",
            fence_samples.last().and_then(|s| s.v.clone()),
            standbys
                .iter()
                .map(|n| format!(
                    "{}: {:?}",
                    n.name(),
                    n.query_one("SELECT state FROM pgkeeper.status()").unwrap_or_else(|e| Some(e.to_string()))
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if r.fence_s.is_none() {
        bail!("node1's commits never left 'open' after the isolation (last: {:?})", fence_samples.last().map(|s| &s.v));
    }
    Ok(())
}

/// Seconds from I (`i_wall`) to the first line of `log` containing `needle` logged at or after
/// the isolation's start (`since`, 10 ms of slack for the millisecond timestamps).
fn log_time(log: &str, needle: &str, since: SystemTime, i_wall: SystemTime) -> Option<f64> {
    let s = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let (since, i) = (s(since), s(i_wall));
    log.lines().filter(|l| l.contains(needle)).filter_map(parse_log_time).find(|t| *t > since - 0.01).map(|t| t - i)
}

/// A connection config over the node's UNIX socket (unaffected by the partition).
fn unix_config(n: &Node, app: &str) -> postgres::Config {
    let mut c = postgres::Config::new();
    c.host_path(n.sock_dir())
        .port(n.port())
        .user("postgres")
        .dbname("postgres")
        .application_name(app)
        .connect_timeout(Duration::from_secs(1));
    c
}

// ------------------------------------------------------------------------------ pollers

/// One answer: when (seconds since the run's epoch, midpoint of send and receive) and the
/// value (None: error, the connection is made again at the next period).
#[derive(Clone, Debug)]
struct Sample {
    t: f64,
    v: Option<String>,
}

/// Asks one node `sql` every 10 ms on a kept UNIX-socket connection, on its own thread.
struct Poller {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(n: &Node, sql: &str, epoch: Instant) -> Result<Poller> {
        let cfg = unix_config(n, "pgkeeper-bench-poller");
        let sql = sql.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let handle = std::thread::Builder::new().name(format!("bench-poll-{}", n.name())).spawn(move || {
            let mut conn: Option<postgres::Client> = None;
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = cfg.connect(postgres::NoTls).ok();
                }
                let t0 = epoch.elapsed().as_secs_f64();
                let v =
                    conn.as_mut().and_then(|c| c.query_one(sql.as_str(), &[]).ok()).map(|row| row.get::<_, String>(0));
                let t1 = epoch.elapsed().as_secs_f64();
                if v.is_none() {
                    conn = None;
                }
                out.lock().unwrap().push(Sample { t: (t0 + t1) / 2.0, v });
                pace(&mut next, POLL_EVERY);
            }
        })?;
        Ok(Poller { stop, samples, handle: Some(handle) })
    }

    /// The first sample after `t` whose value satisfies `f`.
    fn first_after(&self, t: f64, f: impl Fn(&str) -> bool) -> Option<f64> {
        self.samples.lock().unwrap().iter().find(|s| s.t >= t && s.v.as_deref().is_some_and(&f)).map(|s| s.t)
    }

    fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

// ------------------------------------------------------------------------------ the client

#[derive(Clone, Debug)]
struct Attempt {
    id: i64,
    /// Seconds since the run's epoch.
    end: f64,
    ok: bool,
    err: Option<String>,
}

struct Attempts {
    started: usize,
    done: Vec<Attempt>,
}

/// Inserts a row into node1 every 20 ms, each time on a fresh UNIX-socket connection and on
/// its own thread; the loop waits at most 1 s for an attempt (a commit blocked at the gate
/// does not stall it longer).
struct Writer {
    stop: Arc<AtomicBool>,
    started: Arc<AtomicI64>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(cfg: postgres::Config, epoch: Instant) -> Result<Writer> {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicI64::new(0));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (s, st, at) = (stop.clone(), started.clone(), attempts.clone());
        let handle = std::thread::Builder::new().name("bench-partition-writer".into()).spawn(move || {
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                let my = st.fetch_add(1, Ordering::SeqCst) + 1;
                let (cfg, at) = (cfg.clone(), at.clone());
                let t = std::thread::spawn(move || {
                    let res = (|| -> Result<(), postgres::Error> {
                        let mut c = cfg.connect(postgres::NoTls)?;
                        c.execute("INSERT INTO bench_partition (id) VALUES ($1)", &[&my])?;
                        Ok(())
                    })();
                    let end = epoch.elapsed().as_secs_f64();
                    let a = match res {
                        Ok(()) => Attempt { id: my, end, ok: true, err: None },
                        Err(e) => Attempt {
                            id: my,
                            end,
                            ok: false,
                            err: Some(e.as_db_error().map(|d| d.message().to_string()).unwrap_or(e.to_string())),
                        },
                    };
                    at.lock().unwrap().push(a);
                });
                let t0 = Instant::now();
                while !t.is_finished() && t0.elapsed() < ATTEMPT_BOUND {
                    std::thread::sleep(Duration::from_millis(2));
                }
                pace(&mut next, WRITE_EVERY);
            }
        })?;
        Ok(Writer { stop, started, attempts, handle: Some(handle) })
    }

    fn snapshot(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    fn last_error(&self) -> Option<String> {
        self.attempts.lock().unwrap().iter().rev().find_map(|a| a.err.clone())
    }

    /// Stop starting attempts; wait up to `wait` for the ones in flight.
    fn stop(mut self, wait: Duration) -> Attempts {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let started = self.started.load(Ordering::SeqCst) as usize;
        let _ = wait_until(wait, || self.attempts.lock().unwrap().len() >= started);
        let mut done = self.snapshot();
        done.sort_by_key(|a| a.id);
        Attempts { started, done }
    }
}

// ------------------------------------------------------------------------------ outputs

fn write_outputs(out: &Path, runs_per_conf: usize, all: &[Run], took: Duration) -> Result<()> {
    let (date, machine) = (now_utc(), machine());
    let load = LOAD_AT_START.lock().unwrap().clone().unwrap_or_default();
    let per_conf: Vec<Vec<&Run>> = (0..CONFS.len()).map(|ci| all.iter().filter(|r| r.conf == ci).collect()).collect();
    let f2 = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or("-".into());
    let f3 = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or("-".into());
    type Getter = fn(&Run) -> Option<f64>;
    let measures: [(&str, &str, Getter); 6] = [
        ("time_to_fence", "**I -> F**: isolation -> node1's commits not 'open' (poll)", |r| r.fence_s),
        (
            "failover",
            "**I -> P**: isolation -> promotion (new master's log line `promoting ...: elected in term`)",
            |r| r.p(),
        ),
        ("safety_margin", "**P - F**: safety margin (must be > 0)", |r| r.margin()),
        ("promotion_seen", "I -> new master seen out of recovery (poll)", |r| r.promotion_poll_s),
        ("safety_margin_poll", "P(poll) - F", |r| r.margin_poll()),
        ("last_ack_margin", "P - last write acknowledged by node1 (must be > 0)", |r| r.ack_margin()),
    ];

    // ---- markdown
    let mut md = String::new();
    writeln!(md, "# pg_keeper partition benchmark: the master isolated\n")?;
    writeln!(md, "- date: {date}")?;
    writeln!(md, "- machine: {machine}")?;
    writeln!(md, "- load average when the benchmark started (/proc/loadavg): {load}")?;
    writeln!(
        md,
        "- method: `pgkeeper-bench partition` ({runs_per_conf} runs per configuration, {:.1} min in all); 3 nodes, \
         each in its own network namespace, asynchronous replication; a client writes to node1 every 20 ms \
         through its UNIX socket (fresh connection per write); after a random delay in [0, keepalive_time) node1 \
         is isolated (nftables drops all its traffic) at I. Pollers every 10 ms over UNIX sockets: node1's \
         `pgkeeper.status()` `commits` (first answer not 'open' = F) and node2's/node3's `pg_is_in_recovery()`. \
         P = the new master's log line `pg_keeper: promoting <node>: elected in term` (ms timestamps; the \
         decision to promote, so before it accepts anything: the margin is conservative); P(poll) = first poll \
         seeing it out of recovery. See `bench/README.md`.",
        took.as_secs_f64() / 60.0
    )?;
    writeln!(
        md,
        "- not run: the defaults (5 s x 1), ~45 s per run here against 10-20 s for the others (10 runs of the \
         three: ~12 min, over the mode's 10-minute budget). The client waits for node1's blocked commits to be rolled back \
         ((keepalive_count + 2) x keepalive_time) before each run ends.\n"
    )?;

    writeln!(md, "| keepalive_time x count | runs | failures | I -> F median s | p95 | max | I -> P median s | p95 | max | P - F min s | median | p95 | max | runs with P - F <= 0 | node1 acks after P | new master |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for (ci, conf) in CONFS.iter().enumerate() {
        let rs = &per_conf[ci];
        let s = |g: Getter| summary(rs, |r| g(r));
        let (fe, fo, ma) = (s(|r| r.fence_s), s(|r| r.p()), s(|r| r.margin()));
        let q3 = |x: &Summary| match &x.q {
            Some(q) => format!("{:.2} | {:.2} | {:.2}", q.median, q.p95, q.max),
            None => "- | - | -".into(),
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            conf.label,
            rs.len(),
            rs.iter().filter(|r| !r.ok()).count(),
            q3(&fe),
            q3(&fo),
            ma.md_cells(),
            rs.iter().filter(|r| r.margin().is_some_and(|m| m <= 0.0)).count(),
            rs.iter().map(|r| r.acks_after_p).sum::<usize>(),
            masters(rs),
        )?;
    }
    writeln!(
        md,
        "\nUnsafe runs (node1 acknowledged a write at or after P, or P <= F): {} of {} (expected 0).",
        all.iter().filter(|r| r.violation()).count(),
        all.len()
    )?;

    writeln!(md, "\n## Every measure (seconds)\n")?;
    writeln!(md, "| keepalive_time x count | measure | runs | missing | min | median | p95 | max |")?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for (ci, conf) in CONFS.iter().enumerate() {
        for (_, label, g) in &measures {
            let s = summary(&per_conf[ci], |r| g(r));
            writeln!(md, "| {} | {label} | {} | {} | {} |", conf.label, s.runs, s.failures, s.md_cells())?;
        }
    }
    let col = |rs: &[&Run], g: &dyn Fn(&Run) -> Option<f64>| median_of(rs.iter().filter_map(|r| g(r)).collect());
    writeln!(md, "\n## Where the time goes (medians, seconds after I)\n")?;
    writeln!(md, "| keepalive_time x count | delay before I (random) | `isolate` call | last ack by node1 | F | P: promoting (log) | promoted (log) | out of recovery (poll) | F poll gap | P poll gap | acks by node1 after F (total) | writes lost on the new master (total, async) | unresolved writes (total) |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (ci, conf) in CONFS.iter().enumerate() {
        let rs = &per_conf[ci];
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            conf.label,
            f2(col(rs, &|r| Some(r.delay_s))),
            f3(col(rs, &|r| Some(r.isolate_call_s))),
            f3(col(rs, &|r| r.last_ack_s)),
            f3(col(rs, &|r| r.fence_s)),
            f3(col(rs, &|r| r.promoting_log_s)),
            f3(col(rs, &|r| r.promoted_log_s)),
            f3(col(rs, &|r| r.promotion_poll_s)),
            f3(col(rs, &|r| r.fence_bracket_s)),
            f3(col(rs, &|r| r.promotion_poll_bracket_s)),
            rs.iter().map(|r| r.acks_after_f).sum::<usize>(),
            rs.iter().filter_map(|r| r.lost).sum::<usize>(),
            rs.iter().map(|r| r.unresolved).sum::<usize>(),
        )?;
    }

    writeln!(md, "\n## Runs\n")?;
    writeln!(md, "| configuration | run | delay | I -> F | node1 then | I -> P (log) | I -> P (poll) | P - F | last ack by node1 | acks after F / after P | acked / attempts | lost | new master | first refusal by node1 after F |")?;
    writeln!(md, "|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|---|---|")?;
    for r in all {
        writeln!(
            md,
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} |",
            CONFS[r.conf].label,
            r.index,
            r.delay_s,
            f3(r.fence_s),
            r.fence_state.as_deref().unwrap_or("-"),
            f3(r.promoting_log_s),
            f3(r.promotion_poll_s),
            f3(r.margin()),
            f3(r.last_ack_s),
            r.acks_after_f,
            r.acks_after_p,
            r.acked,
            r.attempts,
            r.lost.map(|l| l.to_string()).unwrap_or("-".into()),
            r.new_master.as_deref().unwrap_or("-"),
            r.refusal.as_deref().unwrap_or("-").replace('|', "/"),
        )?;
    }
    let odd: Vec<String> = all
        .iter()
        .flat_map(|r| {
            let mut v = Vec::new();
            let tag = format!("{} run {}", CONFS[r.conf].label, r.index);
            if let Some(e) = &r.error {
                v.push(format!("{tag}: FAILED: {}", e.replace('\n', " ")));
            }
            if r.closed_before_i > 0 {
                v.push(format!(
                    "{tag}: node1's commits were not 'open' in {} poll(s) before the isolation",
                    r.closed_before_i
                ));
            }
            if r.reopened_after_f > 0 {
                v.push(format!("{tag}: node1's commits 'open' again in {} poll(s) after F", r.reopened_after_f));
            }
            if r.promoted_standbys > 1 {
                let when: Vec<String> = r.promotions.iter().map(|(n, t)| format!("{n} at I + {t:.3} s")).collect();
                v.push(format!(
                    "{tag}: {} standbys seen out of recovery ({}); status at the end: {}",
                    r.promoted_standbys,
                    when.join(", "),
                    r.anomaly_status.join("; ")
                ));
                for l in &r.anomaly_log {
                    v.push(format!("{tag}: log (time after I): `{}`", l.replace('`', "'")));
                }
            }
            if r.new_master.is_some() && r.promoting_log_s.is_none() {
                v.push(format!(
                    "{tag}: no `promoting ...: elected in term` line in the new master's log; P from the poll"
                ));
            }
            if r.unresolved > 0 {
                v.push(format!("{tag}: {} write(s) still unfinished when the client stopped", r.unresolved));
            }
            if r.violation() {
                v.push(format!(
                    "{tag}: UNSAFE: {} ack(s) by node1 at or after P; P - F = {}",
                    r.acks_after_p,
                    f3(r.margin())
                ));
            }
            v
        })
        .collect();
    if !odd.is_empty() {
        writeln!(md, "\n## Failures and anomalies\n")?;
        for o in odd {
            writeln!(md, "- {o}")?;
        }
    }
    writeln!(md, "\nRaw numbers: `partition.json`.")?;
    std::fs::write(out.join("partition.md"), md)?;

    // ---- json
    let configurations: Vec<Value> = CONFS
        .iter()
        .zip(&per_conf)
        .map(|(conf, rs)| {
            let mut summ = serde_json::Map::new();
            for (key, _, g) in &measures {
                summ.insert((*key).into(), summary(rs, |r| g(r)).json("missing"));
            }
            let runs: Vec<Value> = rs
                .iter()
                .map(|r| {
                    let o = |x: Option<f64>| x.map(secs);
                    json!({
                        "run": r.index,
                        "delay_s": secs(r.delay_s),
                        "isolate_call_s": secs(r.isolate_call_s),
                        "fence_s": o(r.fence_s),
                        "fence_state": r.fence_state,
                        "fence_poll_gap_s": o(r.fence_bracket_s),
                        "promoting_log_s": o(r.promoting_log_s),
                        "promoted_log_s": o(r.promoted_log_s),
                        "promotion_poll_s": o(r.promotion_poll_s),
                        "promotion_poll_gap_s": o(r.promotion_poll_bracket_s),
                        "p_source": if r.promoting_log_s.is_some() { "log" } else if r.promotion_poll_s.is_some() { "poll" } else { "none" },
                        "safety_margin_s": o(r.margin()),
                        "safety_margin_poll_s": o(r.margin_poll()),
                        "last_ack_s": o(r.last_ack_s),
                        "last_ack_margin_s": o(r.ack_margin()),
                        "acks_after_f": r.acks_after_f,
                        "acks_after_p": r.acks_after_p,
                        "attempts": r.attempts,
                        "acked": r.acked,
                        "unresolved": r.unresolved,
                        "lost_async": r.lost,
                        "new_master": r.new_master,
                        "promoted_standbys": r.promoted_standbys,
                        "promotions": r.promotions.iter().map(|(n, t)| json!({"node": n, "seen_s": secs(*t)})).collect::<Vec<_>>(),
                        "anomaly_status": r.anomaly_status,
                        "anomaly_log": r.anomaly_log,
                        "closed_before_isolation": r.closed_before_i,
                        "reopened_after_fence": r.reopened_after_f,
                        "first_refusal_after_f": r.refusal,
                        "violation": r.violation(),
                        "error": r.error,
                    })
                })
                .collect();
            json!({
                "label": conf.label,
                "keepalive_time_s": conf.keepalive_time,
                "keepalive_count": conf.keepalive_count,
                "runs": rs.len(),
                "failures": rs.iter().filter(|r| !r.ok()).count(),
                "violations": rs.iter().filter(|r| r.violation()).count(),
                "acks_after_p": rs.iter().map(|r| r.acks_after_p).sum::<usize>(),
                "summary": Value::Object(summ),
                "per_run": runs,
            })
        })
        .collect();
    write_json(
        &out.join("partition.json"),
        &date,
        &machine,
        "runs_per_configuration",
        runs_per_conf,
        json!({
            "write_interval_ms": WRITE_EVERY.as_millis() as u64,
            "poll_interval_ms": POLL_EVERY.as_millis() as u64,
            "p_source": "the new master's log line `pg_keeper: promoting <node>: elected in term` (poll if missing)",
            "replication": "asynchronous",
            "loadavg_at_start": load,
            "defaults_run": false,
            "took_min": (took.as_secs_f64() / 60.0 * 10.0).round() / 10.0,
            "configurations": configurations,
        }),
    )
}

fn masters(rs: &[&Run]) -> String {
    let mut m: Vec<(String, usize)> = Vec::new();
    for n in rs.iter().filter_map(|r| r.new_master.clone()) {
        match m.iter_mut().find(|(x, _)| *x == n) {
            Some(e) => e.1 += 1,
            None => m.push((n, 1)),
        }
    }
    if m.is_empty() {
        return "-".into();
    }
    m.iter().map(|(n, c)| format!("{n} x{c}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_and_violations() {
        let r = Run {
            fence_s: Some(0.7),
            promoting_log_s: Some(3.9),
            promotion_poll_s: Some(4.2),
            last_ack_s: Some(0.69),
            ..Default::default()
        };
        assert!((r.margin().unwrap() - 3.2).abs() < 1e-9);
        assert!((r.margin_poll().unwrap() - 3.5).abs() < 1e-9);
        assert!(r.ok() && !r.violation());
        let late = Run { acks_after_p: 1, ..r.clone() };
        assert!(late.violation());
        let early = Run { promoting_log_s: Some(0.5), ..r.clone() };
        assert!(early.violation());
        let poll_only = Run { promoting_log_s: None, ..r };
        assert_eq!(poll_only.p(), Some(4.2));
    }

    #[test]
    fn log_time_is_relative_to_the_isolation() {
        let i = UNIX_EPOCH + Duration::from_secs_f64(86401.0);
        let log = "1970-01-02 00:00:00.900 UTC [1] x pg_keeper: promoting node2: elected in term 1\n\
                   1970-01-02 00:00:03.250 UTC [1] x pg_keeper: promoting node2: elected in term 2\n";
        let t = log_time(log, "promoting node2: elected in term", i, i).unwrap();
        assert!((t - 2.25).abs() < 1e-6, "{t}");
        assert_eq!(log_time(log, "nothing", i, i), None);
    }
}
