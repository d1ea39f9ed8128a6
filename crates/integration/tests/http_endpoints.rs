//! pg_keeper's HTTP endpoints (`pg_keeper.http_listen`) on a real cluster: every endpoint's
//! status code on a master, a standby, a fenced master, a deposed master and a witness;
//! `/metrics` read by a real Prometheus parser; bad HTTP input that neither stops the server
//! nor delays the worker's rounds.

use keeper_integration::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KT: &str = "pg_keeper.keepalive_time = 1";
const KC: &str = "pg_keeper.keepalive_count = 2";

const PATHS: [&str; 8] =
    ["/primary", "/replica", "/replica?lag=16MB", "/read-only", "/health", "/liveness", "/readiness", "/metrics"];

fn codes(n: &Node) -> Vec<(String, u16)> {
    PATHS.iter().map(|p| (p.to_string(), http_code(n, p))).collect()
}

/// Wait until every path answers as expected (the state changes over a round or two).
fn expect_codes(n: &Node, want: &[u16; 8], what: &str) {
    let ok = wait_until(PATIENCE, || codes(n).iter().zip(want).all(|((_, c), w)| c == w));
    if ok.is_err() {
        panic!(
            "{what} ({}): expected {want:?}, got {:?}\n/primary: {:?}\n{}",
            n.name(),
            codes(n),
            http(n, "GET", "/primary"),
            n.log_tail(30)
        );
    }
    eprintln!("{what} ({}): {:?}", n.name(), codes(n));
}

/// `/metrics` through Python's prometheus_client: the OpenMetrics parser (the format we
/// announce) and the classic text parser Prometheus also accepts. Returns the samples as
/// "name{labels} value" lines.
fn parse_metrics(text: &str) -> String {
    let script = r##"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
from prometheus_client.parser import text_string_to_metric_families as classic
t = sys.stdin.read()
fams = list(om(t))
list(classic(t.replace("# EOF\n", "")))
for f in fams:
    for s in f.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"##;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (Debian's, with python3-prometheus-client)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client refused /metrics:\n{}\n---\n{text}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metrics(n: &Node) -> String {
    let (code, body) = http(n, "GET", "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    parse_metrics(&body)
}

fn has(samples: &str, line: &str) -> bool {
    samples.lines().any(|l| l == line)
}

#[test]
fn endpoint_codes_by_role() {
    let cluster = build_keeper_cluster(Cluster::builder("http-roles").netns(true).witness(true).http(true), 1, None, &[KT, KC]);
    let (n1, n2, w) = (cluster.node("node1"), cluster.node("node2"), cluster.node("witness"));
    wait_until(PATIENCE, || {
        w.query_one("SELECT count(*) FROM pgkeeper.node_info").ok().flatten().as_deref() == Some("3")
    })
    .expect("the witness knows the cluster");
    //               primary replica lag=16MB read-only health liveness readiness metrics
    expect_codes(n1, &[200, 503, 503, 200, 200, 200, 200, 200], "master");
    expect_codes(n2, &[503, 200, 200, 200, 200, 200, 200, 200], "standby");
    expect_codes(w, &[503, 503, 503, 503, 200, 200, 503, 200], "witness");

    let m1 = metrics(n1);
    for l in [
        "pg_keeper_role{role=\"master\"} 1.0",
        "pg_keeper_gate{state=\"open\"} 1.0",
        "pg_keeper_gate_open{} 1.0",
        "pg_keeper_peer_up{peer=\"node2\"} 1.0",
        "pg_keeper_peer_up{peer=\"witness\"} 1.0",
        "pg_keeper_worker_live{} 1.0",
        "pg_keeper_paused{} 0.0",
    ] {
        assert!(has(&m1, l), "{l} in the master's metrics:\n{m1}");
    }
    for name in ["pg_keeper_term{}", "pg_keeper_lease_remaining_seconds{}", "pg_keeper_rounds_total{}", "pg_keeper_elections_won_total{}", "pg_keeper_sync_degrades_total{}", "pg_keeper_last_failover_timestamp_seconds{}", "pg_keeper_peer_probe_latency_seconds{peer=\"node2\"}"] {
        assert!(m1.lines().any(|l| l.starts_with(name)), "{name} in the master's metrics:\n{m1}");
    }
    let m2 = metrics(n2);
    assert!(has(&m2, "pg_keeper_role{role=\"standby\"} 1.0"), "{m2}");
    assert!(has(&m2, "pg_keeper_streaming{} 1.0"), "{m2}");
    assert!(m2.lines().any(|l| l.starts_with("pg_keeper_replication_lag_bytes{}")), "{m2}");
    assert!(has(&metrics(w), "pg_keeper_role{role=\"witness\"} 1.0"));

    // /cluster and / are this node's status as JSON.
    let (code, body) = http(n2, "GET", "/cluster").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"role\":\"standby\"") && body.contains("\"node_name\":\"node2\""), "{body}");
    assert_eq!(http_code(n1, "/"), 200);
    // Refusals: unknown path, another method, a malformed lag.
    assert_eq!(http_code(n1, "/nope"), 404);
    assert_eq!(http(n1, "POST", "/primary").unwrap().0, 405);
    assert_eq!(http_code(n2, "/replica?lag=lots"), 400);
    // HAProxy's default check method.
    assert_eq!(http(n1, "OPTIONS", "/primary").unwrap().0, 200);

    // The master cut off: fenced, then node2 elected with the witness's vote.
    cluster.isolate("node1").unwrap();
    expect_codes(n1, &[503, 503, 503, 503, 200, 200, 503, 200], "fenced master");
    assert!(has(&metrics(n1), "pg_keeper_gate{state=\"fenced\"} 1.0"));
    expect_codes(n2, &[200, 503, 503, 200, 200, 200, 200, 200], "new master");
    let m2 = metrics(n2);
    assert!(has(&m2, "pg_keeper_elections_won_total{} 1"), "{m2}");
    assert!(!has(&m2, "pg_keeper_last_failover_timestamp_seconds{} 0.0"), "{m2}");
    // Healed: node1 hears of the newer term and is deposed; it never answers /primary.
    cluster.heal_all().unwrap();
    wait_log(n1, "was elected master in term").unwrap();
    expect_codes(n1, &[503, 503, 503, 503, 200, 200, 503, 200], "deposed master");
    assert!(has(&metrics(n1), "pg_keeper_gate{state=\"deposed\"} 1.0"));
    assert_eq!(http_code(n2, "/primary"), 200);
}

/// rounds and last_round of `status()`.
fn rounds(n: &Node) -> (i64, f64) {
    let r = n
        .query("SELECT rounds, extract(epoch FROM last_round) FROM pgkeeper.status()")
        .unwrap()
        .pop()
        .unwrap();
    (r[0].as_deref().unwrap().parse().unwrap(), r[1].as_deref().unwrap_or("0").parse().unwrap())
}

/// Rounds finished over `d`, and the longest time between two of them (sampled every 50 ms).
fn watch_rounds(n: &Node, d: Duration) -> (i64, f64) {
    let (start, mut last_at) = rounds(n);
    let mut longest: f64 = 0.0;
    let t = Instant::now();
    let mut end = start;
    while t.elapsed() < d {
        std::thread::sleep(Duration::from_millis(50));
        let (r, at) = rounds(n);
        if r != end {
            longest = longest.max(at - last_at);
            last_at = at;
            end = r;
        }
    }
    (end - start, longest)
}

/// Slow and malicious clients: many connections sending a byte a second (slowloris), request
/// heads far over the limit, garbage, unknown paths. The server stays up, its rounds go on at
/// their pace, and the endpoints answer again once the attack stops.
#[test]
fn bad_http_input_does_not_delay_rounds() {
    let cluster = build_keeper_cluster(Cluster::builder("http-bad").netns(true).http(true), 1, None, &[KT]);
    let n1 = cluster.node("node1");
    let addr = n1.http_addr();
    let ns = n1.ns().unwrap().to_string();
    wait_until(PATIENCE, || http_code(n1, "/primary") == 200).expect("master answers /primary");
    let pid = n1.postmaster_pid();
    let (base_rounds, base_gap) = watch_rounds(n1, Duration::from_secs(8));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    // 64 slowloris connections (twice the cap), each reconnecting when closed.
    for _ in 0..64 {
        let (stop, addr, ns) = (stop.clone(), addr.clone(), ns.clone());
        attackers.push(std::thread::spawn(move || {
            enter_netns(&ns).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(&addr) else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                let _ = s.write_all(b"GET /primary HTTP/1.1\r\n");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(b"X-a: b\r\n").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }));
    }
    // Oversized heads, garbage and unknown paths, as fast as answers come.
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let (stop, addr, answers, ns) = (stop.clone(), addr.clone(), answers.clone(), ns.clone());
        attackers.push(std::thread::spawn(move || {
            enter_netns(&ns).unwrap();
            let big = format!("GET /primary HTTP/1.1\r\nX-big: {}\r\n\r\n", "a".repeat(1 << 20));
            let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
            let reqs: [&[u8]; 3] = [big.as_bytes(), &garbage, b"GET /../../etc/passwd HTTP/1.1\r\n\r\n"];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for r in reqs {
                    let Ok(mut s) = TcpStream::connect(&addr) else { continue };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                    let _ = s.write_all(r);
                    let mut b = [0u8; 64];
                    let n = s.read(&mut b).unwrap_or(0);
                    let line = String::from_utf8_lossy(&b[..n]).lines().next().unwrap_or("(closed)").to_string();
                    answers.lock().unwrap().push(line);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (attack_rounds, attack_gap) = watch_rounds(n1, Duration::from_secs(8));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    eprintln!(
        "rounds in 8 s: {base_rounds} before, {attack_rounds} under attack; longest gap {base_gap:.2} s before, {attack_gap:.2} s under attack; {} bad requests, answers seen: {:?}",
        answers.len(),
        answers.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(attack_rounds >= base_rounds - 1, "rounds slowed: {base_rounds} -> {attack_rounds}");
    assert!(attack_gap < 1.5, "a round came {attack_gap:.2} s after the one before (keepalive_time 1 s)");
    assert!(answers.iter().any(|a| a.contains(" 431") || a.contains(" 400")), "{answers:?}");
    assert!(answers.iter().any(|a| a.contains(" 404")), "{answers:?}");
    // Up, the same postmaster, and answering again.
    assert_eq!(n1.postmaster_pid(), pid);
    assert_eq!(n1.query_one("SELECT 1").unwrap().as_deref(), Some("1"));
    wait_until(Duration::from_secs(10), || http_code(n1, "/primary") == 200).expect("answers after the attack");
    assert!(!n1.log_contents().contains("PANIC"));
}
