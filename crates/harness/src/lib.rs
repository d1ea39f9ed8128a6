//! `keeper-harness`: spin up REAL local PostgreSQL 15 streaming-replication
//! clusters (one master + N hot standbys on 127.0.0.1) for integration tests,
//! demos and benchmarks of pg_keeper.
//!
//! ```no_run
//! let cluster = keeper_harness::ClusterBuilder::new("demo").standbys(2).build()?;
//! cluster.master().execute("CREATE TABLE t(i int)")?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Network-namespace mode (`.netns(true)`, root only): each node gets its own
//! network namespace and address 10.213.X.i so tests can cut links with
//! [`Cluster::cut`], [`Cluster::cut_oneway`], [`Cluster::isolate`],
//! [`Cluster::heal`] and [`Cluster::heal_all`]; see the `netns` module source.
//! The SQL helpers always connect over the node's UNIX socket.
//!
//! SECURITY NOTE: clusters are configured with `trust` authentication for
//! local, 127.0.0.1 and replication connections. Tests only!
//!
//! Environment variables:
//! * `PGK_PG_BINDIR` – directory holding initdb/pg_ctl/... (default: `pg_config --bindir`,
//!   fallback `/usr/lib/postgresql/15/bin`).
//! * `PGK_TMPDIR` – parent directory for cluster base dirs (default `/tmp`). When running
//!   as root, user `postgres` must be able to traverse it.
//! * `PGK_KEEP=1` – do not delete the base dir on drop (processes are still stopped).
//!
//! When running as root (euid 0) every PostgreSQL binary is run as OS user
//! `postgres` through `runuser -u postgres --`, and created dirs/files are chowned.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod cluster;
mod netns;
mod node;
/// The client crate the SQL helpers return (`Node::try_connect`).
pub use postgres;
pub mod proc;

pub use cluster::{base_parent, Cluster, ClusterBuilder};
pub use netns::cleanup_stale_netns;
pub use node::Node;

pub use anyhow::{Error, Result};

/// Progress line on stderr, prefixed with `[harness]`.
#[macro_export]
macro_rules! hlog {
    ($($arg:tt)*) => { eprintln!("[harness] {}", format!($($arg)*)) };
}

/// Directory with the PostgreSQL server binaries (cached after first call).
///
/// Order: env `PGK_PG_BINDIR`, `pg_config --bindir`, `/usr/lib/postgresql/15/bin`.
pub fn pg_bindir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(d) = std::env::var("PGK_PG_BINDIR") {
            if !d.is_empty() {
                return PathBuf::from(d);
            }
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                // Debian's /usr/bin/pg_config may point at a dir without initdb
                // (postgresql-common); only trust it when initdb is there.
                if d.join("initdb").exists() {
                    return d;
                }
            }
        }
        PathBuf::from("/usr/lib/postgresql/15/bin")
    })
    .clone()
}

/// True when the current process runs with euid 0.
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Build a `Command` running a PostgreSQL binary as the right user.
///
/// `cmd` is either a bare binary name (resolved in [`pg_bindir`] when present there,
/// e.g. `"pg_ctl"`) or a path. As root, the command is wrapped in
/// `runuser -u postgres -- <bin> <args...>`; otherwise the binary is run directly.
/// The working directory is set to `/` (the postgres user cannot read `/root`,
/// which makes initdb fail).
pub fn run_as_pg<I, S>(cmd: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin: PathBuf = if cmd.contains('/') {
        PathBuf::from(cmd)
    } else {
        let p = pg_bindir().join(cmd);
        if p.exists() {
            p
        } else {
            PathBuf::from(cmd)
        }
    };
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.args(args);
    c.current_dir("/");
    c
}

/// uid/gid of OS user `postgres` (only meaningful as root).
pub(crate) fn postgres_ids() -> Option<(libc::uid_t, libc::gid_t)> {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer to static storage or NULL; we only
    // copy two integers out of it.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

/// chown `path` to postgres when running as root (no-op otherwise).
pub(crate) fn chown_pg(path: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let (uid, gid) = postgres_ids().ok_or_else(|| anyhow::anyhow!("running as root but no OS user 'postgres'"))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| anyhow::anyhow!("chown {}: {e}", path.display()))
}

/// Poll `cond` every 100 ms until it returns true or `timeout` elapses.
/// Returns an error mentioning the timeout when the condition never became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("condition not met within {:?}", timeout);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Last `n` lines of a text file (empty string when unreadable).
pub fn tail_file(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run a command to completion; on failure return an error with its output.
pub(crate) fn run_checked(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| anyhow::anyhow!("{what}: cannot spawn {:?}: {e}", cmd))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            stdout.trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(stdout)
}
