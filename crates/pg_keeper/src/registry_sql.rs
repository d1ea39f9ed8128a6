//! Reading and writing `pgkeeper.node_info` through SPI, always with parameters.
//!
//! Reads use only the read-only SPI path (`select`), which works on a hot standby; writes run
//! only on the master, inside the SQL API functions, with the write guard open.

use keeper_core::registry::Change;
use keeper_core::Node;
use pgrx::spi::SpiClient;
use std::cell::Cell;

thread_local! {
    /// True only while one of our API functions writes node_info; the trigger on node_info
    /// refuses every other write. A Rust static cannot be set from SQL.
    static API_WRITE: Cell<bool> = const { Cell::new(false) };
}

/// Opens the write guard for its lifetime (closed again on error too: pgrx unwinds).
pub struct WriteGuard;

impl WriteGuard {
    pub fn open() -> WriteGuard {
        API_WRITE.with(|w| w.set(true));
        WriteGuard
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        API_WRITE.with(|w| w.set(false));
    }
}

pub fn write_allowed() -> bool {
    API_WRITE.with(|w| w.get())
}

/// node_info's rows and the membership version, in one statement (one snapshot: a standby
/// replaying a change must not count over one and claim the other). The version row always
/// exists; without nodes the row's node columns are NULL.
const SELECT_REGISTRY: &str =
    "SELECT n.seqno, n.name, n.conninfo, n.is_master, n.is_nextmaster, n.is_sync, n.is_witness, \
     m.version, (SELECT coalesce(bool_or(paused), false) FROM pgkeeper.maintenance) \
     FROM pgkeeper.membership m LEFT JOIN pgkeeper.node_info n ON true ORDER BY n.seqno";

/// node_info as this node has it: its rows and the membership version.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub nodes: Vec<Node>,
    pub membership: keeper_core::membership::Version,
    /// Cluster-wide maintenance mode (`pgkeeper.maintenance`).
    pub paused: bool,
}

/// All rows, or None when the extension is not created in this database.
pub fn read_nodes(client: &SpiClient<'_>) -> Result<Option<Vec<Node>>, pgrx::spi::Error> {
    Ok(read_registry(client)?.map(|r| r.nodes))
}

/// node_info and the membership version, or None when the extension is not created here.
/// (Tables of an older pg_keeper without `membership`: an error, so the worker changes
/// nothing, rather than "not in a cluster".)
pub fn read_registry(client: &SpiClient<'_>) -> Result<Option<Registry>, pgrx::spi::Error> {
    let exists = crate::plans::select(client, "SELECT to_regclass('pgkeeper.node_info') IS NOT NULL")?
        .first()
        .get_one::<bool>()?
        .unwrap_or(false);
    if !exists {
        return Ok(None);
    }
    let mut out = Registry::default();
    for row in crate::plans::select(client, SELECT_REGISTRY)? {
        out.membership = row.get::<i64>(8)?.unwrap_or(0).max(0) as u64;
        out.paused = row.get::<bool>(9)?.unwrap_or(false);
        let Some(seqno) = row.get::<i32>(1)? else { continue };
        out.nodes.push(Node {
            seqno,
            name: row.get::<String>(2)?.unwrap_or_default(),
            conninfo: row.get::<String>(3)?.unwrap_or_default(),
            is_master: row.get::<bool>(4)?.unwrap_or(false),
            is_nextmaster: row.get::<bool>(5)?.unwrap_or(false),
            is_sync: row.get::<bool>(6)?.unwrap_or(false),
            is_witness: row.get::<bool>(7)?.unwrap_or(false),
        });
    }
    Ok(Some(out))
}

/// A membership change: one more version (caller holds the table lock and the guard).
pub fn bump_membership(client: &mut SpiClient<'_>) -> Result<(), pgrx::spi::Error> {
    client.update("UPDATE pgkeeper.membership SET version = version + 1", None, &[])?;
    Ok(())
}

/// Apply the changes computed by keeper-core. Caller holds the table lock and the guard.
pub fn apply(client: &mut SpiClient<'_>, changes: &[Change]) -> Result<(), pgrx::spi::Error> {
    for c in changes {
        match c {
            Change::Delete(seqno) => {
                client.update("DELETE FROM pgkeeper.node_info WHERE seqno = $1", None, &[(*seqno).into()])?;
            }
            Change::Insert(n) => {
                client.update(
                    "INSERT INTO pgkeeper.node_info (seqno, name, conninfo, is_master, is_nextmaster, is_sync, is_witness) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    None,
                    &[
                        n.seqno.into(),
                        n.name.as_str().into(),
                        n.conninfo.as_str().into(),
                        n.is_master.into(),
                        n.is_nextmaster.into(),
                        n.is_sync.into(),
                        n.is_witness.into(),
                    ],
                )?;
            }
            Change::Update(n) => {
                client.update(
                    "UPDATE pgkeeper.node_info SET is_master = $2, is_nextmaster = $3, is_sync = $4 WHERE seqno = $1",
                    None,
                    &[n.seqno.into(), n.is_master.into(), n.is_nextmaster.into(), n.is_sync.into()],
                )?;
            }
        }
    }
    Ok(())
}
