//! `pgkeeper status`: node_info from one node, then every registered node asked for its
//! role and its worker's state.

use anyhow::{Context, Result};
use std::str::FromStr;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn connect(conninfo: &str) -> Result<postgres::Client> {
    let mut cfg = postgres::Config::from_str(conninfo).context("invalid conninfo")?;
    if cfg.get_user().is_none() {
        cfg.user("postgres");
    }
    cfg.connect_timeout(CONNECT_TIMEOUT);
    cfg.application_name("pgkeeper");
    cfg.connect(postgres::NoTls)
        .with_context(|| format!("cannot connect to {conninfo}"))
}

pub struct NodeRow {
    pub name: String,
    pub conninfo: String,
    pub is_master: bool,
    pub is_nextmaster: bool,
    pub is_sync: bool,
}

pub fn node_info(conninfo: &str) -> Result<Vec<NodeRow>> {
    let mut c = connect(conninfo)?;
    let rows = c
        .query(
            "SELECT name, conninfo, is_master, is_nextmaster, is_sync FROM pgkeeper.node_info ORDER BY seqno",
            &[],
        )
        .context("reading pgkeeper.node_info (is the extension created in this database?)")?;
    Ok(rows
        .iter()
        .map(|r| NodeRow {
            name: r.get(0),
            conninfo: r.get(1),
            is_master: r.get(2),
            is_nextmaster: r.get(3),
            is_sync: r.get(4),
        })
        .collect())
}

/// What one node says about itself.
pub struct Live {
    pub in_recovery: bool,
    pub mode: String,
    pub state: String,
}

pub fn live(conninfo: &str) -> Result<Live> {
    let mut c = connect(conninfo)?;
    let row = c.query_one(
        "SELECT pg_is_in_recovery(), s.mode, s.state FROM pgkeeper.status() s",
        &[],
    )?;
    Ok(Live {
        in_recovery: row.get(0),
        mode: row.get(1),
        state: row.get(2),
    })
}

pub fn render(conninfo: &str) -> Result<String> {
    let nodes = node_info(conninfo)?;
    let mut out = format!(
        "{:<10} {:<14} {:<6} {:<6} {:<10} {}\n",
        "NAME", "ROLE", "NEXT", "SYNC", "KEEPER", "STATE"
    );
    let mut warnings = Vec::new();
    for n in &nodes {
        let (role, mode, state) = match live(&n.conninfo) {
            Ok(l) => (
                if l.in_recovery { "standby" } else { "master" }.to_string(),
                l.mode,
                l.state,
            ),
            Err(e) => ("unreachable".to_string(), "-".to_string(), format!("{e:#}")),
        };
        if (role == "master") != n.is_master && role != "unreachable" {
            warnings.push(format!(
                "WARNING: {} is {} but node_info says {}",
                n.name,
                if role == "master" {
                    "writable"
                } else {
                    "a standby"
                },
                if n.is_master { "master" } else { "standby" }
            ));
        }
        out.push_str(&format!(
            "{:<10} {:<14} {:<6} {:<6} {:<10} {}\n",
            n.name,
            role,
            if n.is_nextmaster { "yes" } else { "" },
            if n.is_sync { "yes" } else { "" },
            mode,
            state
        ));
    }
    for w in warnings {
        out.push_str(&w);
        out.push('\n');
    }
    Ok(out)
}

pub fn run(conninfo: &str) -> Result<()> {
    print!("{}", render(conninfo)?);
    Ok(())
}
