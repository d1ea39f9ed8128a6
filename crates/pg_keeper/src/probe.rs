//! Outgoing probes: every network call pg_keeper makes, each under one deadline covering
//! connect, authentication and query (tokio-postgres' connect_timeout alone covers only the
//! TCP connect). Runs on a current-thread tokio runtime on the calling thread; no pg_sys call
//! is made from here.
//!
//! Connections are kept and reused (issue 4/7: a fresh connection is a backend fork and an
//! authentication on the node asked, every probe, every round). The deadline covers the
//! query on a reused connection exactly as on a new one, so a frozen or black-holed peer
//! still fails its probe in time; a connection that failed or timed out is dropped (its task
//! aborted, its socket closed), and one the peer closed meanwhile (a restart) is replaced by
//! a fresh connection within the same deadline. Each process (the worker, a backend running
//! an indirect poll) keeps at most one connection per conninfo.

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

/// Name this process's connections carry, so they are easy to tell apart in pg_stat_activity.
const APP_NAME: &str = "pg_keeper";

/// The process's runtime (current-thread: driven only while a probe runs on this thread), for
/// its life: the kept connections' tasks live on it. Created on first use, never in the
/// postmaster (which would hand it to every forked child).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime"))
}

/// A kept connection: the client, the task that drives its socket, the statements prepared
/// on it (the node asked then neither parses nor plans them again), and when it was made.
struct Kept {
    client: Client,
    task: tokio::task::JoinHandle<()>,
    statements: HashMap<&'static str, Statement>,
    born: Instant,
}

impl Kept {
    async fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let stmt = match self.statements.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(sql).await?;
                self.statements.insert(sql, s.clone());
                s
            }
        };
        let r = self.client.query_one(&stmt, params).await;
        if r.is_err() {
            // (a statement whose result type changed, or one a pooler lost, would fail for
            // ever: prepare it again next time)
            self.statements.remove(sql);
        }
        r
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        // Closes the socket without waiting for the peer (at the next time the runtime runs:
        // a current-thread runtime only schedules the cancellation).
        self.task.abort();
    }
}

thread_local! {
    static KEPT: RefCell<HashMap<String, Kept>> = RefCell::new(HashMap::new());
}

/// The pool's key: every setting the connection was made with (tokio-postgres' Debug hides
/// the password: a hash of it is added, so another password is another connection).
fn key(cfg: &Config) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cfg.get_password().hash(&mut h);
    format!("{cfg:?} {:x}", h.finish())
}

fn take(key: &str) -> Option<Kept> {
    KEPT.with(|k| k.borrow_mut().remove(key))
}

/// At most this many kept connections per process (a session calling indirect_polling with
/// many conninfos must not pile up connections; a cluster has far fewer nodes).
const MAX_KEPT: usize = 64;

/// Keep `c` for the next probe with this key, unless it is closed or has lived its time; and
/// drop every other connection that has (a node deleted from node_info, an old conninfo).
fn keep(key: String, c: Kept, max_age: Duration) {
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        k.retain(|_, other| other.born.elapsed() < max_age);
        if !c.client.is_closed() && c.born.elapsed() < max_age && (k.len() < MAX_KEPT || k.contains_key(&key)) {
            k.insert(key, c);
        }
    });
}

fn os_user() -> String {
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return "postgres".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}

/// Parse a conninfo the way pg_keeper connects with it (libpq defaults for user filled in).
pub fn config(conninfo: &str, dbname: Option<&str>) -> Result<Config, String> {
    let mut cfg = Config::from_str(conninfo).map_err(|e| format!("invalid conninfo: {e}"))?;
    if cfg.get_user().is_none() {
        cfg.user(os_user());
    }
    if let Some(db) = dbname {
        cfg.dbname(db);
    }
    cfg.application_name(APP_NAME);
    // The backends that serve pg_keeper's probes run small queries the JIT would only slow
    // down (its compile time was most of their CPU). Appended to the node's own options.
    let options = match cfg.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{o} -c jit=off"),
        _ => "-c jit=off".to_string(),
    };
    cfg.options(&options);
    Ok(cfg)
}

/// An error with its causes ("error connecting to server: Connection refused (os error 111)").
fn describe(e: tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The server ended or is ending the session (FATAL or PANIC, a shutdown, `idle_session_timeout`,
/// `pg_terminate_backend`, a connection exception): the connection is finished, though the
/// error came from the server. Also a prepared statement the server no longer has or whose
/// result type changed (0A000, 26000): a new connection prepares it afresh.
fn connection_finished(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else { return true };
    let code = db.code().code();
    matches!(db.severity(), "FATAL" | "PANIC")
        || code.starts_with("08")
        || code.starts_with("57P")
        || code == "0A000"
        || code == "26000"
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
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, String> {
    let started = Instant::now();
    let max_age = keeper_core::timing::CONNECTION_MAX_AGE;
    let key = key(&cfg);
    let work = async {
        if let Some(mut c) = take(&key) {
            match c.query_one(sql, params).await {
                Ok(row) => {
                    keep(key, c, max_age);
                    return Ok(row);
                }
                Err(e) if !connection_finished(&e) => {
                    keep(key, c, max_age);
                    return Err(describe(e));
                }
                // Finished (a restart, a shutdown, idle_session_timeout): a new connection.
                Err(_) => drop(c),
            }
        }
        let mut cfg = cfg;
        cfg.connect_timeout(deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1)));
        let (client, connection) = cfg.connect(NoTls).await.map_err(describe)?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut c = Kept { client, task, statements: HashMap::new(), born: Instant::now() };
        match c.query_one(sql, params).await {
            Ok(row) => {
                keep(key, c, max_age);
                Ok(row)
            }
            Err(e) => {
                if !connection_finished(&e) {
                    keep(key, c, max_age);
                }
                Err(describe(e))
            }
        }
    };
    // On the deadline the work is dropped, and with it the connection it had taken.
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
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
fn peer_answer(row: &tokio_postgres::Row, first: usize) -> keeper_core::election::PeerAnswer {
    keeper_core::election::PeerAnswer {
        in_recovery: row.get(first),
        fenced: row.get(first + 1),
        term: row.get::<_, i64>(first + 2).max(0) as u64,
        witness: row.get(first + 3),
        deposed: row.get(first + 4),
        elected: row.get(first + 5),
        membership: row.get::<_, i64>(first + 6).max(0) as u64,
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
        term: row.get::<_, i64>(1).max(0) as u64,
        lsn: row.get::<_, Option<String>>(2).and_then(|s| keeper_core::lsn::parse(&s)),
        tli: row.get::<_, i64>(4).clamp(0, u32::MAX as i64) as u32,
        reason: row.get::<_, Option<String>>(3).unwrap_or_default(),
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
    Ok(row.get::<_, i32>(0))
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
/// never pasted into SQL). Err when `via` itself did not answer.
pub async fn poll_via(
    via: Config,
    target_conninfo: &str,
    deadline: Duration,
    nested: Duration,
) -> Result<ViaAnswer, String> {
    let ms = nested.as_millis().clamp(1, 60_000) as i32;
    let row = query_one(
        via,
        deadline,
        "SELECT pgkeeper.indirect_polling($1::text, $2::integer, true), \
         p.in_recovery, p.fenced, p.term, p.witness, p.deposed, p.elected, p.membership \
         FROM pgkeeper._poll() p",
        &[&target_conninfo, &ms],
    )
    .await?;
    Ok(ViaAnswer { reached: row.get(0), me: peer_answer(&row, 1) })
}

/// A promoted node's timeline and its newest timeline history file (needs superuser or
/// pg_read_server_files on that node): (timeline, history; None when it has none).
pub async fn fork_point(cfg: Config, deadline: Duration) -> Result<(u32, Option<String>), String> {
    let row = query_one(
        cfg,
        deadline,
        "SELECT ('x' || t)::bit(32)::bigint, pg_catalog.pg_read_file('pg_wal/' || t || '.history', 0, 1048576, true) \
         FROM (SELECT substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8) AS t) s",
        &[],
    )
    .await?;
    Ok((row.get::<_, i64>(0) as u32, row.get::<_, Option<String>>(1)))
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
