//! `pgkeeper rejoin`: turn a failed old master (or a standby that cannot follow the new
//! timeline) into a standby of the current master: pg_rewind when possible, a fresh
//! pg_basebackup otherwise, then start it and wait until it streams.
//!
//! Runs on the host of the node to rejoin, as root or as the owner of its data directory.

use crate::local::{self, as_owner, chown_like, configure_standby, run, save_confs, server_running};
use crate::status;
use anyhow::{bail, Context, Result};
use keeper_core::conninfo::ConnInfo;
use std::path::{Path, PathBuf};

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

    if server_running(&o.pgdata) {
        say("stopping the local server (it must be down to be rewound)");
        local::stop(&o.pgdata)?;
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
