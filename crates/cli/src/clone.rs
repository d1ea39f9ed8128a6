//! `pgkeeper clone --from CONNINFO --pgdata DIR --name NODE`: a new standby from nothing, on
//! this host: a base backup of the master, this node's pg_keeper settings, primary_conninfo
//! with application_name = NODE, start, wait until it streams, then `add_node` on the master.

use crate::local::{self, as_owner, chown_like, configure_standby, run};
use crate::status;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

fn say(s: &str) {
    eprintln!("[clone] {s}");
}

/// A new standby from nothing: base backup, settings, start, wait for streaming, add_node
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Any node of the cluster (the master is found from it)
    #[arg(long, value_name = "CONNINFO")]
    pub from: String,
    /// The new data directory (must not exist, or be empty)
    #[arg(long, short = 'D', value_name = "DIR")]
    pub pgdata: PathBuf,
    /// The new node's name (pg_keeper.node_name, application_name)
    #[arg(long, value_name = "NODE")]
    pub name: String,
    /// The port the new server listens on (default: the master's configuration)
    #[arg(long)]
    pub port: Option<u16>,
    /// How the other nodes reach the new one, registered with add_node (default: host and
    /// port of --from's node with --port, as the other nodes' conninfo is written)
    #[arg(long, value_name = "CONNINFO")]
    pub conninfo: Option<String>,
    /// pg_keeper.http_listen of the new node (default: off)
    #[arg(long, value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
    /// The OS user who owns the new directory and runs the server (when run as root)
    #[arg(long, default_value = "postgres")]
    pub owner: String,
    /// The new server's log
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn make_dir(dir: &Path, owner: &str) -> Result<()> {
    if dir.exists() {
        anyhow::ensure!(
            std::fs::read_dir(dir)?.next().is_none(),
            "{} exists and is not empty: pgkeeper clone makes a new data directory",
            dir.display()
        );
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(owner)?;
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        anyhow::ensure!(!pw.is_null(), "no such user {owner:?} (--owner)");
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

pub fn clone(o: &Opts) -> Result<()> {
    // Bad input changes nothing: the name is checked before any copy.
    keeper_core::registry::check_name(&o.name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let report = status::gather(&o.from)?;
    if report.nodes.iter().any(|(n, _)| n.name == o.name) {
        bail!("\"{}\" is already in node_info: pick another name, or rejoin it (pgkeeper rejoin)", o.name);
    }
    let masters: Vec<&status::NodeRow> =
        report.nodes.iter().filter(|(_, l)| matches!(l, Ok(l) if l.writable())).map(|(n, _)| n).collect();
    let master = match masters.as_slice() {
        [m] => *m,
        [] => bail!("no node accepts writes: there is no master to clone from"),
        _ => bail!("several nodes accept writes: resolve that first (pgkeeper status)"),
    };
    // The new node's conninfo: given, or the master's with this port (the host this runs on
    // must be reachable as the master's conninfo says only in a one-host setup: say so).
    let node_conninfo = match &o.conninfo {
        Some(c) => c.clone(),
        None => {
            let port = o.port.context("give --conninfo (how the other nodes reach the new node), or --port")?;
            let mut c = keeper_pq::conninfo::node(&master.conninfo)?;
            c.set("port", &port.to_string());
            c.to_string()
        }
    };
    keeper_pq::conninfo::parse(&node_conninfo).map_err(|e| anyhow::anyhow!("invalid --conninfo: {e}"))?;
    say(&format!("master: {} ({})", master.name, master.conninfo));
    make_dir(&o.pgdata, &o.owner)?;
    let source = {
        let mut c = keeper_pq::conninfo::node(&master.conninfo)?;
        c.remove("dbname");
        if let Some(u) = status::operator() {
            c.set("user", &u);
        }
        c.to_string()
    };
    say("pg_basebackup from the master (progress below)");
    run(
        as_owner(&o.pgdata, "pg_basebackup")?
            .arg("-D")
            .arg(&o.pgdata)
            .args(["-d", &source, "-X", "stream", "-c", "fast", "--progress"]),
        "pg_basebackup",
    )?;
    // What the master's directory held of pg_keeper is the master's (or an older node's of
    // the same name): this node starts with no record, no history, no rejoin outcome.
    for e in std::fs::read_dir(&o.pgdata)? {
        let p = e?.path();
        let n = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if n.starts_with(&format!("pg_keeper.{}.", o.name)) {
            std::fs::remove_file(&p)?;
        }
    }
    configure_standby(&o.pgdata, &[], &o.name, &master.conninfo)?;
    let auto = o.pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&format!("# pgkeeper clone\npg_keeper.node_name = {}\ncluster_name = {}\n", quote(&o.name), quote(&o.name)));
    if let Some(p) = o.port {
        text.push_str(&format!("port = {p}\n"));
    }
    text.push_str(&format!("pg_keeper.http_listen = {}\n", quote(o.http_listen.as_deref().unwrap_or(""))));
    std::fs::write(&auto, text)?;
    chown_like(&auto, &o.pgdata)?;
    let log = o.log.clone().unwrap_or_else(|| o.pgdata.join("pgkeeper-clone.log"));
    local::start(&o.pgdata, &log)?;
    say(&format!("started (log {}); waiting until it streams from {}", log.display(), master.name));
    let t = local::wait_streaming(&master.conninfo, &o.name, &log)?;
    say(&format!("streaming {:.1} s after its start; registering it on {}", t.as_secs_f64(), master.name));
    let mut c = status::connect(&master.conninfo)?;
    c.query_one("SELECT pgkeeper.add_node($1, $2)", &[&o.name, &node_conninfo]).context("add_node on the master")?;
    println!("{} is a standby of {} and registered ({})", o.name, master.name, node_conninfo);
    Ok(())
}
