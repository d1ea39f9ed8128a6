//! `pgkeeper pause` / `pgkeeper resume`: cluster-wide maintenance mode. Written on the master
//! (`pgkeeper.pause()`, `pgkeeper.resume()`), replicated to every standby, kept across
//! restarts: while paused no standby stands for election by itself. `switchover` and
//! `failover --to` still work.

use crate::status;
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

pub fn run(conninfo: &str, pause: bool, reason: &str) -> Result<()> {
    let report = status::gather(conninfo)?;
    let masters: Vec<&status::NodeRow> =
        report.nodes.iter().filter(|(_, l)| matches!(l, Ok(l) if l.writable())).map(|(n, _)| n).collect();
    let master = match masters.as_slice() {
        [m] => *m,
        [] => bail!(
            "no node accepts writes: the mode is kept in the master's tables (use pgkeeper failover --to NODE to elect one first)"
        ),
        many => bail!(
            "several nodes accept writes ({}): resolve that first",
            many.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut c = status::connect(&master.conninfo)?;
    let changed: bool = if pause {
        c.query_one("SELECT pgkeeper.pause($1)", &[&reason])?.get(0)
    } else {
        c.query_one("SELECT pgkeeper.resume()", &[])?.get(0)
    };
    let what = if pause { "paused" } else { "resumed" };
    if !changed {
        println!("automatic failover was already {what}");
        return Ok(());
    }
    // Replicated: wait (a few seconds) until every node that answers has it.
    let t = Instant::now();
    loop {
        let r = status::gather(conninfo)?;
        let behind: Vec<String> = r
            .nodes
            .iter()
            .filter_map(|(n, l)| match l {
                Ok(l) if l.mode != "witness" && l.paused != pause => Some(n.name.clone()),
                Err(e) => Some(format!("{} (does not answer: {e})", n.name)),
                _ => None,
            })
            .collect();
        if behind.is_empty() {
            println!("automatic failover {what} cluster-wide (written on {})", master.name);
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(15) {
            println!(
                "automatic failover {what} on {} (replicated); not yet seen by: {}",
                master.name,
                behind.join(", ")
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
