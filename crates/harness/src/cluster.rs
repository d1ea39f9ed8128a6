//! Cluster builder and cluster handle (master + N streaming hot standbys).

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::netns::{self, Blocks, NetSet};
use crate::{chown_pg, hlog, proc, run_checked, wait_until, Node};

/// Ports handed out in this process and not yet released (avoids collisions
/// between clusters built in parallel threads). Collisions with other
/// processes are handled by retrying the start with a fresh port.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Pick a currently free TCP port on 127.0.0.1 not handed out before by this process.
fn pick_port() -> Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let mut used = USED_PORTS.lock().unwrap();
        let used = used.get_or_insert_with(HashSet::new);
        if used.contains(&port) {
            continue;
        }
        // double check it can really be bound (listener above is dropped)
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            used.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!("could not find a free TCP port")
}

fn release_port(p: u16) {
    if let Some(s) = USED_PORTS.lock().unwrap().as_mut() {
        s.remove(&p);
    }
}

/// Quote a value for postgresql.conf (single quotes, doubled inside).
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Builder for a [`Cluster`]. Defaults: 2 standbys, no synchronous standbys,
/// pg_keeper not loaded, no extra config, name "cluster".
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    name: String,
    standbys: usize,
    sync_names: Option<String>,
    keeper: bool,
    conf: Vec<String>,
    http: bool,
    netns: bool,
    witness: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder::new("cluster")
    }
}

impl ClusterBuilder {
    /// `name` becomes part of the base dir name `pgk-<name>-<pid>-<counter>`.
    pub fn new(name: &str) -> Self {
        ClusterBuilder {
            name: name.into(),
            standbys: 2,
            sync_names: None,
            keeper: false,
            conf: vec![],
            http: false,
            netns: false,
            witness: false,
        }
    }
    /// Base dir name prefix (same as the `new` argument).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }
    /// Number of hot standbys (default 2).
    pub fn standbys(mut self, n: usize) -> Self {
        self.standbys = n;
        self
    }
    /// Value of `synchronous_standby_names` (e.g. `"node2"`, `"FIRST 1 (node2, node3)"`).
    pub fn synchronous_standby_names(mut self, v: &str) -> Self {
        self.sync_names = Some(v.into());
        self
    }
    /// Load pg_keeper: `shared_preload_libraries='pg_keeper'` and per-node
    /// `pg_keeper.node_name`. Requires the extension to be installed.
    pub fn keeper(mut self, on: bool) -> Self {
        self.keeper = on;
        self
    }
    /// Extra postgresql.conf line for all nodes, e.g. `"pg_keeper.keepalive_time = 1"`.
    pub fn conf(mut self, line: &str) -> Self {
        self.conf.push(line.into());
        self
    }

    /// Network-namespace mode (requires root): every node runs in its own
    /// network namespace `pgk<X>n<i>` with address `10.213.X.i`, port 5432,
    /// all connected through a bridge in a private "switch" namespace.
    /// Enables [`Cluster::cut`], [`Cluster::isolate`], ... The test process
    /// still reaches every node through its UNIX socket.
    pub fn netns(mut self, on: bool) -> Self {
        self.netns = on;
        self
    }

    /// Add a pg_keeper witness, node "witness" (last in [`Cluster::nodes`]): a server of its
    /// own (initdb, not a replica) with `pg_keeper.witness = on`. Needs `keeper(true)`.
    /// pg_keeper's HTTP endpoints on every node, at [`Node::http_addr`].
    pub fn http(mut self, on: bool) -> Self {
        self.http = on;
        self
    }

    pub fn witness(mut self, on: bool) -> Self {
        self.witness = on;
        self
    }

    /// Create, start and wait for the whole cluster (all standbys streaming).
    /// On error everything created so far is stopped and removed (via Drop).
    pub fn build(self) -> Result<Cluster> {
        proc::become_subreaper();
        let base = make_base_dir(&self.name)?;
        hlog!("building cluster in {} ({} standbys)", base.display(), self.standbys);
        let mut cluster =
            Cluster { base, nodes: Vec::new(), torn_down: false, net: None, blocks: Mutex::new(Vec::new()) };
        let total = self.standbys + 1 + usize::from(self.witness);
        if self.netns {
            if total > 250 {
                anyhow::bail!("netns mode supports at most 250 nodes");
            }
            netns::cleanup_stale_netns();
            // stored in the cluster first, so a failure below still cleans up
            let net = cluster.net.insert(NetSet::claim()?);
            net.create(total)?;
            *cluster.blocks.lock().unwrap() = vec![Blocks::default(); total];
        }
        // (namespace, address) of node i (1-based) in netns mode; in netns mode
        // every node uses port 5432 (the namespaces are separate, and the
        // UNIX sockets live in distinct directories).
        let x = cluster.net.as_ref().map(|n| n.x);
        let net_of = |i: usize| x.map(|x| (netns::node_ns(x, i), netns::node_addr(x, i).to_string()));
        let port_for = || -> Result<u16> {
            if x.is_some() {
                Ok(5432)
            } else {
                pick_port()
            }
        };

        // ---- master: initdb + config
        let m = Node::new(&cluster.base, "node1", port_for()?, net_of(1))?;
        cluster.nodes.push(m);
        let m = &cluster.nodes[0];
        initdb(m)?;
        let mut conf = String::from(BASE_CONF);
        if let Some(s) = &self.sync_names {
            conf += &format!("synchronous_standby_names = {}\n", q(s));
        }
        if self.keeper {
            conf += "shared_preload_libraries = 'pg_keeper'\n";
            // Tests that look at a deposed master keep it deposed; tests of the automatic
            // rejoin (the default outside tests) turn it on with a conf line.
            conf += "pg_keeper.auto_rejoin = off\n";
        }
        for l in &self.conf {
            conf += l;
            conf += "\n";
        }
        // Node identity (port, sockets, names) lives in node.conf, read last
        // (before postgresql.auto.conf). pg_basebackup copies this line.
        conf += "include_if_exists = 'node.conf'\n";
        append_file(&m.data_dir().join("postgresql.conf"), &conf)?;
        m.write_node_conf(&node_conf(m, self.keeper, self.http))?;
        start_with_port_retry(m)?;
        m.wait_ready(Duration::from_secs(30))?;
        let master_port = m.port();
        let master_addr = m.addr().to_string();

        // ---- standbys: pg_basebackup -R, fix primary_conninfo, own node.conf
        for i in 0..self.standbys {
            let name = format!("node{}", i + 2);
            let s = Node::new(&cluster.base, &name, port_for()?, net_of(i + 2))?;
            cluster.nodes.push(s);
            let s = cluster.nodes.last().unwrap();
            hlog!("{name}: pg_basebackup from {master_addr}:{master_port}");
            let (sdata, mport) = (s.data_dir().display().to_string(), master_port.to_string());
            // (inside the standby's namespace in netns mode)
            run_checked(
                s.run_as_pg(
                    "pg_basebackup",
                    [
                        "-h",
                        &master_addr,
                        "-p",
                        &mport,
                        "-U",
                        "postgres",
                        "-D",
                        &sdata,
                        "-X",
                        "stream",
                        "-R",
                        "--checkpoint=fast",
                        "--no-sync",
                    ],
                ),
                "pg_basebackup",
            )?;
            set_primary_conninfo(s, &master_addr, master_port)?;
            s.write_node_conf(&node_conf(s, self.keeper, self.http))?;
            start_with_port_retry(s)?;
        }
        if self.witness {
            let w = Node::new(&cluster.base, "witness", port_for()?, net_of(total))?;
            cluster.nodes.push(w);
            let w = cluster.nodes.last().unwrap();
            hlog!("witness: initdb");
            initdb(w)?;
            let mut conf = String::from(BASE_CONF);
            conf += "shared_preload_libraries = 'pg_keeper'\npg_keeper.witness = on\n";
            for l in &self.conf {
                conf += l;
                conf += "\n";
            }
            conf += "include_if_exists = 'node.conf'\n";
            append_file(&w.data_dir().join("postgresql.conf"), &conf)?;
            w.write_node_conf(&node_conf(w, true, self.http))?;
            start_with_port_retry(w)?;
            w.wait_ready(Duration::from_secs(30))?;
        }
        cluster.wait_streaming(Duration::from_secs(60))?;
        hlog!(
            "cluster ready: {}",
            cluster.nodes.iter().map(|n| format!("{}:{}", n.name(), n.port())).collect::<Vec<_>>().join(" ")
        );
        Ok(cluster)
    }
}

const HBA: &str = "\
# keeper-harness: TRUST EVERYTHING LOCAL. For tests only!
local all         all                trust
host  all         all  127.0.0.1/32  trust
host  replication all  127.0.0.1/32  trust
host  all         all  10.213.0.0/16 trust
host  replication all  10.213.0.0/16 trust
";

const BASE_CONF: &str = "
# ---- keeper-harness ----
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
wal_log_hints = on
wal_keep_size = '256MB'
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '1s'
max_worker_processes = 16
synchronous_commit = on
log_line_prefix = '%m [%p] %b '
log_connections = off
";

fn initdb(n: &Node) -> Result<()> {
    let data = n.data_dir().display().to_string();
    run_checked(
        n.run_as_pg("initdb", ["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"]),
        "initdb",
    )?;
    std::fs::write(n.data_dir().join("pg_hba.conf"), HBA)?;
    Ok(())
}

fn node_conf(n: &Node, keeper: bool, http: bool) -> String {
    let mut s = format!(
        "# per-node settings (keeper-harness)\nlisten_addresses = {}\nport = {}\nunix_socket_directories = {}\ncluster_name = {}\n",
        q(n.addr()),
        n.port(),
        q(&n.sock_dir().display().to_string()),
        q(n.name())
    );
    if keeper {
        s += &format!("pg_keeper.node_name = {}\n", q(n.name()));
    }
    if http {
        n.set_http_port(if n.ns().is_some() { 8008 } else { pick_port().unwrap_or(8008) });
        s += &format!("pg_keeper.http_listen = {}\n", q(&n.http_addr()));
    }
    s
}

fn append_file(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f =
        std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("open {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Replace the primary_conninfo written by `pg_basebackup -R` with one that
/// carries `application_name=<node>` (needed for synchronous_standby_names).
fn set_primary_conninfo(n: &Node, master_addr: &str, master_port: u16) -> Result<()> {
    let path = n.data_dir().join("postgresql.auto.conf");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut new: String =
        old.lines().filter(|l| !l.trim_start().starts_with("primary_conninfo")).map(|l| format!("{l}\n")).collect();
    new += &format!(
        "primary_conninfo = {}\n",
        q(&format!("host={master_addr} port={master_port} user=postgres application_name={}", n.name()))
    );
    std::fs::write(&path, new)?;
    chown_pg(&path)
}

/// Start a node; if the log says the port was taken (another process grabbed
/// it), pick a new port and retry (build time only).
fn start_with_port_retry(n: &Node) -> Result<()> {
    if n.ns().is_some() {
        return n.start(); // private namespace: nobody else can hold the port
    }
    let mut attempt = 0;
    loop {
        let before = std::fs::metadata(n.log_path()).map(|m| m.len() as usize).unwrap_or(0);
        match n.start() {
            Ok(()) => return Ok(()),
            Err(e) => {
                let log = n.log_contents();
                let new_part = log.get(before..).unwrap_or(&log);
                let port_clash = ["could not bind", "Address already in use", "could not create any TCP/IP"]
                    .iter()
                    .any(|p| new_part.contains(p));
                attempt += 1;
                if !port_clash || attempt >= 5 {
                    return Err(e);
                }
                let old = n.port();
                let p = pick_port()?;
                hlog!("{}: port {old} taken, retrying with {p}", n.name());
                n.append_conf(&format!("port = {p}"))?;
                n.set_port(p);
                release_port(old);
            }
        }
    }
}

/// A file in a base dir that was left on purpose (`keep_running`, `PGK_KEEP=1`): the sweep
/// below leaves such a dir alone.
const KEPT_MARKER: &str = "KEPT";

/// Where base dirs are made (and swept): env `PGK_TMPDIR`, else `/tmp`.
pub fn base_parent() -> PathBuf {
    std::env::var("PGK_TMPDIR").ok().filter(|s| !s.is_empty()).unwrap_or("/tmp".into()).into()
}

fn make_base_dir(name: &str) -> Result<PathBuf> {
    let parent = base_parent();
    std::fs::create_dir_all(&parent)?;
    sweep_abandoned(&parent);
    loop {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = parent.join(format!("pgk-{name}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
                chown_pg(&dir)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(anyhow!("mkdir {}: {e}", dir.display())),
        }
    }
}

/// Stop the servers of, and remove, base dirs `pgk-<name>-<pid>-<n>` whose building process
/// is gone without tearing them down (a test run killed midway), unless kept on purpose.
fn sweep_abandoned(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        let dir = e.path();
        if proc::alive(pid) || dir.join(KEPT_MARKER).exists() || !dir.is_dir() {
            continue;
        }
        hlog!("removing {} (left by process {pid}, which is gone)", dir.display());
        // Only the postmasters of its data dirs (their children exit with them), never any
        // other process that merely mentions the dir (a `tail -f` on a log).
        let postmasters: Vec<i32> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|node| node.path().join("data"))
            .filter_map(|data| {
                let pm = proc::pidfile_pid(&data)?;
                let cmd = proc::cmdline(pm)?;
                cmd.contains(&data.display().to_string()).then_some(pm)
            })
            .collect();
        postmasters.iter().for_each(|&p| proc::signal(p, libc::SIGKILL));
        proc::wait_gone(&postmasters, std::time::Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The building process of base dir `pgk-<name>-<pid>-<n>` (`name` may contain dashes).
fn owner_pid(dir_name: &str) -> Option<i32> {
    let rest = dir_name.strip_prefix("pgk-")?;
    let mut parts = rest.rsplitn(3, '-');
    let (_n, pid, _name) = (parts.next()?.parse::<u32>().ok()?, parts.next()?, parts.next()?);
    pid.parse().ok()
}

/// A running cluster. Dropping it kills every process and deletes the base dir
/// (unless env `PGK_KEEP=1`).
#[derive(Debug)]
pub struct Cluster {
    base: PathBuf,
    nodes: Vec<Node>,
    torn_down: bool,
    /// Namespaces of this cluster (netns mode only).
    net: Option<NetSet>,
    /// Per-node (index = node number - 1) partition state, netns mode only.
    blocks: Mutex<Vec<Blocks>>,
}

impl Cluster {
    /// Shortcut for `ClusterBuilder::new(name)`.
    pub fn builder(name: &str) -> ClusterBuilder {
        ClusterBuilder::new(name)
    }
    /// All nodes; index 0 is node1 (initial master).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// Node by name; panics if there is no such node (see [`Cluster::get_node`]).
    pub fn node(&self, name: &str) -> &Node {
        self.get_node(name).unwrap_or_else(|| panic!("no node named {name:?}"))
    }
    pub fn get_node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name() == name)
    }
    /// The initial master (node1) — not necessarily the current primary.
    pub fn master(&self) -> &Node {
        &self.nodes[0]
    }
    /// The initial standbys (node2..).
    pub fn standbys(&self) -> &[Node] {
        &self.nodes[1..]
    }
    /// A running node that answers `pg_is_in_recovery() = false`, if any.
    pub fn current_primary(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.is_running() && matches!(n.is_in_recovery(), Ok(false)))
    }
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// Wait until the initial master's pg_stat_replication shows every other
    /// node (by application_name) in state 'streaming'.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<()> {
        self.wait_streaming_to(self.master().name(), timeout)
    }

    /// Like [`Cluster::wait_streaming`] but with `primary` as the upstream of all other nodes.
    pub fn wait_streaming_to(&self, primary: &str, timeout: Duration) -> Result<()> {
        let p = self.node(primary);
        // (a witness never streams)
        let want: Vec<&str> =
            self.nodes.iter().map(|n| n.name()).filter(|n| *n != primary && *n != "witness").collect();
        let mut last = Vec::new();
        let r = wait_until(timeout, || match p.query("SELECT application_name, state FROM pg_stat_replication") {
            Ok(rows) => {
                last = rows;
                want.iter()
                    .all(|w| last.iter().any(|r| r[0].as_deref() == Some(*w) && r[1].as_deref() == Some("streaming")))
            }
            Err(_) => false,
        });
        r.map_err(|e| {
            let mut msg =
                format!("standbys {want:?} not streaming to {primary}: {e}; last pg_stat_replication: {last:?}");
            for n in &self.nodes {
                msg += &format!("\n--- tail of {} ---\n{}", n.log_path().display(), n.log_tail(15));
            }
            anyhow!(msg)
        })
    }

    /// Leave every server running and the directory in place (for `pgkeeper demo --keep`):
    /// nothing is stopped when the handle goes away. Returns the base dir.
    /// In netns mode the namespaces stay too (until [`crate::cleanup_stale_netns`]
    /// runs after this process has exited).
    pub fn keep_running(mut self) -> PathBuf {
        self.torn_down = true;
        self.mark_kept("kept running (pgkeeper demo --keep)");
        if let Some(n) = self.net.as_mut() {
            n.leak();
        }
        self.base.clone()
    }

    /// Leave the KEPT marker (with `why`) so that later builds do not sweep the base dir.
    fn mark_kept(&self, why: &str) {
        if let Err(e) = std::fs::write(self.base.join(KEPT_MARKER), format!("{why}\n")) {
            hlog!("could not mark {} as kept ({e}): a later build may remove it", self.base.display());
        }
    }

    /// Stop all nodes (immediate, then SIGKILL leftovers) and remove the base
    /// dir unless `PGK_KEEP=1`. Idempotent; also called by Drop.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for n in self.nodes.iter().rev() {
            n.force_stop();
            if self.net.is_none() {
                release_port(n.port());
            }
        }
        // namespaces go even with PGK_KEEP=1 (the servers are stopped anyway)
        if let Some(net) = self.net.as_mut() {
            net.destroy();
        }
        if std::env::var("PGK_KEEP").as_deref() == Ok("1") {
            hlog!("PGK_KEEP=1: keeping {}", self.base.display());
            self.mark_kept("kept (PGK_KEEP=1)");
            return;
        }
        // make sure nothing still writes into the dir before removing it
        let left = proc::pids_with_cmdline_containing(&self.base.display().to_string());
        left.iter().for_each(|&p| proc::signal(p, libc::SIGKILL));
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            hlog!("could not remove {}: {e}", self.base.display());
        } else {
            hlog!("removed {}", self.base.display());
        }
    }
}

/// Partitions (netns mode only). Implemented with nftables `drop` rules in
/// table `inet pgk` inside the node namespaces, rebuilt from `self.blocks`
/// after every change, so every call is idempotent. Existing TCP connections
/// are affected too (no conntrack exceptions): peers see a black hole.
impl Cluster {
    /// True if the cluster was built with `.netns(true)`.
    pub fn is_netns(&self) -> bool {
        self.net.is_some()
    }

    /// Index of node `name` in `nodes`, error in loopback mode / unknown name.
    fn net_idx(&self, name: &str) -> Result<usize> {
        if self.net.is_none() {
            anyhow::bail!("partitions need a cluster built with .netns(true)");
        }
        self.nodes.iter().position(|n| n.name() == name).ok_or_else(|| anyhow!("no node named {name:?}"))
    }

    fn ip_of(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].addr().parse().expect("netns node address")
    }

    /// Mutate the partition state under the lock, then push the rules of
    /// every namespace whose state changed.
    fn update_blocks(&self, f: impl FnOnce(&mut Vec<Blocks>)) -> Result<()> {
        let mut b = self.blocks.lock().unwrap();
        let before = b.clone();
        f(&mut b);
        for (i, n) in self.nodes.iter().enumerate() {
            let (old, new) = (&before[i], &b[i]);
            if old.isolated != new.isolated || old.out_to != new.out_to || old.in_from != new.in_from {
                netns::apply_blocks(n.ns().expect("netns node"), new)?;
            }
        }
        Ok(())
    }

    /// Drop every packet from node `from` to node `to` (dropped both when
    /// leaving `from` and when arriving at `to`). `to` can still send to
    /// `from`, but TCP connections in either direction fail because the
    /// replies (SYN-ACK / ACK) from `from` are dropped.
    pub fn cut_oneway(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.net_idx(from)?, self.net_idx(to)?);
        let (fa, ta) = (self.ip_of(f), self.ip_of(t));
        hlog!("partition: {from} -> {to} dropped (one way)");
        self.update_blocks(|b| {
            b[f].out_to.insert(ta);
            b[t].in_from.insert(fa);
        })
    }

    /// Drop all traffic between `a` and `b`, both directions.
    pub fn cut(&self, a: &str, b: &str) -> Result<()> {
        let (ia, ib) = (self.net_idx(a)?, self.net_idx(b)?);
        let (aa, ba) = (self.ip_of(ia), self.ip_of(ib));
        hlog!("partition: {a} <-> {b} cut");
        self.update_blocks(|bl| {
            bl[ia].out_to.insert(ba);
            bl[ia].in_from.insert(ba);
            bl[ib].out_to.insert(aa);
            bl[ib].in_from.insert(aa);
        })
    }

    /// `a` can talk to nobody: all non-loopback traffic in `a`'s namespace
    /// is dropped (its UNIX socket keeps working for the test process).
    pub fn isolate(&self, a: &str) -> Result<()> {
        let ia = self.net_idx(a)?;
        hlog!("partition: {a} isolated");
        self.update_blocks(|b| b[ia].isolated = true)
    }

    /// Restore traffic between `a` and `b` (removes `cut`/`cut_oneway` rules
    /// between them, either direction). If `a` or `b` was isolated, the
    /// isolation is turned into cuts to every OTHER node, i.e. only the
    /// `a`<->`b` link comes back.
    pub fn heal(&self, a: &str, b: &str) -> Result<()> {
        let (ia, ib) = (self.net_idx(a)?, self.net_idx(b)?);
        let addrs: Vec<Ipv4Addr> = (0..self.nodes.len()).map(|i| self.ip_of(i)).collect();
        hlog!("partition: {a} <-> {b} healed");
        self.update_blocks(|bl| {
            for x in [ia, ib] {
                if bl[x].isolated {
                    bl[x].isolated = false;
                    for (p, &pa) in addrs.iter().enumerate() {
                        if p != x {
                            bl[x].out_to.insert(pa);
                            bl[x].in_from.insert(pa);
                            bl[p].out_to.insert(addrs[x]);
                            bl[p].in_from.insert(addrs[x]);
                        }
                    }
                }
            }
            for (x, y) in [(ia, ib), (ib, ia)] {
                bl[x].out_to.remove(&addrs[y]);
                bl[x].in_from.remove(&addrs[y]);
            }
        })
    }

    /// Remove every partition rule in every namespace.
    pub fn heal_all(&self) -> Result<()> {
        if self.net.is_none() {
            anyhow::bail!("partitions need a cluster built with .netns(true)");
        }
        hlog!("partition: all healed");
        // re-apply everywhere (not only where state changed): cheap, and
        // also repairs rules someone changed behind our back
        let mut b = self.blocks.lock().unwrap();
        for (i, n) in self.nodes.iter().enumerate() {
            b[i] = Blocks::default();
            netns::apply_blocks(n.ns().expect("netns node"), &b[i])?;
        }
        Ok(())
    }

    /// Reachability probe: can node `from` open a PostgreSQL session to node
    /// `to` (over `to.conninfo()`, from inside `from`'s namespace) within
    /// `timeout`? Runs `timeout <t> psql "<conninfo> connect_timeout=<t>" -c 'select 1'`.
    pub fn can_connect(&self, from: &str, to: &str, timeout: Duration) -> bool {
        let secs = timeout.as_secs().max(1).to_string();
        let ci = format!("{} connect_timeout={secs}", self.node(to).conninfo());
        let psql = crate::pg_bindir().join("psql");
        let mut c = self.node(from).ns_command("timeout");
        c.arg(&secs)
            .arg(psql)
            .args(["-X", "-At", "-c", "select 1", &ci])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.status().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}
