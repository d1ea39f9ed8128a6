//! Outgoing probes: every network call pg_keeper makes, each under one deadline covering
//! connect, TLS, authentication and query. Connections are made by libpq (`keeper_pq`), so a
//! node's conninfo means here what it means to the walreceiver. Runs on a current-thread
//! tokio runtime, each probe's libpq calls on one of its blocking threads; no pg_sys call is
//! made from here.
//!
//! Connections are kept and reused (issue 4/7: a fresh connection is a backend fork and an
//! authentication on the node asked, every probe, every round). The deadline covers the
//! query on a reused connection exactly as on a new one, so a frozen or black-holed peer
//! still fails its probe in time; a connection that failed or timed out is dropped (its
//! socket closed), and one the peer closed meanwhile (a restart) is replaced by
//! a fresh connection within the same deadline. Each process (the worker, a backend running
//! an indirect poll) keeps at most one connection per conninfo.

use keeper_pq::{Conn, Row, ToParam};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Name this process's connections carry, so they are easy to tell apart in pg_stat_activity.
const APP_NAME: &str = "pg_keeper";

/// The process's runtime (current-thread: driven only while a probe runs on this thread), for
/// its life. Each probe runs its libpq calls on one of the runtime's blocking threads, so
/// probes to several nodes run at once and the caller's deadline holds even where libpq
/// itself would wait (a host name's DNS lookup). Created on first use, never in the
/// postmaster (which would hand it to every forked child).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // (called on the process's main thread: the one place here that calls PostgreSQL)
        unsafe { pgrx::pg_sys::on_proc_exit(Some(stop_probes), pgrx::pg_sys::Datum::from(0)) };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // PostgreSQL's signal handlers belong to the main thread: a probe thread never
            // takes a signal meant for it.
            .on_thread_start(|| unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            })
            .build()
            .expect("tokio runtime")
    })
}

/// At the process's exit, before `exit()` runs OpenSSL's cleanup: no libpq call on a probe
/// thread from now on (`keeper_pq::exit`). Waits at most 200 ms for calls under way (they
/// are non-blocking but for a host name's DNS lookup), so SIGTERM is not held back.
unsafe extern "C-unwind" fn stop_probes(_code: i32, _arg: pgrx::pg_sys::Datum) {
    keeper_pq::exit::close(Duration::from_millis(200));
}

/// Keys with a connection attempt under way on some thread. One at a time per key: an
/// attempt stuck beyond its deadline (in a DNS lookup inside libpq) makes the next probes
/// wait for it within their own deadline, then fail, instead of piling up threads.
fn connecting() -> &'static Mutex<std::collections::HashSet<String>> {
    static C: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(std::collections::HashSet::new()))
}

/// A new connection for `key`, once no other attempt for it is under way (an attempt that
/// timed out a moment ago usually ends within milliseconds: this probe then connects as if
/// it had been alone), all by `until`.
fn connect_once(key: &str, cfg: &Config, started: Instant, until: Instant) -> Result<Conn, String> {
    while !connecting().lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string()) {
        if Instant::now() >= until {
            return Err(format!(
                "no answer within {} ms (an earlier connection attempt to this node has not ended)",
                until.duration_since(started).as_millis()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let overrides: Vec<(&str, &str)> = cfg.overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = Conn::connect(&cfg.conninfo, &overrides, until).map_err(|e| e.message);
    connecting().lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    r
}

/// How pg_keeper connects to a node: the node's conninfo, as libpq reads it (TLS, password
/// files, services: issue 5/7), then what pg_keeper sets on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    conninfo: String,
    overrides: Vec<(&'static str, String)>,
}

impl Config {
    /// The pool's key: everything the connection is made with (a password in the conninfo
    /// included: another password is another connection).
    fn key(&self) -> String {
        let mut k = self.conninfo.clone();
        for (name, v) in &self.overrides {
            k.push_str(&format!("\u{0}{name}={v}"));
        }
        k
    }
}

/// The kept connections of this process, by key (probes run on the runtime's blocking
/// threads, one connection used by one probe at a time).
fn kept() -> &'static Mutex<HashMap<String, Conn>> {
    static KEPT: OnceLock<Mutex<HashMap<String, Conn>>> = OnceLock::new();
    KEPT.get_or_init(|| Mutex::new(HashMap::new()))
}

fn take(key: &str) -> Option<Conn> {
    kept().lock().unwrap_or_else(|p| p.into_inner()).remove(key)
}

/// At most this many kept connections per process (a session calling indirect_polling with
/// many conninfos must not pile up connections; a cluster has far fewer nodes).
const MAX_KEPT: usize = 64;

/// Keep `c` for the next probe with this key, unless it is closed or has lived its time; and
/// drop every other connection that has (a node deleted from node_info, an old conninfo).
fn keep(key: String, c: Conn, max_age: Duration) {
    let mut k = kept().lock().unwrap_or_else(|p| p.into_inner());
    k.retain(|_, other| other.born().elapsed() < max_age);
    if !c.is_closed() && c.born().elapsed() < max_age && (k.len() < MAX_KEPT || k.contains_key(&key)) {
        k.insert(key, c);
    }
}

/// How pg_keeper connects with `conninfo`: to `dbname` if given, as `application_name`
/// pg_keeper, without JIT. A conninfo libpq cannot parse is refused with libpq's message.
pub fn config(conninfo: &str, dbname: Option<&str>) -> Result<Config, String> {
    let pairs = keeper_pq::conninfo::parse(conninfo).map_err(|e| format!("invalid conninfo: {e}"))?;
    let mut overrides = vec![("application_name", APP_NAME.to_string())];
    if let Some(db) = dbname {
        overrides.push(("dbname", db.to_string()));
    }
    // The backends that serve pg_keeper's probes run small queries the JIT would only slow
    // down (its compile time was most of their CPU). Appended to the node's own options.
    let options = match pairs.iter().rev().find(|(k, _)| k == "options") {
        Some((_, o)) if !o.trim().is_empty() => format!("{o} -c jit=off"),
        _ => "-c jit=off".to_string(),
    };
    overrides.push(("options", options));
    Ok(Config { conninfo: conninfo.to_string(), overrides })
}

/// Run one query on `cfg`'s node, all within `deadline`: on the kept connection if there is
/// one, else (or if that one is finished) on a new one, kept afterwards. An error the server
/// reported for the query keeps the connection; any other error, or the deadline, drops it.
/// A connection lives at most `timing::CONNECTION_MAX_AGE`: then the probe connects afresh,
/// so a node that takes no new connection (a smart shutdown waiting for its sessions to end,
/// a stopped postmaster, slots exhausted, a password changed) fails its probes as before, and
/// pg_keeper's own sessions never hold a shutdown back for long.
async fn query_one(
    cfg: Config,
    deadline: Duration,
    sql: &'static str,
    params: &[&dyn ToParam],
) -> Result<Row, String> {
    let started = Instant::now();
    let until = started + deadline;
    let texts: Vec<Option<String>> = params.iter().map(|p| p.to_param()).collect();
    let work = move || {
        let max_age = keeper_core::timing::CONNECTION_MAX_AGE;
        let key = cfg.key();
        let params: Vec<&dyn ToParam> = texts.iter().map(|t| t as &dyn ToParam).collect();
        if let Some(mut c) = take(&key) {
            match c.query_one(sql, &params, until) {
                Ok(row) => {
                    keep(key, c, max_age);
                    return Ok(row);
                }
                Err(e) if !e.finished => {
                    keep(key, c, max_age);
                    return Err(e.message);
                }
                // Finished (a restart, a shutdown, idle_session_timeout): a new connection.
                Err(_) => drop(c),
            }
        }
        let mut c = connect_once(&key, &cfg, started, until)?;
        match c.query_one(sql, &params, until) {
            Ok(row) => {
                keep(key, c, max_age);
                Ok(row)
            }
            Err(e) => {
                if !e.finished {
                    keep(key, c, max_age);
                }
                Err(e.message)
            }
        }
    };
    // The blocking thread keeps the deadline itself; this one also covers what libpq waits
    // for inside a call (a DNS lookup).
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("probe failed: {e}")),
        Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
    }
}

/// Plain poll (`SELECT 1`, any server, extension or not): Ok when it answered in time.
pub async fn poll(cfg: Config, deadline: Duration) -> Result<(), String> {
    query_one(cfg, deadline, "SELECT 1", &[]).await.map(|_| ())
}

/// What a node says of itself through `pgkeeper._poll`: its role, whether its commit gate is
/// shut, its term. With `heartbeat` (master mode: this node's name, term, lease in ms) the
/// node also promises not to vote while that lease may run.
#[derive(Debug, Clone, Copy)]
pub struct State {
    pub latency: Duration,
    pub answer: keeper_core::election::PeerAnswer,
}

/// Master mode's heartbeat: who sends it, its term, its lease, and the standbys that may be
/// elected (None: replication is asynchronous; `keeper_core::eligibility`).
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat<'a> {
    pub from: &'a str,
    pub term: u64,
    pub lease_ms: u64,
    pub eligible: Option<&'a [String]>,
}

pub async fn state(cfg: Config, deadline: Duration, heartbeat: Option<Heartbeat<'_>>) -> Result<State, String> {
    let start = Instant::now();
    let (from, term, lease, eligible) = match heartbeat {
        Some(h) => {
            (Some(h.from.to_string()), Some(h.term as i64), Some(h.lease_ms as i64), h.eligible.map(<[String]>::to_vec))
        }
        None => (None, None, None, None),
    };
    let row = query_one(
        cfg,
        deadline,
        "SELECT in_recovery, fenced, term, witness, deposed, elected, membership \
         FROM pgkeeper._poll($1::text, $2::bigint, $3::bigint, $4::text[])",
        &[&from, &term, &lease, &eligible],
    )
    .await?;
    Ok(State { latency: start.elapsed(), answer: peer_answer(&row, 0) })
}

/// `_poll`'s columns (in_recovery, fenced, term, witness, deposed, elected, membership) from
/// `first` on.
fn peer_answer(row: &Row, first: usize) -> keeper_core::election::PeerAnswer {
    keeper_core::election::PeerAnswer {
        in_recovery: row.get(first),
        fenced: row.get(first + 1),
        term: row.get::<i64>(first + 2).max(0) as u64,
        witness: row.get(first + 3),
        deposed: row.get(first + 4),
        elected: row.get(first + 5),
        membership: row.get::<i64>(first + 6).max(0) as u64,
    }
}

/// Ask `cfg`'s node for its vote (`pgkeeper.request_vote`, parameters only); `dry`: a pre-vote.
pub async fn request_vote(
    cfg: Config,
    deadline: Duration,
    req: &keeper_core::election::VoteRequest,
    dry: bool,
) -> Result<keeper_core::election::VoteReply, String> {
    let candidate = req.candidate.clone();
    let lsn = keeper_core::lsn::format(req.candidate_lsn);
    let (term, membership, tli) = (req.term as i64, req.candidate_membership as i64, req.candidate_tli as i64);
    let row = query_one(
        cfg,
        deadline,
        "SELECT granted, term, lsn, reason, tli \
         FROM pgkeeper.request_vote($1::text, $2::bigint, $3::text, $4::boolean, $5::bigint, $6::bigint)",
        &[&candidate, &term, &lsn, &dry, &membership, &tli],
    )
    .await?;
    Ok(keeper_core::election::VoteReply {
        granted: row.get(0),
        term: row.get::<i64>(1).max(0) as u64,
        lsn: row.get::<Option<String>>(2).and_then(|s| keeper_core::lsn::parse(&s)),
        tli: row.get::<i64>(4).clamp(0, u32::MAX as i64) as u32,
        reason: row.get::<Option<String>>(3).unwrap_or_default(),
    })
}

/// Tell a node that this master (stepping down) takes no more writes (`pgkeeper._release`).
pub async fn release(
    cfg: Config,
    deadline: Duration,
    me: &str,
    term: u64,
    candidate: Option<&str>,
) -> Result<bool, String> {
    let sql = "SELECT pgkeeper._release($1::text, $2::bigint, $3::text)";
    query_one(cfg, deadline, sql, &[&me, &(term as i64), &candidate]).await.map(|r| r.get(0))
}

/// Hand node_info to a witness (`pgkeeper._witness_sync`): it has no replica of the table.
pub async fn push_registry(
    cfg: Config,
    deadline: Duration,
    nodes: &[keeper_core::Node],
    membership: keeper_core::membership::Version,
) -> Result<i32, String> {
    let seqnos: Vec<i32> = nodes.iter().map(|n| n.seqno).collect();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let conninfos: Vec<String> = nodes.iter().map(|n| n.conninfo.clone()).collect();
    let flags = |f: fn(&keeper_core::Node) -> bool| nodes.iter().map(f).collect::<Vec<bool>>();
    let (m, x, s, w) =
        (flags(|n| n.is_master), flags(|n| n.is_nextmaster), flags(|n| n.is_sync), flags(|n| n.is_witness));
    let row = query_one(
        cfg,
        deadline,
        "SELECT pgkeeper._witness_sync($1::int[], $2::text[], $3::text[], $4::bool[], $5::bool[], $6::bool[], $7::bool[], $8::bigint)",
        &[&seqnos, &names, &conninfos, &m, &x, &s, &w, &(membership as i64)],
    )
    .await?;
    Ok(row.get::<i32>(0))
}

/// What a standby said when asked to poll the master for us.
#[derive(Debug, Clone, Copy)]
pub struct ViaAnswer {
    /// It reached the master.
    pub reached: bool,
    /// What it says of itself (role, gate, term).
    pub me: keeper_core::election::PeerAnswer,
}

/// Indirect poll: ask `via` to poll `target_conninfo` within `nested` (passed as parameters,
/// never pasted into SQL); `require_master`: only a writable target counts as reached. Err
/// when `via` itself did not answer.
pub async fn poll_via(
    via: Config,
    target_conninfo: &str,
    deadline: Duration,
    nested: Duration,
    require_master: bool,
) -> Result<ViaAnswer, String> {
    let ms = nested.as_millis().clamp(1, 60_000) as i32;
    let row = query_one(
        via,
        deadline,
        "SELECT pgkeeper.indirect_polling($1::text, $2::integer, $3::boolean), \
         p.in_recovery, p.fenced, p.term, p.witness, p.deposed, p.elected, p.membership \
         FROM pgkeeper._poll() p",
        &[&target_conninfo, &ms, &require_master],
    )
    .await?;
    Ok(ViaAnswer { reached: row.get(0), me: peer_answer(&row, 1) })
}

/// A promoted node's timeline and its newest timeline history file
/// (`pgkeeper._timeline_history()`, which pgkeeper_agent may call): (timeline, history; None
/// when it has none).
pub async fn fork_point(cfg: Config, deadline: Duration) -> Result<(u32, Option<String>), String> {
    let row = query_one(cfg, deadline, "SELECT timeline, history FROM pgkeeper._timeline_history()", &[]).await?;
    Ok((row.get::<i64>(0) as u32, row.get::<Option<String>>(1)))
}

/// Run `fut` to completion unless `cancel` says stop (checked every 20 ms): a black-holed
/// peer can delay the loop at most until its probe's deadline, and SIGTERM not at all.
pub fn block_on_cancellable<F: std::future::Future>(
    rt: &tokio::runtime::Runtime,
    fut: F,
    mut cancel: impl FnMut() -> bool,
) -> Option<F::Output> {
    rt.block_on(async move {
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = tick.tick() => if cancel() { return None },
            }
        }
    })
}
