//! `pgkeeper-bench sync [--runs N] [--out DIR]`: the master's synchronous-replication guard on
//! real local 3-node clusters.
//!
//! For each configuration (keepalive_time x keepalive_count) and each run: a fresh cluster
//! (node2 synchronous), `kill -9` of node2's postmaster at a random point of the polling loop,
//! one INSERT on the master started at once (it waits for node2), and
//! - blocked-commit latency: the kill -> that commit acknowledged (after the guard set
//!   `synchronous_standby_names = ''`);
//! - restore time: node2 started again -> the master's `synchronous_standby_names` is 'node2'
//!   again.
//!
//! Results: `sync.md`, `sync.json` in the output directory. See `bench/README.md`.

use super::{
    build_cluster, log_line_after, machine, median_of, now_utc, prepare, q, secs, summary, write_json, Summary,
    XorShift,
};
use anyhow::{anyhow, Context, Result};
use keeper_harness::{wait_until, Cluster};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

const DEADLINE: Duration = Duration::from_secs(60);

/// The guard acts when too few synchronous standbys stream: with one standby listed (not the
/// README's `FIRST 1` over every candidate, under which PostgreSQL moves on to node3 by
/// itself and the guard has nothing to do), its death is what the guard must handle.
const SYNC_STANDBY: &str = "node2";
const RESTORE_POLL: Duration = Duration::from_millis(50);
const TABLE: &str = "CREATE TABLE bench_sync (id bigint PRIMARY KEY, \
     at timestamptz NOT NULL DEFAULT clock_timestamp())";
const DEGRADED_LINE: &str = "pg_keeper: synchronous replication degraded to asynchronous";
const RESTORED_LINE: &str = "pg_keeper: synchronous replication restored";

#[derive(Clone, Copy)]
struct Conf {
    label: &'static str,
    keepalive_time: f64,
    keepalive_count: u32,
}

impl Conf {
    /// A blocked commit should complete within keepalive_time x keepalive_count + 1 s.
    fn target(&self) -> f64 {
        self.keepalive_time * self.keepalive_count as f64 + 1.0
    }
}

const CONFS: [Conf; 2] = [
    Conf { label: "1 s x 3", keepalive_time: 1.0, keepalive_count: 3 },
    Conf { label: "5 s x 1 (defaults)", keepalive_time: 5.0, keepalive_count: 1 },
];

/// What one run measured, in seconds.
#[derive(Default, Clone)]
struct Run {
    conf: usize,
    index: usize,
    /// Random delay between "all synchronous" and the kill.
    delay_s: f64,
    /// Kill instant (just before `kill9()`) -> node2's postmaster seen dead (polled every
    /// 1 ms): the uncertainty of the kill instant. The INSERT is sent right then.
    postmaster_dead_s: f64,
    /// Kill -> the INSERT sent (on a connection opened before the kill).
    commit_sent_s: Option<f64>,
    /// Kill -> the commit acknowledged. None: failed (error or no ack within 60 s).
    blocked_s: Option<f64>,
    /// The commit was seen waiting (`pg_stat_activity.wait_event = 'SyncRep'`) at least once.
    saw_syncrep_wait: bool,
    /// Kill -> the master's log line "synchronous replication degraded to asynchronous".
    degraded_log_s: Option<f64>,
    /// Random delay between the degrade and node2's start.
    start_delay_s: f64,
    /// How long `node2.start()` (`pg_ctl start -w`) took.
    start_call_s: Option<f64>,
    /// node2 start -> `SHOW synchronous_standby_names` = 'node2' on the master.
    restore_s: Option<f64>,
    /// node2 start -> the master's log line "synchronous replication restored".
    restored_log_s: Option<f64>,
    /// After the restore: node2 is 'sync' in pg_stat_replication, status() says
    /// 'synchronous', and a commit is acknowledged.
    sync_after_restore: Option<bool>,
    errors: Vec<String>,
}

pub(super) fn run(runs: usize, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rng = XorShift::from_time();
    let mut all: Vec<Run> = Vec::new();
    let started = Instant::now();
    for (ci, conf) in CONFS.iter().enumerate() {
        for i in 0..runs {
            let mut r = Run { conf: ci, index: i + 1, ..Default::default() };
            if let Err(e) = one_run(conf, &mut rng, &mut r) {
                r.errors.push(format!("{e:#}"));
            }
            let f = |x: Option<f64>| x.map(|v| format!("{v:.2} s")).unwrap_or("FAILED".into());
            eprintln!(
                "sync run {}/{runs} {}: blocked commit {} (kill delay {:.2} s, degraded at {}{}), restore {} (start delay {:.2} s, pg_ctl start {}, restored at {}), sync afterwards: {}{}",
                i + 1,
                conf.label,
                f(r.blocked_s),
                r.delay_s,
                f(r.degraded_log_s),
                if r.saw_syncrep_wait { ", seen waiting" } else { ", not seen waiting" },
                f(r.restore_s),
                r.start_delay_s,
                f(r.start_call_s),
                f(r.restored_log_s),
                match r.sync_after_restore {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "?",
                },
                if r.errors.is_empty() {
                    String::new()
                } else {
                    format!("; errors: {}", r.errors.join("; "))
                }
            );
            all.push(r);
            write_outputs(out, runs, &all, started.elapsed())?;
        }
    }
    write_outputs(out, runs, &all, started.elapsed())?;
    print!("{}", std::fs::read_to_string(out.join("sync.md"))?);
    eprintln!("results in {}", out.display());
    Ok(())
}

fn one_run(conf: &Conf, rng: &mut XorShift, r: &mut Run) -> Result<()> {
    let cluster = build_cluster("bench-sync", conf.keepalive_time, conf.keepalive_count, SYNC_STANDBY)?;
    let res = measure(&cluster, conf, rng, r);
    drop(cluster);
    res
}

fn measure(cluster: &Cluster, conf: &Conf, rng: &mut XorShift, r: &mut Run) -> Result<()> {
    let (m, s2) = (cluster.node("node1"), cluster.node("node2"));
    prepare(cluster, TABLE)?;
    let ready = || {
        q(m, "SELECT sync_state FROM pgkeeper.status()") == "synchronous"
            && q(m, "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'node2'") == "sync"
    };
    wait_until(DEADLINE, ready).map_err(|_| {
        anyhow!(
            "the master never reported node2 synchronous: status() sync_state {:?}",
            q(m, "SELECT sync_state FROM pgkeeper.status()")
        )
    })?;

    // The committer: connected before the kill, sends its INSERT when told.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<(Instant, Instant, Result<(), String>)>();
    let mut client = m.try_connect().context("committer connection")?;
    std::thread::spawn(move || {
        if go_rx.recv().is_err() {
            return;
        }
        let sent = Instant::now();
        let res = client.execute("INSERT INTO bench_sync (id) VALUES (1)", &[]).map(|_| ()).map_err(|e| e.to_string());
        let _ = done_tx.send((sent, Instant::now(), res));
    });
    // Watches for the commit waiting on node2.
    let mut monitor = m.try_connect().context("monitor connection")?;

    r.delay_s = conf.keepalive_time * rng.unit();
    std::thread::sleep(Duration::from_secs_f64(r.delay_s));
    let pm = s2.postmaster_pid().ok_or_else(|| anyhow!("node2 is not running"))?;
    let kill_wall = SystemTime::now();
    let kill_at = Instant::now();
    // kill9() waits up to 100 ms for the postmaster to be gone; send the INSERT as soon as it
    // is (node2's walreceiver exits on postmaster death).
    std::thread::scope(|sc| {
        sc.spawn(|| s2.kill9());
        while keeper_harness::proc::alive(pm) && kill_at.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        r.postmaster_dead_s = kill_at.elapsed().as_secs_f64();
        let _ = go_tx.send(());
        // the scope joins kill9() before the wait below; it returns within ~100 ms
    });

    loop {
        match done_rx.recv_timeout(Duration::from_millis(20)) {
            Ok((sent, acked, res)) => {
                r.commit_sent_s = Some((sent - kill_at).as_secs_f64());
                match res {
                    Ok(()) => r.blocked_s = Some((acked - kill_at).as_secs_f64()),
                    Err(e) => r.errors.push(format!("the blocked commit failed: {e}")),
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if kill_at.elapsed() >= DEADLINE {
                    r.errors.push(format!(
                        "the blocked commit was not acknowledged within {DEADLINE:?}; status() sync_state {:?}",
                        q(m, "SELECT sync_state FROM pgkeeper.status()")
                    ));
                    break;
                }
                if !r.saw_syncrep_wait {
                    if let Ok(row) =
                        monitor.query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'", &[])
                    {
                        r.saw_syncrep_wait = row.get::<_, i64>(0) > 0;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                r.errors.push("the committer thread died".into());
                break;
            }
        }
    }
    drop(monitor);
    // The log line is written right after the reload: give it a moment if the ack came first.
    let _ =
        wait_until(Duration::from_secs(2), || log_line_after(&m.log_contents(), DEGRADED_LINE, kill_wall).is_some());
    r.degraded_log_s = log_line_after(&m.log_contents(), DEGRADED_LINE, kill_wall);
    if r.degraded_log_s.is_none() {
        // Without a degrade nothing is to be restored: the restore measurement would be void.
        wait_until(Duration::from_secs(10), || q(m, "SELECT sync_state FROM pgkeeper.status()") == "degraded")
            .map_err(|_| anyhow!("the master never degraded"))?;
    }

    // A random delay in [0, keepalive_time) again: without it node2 would always start just
    // after the degrading round (the blocked commit is released by it), i.e. one whole
    // keepalive_time before the next round, and the restore time would be its worst case.
    r.start_delay_s = conf.keepalive_time * rng.unit();
    std::thread::sleep(Duration::from_secs_f64(r.start_delay_s));

    // Restore: node2 starts again; a poller watches the master's setting meanwhile (the
    // restore can happen before `pg_ctl start -w` returns).
    let start_wall = SystemTime::now();
    let start_at = Instant::now();
    let stop = AtomicBool::new(false);
    let (restored_at, start_res) = std::thread::scope(|sc| {
        let poller = sc.spawn(|| {
            while !stop.load(Ordering::Relaxed) && start_at.elapsed() < DEADLINE {
                let t = Instant::now();
                if q(m, "SHOW synchronous_standby_names") == "node2" {
                    return Some(t);
                }
                std::thread::sleep(RESTORE_POLL.saturating_sub(t.elapsed()));
            }
            None
        });
        let res = s2.start();
        r.start_call_s = Some(start_at.elapsed().as_secs_f64());
        if res.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        (poller.join().unwrap_or(None), res)
    });
    start_res.context("starting node2 again")?;
    match restored_at {
        // The poll that saw it was sent at `t`: the restore happened at most 50 ms before.
        Some(t) => r.restore_s = Some((t - start_at).as_secs_f64()),
        None => r.errors.push(format!(
            "synchronous_standby_names not back to 'node2' within {DEADLINE:?} of the start: {:?}",
            q(m, "SHOW synchronous_standby_names")
        )),
    }
    let _ =
        wait_until(Duration::from_secs(2), || log_line_after(&m.log_contents(), RESTORED_LINE, start_wall).is_some());
    r.restored_log_s = log_line_after(&m.log_contents(), RESTORED_LINE, start_wall);

    // Synchronous again for real: node2 is the 'sync' standby and a commit completes.
    if r.restore_s.is_some() {
        let sync = wait_until(Duration::from_secs(10), ready).is_ok();
        let commit = sync
            && m.try_connect()
                .and_then(|mut c| {
                    c.execute("SET statement_timeout = '10s'", &[])?;
                    c.execute("INSERT INTO bench_sync (id) VALUES (2)", &[])?;
                    Ok(())
                })
                .is_ok();
        r.sync_after_restore = Some(sync && commit);
    }
    Ok(())
}

// ------------------------------------------------------------------------------ outputs

fn write_outputs(out: &Path, runs_per_conf: usize, all: &[Run], took: Duration) -> Result<()> {
    let (date, machine) = (now_utc(), machine());
    let per_conf: Vec<Vec<&Run>> = (0..CONFS.len()).map(|ci| all.iter().filter(|r| r.conf == ci).collect()).collect();
    let blocked: Vec<Summary> = per_conf.iter().map(|rs| summary(rs, |r| r.blocked_s)).collect();
    let restore: Vec<Summary> = per_conf.iter().map(|rs| summary(rs, |r| r.restore_s)).collect();
    let f = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or("-".into());

    // ---- markdown
    let mut md = String::new();
    writeln!(md, "# pg_keeper synchronous-replication guard benchmark\n")?;
    writeln!(md, "- date: {date}")?;
    writeln!(md, "- machine: {machine}")?;
    writeln!(
        md,
        "- method: `pgkeeper-bench sync` ({runs_per_conf} runs per configuration, {:.0} min in all); \
         3 local nodes, node2 the synchronous standby (`synchronous_standby_names = 'node2'`); \
         node2's postmaster is killed with SIGKILL at a random point of the polling loop and one \
         INSERT is sent to the master at once (on a connection opened before the kill). \
         Blocked-commit latency = that commit acknowledged minus the kill instant; restore time \
         = node2 started again after another random delay in [0, keepalive_time) \
         (`pg_ctl start -w`, timed from its launch) until the master's \
         `SHOW synchronous_standby_names` is 'node2' (polled every 50 ms). See `bench/README.md`.\n",
        took.as_secs_f64() / 60.0
    )?;
    writeln!(md, "## Blocked-commit latency (kill -9 of node2 -> the waiting commit acknowledged)\n")?;
    writeln!(
        md,
        "| keepalive_time x count | runs | failures | min s | median s | p95 s | max s | target (max) | met |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|---|")?;
    for (ci, conf) in CONFS.iter().enumerate() {
        let s = &blocked[ci];
        let met = match &s.q {
            _ if s.runs == 0 => "not run",
            Some(q) if q.max <= conf.target() && s.failures == 0 => "yes",
            Some(q) if q.max <= conf.target() => "max yes, but see failures",
            _ => "**no**",
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | <= {} s | {} |",
            conf.label,
            s.runs,
            s.failures,
            s.md_cells(),
            conf.target(),
            met
        )?;
    }
    writeln!(md, "\nTarget: a blocked commit completes within keepalive_time x keepalive_count + 1 s (4 s at 1 s x 3, 6 s at the defaults), for every run (the max).")?;

    writeln!(md, "\n## Restore time (node2 started again -> the master's synchronous_standby_names = 'node2')\n")?;
    writeln!(md, "| keepalive_time x count | runs | failures | min s | median s | p95 s | max s | of which `pg_ctl start -w` (median s) | synchronous again afterwards |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for (ci, conf) in CONFS.iter().enumerate() {
        let s = &restore[ci];
        let rs = &per_conf[ci];
        let checked: Vec<bool> = rs.iter().filter_map(|r| r.sync_after_restore).collect();
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} of {} |",
            conf.label,
            s.runs,
            s.failures,
            s.md_cells(),
            f(median_of(rs.iter().filter_map(|r| r.start_call_s).collect())),
            checked.iter().filter(|b| **b).count(),
            checked.len()
        )?;
    }
    writeln!(md, "\n\"Synchronous again afterwards\": within 10 s of the restore, node2 is `sync` in `pg_stat_replication`, `pgkeeper.status()` says `synchronous`, and a commit is acknowledged.")?;

    writeln!(md, "\n## Where the time goes (medians, seconds)\n")?;
    writeln!(md, "After the kill: the random kill delay, the master's log line `synchronous replication degraded to asynchronous`, the commit acknowledged. Then the random delay before node2's start; after the start: `pg_ctl start -w` returns, the log line `synchronous replication restored`, the change seen by `SHOW`. Log timestamps have millisecond resolution.\n")?;
    writeln!(md, "| keepalive_time x count | kill delay | degraded (log) | commit acked | acked - degraded | commits seen waiting (SyncRep) | start delay | pg_ctl start returns | restored (log) | seen by SHOW |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")?;
    for (ci, conf) in CONFS.iter().enumerate() {
        let rs = &per_conf[ci];
        let col = |g: &dyn Fn(&Run) -> Option<f64>| median_of(rs.iter().filter_map(|r| g(r)).collect());
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} of {} | {} | {} | {} | {} |",
            conf.label,
            f(col(&|r| Some(r.delay_s))),
            f(col(&|r| r.degraded_log_s)),
            f(col(&|r| r.blocked_s)),
            f(col(&|r| Some(r.blocked_s? - r.degraded_log_s?))),
            rs.iter().filter(|r| r.saw_syncrep_wait).count(),
            rs.len(),
            f(col(&|r| Some(r.start_delay_s))),
            f(col(&|r| r.start_call_s)),
            f(col(&|r| r.restored_log_s)),
            f(col(&|r| r.restore_s)),
        )?;
    }
    let bad: Vec<&Run> = all.iter().filter(|r| !r.errors.is_empty()).collect();
    if !bad.is_empty() {
        writeln!(md, "\n## Failed runs\n")?;
        for r in bad {
            writeln!(md, "- {} run {}: {}", CONFS[r.conf].label, r.index, r.errors.join("; ").replace('\n', " "))?;
        }
    }
    writeln!(md, "\nRaw numbers: `sync.json`.")?;
    std::fs::write(out.join("sync.md"), md)?;

    // ---- json
    let configurations: Vec<Value> = CONFS
        .iter()
        .enumerate()
        .map(|(ci, conf)| {
            let runs: Vec<Value> = per_conf[ci]
                .iter()
                .map(|r| {
                    json!({
                        "run": r.index,
                        "kill_delay_s": secs(r.delay_s),
                        "postmaster_dead_s": secs(r.postmaster_dead_s),
                        "commit_sent_s": r.commit_sent_s.map(secs),
                        "blocked_commit_s": r.blocked_s.map(secs),
                        "seen_waiting_syncrep": r.saw_syncrep_wait,
                        "degraded_log_s": r.degraded_log_s.map(secs),
                        "start_delay_s": secs(r.start_delay_s),
                        "pg_ctl_start_s": r.start_call_s.map(secs),
                        "restore_s": r.restore_s.map(secs),
                        "restored_log_s": r.restored_log_s.map(secs),
                        "synchronous_after_restore": r.sync_after_restore,
                        "errors": r.errors,
                    })
                })
                .collect();
            json!({
                "label": conf.label,
                "keepalive_time_s": conf.keepalive_time,
                "keepalive_count": conf.keepalive_count,
                "target_blocked_commit_max_s": conf.target(),
                "blocked_commit": blocked[ci].json("failures"),
                "restore": restore[ci].json("failures"),
                "runs": runs,
            })
        })
        .collect();
    write_json(
        &out.join("sync.json"),
        &date,
        &machine,
        "runs_per_configuration",
        runs_per_conf,
        json!({ "restore_poll_ms": RESTORE_POLL.as_millis() as u64, "configurations": configurations }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(CONFS[0].target(), 4.0);
        assert_eq!(CONFS[1].target(), 6.0);
    }

    #[test]
    fn summary_counts_failures() {
        let rs: Vec<Run> =
            [Some(1.0), None, Some(3.0)].into_iter().map(|b| Run { blocked_s: b, ..Default::default() }).collect();
        let refs: Vec<&Run> = rs.iter().collect();
        let s = summary(&refs, |r| r.blocked_s);
        assert_eq!((s.runs, s.failures), (3, 1));
        let q = s.q.unwrap();
        assert_eq!((q.min, q.median, q.p95, q.max), (1.0, 2.0, 3.0, 3.0));
    }
}
