//! Operations on a server of this host, through its data directory: run PostgreSQL's
//! programs as the directory's owner, start it, make it a standby, wait until it streams.
//! Used by `rejoin` and `switchover`, which must run on the host of the node they change.

use crate::status;
use anyhow::{Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Run a PostgreSQL program as the owner of the data directory (PostgreSQL refuses root).
pub(crate) fn as_owner(pgdata: &Path, program: &str) -> Result<Command> {
    let bin = keeper_harness::pg_bindir().join(program);
    let uid = std::fs::metadata(pgdata)?.uid();
    if unsafe { libc::geteuid() } != 0 || uid == 0 {
        return Ok(Command::new(bin));
    }
    let name = unsafe {
        let pw = libc::getpwuid(uid);
        anyhow::ensure!(!pw.is_null(), "the owner (uid {uid}) of {} has no user name", pgdata.display());
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    };
    let mut c = Command::new("runuser");
    c.args(["-u", &name, "--"]).arg(bin).current_dir("/");
    Ok(c)
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

pub(crate) fn server_running(pgdata: &Path) -> bool {
    std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
}

/// The configuration files at the top of the data directory, and pg_keeper's vote record:
/// base backups and pg_rewind replace them with the master's (or drop them), and this node
/// must keep its own (port, node_name, the terms it voted in, ...).
pub(crate) fn save_confs(pgdata: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(pgdata)? {
        let p = e?.path();
        // (.history: this node's own log of events, which a fenced or deposed master must keep)
        if p.extension().is_some_and(|x| x == "conf" || x == "vote" || x == "history") && p.is_file() {
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p)?));
        }
    }
    Ok(out)
}

pub(crate) fn chown_like(path: &Path, like: &Path) -> Result<()> {
    let m = std::fs::metadata(like)?;
    std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()))?;
    Ok(())
}

/// Make the data directory a standby of `master`: our config files back, standby.signal,
/// primary_conninfo with application_name = our name, and no leftover pg_keeper records.
pub(crate) fn configure_standby(
    pgdata: &Path,
    confs: &[(String, Vec<u8>)],
    name: &str,
    master_conninfo: &str,
) -> Result<()> {
    for (f, data) in confs {
        let p = pgdata.join(f);
        std::fs::write(&p, data)?;
        chown_like(&p, pgdata)?;
    }
    for e in std::fs::read_dir(pgdata)? {
        let p = e?.path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        // (a forced failover's record belongs to the master it made, never to a standby)
        if n.starts_with("pg_keeper.") && (n.ends_with(".sync_state") || n.ends_with(".forced")) {
            std::fs::remove_file(&p)?;
        }
    }
    let mut ci = keeper_pq::conninfo::node(master_conninfo)?;
    ci.set("application_name", name);
    ci.remove("dbname");
    let auto = pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    // The last setting in the file wins.
    text.push_str(&format!("primary_conninfo = '{}'\n", ci.to_string().replace('\'', "''")));
    std::fs::write(&auto, text)?;
    chown_like(&auto, pgdata)?;
    let signal = pgdata.join("standby.signal");
    std::fs::write(&signal, "")?;
    chown_like(&signal, pgdata)?;
    Ok(())
}

/// `pg_ctl stop -m fast` (clean: a master ships its WAL to its standbys before it exits).
pub(crate) fn stop(pgdata: &Path) -> Result<()> {
    let mut c = as_owner(pgdata, "pg_ctl")?;
    c.args(["stop", "-m", "fast", "-w", "-D"]).arg(pgdata);
    run(c.stdout(std::process::Stdio::null()), "pg_ctl stop")
}

/// `pg_ctl start`, logging to `log`.
pub(crate) fn start(pgdata: &Path, log: &Path) -> Result<()> {
    let mut c = as_owner(pgdata, "pg_ctl")?;
    c.args(["start", "-w", "-t", "120", "-D"]).arg(pgdata).arg("-l").arg(log);
    run(c.stdout(std::process::Stdio::null()), "pg_ctl start")
}

/// Wait (120 s at most) until `name` streams from the master at `master_conninfo`.
pub(crate) fn wait_streaming(master_conninfo: &str, name: &str, log: &Path) -> Result<Duration> {
    let t = Instant::now();
    loop {
        let streaming = status::connect(master_conninfo).and_then(|mut c| {
            Ok(c.query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                &[&name],
            )?
            .get::<i64>(0))
        });
        if matches!(streaming, Ok(1)) {
            return Ok(t.elapsed());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "{name} does not stream from its master after 120 s: see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
