//! `pgkeeper status`: node_info read from any node, then every registered node asked, all at
//! once, each within a deadline: role, keeper mode and state, timeline, WAL positions, lag,
//! and warnings for anything wrong.

use anyhow::{anyhow, Context, Result};
use keeper_core::gate::{Attention, GateKind};
use keeper_core::lsn;
use serde_json::{json, Value};
use keeper_pq::{Row, ToParam};
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Each statement the CLI runs: a switchover's steps wait for the cluster, never this long.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to a node, made by libpq (`keeper_pq`: TLS, password and service files,
/// exactly as psql and the walreceiver read the conninfo), every statement under a deadline.
pub struct Client {
    conn: keeper_pq::Conn,
}

impl Client {
    fn until() -> Instant {
        Instant::now() + STATEMENT_TIMEOUT
    }

    pub fn query(&mut self, sql: &str, params: &[&dyn ToParam]) -> Result<Vec<Row>, keeper_pq::Error> {
        self.conn.query(sql, params, Self::until())
    }

    pub fn query_one(&mut self, sql: &str, params: &[&dyn ToParam]) -> Result<Row, keeper_pq::Error> {
        self.conn.query_one(sql, params, Self::until())
    }

    pub fn batch_execute(&mut self, sql: &str) -> Result<(), keeper_pq::Error> {
        self.conn.batch(sql, Self::until())
    }
}

/// The user the operator named in the conninfo given on the command line (None: none named).
/// node_info's conninfo names the user the nodes talk to each other as (pgkeeper_agent, which
/// may not read node_info's admin functions or step a master down): the CLI connects to every
/// node as the operator instead, with the rest of the node's conninfo (address, TLS).
static OPERATOR: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Take the operator's user from the first conninfo given on the command line.
pub fn set_operator(conninfo: &str) {
    let user = keeper_pq::conninfo::parse(conninfo)
        .ok()
        .and_then(|p| p.into_iter().rev().find(|(k, v)| k == "user" && !v.is_empty()).map(|(_, v)| v));
    let _ = OPERATOR.set(user);
}

pub fn operator() -> Option<String> {
    OPERATOR.get().cloned().flatten()
}

/// The database pg_keeper lives in (`pg_keeper.database` of the first node asked), which the
/// CLI connects to on every node whatever database the conninfo names, as the worker does: a
/// node registered with `dbname=template1` is asked in the extension's database.
static DATABASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Connect with `conninfo` as libpq reads it, within 3 s, as application `pgkeeper`, as the
/// operator (`set_operator`); with no user named anywhere (conninfo, service, PGUSER), as
/// `postgres` rather than the OS user.
pub fn connect(conninfo: &str) -> Result<Client> {
    let pairs = keeper_pq::conninfo::parse(conninfo).map_err(|e| anyhow!("invalid conninfo: {e}"))?;
    let named = |k: &str| pairs.iter().any(|(key, v)| key == k && !v.is_empty());
    let op = operator();
    let mut overrides = vec![("application_name", "pgkeeper")];
    if let Some(db) = DATABASE.get() {
        overrides.push(("dbname", db));
    }
    if let Some(u) = op.as_deref() {
        overrides.push(("user", u));
    } else if !named("user") && !named("service") && std::env::var_os("PGUSER").is_none() && std::env::var_os("PGSERVICE").is_none() {
        overrides.push(("user", "postgres"));
    }
    let conn = keeper_pq::Conn::connect(conninfo, &overrides, Instant::now() + CONNECT_TIMEOUT)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(Client { conn })
}

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub name: String,
    pub conninfo: String,
    pub is_master: bool,
    pub is_nextmaster: bool,
    pub is_sync: bool,
    pub is_witness: bool,
}

pub fn node_info(conninfo: &str) -> Result<Vec<NodeRow>> {
    let mut c = connect(conninfo).with_context(|| "cannot connect to the node given")?;
    if DATABASE.get().is_none() {
        let r = c.query_one(
            "SELECT nullif(current_setting('pg_keeper.database', true), ''), current_database()::text",
            &[],
        )?;
        if let Some(db) = r.get::<Option<String>>(0) {
            let here: String = r.get(1);
            let _ = DATABASE.set(db.clone());
            if db != here {
                c = connect(conninfo).with_context(|| format!("cannot connect to database {db} of the node given"))?;
            }
        }
    }
    let rows = c
        .query(
            "SELECT name, conninfo, is_master, is_nextmaster, is_sync, is_witness FROM pgkeeper.node_info ORDER BY seqno",
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
            is_witness: r.get(5),
        })
        .collect())
}

/// What one node says about itself.
#[derive(Debug, Clone)]
pub struct Live {
    pub in_recovery: bool,
    pub mode: String,
    pub state: String,
    pub sync_state: String,
    pub timeline: Option<i64>,
    /// Master: current WAL position. Standby: last received.
    pub lsn: Option<String>,
    pub replay_lsn: Option<String>,
    /// Standby: WAL receiver status ("streaming", ...) and upstream.
    pub receiver: Option<String>,
    pub upstream: Option<String>,
    /// Master: synchronous standbys (name -> sync_state).
    pub sync_standbys: Vec<(String, String)>,
    /// Election term, and the commit gate (`commits`: for people, "deposed by node2 (term 3)").
    pub term: i64,
    pub commits: String,
    pub gate: GateKind,
    pub attention: Attention,
    /// Cluster-wide maintenance mode as this node has it (`pgkeeper pause`).
    pub paused: bool,
}

impl Live {
    /// Acknowledges writes now: not a standby, not a witness, commit gate open.
    pub fn writable(&self) -> bool {
        !self.in_recovery && self.mode != "witness" && self.gate == GateKind::Open
    }
}

const LIVE_SQL: &str = "
SELECT pg_is_in_recovery(), s.mode, s.state, s.sync_state,
       CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli::bigint FROM pg_stat_wal_receiver),
                          (SELECT timeline_id::bigint FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()::text
            ELSE pg_current_wal_lsn()::text END,
       pg_last_wal_replay_lsn()::text,
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver),
       s.term, s.commits, s.gate::text, s.attention::text, s.paused
FROM pgkeeper.status() s";

pub fn live(conninfo: &str) -> Result<Live> {
    let mut c = connect(conninfo)?;
    let r = c.query_one(LIVE_SQL, &[])?;
    let mut l = Live {
        in_recovery: r.get(0),
        mode: r.get(1),
        state: r.get(2),
        sync_state: r.get(3),
        timeline: r.get(4),
        lsn: r.get(5),
        replay_lsn: r.get(6),
        receiver: r.get(7),
        upstream: r.get(8),
        sync_standbys: Vec::new(),
        term: r.get(9),
        commits: r.get(10),
        gate: GateKind::parse(&r.get::<String>(11)).ok_or_else(|| anyhow!("unknown gate {:?}", r.get::<String>(11)))?,
        attention: Attention::parse(&r.get::<String>(12))
            .ok_or_else(|| anyhow!("unknown attention {:?}", r.get::<String>(12)))?,
        paused: r.get(13),
    };
    if !l.in_recovery {
        for row in c.query("SELECT application_name, sync_state FROM pg_stat_replication", &[])? {
            l.sync_standbys.push((row.get(0), row.get(1)));
        }
    }
    Ok(l)
}

/// The whole picture.
pub struct Report {
    pub nodes: Vec<(NodeRow, Result<Live, String>)>,
    pub warnings: Vec<String>,
}

pub fn gather(conninfo: &str) -> Result<Report> {
    set_operator(conninfo);
    let rows = node_info(conninfo)?;
    // Ask every node at once: a dead node costs one connect timeout, not one per node.
    let handles: Vec<_> = rows
        .iter()
        .map(|n| {
            let ci = n.conninfo.clone();
            std::thread::spawn(move || live(&ci).map_err(|e| format!("{e:#}")))
        })
        .collect();
    let lives: Vec<Result<Live, String>> =
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("probe panicked".into()))).collect();
    let nodes: Vec<(NodeRow, Result<Live, String>)> = rows.into_iter().zip(lives).collect();
    let warnings = warnings(&nodes);
    Ok(Report { nodes, warnings })
}

fn warnings(nodes: &[(NodeRow, Result<Live, String>)]) -> Vec<String> {
    let mut w = Vec::new();
    let writable: Vec<&str> =
        nodes.iter().filter(|(_, l)| matches!(l, Ok(l) if l.writable())).map(|(n, _)| n.name.as_str()).collect();
    if writable.len() > 1 {
        w.push(format!("more than one node accepts writes: {} (split brain: rejoin all but one)", writable.join(", ")));
    }
    if writable.is_empty() {
        w.push("no node accepts writes".to_string());
    }
    for (n, l) in nodes {
        match l {
            Err(e) => w.push(format!("{} does not answer: {e}", n.name)),
            Ok(l) => {
                if l.in_recovery && l.receiver.as_deref() != Some("streaming") {
                    w.push(format!("{} is a standby but is not streaming", n.name));
                }
                if l.attention != Attention::None {
                    w.push(format!("{}: {} (pgkeeper rejoin)", n.name, l.state));
                } else if l.gate == GateKind::Fenced {
                    w.push(format!("{}: master without a majority: fenced, commits wait", n.name));
                }
                if l.sync_state == "degraded" {
                    w.push(format!("{}: synchronous replication degraded to asynchronous", n.name));
                }
                if n.is_master && l.in_recovery {
                    w.push(format!("{} is master in node_info but is a standby", n.name));
                }
            }
        }
    }
    w
}

fn host_port(conninfo: &str) -> String {
    keeper_pq::conninfo::node(conninfo)
        .map(|c| format!("{}:{}", c.get("host").unwrap_or("localhost"), c.get("port").unwrap_or("5432")))
        .unwrap_or_else(|_| "?".into())
}

fn role(n: &NodeRow, l: &Result<Live, String>, master: Option<&Live>) -> String {
    match l {
        Err(_) => "unreachable".into(),
        Ok(l) if l.mode == "witness" => "witness".into(),
        Ok(l) if l.writable() => "master".into(),
        Ok(l) if !l.in_recovery && l.gate == GateKind::Deposed => "old master".into(),
        Ok(l) if !l.in_recovery => "fenced master".into(),
        Ok(_) => match master.and_then(|m| m.sync_standbys.iter().find(|(a, _)| a == &n.name)) {
            Some((_, s)) if s == "sync" || s == "quorum" => "sync standby".into(),
            _ => "standby".into(),
        },
    }
}

fn lag(l: &Live, master: Option<&Live>) -> Option<u64> {
    if !l.in_recovery {
        return None;
    }
    let m = lsn::parse(master?.lsn.as_deref()?)?;
    let r = lsn::parse(l.replay_lsn.as_deref()?)?;
    Some(m.saturating_sub(r))
}

impl Report {
    fn master(&self) -> Option<&Live> {
        self.nodes.iter().filter_map(|(_, l)| l.as_ref().ok()).find(|l| l.writable())
    }

    pub fn table(&self) -> String {
        let master = self.master();
        let header = ["NAME", "HOST:PORT", "ROLE", "NEXT", "KEEPER", "TL", "LSN", "LAG", "STATE"];
        let rows: Vec<[String; 9]> = self
            .nodes
            .iter()
            .map(|(n, l)| {
                let (mode, tl, lsn, lag, state) = match l {
                    Ok(l) => (
                        l.mode.clone(),
                        l.timeline.map(|t| t.to_string()).unwrap_or("-".into()),
                        l.lsn.clone().unwrap_or("-".into()),
                        lag(l, master).map(|b| b.to_string()).unwrap_or("-".into()),
                        l.state.clone(),
                    ),
                    Err(e) => ("-".into(), "-".into(), "-".into(), "-".into(), e.clone()),
                };
                [
                    n.name.clone(),
                    host_port(&n.conninfo),
                    role(n, l, master),
                    if n.is_nextmaster { "yes".into() } else { String::new() },
                    mode,
                    tl,
                    lsn,
                    lag,
                    state,
                ]
            })
            .collect();
        let w = widths(&header, &rows);
        // LAG right-aligned; STATE, the last column, as long as it is.
        let line = |c: &[&str]| {
            format!(
                "{:<w0$} {:<w1$} {:<w2$} {:<w3$} {:<w4$} {:<w5$} {:<w6$} {:>w7$}  {}",
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8],
                w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7]
            )
            .trim_end()
            .to_string()
                + "\n"
        };
        let mut out = line(&header);
        for r in &rows {
            out.push_str(&line(&r.iter().map(String::as_str).collect::<Vec<_>>()));
        }
        if self.nodes.iter().any(|(_, l)| matches!(l, Ok(l) if l.paused)) {
            out.push_str("PAUSED: automatic failover is paused cluster-wide (pgkeeper resume ends it)\n");
        }
        for w in &self.warnings {
            out.push_str(&format!("WARNING: {w}\n"));
        }
        out
    }

    pub fn json(&self) -> Value {
        let master = self.master();
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|(n, l)| {
                let mut v = json!({
                    "name": n.name,
                    "host_port": host_port(&n.conninfo),
                    "role": role(n, l, master),
                    "is_master": n.is_master,
                    "is_nextmaster": n.is_nextmaster,
                    "is_sync": n.is_sync,
                });
                match l {
                    Ok(l) => {
                        v["keeper_mode"] = json!(l.mode);
                        v["keeper_state"] = json!(l.state);
                        v["term"] = json!(l.term);
                        v["commits"] = json!(l.commits);
                        v["gate"] = json!(l.gate.as_str());
                        v["attention"] = json!(l.attention.as_str());
                        v["sync_state"] = json!(l.sync_state);
                        v["timeline"] = json!(l.timeline);
                        v["lsn"] = json!(l.lsn);
                        v["replay_lsn"] = json!(l.replay_lsn);
                        v["lag_bytes"] = json!(lag(l, master));
                        v["wal_receiver"] = json!(l.receiver);
                        v["upstream"] = json!(l.upstream);
                        v["paused"] = json!(l.paused);
                    }
                    Err(e) => v["error"] = json!(e),
                }
                v
            })
            .collect();
        let paused = self.nodes.iter().any(|(_, l)| matches!(l, Ok(l) if l.paused));
        json!({ "nodes": nodes, "paused": paused, "warnings": self.warnings })
    }
}

/// Column widths: the widest of the header and every row, per column (in characters).
pub fn widths<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> [usize; N] {
    let mut w = header.map(|h| h.chars().count());
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    w
}

pub fn render(conninfo: &str) -> Result<String> {
    Ok(gather(conninfo)?.table())
}

/// `pgkeeper status CONNINFO [--json] [--watch [SECONDS]]`. Exit code 1 when the cluster
/// could not be read; warnings do not change the exit code.
/// `pgkeeper status`: the report once, or every `watch` seconds.
pub fn run(conninfo: &str, as_json: bool, watch: Option<f64>) -> Result<()> {
    loop {
        let report = gather(conninfo)?;
        if watch.is_some() {
            print!("\x1b[2J\x1b[H");
        }
        if as_json {
            println!("{}", serde_json::to_string_pretty(&report.json())?);
        } else {
            print!("{}", report.table());
        }
        match watch {
            Some(s) => std::thread::sleep(Duration::from_secs_f64(s.max(0.2))),
            None => return Ok(()),
        }
    }
}

/// `pgkeeper uri CONNINFO [--keyvalue]`: a libpq multi-host connection string over every
/// registered node, for clients: the database named in the conninfo given (else pg_keeper's),
/// the operator's user if it names one (never the nodes' own agent user), and the TLS
/// settings of the first node's conninfo (a client checks the servers as the nodes check each
/// other). A URI (percent-encoded), or with `keyvalue` the `key=value` form (quoted).
pub fn uri(conninfo: &str, keyvalue: bool) -> Result<String> {
    set_operator(conninfo);
    // Witnesses hold no data for clients: not in the list.
    let rows: Vec<NodeRow> = node_info(conninfo)?.into_iter().filter(|n| !n.is_witness).collect();
    let first = keeper_pq::conninfo::node(&rows.first().context("node_info has no data node")?.conninfo)?;
    let hosts: Vec<(String, String)> = rows
        .iter()
        .map(|n| {
            let c = keeper_pq::conninfo::node(&n.conninfo)?;
            Ok((c.get("host").unwrap_or("localhost").to_string(), c.get("port").unwrap_or("5432").to_string()))
        })
        .collect::<Result<_>>()?;
    // The database the operator named, else pg_keeper's (never a node's conninfo's: it may
    // name a database no client wants, such as template1).
    let named = keeper_pq::conninfo::parse(conninfo)
        .ok()
        .and_then(|p| p.into_iter().rev().find(|(k, v)| k == "dbname" && !v.is_empty()).map(|(_, v)| v));
    let db = named.or_else(|| DATABASE.get().cloned()).unwrap_or_else(|| "postgres".into());
    let mut params: Vec<(&str, String)> =
        vec![("target_session_attrs", "read-write".into()), ("connect_timeout", "2".into())];
    for k in ["sslmode", "sslrootcert", "sslcrl"] {
        if let Some(v) = first.get(k) {
            params.push((k, v.to_string()));
        }
    }
    let user = operator();
    if keyvalue {
        let mut kv = vec![
            ("host", hosts.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>().join(",")),
            ("port", hosts.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>().join(",")),
            ("dbname", db),
        ];
        if let Some(u) = user {
            kv.push(("user", u));
        }
        kv.extend(params);
        return Ok(kv.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect::<Vec<_>>().join(" "));
    }
    let hosts: Vec<String> = hosts
        .iter()
        .map(|(h, p)| if h.contains(':') { format!("[{h}]:{p}") } else { format!("{}:{p}", encode(h).replace('/', "%2F")) })
        .collect();
    let user = user.map(|u| format!("{}@", encode(&u))).unwrap_or_default();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    Ok(format!("postgresql://{user}{}/{}?{}", hosts.join(","), encode(&db), query.join("&")))
}

/// A conninfo value: bare when it is plain, else in single quotes with ' and \ escaped.
fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Percent-encode all but RFC 3986's unreserved characters and '/'.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
