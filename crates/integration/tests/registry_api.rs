//! The seed's SQL API on a real 3-node cluster: valid calls, every bad input (clear error,
//! nothing changed), what the standbys see after replication, and who may call it.

use keeper_integration::*;
use std::net::TcpListener;

type Row = (String, String, String, String, String);

fn row(seqno: &str, name: &str, master: bool, next: bool, sync: bool) -> Row {
    let b = |v: bool| if v { "t" } else { "f" }.to_string();
    (seqno.into(), name.into(), b(master), b(next), b(sync))
}

fn none_int() -> Option<i32> {
    None
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn expect_error(on: &Node, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)], needle: &str) {
    let before = node_info(on);
    match exec_params(on, sql, params) {
        Ok(()) => {
            panic!("{sql} with {params:?} succeeded; expected an error containing {needle:?}")
        }
        Err(e) => assert!(e.to_string().contains(needle), "{sql}: error {e:?} lacks {needle:?}"),
    }
    assert_eq!(node_info(on), before, "{sql} failed but changed node_info");
}

fn connect_as(node: &Node, user: &str) -> postgres::Client {
    let mut cfg = postgres::Config::new();
    cfg.host("127.0.0.1").port(node.port()).user(user).dbname("postgres");
    cfg.connect(postgres::NoTls).expect("connect as role")
}

#[test]
fn api_valid_and_bad_input() {
    let cluster =
        Cluster::builder("api").standbys(2).synchronous_standby_names("node3").keeper(true).build().expect("cluster");
    let (m, s2, s3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
    m.execute("CREATE EXTENSION pg_keeper").unwrap();
    wait_replayed(m, s2).unwrap();

    // Registering on a standby is refused with a hint.
    let e = exec_params(s2, "SELECT pgkeeper.add_node($1, $2)", &[&"node1", &m.conninfo()]).unwrap_err();
    assert!(e.to_string().contains("cannot run on a standby"), "{e}");
    assert!(e.to_string().contains("Run it on the master"), "{e}");

    // The first node is the master; the first synchronous standby is the next master.
    assert!(add_node(m, "node1", &m.conninfo()).unwrap());
    assert_eq!(node_info(m), vec![row("1", "node1", true, false, false)]);
    assert!(add_node(m, "node2", &s2.conninfo()).unwrap());
    assert_eq!(node_info(m)[1], row("2", "node2", false, true, false), "only standby: next master");
    assert!(add_node(m, "node3", &s3.conninfo()).unwrap());
    let full = vec![
        row("1", "node1", true, false, false),
        row("2", "node2", false, false, false),
        row("3", "node3", false, true, true),
    ];
    assert_eq!(node_info(m), full);

    // Every bad input: a clear error, node_info unchanged.
    let add = "SELECT pgkeeper.add_node($1, $2)";
    let none: Option<&str> = None;
    let unreachable = format!("host=127.0.0.1 port={} user=postgres", dead_port());
    expect_error(m, add, &[&none, &"host=127.0.0.1"], "node_name must not be NULL");
    expect_error(m, add, &[&"x", &none], "conninfo must not be NULL");
    expect_error(m, add, &[&"x", &""], "empty conninfo");
    // libpq's own messages (PQconninfoParse; the port is libpq's connect-time check).
    expect_error(m, add, &[&"x", &"host=127.0.0.1 port=notaport"], "invalid integer value \"notaport\" for connection option \"port\"");
    expect_error(m, add, &[&"x", &"just garbage"], "missing \"=\" after \"just\" in connection info string");
    expect_error(m, add, &[&"x", &"hots=127.0.0.1"], "invalid connection option \"hots\"");
    expect_error(m, add, &[&"x", &unreachable], "does not answer");
    expect_error(m, add, &[&"NODE2", &unreachable], "already registered");
    expect_error(m, add, &[&"other", &s2.conninfo()], "already registered for server");
    expect_error(m, add, &[&"bad name", &unreachable], "invalid node name");
    expect_error(m, add, &[&"", &unreachable], "invalid node name");
    expect_error(m, "SELECT pgkeeper.del_node($1::text)", &[&"node1"], "is the master and cannot be deleted");
    expect_error(m, "SELECT pgkeeper.del_node($1::text)", &[&"nope"], "no node named \"nope\"");
    expect_error(m, "SELECT pgkeeper.del_node($1::int)", &[&99i32], "no node with seqno 99");
    expect_error(m, "SELECT pgkeeper.del_node($1::text)", &[&none], "must not be NULL");
    let none_i: Option<i32> = None;
    expect_error(m, "SELECT pgkeeper.del_node($1::int)", &[&none_i], "must not be NULL");
    expect_error(m, "SELECT pgkeeper.indirect_kill($1)", &[&"SIGKILL"], "unknown signal");
    expect_error(m, "SELECT pgkeeper.indirect_kill($1)", &[&none], "must not be NULL");
    expect_error(m, "SELECT pgkeeper.indirect_polling($1)", &[&none], "must not be NULL");
    expect_error(m, "SELECT pgkeeper.indirect_polling($1)", &[&"nonsense"], "invalid conninfo");
    expect_error(m, "SELECT pgkeeper.indirect_polling($1, $2)", &[&m.conninfo(), &0i32], "timeout_ms");
    expect_error(m, "SELECT pgkeeper.pause_failover($1)", &[&none_int()], "must not be NULL");
    expect_error(m, "SELECT pgkeeper.pause_failover($1)", &[&-1i32], "between 0 and 3600");
    expect_error(m, "SELECT pgkeeper.pause_failover($1)", &[&3601i32], "between 0 and 3600");
    // Direct writes are refused, even for a superuser.
    let direct = "cannot be modified directly";
    expect_error(m, "INSERT INTO pgkeeper.node_info VALUES (9, 'x', 'host=h')", &[], direct);
    expect_error(m, "UPDATE pgkeeper.node_info SET is_master = true", &[], direct);
    expect_error(m, "DELETE FROM pgkeeper.node_info", &[], direct);
    expect_error(m, "TRUNCATE pgkeeper.node_info", &[], direct);
    expect_error(s2, "SELECT pgkeeper.del_node($1::text)", &[&"node3"], "cannot run on a standby");

    // indirect_polling answers whether the target answered, within the deadline.
    let mut c = m.try_connect().unwrap();
    let ok: bool = c.query_one("SELECT pgkeeper.indirect_polling($1)", &[&s2.conninfo()]).unwrap().get(0);
    assert!(ok);
    let ok: bool = c.query_one("SELECT pgkeeper.indirect_polling($1, 500)", &[&unreachable]).unwrap().get(0);
    assert!(!ok);
    // It is also what standbys call on each other.
    let mut c2 = s2.try_connect().unwrap();
    let ok: bool = c2.query_one("SELECT pgkeeper.indirect_polling($1)", &[&m.conninfo()]).unwrap().get(0);
    assert!(ok);
    // indirect_kill reaches the local worker.
    for sig in ["SIGUSR1", "SIGUSR2"] {
        let ok: bool = c.query_one("SELECT pgkeeper.indirect_kill($1)", &[&sig]).unwrap().get(0);
        assert!(ok, "{sig}");
    }

    // The standbys see the same registry after replication.
    wait_replayed(m, s3).unwrap();
    assert_eq!(node_info(s3), full);

    // Deleting the next master picks another; deletion by seqno works too.
    exec_params(m, "SELECT pgkeeper.del_node($1::text)", &[&"node3"]).unwrap();
    assert_eq!(node_info(m), vec![row("1", "node1", true, false, false), row("2", "node2", false, true, false)]);
    exec_params(m, "SELECT pgkeeper.del_node($1::int)", &[&2i32]).unwrap();
    assert_eq!(node_info(m), vec![row("1", "node1", true, false, false)]);
    wait_replayed(m, s2).unwrap();
    assert_eq!(node_info(s2), node_info(m));

    // Only superusers and members of pgkeeper_admin.
    m.execute("CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN IN ROLE pgkeeper_admin").unwrap();
    let mut alice = connect_as(m, "alice");
    for sql in [
        "SELECT pgkeeper.add_node('node3', 'host=127.0.0.1')",
        "SELECT * FROM pgkeeper.node_info",
        "SELECT pgkeeper.indirect_polling('host=127.0.0.1')",
        "SELECT pgkeeper.indirect_kill('SIGUSR1')",
        "SELECT pgkeeper.del_node('node2')",
        "SELECT pgkeeper.pause_failover(10)",
    ] {
        let e = alice.simple_query(sql).unwrap_err();
        assert!(db_message(&e).contains("permission denied"), "{sql}: {}", db_message(&e));
    }
    let mut bob = connect_as(m, "bob");
    bob.query_one("SELECT pgkeeper.add_node($1, $2)", &[&"node3", &s3.conninfo()]).unwrap();
    let e = bob.simple_query("DELETE FROM pgkeeper.node_info").unwrap_err();
    assert!(db_message(&e).contains("cannot be modified directly"));
    assert_eq!(node_info(m).len(), 2);
}
