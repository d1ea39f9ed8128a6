//! `pg_keeper.auto_rejoin`: a deposed old master turns itself into a standby of the new
//! master. The worker cannot stop and restart its own server, so it starts `pgkeeper rejoin
//! --auto` detached (its own session, outliving the server's stop), once the new master takes
//! writes. The helper holds a lock (never two at once), acts only on a deposed master, checks
//! the rewind with `pg_rewind --dry-run` before it changes anything, never makes a base
//! backup, logs each step to the server's log, and records its outcome in
//! `$PGDATA/pg_keeper.<name>.rejoin`: after `failed` the worker does not try again by itself
//! (status says why; an operator runs `pgkeeper rejoin`); after `skipped` (nothing was
//! changed) it tries again a few rounds later.

use crate::worker::Worker;
use crate::{gucs, probe};
use keeper_core::rejoin::{auto_rejoin, AutoRejoin};
use keeper_core::Node;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn data_dir() -> PathBuf {
    PathBuf::from(unsafe { CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned())
}

/// The directory of this server's `postgres` binary (pg_rewind and pg_ctl live there).
fn bin_dir() -> PathBuf {
    let exe = unsafe { CStr::from_ptr((&raw const pg_sys::my_exec_path).cast()) }.to_string_lossy().into_owned();
    Path::new(&exe).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `pg_keeper.pgkeeper_program`, else `pgkeeper` on the PATH, in /usr/local/bin, /usr/bin or
/// beside `postgres`.
fn cli() -> Option<PathBuf> {
    if let Some(p) = gucs::pgkeeper_program() {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(PathBuf::from)
        .chain([PathBuf::from("/usr/local/bin"), PathBuf::from("/usr/bin"), bin_dir()])
        .map(|d| d.join("pgkeeper"))
        .find(|p| p.is_file())
}

/// Where this server logs (its stderr, when that is a file): the helper appends there, and
/// starts the server again with it.
fn server_log() -> Option<PathBuf> {
    let p = std::fs::read_link("/proc/self/fd/2").ok()?;
    p.is_file().then_some(p)
}

/// What the last automatic rejoin recorded: (outcome, why).
fn outcome(me: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(data_dir().join(format!("pg_keeper.{me}.rejoin"))).ok()?;
    let mut lines = text.lines();
    let first = lines.next()?.split_whitespace().next()?.to_string();
    Some((first, lines.next().unwrap_or("").to_string()))
}

impl Worker {
    /// Master mode on a deposed node: start the automatic rejoin when it is time. The state to
    /// show.
    pub(crate) fn auto_rejoin(&mut self, me: &str, nodes: &[Node], by: &str, term: u64) -> String {
        let base = format!("deposed by {by} (term {term})");
        let last = outcome(me);
        let last_failed = last.as_ref().is_some_and(|(what, _)| what == "failed");
        let new = nodes.iter().find(|n| n.name == by);
        let step = auto_rejoin(
            gucs::AUTO_REJOIN.get(),
            last_failed,
            self.rejoin_started.map(|t| t.elapsed()),
            self.settings.keepalive_time,
            new.is_some(),
        );
        let new = match (step, new) {
            (AutoRejoin::Off, _) => return format!("{base}: needs rejoin (pg_keeper.auto_rejoin is off)"),
            (AutoRejoin::Failed, _) => {
                let why = last.map(|(_, why)| why).unwrap_or_default();
                self.notice_once(format!("pg_keeper: automatic rejoin failed: {why}; run pgkeeper rejoin"));
                // (the state is cut at 127 bytes: what to do first, then why)
                return format!("{base}: needs pgkeeper rejoin: automatic rejoin failed: {why}");
            }
            (AutoRejoin::Underway, _) => return format!("{base}: rejoining automatically"),
            (AutoRejoin::StartOnceWritable, Some(new)) => new,
            (AutoRejoin::NewMasterUnknown | AutoRejoin::StartOnceWritable, _) => {
                return format!("{base}: needs rejoin ({by} is not in node_info here)")
            }
        };
        let deadline = self.probe_deadline();
        let db = gucs::database();
        let cfg = probe::config(&new.conninfo, Some(&db));
        let ready = match cfg {
            Ok(cfg) => matches!(self.rt.block_on(probe::state(cfg, deadline, None)), Ok(s) if s.answer.writable()),
            Err(_) => false,
        };
        if !ready {
            return format!("{base}: will rejoin once {by} takes writes");
        }
        let Some(cli) = cli() else {
            self.notice_once("pg_keeper: automatic rejoin impossible: no pgkeeper program on the PATH, in /usr/local/bin or beside postgres".into());
            return format!("{base}: needs rejoin (pgkeeper not found)");
        };
        let log = server_log();
        let mut cmd = std::process::Command::new(&cli);
        cmd.arg("rejoin")
            .arg("--auto")
            .arg("--pgdata")
            .arg(data_dir())
            .arg("--name")
            .arg(me)
            .arg(&new.conninfo)
            .env("PGK_PG_BINDIR", bin_dir())
            .stdin(std::process::Stdio::null());
        match &log {
            Some(l) => {
                cmd.arg("--log").arg(l);
                let out = std::fs::OpenOptions::new().append(true).open(l);
                match out.and_then(|f| Ok((f.try_clone()?, f))) {
                    Ok((a, b)) => cmd.stdout(a).stderr(b),
                    Err(_) => cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()),
                };
            }
            None => {
                cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            }
        }
        // Its own session: it outlives this server's stop, and no signal to the server's
        // process group reaches it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        self.rejoin_started = Some(Instant::now());
        match cmd.spawn() {
            Ok(child) => {
                log!(
                    "pg_keeper: deposed by {by} (term {term}): rejoining it automatically as a standby (pg_keeper.auto_rejoin; {} rejoin --auto, pid {})",
                    cli.display(),
                    child.id()
                );
                // Not waited for: it stops this server. Reaped by init once this worker exits.
                drop(child);
                format!("{base}: rejoining automatically")
            }
            Err(e) => {
                warning!("pg_keeper: cannot start {}: {e}", cli.display());
                format!("{base}: needs rejoin ({e})")
            }
        }
    }
}
