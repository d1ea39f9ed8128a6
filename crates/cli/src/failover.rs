//! `pgkeeper failover --to NODE`: for when automatic failover cannot or may not act (paused,
//! or the operator wants a given standby). The target stands for election at once: the same
//! pre-vote and majority vote as any failover, so it refuses while a healthy master holds its
//! lease. `--force` is for a cluster that cannot elect (a majority of node_info is down): it
//! says what may be lost, asks, and makes the target the master of the nodes that answer
//! (`pgkeeper._force_failover`: the nodes that do not answer are removed from node_info).

use crate::status;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

fn say(s: &str) {
    eprintln!("[failover] {s}");
}

/// Make a given standby the master when no healthy master is there (see also switchover)
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// The standby to make the master
    #[arg(long, value_name = "NODE")]
    pub to: String,
    /// The cluster cannot elect (a majority is down): make NODE the master of the nodes that
    /// answer; commits only the unreachable nodes have are lost
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation (with --force)
    #[arg(long, requires = "force")]
    pub yes: bool,
    /// How long to wait for the election, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub wait: u64,
    /// Any node of the cluster; default: libpq's environment (PGHOST, PGPORT, ...)
    #[arg(value_name = "CONNINFO", default_value = "", hide_default_value = true)]
    pub cluster: String,
}

pub fn failover(o: &Opts) -> Result<()> {
    let report = status::gather(&o.cluster)?;
    let Some((target, live)) = report.nodes.iter().find(|(n, _)| n.name == o.to) else {
        bail!("\"{}\" is not in node_info", o.to)
    };
    let live = match live {
        Ok(l) => l,
        Err(e) => bail!("{} does not answer: {e}", o.to),
    };
    if live.mode == "witness" {
        bail!("{} is a witness: it holds no data and is never promoted", o.to);
    }
    if !live.in_recovery {
        bail!("{} is not a standby ({})", o.to, live.state);
    }
    if let Some((m, _)) = report.nodes.iter().find(|(_, l)| matches!(l, Ok(l) if l.writable())) {
        bail!(
            "{} is the master and holds its lease (its commits are open): a failover now would depose a healthy master.\n\
             For a planned change use: pgkeeper switchover --to {} --pgdata <{}'s data directory>",
            m.name,
            o.to,
            m.name
        );
    }
    let unreachable: Vec<String> =
        report.nodes.iter().filter(|(_, l)| l.is_err()).map(|(n, _)| n.name.clone()).collect();
    let mut c = status::connect(&target.conninfo)?;
    if !o.force {
        say(&format!("no node takes writes; {} stands for election", o.to));
        let started = Instant::now();
        let mut asked = Instant::now() - Duration::from_secs(60);
        loop {
            // (a request lasts 30 s: ask again meanwhile)
            if asked.elapsed() > Duration::from_secs(20) {
                let ok: bool = c.query_one("SELECT pgkeeper.stand_for_election(true)", &[])?.get(0);
                anyhow::ensure!(ok, "no pg_keeper worker runs on {}", o.to);
                asked = Instant::now();
            }
            let r = c.query_one("SELECT pg_is_in_recovery(), state, term FROM pgkeeper.status()", &[])?;
            if !r.get::<bool>(0) {
                println!("failover done: {} is the master (term {})", o.to, r.get::<i64>(2));
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(o.wait) {
                let state: String = r.get(1);
                bail!(
                    "{} was not elected within {} s ({state}).{}",
                    o.to,
                    o.wait,
                    if unreachable.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " {} of {} nodes do not answer ({}): if a majority is gone for good, pgkeeper failover --to {} --force",
                            unreachable.len(),
                            report.nodes.len(),
                            unreachable.join(", "),
                            o.to
                        )
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // --force: say what may be lost, and ask.
    if unreachable.is_empty() {
        bail!("every node answers: the cluster can elect; run pgkeeper failover --to {} without --force", o.to);
    }
    // A master that answers (fenced: no majority) keeps what it acknowledged: not forced
    // past it.
    if let Some((m, l)) = report.nodes.iter().find(|(_, l)| matches!(l, Ok(l) if !l.in_recovery && l.mode != "witness")) {
        let l = l.as_ref().unwrap();
        bail!(
            "{} answers as a master ({}, commits {}): bring back enough of its peers, or stop it, before forcing a failover past it",
            m.name,
            l.state,
            l.commits
        );
    }
    // A standby that answers and has more WAL: forcing this one would lose what it has (and
    // leave it unable to follow). Pick that one.
    let mine = live.lsn.as_deref().and_then(keeper_core::lsn::parse);
    let ahead: Vec<String> = report
        .nodes
        .iter()
        .filter(|(n, _)| n.name != o.to)
        .filter_map(|(n, l)| {
            let l = l.as_ref().ok().filter(|l| l.in_recovery && l.mode != "witness")?;
            let at = l.lsn.as_deref().and_then(keeper_core::lsn::parse).filter(|x| Some(*x) > mine)?;
            Some(format!("{} (WAL up to {})", n.name, keeper_core::lsn::format(at)))
        })
        .collect();
    if !ahead.is_empty() {
        bail!(
            "{} has WAL up to {}, but {} has more: force the failover to it instead",
            o.to,
            live.lsn.as_deref().unwrap_or("?"),
            ahead.join(", ")
        );
    }
    let received = live.lsn.clone().unwrap_or_else(|| "?".into());
    eprintln!(
        "FORCED FAILOVER to {}. Not answering: {}.\n\
         - {} has WAL up to {received}: commits the old master acknowledged beyond that are lost\n\
           (under synchronous replication, only those acknowledged while it was degraded, or that\n\
           only an unreachable standby had).\n\
         - {} are removed from node_info: they must not be started as they are. Bring each back\n\
           with pgkeeper rejoin (or pgkeeper clone) and pgkeeper.add_node.\n\
         - Make sure they are down: a node that is only cut off may still take writes.",
        o.to,
        unreachable.join(", "),
        o.to,
        unreachable.join(", ")
    );
    if !o.yes {
        eprint!("Type the name of the new master ({}) to go on: ", o.to);
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != o.to {
            bail!("not confirmed: nothing changed");
        }
    }
    let term: i64 = c
        .query_one("SELECT pgkeeper._force_failover($1)", &[&unreachable])
        .context("forced failover")?
        .get(0);
    println!("forced failover done: {} is the master (term {term}); removed from node_info: {}", o.to, unreachable.join(", "));
    Ok(())
}
