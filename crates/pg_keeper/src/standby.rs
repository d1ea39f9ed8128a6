//! Standby mode: poll the master directly and through every other standby, let keeper-core
//! decide (stand for election, hold, follow a new master), and carry the decision out.

use crate::worker::{now_ms, shutdown_requested, Mode, PeerResult, Worker};
use crate::{actions, gucs, probe, shared};
use futures_util::future::join_all;
use keeper_core::election::VoteRecord;
use keeper_core::failover::{streams_elsewhere, Decision, FailoverConfig, Hold, Next, Sightings};
use keeper_core::lsn;
use keeper_core::polling::{Indirect, RoundObservation};
use keeper_core::{Node, SyncConfig};
use pgrx::prelude::*;
use std::time::Duration;

/// primary_conninfo for streaming from `node` as `me`.
pub(crate) fn primary_conninfo_for(me: &str, node: &Node) -> Result<String, String> {
    let mut ci = keeper_pq::conninfo::node(&node.conninfo).map_err(|e| e.to_string())?;
    ci.set("application_name", me);
    ci.remove("dbname");
    Ok(ci.to_string())
}

/// Point primary_conninfo at `node` (as `me`), and reload: PostgreSQL restarts its WAL
/// receiver when the value changed. False when it pointed there already.
pub(crate) fn stream_from(me: &str, node: &Node) -> Result<bool, String> {
    let value = primary_conninfo_for(me, node)?;
    if actions::config_option(c"primary_conninfo") == value {
        return Ok(false);
    }
    actions::alter_system("primary_conninfo", Some(&value))?;
    actions::reload_config();
    Ok(true)
}

impl Worker {
    /// Right after this standby granted a vote (in a newer term than the last one handled):
    /// take WAL from that candidate (cascading) instead of the old master. A frozen old
    /// master that thaws would otherwise go on shipping this standby its WAL, past the fork
    /// point of the candidate's timeline, before anyone noticed it is deposed (and its clean
    /// shutdown for a rejoin ships all of it): this standby could no longer follow the new
    /// master. WAL this standby has beyond the candidate's the winner fetches from it first
    /// (`fast_forward.rs`); until the promotion its WAL receiver is refused (it asks for WAL
    /// the candidate does not have yet) and retries.
    pub(crate) fn stream_from_candidate(&mut self, me: &str) {
        let (term, voted) = {
            let st = shared::STATE.share();
            (st.term, shared::get_str(&st.voted_for))
        };
        if voted.is_empty() || voted == me || term <= self.candidate_term || unsafe { !pg_sys::RecoveryInProgress() } {
            return;
        }
        self.candidate_term = term;
        // Whatever the election gives, the next rounds check the upstream against the master.
        self.following = None;
        let Some(node) = self.registry_nodes().into_iter().find(|n| n.name == voted && !n.is_witness) else { return };
        match stream_from(me, &node) {
            Ok(false) => {}
            Ok(true) => {
                log!("pg_keeper: voted for {voted} in term {term}: streaming from it rather than from the old master")
            }
            Err(e) => warning!("pg_keeper: cannot stream from {voted}: {e}"),
        }
    }

    pub(crate) fn standby_round(&mut self, me: &str, nodes: &[Node]) {
        if let Some((term, gone)) = crate::forced::take_request() {
            let old_master = nodes.iter().find(|n| n.is_master).map(|n| n.name.clone()).unwrap_or_default();
            let state = match crate::forced::prepare(me, term, &gone) {
                Ok(()) => {
                    warning!("pg_keeper: forced failover: promoting {me} in term {term}; removed: {}", gone.join(", "));
                    let s = self.promote(me, &old_master, term, &[me.to_string()], nodes.len());
                    if unsafe { pg_sys::RecoveryInProgress() } && !unsafe { pg_sys::PromoteIsTriggered() } {
                        crate::forced::abandon(me);
                    }
                    let mut st = shared::STATE.exclusive();
                    st.promoting = false;
                    st.stand_until = 0;
                    s
                }
                Err(e) => {
                    warning!("pg_keeper: forced failover not done: {e}");
                    format!("forced failover not done: {e}")
                }
            };
            self.publish(Mode::Standby, &state, &[]);
            return;
        }
        let Some(master) = nodes.iter().find(|n| n.is_master && n.name != me) else {
            self.publish(Mode::Standby, "no master in node_info", &[]);
            return;
        };
        {
            // Whatever makes this server a master later (an election, pg_ctl promote by
            // hand), it takes writes only once it holds a lease.
            let mut st = shared::STATE.exclusive();
            st.revoke_lease("this node was a standby and holds no lease yet");
            // and what its commits need under synchronous replication is decided anew
            st.sync_rule = shared::SYNC_RULE_WAIT;
        }
        self.ack_floor = None;
        // Running as a standby: rejoined, no longer a deposed master.
        crate::votes::clear_deposed(me);
        // A win belongs to the term's promotion; a node running as a standby again (a failed
        // promotion, a rejoined old master) must win anew before it holds a lease.
        // (not while the promotion it won is still under way: pg_promote gave up waiting)
        if shared::STATE.share().elected && unsafe { !pg_sys::PromoteIsTriggered() } {
            let cleared = crate::votes::with_record(me, |rec, _| ((), VoteRecord { elected: false, ..rec.clone() }));
            if let Err(e) = cleared {
                warning!("pg_keeper: cannot update the vote record: {e}");
            }
        }
        let deadline = self.probe_deadline();
        // The standby we ask must answer within our deadline, including its own probe.
        let nested = keeper_core::timing::nested_deadline(deadline);
        let others: Vec<&Node> = nodes.iter().filter(|n| n.name != me && !n.is_master).collect();
        let db = gucs::database();
        let started = std::time::Instant::now();
        let direct = {
            let cfg = probe::config(&master.conninfo, Some(&db));
            async move { probe::state(cfg?, deadline, None).await }
        };
        // The others are asked when the master has not answered as a live master within the
        // hedge, and every few rounds anyway (keeper_core::polling::ask_others); they get the
        // rest of the deadline, so the round still ends within it.
        let round = self.rounds;
        let hedge = keeper_core::timing::indirect_hedge(deadline);
        let ask = |others: &[&Node]| {
            let left = deadline.saturating_sub(started.elapsed()).max(std::time::Duration::from_millis(1));
            let nested = keeper_core::timing::nested_deadline(left).min(nested);
            join_all(others.iter().map(|n| {
                let cfg = probe::config(&n.conninfo, Some(&db));
                let target = master.conninfo.clone();
                async move { probe::poll_via(cfg?, &target, left, nested, true).await }
            }))
        };
        let both = async {
            tokio::pin!(direct);
            let early = tokio::select! {
                d = &mut direct => Some(d),
                _ = tokio::time::sleep(hedge) => None,
            };
            let live_in_time = matches!(&early, Some(Ok(s)) if s.answer.writable());
            if !keeper_core::polling::ask_others(live_in_time, round) {
                return (early.expect("answered"), None);
            }
            match early {
                Some(d) => (d, Some(ask(&others).await)),
                None => {
                    let (d, i) = tokio::join!(direct, ask(&others));
                    (d, Some(i))
                }
            }
        };
        let Some((direct, indirect)) = probe::block_on_cancellable(self.rt, both, shutdown_requested) else {
            return;
        };
        // Not asked this round (the master answered at once): as if none had answered; what
        // they said last stays in the status.
        let asked = indirect.is_some();
        let indirect = indirect.unwrap_or_else(|| others.iter().map(|_| Err("not asked".to_string())).collect());

        // A registered master that answers from recovery (an old master rejoined as a
        // standby) or fenced (it lost its lease) is not a live master.
        let obs = RoundObservation {
            direct_ok: matches!(direct, Ok(s) if s.answer.writable()),
            indirect: others
                .iter()
                .zip(&indirect)
                .map(|(n, r)| {
                    let v = match r {
                        Ok(a) if a.reached => Indirect::Reached,
                        Ok(_) => Indirect::Unreached,
                        Err(_) => Indirect::NoAnswer,
                    };
                    (n.name.clone(), v)
                })
                .collect(),
        };
        // A node just elected (PeerAnswer::just_elected), and the nodes that accept writes.
        let my_term = shared::STATE.share().term;
        let seen = Sightings {
            writable: others
                .iter()
                .zip(&indirect)
                .filter(|(_, r)| matches!(r, Ok(a) if a.me.writable()))
                .map(|(n, _)| n.name.clone())
                .collect(),
            just_elected: others
                .iter()
                .zip(&indirect)
                .find(|(_, r)| matches!(r, Ok(a) if a.me.just_elected(my_term)))
                .map(|(n, r)| (n.name.clone(), r.as_ref().map(|a| a.me.term).unwrap_or(0))),
            stand_requested: shared::STATE.share().stand_until > shared::boot_ms(),
        };
        let mut peers = vec![PeerResult {
            name: master.name.clone(),
            ok: direct.is_ok(),
            latency: direct.as_ref().map(|a| a.latency).unwrap_or(Duration::ZERO),
            error: match &direct {
                Ok(s) if s.answer.in_recovery => "in recovery".into(),
                Ok(s) if s.answer.fenced => "fenced".into(),
                Ok(_) => String::new(),
                Err(e) => e.clone(),
            },
        }];
        if !asked {
            peers.extend(self.last_indirect.iter().filter(|p| others.iter().any(|n| n.name == p.name)).cloned());
        }
        for (n, r) in others.iter().zip(indirect).filter(|_| asked) {
            peers.push(PeerResult {
                name: n.name.clone(),
                ok: r.is_ok(),
                latency: Duration::ZERO,
                error: match r {
                    Ok(a) if a.me.writable() => "writable: promoted".into(),
                    Ok(a) if a.reached => String::new(),
                    Ok(_) => format!("answered: cannot reach {}", master.name),
                    Err(e) => e,
                },
            });
        }
        if asked {
            self.last_indirect = peers[1..].to_vec();
        }

        let cfg = FailoverConfig {
            keepalive_count: self.settings.keepalive_count,
            two_node_failover: gucs::TWO_NODE_FAILOVER.get(),
            paused: {
                let st = shared::STATE.share();
                st.paused_until_ms > now_ms() || st.cluster_paused
            },
            wait_for_elected: true,
        };
        let round = self.keeper.standby_round(me, nodes, &obs, &seen, cfg);
        if let Some(w) = &round.conflict {
            let master_alive = round.next == Next::Report(Decision::MasterAlive);
            let msg = format!(
                "pg_keeper: CONFLICT: more than one writable node ({}{}); following none of them",
                if master_alive { format!("{}, ", master.name) } else { String::new() },
                w.join(", ")
            );
            if self.last_notice != msg {
                warning!("{msg}");
                self.last_notice = msg;
            }
            self.attention = keeper_core::gate::Attention::Conflict;
        }
        if let Next::Follow(new) = &round.next {
            // Someone else already promoted: follow it rather than promote.
            let state = self.follow_new_master(me, nodes, new);
            self.publish(Mode::Standby, &state, &peers);
            return;
        }
        let upstream = actions::config_option(c"primary_conninfo");
        if streams_elsewhere(obs.direct_ok, self.following.as_deref(), master, &upstream, &keeper_pq::conninfo::node) {
            let at = keeper_pq::conninfo::node(&upstream).map(|c| c.target()).unwrap_or_default();
            log!("pg_keeper: this standby streams from {at} but the master is \"{}\"", master.name);
            let state = self.follow_new_master(me, nodes, &master.name);
            self.publish(Mode::Standby, &state, &peers);
            return;
        }

        let state = match round.next {
            Next::Follow(_) => unreachable!("followed above"),
            Next::Report(Decision::MasterAlive) => {
                if self.last_notice.contains("unreachable") {
                    self.notice_once(format!("pg_keeper: master \"{}\" is reachable again", master.name));
                }
                match &self.following {
                    Some(f) if *f != master.name => {
                        format!("connected to {} (following {f})", master.name)
                    }
                    _ => format!("connected to {}", master.name),
                }
            }
            Next::Report(Decision::Suspect { failed_rounds }) => {
                log!(
                    "pg_keeper: master \"{}\" unreachable directly and through every answering standby (round {failed_rounds} of {})",
                    master.name,
                    self.settings.keepalive_count
                );
                format!("master unreachable, {failed_rounds}/{}", self.settings.keepalive_count)
            }
            Next::Report(Decision::Hold { failed_rounds, why }) => {
                let why = match why {
                    Hold::WaitingTurn { rank } => {
                        format!("{rank} standby(s) rank before this one; standing after {rank} more round(s)")
                    }
                    Hold::NotCandidate => {
                        "this node is not a candidate (a witness, or missing from node_info)".to_string()
                    }
                    Hold::Paused if shared::STATE.share().cluster_paused => {
                        "automatic failover is paused cluster-wide (pgkeeper resume ends it)".to_string()
                    }
                    Hold::Paused => "automatic failover is paused (planned switchover)".to_string(),
                };
                self.notice_once(format!(
                    "pg_keeper: master \"{}\" unreachable for {failed_rounds} rounds; not promoting: {why}",
                    master.name
                ));
                format!("master unreachable, {failed_rounds} rounds; holding: {why}")
            }
            Next::Report(Decision::Stand { .. }) => unreachable!("a stand is Next::Stand"),
            Next::WaitFor { who, term: t } => {
                self.notice_once(format!("pg_keeper: {who} was elected in term {t}; waiting for it to take writes"));
                format!("waiting for {who} (elected in term {t})")
            }
            Next::Stand { old_master, failed_rounds, on_request } => {
                if on_request {
                    log!("pg_keeper: standing for election on request (planned switchover)");
                }
                self.stand(me, nodes, &old_master, failed_rounds)
            }
        };
        self.publish(Mode::Standby, &state, &peers);
    }

    pub(crate) fn promote(
        &mut self,
        me: &str,
        old_master: &str,
        term: u64,
        votes: &[String],
        registered: usize,
    ) -> String {
        log!(
            "pg_keeper: promoting {me}: elected in term {term} with the votes of {} of {registered} registered nodes ({}); old master \"{old_master}\"",
            votes.len(),
            votes.join(", ")
        );
        match actions::promote() {
            Ok(true) => {}
            Ok(false) => {
                warning!(
                    "pg_keeper: promotion did not complete within {} s",
                    keeper_core::timing::PROMOTION_WAIT.as_secs()
                );
                return "promotion did not complete".into();
            }
            Err(e) => {
                warning!("pg_keeper: promotion failed: {e}");
                return format!("promotion failed: {e}");
            }
        }
        let (planned, asked) = {
            let mut st = shared::STATE.exclusive();
            st.last_failover_ms = now_ms();
            let standing = st.stand_until > shared::boot_ms();
            (standing && !st.stand_for_failover, standing && st.stand_for_failover)
        };
        log!("pg_keeper: {me} promoted; switching to master mode");
        let (kind, why) = if planned {
            (keeper_core::history::Kind::Switchover, format!("planned switchover from {old_master}"))
        } else if asked {
            (keeper_core::history::Kind::Failover, format!("pgkeeper failover --to {me}; old master {old_master}"))
        } else {
            (keeper_core::history::Kind::Failover, format!("master {old_master} unreachable"))
        };
        crate::history::record(
            kind,
            term,
            &[old_master, me],
            &format!("{why}; elected with the votes of {}", votes.join(", ")),
        );
        if let Some(cmd) = gucs::after_command() {
            match actions::spawn_after_command(&cmd, old_master, me) {
                Ok(child) => {
                    log!("pg_keeper: after_command started (pid {})", child.id());
                    self.after_command = Some(child);
                }
                Err(e) => warning!("pg_keeper: after_command could not start: {e}"),
            }
        }
        self.hurry = true;
        "promoted".into()
    }

    /// A master cannot be its own synchronous standby: if synchronous_standby_names (often the
    /// same file on every node) names this node, every commit here would wait forever. Remove
    /// it from the list (ALTER SYSTEM), keeping the other names. Checked every master round:
    /// a node may have been promoted by pg_keeper, by a switchover or by hand.
    /// True when it changed the setting (this process sees the new value only after its next
    /// SIGHUP: the caller must not judge synchronous replication on the old one meanwhile).
    pub(crate) fn drop_self_from_sync_names(&mut self, me: &str) -> bool {
        let current = crate::sync_state::sync_names_now();
        let Ok(Some(cfg)) = SyncConfig::parse(&current) else {
            return false;
        };
        if !cfg.lists(me) {
            return false;
        }
        let new = cfg.without(me).map(|c| c.to_string()).unwrap_or_default();
        match actions::alter_system("synchronous_standby_names", Some(&new)) {
            Ok(()) => {
                actions::reload_config();
                if new.is_empty() {
                    warning!(
                        "pg_keeper: synchronous_standby_names named this node ({current:?}); set to '' on the new master: replication is asynchronous until you configure standbys"
                    );
                } else {
                    log!("pg_keeper: synchronous_standby_names changed from {current:?} to {new:?} (this node is the master now)");
                }
                true
            }
            Err(e) => {
                warning!("pg_keeper: cannot fix synchronous_standby_names: {e}");
                false
            }
        }
    }

    /// Point primary_conninfo at `new`, unless this standby holds WAL past `new`'s fork point.
    fn follow_new_master(&mut self, me: &str, nodes: &[Node], new: &str) -> String {
        if self.following.as_deref() == Some(new) {
            return format!("following new master {new}");
        }
        let Some(node) = nodes.iter().find(|n| n.name == new) else {
            return format!("new master {new} not in node_info");
        };
        let deadline = self.probe_deadline();
        let fork = probe::config(&node.conninfo, None).map(|cfg| self.rt.block_on(probe::fork_point(cfg, deadline)));
        // This standby's WAL position and timeline (the one it receives, else its checkpoint's).
        let mine = crate::tx::transaction(|| {
            Spi::connect(|c| {
                let row = c
                    .select(
                        "SELECT greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text, \
                         coalesce((SELECT received_tli FROM pg_stat_wal_receiver WHERE received_tli > 0), \
                                  (SELECT timeline_id FROM pg_control_checkpoint()))::bigint",
                        None,
                        &[],
                    )?
                    .first();
                Ok::<_, pgrx::spi::Error>((row.get::<String>(1)?, row.get::<i64>(2)?))
            })
        });
        let (fork, their_tli) = match fork {
            Ok(Ok((tli, Some(h)))) => (lsn::fork_point(&h), tli),
            Ok(Ok((tli, None))) => (None, tli),
            Ok(Err(e)) | Err(e) => {
                self.notice_once(format!("pg_keeper: cannot read {new}'s timeline history ({e}); retrying"));
                return format!("new master {new}: checking timeline");
            }
        };
        let (mine, my_tli) = match mine {
            Ok((l, t)) => (l.and_then(|s| lsn::parse(&s)), t.unwrap_or(0) as u32),
            Err(_) => (None, 0),
        };
        // Already on its timeline (a standby cascading from one of its standbys): nothing to
        // check. On an older one: only WAL up to the fork point can be followed.
        if let (Some(fork), Some(mine), true) = (fork, mine, my_tli < their_tli) {
            if !lsn::can_follow(mine, fork) {
                let msg = format!(
                    "pg_keeper: cannot follow new master \"{new}\": this standby has WAL up to {} but {new}'s timeline forked at {}; it needs pg_rewind or a new base backup (pgkeeper rejoin)",
                    lsn::format(mine),
                    lsn::format(fork)
                );
                if self.last_notice != msg {
                    warning!("{msg}");
                    self.last_notice = msg;
                }
                self.attention = keeper_core::gate::Attention::NeedsRejoin;
                return format!("cannot follow {new}: needs rejoin");
            }
        }
        if let Err(e) = stream_from(me, node).map(|_| ()) {
            warning!("pg_keeper: cannot set primary_conninfo: {e}");
            return format!("cannot follow {new}: {e}");
        }
        log!("pg_keeper: following new master \"{new}\" (primary_conninfo updated)");
        let term = shared::STATE.share().term;
        crate::history::record(keeper_core::history::Kind::Followed, term, &[me, new], "primary_conninfo re-pointed");
        self.following = Some(new.to_string());
        self.keeper.standby = Default::default();
        self.hurry = true;
        format!("following new master {new}")
    }
}
