//! Elections (issue 5/5) on real clusters: another standby elected when the next master is
//! gone, the vote API's refusals, votes persisted on disk, and a witness.

use keeper_integration::*;
use std::time::Duration;

const KT: &str = "pg_keeper.keepalive_time = 1";
const KC: &str = "pg_keeper.keepalive_count = 2";

/// The next master killed, then at once the master (5 nodes, node_info still naming node2):
/// the remaining standbys elect one of them, and the others follow it.
#[test]
fn next_master_killed_then_master_killed_another_is_elected() {
    let cluster = keeper_cluster("el-next", 4, None, &[KT, KC]);
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    wait_title(n2, "standby (connected to node1)").unwrap();
    n1.execute(WRITES_TABLE).unwrap();
    n1.execute("INSERT INTO pgk_writes (id) SELECT generate_series(1, 100)").unwrap();
    for n in &cluster.nodes()[1..] {
        wait_replayed(n1, n).unwrap();
    }
    n2.kill9();
    n1.kill9();
    wait_until(PATIENCE, || writable(&cluster).len() == 1).expect("a new master");
    let new = writable(&cluster)[0].clone();
    assert!(["node3", "node4", "node5"].contains(&new.as_str()), "{new}");
    let m = cluster.node(&new);
    assert!(m.log_contents().contains("elected in term"), "{}", m.log_tail(20));
    for other in ["node3", "node4", "node5"].iter().filter(|n| **n != new) {
        wait_until(PATIENCE, || streams_from(m, other)).unwrap_or_else(|_| panic!("{other} follows {new}"));
        // Each voter persisted its vote in its own data directory.
        let vote = std::fs::read_to_string(cluster.node(other).data_dir().join(format!("pg_keeper.{other}.vote")));
        assert!(vote.as_deref().unwrap_or("").contains(&format!("voted_for {new}")), "{other}: {vote:?}");
    }
    assert_eq!(rows(m).len(), 100);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(writable(&cluster), vec![new]);
}

/// request_vote's refusals: bad input is an error that changes nothing; a standby that hears
/// from a live master refuses (the master's lease); a master refuses; non-superusers may not.
#[test]
fn request_vote_refuses_bad_input_and_live_masters() {
    let cluster = keeper_cluster("el-api", 2, None, &[KT]);
    let (n1, n3) = (cluster.node("node1"), cluster.node("node3"));
    wait_title(cluster.node("node2"), "standby (connected to node1)").unwrap();
    // node3 hears the master's heartbeats (its vote is held) and its worker has written its
    // record (at its first round as a registered node).
    wait_title(n3, "standby (connected to node1)").unwrap();
    let vote_file = n3.data_dir().join("pg_keeper.node3.vote");
    wait_until(PATIENCE, || vote_file.exists()).expect("node3's worker writes its vote record");
    let before = std::fs::read_to_string(&vote_file).ok();
    let sql = "SELECT granted, term, reason FROM pgkeeper.request_vote($1, $2, $3)";
    let bad: [(Option<&str>, Option<i64>, Option<&str>, &str); 6] = [
        (None, Some(5), Some("0/0"), "must not be NULL"),
        (Some("node2"), None, Some("0/0"), "must not be NULL"),
        (Some("node2"), Some(5), None, "must not be NULL"),
        (Some("node2"), Some(0), Some("0/0"), "term must be at least 1"),
        (Some("node2"), Some(5), Some("nonsense"), "invalid WAL position"),
        (Some("no de"), Some(5), Some("0/0"), "invalid node name"),
    ];
    for (c, t, l, want) in bad {
        let mut cl = n3.try_connect().unwrap();
        let e = cl.query_one(sql, &[&c, &t, &l]).unwrap_err();
        assert!(db_message(&e).contains(want), "{c:?} {t:?} {l:?}: {}", db_message(&e));
    }
    // A live master's heartbeats hold the vote. (The request names no membership version, so
    // it can never be granted; on a loaded machine a late heartbeat may leave node3 without a
    // hold for a moment, and the refusal then cites the version: ask again. As a pre-vote
    // (dry_run), which persists nothing: a real request in that moment would make node3 adopt
    // term 5, and the master's older-term heartbeats would hold nothing there any more.)
    let dry = "SELECT granted, term, reason FROM pgkeeper.request_vote($1, $2, $3, true)";
    let mut cl = n3.try_connect().unwrap();
    let mut reason = String::new();
    let held = wait_until(Duration::from_secs(10), || {
        let row = cl.query_one(dry, &[&"node2", &5i64, &"FFFF/0"]).unwrap();
        assert!(!row.get::<_, bool>(0), "a vote granted while the master lives");
        reason = row.get::<_, String>(2);
        reason.contains("lease")
    });
    assert!(held.is_ok(), "{reason}");
    // The master never votes.
    let mut cm = n1.try_connect().unwrap();
    let row = cm.query_one(sql, &[&"node2", &5i64, &"FFFF/0"]).unwrap();
    assert!(!row.get::<_, bool>(0));
    assert!(row.get::<_, String>(2).contains("master"));
    assert_eq!(std::fs::read_to_string(&vote_file).ok(), before, "a refused vote changed the record");
    // Not for PUBLIC.
    n1.execute("CREATE ROLE pgk_nobody LOGIN").unwrap();
    wait_replayed(n1, n3).unwrap();
    let mut cfg: postgres::Config = n3.admin_conninfo().parse().unwrap();
    cfg.user("pgk_nobody");
    let mut c = cfg.connect(postgres::NoTls).unwrap();
    let e = c.query_one(sql, &[&"node2", &5i64, &"0/0"]).unwrap_err();
    assert!(db_message(&e).contains("permission denied"), "{}", db_message(&e));
    // Nothing promoted by any of this.
    assert_eq!(writable(&cluster), vec!["node1".to_string()]);
}

/// Two data nodes and a witness; the master isolated: node2 is elected with the witness's
/// vote, the old master fences, the witness never takes writes or promotes.
#[test]
fn witness_gives_two_data_nodes_a_safe_failover() {
    let cluster = keeper_cluster_with_witness("el-wit", 1, &[KT, KC]);
    let (n1, n2, w) = (cluster.node("node1"), cluster.node("node2"), cluster.node("witness"));
    wait_title(n2, "standby (connected to node1)").unwrap();
    // The master hands node_info to the witness (it has no replica of it).
    wait_until(PATIENCE, || {
        w.query_one("SELECT count(*) FROM pgkeeper.node_info").ok().flatten().as_deref() == Some("3")
    })
    .expect("the witness knows the cluster");
    wait_title(w, "witness").unwrap();
    cluster.isolate("node1").unwrap();
    wait_until(PATIENCE, || n2.is_in_recovery().ok() == Some(false)).expect("node2 elected with the witness's vote");
    assert!(n2.log_contents().contains("elected in term"));
    let commits = n1.query_one("SELECT commits FROM pgkeeper.status()").unwrap().unwrap_or_default();
    assert_eq!(commits, "fenced");
    assert_eq!(writable_by_write(&cluster), vec!["node2".to_string()]);
    cluster.heal_all().unwrap();
    wait_log(n1, "was elected master in term").unwrap();
    assert_eq!(writable_by_write(&cluster), vec!["node2".to_string()]);
    assert_eq!(w.query_one("SELECT mode FROM pgkeeper.status()").unwrap().as_deref(), Some("witness"));
    let wv = std::fs::read_to_string(w.data_dir().join("pg_keeper.witness.vote")).unwrap_or_default();
    assert!(wv.contains("voted_for node2"), "{wv}");
}
