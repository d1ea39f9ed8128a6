//! The background worker on real clusters: its mode on the master and on hot standbys,
//! settings reloads, surviving kill -9, SIGTERM with a hung peer, and a missing node_name.

use keeper_integration::*;
use std::time::{Duration, Instant};

#[test]
fn modes_titles_and_status() {
    let cluster = keeper_cluster("modes", 2, Some("node2"), &["pg_keeper.keepalive_time = 1"]);
    let m = cluster.node("node1");
    let title = wait_title(m, "master (connected, 2)").unwrap();
    assert!(title.contains("pg_keeper"), "{title}");
    wait_log(m, "pg_keeper: entering master mode").unwrap();
    for s in ["node2", "node3"] {
        let n = cluster.node(s);
        wait_title(n, "standby (connected to node1)").unwrap();
        wait_log(n, "pg_keeper: entering standby mode").unwrap();
        // status() is readable on a hot standby.
        let row = &n.query("SELECT node_name, mode, failed_rounds FROM pgkeeper.status()").unwrap()[0];
        assert_eq!(row[0].as_deref(), Some(s));
        assert_eq!(row[1].as_deref(), Some("standby"));
        assert_eq!(row[2].as_deref(), Some("0"));
    }
    let peers = m
        .query_one("SELECT string_agg(p->>'name' || '=' || (p->>'result'), ',' ORDER BY p->>'name') FROM pgkeeper.status(), jsonb_array_elements(peers) p")
        .unwrap();
    assert_eq!(peers.as_deref(), Some("node2=ok,node3=ok"));
}

#[test]
fn settings_reload_with_sighup_and_aliases() {
    let cluster = keeper_cluster("settings", 1, None, &["pg_keeper.keepalive_time = 1"]);
    let m = cluster.node("node1");
    wait_log(m, "keepalive_time=1s, keepalive_count=1").unwrap();
    // Sub-second values in seconds or with a unit, reloaded by SIGHUP (pg_ctl reload).
    m.execute("ALTER SYSTEM SET pg_keeper.keepalive_time = '200ms'").unwrap();
    m.execute("ALTER SYSTEM SET pg_keeper.keepalive_count = 4").unwrap();
    m.reload().unwrap();
    wait_log(m, "keepalive_time=0.2s, keepalive_count=4").unwrap();
    // Rounds now come five times a second.
    let rounds = || m.query_one("SELECT rounds FROM pgkeeper.status()").unwrap().unwrap().parse::<i64>().unwrap();
    let r0 = rounds();
    std::thread::sleep(Duration::from_secs(2));
    assert!(rounds() - r0 >= 5, "rounds did not speed up after reload");
    // The seed's spelling alone is used, with a deprecation warning ...
    m.execute("ALTER SYSTEM RESET pg_keeper.keepalive_count").unwrap();
    m.execute("ALTER SYSTEM SET pg_keeper.keepalives_count = 7").unwrap();
    m.reload().unwrap();
    wait_log(m, "keepalive_count=7").unwrap();
    wait_log(m, "pg_keeper.keepalives_count is deprecated").unwrap();
    // ... and the documented name wins when both are set.
    m.execute("ALTER SYSTEM SET pg_keeper.keepalive_count = 2").unwrap();
    m.reload().unwrap();
    wait_log(m, "keepalive_count=2").unwrap();
    wait_log(m, "the documented setting wins").unwrap();
    // Out-of-range values are refused by PostgreSQL itself.
    let e = m.execute("ALTER SYSTEM SET pg_keeper.keepalive_time = '10ms'").unwrap_err();
    assert!(format!("{e:#}").contains("outside the valid range"), "{e:#}");
    let e = m.execute("SET pg_keeper.keepalive_cuont = 2").unwrap_err();
    assert!(format!("{e:#}").contains("reserved prefix"), "{e:#}");
}

/// kill -9 of the worker alone: PostgreSQL treats any child killed by a signal as a crash,
/// so the postmaster resets all backends and runs crash recovery (restart_after_crash), then
/// restarts the worker. The server comes back, the worker runs again, and standbys stream.
/// keepalive_count = 3: the master's crash-restart (about 0.5 s without connections) must not
/// be taken for a master failure here. With keepalive_count = 1 it can be, and then the
/// restarted master is a second writable node: see "What happens when" in the README.
#[test]
fn worker_survives_kill9() {
    let cluster = keeper_cluster("kill9", 2, None, &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 3"]);
    let (m, s) = (cluster.node("node1"), cluster.node("node2"));
    wait_title(m, "master (connected, 2)").unwrap();
    for node in [m, s] {
        let (pid, _) = worker(node).expect("worker runs");
        let postmaster = node.postmaster_pid();
        kill9(pid);
        wait_until(PATIENCE, || worker(node).is_some_and(|(p, _)| p != pid)).expect("worker restarted");
        assert_eq!(node.postmaster_pid(), postmaster, "postmaster survived");
        node.wait_ready(PATIENCE).unwrap();
    }
    wait_title(m, "master (connected, 2)").unwrap();
    wait_title(s, "standby (connected to node1)").unwrap();
    cluster.wait_streaming(PATIENCE).unwrap();
    m.execute("CREATE TABLE after_crash(i int); INSERT INTO after_crash VALUES (1)").unwrap();
    wait_replayed(m, s).unwrap();
    assert_eq!(s.query_one("SELECT count(*) FROM after_crash").unwrap().as_deref(), Some("1"));
}

fn kill9(pid: i32) {
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
}

/// A hung peer (SIGSTOPped: the kernel accepts its TCP connections, nothing answers) must
/// neither stall the loop nor delay shutdown.
#[test]
fn hung_peer_does_not_stall_loop_or_shutdown() {
    let cluster = keeper_cluster("hung", 2, None, &["pg_keeper.keepalive_time = 2"]);
    let (m, s2) = (cluster.node("node1"), cluster.node("node2"));
    wait_title(m, "master (connected, 2)").unwrap();
    s2.sigstop();
    // Rounds keep coming, with node2 reported as not answering.
    wait_title(m, "master (connected, 1)").unwrap();
    let r0: i64 = m.query_one("SELECT rounds FROM pgkeeper.status()").unwrap().unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let r1: i64 = m.query_one("SELECT rounds FROM pgkeeper.status()").unwrap().unwrap().parse().unwrap();
    assert!(r1 - r0 >= 2, "loop stalled: {r0} -> {r1}");
    let err = m
        .query_one(
            "SELECT p->>'error' FROM pgkeeper.status(), jsonb_array_elements(peers) p WHERE p->>'name' = 'node2'",
        )
        .unwrap()
        .unwrap_or_default();
    assert!(err.contains("no answer within"), "{err}");
    // SIGTERM is not delayed by a probe in flight: with keepalive_time = 20 s a probe to
    // the hung node waits 10 s (its deadline); the worker must still exit at once.
    m.execute("ALTER SYSTEM SET pg_keeper.keepalive_time = 20").unwrap();
    m.reload().unwrap();
    wait_log(m, "keepalive_time=20s").unwrap();
    let (pid, _) = worker(m).unwrap();
    // A registry notification starts a round at once; let its probes get under way.
    m.query("SELECT pgkeeper.indirect_kill('SIGUSR1')").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    wait_until(Duration::from_secs(5), || !keeper_harness::proc::alive(pid))
        .expect("worker still alive 5 s after SIGTERM while its probe had 10 s left");
    eprintln!("worker exited {:?} after SIGTERM", t.elapsed());
    // Exiting on SIGTERM outside a shutdown, it is restarted by the postmaster.
    wait_until(PATIENCE, || worker(m).is_some_and(|(p, _)| p != pid)).expect("worker restarted");
    s2.sigcont();
}

#[test]
fn missing_node_name_keeps_worker_idle() {
    let cluster = keeper_cluster("noname", 1, None, &["pg_keeper.keepalive_time = 1"]);
    let s = cluster.node("node2");
    s.append_conf("pg_keeper.node_name = ''").unwrap();
    s.reload().unwrap();
    wait_log(s, "pg_keeper.node_name is not set").unwrap();
    wait_title(s, "idle").unwrap();
    s.append_conf("pg_keeper.node_name = 'node2'").unwrap();
    s.reload().unwrap();
    wait_title(s, "standby (connected to node1)").unwrap();
}

/// pg_keeper hooks every utility statement (the commit gate for COMMIT/ROLLBACK PREPARED):
/// errors of other statements must reach the client exactly as PostgreSQL raised them, with
/// their cursor position, CONTEXT and constraint name.
#[test]
fn utility_errors_keep_position_context_and_fields() {
    let cluster = keeper_cluster("utility-errors", 1, None, &["pg_keeper.keepalive_time = 1"]);
    let mut c = cluster.master().try_connect().unwrap();
    let e = c.batch_execute("CREATE TABLE t (a nosuchtype)").unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert!(db.message().contains("nosuchtype"), "{}", db.message());
    assert!(db.position().is_some(), "the error lost its cursor position: {db:?}");
    let e = c.batch_execute("DO $$ BEGIN PERFORM 1 / 0; END $$").unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert!(db.where_().is_some_and(|w| w.contains("PL/pgSQL")), "the error lost its CONTEXT: {db:?}");
    c.batch_execute("CREATE TABLE u (a int); INSERT INTO u VALUES (-1)").unwrap();
    let e = c.batch_execute("ALTER TABLE u ADD CONSTRAINT positive CHECK (a > 0)").unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.constraint(), Some("positive"), "the error lost its constraint name: {db:?}");
    assert_eq!(db.table(), Some("u"), "{db:?}");
}
