//! The commit gate is closed only where it must be, and says why: a server that is in no
//! cluster is never fenced, even when its worker cannot run; a cluster member whose worker
//! cannot connect stays fenced and its refusal names the cause, with the advice in HINT.

use keeper_integration::*;
use std::time::{Duration, Instant};

const KT: &str = "pg_keeper.keepalive_time = 1";
const KC: &str = "pg_keeper.keepalive_count = 3";

/// A write on a fresh connection: Ok, or the server's message, its HINT and its DETAIL.
fn insert(n: &Node) -> Result<(), (String, Option<String>, Option<String>)> {
    let parts = |e: postgres::Error| match e.as_db_error() {
        Some(db) => (db.message().to_string(), db.hint().map(str::to_string), db.detail().map(str::to_string)),
        None => (e.to_string(), None, None),
    };
    let mut c = n.try_connect().map_err(|e| (e.to_string(), None, None))?;
    c.batch_execute("CREATE TABLE IF NOT EXISTS gate_t (id int)").map_err(parts)?;
    c.execute("INSERT INTO gate_t VALUES (1)", &[]).map(|_| ()).map_err(parts)
}

/// A single server with pg_keeper preloaded and a node name, but pg_keeper.database names a
/// database that does not exist: the worker exits with FATAL at every start and never reads
/// node_info. Nothing says this server is in a cluster (it never saw itself registered, it
/// has no vote record), so its commits are not fenced.
#[test]
fn a_server_in_no_cluster_is_not_fenced_when_its_worker_cannot_run() {
    let cluster = Cluster::builder("gate-alone")
        .standbys(0)
        .keeper(true)
        .conf("pg_keeper.database = 'nosuchdb'")
        .build()
        .unwrap();
    let n = cluster.master();
    wait_log(n, "\"nosuchdb\" does not exist").expect("the worker cannot connect");
    let t = Instant::now();
    insert(n).unwrap_or_else(|e| panic!("a server in no cluster refused a commit: {e:?}"));
    println!("INSERT committed in {:.3} s", t.elapsed().as_secs_f64());
    assert!(!n.log_contents().contains("fenced"), "{}", n.log_tail(20));
}

/// A registered master restarted with a pg_keeper.database it cannot connect to: it starts
/// fenced (its vote record says it is a member), and the refusal says that the worker cannot
/// connect to that database, with the advice as a HINT (no DETAIL).
#[test]
fn a_member_whose_worker_cannot_connect_is_fenced_and_says_why() {
    let cluster = keeper_cluster("gate-member", 2, None, &[KT, KC]);
    let m = cluster.node("node1");
    wait_until(PATIENCE, || commit_gate(m) == "open").expect("node1 holds its lease");
    assert!(m.data_dir().join("pg_keeper.node1.vote").exists(), "the worker records membership");
    m.append_conf("pg_keeper.database = 'nosuchdb'").unwrap();
    m.restart().unwrap();
    wait_log(m, "\"nosuchdb\" does not exist").expect("the worker cannot connect");
    let t = Instant::now();
    let (msg, hint, detail) = match insert(m) {
        Ok(()) => panic!("a fenced member acknowledged a commit"),
        Err(e) => e,
    };
    println!("refused after {:.1} s: {msg} / HINT: {hint:?} / DETAIL: {detail:?}", t.elapsed().as_secs_f64());
    assert!(msg.contains("cannot connect to database \"nosuchdb\""), "the refusal names the cause: {msg}");
    assert!(hint.is_some_and(|h| !h.is_empty()), "advice in HINT: {msg}");
    assert_eq!(detail, None, "no DETAIL");
    assert!(t.elapsed() > Duration::from_secs(1), "it waited at the gate first");
}
