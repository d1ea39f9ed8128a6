//! `pgkeeper-bench switchover [--runs N] [--out DIR]`: how long writes are unavailable during
//! a planned `pgkeeper switchover`, as a client sees it, on real local 3-node clusters.
//!
//! Each run: a fresh cluster (`FIRST 1 (node2, node3, node1)`, keepalive 1 s x 3), a client writing every
//! 20 ms on a fresh multi-host connection with `target_session_attrs=read-write`, a sampler
//! asking every node `NOT pg_is_in_recovery()` every 20 ms, and the real command run as a
//! subprocess: `pgkeeper switchover --to node2 --pgdata <node1's data dir> <node1's conninfo>`.
//! Write unavailability = the first write acknowledged by node2 minus the last one
//! acknowledged by node1 before it; also the command's own figure ("writes unavailable for
//! X s"), lost rows and the largest number of writable nodes seen at one sample.
//!
//! Results: `switchover.md`, `switchover.json` in the output directory. See `bench/README.md`.

use super::{
    build_cluster, client_conninfo, log_line_after, machine, median_of, now_utc, pace, prepare, q, secs, summary,
    write_json, Writer,
};
use anyhow::{anyhow, bail, Context, Result};
use keeper_harness::{wait_until, Cluster, Node};
use serde_json::json;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const KEEPALIVE_TIME: f64 = 1.0;
const KEEPALIVE_COUNT: u32 = 3;
const WRITE_EVERY: Duration = Duration::from_millis(20);
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// The whole `pgkeeper switchover` subprocess (it has its own timeouts, up to 120 s a step).
const COMMAND_DEADLINE: Duration = Duration::from_secs(300);
/// After the command: the wait for a write acknowledged by node2, if none came yet.
const NEW_ACK_DEADLINE: Duration = Duration::from_secs(30);
/// Target for the client-seen write unavailability (every run).
const TARGET_S: f64 = 1.0;
/// Patroni's `patronictl switchover`, measured the same way (from the issue).
const PATRONI_S: f64 = 1.4;
/// node2's worker removing itself from `synchronous_standby_names` after the promotion
/// (warning when the list becomes empty, log line otherwise).
const SELF_SYNC_LINES: [&str; 2] =
    ["pg_keeper: synchronous_standby_names named this node", "pg_keeper: synchronous_standby_names changed from"];

/// What one run measured. Times in seconds after the launch of the command unless said
/// otherwise.
#[derive(Default, Clone)]
struct Run {
    index: usize,
    /// The command exited with 0.
    command_ok: bool,
    /// How long the whole command took.
    command_total_s: Option<f64>,
    /// "writes unavailable for X s" as printed by the command.
    command_figure_s: Option<f64>,
    /// First ack by node2 minus the last ack by node1 before it.
    gap_s: Option<f64>,
    last_old_ack_s: Option<f64>,
    first_new_ack_s: Option<f64>,
    /// When the attempt that node2 acknowledged first had started.
    first_new_started_s: Option<f64>,
    /// The sampler: last sample with node1 writable -> first sample with node2 writable.
    no_writable_s: Option<f64>,
    node2_writable_s: Option<f64>,
    /// The largest number of nodes answering `NOT pg_is_in_recovery()` = true at one sample.
    max_writable: usize,
    samples: usize,
    /// The largest number of node2 backends seen waiting in `SyncRep` after its promotion.
    max_syncrep_waiters_node2: i64,
    /// Stages, from the command's stderr lines (time the line was read).
    stopping_s: Option<f64>,
    promoting_s: Option<f64>,
    promoted_s: Option<f64>,
    restarting_s: Option<f64>,
    /// node2's log: its worker removed node2 from synchronous_standby_names.
    self_sync_fixed_s: Option<f64>,
    attempts: usize,
    acked: usize,
    /// Acks by node1 after node2's first one (expected 0), and by node3 (expected 0).
    old_acks_after_new: usize,
    other_acks: usize,
    lost: Option<usize>,
    /// node2's synchronous_standby_names and its standbys' sync states at the end.
    final_sync_names: Option<String>,
    final_replication: Option<String>,
    errors: Vec<String>,
}

pub(super) fn run(runs: usize, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let exe = pgkeeper_program();
    let mut all: Vec<Run> = Vec::new();
    let started = Instant::now();
    for i in 0..runs {
        let mut r = Run { index: i + 1, ..Default::default() };
        if let Err(e) = one_run(&exe, &mut r) {
            r.errors.push(format!("{e:#}"));
        }
        let f = |x: Option<f64>| x.map(|v| format!("{v:.2} s")).unwrap_or("-".into());
        eprintln!(
            "switchover run {}/{runs}: client gap {} (command says {}; no writable node {}; promoted at {}, node2 left sync names at {}, first node2 ack at {}), lost {}, max writable {}, SyncRep waiters on node2 {}{}",
            i + 1,
            f(r.gap_s),
            f(r.command_figure_s),
            f(r.no_writable_s),
            f(r.promoted_s),
            f(r.self_sync_fixed_s),
            f(r.first_new_ack_s),
            r.lost.map(|l| l.to_string()).unwrap_or("?".into()),
            r.max_writable,
            r.max_syncrep_waiters_node2,
            if r.errors.is_empty() { String::new() } else { format!("; errors: {}", r.errors.join("; ")) }
        );
        all.push(r);
        write_outputs(out, runs, &all, started.elapsed())?;
    }
    write_outputs(out, runs, &all, started.elapsed())?;
    print!("{}", std::fs::read_to_string(out.join("switchover.md"))?);
    eprintln!("results in {}", out.display());
    Ok(())
}

fn one_run(exe: &Path, r: &mut Run) -> Result<()> {
    let cluster = build_cluster("bench-switch", KEEPALIVE_TIME, KEEPALIVE_COUNT, super::SYNC_NAMES)?;
    let res = measure(&cluster, exe, r);
    drop(cluster);
    res
}

// ------------------------------------------------------------------------------ the sampler

/// One sample: per node (cluster order), writable, and backends waiting in `SyncRep`.
struct Sample {
    t: f64,
    writable: Vec<bool>,
    syncrep: Vec<i64>,
}

/// Every 20 ms, asks every node `NOT pg_is_in_recovery()` on a kept connection (made again
/// when lost; a node that does not answer counts as not writable).
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(cluster: &Cluster, epoch: Instant) -> Result<Sampler> {
        let cfgs: Vec<postgres::Config> = cluster
            .nodes()
            .iter()
            .map(|n| {
                let mut c: postgres::Config = n.admin_conninfo().parse()?;
                c.connect_timeout(Duration::from_millis(500)).application_name("pgkeeper-bench-sampler");
                Ok(c)
            })
            .collect::<Result<_>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let handle = std::thread::Builder::new().name("bench-sampler".into()).spawn(move || {
            let mut conns: Vec<Option<postgres::Client>> = cfgs.iter().map(|_| None).collect();
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                let t = epoch.elapsed().as_secs_f64();
                let mut writable = Vec::new();
                let mut syncrep = Vec::new();
                for (i, cfg) in cfgs.iter().enumerate() {
                    if conns[i].is_none() {
                        conns[i] = cfg.connect(postgres::NoTls).ok();
                    }
                    let res = conns[i].as_mut().map(|c| {
                        c.query_one(
                            "SELECT NOT pg_is_in_recovery(), \
                             (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep')",
                            &[],
                        )
                    });
                    match res {
                        Some(Ok(row)) => {
                            writable.push(row.get::<_, bool>(0));
                            syncrep.push(row.get::<_, i64>(1));
                        }
                        _ => {
                            conns[i] = None;
                            writable.push(false);
                            syncrep.push(0);
                        }
                    }
                }
                out.lock().unwrap().push(Sample { t, writable, syncrep });
                pace(&mut next, SAMPLE_EVERY);
            }
        })?;
        Ok(Sampler { stop, samples, handle: Some(handle) })
    }

    fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

// ------------------------------------------------------------------------------ one run

fn measure(cluster: &Cluster, exe: &Path, r: &mut Run) -> Result<()> {
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    prepare(cluster, super::WRITES_TABLE)?;
    // Every standby streaming, node2 the synchronous one (the command checks it streams).
    let ready = || {
        q(n1, "SELECT string_agg(application_name || ':' || state || ':' || sync_state, ',' ORDER BY application_name) FROM pg_stat_replication")
            == "node2:streaming:sync,node3:streaming:potential"
    };
    wait_until(Duration::from_secs(60), ready).map_err(|_| {
        anyhow!(
            "the standbys did not all stream (node2 synchronous): {:?}",
            q(n1, "SELECT string_agg(application_name || ':' || state || ':' || sync_state, ',') FROM pg_stat_replication")
        )
    })?;

    let conninfo = client_conninfo(cluster);
    let idx = |name: &str| cluster.nodes().iter().position(|n| n.name() == name).unwrap();
    let (i1, i2) = (idx("node1"), idx("node2"));
    let (p1, p2) = (n1.port() as i32, n2.port() as i32);

    let epoch = Instant::now();
    let writer = Writer::start_every(&conninfo, epoch, WRITE_EVERY)?;
    let sampler = Sampler::start(cluster, epoch)?;
    // A second of normal writes first, at least one acknowledged by node1.
    let warm = wait_until(Duration::from_secs(20), || writer.snapshot().iter().any(|a| a.ok && a.port == Some(p1)));
    std::thread::sleep(Duration::from_secs(1));

    let launch_wall = SystemTime::now();
    let launch = epoch.elapsed().as_secs_f64();
    let res = if warm.is_err() {
        Err(anyhow!("the writer got no acknowledgement from node1 before the switchover: {:?}", writer.last_error()))
    } else {
        run_command(exe, n1, epoch, launch, r)
    };
    let command_end = Instant::now();
    // Go on until node2 acknowledged a write (it may still be waiting for its own name in
    // synchronous_standby_names), then half a second more.
    if res.is_ok() {
        let _ = wait_until(NEW_ACK_DEADLINE, || writer.snapshot().iter().any(|a| a.ok && a.port == Some(p2)));
        std::thread::sleep(Duration::from_millis(500));
    }
    let attempts = writer.stop();
    let samples = sampler.stop();
    res?;
    let rel = |t: f64| t - launch;

    // ---- the client's view
    r.attempts = attempts.len();
    let acked: Vec<i64> = attempts.iter().filter(|a| a.ok).map(|a| a.id).collect();
    r.acked = acked.len();
    r.other_acks = attempts.iter().filter(|a| a.ok && a.port != Some(p1) && a.port != Some(p2)).count();
    let first_new = attempts.iter().filter(|a| a.ok && a.port == Some(p2)).min_by(|a, b| a.end.total_cmp(&b.end));
    match first_new {
        Some(f) => {
            r.first_new_ack_s = Some(rel(f.end));
            r.first_new_started_s = Some(rel(f.start));
            let last_old = attempts
                .iter()
                .filter(|a| a.ok && a.port == Some(p1) && a.end < f.end)
                .max_by(|a, b| a.end.total_cmp(&b.end));
            r.last_old_ack_s = last_old.map(|a| rel(a.end));
            r.gap_s = last_old.map(|a| f.end - a.end);
            r.old_acks_after_new = attempts.iter().filter(|a| a.ok && a.port == Some(p1) && a.end > f.end).count();
        }
        None => r.errors.push(format!(
            "node2 acknowledged no write within {NEW_ACK_DEADLINE:?} of the command's end ({:.1} s ago); last client error: {:?}",
            command_end.elapsed().as_secs_f64(),
            attempts.iter().rev().find_map(|a| a.err.clone())
        )),
    }

    // ---- the sampler's view
    r.samples = samples.len();
    r.max_writable = samples.iter().map(|s| s.writable.iter().filter(|w| **w).count()).max().unwrap_or(0);
    let first_n2 = samples.iter().find(|s| s.t >= launch && s.writable[i2]);
    if let Some(f) = first_n2 {
        r.node2_writable_s = Some(rel(f.t));
        if let Some(l) = samples.iter().rev().find(|s| s.t < f.t && s.writable[i1]) {
            r.no_writable_s = Some(f.t - l.t);
        }
        r.max_syncrep_waiters_node2 = samples.iter().filter(|s| s.t >= f.t).map(|s| s.syncrep[i2]).max().unwrap_or(0);
    }

    // ---- node2's log: its worker dropping node2 from synchronous_standby_names
    let log = n2.log_contents();
    r.self_sync_fixed_s = SELF_SYNC_LINES
        .iter()
        .filter_map(|needle| log_line_after(&log, needle, launch_wall))
        .min_by(|a, b| a.total_cmp(b));

    // ---- no acknowledged row missing on node2; the replication state afterwards
    let have: std::collections::HashSet<i64> =
        n2.try_connect()?.query("SELECT id FROM bench_writes", &[])?.iter().map(|row| row.get(0)).collect();
    r.lost = Some(acked.iter().filter(|id| !have.contains(id)).count());
    r.final_sync_names = Some(q(n2, "SHOW synchronous_standby_names"));
    r.final_replication = Some(q(
        n2,
        "SELECT string_agg(application_name || ':' || state || ':' || sync_state, ',' ORDER BY application_name) FROM pg_stat_replication",
    ));
    if r.old_acks_after_new > 0 {
        r.errors.push(format!("node1 acknowledged {} write(s) after node2's first", r.old_acks_after_new));
    }
    Ok(())
}

/// Runs `pgkeeper switchover --to node2` as a subprocess; stage times from its stderr.
fn run_command(exe: &Path, n1: &Node, epoch: Instant, launch: f64, r: &mut Run) -> Result<()> {
    let data = n1.data_dir().to_str().ok_or_else(|| anyhow!("node1's data directory is not UTF-8"))?.to_string();
    let mut child = Command::new(exe)
        .args(["switchover", "--to", "node2", "--pgdata", &data, &n1.conninfo()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", exe.display()))?;
    let mut stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            lines.push((epoch.elapsed().as_secs_f64(), l));
        }
        lines
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if t0.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    r.command_total_s = Some(t0.elapsed().as_secs_f64());
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    let at = |needle: &str| err.iter().find(|(_, l)| l.contains(needle)).map(|(t, _)| t - launch);
    r.stopping_s = at("[switchover] stopping");
    r.promoting_s = at("; promoting it");
    r.promoted_s = at("writes were unavailable for");
    r.restarting_s = at("[switchover] restarting");
    r.command_figure_s = figure(&out);
    let transcript = || {
        format!(
            "stdout: {:?}; stderr: {}",
            out.trim(),
            err.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join(" | ")
        )
    };
    match status {
        None => bail!("pgkeeper switchover did not end within {COMMAND_DEADLINE:?} (killed); {}", transcript()),
        Some(s) if !s.success() => bail!("pgkeeper switchover failed ({s}); {}", transcript()),
        Some(_) => {}
    }
    r.command_ok = true;
    if r.command_figure_s.is_none() {
        r.errors.push(format!("no \"writes unavailable for X s\" in the command's output; {}", transcript()));
    }
    Ok(())
}

/// "... writes unavailable for 0.42 s" -> 0.42.
fn figure(stdout: &str) -> Option<f64> {
    let rest = stdout.split("writes unavailable for ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

// ------------------------------------------------------------------------------ outputs

fn write_outputs(out: &Path, runs_planned: usize, all: &[Run], took: Duration) -> Result<()> {
    let (date, machine) = (now_utc(), machine());
    let f = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or("-".into());
    let gap = summary(all, |r| r.gap_s);
    let cmd = summary(all, |r| r.command_figure_s);
    let nowr = summary(all, |r| r.no_writable_s);
    let failed = all.iter().filter(|r| !r.command_ok).count();
    let lost: usize = all.iter().filter_map(|r| r.lost).sum();
    let lost_unchecked = all.iter().filter(|r| r.lost.is_none()).count();
    let max_writable = all.iter().map(|r| r.max_writable).max().unwrap_or(0);

    // ---- markdown
    let mut md = String::new();
    writeln!(md, "# pg_keeper switchover benchmark\n")?;
    writeln!(md, "- date: {date}")?;
    writeln!(md, "- machine: {machine}")?;
    writeln!(
        md,
        "- method: `pgkeeper-bench switchover` ({} of {runs_planned} runs, {:.0} min in all); 3 local nodes, \
         node2 synchronous, `keepalive_time = 1 s`, `keepalive_count = 3`; a client writes every 20 ms on \
         a fresh multi-host connection (`target_session_attrs=read-write`, `connect_timeout=1`) while \
         `pgkeeper switchover --to node2 --pgdata <node1's data dir> <node1's conninfo>` runs as a \
         subprocess. Write unavailability = first write acknowledged by node2 minus the last one \
         acknowledged by node1 before it. A sampler asks every node `NOT pg_is_in_recovery()` every \
         20 ms. See `bench/README.md`.\n",
        all.len(),
        took.as_secs_f64() / 60.0
    )?;
    writeln!(md, "| measure | runs | missing | min s | median s | p95 s | max s |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    for (label, s) in [
        ("**write unavailability, client** (last ack by node1 -> first ack by node2)", &gap),
        ("write unavailability printed by the command (`writes unavailable for X s`)", &cmd),
        ("no writable node, sampler (last sample with node1 writable -> first with node2 writable)", &nowr),
    ] {
        writeln!(md, "| {label} | {} | {} | {} |", s.runs, s.failures, s.md_cells(),)?;
    }
    writeln!(md)?;
    writeln!(md, "- command failures (exit status not 0): {failed} of {}", all.len())?;
    writeln!(
        md,
        "- lost rows (acknowledged, missing on node2 at the end): {lost}{} (expected 0)",
        if lost_unchecked > 0 { format!(", {lost_unchecked} run(s) not checked") } else { String::new() }
    )?;
    writeln!(md, "- max writable nodes at one sample: {max_writable} (expected 1)")?;
    let met = match gap.q {
        None => "not measured".to_string(),
        Some(q) if q.max < TARGET_S && gap.failures == 0 => "**yes** (every run)".into(),
        Some(q) if q.median < TARGET_S => format!("median yes, but not every run (max {:.2} s)", q.max),
        Some(q) => format!("**no** (median {:.2} s)", q.median),
    };
    writeln!(md, "- target: client-seen write unavailability under {TARGET_S} s in every run: {met}")?;
    writeln!(
        md,
        "- peer: Patroni's `patronictl switchover`, measured the same way: no node accepted writes for {PATRONI_S} s"
    )?;

    writeln!(md, "\n## Where the time goes (medians, seconds after the command's launch)\n")?;
    writeln!(md, "Stages from the command's stderr (`[switchover] ...`, time the line was read), node2's log line when its worker removes node2 from `synchronous_standby_names` (millisecond timestamps), and the client.\n")?;
    writeln!(md, "| stopping node1 | last ack by node1 | promoting node2 | promoted (end of the command's figure) | node2 writable (sampler) | node2 drops itself from sync names (log) | first ack by node2 | its attempt started | restarting node1 | command done | node2 backends in SyncRep (max seen) |")?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let col = |g: &dyn Fn(&Run) -> Option<f64>| median_of(all.iter().filter_map(g).collect());
    writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        f(col(&|r| r.stopping_s)),
        f(col(&|r| r.last_old_ack_s)),
        f(col(&|r| r.promoting_s)),
        f(col(&|r| r.promoted_s)),
        f(col(&|r| r.node2_writable_s)),
        f(col(&|r| r.self_sync_fixed_s)),
        f(col(&|r| r.first_new_ack_s)),
        f(col(&|r| r.first_new_started_s)),
        f(col(&|r| r.restarting_s)),
        f(col(&|r| r.command_total_s)),
        median_of(all.iter().map(|r| r.max_syncrep_waiters_node2 as f64).collect())
            .map(|v| format!("{v:.0}"))
            .unwrap_or("-".into()),
    )?;
    // Why the client's gap exceeds the command's figure: node2's first commits wait for node2
    // itself (synchronous_standby_names = 'node2' in every node's postgresql.conf) until its
    // worker's next master round removes it.
    let waited: Vec<&Run> = all
        .iter()
        .filter(|r| matches!((r.first_new_ack_s, r.self_sync_fixed_s), (Some(a), Some(x)) if (a - x).abs() <= 0.05))
        .collect();
    let measured = all.iter().filter(|r| r.first_new_ack_s.is_some() && r.self_sync_fixed_s.is_some()).count();
    writeln!(
        md,
        "\nIn {} of {measured} runs node2's first acknowledged write came within 50 ms of node2's worker removing node2 \
         from its `synchronous_standby_names` (log line `synchronous_standby_names named this node`): right after \
         `pg_promote` node2 is its own synchronous standby (`synchronous_standby_names = 'node2'` is in every node's \
         `postgresql.conf`), so its first commits wait (`SyncRep`) until the worker's next master round, up to one \
         `keepalive_time` after the promotion. Medians: promoted -> node2 drops itself {} s; node2 writable \
         (sampler) -> first ack by node2 {} s; the client's gap minus the command's figure {} s. The SyncRep count \
         is at most 1 because the client's loop waits up to 1 s for each attempt before it starts the next.",
        waited.len(),
        f(median_of(all.iter().filter_map(|r| Some(r.self_sync_fixed_s? - r.promoted_s?)).collect())),
        f(median_of(all.iter().filter_map(|r| Some(r.first_new_ack_s? - r.node2_writable_s?)).collect())),
        f(median_of(all.iter().filter_map(|r| Some(r.gap_s? - r.command_figure_s?)).collect())),
    )?;

    writeln!(md, "\n## Runs\n")?;
    writeln!(md, "| run | client gap s | command's figure s | no writable node s | promoted | node2 drops itself from sync names | first ack by node2 | acked / attempts | lost | max writable | SyncRep waiters on node2 | node2's synchronous_standby_names afterwards | node2's standbys afterwards |")?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|")?;
    for r in all {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} |",
            r.index,
            f(r.gap_s),
            f(r.command_figure_s),
            f(r.no_writable_s),
            f(r.promoted_s),
            f(r.self_sync_fixed_s),
            f(r.first_new_ack_s),
            r.acked,
            r.attempts,
            r.lost.map(|l| l.to_string()).unwrap_or("-".into()),
            r.max_writable,
            r.max_syncrep_waiters_node2,
            r.final_sync_names.as_deref().map(|s| format!("'{s}'")).unwrap_or("-".into()),
            r.final_replication.as_deref().unwrap_or("-"),
        )?;
    }
    let bad: Vec<&Run> = all.iter().filter(|r| !r.errors.is_empty()).collect();
    if !bad.is_empty() {
        writeln!(md, "\n## Failed runs and errors\n")?;
        for r in bad {
            writeln!(md, "- run {}: {}", r.index, r.errors.join("; ").replace('\n', " "))?;
        }
    }
    writeln!(md, "\nRaw numbers: `switchover.json`.")?;
    std::fs::write(out.join("switchover.md"), md)?;

    // ---- json
    let runs: Vec<_> = all
        .iter()
        .map(|r| {
            json!({
                "run": r.index,
                "command_ok": r.command_ok,
                "gap_s": r.gap_s.map(secs),
                "command_figure_s": r.command_figure_s.map(secs),
                "no_writable_s": r.no_writable_s.map(secs),
                "last_old_ack_s": r.last_old_ack_s.map(secs),
                "first_new_ack_s": r.first_new_ack_s.map(secs),
                "first_new_attempt_started_s": r.first_new_started_s.map(secs),
                "node2_writable_s": r.node2_writable_s.map(secs),
                "stopping_s": r.stopping_s.map(secs),
                "promoting_s": r.promoting_s.map(secs),
                "promoted_s": r.promoted_s.map(secs),
                "self_sync_fixed_s": r.self_sync_fixed_s.map(secs),
                "restarting_s": r.restarting_s.map(secs),
                "command_total_s": r.command_total_s.map(secs),
                "attempts": r.attempts,
                "acked": r.acked,
                "old_acks_after_new": r.old_acks_after_new,
                "other_acks": r.other_acks,
                "lost_rows": r.lost,
                "max_writable": r.max_writable,
                "samples": r.samples,
                "max_syncrep_waiters_node2": r.max_syncrep_waiters_node2,
                "final_sync_names": r.final_sync_names,
                "final_replication": r.final_replication,
                "errors": r.errors,
            })
        })
        .collect();
    write_json(
        &out.join("switchover.json"),
        &date,
        &machine,
        "runs_planned",
        runs_planned,
        json!({
            "keepalive_time_s": KEEPALIVE_TIME,
            "keepalive_count": KEEPALIVE_COUNT,
            "write_interval_ms": WRITE_EVERY.as_millis() as u64,
            "sample_interval_ms": SAMPLE_EVERY.as_millis() as u64,
            "target_max_s": TARGET_S,
            "patroni_s": PATRONI_S,
            "write_unavailability_client": gap.json("missing"),
            "write_unavailability_command": cmd.json("missing"),
            "no_writable_node_sampler": nowr.json("missing"),
            "command_failures": failed,
            "lost_rows": lost,
            "max_writable_nodes": max_writable,
            "runs": runs,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_commands_figure() {
        let out = "switchover done: node2 is the master, node1 a standby of it; writes unavailable for 0.42 s\n";
        assert_eq!(figure(out), Some(0.42));
        assert_eq!(figure("nothing"), None);
    }

    #[test]
    fn summary_counts_missing() {
        let rs: Vec<Run> =
            [Some(0.5), None, Some(0.7)].into_iter().map(|g| Run { gap_s: g, ..Default::default() }).collect();
        let s = summary(&rs, |r| r.gap_s);
        assert_eq!((s.runs, s.failures), (3, 1));
        let q = s.q.unwrap();
        assert_eq!((q.min, q.median, q.max), (0.5, 0.6, 0.7));
    }
}

/// The `pgkeeper` CLI the switchover runs: $PGKEEPER, else the one built beside this binary,
/// else the one on the PATH (`make bench` installs it first).
fn pgkeeper_program() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PGKEEPER") {
        return p.into();
    }
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("pgkeeper")));
    beside.filter(|p| p.exists()).unwrap_or_else(|| "pgkeeper".into())
}
