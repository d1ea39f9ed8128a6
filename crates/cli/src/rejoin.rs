//! `pgkeeper rejoin`: turn a failed old master (or a standby that cannot follow the new
//! timeline) into a standby of the current master: pg_rewind when possible, a fresh
//! pg_basebackup otherwise, then start it and wait until it streams.
//!
//! Runs on the host of the node to rejoin, as root or as the owner of its data directory.

use crate::status;
use anyhow::{bail, Context, Result};
use keeper_core::conninfo::ConnInfo;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn say(s: &str) {
    eprintln!("[rejoin] {s}");
}

struct Opts {
    pgdata: PathBuf,
    name: String,
    cluster: String,
    basebackup: bool,
    start: bool,
    log: Option<PathBuf>,
}

const USAGE: &str = "usage: pgkeeper rejoin --pgdata DIR --name NODE CONNINFO [--basebackup] [--no-start] [--log FILE]
  CONNINFO: any node of the cluster (node_info is read there and the current master found)";

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        pgdata: PathBuf::new(),
        name: String::new(),
        cluster: String::new(),
        basebackup: false,
        start: true,
        log: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pgdata" | "-D" => o.pgdata = it.next().context(USAGE)?.into(),
            "--name" => o.name = it.next().context(USAGE)?.clone(),
            "--basebackup" => o.basebackup = true,
            "--no-start" => o.start = false,
            "--log" => o.log = Some(it.next().context(USAGE)?.into()),
            s if s.starts_with("--") => bail!("unknown option {s}\n{USAGE}"),
            s => o.cluster = s.to_string(),
        }
    }
    if o.pgdata.as_os_str().is_empty() || o.name.is_empty() || o.cluster.is_empty() {
        bail!("{USAGE}");
    }
    Ok(o)
}

/// Run a PostgreSQL program as the owner of the data directory (PostgreSQL refuses root).
fn as_owner(pgdata: &Path, program: &str) -> Result<Command> {
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

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

fn server_running(pgdata: &Path) -> bool {
    std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
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

/// The configuration files at the top of the data directory: base backups and pg_rewind
/// replace them with the master's, and this node must keep its own (port, node_name, ...).
fn save_confs(pgdata: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(pgdata)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "conf") && p.is_file() {
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p)?));
        }
    }
    Ok(out)
}

fn chown_like(path: &Path, like: &Path) -> Result<()> {
    let m = std::fs::metadata(like)?;
    std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()))?;
    Ok(())
}

/// Make the data directory a standby of `master`: our config files back, standby.signal,
/// primary_conninfo with application_name = our name, and no leftover pg_keeper records.
fn configure_standby(pgdata: &Path, confs: &[(String, Vec<u8>)], name: &str, master_conninfo: &str) -> Result<()> {
    for (f, data) in confs {
        let p = pgdata.join(f);
        std::fs::write(&p, data)?;
        chown_like(&p, pgdata)?;
    }
    for e in std::fs::read_dir(pgdata)? {
        let p = e?.path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        if n.starts_with("pg_keeper.") && n.ends_with(".sync_state") {
            std::fs::remove_file(&p)?;
        }
    }
    let mut ci = ConnInfo::parse(master_conninfo)?;
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
            "--no-sync",
        ]),
        "pg_basebackup",
    )
}

pub fn rejoin(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    anyhow::ensure!(o.pgdata.join("PG_VERSION").exists(), "{} is not a PostgreSQL data directory", o.pgdata.display());

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
        .filter(|(n, l)| n.name != o.name && matches!(l, Ok(l) if !l.in_recovery))
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

    if server_running(&o.pgdata) {
        say("stopping the local server (it must be down to be rewound)");
        run(as_owner(&o.pgdata, "pg_ctl")?.args(["stop", "-m", "fast", "-w", "-D"]).arg(&o.pgdata), "pg_ctl stop")?;
    }
    let confs = save_confs(&o.pgdata)?;
    let source = {
        let mut c = ConnInfo::parse(&master.conninfo)?;
        if c.get("dbname").is_none() {
            c.set("dbname", "postgres");
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
        say("pg_rewind from the master (progress below)");
        let r = run(
            as_owner(&o.pgdata, "pg_rewind")?.arg("--target-pgdata").arg(&o.pgdata).args([
                "--source-server",
                &source,
                "--progress",
                "--no-sync",
            ]),
            "pg_rewind",
        );
        match r {
            Ok(()) => rewound = true,
            Err(e) => say(&format!("{e:#}; falling back to a new base backup")),
        }
    }
    if !rewound {
        basebackup(&o.pgdata, &source)?;
    }
    configure_standby(&o.pgdata, &confs, &o.name, &master.conninfo)?;
    say(&format!("configured as a standby of {}", master.name));

    if !o.start {
        say("not started (--no-start): start the server, it will stream from the master");
        return Ok(());
    }
    let log = o.log.clone().unwrap_or_else(|| o.pgdata.join("pgkeeper-rejoin.log"));
    let mut start = as_owner(&o.pgdata, "pg_ctl")?;
    start.args(["start", "-w", "-t", "120", "-D"]).arg(&o.pgdata).arg("-l").arg(&log);
    run(start.stdout(std::process::Stdio::null()), "pg_ctl start")?;
    say(&format!("started (log {}); waiting until it streams from {}", log.display(), master.name));
    let t = Instant::now();
    loop {
        let streaming = status::connect(&master.conninfo).and_then(|mut c| {
            Ok(c.query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                &[&o.name],
            )?
            .get::<_, i64>(0))
        });
        if matches!(streaming, Ok(1)) {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "{} does not stream from {} after 120 s: see {}",
            o.name,
            master.name,
            log.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{} is a standby of {} again ({}, {:.1} s)",
        o.name,
        master.name,
        if rewound { "pg_rewind" } else { "pg_basebackup" },
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
