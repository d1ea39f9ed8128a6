//! Outgoing probes: every network call pg_keeper makes, each under one deadline covering
//! connect, authentication and query (tokio-postgres' connect_timeout alone covers only the
//! TCP connect). Runs on a current-thread tokio runtime on the calling thread; no pg_sys call
//! is made from here.

use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Config, NoTls};

/// Name this process's connections carry, so they are easy to tell apart in pg_stat_activity.
const APP_NAME: &str = "pg_keeper";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
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

/// Connect and run `f` on the client, all within `deadline`.
async fn with_client<T, F, Fut>(cfg: Config, deadline: Duration, f: F) -> Result<T, String>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    let mut cfg = cfg;
    cfg.connect_timeout(deadline);
    let work = async move {
        let (client, connection) = cfg.connect(NoTls).await.map_err(describe)?;
        // The connection is driven by its own task; aborting it when we are done (or when the
        // deadline fires) closes the socket without waiting for the peer.
        let conn_task = tokio::spawn(connection);
        let out = f(client).await.map_err(describe);
        conn_task.abort();
        out
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
    }
}

/// What a polled node said: how long it took and whether it is in recovery (a standby).
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub latency: Duration,
    pub in_recovery: bool,
}

/// Direct poll: `SELECT pg_is_in_recovery()` on the node.
pub async fn poll(cfg: Config, deadline: Duration) -> Result<Answer, String> {
    let start = Instant::now();
    let in_recovery = with_client(cfg, deadline, |c| async move {
        c.query_one("SELECT pg_catalog.pg_is_in_recovery()", &[]).await.map(|r| r.get::<_, bool>(0))
    })
    .await?;
    Ok(Answer { latency: start.elapsed(), in_recovery })
}

/// What a standby said when asked to poll the master for us.
#[derive(Debug, Clone, Copy)]
pub struct ViaAnswer {
    /// It reached the master.
    pub reached: bool,
    /// It is itself in recovery (false: it was promoted).
    pub in_recovery: bool,
}

/// Indirect poll: ask `via` to poll `target_conninfo` within `nested` (passed as parameters,
/// never pasted into SQL). Err when `via` itself did not answer.
pub async fn poll_via(
    via: Config,
    target_conninfo: &str,
    deadline: Duration,
    nested: Duration,
) -> Result<ViaAnswer, String> {
    let target = target_conninfo.to_string();
    let ms = nested.as_millis().clamp(1, 60_000) as i32;
    with_client(via, deadline, |c| async move {
        let row = c
            .query_one(
                "SELECT pgkeeper.indirect_polling($1::text, $2::integer, true), pg_catalog.pg_is_in_recovery()",
                &[&target, &ms],
            )
            .await?;
        Ok(ViaAnswer { reached: row.get(0), in_recovery: row.get(1) })
    })
    .await
}

/// The switch point of a promoted node's newest timeline, read from its history file
/// (needs superuser or pg_read_server_files on that node). None when it has no history.
pub async fn fork_point(cfg: Config, deadline: Duration) -> Result<Option<String>, String> {
    with_client(cfg, deadline, |c| async move {
        let row = c
            .query_one(
                "SELECT pg_catalog.pg_read_file('pg_wal/' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8) || '.history', 0, 1048576, true)",
                &[],
            )
            .await?;
        Ok(row.get::<_, Option<String>>(0))
    })
    .await
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
