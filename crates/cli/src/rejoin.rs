//! `pgkeeper rejoin`: turn a failed old master (or a standby that cannot follow the new
//! timeline) into a standby of the current master: pg_rewind when possible, a fresh
//! pg_basebackup otherwise, then start it and wait until it streams.
//!
//! Runs on the host of the node to rejoin, as root or as the owner of its data directory.
//! Never two at once on one data directory (an flock on the directory).
//!
//! `--auto` is the worker's automatic rejoin (`pg_keeper.auto_rejoin`, started detached by a
//! deposed master's worker): it acts only on a deposed master, uses pg_rewind only (checked
//! with `--dry-run` before anything changes; never a base backup), starts the server again as
//! it was when the rewind cannot be done, and records the outcome for the worker in
//! `$PGDATA/pg_keeper.<name>.rejoin`.

use crate::local::{self, as_owner, chown_like, configure_standby, run, save_confs, server_running};
use crate::status;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

fn say(s: &str) {
    eprintln!("[rejoin] {s}");
}

/// Make a failed old master (or a standby that cannot follow) a standby of the current
/// master: pg_rewind, else a new base backup. Run it on that node's host, as root or as the
/// owner of the data directory
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// The node's data directory
    #[arg(long, short = 'D', value_name = "DIR")]
    pub pgdata: PathBuf,
    /// The node's name in node_info
    #[arg(long, value_name = "NODE")]
    pub name: String,
    /// Any node of the cluster (node_info is read there and the current master found);
    /// default: libpq's environment (PGHOST, PGPORT, PGUSER, PGSERVICE, ...)
    #[arg(value_name = "CONNINFO", default_value = "", hide_default_value = true)]
    pub cluster: String,
    /// Make a new base backup instead of pg_rewind (the old directory is kept aside)
    #[arg(long, conflicts_with = "auto")]
    pub basebackup: bool,
    /// Leave the server stopped afterwards
    #[arg(long)]
    pub no_start: bool,
    /// The server log for pg_ctl (default DIR/pgkeeper-rejoin.log)
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The worker's automatic rejoin: a deposed master only, pg_rewind --dry-run first,
    /// never a base backup, the outcome recorded in DIR/pg_keeper.NODE.rejoin
    #[arg(long)]
    pub auto: bool,
}

/// `pg_rewind --target-pgdata PGDATA --source-server SOURCE EXTRA...`, as the directory's owner.
fn pg_rewind(pgdata: &Path, source: &str, extra: &[&str], what: &str) -> Result<()> {
    run(
        as_owner(pgdata, "pg_rewind")?.arg("--target-pgdata").arg(pgdata).args(["--source-server", source]).args(extra),
        what,
    )
}

fn log_of(o: &Opts) -> PathBuf {
    o.log.clone().unwrap_or_else(|| o.pgdata.join("pgkeeper-rejoin.log"))
}

/// `--auto` could not rewind: start the server again unchanged (still deposed, it says why;
/// after a failed real rewind the start may fail, and says so).
fn restart_as_it_was(o: &Opts) {
    if let Err(e) = local::start(&o.pgdata, &log_of(o)) {
        say(&format!("cannot start the server again: {e:#}"));
    }
}

/// pg_rewind needs hint bits WAL-logged: wal_log_hints or data checksums.
fn rewind_possible(pgdata: &Path) -> Result<bool> {
    let out = as_owner(pgdata, "pg_controldata")?.arg(pgdata).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| {
        text.lines().find(|l| l.starts_with(k)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string())
    };
    let hints = field("wal_log_hints setting").as_deref() == Some("on");
    let checksums = field("Data page checksum version").is_some_and(|v| v != "0");
    Ok(hints || checksums)
}

fn basebackup(pgdata: &Path, master_conninfo: &str) -> Result<()> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let old = pgdata.with_extension(format!("rejoin-{stamp}"));
    std::fs::rename(pgdata, &old).context("moving the old data directory aside")?;
    say(&format!("old data directory kept as {}", old.display()));
    std::fs::create_dir(pgdata)?;
    std::fs::set_permissions(pgdata, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    chown_like(pgdata, &old)?;
    say("pg_basebackup from the master (progress below)");
    run(
        as_owner(pgdata, "pg_basebackup")?.arg("-D").arg(pgdata).args([
            "-d",
            master_conninfo,
            "-X",
            "stream",
            "-c",
            "fast",
            "--progress",
        ]),
        "pg_basebackup",
    )
}

/// Held while a rejoin of this data directory runs (released when the process ends,
/// however): an flock on the directory itself, so that every rejoin of it sees it whatever
/// its temporary directory (systemd's PrivateTmp) and whoever runs it (root, the owner).
fn lock(pgdata: &Path) -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let dir = std::fs::File::open(pgdata).with_context(|| format!("cannot open {}", pgdata.display()))?;
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another pgkeeper rejoin of {} is running", pgdata.display());
    }
    Ok(dir)
}

/// The server was stopped for the rewind: a failure from then on is recorded as `failed`
/// (the worker does not try again by itself), before it as `skipped` (it may, later).
static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `$PGDATA/pg_keeper.<name>.rejoin`, read by the worker: `ok`, `skipped` or `failed`, the
/// time, and why.
fn record_outcome(o: &Opts, r: &Result<()>) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let stopped = STOPPED.load(std::sync::atomic::Ordering::Relaxed);
    let text = match r {
        Ok(()) => format!("ok {now}\n"),
        Err(e) => {
            format!("{} {now}\n{}\n", if stopped { "failed" } else { "skipped" }, format!("{e:#}").replace('\n', " "))
        }
    };
    let p = o.pgdata.join(format!("pg_keeper.{}.rejoin", o.name));
    if std::fs::write(&p, text).is_ok() {
        let _ = chown_like(&p, &o.pgdata);
    }
}

/// Append "rejoined" to this node's history log (the server is down: nobody else writes it).
fn record_rejoined(pgdata: &Path, name: &str, master: &str, term: u64, reason: &str) {
    let p = pgdata.join(format!("pg_keeper.{name}.history"));
    let text = std::fs::read_to_string(&p).unwrap_or_default();
    let (_, seq) = keeper_core::history::parse_log(&text);
    let e = keeper_core::history::Event {
        seq,
        at_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
        node: name.to_string(),
        kind: keeper_core::history::Kind::Rejoined,
        term,
        nodes: vec![name.to_string(), master.to_string()],
        reason: reason.to_string(),
    };
    let mut all = text;
    if !all.is_empty() && !all.ends_with('\n') {
        all.push('\n');
    }
    all.push_str(&e.to_line());
    if std::fs::write(&p, all).is_ok() {
        let _ = chown_like(&p, pgdata);
    }
}

pub fn rejoin(o: &Opts) -> Result<()> {
    anyhow::ensure!(o.pgdata.join("PG_VERSION").exists(), "{} is not a PostgreSQL data directory", o.pgdata.display());
    let _lock = lock(&o.pgdata)?;
    let r = rejoin_locked(&o);
    if !o.auto {
        // A rejoin by hand supersedes what an automatic one recorded.
        let _ = std::fs::remove_file(o.pgdata.join(format!("pg_keeper.{}.rejoin", o.name)));
    }
    if o.auto {
        if let Err(e) = &r {
            say(&format!("automatic rejoin failed: {e:#}"));
        }
        // Recorded before the server starts again: its worker must find it.
        record_outcome(&o, &r);
        if r.is_err() && STOPPED.load(std::sync::atomic::Ordering::Relaxed) && !server_running(&o.pgdata) {
            restart_as_it_was(&o);
        }
    }
    r
}

fn rejoin_locked(o: &Opts) -> Result<()> {
    say(&format!("reading the cluster through {}", o.cluster));
    let report = status::gather(&o.cluster)?;
    anyhow::ensure!(
        report.nodes.iter().any(|(n, _)| n.name == o.name),
        "node \"{}\" is not in node_info; register it with pgkeeper.add_node() on the master first",
        o.name
    );
    let masters: Vec<&status::NodeRow> = report
        .nodes
        .iter()
        .filter(|(n, l)| n.name != o.name && matches!(l, Ok(l) if l.writable()))
        .map(|(n, _)| n)
        .collect();
    let master = match masters.as_slice() {
        [m] => *m,
        [] => bail!("no other node accepts writes: there is no master to rejoin (fail over first)"),
        many => bail!(
            "several nodes accept writes ({}): rejoin all but one of them first",
            many.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    say(&format!("current master: {} ({})", master.name, master.conninfo));
    if o.auto {
        // Only a deposed master: never the master, never a standby.
        let me = report.nodes.iter().find(|(n, _)| n.name == o.name).map(|(_, l)| l);
        match me {
            Some(Ok(l)) if !l.in_recovery && l.gate == keeper_core::gate::GateKind::Deposed => {}
            Some(Ok(l)) => {
                bail!("{} is not a deposed master ({}, commits {}): not rejoining it", o.name, l.state, l.commits)
            }
            Some(Err(e)) => bail!("cannot ask {} whether it is deposed: {e}", o.name),
            None => bail!("{} is not in node_info", o.name),
        }
    }

    if server_running(&o.pgdata) {
        say("stopping the local server (it must be down to be rewound)");
        STOPPED.store(true, std::sync::atomic::Ordering::Relaxed);
        local::stop(&o.pgdata)?;
    }
    let confs = save_confs(&o.pgdata)?;
    let source = {
        let mut c = keeper_pq::conninfo::node(&master.conninfo)?;
        if c.get("dbname").is_none() {
            c.set("dbname", "postgres");
        }
        // pg_rewind and pg_basebackup connect as the operator (a superuser, or a role with
        // pg_rewind's grants), not as the nodes' agent user.
        if let Some(u) = status::operator() {
            c.set("user", &u);
        }
        c.to_string()
    };
    let mut rewound = false;
    if !o.basebackup {
        if !rewind_possible(&o.pgdata)? {
            bail!(
                "pg_rewind needs wal_log_hints = on or data checksums, and {} has neither.\n\
                 Re-run with --basebackup to rebuild it from {} (the local data is replaced; the old directory is kept aside).",
                o.pgdata.display(),
                master.name
            );
        }
        // A freshly promoted master records its new timeline in its control file only at
        // the next checkpoint; before that pg_rewind sees one timeline and rewinds nothing.
        say(&format!("CHECKPOINT on {} so that pg_rewind sees its timeline", master.name));
        status::connect(&source)?.batch_execute("CHECKPOINT").context("CHECKPOINT on the master")?;
        if o.auto {
            // Changes nothing: a rewind that cannot be done leaves the server as it was.
            let dry = pg_rewind(&o.pgdata, &source, &["--dry-run"], "pg_rewind --dry-run");
            if let Err(e) = dry {
                bail!("{e:#}: not rewound; run pgkeeper rejoin (perhaps with --basebackup) by hand");
            }
        }
        say("pg_rewind from the master (progress below)");
        let r = pg_rewind(&o.pgdata, &source, &["--progress"], "pg_rewind");
        match r {
            Ok(()) => rewound = true,
            Err(e) if o.auto => bail!("{e:#}: the data directory may need pgkeeper rejoin --basebackup"),
            Err(e) => say(&format!("{e:#}; falling back to a new base backup")),
        }
    }
    if !rewound {
        basebackup(&o.pgdata, &source)?;
    }
    configure_standby(&o.pgdata, &confs, &o.name, &master.conninfo)?;
    say(&format!("configured as a standby of {}", master.name));
    let how = if rewound { "pg_rewind" } else { "pg_basebackup" };
    let term = report.nodes.iter().find(|(n, _)| n.name == master.name).and_then(|(_, l)| l.as_ref().ok()).map_or(0, |l| l.term);
    record_rejoined(&o.pgdata, &o.name, &master.name, term.max(0) as u64, &format!("{how} from {}{}", master.name, if o.auto { " (automatic)" } else { "" }));

    if o.no_start {
        say("not started (--no-start): start the server, it will stream from the master");
        return Ok(());
    }
    let log = log_of(o);
    local::start(&o.pgdata, &log)?;
    say(&format!("started (log {}); waiting until it streams from {}", log.display(), master.name));
    let t = local::wait_streaming(&master.conninfo, &o.name, &log)?;
    println!(
        "{} is a standby of {} again ({}; streaming {:.1} s after its start)",
        o.name,
        master.name,
        if rewound { "pg_rewind" } else { "pg_basebackup" },
        t.as_secs_f64()
    );
    Ok(())
}
