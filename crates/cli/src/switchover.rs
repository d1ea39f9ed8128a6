//! `pgkeeper switchover --to NAME`: a planned role swap with no acknowledged commit lost.
//!
//! Runs on the current master's host (it stops and restarts that server as a standby):
//! pause automatic failover everywhere, make the master step down (it refuses commits and
//! releases the vote holds of its lease), stop it cleanly (its WAL senders ship everything,
//! the shutdown checkpoint included, before they exit), check that the target received all
//! of it, have the target elected (`stand_for_election`: the same votes as any failover),
//! restart the old master as its standby, resume. Any failure before the election restarts
//! the old master as it was.

use crate::local::{self, as_owner, configure_standby, save_confs};
use crate::status;
use anyhow::{bail, Context, Result};
use keeper_core::lsn;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn say(s: &str) {
    eprintln!("[switchover] {s}");
}

/// A planned role swap with no acknowledged commit lost. Run it on the current master's host
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// The standby to make the master
    #[arg(long, value_name = "NODE")]
    pub to: String,
    /// The current master's data directory (checked against SHOW data_directory)
    #[arg(long, short = 'D', value_name = "DIR")]
    pub pgdata: PathBuf,
    /// Any node of the cluster; default: libpq's environment (PGHOST, PGPORT, ...)
    #[arg(value_name = "CONNINFO", default_value = "", hide_default_value = true)]
    pub cluster: String,
    /// Refuse when the target is further behind than this many bytes
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub max_lag: u64,
    /// The old master's server log when it is restarted as a standby
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

/// Pause (seconds > 0) or resume (0) automatic failover on every node that answers.
fn pause_all(nodes: &[status::NodeRow], seconds: i32) {
    for n in nodes {
        let r = status::connect(&n.conninfo)
            .and_then(|mut c| Ok(c.query_one("SELECT pgkeeper.pause_failover($1)", &[&seconds])?.get::<bool>(0)));
        if let Err(e) = r {
            say(&format!(
                "{}: cannot {} automatic failover: {e:#}",
                n.name,
                if seconds > 0 { "pause" } else { "resume" }
            ));
        }
    }
}

fn controldata(pgdata: &Path) -> Result<String> {
    let out = as_owner(pgdata, "pg_controldata")?.arg(pgdata).output()?;
    anyhow::ensure!(out.status.success(), "pg_controldata failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string())
}

fn received_lsn(conninfo: &str) -> Result<Option<u64>> {
    let mut c = status::connect(conninfo)?;
    let s: Option<String> = c.query_one("SELECT pg_last_wal_receive_lsn()::text", &[])?.get(0);
    Ok(s.as_deref().and_then(lsn::parse))
}

pub fn switchover(o: &Opts) -> Result<()> {
    let report = status::gather(&o.cluster)?;
    let nodes: Vec<status::NodeRow> = report.nodes.iter().map(|(n, _)| n.clone()).collect();

    // Refuse early and clearly.
    let masters: Vec<&(status::NodeRow, Result<status::Live, String>)> =
        report.nodes.iter().filter(|(_, l)| matches!(l, Ok(l) if l.writable())).collect();
    let (master, mlive) = match masters.as_slice() {
        [(m, Ok(l))] => (m, l),
        [] => bail!("no node accepts writes: nothing to switch over from"),
        _ => bail!("more than one node accepts writes: fix that first (pgkeeper status)"),
    };
    let Some((target, tlive)) = report.nodes.iter().find(|(n, _)| n.name == o.to) else {
        bail!("\"{}\" is not a registered node (pgkeeper status lists them)", o.to)
    };
    if target.name == master.name {
        bail!("\"{}\" is already the master", o.to);
    }
    let tlive = match tlive {
        Ok(l) => l,
        Err(e) => bail!("\"{}\" does not answer ({e}): cannot switch over to it", o.to),
    };
    if !mlive.sync_standbys.iter().any(|(n, _)| *n == target.name) || tlive.receiver.as_deref() != Some("streaming") {
        bail!("\"{}\" is not streaming from {}: cannot switch over to it", o.to, master.name);
    }
    let lag = match (mlive.lsn.as_deref().and_then(lsn::parse), tlive.replay_lsn.as_deref().and_then(lsn::parse)) {
        (Some(m), Some(t)) => m.saturating_sub(t),
        _ => bail!("cannot read the WAL positions of {} and {}", master.name, o.to),
    };
    if lag > o.max_lag {
        bail!(
            "\"{}\" is {lag} bytes behind {} (more than --max-lag {}): wait, or raise --max-lag",
            o.to,
            master.name,
            o.max_lag
        );
    }
    let data_dir: String = status::connect(&master.conninfo)?.query_one("SHOW data_directory", &[])?.get(0);
    let given = std::fs::canonicalize(&o.pgdata).with_context(|| format!("{}", o.pgdata.display()))?;
    if std::fs::canonicalize(&data_dir).ok().as_deref() != Some(given.as_path()) {
        bail!(
            "{} is not the data directory of the master {} ({data_dir}): run this on the master's host with its data directory",
            o.pgdata.display(),
            master.name
        );
    }
    let log = o.log.clone().unwrap_or_else(|| o.pgdata.join("pgkeeper-switchover.log"));
    say(&format!("{} -> {}: {} is {lag} bytes behind", master.name, o.to, o.to));

    say("pausing automatic failover on every node");
    pause_all(&nodes, 120);
    let outage = Instant::now();
    // The old master refuses commits from here on and releases the other nodes' vote holds,
    // so the target can be elected without waiting for its lease to run out.
    say(&format!("{} steps down (refuses commits from now on)", master.name));
    let stepped = status::connect(&master.conninfo)
        .and_then(|mut c| Ok(c.query_one("SELECT pgkeeper.step_down($1::text)", &[&o.to])?.get::<i32>(0)));
    say(&format!("stopping {} (clean shutdown: its WAL is shipped before it exits)", master.name));
    let stopped = stepped.and_then(|released| {
        say(&format!("{released} node(s) released their vote hold"));
        local::stop(&o.pgdata)
    });

    // Everything up to the promotion can be undone by starting the old master again.
    let promoted = stopped.and_then(|()| {
        let cd = controldata(&o.pgdata)?;
        anyhow::ensure!(
            field(&cd, "Database cluster state").as_deref() == Some("shut down"),
            "{} did not shut down cleanly",
            master.name
        );
        let ckpt = field(&cd, "Latest checkpoint location")
            .as_deref()
            .and_then(lsn::parse)
            .context("no checkpoint location")?;
        let t = Instant::now();
        loop {
            if received_lsn(&target.conninfo)?.is_some_and(|r| r > ckpt) {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "{} did not receive {}'s last WAL ({}) within 30 s",
                o.to,
                master.name,
                lsn::format(ckpt)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        say(&format!(
            "{} has all of {}'s WAL (up to {}); it stands for election",
            o.to,
            master.name,
            lsn::format(ckpt)
        ));
        let mut t = status::connect(&target.conninfo)?;
        let ok: bool = t.query_one("SELECT pgkeeper.stand_for_election()", &[])?.get(0);
        anyhow::ensure!(ok, "no pg_keeper worker runs on {}", o.to);
        let started = Instant::now();
        loop {
            let in_recovery: bool = t.query_one("SELECT pg_is_in_recovery()", &[])?.get(0);
            if !in_recovery {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{} was not elected within 30 s", o.to);
            std::thread::sleep(Duration::from_millis(10));
        }
        // Wake its worker for a master round now rather than within keepalive_time: if
        // synchronous_standby_names names the new master itself, its commits wait until then.
        t.query_one("SELECT pgkeeper.indirect_kill('SIGUSR1')", &[])?;
        Ok(())
    });
    if let Err(e) = promoted {
        say(&format!("{e:#}: rolling back, {} stays the master", master.name));
        // (a restart also reopens its commit gate, closed by step_down)
        let _ = local::stop(&o.pgdata);
        let restarted = local::start(&o.pgdata, &log);
        pause_all(&nodes, 0);
        restarted.context("restarting the old master during the rollback")?;
        bail!("switchover aborted: {e:#}");
    }
    let unavailable = outage.elapsed();
    say(&format!("{} promoted; writes were unavailable for {:.2} s", o.to, unavailable.as_secs_f64()));

    say(&format!("restarting {} as a standby of {}", master.name, o.to));
    let confs = save_confs(&o.pgdata)?;
    configure_standby(&o.pgdata, &confs, &master.name, &target.conninfo)?;
    local::start(&o.pgdata, &log)?;
    local::wait_streaming(&target.conninfo, &master.name, &log)?;
    pause_all(&nodes, 0);
    println!(
        "switchover done: {} is the master, {} a standby of it; writes unavailable for {:.2} s",
        o.to,
        master.name,
        unavailable.as_secs_f64()
    );
    Ok(())
}
