//! One PostgreSQL instance (master or standby) of a harness cluster.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::{chown_pg, hlog, proc, run_as_pg, run_checked, tail_file, wait_until};

/// Connect timeout used by all SQL helpers.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A node of a [`crate::Cluster`]. All methods take `&self`; `Node` is `Send + Sync`.
#[derive(Debug)]
pub struct Node {
    name: String,
    /// Port; only changes while the cluster is being built (port-collision retry).
    port: AtomicU16,
    dir: PathBuf,
    data_dir: PathBuf,
    sock_dir: PathBuf,
    log_path: PathBuf,
    /// Children of a postmaster we SIGKILLed: `start()` waits for them to exit
    /// (they still hold the shared memory segment, which would block a restart).
    orphans: Mutex<Vec<i32>>,
    /// statement_timeout sent with every SQL-helper connection (None = server default).
    statement_timeout: Mutex<Option<Duration>>,
    /// Network namespace the server runs in (netns mode), None = root namespace.
    ns: Option<String>,
    /// Address other nodes use to reach this node (listen_addresses):
    /// 127.0.0.1 in loopback mode, 10.213.X.i in netns mode.
    addr: String,
    /// Environment the postmaster starts with (`set_env`): PGPASSFILE, PGSSLROOTCERT, ...
    env: Mutex<Vec<(String, String)>>,
    /// pg_keeper.http_listen's port (clusters built with `http(true)`); 0 = none.
    http_port: AtomicU16,
}

impl Node {
    /// Create the node's directories (`<base>/<name>`, `.../sock`); no initdb yet.
    /// `net` = `Some((namespace, address))` in netns mode.
    pub(crate) fn new(base: &Path, name: &str, port: u16, net: Option<(String, String)>) -> Result<Node> {
        let dir = base.join(name);
        let sock_dir = dir.join("sock");
        for d in [&dir, &sock_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
            chown_pg(d)?;
        }
        Ok(Node {
            name: name.to_string(),
            port: AtomicU16::new(port),
            data_dir: dir.join("data"),
            log_path: dir.join("postgres.log"),
            sock_dir,
            dir,
            orphans: Mutex::new(Vec::new()),
            statement_timeout: Mutex::new(Some(Duration::from_secs(30))),
            addr: net.as_ref().map(|(_, a)| a.clone()).unwrap_or_else(|| "127.0.0.1".into()),
            ns: net.map(|(n, _)| n),
            env: Mutex::new(Vec::new()),
            http_port: AtomicU16::new(0),
        })
    }

    // ----------------------------------------------------------------- accessors

    /// Node name: "node1" (initial master), "node2", ...
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }
    pub(crate) fn set_port(&self, p: u16) {
        self.port.store(p, Ordering::SeqCst)
    }
    /// `<base>/<name>`
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `<base>/<name>/data`
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// `<base>/<name>/sock` (unix_socket_directories)
    pub fn sock_dir(&self) -> &Path {
        &self.sock_dir
    }
    /// `<base>/<name>/postgres.log` (pg_ctl -l)
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// Per-node config file included at the end of postgresql.conf.
    pub fn node_conf_path(&self) -> PathBuf {
        self.data_dir.join("node.conf")
    }
    /// Network namespace of this node (netns mode only).
    pub fn ns(&self) -> Option<&str> {
        self.ns.as_deref()
    }
    /// Address other nodes use to reach this node (also `listen_addresses`):
    /// `127.0.0.1`, or the namespace address `10.213.X.i` in netns mode.
    pub fn addr(&self) -> &str {
        &self.addr
    }
    /// libpq key=value conninfo OTHER NODES use to reach this node, database
    /// `postgres`: `host=<addr> port=<port> user=postgres dbname=postgres`.
    /// In netns mode this address is not reachable from the test process
    /// (root namespace); use [`Node::admin_conninfo`] there.
    /// Where pg_keeper's HTTP endpoints listen when the cluster was built with `http(true)`:
    /// the node's address and a port of its own (8008, Patroni's, in netns mode).
    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.addr(), self.http_port.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub(crate) fn set_http_port(&self, port: u16) {
        self.http_port.store(port, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn conninfo(&self) -> String {
        self.conninfo_db("postgres")
    }
    /// Like [`Node::conninfo`] for database `db`.
    pub fn conninfo_db(&self, db: &str) -> String {
        format!("host={} port={} user=postgres dbname={db}", self.addr, self.port())
    }
    /// Conninfo over the node's UNIX socket (host = sock dir), usable from the
    /// test process in every mode and unaffected by partitions. This is what
    /// the SQL helpers (`try_connect`, `query`, ...) use.
    pub fn admin_conninfo(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.sock_dir.display(), self.port())
    }
    /// `Command` for `program` run inside this node's namespace
    /// (`ip netns exec <ns> program`), or plainly in loopback mode. Runs as
    /// the current user (root); useful for reachability probes in tests.
    pub fn ns_command(&self, program: &str) -> std::process::Command {
        match &self.ns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => std::process::Command::new(program),
        }
    }
    /// Like [`crate::run_as_pg`], but inside this node's namespace.
    pub(crate) fn run_as_pg<I, S>(&self, cmd: &str, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let inner = run_as_pg(cmd, args);
        let mut c = match &self.ns {
            None => inner,
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(inner.get_program());
                c.args(inner.get_args());
                c.current_dir("/");
                c
            }
        };
        // A test run with RUST_BACKTRACE set would otherwise fill the servers' logs with a
        // backtrace for every ERROR raised from Rust.
        c.env_remove("RUST_BACKTRACE").env_remove("RUST_LIB_BACKTRACE");
        c
    }
    /// Full contents of the server log (lossy UTF-8).
    pub fn log_contents(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }
    /// Last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_file(&self.log_path, n)
    }

    // ------------------------------------------------------------------ config

    /// Append one line to this node's `node.conf` (read after postgresql.conf,
    /// before postgresql.auto.conf). Call [`Node::reload`] or restart to apply.
    pub fn append_conf(&self, line: &str) -> Result<()> {
        let path = self.node_conf_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        writeln!(f, "{line}")?;
        drop(f);
        chown_pg(&path)
    }

    /// Overwrite node.conf entirely.
    pub(crate) fn write_node_conf(&self, contents: &str) -> Result<()> {
        let path = self.node_conf_path();
        std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
        chown_pg(&path)
    }

    // --------------------------------------------------------------- lifecycle

    fn pg_ctl(&self, args: &[&str]) -> std::process::Command {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push("-D".into());
        a.push(self.data_dir.display().to_string());
        // inside the node's namespace, so the postmaster (a daemonized
        // grandchild of pg_ctl) inherits it, and its environment
        let mut c = self.run_as_pg("pg_ctl", a);
        c.envs(self.env.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())));
        c
    }

    /// Start the server from now on with `key=value` in its environment (libpq's PGPASSFILE,
    /// PGSERVICEFILE, ... for the connections pg_keeper makes from it).
    pub fn set_env(&self, key: &str, value: &str) {
        let mut e = self.env.lock().unwrap();
        e.retain(|(k, _)| k != key);
        e.push((key.to_string(), value.to_string()));
    }

    /// `pg_ctl start -w -t 60 -l <log>`. Waits first for processes of a
    /// previously SIGKILLed postmaster to go away.
    pub fn start(&self) -> Result<()> {
        let orphans = std::mem::take(&mut *self.orphans.lock().unwrap());
        if !orphans.is_empty() && !proc::wait_gone(&orphans, Duration::from_secs(15)) {
            hlog!("{}: old backends still alive after 15s, killing them", self.name);
            orphans.iter().for_each(|&p| proc::signal(p, libc::SIGKILL));
            proc::wait_gone(&orphans, Duration::from_secs(5));
        }
        // A stale postmaster.pid whose pid is still a zombie would make the new
        // postmaster think the old one is alive: wait for it to be reaped.
        if let Some(old) = proc::pidfile_pid(&self.data_dir) {
            if !proc::alive(old) && !proc::gone(old) {
                let _ = wait_until(Duration::from_secs(10), || proc::gone(old));
            }
        }
        proc::become_subreaper();
        hlog!("{}: starting on port {}", self.name, self.port());
        let log = self.log_path.display().to_string();
        let r = run_checked(self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log]), "pg_ctl start");
        r.map(|_| ()).map_err(|e| anyhow!("{}: {e}\n--- tail of {log} ---\n{}", self.name, self.log_tail(30)))
    }

    /// `pg_ctl stop -m fast -w`. Ok if the node is not running.
    pub fn stop(&self) -> Result<()> {
        self.stop_mode("fast")
    }

    /// `pg_ctl stop -m smart -w -t 60`: waits for every session to end. Ok if not running.
    pub fn stop_smart(&self) -> Result<()> {
        self.stop_mode("smart")
    }

    /// `pg_ctl stop -m immediate -w` (crash-like shutdown). Ok if not running.
    pub fn stop_immediate(&self) -> Result<()> {
        self.stop_mode("immediate")
    }

    fn stop_mode(&self, mode: &str) -> Result<()> {
        if !self.is_running() {
            hlog!("{}: stop ({mode}): not running", self.name);
            return Ok(());
        }
        let pm = self.postmaster_pid();
        self.sigcont(); // a SIGSTOPped server would never shut down
        hlog!("{}: stopping ({mode})", self.name);
        run_checked(self.pg_ctl(&["stop", "-m", mode, "-w", "-t", "60"]), "pg_ctl stop")
            .with_context(|| format!("{}: stop -m {mode}", self.name))?;
        if let Some(pm) = pm {
            proc::wait_gone(&[pm], Duration::from_secs(5)); // reap the zombie
        }
        Ok(())
    }

    /// stop (fast) + start.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    /// `pg_ctl reload`.
    pub fn reload(&self) -> Result<()> {
        run_checked(self.pg_ctl(&["reload"]), "pg_ctl reload").map(|_| ())
    }

    /// `pg_ctl promote -w` (manual promotion of a standby).
    pub fn promote(&self) -> Result<()> {
        hlog!("{}: promoting", self.name);
        run_checked(self.pg_ctl(&["promote", "-w", "-t", "60"]), "pg_ctl promote").map(|_| ())
    }

    // --------------------------------------------------------------- processes

    /// Postmaster pid from postmaster.pid, only if that process is alive.
    pub fn postmaster_pid(&self) -> Option<i32> {
        proc::pidfile_pid(&self.data_dir).filter(|&p| proc::alive(p))
    }

    /// True if the postmaster process is alive.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// Direct children of the postmaster as `(pid, cmdline)`; cmdline is the
    /// process title, e.g. `"postgres: node1: checkpointer"`.
    pub fn children(&self) -> Vec<(i32, String)> {
        match self.postmaster_pid() {
            Some(pm) => proc::children_of(pm).into_iter().map(|p| (p, proc::cmdline(p).unwrap_or_default())).collect(),
            None => Vec::new(),
        }
    }

    /// SIGKILL the postmaster only (children notice and exit by themselves).
    pub fn kill9(&self) {
        if let Some(pm) = self.postmaster_pid() {
            hlog!("{}: SIGKILL postmaster {pm}", self.name);
            let kids = proc::descendants(pm);
            proc::signal(pm, libc::SIGKILL);
            proc::wait_gone(&[pm], Duration::from_secs(5));
            self.orphans.lock().unwrap().extend(kids);
        }
    }

    /// SIGKILL the postmaster and all its descendants.
    pub fn kill9_all(&self) {
        if let Some(pm) = self.postmaster_pid() {
            hlog!("{}: SIGKILL postmaster {pm} and children", self.name);
            proc::signal(pm, libc::SIGKILL);
            let kids = proc::descendants(pm);
            kids.iter().for_each(|&p| proc::signal(p, libc::SIGKILL));
            let mut all = kids.clone();
            all.push(pm);
            proc::wait_gone(&all, Duration::from_secs(5));
            self.orphans.lock().unwrap().extend(kids);
        }
    }

    /// SIGSTOP the postmaster and all its descendants (simulates a hung node).
    pub fn sigstop(&self) {
        if let Some(pm) = self.postmaster_pid() {
            hlog!("{}: SIGSTOP postmaster {pm} and children", self.name);
            // First, so it cannot fork new children. The signal is delivered asynchronously:
            // wait until it is stopped before listing its children, and until they are too, so
            // the caller sees a hung node when this returns.
            proc::signal(pm, libc::SIGSTOP);
            wait_stopped(pm);
            // Until no new descendant shows up (a child may fork before it stops).
            let mut stopped: Vec<i32> = Vec::new();
            for _ in 0..5 {
                let new: Vec<i32> = proc::descendants(pm).into_iter().filter(|p| !stopped.contains(p)).collect();
                if new.is_empty() {
                    break;
                }
                new.iter().for_each(|&p| proc::signal(p, libc::SIGSTOP));
                new.iter().for_each(|&p| wait_stopped(p));
                stopped.extend(new);
            }
        }
    }

    /// SIGCONT the postmaster and all its descendants.
    pub fn sigcont(&self) {
        if let Some(pm) = self.postmaster_pid() {
            proc::descendants(pm).iter().for_each(|&p| proc::signal(p, libc::SIGCONT));
            proc::signal(pm, libc::SIGCONT);
        }
    }

    /// Best-effort "make sure nothing of this node survives": SIGCONT, pg_ctl
    /// stop -m immediate, then SIGKILL postmaster, its descendants, remembered
    /// orphans and any process whose cmdline mentions our data dir. Used by Drop.
    pub(crate) fn force_stop(&self) {
        let mut pids: Vec<i32> = self.orphans.lock().unwrap().drain(..).collect();
        if let Some(pm) = proc::pidfile_pid(&self.data_dir).filter(|&p| proc::alive(p)) {
            pids.push(pm);
            pids.extend(proc::descendants(pm));
            self.sigcont();
            let mut cmd = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "10"]);
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            let _ = cmd.status();
        }
        // reap (or wait for) whatever already exited
        proc::wait_gone(&pids, Duration::from_millis(500));
        pids.extend(proc::pids_with_cmdline_containing(&self.data_dir.display().to_string()));
        pids.retain(|&p| proc::alive(p));
        if !pids.is_empty() {
            for &p in &pids {
                proc::signal(p, libc::SIGCONT);
                proc::signal(p, libc::SIGKILL);
            }
            if !proc::wait_gone(&pids, Duration::from_secs(10)) {
                hlog!("{}: WARNING: processes {pids:?} survived SIGKILL", self.name);
            }
        }
    }

    // --------------------------------------------------------------------- SQL

    /// Set the statement_timeout used by the SQL helpers (None = server default).
    /// Default: 30 s.
    pub fn set_statement_timeout(&self, t: Option<Duration>) {
        *self.statement_timeout.lock().unwrap() = t;
    }

    /// Connect (NoTls, connect_timeout 3 s) to database `postgres`.
    pub fn try_connect(&self) -> Result<postgres::Client> {
        self.try_connect_db("postgres")
    }

    /// Connect (NoTls, connect_timeout 3 s) to database `db` over the node's
    /// UNIX socket (see [`Node::admin_conninfo`]).
    ///
    /// The postgres crate's connect_timeout only covers the TCP connect, not
    /// the startup handshake, so a SIGSTOPped server would hang us forever.
    /// We therefore connect in a helper thread and give up after the timeout
    /// (the thread finishes by itself once the server dies or continues).
    pub fn try_connect_db(&self, db: &str) -> Result<postgres::Client> {
        let mut cfg = postgres::Config::new();
        // Unix socket: works from the root namespace whatever the partitions.
        cfg.host_path(&self.sock_dir)
            .port(self.port())
            .user("postgres")
            .dbname(db)
            .application_name("keeper-harness")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(t) = *self.statement_timeout.lock().unwrap() {
            cfg.options(&format!("-c statement_timeout={}", t.as_millis()));
        }
        let what = format!("{}: connect to port {}", self.name, self.port());
        with_deadline(CONNECT_TIMEOUT, move || cfg.connect(postgres::NoTls).map_err(anyhow::Error::from))
            .with_context(|| what)
    }

    /// Deadline for a whole SQL-helper call (connect + statement).
    fn call_deadline(&self) -> Duration {
        let st = self.statement_timeout.lock().unwrap().unwrap_or(Duration::from_secs(60));
        CONNECT_TIMEOUT + st + Duration::from_secs(2)
    }

    /// Run `sql` with the simple query protocol; all values as text (NULL = None).
    /// Rows of all statements in `sql` are concatenated.
    /// Also bounded by an overall deadline (connect timeout + statement_timeout
    /// + 2 s, or 60 s without statement_timeout) so a hung server cannot block us.
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut c = self.try_connect()?;
        let q = sql.to_string();
        let msgs = with_deadline(self.call_deadline(), move || Ok(c.simple_query(&q)?))
            .with_context(|| format!("{}: query {sql:?}", self.name))?;
        let mut rows = Vec::new();
        for m in msgs {
            if let postgres::SimpleQueryMessage::Row(r) = m {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
        }
        Ok(rows)
    }

    /// First column of the first row (None if no rows or NULL).
    pub fn query_one(&self, sql: &str) -> Result<Option<String>> {
        Ok(self.query(sql)?.into_iter().next().and_then(|r| r.into_iter().next().flatten()))
    }

    /// Execute `sql` (may contain several statements), ignoring results.
    /// Same overall deadline as [`Node::query`].
    pub fn execute(&self, sql: &str) -> Result<()> {
        let mut c = self.try_connect()?;
        let q = sql.to_string();
        with_deadline(self.call_deadline(), move || Ok(c.batch_execute(&q)?))
            .with_context(|| format!("{}: execute {sql:?}", self.name))
    }

    /// `SELECT pg_is_in_recovery()`.
    pub fn is_in_recovery(&self) -> Result<bool> {
        match self.query_one("SELECT pg_is_in_recovery()")?.as_deref() {
            Some("t") => Ok(true),
            Some("f") => Ok(false),
            other => bail!("{}: unexpected pg_is_in_recovery() result {other:?}", self.name),
        }
    }

    /// Wait until the node accepts connections (and `SELECT 1` works).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_until(timeout, || self.query_one("SELECT 1").is_ok())
            .map_err(|e| anyhow!("{}: not ready: {e}\n--- log tail ---\n{}", self.name, self.log_tail(30)))
    }
}

/// Run `f` in a helper thread; error if it does not finish within `timeout`
/// (the thread is then left to finish on its own).
fn with_deadline<T: Send + 'static>(timeout: Duration, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("harness-sql".into()).spawn(move || {
        let _ = tx.send(f());
    })?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => bail!("timed out after {timeout:?} (server hung or stopped?)"),
    }
}

/// Wait (at most 2 s) until `pid` is stopped by a signal, or exiting, or gone.
fn wait_stopped(pid: i32) {
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        match proc::stat(pid) {
            Some(('T' | 't' | 'Z' | 'X', _)) | None => return,
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}
