//! Helpers for the integration tests: clusters with pg_keeper registered, parameterised
//! SQL, and waiting for observable outcomes (logs, process titles, node_info).

use anyhow::{anyhow, Result};
pub use keeper_harness::{wait_until, Cluster, Node};
use std::time::Duration;

/// Generous deadline for outcomes that normally take a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A cluster with pg_keeper preloaded, the extension created on the master and every node
/// registered (node1 first, so it is the master).
pub fn keeper_cluster(name: &str, standbys: usize, sync_names: Option<&str>, conf: &[&str]) -> Cluster {
    build_keeper_cluster(Cluster::builder(name), standbys, sync_names, conf)
}

/// The same, each node in its own network namespace (for partitions: `cut`, `isolate`).
pub fn keeper_cluster_netns(name: &str, standbys: usize, sync_names: Option<&str>, conf: &[&str]) -> Cluster {
    build_keeper_cluster(Cluster::builder(name).netns(true), standbys, sync_names, conf)
}

/// A netns cluster of node1 (master), `standbys` standbys and a witness (node "witness",
/// registered last with is_witness => true).
pub fn keeper_cluster_with_witness(name: &str, standbys: usize, conf: &[&str]) -> Cluster {
    let cluster = build_keeper_cluster(Cluster::builder(name).netns(true).witness(true), standbys, None, conf);
    cluster
}

/// The same from a builder of the caller's (e.g. `Cluster::builder(n).http(true)`).
pub fn build_keeper_cluster(
    b: keeper_harness::ClusterBuilder,
    standbys: usize,
    sync_names: Option<&str>,
    conf: &[&str],
) -> Cluster {
    let mut b = b.standbys(standbys).keeper(true);
    if let Some(s) = sync_names {
        b = b.synchronous_standby_names(s);
    }
    for c in conf {
        b = b.conf(c);
    }
    let cluster = b.build().expect("cluster builds");
    cluster.master().execute("CREATE EXTENSION pg_keeper").expect("create extension");
    for n in cluster.nodes() {
        if n.name() == "witness" {
            n.execute("CREATE EXTENSION pg_keeper").expect("create extension on the witness");
            let mut c = cluster.master().try_connect().expect("connect");
            c.query_one("SELECT pgkeeper.add_node($1, $2, true)", &[&n.name(), &n.conninfo()])
                .expect("add the witness");
        } else {
            add_node(cluster.master(), n.name(), &n.conninfo()).expect("add_node");
        }
    }
    cluster
}

/// `SELECT pgkeeper.add_node($1, $2)` with parameters.
pub fn add_node(on: &Node, name: &str, conninfo: &str) -> Result<bool> {
    let mut c = on.try_connect()?;
    Ok(c.query_one("SELECT pgkeeper.add_node($1, $2)", &[&name, &conninfo])?.get(0))
}

/// Run a statement with text parameters; Err carries the server's message.
pub fn exec_params(on: &Node, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<()> {
    let mut c = on.try_connect()?;
    c.execute(sql, params).map(|_| ()).map_err(|e| anyhow!(db_message(&e)))
}

/// The server's error message (and hint), or the client error.
pub fn db_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.hint() {
            Some(h) => format!("{} (hint: {h})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

/// node_info as (seqno, name, is_master, is_nextmaster, is_sync) rows, ordered by seqno.
pub fn node_info(on: &Node) -> Vec<(String, String, String, String, String)> {
    on.query("SELECT seqno, name, is_master, is_nextmaster, is_sync FROM pgkeeper.node_info ORDER BY seqno")
        .expect("read node_info")
        .into_iter()
        .map(|r| {
            let v: Vec<String> = r.into_iter().map(|c| c.unwrap_or_default()).collect();
            (v[0].clone(), v[1].clone(), v[2].clone(), v[3].clone(), v[4].clone())
        })
        .collect()
}

/// Pid and title of the node's pg_keeper worker, if it runs.
pub fn worker(node: &Node) -> Option<(i32, String)> {
    node.children().into_iter().find(|(_, cmd)| cmd.contains("pg_keeper"))
}

/// Wait until the worker's process title contains `needle`.
pub fn wait_title(node: &Node, needle: &str) -> Result<String> {
    let mut last = String::new();
    wait_until(PATIENCE, || {
        last = worker(node).map(|w| w.1).unwrap_or_default();
        last.contains(needle)
    })
    .map_err(|_| {
        anyhow!(
            "{}: worker title never contained {needle:?}; last: {last:?}\nstatus: {:?}\n--- log tail ---\n{}",
            node.name(),
            node.query("SELECT mode, state, peers FROM pgkeeper.status()"),
            node.log_tail(30)
        )
    })?;
    Ok(last)
}

/// The commit gate as `pgkeeper.status()` reports it (`open`, `fenced`, `deposed by ...`);
/// empty when the node does not answer.
pub fn commit_gate(node: &Node) -> String {
    node.query_one("SELECT commits FROM pgkeeper.status()").ok().flatten().unwrap_or_default()
}

/// Wait until the node's log contains `needle`.
pub fn wait_log(node: &Node, needle: &str) -> Result<()> {
    wait_until(PATIENCE, || node.log_contents().contains(needle))
        .map_err(|_| anyhow!("{}: log never contained {needle:?}\n--- tail ---\n{}", node.name(), node.log_tail(40)))
}

/// Wait until a standby has replayed everything the master wrote so far.
pub fn wait_replayed(master: &Node, standby: &Node) -> Result<()> {
    let lsn: String = master.try_connect()?.query_one("SELECT pg_current_wal_lsn()::text", &[])?.get(0);
    let replayed = || -> Result<bool> {
        let row = standby.try_connect()?.query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn])?;
        Ok(row.get(0))
    };
    wait_until(PATIENCE, || replayed().unwrap_or(false))
        .map_err(|_| anyhow!("{} did not replay up to {lsn}", standby.name()))
}

/// Wait until each of these standbys has persisted, from the master's heartbeat, that exactly
/// `eligible` may be elected (its vote record's `sync` line): the precondition of every test
/// that relies on voters refusing a node outside the eligible set.
pub fn wait_eligible_persisted(master: &Node, standbys: &[&Node], eligible: &[&str]) -> Result<()> {
    let line = format!("sync {}\n", eligible.join(" "));
    for n in standbys {
        let f = n.data_dir().join(format!("pg_keeper.{}.vote", n.name()));
        wait_until(PATIENCE, || std::fs::read_to_string(&f).is_ok_and(|s| s.contains(&line))).map_err(|_| {
            anyhow!(
                "{} never persisted {line:?}: {:?}\n--- the master's \"who may be elected\" ---\n{}",
                n.name(),
                std::fs::read_to_string(&f),
                log_lines(master, "who may be elected").join("\n")
            )
        })?;
    }
    Ok(())
}

/// A client inserting 1, 2, 3, ... into `pgk_writes` on one node, each on a fresh connection,
/// recording every id whose COMMIT was acknowledged (even if the acknowledgement comes late).
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    attempted: std::sync::Arc<std::sync::atomic::AtomicI64>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<(i64, std::time::Instant)>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

pub const WRITES_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS pgk_writes (id bigint PRIMARY KEY, at timestamptz DEFAULT now())";

impl Writer {
    /// Start writing through `conninfo` every `every`. The table must exist.
    pub fn start(conninfo: &str, every: Duration) -> Writer {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let attempted = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let mut cfg: postgres::Config = conninfo.parse().expect("writer conninfo");
        cfg.connect_timeout(Duration::from_secs(1));
        let (s, a, at) = (stop.clone(), acked.clone(), attempted.clone());
        let handle = std::thread::spawn(move || {
            let mut id = 0i64;
            while !s.load(Ordering::Relaxed) {
                id += 1;
                at.store(id, Ordering::Relaxed);
                let (cfg, a, my) = (cfg.clone(), a.clone(), id);
                // Each attempt on its own thread: a hung server must not stop the writer.
                let t = std::thread::spawn(move || {
                    if let Ok(mut c) = cfg.connect(postgres::NoTls) {
                        if c.execute("INSERT INTO pgk_writes (id) VALUES ($1)", &[&my]).is_ok() {
                            a.lock().unwrap().push((my, std::time::Instant::now()));
                        }
                    }
                });
                let start = std::time::Instant::now();
                while !t.is_finished() && start.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(every);
            }
        });
        Writer { stop, attempted, acked, handle: Some(handle) }
    }

    /// The last id the writer has started to insert.
    pub fn attempted(&self) -> i64 {
        self.attempted.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn acked(&self) -> Vec<i64> {
        self.acked.lock().unwrap().iter().map(|(id, _)| *id).collect()
    }

    /// Acknowledged ids with the instant the acknowledgement arrived.
    pub fn acked_at(&self) -> Vec<(i64, std::time::Instant)> {
        self.acked.lock().unwrap().clone()
    }

    pub fn stop(mut self) -> Vec<i64> {
        self.halt();
        self.acked()
    }

    /// Stop writing (waits for the writing thread); the results stay readable.
    pub fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Ids present in `pgk_writes` on `node`.
pub fn rows(node: &Node) -> Vec<i64> {
    let mut c = node.try_connect().expect("connect");
    c.query("SELECT id FROM pgk_writes ORDER BY id", &[]).expect("read rows").iter().map(|r| r.get(0)).collect()
}

/// Names of the nodes that accept writes now (answer and are not in recovery).
pub fn writable(cluster: &Cluster) -> Vec<String> {
    cluster.nodes().iter().filter(|n| n.is_in_recovery().ok() == Some(false)).map(|n| n.name().to_string()).collect()
}

/// Whether `standby` streams from `primary` (seen in the primary's pg_stat_replication).
pub fn streams_from(primary: &Node, standby: &str) -> bool {
    primary
        .try_connect()
        .and_then(|mut c| {
            Ok(c.query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                &[&standby],
            )?
            .get::<_, i64>(0))
        })
        .map(|n| n == 1)
        .unwrap_or(false)
}

/// Try one write on every node at once (each through its local socket; cancelled after
/// 400 ms): the names of the nodes that acknowledged it. A fenced master makes the commit
/// wait (then it is cancelled), a deposed one refuses it, a standby is read-only.
pub fn writable_by_write(cluster: &Cluster) -> Vec<String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = cluster
            .nodes()
            .iter()
            .filter(|n| n.name() != "witness")
            .map(|n| scope.spawn(move || (n.name().to_string(), write_once(n, Duration::from_millis(400)).is_ok())))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).filter(|(_, ok)| *ok).map(|(n, _)| n).collect()
    })
}

/// One write attempt on one node, like a single node of [`writable_by_write`]: a fresh
/// connection through the local socket (1 s connect timeout), then an INSERT into
/// `pgk_probe`, cancelled from outside after `cancel_after` (a fenced master makes a commit
/// wait at the gate). Ok when the INSERT was acknowledged; Err carries what the client saw.
pub fn write_once(node: &Node, cancel_after: Duration) -> std::result::Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let ci = node.admin_conninfo();
    // On a thread of its own: a hung server must not hang the caller (the thread is left to
    // finish by itself).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| -> std::result::Result<(), String> {
            let mut cfg: postgres::Config = ci.parse().map_err(|e: postgres::Error| e.to_string())?;
            cfg.connect_timeout(Duration::from_secs(1));
            let mut c = cfg.connect(postgres::NoTls).map_err(|e| db_message(&e))?;
            let token = c.cancel_token();
            let done = std::sync::Arc::new(AtomicBool::new(false));
            let d = done.clone();
            let canceller = std::thread::spawn(move || {
                let t = std::time::Instant::now();
                while t.elapsed() < cancel_after {
                    if d.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = token.cancel_query(postgres::NoTls);
            });
            let r = c
                .batch_execute("CREATE TABLE IF NOT EXISTS pgk_probe (at timestamptz)")
                .and_then(|_| c.batch_execute("INSERT INTO pgk_probe VALUES (now())"));
            done.store(true, Ordering::Relaxed);
            let _ = canceller.join();
            r.map_err(|e| db_message(&e))
        })();
        let _ = tx.send(r);
    });
    match rx.recv_timeout(cancel_after + Duration::from_secs(3)) {
        Ok(r) => r,
        Err(_) => Err("no answer (server hung?)".into()),
    }
}

/// One round of [`writable_by_write`]: when it started and which nodes acknowledged.
#[derive(Debug, Clone)]
pub struct WriteProbe {
    pub at: std::time::Instant,
    pub acked: Vec<String>,
}

/// Probe every node with [`writable_by_write`] about every `every` for `total` (a probe
/// whose nodes hang lasts longer); every probe is returned, the caller judges them.
pub fn probe_writes_for(cluster: &Cluster, total: Duration, every: Duration) -> Vec<WriteProbe> {
    let start = std::time::Instant::now();
    let mut probes = Vec::new();
    while start.elapsed() < total {
        let at = std::time::Instant::now();
        probes.push(WriteProbe { at, acked: writable_by_write(cluster) });
        std::thread::sleep(every.saturating_sub(at.elapsed()));
    }
    probes
}

/// The moments the set of acknowledging nodes changed, as `+1.2s [node1]` lines (times
/// from `since`), for the test's output.
pub fn writable_timeline(probes: &[WriteProbe], since: std::time::Instant) -> String {
    let mut out = Vec::new();
    let mut last: Option<&Vec<String>> = None;
    for p in probes {
        if last != Some(&p.acked) {
            let t = p.at.saturating_duration_since(since).as_secs_f64();
            out.push(format!("  +{t:.1}s {:?}", p.acked));
            last = Some(&p.acked);
        }
    }
    out.join("\n")
}

/// Lines of the node's server log that contain `needle`.
pub fn log_lines(node: &Node, needle: &str) -> Vec<String> {
    node.log_contents().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

/// The wall-clock instant a server log line was written: its `%m` prefix (the harness's
/// `log_line_prefix = '%m [%p] %b '`, e.g. `2026-12-01 10:11:12.345 UTC`, milliseconds
/// truncated), read by the server `on` (which knows the time zone abbreviations).
pub fn log_line_time(on: &Node, line: &str) -> Result<std::time::SystemTime> {
    let ts: Vec<&str> = line.split_whitespace().take(3).collect();
    let ok = ts.len() == 3 && ts.iter().all(|t| t.chars().all(|c| c.is_ascii_alphanumeric() || "-:.+".contains(c)));
    if !ok {
        return Err(anyhow!("no %m timestamp at the start of log line {line:?}"));
    }
    let secs: f64 = on
        .try_connect()?
        .query_one("SELECT extract(epoch FROM $1::text::timestamptz)::float8", &[&ts.join(" ")])?
        .get(0);
    Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

/// Signed seconds from `b` to `a` (positive when `a` is later).
pub fn secs_after(a: std::time::SystemTime, b: std::time::SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Send `sig` (`-STOP`, `-CONT`) to `master`'s WAL senders to these standbys: freezes what
/// they receive while the master and the others go on. Asserts one sender per standby.
pub fn signal_wal_senders(master: &Node, to: &[&str], sig: &str) {
    let list = to.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(",");
    let pids = master
        .query(&format!("SELECT pid FROM pg_stat_replication WHERE application_name IN ({list})"))
        .expect("pg_stat_replication");
    assert_eq!(pids.len(), to.len(), "a WAL sender per standby: {pids:?}");
    for p in pids {
        let pid = p[0].clone().unwrap();
        let ok = std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success();
        assert!(ok, "kill {sig} {pid}");
    }
}

/// Move the calling thread into network namespace `ns` (netns clusters: the nodes'
/// addresses are reachable from inside their namespaces, not from the root one).
pub fn enter_netns(ns: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(anyhow!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One HTTP request to `n`'s endpoints (from inside its namespace in netns mode), with a
/// 5 s deadline: the status code and the body.
pub fn http(n: &Node, method: &str, path: &str) -> Result<(u16, String)> {
    let (ns, addr, method, path) = (n.ns().map(str::to_string), n.http_addr(), method.to_string(), path.to_string());
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            enter_netns(&ns)?;
        }
        http_to(&addr, &method, &path)
    })
    .join()
    .map_err(|_| anyhow!("HTTP client thread panicked"))?
}

/// One HTTP request (`method path`) to `addr` with a 5 s deadline: the status code and the
/// body.
pub fn http_to(addr: &str, method: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let sa: std::net::SocketAddr = addr.parse()?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status line in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// `GET path` on `n`: the status code (0 when there was no answer).
pub fn http_code(n: &Node, path: &str) -> u16 {
    http(n, "GET", path).map(|(c, _)| c).unwrap_or(0)
}
