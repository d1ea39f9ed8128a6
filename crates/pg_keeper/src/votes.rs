//! The vote record on disk: `$PGDATA/pg_keeper.<node>.vote` (`term N` / `voted_for NAME`),
//! written to a temporary file, fsynced, renamed and the directory fsynced before any answer
//! that depends on it. The node name is in the file name because base backups and pg_rewind
//! copy a data directory from another node. Mirrored in shared memory once read.
//!
//! Every read-decide-write runs under the exclusive lock of the shared state, so two vote
//! requests arriving at once cannot both be granted in one term.

use crate::shared::{self, STATE};
use keeper_core::election::VoteRecord;
use std::ffi::CStr;
use std::io::Write;
use std::path::PathBuf;

fn path(node: &str) -> PathBuf {
    node_file(node, "vote")
}

/// `$PGDATA/pg_keeper.<node>.<what>`: each of pg_keeper's files of this node (the vote
/// record, its history log, a forced failover's record, ...).
pub fn node_file(node: &str, what: &str) -> PathBuf {
    let dir = unsafe { CStr::from_ptr(pgrx::pg_sys::DataDir) }.to_string_lossy().into_owned();
    PathBuf::from(dir).join(format!("pg_keeper.{node}.{what}"))
}

fn load(node: &str) -> Result<VoteRecord, String> {
    let p = path(node);
    match std::fs::read_to_string(&p) {
        Ok(s) => VoteRecord::parse(&s).map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(VoteRecord::default()),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

fn store(node: &str, rec: &VoteRecord) -> Result<(), String> {
    durable_write(&path(node), &rec.to_file())
}

/// Write `contents` to `p` so that a crash leaves either the old file or the new one: a
/// temporary file, fsynced, renamed over `p`, and the directory fsynced.
pub fn durable_write(p: &std::path::Path, contents: &str) -> Result<(), String> {
    // (one temporary file per file: `.vote`, `.forced`, ... may be written at once)
    let tmp = std::path::PathBuf::from(format!("{}.tmp", p.display()));
    let io = |e: std::io::Error| format!("cannot write {}: {e}", p.display());
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, p).map_err(io)?;
    if let Some(dir) = p.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// `$PGDATA/pg_keeper.<node>.settled`: the newest membership version every node of a
/// two-node cluster reported to this master (`keeper_core::membership::known_to_all`), kept
/// across restarts so that a master restarted while its standby is down is not fenced for
/// want of a report: a standby's version never goes back.
fn settled_path(node: &str) -> PathBuf {
    path(node).with_extension("settled")
}

pub fn load_settled(node: &str) -> Option<u64> {
    std::fs::read_to_string(settled_path(node)).ok().and_then(|s| s.trim().parse().ok())
}

pub fn store_settled(node: &str, version: u64) -> Result<(), String> {
    durable_write(&settled_path(node), &format!("{version}\n"))
}

/// `$PGDATA/pg_keeper.<node>.deposed` (`NAME TERM`): this master was deposed by NAME in
/// TERM. Read when the server starts out of recovery, so that a deposed master that
/// restarts refuses clients and commits at once (before it hears from the new master, which
/// it may never reach); removed once it runs as a standby (rejoined).
fn deposed_path(node: &str) -> PathBuf {
    path(node).with_extension("deposed")
}

pub fn store_deposed(node: &str, by: &str, term: u64) -> Result<(), String> {
    durable_write(&deposed_path(node), &format!("{by} {term}\n"))
}

pub fn load_deposed(node: &str) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(deposed_path(node)).ok()?;
    let (by, term) = s.trim().split_once(' ')?;
    Some((by.to_string(), term.trim().parse().ok()?))
}

pub fn clear_deposed(node: &str) {
    let p = deposed_path(node);
    if p.exists() {
        if let Err(e) = std::fs::remove_file(&p) {
            pgrx::warning!("pg_keeper: cannot remove {}: {e}", p.display());
        }
    }
}

/// Run `decide` on the current record (and the shared state, under the same lock: the vote
/// hold is read and set there); persist the record it returns (when it differs) before
/// returning its answer. Err when the record cannot be read or written: then nothing was
/// granted, and `decide`'s changes to the shared state are undone.
pub fn with_record<T>(
    node: &str,
    decide: impl FnOnce(&VoteRecord, &mut shared::KeeperState) -> (T, VoteRecord),
) -> Result<T, String> {
    let mut st = STATE.exclusive();
    let current = if st.vote_loaded { st.record() } else { load(node)? };
    let before = *st;
    let (answer, new) = decide(&current, &mut st);
    if new != current || !st.vote_loaded {
        if new != current {
            if let Err(e) = store(node, &new) {
                *st = before;
                return Err(e);
            }
        }
        st.term = new.term;
        shared::put_str(&mut st.voted_for, new.voted_for.as_deref().unwrap_or(""));
        st.elected = new.elected;
        st.eligible_known = new.eligible.is_some();
        st.eligible_term = new.eligible_term;
        shared::put_str(&mut st.eligible, &new.eligible.as_deref().unwrap_or_default().join(" "));
        st.vote_loaded = true;
    }
    Ok(answer)
}

/// The current record (loaded from disk the first time).
pub fn current(node: &str) -> Result<VoteRecord, String> {
    with_record(node, |r, _| (r.clone(), r.clone()))
}

/// Whether this node's record is on disk: the evidence that it is (or was) a cluster member,
/// which makes it start fenced (`shared::gate`).
pub fn exists(node: &str) -> bool {
    path(node).exists()
}

/// Write the record if it is not on disk yet (the worker, once it sees this node registered):
/// from then on this server starts fenced after every restart.
pub fn ensure_stored(node: &str) -> Result<(), String> {
    if exists(node) {
        return Ok(());
    }
    let _lock = STATE.exclusive();
    if exists(node) {
        return Ok(());
    }
    let rec = load(node)?;
    store(node, &rec)
}
