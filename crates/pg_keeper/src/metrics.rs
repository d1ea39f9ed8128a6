//! `/metrics`: the node's state in the OpenMetrics text format (which Prometheus reads),
//! encoded by `prometheus-client` from one [`Snapshot`]. Names are listed in the README.

use crate::http::Snapshot;
use crate::shared;
use keeper_core::gate::GateKind;
use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;
type FGauge = Gauge<f64, AtomicU64>;

fn gauge(r: &mut Registry, name: &str, help: &str, v: f64) {
    let g = FGauge::default();
    g.set(v);
    r.register(name, help, g);
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

/// A family with one series per value of `label`, 1 for `current` and 0 for the others.
fn one_hot(r: &mut Registry, name: &str, help: &str, label: &str, values: &[&str], current: &str) {
    let f = Family::<Labels, FGauge>::default();
    for v in values {
        f.get_or_create(&vec![(label.to_string(), v.to_string())]).set(if *v == current { 1.0 } else { 0.0 });
    }
    r.register(name, help, f);
}

pub fn encode(s: &Snapshot) -> String {
    let st = &s.st;
    let mut r = Registry::with_prefix("pg_keeper");
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    one_hot(
        &mut r,
        "role",
        "What this node is now (1 for its role)",
        "role",
        &["master", "standby", "witness", "other"],
        s.role_name(),
    );
    gauge(&mut r, "term", "The election term of this node's vote record", st.term as f64);
    let gates: Vec<&str> = GateKind::ALL.iter().map(|k| k.as_str()).collect();
    one_hot(&mut r, "gate", "The commit gate's state (1 for the current one)", "state", &gates, s.gate.kind().as_str());
    gauge(&mut r, "gate_open", "1 when this node is a master whose commit gate lets commits through", b(s.view.role
        == keeper_core::health::Role::Master
        && s.view.gate_open));
    let lease_left = if st.gate_setting() == keeper_core::gate::Setting::Lease {
        ((st.lease_until - shared::boot_ms()).max(0)) as f64 / 1000.0
    } else {
        0.0
    };
    gauge(&mut r, "lease_remaining_seconds", "Time left on the master's lease (0 without one)", lease_left);
    gauge(&mut r, "failed_rounds", "Consecutive polling rounds that failed", st.failed_rounds as f64);
    counter(&mut r, "rounds", "Polling rounds since the worker started", st.rounds);
    gauge(&mut r, "worker_live", "1 when the pg_keeper worker finished a round lately", b(s.view.worker_live));
    gauge(&mut r, "paused", "1 while automatic failover is paused cluster-wide (pgkeeper pause)", b(s.view.paused));
    one_hot(
        &mut r,
        "synchronous_replication",
        "Synchronous replication as the sync guard sees it (1 for the current state)",
        "state",
        &["synchronous", "degraded", "guard off", "none configured"],
        shared::sync_state_name(st.sync_state),
    );
    counter(&mut r, "sync_degrades", "Switches of synchronous replication to asynchronous", st.degrades);
    counter(&mut r, "sync_restores", "Switches of synchronous replication back from asynchronous", st.restores);
    counter(&mut r, "elections_won", "Elections this node won since the server started", st.elections_won);
    counter(&mut r, "elections_lost", "Elections this node stood in and did not win", st.elections_lost);
    gauge(
        &mut r,
        "last_failover_timestamp_seconds",
        "When this node was last promoted by pg_keeper (Unix time; 0 never)",
        st.last_failover_ms.max(0) as f64 / 1000.0,
    );
    gauge(&mut r, "streaming", "1 on a standby whose WAL receiver streams", b(s.view.streaming));
    if let Some(lag) = s.view.lag_bytes {
        gauge(&mut r, "replication_lag_bytes", "Master's end of WAL, as last reported, minus what this standby replayed", lag as f64);
    }
    let up = Family::<Labels, FGauge>::default();
    let latency = Family::<Labels, FGauge>::default();
    for p in &st.peers[..(st.npeers as usize).min(shared::MAX_PEERS)] {
        let l = vec![("peer".to_string(), shared::get_str(&p.name))];
        up.get_or_create(&l).set(match p.result {
            1 => 1.0,
            _ => 0.0,
        });
        latency.get_or_create(&l).set(p.latency_us as f64 / 1e6);
    }
    r.register("peer_up", "1 when the peer answered this node's last probe", up);
    r.register("peer_probe_latency_seconds", "How long the peer took to answer the last probe", latency);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode_text(&mut out, &r);
    out
}
