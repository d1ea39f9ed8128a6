//! What the HTTP endpoints answer (`pg_keeper.http_listen`): Patroni's paths and status codes,
//! so HAProxy and Kubernetes configurations written for Patroni carry over. The extension
//! reads the node's state from shared memory into a [`NodeView`]; every answer is decided here.

use std::time::Duration;

/// What a node is, as the endpoints see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not in recovery, in a cluster, and its worker runs master mode.
    Master,
    /// In recovery (a hot standby).
    Standby,
    /// `pg_keeper.witness`: votes, holds no data for clients.
    Witness,
    /// Not in recovery and in no cluster (not configured) or the worker does not run.
    Other,
}

/// One look at the node, taken when a request arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub role: Role,
    /// The commit gate lets commits through now (a master's lease runs, or no lease needed).
    pub gate_open: bool,
    /// A standby's WAL receiver is streaming.
    pub streaming: bool,
    /// A standby's lag in bytes: the master's end of WAL as last reported to this standby
    /// minus what this standby replayed. None when unknown.
    pub lag_bytes: Option<u64>,
    /// The pg_keeper worker runs and finished a round lately ([`worker_live`]).
    pub worker_live: bool,
    /// Cluster-wide maintenance mode (`pgkeeper pause`).
    pub paused: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/primary`, `/master`, `/read-write`, `/leader`.
    Primary,
    /// `/replica`, `/standby`: `?lag=` the most a standby may be behind.
    Replica { max_lag: Option<u64> },
    /// `/read-only`: a primary or a replica.
    ReadOnly { max_lag: Option<u64> },
    /// `/health`: PostgreSQL is up (this endpoint answers from inside it).
    Health,
    /// `/liveness`: the pg_keeper worker runs.
    Liveness,
    /// `/readiness`: a master that takes writes, or a streaming standby within `?lag=`.
    Readiness { max_lag: Option<u64> },
    /// `/metrics`: Prometheus text format.
    Metrics,
    /// `/cluster` and `/`: JSON, like `pgkeeper.status()`.
    Cluster,
}

/// A request the endpoints refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// 404: no such endpoint.
    NotFound,
    /// 400: a malformed query parameter.
    BadRequest(String),
    /// 405: only GET, HEAD and OPTIONS.
    MethodNotAllowed,
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::NotFound => 404,
            Refused::BadRequest(_) => 400,
            Refused::MethodNotAllowed => 405,
        }
    }
}

/// The endpoint a request names. `method` is the HTTP method; `path` without the query.
/// HAProxy's `option httpchk` defaults to OPTIONS, as Patroni accepts it: answered like GET.
pub fn route(method: &str, path: &str, query: Option<&str>) -> Result<Endpoint, Refused> {
    if !matches!(method, "GET" | "HEAD" | "OPTIONS") {
        return Err(Refused::MethodNotAllowed);
    }
    let lag = || max_lag(query);
    Ok(match path.trim_end_matches('/') {
        "/primary" | "/master" | "/read-write" | "/leader" => Endpoint::Primary,
        "/replica" | "/standby" => Endpoint::Replica { max_lag: lag()? },
        "/read-only" => Endpoint::ReadOnly { max_lag: lag()? },
        "/health" => Endpoint::Health,
        "/liveness" => Endpoint::Liveness,
        "/readiness" => Endpoint::Readiness { max_lag: lag()? },
        "/metrics" => Endpoint::Metrics,
        "/cluster" | "" => Endpoint::Cluster,
        _ => return Err(Refused::NotFound),
    })
}

/// `lag=` of a query string, if given.
fn max_lag(query: Option<&str>) -> Result<Option<u64>, Refused> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "lag" {
            return parse_size(v)
                .map(Some)
                .ok_or_else(|| Refused::BadRequest(format!("lag must be bytes or a size like 16MB, not {v:?}")));
        }
    }
    Ok(None)
}

/// A byte count as Patroni and PostgreSQL write it: digits, then optionally B, kB, MB, GB or
/// TB (units of 1024, any case, spaces allowed before the unit).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let mult: u64 = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The status code of an endpoint that answers with a code alone (Metrics and Cluster answer
/// 200 with their body). 503 is what Patroni answers for "not this role".
pub fn status(endpoint: Endpoint, v: &NodeView) -> u16 {
    let ok = |b: bool| if b { 200 } else { 503 };
    let primary = v.role == Role::Master && v.gate_open;
    let replica = |max: Option<u64>| {
        v.role == Role::Standby && v.streaming && max.is_none_or(|m| v.lag_bytes.is_some_and(|l| l <= m))
    };
    match endpoint {
        Endpoint::Primary => ok(primary),
        Endpoint::Replica { max_lag } => ok(replica(max_lag)),
        Endpoint::ReadOnly { max_lag } => ok(primary || replica(max_lag)),
        Endpoint::Health => 200,
        Endpoint::Liveness => ok(v.worker_live),
        Endpoint::Readiness { max_lag } => ok(v.worker_live && (primary || replica(max_lag))),
        Endpoint::Metrics | Endpoint::Cluster => 200,
    }
}

/// The worker counts as live when it finished a round within three rounds' time (at least
/// 10 s: a round may wait its whole probe deadline, a promotion longer).
pub fn worker_live(worker_running: bool, since_last_round: Option<Duration>, keepalive_time: Duration) -> bool {
    let window = (keepalive_time * 3).max(Duration::from_secs(10));
    worker_running && since_last_round.is_some_and(|d| d <= window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(role: Role) -> NodeView {
        NodeView { role, gate_open: true, streaming: true, lag_bytes: Some(0), worker_live: true, paused: false }
    }

    #[test]
    fn paths_and_methods() {
        assert_eq!(route("GET", "/master", None), Ok(Endpoint::Primary));
        assert_eq!(route("OPTIONS", "/primary", None), Ok(Endpoint::Primary));
        assert_eq!(route("GET", "/", None), Ok(Endpoint::Cluster));
        assert_eq!(route("GET", "/replica", Some("lag=16MB")), Ok(Endpoint::Replica { max_lag: Some(16 << 20) }));
        assert_eq!(route("GET", "/nope", None), Err(Refused::NotFound));
        assert_eq!(route("POST", "/primary", None), Err(Refused::MethodNotAllowed));
        assert!(matches!(route("GET", "/replica", Some("lag=lots")), Err(Refused::BadRequest(_))));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("1 kB"), Some(1024));
        assert_eq!(parse_size("2gb"), Some(2 << 30));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999999TB"), None);
    }

    #[test]
    fn codes_by_role() {
        let m = view(Role::Master);
        assert_eq!(status(Endpoint::Primary, &m), 200);
        assert_eq!(status(Endpoint::Replica { max_lag: None }, &m), 503);
        let fenced = NodeView { gate_open: false, ..m.clone() };
        assert_eq!(status(Endpoint::Primary, &fenced), 503);
        assert_eq!(status(Endpoint::ReadOnly { max_lag: None }, &fenced), 503);
        assert_eq!(status(Endpoint::Health, &fenced), 200);
        let s = NodeView { lag_bytes: Some(2000), ..view(Role::Standby) };
        assert_eq!(status(Endpoint::Primary, &s), 503);
        assert_eq!(status(Endpoint::Replica { max_lag: Some(1000) }, &s), 503);
        assert_eq!(status(Endpoint::Replica { max_lag: Some(4000) }, &s), 200);
        let w = view(Role::Witness);
        assert_eq!(status(Endpoint::ReadOnly { max_lag: None }, &w), 503);
        assert_eq!(status(Endpoint::Liveness, &w), 200);
        assert_eq!(status(Endpoint::Readiness { max_lag: None }, &w), 503);
    }

    #[test]
    fn liveness_window() {
        let k = Duration::from_secs(5);
        assert!(worker_live(true, Some(Duration::from_secs(14)), k));
        assert!(!worker_live(true, Some(Duration::from_secs(16)), k));
        assert!(!worker_live(false, Some(Duration::ZERO), k));
        assert!(!worker_live(true, None, k));
    }
}
