//! The HTTP endpoints (`pg_keeper.http_listen`): health checks for load balancers and
//! Kubernetes, `/metrics` for Prometheus, `/cluster` as JSON. A background worker of its own,
//! so no client of it can slow the pg_keeper worker's rounds or any commit: it reads shared
//! memory (one shared lock, copied out) and never opens a transaction. What each path answers
//! is decided in `keeper_core::health`.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] at a time (more are closed at once), the request head
//! must arrive within [`HEAD_TIMEOUT`] and fit in [`MAX_HEAD_BYTES`], every connection is closed
//! after one request or [`CONNECTION_TIMEOUT`].

use crate::{gucs, shared};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use keeper_core::health::{self, Endpoint, NodeView, Role};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const MAX_CONNECTIONS: usize = 32;
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's smallest read buffer: a request head larger than this is refused (431).
const MAX_HEAD_BYTES: usize = 8192;

pub fn register() {
    if gucs::http_listen().is_none() {
        return;
    }
    BackgroundWorkerBuilder::new("pg_keeper http")
        .set_type("pg_keeper http")
        .set_library("pg_keeper")
        .set_function("pg_keeper_http_main")
        // From the start of the postmaster's consistent state, as the worker: a standby
        // answers as soon as it accepts read-only connections.
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_keeper_http_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(listen) = gucs::http_listen() else { return };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            warning!("pg_keeper: HTTP endpoints: cannot start: {e}");
            return;
        }
    };
    // Handlers run on this thread (a current-thread runtime, no spawn_blocking): PostgreSQL's
    // shared memory and locks are touched from the process's main thread only.
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(listen));
    drop(local);
    drop(rt);
    // Exit code 1, whatever the reason: the postmaster starts this worker again in 5 s (after
    // a failed bind, or a pg_terminate_backend), except when it is shutting down.
    unsafe { pg_sys::proc_exit(1) };
}

/// Serve until SIGTERM or the postmaster's death, or until it cannot listen.
async fn serve(listen: String) {
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            warning!("pg_keeper: HTTP endpoints: cannot listen on {listen:?} (pg_keeper.http_listen): {e}; retrying in 5 s");
            return;
        }
    };
    log!("pg_keeper: HTTP endpoints listening on {listen}");
    let open = Rc::new(AtomicUsize::new(0));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // (out of file descriptors, say: do not spin)
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let slot = Slot::take(&open);
                tokio::task::spawn_local(async move {
                    let _slot = slot;
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEAD_TIMEOUT)
                        .max_buf_size(MAX_HEAD_BYTES)
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service_fn(answer));
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                });
            }
            _ = tick.tick() => {
                if BackgroundWorker::sigterm_received() || unsafe { libc::getppid() != pg_sys::PostmasterPid } {
                    return;
                }
                if BackgroundWorker::sighup_received() {
                    unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
                }
            }
        }
    }
}

/// One of the [`MAX_CONNECTIONS`], given back however the connection ends.
struct Slot(Rc<AtomicUsize>);
impl Slot {
    fn take(open: &Rc<AtomicUsize>) -> Slot {
        open.fetch_add(1, Ordering::Relaxed);
        Slot(open.clone())
    }
}
impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let head = req.method() == hyper::Method::HEAD;
    let (code, kind, body) = match health::route(req.method().as_str(), req.uri().path(), req.uri().query()) {
        Err(refused) => {
            let msg = match &refused {
                health::Refused::BadRequest(m) => m.clone(),
                health::Refused::NotFound => "no such endpoint".into(),
                health::Refused::MethodNotAllowed => "only GET, HEAD and OPTIONS".into(),
            };
            (refused.status(), "text/plain; charset=utf-8", msg + "\n")
        }
        Ok(endpoint) => {
            let snap = Snapshot::take();
            match endpoint {
                Endpoint::Metrics => {
                    (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", crate::metrics::encode(&snap))
                }
                Endpoint::Cluster => (200, "application/json", snap.json().to_string() + "\n"),
                e => {
                    let code = health::status(e, &snap.view);
                    (code, "application/json", snap.json().to_string() + "\n")
                }
            }
        }
    };
    let mut resp = Response::new(Full::new(if head { Bytes::new() } else { Bytes::from(body) }));
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(kind));
    Ok(resp)
}

/// The node as one request sees it.
pub struct Snapshot {
    pub st: shared::KeeperState,
    pub gate: shared::Gate,
    pub view: NodeView,
    pub node_name: Option<String>,
    /// A standby's master end of WAL as last reported, and its replay position.
    pub reported_end: u64,
    pub replay_lsn: u64,
}

impl Snapshot {
    pub fn take() -> Snapshot {
        let in_recovery = unsafe { pg_sys::RecoveryInProgress() };
        let witness = gucs::WITNESS.get();
        let node_name = gucs::node_name();
        let gate = if node_name.is_none() || witness || in_recovery { shared::Gate::Open } else { shared::gate() };
        let st = *shared::STATE.share();
        let (streaming, latest_end) = wal_receiver();
        let replay_lsn = if in_recovery { unsafe { pg_sys::GetXLogReplayRecPtr(std::ptr::null_mut()) } } else { 0 };
        let now_ms = crate::worker::now_ms();
        let role = if witness {
            Role::Witness
        } else if in_recovery {
            Role::Standby
        } else if node_name.is_some() && st.mode == 1 {
            Role::Master
        } else {
            Role::Other
        };
        let since = (st.last_round_ms > 0).then(|| Duration::from_millis((now_ms - st.last_round_ms).max(0) as u64));
        let keepalive = Duration::from_secs_f64(gucs::KEEPALIVE_TIME.get().max(gucs::MIN_KEEPALIVE_TIME));
        let view = NodeView {
            role,
            gate_open: matches!(gate, shared::Gate::Open),
            streaming: in_recovery && streaming,
            lag_bytes: (in_recovery && latest_end > 0).then(|| latest_end.saturating_sub(replay_lsn)),
            worker_live: health::worker_live(st.worker_pid > 0, since, keepalive),
            paused: st.cluster_paused,
        };
        Snapshot { st, gate, view, node_name, reported_end: latest_end, replay_lsn }
    }

    pub fn role_name(&self) -> &'static str {
        match self.view.role {
            Role::Master => "master",
            Role::Standby => "standby",
            Role::Witness => "witness",
            Role::Other => "other",
        }
    }

    /// `/cluster`: this node's `status()`, as JSON.
    pub fn json(&self) -> serde_json::Value {
        let st = &self.st;
        let epoch = |ms: i64| (ms > 0).then(|| ms as f64 / 1000.0);
        let peers: Vec<serde_json::Value> = st.peers[..(st.npeers as usize).min(shared::MAX_PEERS)]
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": shared::get_str(&p.name),
                    "result": match p.result { 1 => "ok", 2 => "failed", _ => "unknown" },
                    "latency_ms": p.latency_us as f64 / 1000.0,
                    "last_ok": epoch(p.last_ok_ms),
                    "error": shared::get_str(&p.error),
                })
            })
            .collect();
        serde_json::json!({
            "node_name": self.node_name,
            "role": self.role_name(),
            "mode": shared::mode_name(st.mode),
            "state": shared::get_str(&st.state),
            "commits": self.gate.describe(),
            "gate": self.gate.kind().as_str(),
            "term": st.term,
            "failed_rounds": st.failed_rounds,
            "rounds": st.rounds,
            "last_round": epoch(st.last_round_ms),
            "last_failover": epoch(st.last_failover_ms),
            "sync_state": shared::sync_state_name(st.sync_state),
            "paused": st.cluster_paused,
            "streaming": self.view.streaming,
            "lag_bytes": self.view.lag_bytes,
            "master_wal_end": (self.reported_end > 0).then(|| keeper_core::lsn::format(self.reported_end)),
            "replayed": (self.replay_lsn > 0).then(|| keeper_core::lsn::format(self.replay_lsn)),
            "worker_live": self.view.worker_live,
            "peers": peers,
        })
    }
}

/// The WAL receiver: streaming now, and the master's end of WAL it last heard of. Read
/// without its spinlock, as aligned 4- and 8-byte loads (a health check, not a decision).
fn wal_receiver() -> (bool, u64) {
    unsafe {
        let w = pg_sys::WalRcv;
        if w.is_null() {
            return (false, 0);
        }
        let state = (&raw const (*w).walRcvState).read_volatile();
        let end = (&raw const (*w).latestWalEnd).read_volatile();
        (state == pg_sys::WalRcvState::WALRCV_STREAMING, end)
    }
}
