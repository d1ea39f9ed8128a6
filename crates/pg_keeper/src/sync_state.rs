//! Master mode's synchronous-replication guard, the adapter side: observations from
//! pg_stat_replication, pg_file_settings and this round's polls; keeper-core's SyncGuard
//! decides; ALTER SYSTEM carries it out. While degraded, the configured value is kept in a
//! file in the data directory, so that it survives restarts of the worker and the server.

use crate::worker::{now_ms, Worker};
use crate::{actions, shared};
use keeper_core::sync_guard::{SyncAction, SyncGuard};
use keeper_core::SyncConfig;
use pgrx::prelude::*;
use std::path::PathBuf;

/// What is remembered while degraded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Degraded {
    /// The value to put back.
    pub configured: String,
    /// The value in the configuration files other than postgresql.auto.conf when we degraded
    /// (to notice an operator's edit of postgresql.conf, and to restore with RESET when the
    /// configured value came from there).
    pub file_value: Option<String>,
    pub since_ms: i64,
    pub reason: String,
}

/// Named after the node: pg_basebackup and pg_rewind copy the data directory, and a copy of
/// another node's record must not be taken for this node's.
fn state_path(me: &str) -> PathBuf {
    let dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
    PathBuf::from(dir).join(format!("pg_keeper.{me}.sync_state"))
}

fn load(me: &str) -> Option<Degraded> {
    let text = std::fs::read_to_string(state_path(me)).ok()?;
    let mut d = Degraded { configured: String::new(), file_value: None, since_ms: 0, reason: String::new() };
    for line in text.lines() {
        let (k, v) = line.split_once('\t')?;
        match k {
            "configured" => d.configured = v.to_string(),
            "file_value" => d.file_value = Some(v.to_string()),
            "since_ms" => d.since_ms = v.parse().unwrap_or(0),
            "reason" => d.reason = v.to_string(),
            _ => {}
        }
    }
    Some(d)
}

/// Written durably (`votes::durable_write`): the record must exist before
/// synchronous_standby_names is cleared.
fn save(me: &str, d: &Degraded) -> Result<(), String> {
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let mut text = format!("configured\t{}\n", clean(&d.configured));
    if let Some(fv) = &d.file_value {
        text.push_str(&format!("file_value\t{}\n", clean(fv)));
    }
    text.push_str(&format!("since_ms\t{}\nreason\t{}\n", d.since_ms, clean(&d.reason)));
    crate::votes::durable_write(&state_path(me), &text)
}

fn remove(me: &str) {
    let _ = std::fs::remove_file(state_path(me));
}

/// `synchronous_standby_names` as this process sees it now (its GUC value: no query).
pub(crate) fn sync_names_now() -> String {
    crate::actions::config_option(c"synchronous_standby_names")
}

/// What master mode reads once per round for the guard and for node_info.
pub(crate) struct Observation {
    /// Standbys pg_stat_replication shows as `streaming` (connected and caught up).
    pub streaming: Vec<String>,
}

/// synchronous_standby_names in the files other than postgresql.auto.conf. Read only while
/// degraded or when degrading: pg_file_settings parses every configuration file, which was
/// the largest part of an idle master round's CPU.
fn file_value() -> Result<Option<String>, String> {
    crate::tx::transaction(|| {
        Spi::connect(|c| {
            let rows = c.select(
                "SELECT setting FROM pg_catalog.pg_file_settings \
                 WHERE name = 'synchronous_standby_names' AND error IS NULL \
                   AND sourcefile NOT LIKE '%/postgresql.auto.conf' \
                 ORDER BY seqno DESC LIMIT 1",
                None,
                &[],
            )?;
            // (no file sets it: None, not an error)
            if rows.is_empty() {
                return Ok(None);
            }
            rows.first().get_one::<String>()
        })
    })
    .map_err(|e| e.to_string())
}

pub(crate) fn observe() -> Result<Observation, String> {
    crate::tx::transaction(|| {
        Spi::connect(|c| {
            let mut streaming = Vec::new();
            for row in crate::plans::select(
                c,
                "SELECT application_name FROM pg_catalog.pg_stat_replication WHERE state = 'streaming'",
            )? {
                streaming.push(row.get::<String>(1)?.unwrap_or_default());
            }
            Ok::<_, pgrx::spi::Error>(Observation { streaming })
        })
    })
    .map_err(|e| e.to_string())
}

/// ALTER SYSTEM, then reload: the postmaster and every backend re-read the files, and this
/// worker does it at once so that its next reading already sees the new value.
fn set_sync_names(value: Option<&str>) -> Result<(), String> {
    actions::alter_system("synchronous_standby_names", value)?;
    actions::reload_config();
    unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    Ok(())
}

fn publish(state: u8, since_ms: i64, reason: &str) {
    let mut st = shared::STATE.exclusive();
    st.sync_state = state;
    st.sync_since_ms = since_ms;
    shared::put_str(&mut st.sync_reason, reason);
}

impl Worker {
    /// One round of the guard. `unanswered`: registered nodes that did not answer this
    /// round's poll (a hung standby can look 'streaming' in pg_stat_replication until
    /// wal_sender_timeout). Standbys not registered in node_info count as pg_stat_replication
    /// shows them: pg_keeper does not poll them, and must not degrade for lack of a poll.
    /// `answered`: those that did (a listed one not streaming yet may be re-pointing to a new
    /// master: `SyncGuard::on_master_round`). `reaches_majority`: this master reached a
    /// majority of the registered nodes (itself included) this round; without it the guard
    /// never degrades (see keeper-core).
    pub(crate) fn guard_sync(
        &mut self,
        me: &str,
        obs: &Observation,
        unanswered: &[String],
        answered: &[String],
        reaches_majority: bool,
    ) {
        let current = sync_names_now();
        if self.sync_guard.is_none() {
            self.degraded = load(me);
            self.sync_guard = Some(SyncGuard::new(self.degraded.as_ref().map(|d| d.reason.clone())));
        }
        // The operator's word while degraded wins.
        if let Some(d) = self.degraded.clone() {
            if !current.is_empty() {
                log!("pg_keeper: synchronous_standby_names was set to {current:?} while degraded; it is the value to keep from now on");
                remove(me);
                self.degraded = None;
                self.sync_guard = Some(SyncGuard::new(None));
            } else if let Some(file_value) = file_value().ok().filter(|f| *f != d.file_value) {
                let new = file_value.clone().unwrap_or_default();
                log!("pg_keeper: synchronous_standby_names changed in the configuration file while degraded: {new:?} will be restored");
                let d = Degraded { configured: new, file_value, ..d };
                if let Err(e) = save(me, &d) {
                    warning!("pg_keeper: cannot record the synchronous replication state: {e}");
                }
                self.degraded = Some(d);
            }
        }
        let configured = self.degraded.as_ref().map(|d| d.configured.clone()).unwrap_or(current.clone());
        let cfg = match SyncConfig::parse(&configured) {
            Ok(c) => c,
            Err(e) => {
                self.notice_once(format!("pg_keeper: synchronous replication guard off: {e}"));
                publish(3, 0, &e.to_string());
                return;
            }
        };
        let streaming: Vec<&str> = obs
            .streaming
            .iter()
            .map(String::as_str)
            .filter(|s| !unanswered.iter().any(|a| a.eq_ignore_ascii_case(s)))
            .collect();
        let guard = self.sync_guard.as_mut().expect("initialised above");
        let mut holding = None;
        let answering: Vec<&str> = answered.iter().map(String::as_str).collect();
        match guard.on_master_round(
            cfg.as_ref(),
            &streaming,
            &answering,
            self.master_since.elapsed(),
            self.settings.keepalive_time,
            self.settings.keepalive_count,
            reaches_majority,
        ) {
            SyncAction::None => {}
            SyncAction::Hold { reason } => {
                self.notice_once(format!("pg_keeper: {reason}"));
                holding = Some(reason);
            }
            SyncAction::Degrade { reason } => {
                let file_value = match file_value() {
                    Ok(v) => v,
                    Err(e) => {
                        // Without it the restore could not tell RESET from SET: not this round.
                        warning!("pg_keeper: not degrading synchronous replication: cannot read pg_file_settings: {e}");
                        self.sync_guard = Some(SyncGuard::new(None));
                        return;
                    }
                };
                let d =
                    Degraded { configured: configured.clone(), file_value, since_ms: now_ms(), reason: reason.clone() };
                if let Err(e) = save(me, &d) {
                    // Without the record the value could not be restored: do not degrade.
                    warning!(
                        "pg_keeper: not degrading synchronous replication: cannot record the configured value: {e}"
                    );
                    self.sync_guard = Some(SyncGuard::new(None));
                    return;
                }
                match set_sync_names(Some("")) {
                    Ok(()) => {
                        log!(
                            "pg_keeper: synchronous replication degraded to asynchronous: {reason}; synchronous_standby_names was {configured:?} and will be restored when enough of its standbys stream again"
                        );
                        let term = shared::STATE.share().term;
                        crate::history::record(
                            keeper_core::history::Kind::Degraded,
                            term,
                            &[me],
                            &format!("{reason}; synchronous_standby_names was {configured:?}"),
                        );
                        self.degraded = Some(d);
                    }
                    Err(e) => {
                        warning!("pg_keeper: cannot degrade synchronous replication: {e}");
                        remove(me);
                        self.sync_guard = Some(SyncGuard::new(None));
                    }
                }
            }
            SyncAction::Restore { reason } => {
                let d = self.degraded.clone().expect("restore only while degraded");
                // From postgresql.conf: drop our override; from ALTER SYSTEM: set it back.
                let value =
                    if Some(&d.configured) == d.file_value.as_ref() { None } else { Some(d.configured.as_str()) };
                match set_sync_names(value) {
                    Ok(()) => {
                        log!("pg_keeper: synchronous replication restored ({:?}): {reason}", d.configured);
                        let term = shared::STATE.share().term;
                        crate::history::record(
                            keeper_core::history::Kind::Restored,
                            term,
                            &[me],
                            &format!("{reason}; synchronous_standby_names is {:?} again", d.configured),
                        );
                        remove(me);
                        self.degraded = None;
                    }
                    Err(e) => {
                        warning!("pg_keeper: cannot restore synchronous replication: {e}");
                        self.sync_guard = Some(SyncGuard::new(Some(d.reason.clone())));
                    }
                }
            }
        }
        match (&self.degraded, cfg.is_some()) {
            (Some(d), _) => publish(2, d.since_ms, &d.reason),
            (None, true) => publish(1, 0, holding.as_deref().unwrap_or("")),
            (None, false) => publish(0, 0, ""),
        }
    }
}
