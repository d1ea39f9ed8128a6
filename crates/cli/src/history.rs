//! `pgkeeper history`: the cluster's events (keeper_core::history), gathered from every node
//! that answers (`pgkeeper.history()`: the replicated table plus that node's own log, which
//! holds what a standby or a fenced master saw), each event once, oldest first.

use crate::status::{self, widths};
use anyhow::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Event {
    pub at: String,
    pub node: String,
    pub seq: i64,
    pub event: String,
    pub term: i64,
    pub nodes: Vec<String>,
    pub reason: String,
    /// The nodes that returned it.
    pub seen_on: Vec<String>,
}

const SQL: &str = "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), node_name, seq, event, term, \
                   array_to_string(nodes, ','), reason FROM pgkeeper.history()";

/// Every node's history, merged; and the nodes that could not be read (name, why).
pub fn gather(conninfo: &str) -> Result<(Vec<Event>, Vec<(String, String)>)> {
    status::set_operator(conninfo);
    let rows = status::node_info(conninfo)?;
    let handles: Vec<_> = rows
        .iter()
        .map(|n| {
            let ci = n.conninfo.clone();
            std::thread::spawn(move || -> Result<Vec<Event>> {
                let mut c = status::connect(&ci)?;
                Ok(c.query(SQL, &[])?
                    .iter()
                    .map(|r| Event {
                        at: r.get(0),
                        node: r.get(1),
                        seq: r.get(2),
                        event: r.get(3),
                        term: r.get(4),
                        nodes: r.get::<String>(5).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                        reason: r.get(6),
                        seen_on: vec![],
                    })
                    .collect())
            })
        })
        .collect();
    let mut merged: BTreeMap<(String, String, i64), Event> = BTreeMap::new();
    let mut missing = Vec::new();
    for (n, h) in rows.iter().zip(handles) {
        match h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("reader panicked"))) {
            Ok(evs) => {
                for e in evs {
                    merged
                        .entry((e.at.clone(), e.node.clone(), e.seq))
                        .or_insert_with(|| e.clone())
                        .seen_on
                        .push(n.name.clone());
                }
            }
            Err(e) => missing.push((n.name.clone(), format!("{e:#}"))),
        }
    }
    Ok((merged.into_values().collect(), missing))
}

pub fn table(events: &[Event]) -> String {
    let header = ["TIME (UTC)", "NODE", "EVENT", "TERM", "NODES", "REASON"];
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|e| [e.at.clone(), e.node.clone(), e.event.clone(), e.term.to_string(), e.nodes.join(","), e.reason.clone()])
        .collect();
    let w = widths(&header, &rows);
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for r in &rows {
        out.push_str(&line(&r.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

pub fn json(events: &[Event], missing: &[(String, String)]) -> Value {
    json!({
        "events": events.iter().map(|e| json!({
            "at": e.at, "node": e.node, "seq": e.seq, "event": e.event, "term": e.term,
            "nodes": e.nodes, "reason": e.reason, "seen_on": e.seen_on,
        })).collect::<Vec<_>>(),
        "unreachable": missing.iter().map(|(n, e)| json!({"name": n, "error": e})).collect::<Vec<_>>(),
    })
}

pub fn run(conninfo: &str, as_json: bool) -> Result<()> {
    let (events, missing) = gather(conninfo)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json(&events, &missing))?);
    } else {
        print!("{}", table(&events));
        for (n, e) in &missing {
            eprintln!("WARNING: {n} does not answer ({e}): its own events are missing");
        }
    }
    Ok(())
}
