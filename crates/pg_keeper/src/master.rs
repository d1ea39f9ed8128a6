//! Master mode: heartbeat every registered node, hold the lease that keeps the commit gate
//! open (`gate.rs`), stand down when a newer master exists, guard synchronous replication,
//! and keep node_info true to the topology (this node the master; the next master a
//! streaming standby; witnesses told).

use keeper_core::history::Kind;
use crate::registry_sql::{self, WriteGuard};
use crate::sync_state::{observe, sync_names_now};
use crate::worker::{shutdown_requested, Mode, PeerResult, Worker};
use crate::{gucs, probe, shared};
use futures_util::future::join_all;
use keeper_core::election::{master_lease, MasterVerdict, PeerAnswer};
use keeper_core::gate::Setting;
use keeper_core::heartbeat::{GateStep, LeaseNow, RoundEnd, RoundStart};
use keeper_core::membership;
use keeper_core::registry::{diff, master_view};
use keeper_core::{Node, SyncConfig};
use pgrx::prelude::*;
use std::time::Duration;

impl Worker {
    /// One heartbeat round (every keepalive_time / 2): tell every node our term and lease,
    /// renew the lease if a majority answered, step down for good if a newer master exists.
    /// Every other round also does the slower duties (the guard, node_info, the witnesses).
    pub(crate) fn master_round(&mut self, me: &str, nodes: &[Node]) {
        let started = shared::boot_ms();
        let full = self.master_rounds.is_multiple_of(keeper_core::timing::SLOW_DUTIES_EVERY);
        self.master_rounds += 1;
        let (term, setting, entitled) = {
            // (registered_master was set from this round's node_info by Worker::round)
            let mut st = shared::STATE.exclusive();
            // (resolves a gate nobody read since the start: a master deposed before it stays so)
            shared::gate_locked(&mut st);
            (st.term, st.gate_setting(), self.keeper.rules.may_hold_lease(&st.record(), st.registered_master))
        };
        if setting.is_final() {
            // No heartbeats: they would keep the voters from electing anyone else.
            shared::STATE.exclusive().heartbeats_stopped = true;
            let state = match shared::gate() {
                shared::Gate::Deposed { by, term } => self.auto_rejoin(me, nodes, &by, term),
                g => g.describe(),
            };
            self.publish(Mode::Master, &state, &[]);
            return;
        }
        let sync_names_changed = entitled && full && self.drop_self_from_sync_names(me);
        let lease = master_lease(self.settings.keepalive_time);
        let deadline = self.probe_deadline();
        let db = gucs::database();
        let peers: Vec<&Node> = nodes.iter().filter(|n| n.name != me).collect();
        let two_node = gucs::TWO_NODE_FAILOVER.get();
        // Two data nodes without witness (and without two_node_failover) cannot elect anyone
        // else, so the master needs no lease; but only once the other node has the current
        // membership: until then it may still count over the three nodes it had before a
        // del_node and elect itself with the deleted node's vote.
        let settled = self.membership_known_to_all.is_some_and(|v| v >= self.membership);
        let can_fail_over = keeper_core::heartbeat::can_fail_over(nodes.len(), two_node, settled);
        // A node promoted outside an election (pg_ctl promote, pg_promote() by hand) holds no
        // lease and sends no heartbeat (a heartbeat would hold the voters from electing the
        // real master's successor); it only watches for a master of a newer term.
        // Who may be elected if this master died now (keeper_core::eligibility): told in the
        // heartbeat, persisted here too (this node counts in the majority that persists it).
        // Commits acknowledged before this server became master (or before it restarted)
        // are not in WalSndCtl, which starts at zero: none ends past the WAL it had then.
        let floor = *self.ack_floor.get_or_insert_with(|| unsafe { pg_sys::GetFlushRecPtr(std::ptr::null_mut()) });
        let read_now = (self.master_rounds - 1)
            .is_multiple_of(keeper_core::timing::replication_read_every(self.settings.keepalive_time));
        let repl = match read_now.then(|| crate::eligibility::read(floor)) {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                self.notice_once(format!("pg_keeper: cannot read pg_stat_replication: {e}"));
                None
            }
            None => None,
        };
        let eligible = match &repl {
            Some(r) => crate::eligibility::eligible(me, nodes, r),
            // Unknown: the last set told stays (commits keep its rule).
            None => self.told.current().cloned().flatten(),
        };
        if entitled && self.told.current() != Some(&eligible) {
            let what = match &eligible {
                None => "any node (replication is asynchronous)".to_string(),
                Some(v) if v.is_empty() => "nobody".to_string(),
                Some(v) => v.join(", "),
            };
            let facts = repl.as_ref().map(crate::eligibility::describe).unwrap_or_default();
            log!("pg_keeper: who may be elected if this master fails: {what} ({facts})");
        }
        if entitled {
            self.told.send(eligible.clone());
            let stored =
                crate::votes::with_record(me, |rec, _| ((), rec.told(term, crate::RULES.to_persist(eligible.clone()))));
            if let Err(e) = stored {
                warning!("pg_keeper: cannot update the vote record: {e}");
            }
            if let Some(r) = &repl {
                crate::eligibility::publish(&crate::RULES.commit_rule(&self.told), r);
            }
        }
        let heartbeat = entitled.then_some(probe::Heartbeat {
            from: me,
            term,
            lease_ms: lease.as_millis() as u64,
            eligible: eligible.as_deref(),
        });
        // Each answer acts the moment it arrives (keeper_core::heartbeat): the lease is renewed
        // once a majority counted, not when the slowest (perhaps black-holed) peer's deadline
        // ends the round; an answer from another writable node ends it at once.
        let round = std::cell::RefCell::new(self.keeper.heartbeat_round(RoundStart {
            term,
            entitled,
            can_fail_over,
            nodes: nodes.to_vec(),
            me: me.to_string(),
            started: Duration::from_millis(started.max(0) as u64),
            lease,
        }));
        let on_answer = |name: &str, a: &PeerAnswer| {
            let effect = round.borrow_mut().on_answer(name, a);
            match effect {
                LeaseNow::End => shared::STATE.exclusive().lease_until = 0,
                LeaseNow::Extend { until } => {
                    let mut st = shared::STATE.exclusive();
                    if st.gate_setting() == Setting::Lease {
                        st.lease_until = st.lease_until.max(until.as_millis() as i64);
                    }
                }
                LeaseNow::Unchanged => {}
            }
        };
        let futs = peers.iter().map(|n| {
            let cfg = probe::config(&n.conninfo, Some(&db));
            let on_answer = &on_answer;
            async move {
                let r = probe::state(cfg?, deadline, heartbeat).await;
                if let Ok(s) = &r {
                    on_answer(&n.name, &s.answer);
                }
                r
            }
        });
        let Some(results) = probe::block_on_cancellable(self.rt, join_all(futs), shutdown_requested) else {
            return;
        };
        let round = round.into_inner();
        // A majority persisted the set this round carried.
        if round.majority_heard() {
            self.told.majority_persisted();
            if let Some(r) = &repl {
                crate::eligibility::publish(&crate::RULES.commit_rule(&self.told), r);
            }
        }
        let RoundEnd { verdict, gate: step, answers } = round.finish();
        let peer_results: Vec<PeerResult> = peers
            .iter()
            .zip(results)
            .map(|(n, r)| PeerResult {
                name: n.name.clone(),
                ok: r.is_ok(),
                latency: r.as_ref().map(|a| a.latency).unwrap_or(Duration::ZERO),
                error: match r {
                    Ok(a) if a.answer.writable() => "writable: a second master".into(),
                    Ok(a) if a.answer.term > term => format!("newer term {}", a.answer.term),
                    Ok(_) => String::new(),
                    Err(e) => e,
                },
            })
            .collect();
        self.note_membership(me, term, nodes, &answers);
        let connected = peer_results.iter().filter(|p| p.ok).count();
        let state = match step {
            GateStep::Deposed { by: name, term: t } => {
                let was_deposed = {
                    let mut st = shared::STATE.exclusive();
                    let was = st.gate_setting() == Setting::Deposed;
                    st.set_gate(Setting::Deposed);
                    shared::put_str(&mut st.deposed_by, &name);
                    st.deposed_term = t;
                    was
                };
                if !was_deposed {
                    crate::history::record(
                        Kind::Deposed,
                        t,
                        &[me, &name],
                        &format!("{name} was elected master in term {t} (this node's term was {term})"),
                    );
                }
                // On disk before it is said: a restart from now on finds it deposed.
                if let Err(e) = crate::votes::store_deposed(me, &name, t) {
                    warning!("pg_keeper: {e}");
                }
                warning!(
                    "pg_keeper: {name} was elected master in term {t} (this node's term is {term}): this node stops taking writes for good; rejoin it as a standby (pgkeeper rejoin)"
                );
                crate::routing::end_wal_senders();
                format!("deposed by {name} (term {t}): needs rejoin")
            }
            GateStep::Revoke { why } => {
                shared::STATE.exclusive().revoke_lease(&why);
                if let MasterVerdict::OtherMaster { name, term: t, .. } = &verdict {
                    // An older or equal term writable elsewhere (promoted by hand, and not
                    // yet fenced): no lease while it is there, and say so.
                    let msg = format!(
                        "pg_keeper: CONFLICT: {name} (term {t}) also accepts writes; this node ({me}, term {term}) takes no writes while it does"
                    );
                    if self.last_notice != msg {
                        warning!("{msg}");
                        self.last_notice = msg;
                    }
                    self.attention = keeper_core::gate::Attention::Conflict;
                    format!("CONFLICT: {name} also writable")
                } else {
                    let master = nodes.iter().find(|n| n.is_master).map(|n| n.name.as_str()).unwrap_or("none");
                    self.notice_once(format!(
                        "pg_keeper: this node was promoted outside an election (the registered master is {master}): it takes no commits and sends no heartbeats; turn it back into a standby (pgkeeper rejoin)"
                    ));
                    "promoted outside an election: takes no commits".to_string()
                }
            }
            step => {
                let renew = matches!(verdict, MasterVerdict::Renew { .. });
                {
                    let mut st = shared::STATE.exclusive();
                    match step {
                        GateStep::OpenWithoutLease => {
                            // Not if node_info changed since this round read it: the next
                            // round, which reads it, decides. (A lease a majority granted
                            // stays: it is covered by their holds.)
                            match keeper_core::gate::without_lease(self.membership, st.open_needs_version) {
                                Ok(()) => st.set_gate(Setting::Open),
                                Err(why) => st.need_lease(why),
                            }
                        }
                        GateStep::NeedLease { why, extend_to } => {
                            st.need_lease(&why);
                            if let Some(until) = extend_to {
                                st.lease_until = st.lease_until.max(until.as_millis() as i64);
                            }
                        }
                        GateStep::Deposed { .. } | GateStep::Revoke { .. } => unreachable!("handled above"),
                    }
                }
                if renew && self.fenced_recorded {
                    self.fenced_recorded = false;
                    crate::history::record(Kind::Unfenced, term, &[me], "a majority answers again");
                }
                if let MasterVerdict::NoMajority { reached, registered } = verdict {
                    if can_fail_over {
                        if !self.fenced_recorded {
                            self.fenced_recorded = true;
                            crate::history::record(
                                Kind::Fenced,
                                term,
                                &[me],
                                &format!("only {reached} of {registered} registered nodes answered"),
                            );
                        }
                        self.notice_once(format!(
                            "pg_keeper: fenced: only {reached} of {registered} registered nodes answered; commits wait until a majority answers again"
                        ));
                    }
                } else if self.last_notice.starts_with("pg_keeper: fenced") {
                    self.notice_once("pg_keeper: a majority answers again: lease renewed".into());
                }
                if full {
                    let unanswered: Vec<String> =
                        peer_results.iter().filter(|p| !p.ok).map(|p| p.name.clone()).collect();
                    // Standbys that answered from recovery: ones that may be re-pointing to
                    // this node (not an old master, deposed or writable).
                    let answered: Vec<String> = answers
                        .iter()
                        .filter(|(_, a)| a.as_ref().is_some_and(|a| a.in_recovery))
                        .map(|(n, _)| n.clone())
                        .collect();
                    // (read with the eligible set before the round; read again only if that failed)
                    let obs = match &repl {
                        Some(r) => Ok(crate::sync_state::Observation { streaming: r.streaming.clone() }),
                        None => observe(),
                    };
                    match obs {
                        Ok(obs) => {
                            // (not on the value just replaced: it would look like the only
                            // synchronous standby, this node, stopped streaming)
                            if !sync_names_changed {
                                self.guard_sync(me, &obs, &unanswered, &answered, renew);
                            }
                            if renew || !can_fail_over {
                                self.keep_node_info(me, nodes, &obs.streaming);
                            }
                        }
                        Err(e) => warning!("pg_keeper: cannot read replication state: {e}"),
                    }
                    if renew {
                        self.push_to_witnesses(nodes, &answers);
                    }
                }
                // (the seed's title; the gate is named only when it is not open)
                let gate = match shared::gate() {
                    shared::Gate::Open => String::new(),
                    g => format!("; commits {}", g.describe()),
                };
                if peers.is_empty() {
                    format!("no standbys{gate}")
                } else {
                    format!("connected, {connected}{gate}")
                }
            }
        };
        if shared::gate_open_now() {
            crate::history::publish(me);
        }
        self.publish(Mode::Master, &state, &peer_results);
    }

    /// Which membership versions the heartbeat answers carried: the current change is
    /// acknowledged once a majority has it (add_node / del_node wait for that before the next
    /// change), and settled once every node has it.
    fn note_membership(&mut self, me: &str, term: u64, nodes: &[Node], answers: &[(String, Option<PeerAnswer>)]) {
        let v = self.membership;
        if membership::acknowledged(v, nodes, me, term, answers) {
            let mut st = shared::STATE.exclusive();
            st.membership_acked = st.membership_acked.max(v);
        }
        if membership::known_to_all(v, nodes, me, term, answers) && self.membership_known_to_all < Some(v) {
            self.membership_known_to_all = Some(v);
            if let Err(e) = crate::votes::store_settled(me, v) {
                warning!("pg_keeper: {e}");
            }
        }
    }

    /// Witnesses have no replica of node_info: hand them ours.
    fn push_to_witnesses(&mut self, nodes: &[Node], answers: &[(String, Option<PeerAnswer>)]) {
        let deadline = self.probe_deadline();
        let db = gucs::database();
        let witnesses: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.is_witness && answers.iter().any(|(a, x)| *a == n.name && x.is_some_and(|x| x.witness)))
            .collect();
        if witnesses.is_empty() {
            return;
        }
        let futs = witnesses.iter().map(|w| {
            let cfg = probe::config(&w.conninfo, Some(&db));
            let membership = self.membership;
            async move { probe::push_registry(cfg?, deadline, nodes, membership).await }
        });
        let Some(results) = probe::block_on_cancellable(self.rt, join_all(futs), shutdown_requested) else {
            return;
        };
        for (w, r) in witnesses.iter().zip(results) {
            match r {
                Ok(0) => {}
                Ok(n) => log!("pg_keeper: node_info sent to witness {} ({n} rows changed)", w.name),
                Err(e) => self.notice_once(format!("pg_keeper: cannot send node_info to witness {}: {e}", w.name)),
            }
        }
    }

    /// Write node_info as keeper-core says the master must keep it, when it differs.
    fn keep_node_info(&mut self, me: &str, nodes: &[Node], streaming: &[String]) {
        // Read after the guard: a degrade or restore this round is already applied here.
        let sync = sync_names_now();
        let sync = match SyncConfig::parse(&sync) {
            Ok(s) => s,
            Err(e) => {
                self.notice_once(format!("pg_keeper: not maintaining node_info: {e}"));
                return;
            }
        };
        let streaming: Vec<&str> = streaming.iter().map(String::as_str).collect();
        let wanted = master_view(nodes, me, sync.as_ref(), &streaming);
        let changes = diff(nodes, &wanted);
        if changes.is_empty() {
            return;
        }
        let written = crate::tx::transaction(|| {
            Spi::connect_mut(|c| {
                // Metadata only: never let the worker wait on synchronous replication (a
                // worker stuck in a commit could not fix the very thing it waits for).
                c.update("SET LOCAL synchronous_commit = local", None, &[])?;
                let _guard = WriteGuard::open();
                registry_sql::apply(c, &changes)
            })
        });
        match written {
            Ok(()) => {
                let master = wanted.iter().find(|n| n.is_master).map(|n| n.name.as_str()).unwrap_or("-");
                let next = wanted.iter().find(|n| n.is_nextmaster).map(|n| n.name.as_str()).unwrap_or("none");
                log!("pg_keeper: node_info updated: master {master}, next master {next}");
            }
            Err(e) => warning!("pg_keeper: cannot update node_info: {e}"),
        }
    }
}
