//! The SQL API of the seed: add_node, del_node (by name and by seqno), indirect_polling,
//! indirect_kill; plus status(). Every function refuses bad input with a clear ERROR before
//! changing anything, and builds no SQL from its arguments.

use crate::{gucs, probe, registry_sql, shared};
use keeper_core::membership;
use keeper_core::registry::{self, diff, Selector};
use keeper_core::{RegistryError, SyncConfig};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::time::Duration;

/// How long add_node waits for the new node to answer.
use keeper_core::timing::ADD_NODE_DEADLINE;

pub(crate) fn fail(code: PgSqlErrorCode, msg: impl Into<String>, hint: Option<&str>) -> ! {
    let mut r = ErrorReport::new(code, msg.into(), function_name!());
    if let Some(h) = hint {
        r = r.set_hint(h);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!()
}

pub(crate) fn required<'a>(v: Option<&'a str>, what: &str) -> &'a str {
    match v {
        Some(s) => s,
        None => fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{what} must not be NULL"), None),
    }
}

fn registry_error(e: RegistryError) -> ! {
    use PgSqlErrorCode::*;
    let code = match &e {
        RegistryError::BadName(_) | RegistryError::BadConninfo(_) => ERRCODE_INVALID_PARAMETER_VALUE,
        RegistryError::DuplicateName(_) | RegistryError::DuplicateConninfo { .. } => ERRCODE_DUPLICATE_OBJECT,
        RegistryError::UnknownName(_) | RegistryError::UnknownSeqno(_) => ERRCODE_UNDEFINED_OBJECT,
        RegistryError::DeleteMaster(_) | RegistryError::WitnessFirst(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
    };
    fail(code, e.to_string(), None)
}

fn refuse_on_standby(func: &str) {
    if unsafe { pg_sys::RecoveryInProgress() } {
        fail(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("pgkeeper.{func} cannot run on a standby"),
            Some("Run it on the master; node_info replicates to the standbys."),
        );
    }
}

fn sync_config() -> Option<SyncConfig> {
    let value = crate::sync_state::sync_names_now();
    match SyncConfig::parse(&value) {
        Ok(c) => c,
        Err(e) => fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string(), None),
    }
}

/// Lock node_info against concurrent API calls (readers are not blocked), read it, let
/// `plan` compute the new rows, write the difference, and tell the local worker. A change of
/// membership (a node added or removed) bumps the membership version, and is made only once
/// the previous one has reached a majority of the nodes (`keeper_core::membership`).
fn change_registry(
    func: &str,
    plan: impl Fn(&[keeper_core::Node], Option<&SyncConfig>) -> Result<Vec<keeper_core::Node>, RegistryError>,
) {
    // Bad input is refused before anything waits (and checked again under the lock).
    let current = Spi::connect(registry_sql::read_registry)
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
        .unwrap_or_default();
    let planned = plan(&current.nodes, sync_config().as_ref()).unwrap_or_else(|e| registry_error(e));
    if membership::changes_membership(&current.nodes, &planned) {
        wait_for_previous_change(func, &current);
    }
    Spi::connect_mut(|client| {
        client
            .update("LOCK TABLE pgkeeper.node_info IN SHARE ROW EXCLUSIVE MODE", None, &[])
            .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None));
        let registry = registry_sql::read_registry(client)
            .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
            .unwrap_or_default();
        let sync = sync_config();
        let new = plan(&registry.nodes, sync.as_ref()).unwrap_or_else(|e| registry_error(e));
        if membership::changes_membership(&registry.nodes, &new) {
            if let Some(why) = previous_change_pending(&registry) {
                fail(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("pgkeeper.{func}: {why}"),
                    Some(PENDING_HINT),
                );
            }
        }
        if membership::changes_membership(&registry.nodes, &new) {
            // A gate open without a lease (two data nodes) must not outlive a change that
            // may let a third node vote: it closes as this transaction commits.
            crate::gate::membership_change_commits(registry.membership + 1);
        }
        let _guard = registry_sql::WriteGuard::open();
        registry_sql::apply(client, &diff(&registry.nodes, &new))
            .and_then(|()| match membership::changes_membership(&registry.nodes, &new) {
                true => registry_sql::bump_membership(client),
                false => Ok(()),
            })
            .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None));
    });
    shared::notify_worker(true, false);
}

const PENDING_HINT: &str = "One membership change at a time: wait until a majority of the nodes in node_info has replayed the last one (is a standby's replay paused, or are nodes down?), then retry.";

/// Why the previous membership change is not in effect yet (None: it is). Alone in node_info
/// (or with nothing registered) the master is its own majority.
fn previous_change_pending(registry: &registry_sql::Registry) -> Option<String> {
    let me = gucs::node_name();
    let alone = registry.nodes.iter().all(|n| Some(&n.name) == me.as_ref());
    if alone || !shared::available() {
        return None;
    }
    let acked = shared::STATE.share().membership_acked;
    (acked < registry.membership).then(|| {
        format!(
            "the previous membership change (version {}) has not reached a majority of the {} nodes yet",
            registry.membership,
            registry.nodes.len()
        )
    })
}

/// Before taking the lock: give the worker a few heartbeat rounds to see the previous change
/// reach a majority (right after a change it usually takes one round), waking it each time.
fn wait_for_previous_change(func: &str, registry: &registry_sql::Registry) {
    let limit = keeper_core::timing::membership_change_wait(keepalive_time());
    let started = std::time::Instant::now();
    let mut woke = std::time::Instant::now() - Duration::from_secs(1);
    while let Some(why) = previous_change_pending(registry) {
        if started.elapsed() > limit {
            fail(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("pgkeeper.{func}: {why} (waited {:.1} s)", limit.as_secs_f64()),
                Some(PENDING_HINT),
            );
        }
        if woke.elapsed() > Duration::from_millis(200) {
            shared::notify_worker(true, false);
            woke = std::time::Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
        pg_sys::check_for_interrupts!();
    }
}

/// Register a node. The first node registered is the master. A witness (`is_witness`) is a
/// server with pg_keeper.witness = on: it votes and answers polls, never holds data.
#[pg_extern(volatile, parallel_unsafe)]
fn add_node(node_name: Option<&str>, conninfo: Option<&str>, is_witness: default!(Option<bool>, "false")) -> bool {
    let name = required(node_name, "node_name");
    let conninfo = required(conninfo, "conninfo");
    let Some(witness) = is_witness else {
        fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "is_witness must not be NULL", None)
    };
    refuse_on_standby("add_node");
    // Check name, conninfo and duplicates before any network traffic (checked again under
    // the table lock below), then that the node answers.
    let current = Spi::connect(registry_sql::read_nodes)
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
        .unwrap_or_default();
    if let Err(e) = registry::add(&current, name, conninfo, witness, None, &keeper_pq::conninfo::node) {
        registry_error(e);
    }
    let cfg = probe::config(conninfo, Some(&gucs::database()))
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, None));
    let rt = probe::runtime();
    if let Err(e) = rt.block_on(probe::poll(cfg.clone(), ADD_NODE_DEADLINE)) {
        fail(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!("node \"{name}\" does not answer on the given conninfo: {e}"),
            Some("Check that the server runs and that this server can connect to it with that conninfo."),
        );
    }
    // A standby may not have replayed CREATE EXTENSION yet: only a witness must answer
    // pgkeeper._poll now (it has its own, unreplicated, extension).
    let said_witness = rt.block_on(probe::state(cfg, ADD_NODE_DEADLINE, None)).map(|s| s.answer.witness);
    match (witness, said_witness) {
        (true, Ok(true)) | (false, Ok(false)) | (false, Err(_)) => {}
        (true, Ok(false)) | (true, Err(_)) => fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "node \"{name}\" is not a witness: set pg_keeper.witness = on there and run CREATE EXTENSION pg_keeper in pg_keeper.database"
            ),
            None,
        ),
        (false, Ok(true)) => fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("node \"{name}\" is a witness: register it with is_witness => true"),
            None,
        ),
    }
    change_registry("add_node", |nodes, sync| registry::add(nodes, name, conninfo, witness, sync, &keeper_pq::conninfo::node));
    true
}

/// Remove a standby by name.
#[pg_extern(name = "del_node", volatile, parallel_unsafe)]
fn del_node_by_name(node_name: Option<&str>) -> bool {
    let name = required(node_name, "node_name");
    refuse_on_standby("del_node");
    change_registry("del_node", |nodes, sync| registry::delete(nodes, Selector::Name(name), sync));
    true
}

/// Remove a standby by seqno.
#[pg_extern(name = "del_node", volatile, parallel_unsafe)]
fn del_node_by_seqno(seqno: Option<i32>) -> bool {
    let Some(seqno) = seqno else {
        fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "seqno must not be NULL", None)
    };
    refuse_on_standby("del_node");
    change_registry("del_node", |nodes, sync| registry::delete(nodes, Selector::Seqno(seqno), sync));
    true
}

/// Default deadline of an indirect poll: half the polling interval, so that the caller's own
/// deadline (a little under keepalive_time) always covers it; never above 10 s.
fn default_poll_deadline() -> Duration {
    keeper_core::timing::indirect_poll_deadline(keepalive_time())
}

/// Poll the server at `conninfo` from this server. True when it answered within the deadline.
#[pg_extern(volatile, parallel_safe)]
fn indirect_polling(
    conninfo: Option<&str>,
    timeout_ms: default!(Option<i32>, "NULL"),
    require_master: default!(bool, false),
) -> bool {
    let conninfo = required(conninfo, "conninfo");
    if let Err(e) = keeper_pq::conninfo::node(conninfo) {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string(), None);
    }
    let may = Spi::connect(|c| {
        c.select("SELECT pgkeeper._may_connect($1, current_user)", None, &[conninfo.into()])?.first().get_one::<bool>()
    });
    if !matches!(may, Ok(Some(true))) {
        fail(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "permission denied to poll a server that is not a registered node",
            Some("Members of pgkeeper_agent may poll only a conninfo in pgkeeper.node_info; pgkeeper_admin members and superusers any."),
        );
    }
    let deadline = match timeout_ms {
        None => default_poll_deadline(),
        Some(ms) if (1..=60_000).contains(&ms) => Duration::from_millis(ms as u64),
        Some(ms) => fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("timeout_ms must be between 1 and 60000, not {ms}"),
            None,
        ),
    };
    if !require_master {
        let cfg = probe::config(conninfo, None)
            .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, None));
        return probe::runtime().block_on(probe::poll(cfg, deadline)).is_ok();
    }
    // A master only counts as reached when it accepts writes (not fenced, not a witness).
    let cfg = probe::config(conninfo, Some(&gucs::database()))
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, None));
    matches!(probe::runtime().block_on(probe::state(cfg, deadline, None)), Ok(s) if s.answer.writable())
}

/// The seed's way to tell the local worker about a change: 'SIGUSR1' reloads its view of
/// node_info, 'SIGUSR2' its settings. Returns false when no worker runs here.
#[pg_extern(volatile, parallel_unsafe)]
fn indirect_kill(signal: Option<&str>) -> bool {
    let signal = required(signal, "signal");
    match signal.trim().to_ascii_uppercase().as_str() {
        "SIGUSR1" | "USR1" => shared::notify_worker(true, false),
        "SIGUSR2" | "USR2" => shared::notify_worker(false, true),
        _ => fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown signal \"{signal}\""),
            Some("Use 'SIGUSR1' (reload node_info) or 'SIGUSR2' (reload settings)."),
        ),
    }
}

/// Pause automatic failover on this node for `seconds` (0 resumes it): a planned switchover
/// stops the master on purpose, and no standby may take that for a failure. Returns false
/// when no worker runs here.
#[pg_extern(volatile, parallel_unsafe)]
fn pause_failover(seconds: Option<i32>) -> bool {
    let Some(seconds) = seconds else {
        fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "seconds must not be NULL", None)
    };
    if !(0..=3600).contains(&seconds) {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("seconds must be between 0 and 3600, not {seconds}"),
            None,
        );
    }
    if !shared::available() {
        return false;
    }
    let until = if seconds == 0 { 0 } else { crate::worker::now_ms() + seconds as i64 * 1000 };
    let running = {
        let mut st = shared::STATE.exclusive();
        st.paused_until_ms = until;
        st.worker_pid > 0
    };
    if seconds > 0 {
        log!("pg_keeper: automatic failover paused for {seconds} s");
    } else {
        log!("pg_keeper: automatic failover resumed");
    }
    running
}

/// Cluster-wide maintenance mode on (`pgkeeper pause`): no standby stands for election by
/// itself until `resume()`. Written on the master, replicated: it holds on every node, and
/// across restarts. Planned switchovers and `pgkeeper failover` still work.
#[pg_extern(volatile, parallel_unsafe)]
fn pause(reason: default!(Option<&str>, "''")) -> bool {
    set_maintenance(true, reason.unwrap_or(""))
}

/// Cluster-wide maintenance mode off.
#[pg_extern(volatile, parallel_unsafe)]
fn resume() -> bool {
    set_maintenance(false, "")
}

/// Returns whether the mode changed.
fn set_maintenance(paused: bool, reason: &str) -> bool {
    refuse_on_standby(if paused { "pause" } else { "resume" });
    let changed = Spi::connect_mut(|c| {
        c.update(
            "UPDATE pgkeeper.maintenance SET paused = $1, since = now(), reason = nullif($2, '') WHERE paused IS DISTINCT FROM $1",
            None,
            &[paused.into(), reason.into()],
        )
        .map(|t| t.len() > 0)
    })
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None));
    if changed {
        // Said, recorded and told once the change is committed (a ROLLBACK, or a commit the
        // gate refuses, changes nothing).
        let reason = reason.to_string();
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
            let term = if shared::available() { shared::STATE.share().term } else { 0 };
            let (kind, what) = if paused {
                (keeper_core::history::Kind::Paused, "paused")
            } else {
                (keeper_core::history::Kind::Resumed, "resumed")
            };
            crate::history::record(kind, term, &[], &reason);
            log!(
                "pg_keeper: automatic failover {what} cluster-wide{}",
                if reason.is_empty() { String::new() } else { format!(": {reason}") }
            );
            shared::notify_worker(true, false);
        });
    }
    changed
}

/// Used by the trigger on node_info: true only inside add_node / del_node.
#[pg_extern(stable, parallel_safe)]
fn _api_write_allowed() -> bool {
    registry_sql::write_allowed()
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The local worker's live state (raw; `pgkeeper.status()` is the SQL face of it).
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn _status_raw() -> TableIterator<
    'static,
    (
        name!(node_name, Option<String>),
        name!(mode, String),
        name!(state, String),
        name!(failed_rounds, i32),
        name!(rounds, i64),
        name!(last_round_epoch, Option<f64>),
        name!(last_failover_epoch, Option<f64>),
        name!(worker_pid, Option<i32>),
        name!(peers, String),
        name!(sync_state, String),
        name!(sync_since_epoch, Option<f64>),
        name!(sync_reason, String),
        name!(term, i64),
        name!(commits, String),
        name!(gate, String),
        name!(attention, String),
        name!(paused, bool),
    ),
> {
    if !shared::available() {
        return TableIterator::once((
            gucs::node_name(),
            "not running".into(),
            "pg_keeper is not in shared_preload_libraries".into(),
            0,
            0,
            None,
            None,
            None,
            "[]".into(),
            "unknown".into(),
            None,
            String::new(),
            0,
            "open".into(),
            "open".into(),
            "none".into(),
            false,
        ));
    }
    let gate = if gucs::node_name().is_none() || gucs::WITNESS.get() || unsafe { pg_sys::RecoveryInProgress() } {
        shared::Gate::Open
    } else {
        shared::gate()
    };
    let st = *shared::STATE.share();
    let epoch = |ms: i64| (ms > 0).then(|| ms as f64 / 1000.0);
    let peers: Vec<String> = st.peers[..(st.npeers as usize).min(shared::MAX_PEERS)]
        .iter()
        .map(|p| {
            format!(
                "{{\"name\":{},\"result\":{},\"latency_ms\":{:.1},\"last_ok\":{},\"error\":{}}}",
                json_str(&shared::get_str(&p.name)),
                json_str(match p.result {
                    1 => "ok",
                    2 => "failed",
                    _ => "unknown",
                }),
                p.latency_us as f64 / 1000.0,
                epoch(p.last_ok_ms).map(|e| format!("{e:.3}")).unwrap_or("null".into()),
                json_str(&shared::get_str(&p.error)),
            )
        })
        .collect();
    TableIterator::once((
        gucs::node_name(),
        shared::mode_name(st.mode).into(),
        shared::get_str(&st.state),
        st.failed_rounds as i32,
        st.rounds as i64,
        epoch(st.last_round_ms),
        epoch(st.last_failover_ms),
        (st.worker_pid > 0).then_some(st.worker_pid),
        format!("[{}]", peers.join(",")),
        shared::sync_state_name(st.sync_state).into(),
        epoch(st.sync_since_ms),
        shared::get_str(&st.sync_reason),
        st.term as i64,
        gate.describe(),
        gate.kind().as_str().into(),
        attention(&gate, st.attention).as_str().into(),
        st.cluster_paused,
    ))
}

/// A deposed master always needs a rejoin (automatic or not); the rest is what the worker's
/// last round found.
fn attention(gate: &shared::Gate, worker: u8) -> keeper_core::gate::Attention {
    match gate {
        shared::Gate::Deposed { .. } => keeper_core::gate::Attention::NeedsRejoin,
        _ => keeper_core::gate::Attention::from_code(worker),
    }
}

/// pg_keeper.keepalive_time as this backend sees it (at least the minimum).
fn keepalive_time() -> Duration {
    Duration::from_secs_f64(gucs::KEEPALIVE_TIME.get().max(gucs::MIN_KEEPALIVE_TIME))
}
