//! The node registry (`pgkeeper.node_info`) and its rules: who is the master, who is the next
//! master, which standbys are synchronous, and what may be added or removed.
//!
//! Functions here take the current rows and return the rows as they must become; the
//! extension writes the difference ([`diff`]) with parameterised SQL.

use crate::conninfo::{ConninfoError, Parse};
use crate::sync_names::SyncConfig;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub seqno: i32,
    pub name: String,
    pub conninfo: String,
    pub is_master: bool,
    pub is_nextmaster: bool,
    pub is_sync: bool,
    /// A witness: votes and answers polls, holds no data, never becomes master (issue 5/5).
    pub is_witness: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    BadName(String),
    BadConninfo(ConninfoError),
    DuplicateName(String),
    /// The new conninfo points at the same server as this registered node.
    DuplicateConninfo {
        existing: String,
        target: String,
    },
    UnknownName(String),
    UnknownSeqno(i32),
    DeleteMaster(String),
    /// The first node registered is the master; a witness cannot be.
    WitnessFirst(String),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::BadName(m) => write!(f, "invalid node name: {m}"),
            RegistryError::BadConninfo(e) => write!(f, "{e}"),
            RegistryError::DuplicateName(n) => {
                write!(f, "a node named \"{n}\" is already registered")
            }
            RegistryError::DuplicateConninfo { existing, target } => {
                write!(f, "node \"{existing}\" is already registered for server {target}")
            }
            RegistryError::UnknownName(n) => write!(f, "no node named \"{n}\" is registered"),
            RegistryError::UnknownSeqno(s) => write!(f, "no node with seqno {s} is registered"),
            RegistryError::DeleteMaster(n) => {
                write!(f, "node \"{n}\" is the master and cannot be deleted (fail over or switch over first)")
            }
            RegistryError::WitnessFirst(n) => {
                write!(f, "\"{n}\" cannot be registered as a witness: the first node registered is the master")
            }
        }
    }
}

impl std::error::Error for RegistryError {}

/// Node names double as `application_name` and entries of `synchronous_standby_names`, so
/// they are kept to characters that need no quoting anywhere.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    if name.is_empty() {
        return Err(RegistryError::BadName("the name is empty".into()));
    }
    if name.len() > 63 {
        return Err(RegistryError::BadName(format!("\"{name}\" is longer than 63 bytes")));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(RegistryError::BadName(format!("\"{name}\" may contain only letters, digits, '_', '-' and '.'")));
    }
    Ok(())
}

/// Which node a deletion names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector<'a> {
    Name(&'a str),
    Seqno(i32),
}

/// Rows after registering `name`: the first node registered is the master.
pub fn add(
    nodes: &[Node],
    name: &str,
    conninfo: &str,
    witness: bool,
    sync: Option<&SyncConfig>,
    parse: Parse,
) -> Result<Vec<Node>, RegistryError> {
    check_name(name)?;
    if witness && nodes.is_empty() {
        return Err(RegistryError::WitnessFirst(name.to_string()));
    }
    let ci = parse(conninfo).map_err(RegistryError::BadConninfo)?;
    if let Some(n) = nodes.iter().find(|n| n.name.eq_ignore_ascii_case(name)) {
        return Err(RegistryError::DuplicateName(n.name.clone()));
    }
    let target = ci.target();
    for n in nodes {
        if parse(&n.conninfo).map(|c| c.target()).ok().as_deref() == Some(target.as_str()) {
            return Err(RegistryError::DuplicateConninfo { existing: n.name.clone(), target });
        }
    }
    let mut out = nodes.to_vec();
    out.push(Node {
        seqno: nodes.iter().map(|n| n.seqno).max().unwrap_or(0) + 1,
        name: name.to_string(),
        conninfo: conninfo.to_string(),
        is_master: nodes.is_empty(),
        is_nextmaster: false,
        is_sync: false,
        is_witness: witness,
    });
    recompute(&mut out, sync);
    Ok(out)
}

/// Rows after removing a standby.
pub fn delete(nodes: &[Node], which: Selector<'_>, sync: Option<&SyncConfig>) -> Result<Vec<Node>, RegistryError> {
    let idx = match which {
        Selector::Name(n) => nodes
            .iter()
            .position(|x| x.name.eq_ignore_ascii_case(n))
            .ok_or_else(|| RegistryError::UnknownName(n.to_string()))?,
        Selector::Seqno(s) => nodes.iter().position(|x| x.seqno == s).ok_or(RegistryError::UnknownSeqno(s))?,
    };
    if nodes[idx].is_master {
        return Err(RegistryError::DeleteMaster(nodes[idx].name.clone()));
    }
    let mut out = nodes.to_vec();
    out.remove(idx);
    recompute(&mut out, sync);
    Ok(out)
}

/// Recompute `is_sync` and `is_nextmaster` from the master flag and the synchronous
/// configuration. The next master is the first synchronous standby in
/// `synchronous_standby_names` order (it holds every acknowledged commit), else the standby
/// with the lowest seqno. Exactly one standby is next master whenever there is a standby.
pub fn recompute(nodes: &mut [Node], sync: Option<&SyncConfig>) {
    for n in nodes.iter_mut() {
        n.is_sync = !n.is_master && !n.is_witness && sync.is_some_and(|s| s.lists(&n.name));
        n.is_nextmaster = false;
    }
    let by_sync = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.is_sync)
        .min_by_key(|(_, n)| sync.and_then(|s| s.position(&n.name)).unwrap_or(usize::MAX))
        .map(|(i, _)| i);
    let by_seqno = || {
        nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_master && !n.is_witness)
            .min_by_key(|(_, n)| n.seqno)
            .map(|(i, _)| i)
    };
    if let Some(i) = by_sync.or_else(by_seqno) {
        nodes[i].is_nextmaster = true;
    }
}

/// One write the adapter must make to turn `old` rows into `new` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Insert(Node),
    Delete(i32),
    /// Flags of the row with this seqno (conninfo and name never change in place).
    Update(Node),
}

pub fn diff(old: &[Node], new: &[Node]) -> Vec<Change> {
    let mut out = Vec::new();
    for o in old {
        if !new.iter().any(|n| n.seqno == o.seqno) {
            out.push(Change::Delete(o.seqno));
        }
    }
    for n in new {
        match old.iter().find(|o| o.seqno == n.seqno) {
            None => out.push(Change::Insert(n.clone())),
            Some(o) if o != n => out.push(Change::Update(n.clone())),
            Some(_) => {}
        }
    }
    out
}

/// node_info as the writable node `me` must keep it: `me` is the master (after a promotion
/// the old master becomes a plain entry, to be rejoined), `is_sync` follows the
/// configuration, and the next master is chosen among the standbys that are streaming now
/// (`streaming`, by name): the first synchronous one in list order, else the lowest seqno.
/// When no standby streams, the current next master is kept (unless it is `me`), so that
/// a brief outage of every standby does not churn the registry.
pub fn master_view(nodes: &[Node], me: &str, sync: Option<&SyncConfig>, streaming: &[&str]) -> Vec<Node> {
    let mut out = nodes.to_vec();
    for n in out.iter_mut() {
        n.is_master = n.name == me;
        n.is_sync = !n.is_master && !n.is_witness && sync.is_some_and(|s| s.lists(&n.name));
    }
    let is_streaming =
        |n: &Node| !n.is_master && !n.is_witness && streaming.iter().any(|s| s.eq_ignore_ascii_case(&n.name));
    let by_sync = out
        .iter()
        .enumerate()
        .filter(|(_, n)| n.is_sync && is_streaming(n))
        .min_by_key(|(_, n)| sync.and_then(|s| s.position(&n.name)).unwrap_or(usize::MAX))
        .map(|(i, _)| i);
    let by_seqno =
        || out.iter().enumerate().filter(|(_, n)| is_streaming(n)).min_by_key(|(_, n)| n.seqno).map(|(i, _)| i);
    match by_sync.or_else(by_seqno) {
        Some(i) => {
            for (j, n) in out.iter_mut().enumerate() {
                n.is_nextmaster = i == j;
            }
        }
        None => {
            for n in out.iter_mut().filter(|n| n.is_master) {
                n.is_nextmaster = false;
            }
        }
    }
    out
}
