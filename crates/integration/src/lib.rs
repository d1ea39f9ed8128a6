//! Helpers for the integration tests: clusters with pg_keeper registered, parameterised
//! SQL, and waiting for observable outcomes (logs, process titles, node_info).

use anyhow::{anyhow, Result};
pub use keeper_harness::{wait_until, Cluster, Node};
use std::time::Duration;

/// Generous deadline for outcomes that normally take a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A cluster with pg_keeper preloaded, the extension created on the master and every node
/// registered (node1 first, so it is the master).
pub fn keeper_cluster(
    name: &str,
    standbys: usize,
    sync_names: Option<&str>,
    conf: &[&str],
) -> Cluster {
    let mut b = Cluster::builder(name).standbys(standbys).keeper(true);
    if let Some(s) = sync_names {
        b = b.synchronous_standby_names(s);
    }
    for c in conf {
        b = b.conf(c);
    }
    let cluster = b.build().expect("cluster builds");
    cluster
        .master()
        .execute("CREATE EXTENSION pg_keeper")
        .expect("create extension");
    for n in cluster.nodes() {
        add_node(cluster.master(), n.name(), &n.conninfo()).expect("add_node");
    }
    cluster
}

/// `SELECT pgkeeper.add_node($1, $2)` with parameters.
pub fn add_node(on: &Node, name: &str, conninfo: &str) -> Result<bool> {
    let mut c = on.try_connect()?;
    Ok(
        c.query_one("SELECT pgkeeper.add_node($1, $2)", &[&name, &conninfo])?
            .get(0),
    )
}

/// Run a statement with text parameters; Err carries the server's message.
pub fn exec_params(
    on: &Node,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<()> {
    let mut c = on.try_connect()?;
    c.execute(sql, params)
        .map(|_| ())
        .map_err(|e| anyhow!(db_message(&e)))
}

/// The server's error message (and hint), or the client error.
pub fn db_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.hint() {
            Some(h) => format!("{} (hint: {h})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

/// node_info as (seqno, name, is_master, is_nextmaster, is_sync) rows, ordered by seqno.
pub fn node_info(on: &Node) -> Vec<(String, String, String, String, String)> {
    on.query("SELECT seqno, name, is_master, is_nextmaster, is_sync FROM pgkeeper.node_info ORDER BY seqno")
        .expect("read node_info")
        .into_iter()
        .map(|r| {
            let v: Vec<String> = r.into_iter().map(|c| c.unwrap_or_default()).collect();
            (v[0].clone(), v[1].clone(), v[2].clone(), v[3].clone(), v[4].clone())
        })
        .collect()
}

/// Pid and title of the node's pg_keeper worker, if it runs.
pub fn worker(node: &Node) -> Option<(i32, String)> {
    node.children()
        .into_iter()
        .find(|(_, cmd)| cmd.contains("pg_keeper"))
}

/// Wait until the worker's process title contains `needle`.
pub fn wait_title(node: &Node, needle: &str) -> Result<String> {
    let mut last = String::new();
    wait_until(PATIENCE, || {
        last = worker(node).map(|w| w.1).unwrap_or_default();
        last.contains(needle)
    })
    .map_err(|_| {
        anyhow!(
            "{}: worker title never contained {needle:?}; last: {last:?}",
            node.name()
        )
    })?;
    Ok(last)
}

/// Wait until the node's log contains `needle`.
pub fn wait_log(node: &Node, needle: &str) -> Result<()> {
    wait_until(PATIENCE, || node.log_contents().contains(needle)).map_err(|_| {
        anyhow!(
            "{}: log never contained {needle:?}\n--- tail ---\n{}",
            node.name(),
            node.log_tail(40)
        )
    })
}

/// Wait until a standby has replayed everything the master wrote so far.
pub fn wait_replayed(master: &Node, standby: &Node) -> Result<()> {
    let lsn: String = master
        .try_connect()?
        .query_one("SELECT pg_current_wal_lsn()::text", &[])?
        .get(0);
    let replayed = || -> Result<bool> {
        let row = standby.try_connect()?.query_one(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
            &[&lsn],
        )?;
        Ok(row.get(0))
    };
    wait_until(PATIENCE, || replayed().unwrap_or(false))
        .map_err(|_| anyhow!("{} did not replay up to {lsn}", standby.name()))
}
