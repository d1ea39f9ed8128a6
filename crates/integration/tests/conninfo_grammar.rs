//! Issue 5/7: one conninfo grammar, libpq's. `add_node` accepts a conninfo exactly when
//! libpq (the library the walreceiver and psql use) can connect with it, in every keyword
//! class: URIs, services, sslmode values, keepalives, keywords this libpq does not know; a
//! refusal carries libpq's own message, and changes nothing.

use keeper_integration::*;
use std::time::{Duration, Instant};

#[test]
fn add_node_accepts_exactly_what_libpq_accepts() {
    // A 2-node cluster where only node1 is registered: node2 is added in many spellings.
    let cluster = keeper_harness::ClusterBuilder::new("grammar").standbys(1).keeper(true).build().unwrap();
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    n1.execute("CREATE EXTENSION pg_keeper").unwrap();
    add_node(n1, "node1", &n1.conninfo()).unwrap();
    // A service file for the master's server (its backends run add_node's check) and for
    // this process (which asks libpq the same question).
    let services = cluster.base_dir().join("pg_service.conf");
    std::fs::write(&services, format!("[n2]\nhost=127.0.0.1\nport={}\nuser=postgres\ndbname=postgres\n", n2.port()))
        .unwrap();
    n1.set_env("PGSERVICEFILE", &services.display().to_string());
    n1.restart().unwrap();
    std::env::set_var("PGSERVICEFILE", &services);
    wait_title(n1, "master").unwrap();

    let p = n2.port();
    let base = format!("host=127.0.0.1 port={p} user=postgres dbname=postgres");
    // (conninfo, part of libpq's message when it refuses)
    let cases: Vec<(String, &str)> = vec![
        (format!("postgresql://postgres@127.0.0.1:{p}/postgres?application_name=x&connect_timeout=3"), ""),
        (format!("postgres://127.0.0.1:{p}?user=postgres&keepalives_idle=30"), ""),
        ("service=n2".to_string(), ""),
        ("service=n2 application_name=x".to_string(), ""),
        (format!("{base} sslmode=disable"), ""),
        (format!("{base} sslmode=allow"), ""),
        (format!("{base} sslmode=prefer"), ""),
        (format!("{base} keepalives=1 keepalives_idle=30 keepalives_interval=5 keepalives_count=3 tcp_user_timeout=2000"), ""),
        (format!("{base} target_session_attrs=any gssencmode=disable channel_binding=prefer"), ""),
        (format!("{base} options='-c work_mem=8MB'"), ""),
        (format!("{base} sslmode=require"), "server does not support SSL, but SSL was required"),
        (format!("{base} sslmode=verify-full"), "server does not support SSL, but SSL was required"),
        (format!("{base} sslmode=bogus"), "invalid sslmode value: \"bogus\""),
        (format!("{base} keepalives_count=many"), "invalid integer value \"many\" for connection option \"keepalives_count\""),
        (format!("{base} target_session_attrs=primary"), "server is in hot standby mode"),
        ("service=nosuch".to_string(), "definition of service \"nosuch\" not found"),
        (format!("{base} nosuchkeyword=1"), "invalid connection option \"nosuchkeyword\""),
        (format!("{base} application_name='unterminated"), "unterminated quoted string in connection info string"),
        (format!("postgresql://127.0.0.1:{p}/postgres?nosuch=1"), "invalid URI query parameter: \"nosuch\""),
        (format!("postgresql://[127.0.0.1:{p}/postgres"), "end of string reached when looking for matching \"]\""),
    ];
    let until = || Instant::now() + Duration::from_secs(5);
    for (ci, refusal) in &cases {
        let libpq = keeper_pq::Conn::connect(ci, &[], until()).map(|_| ()).map_err(|e| e.message);
        let before = node_info(n1);
        let added = add_node(n1, "node2", ci).map_err(|e| format!("{e:#}"));
        eprintln!("{ci:?}: libpq {libpq:?}, add_node {added:?}");
        assert_eq!(libpq.is_ok(), added.is_ok(), "{ci:?}: libpq {libpq:?} but add_node {added:?}");
        match added {
            Ok(_) => {
                assert!(refusal.is_empty(), "{ci:?} was accepted; expected {refusal:?}");
                // Back to one node, for the next spelling (a membership change at a time).
                wait_until(PATIENCE, || {
                    n1.query_one("SELECT pgkeeper.del_node('node2')::text").is_ok()
                })
                .expect("del_node");
            }
            Err(e) => {
                assert!(!refusal.is_empty(), "{ci:?} refused: {e}");
                assert!(e.contains(refusal), "{ci:?}: add_node says {e:?}, not libpq's {refusal:?}");
                assert!(libpq.unwrap_err().contains(refusal), "{ci:?}: libpq says otherwise");
                assert_eq!(node_info(n1), before, "{ci:?} refused but node_info changed");
            }
        }
    }
    // A node registered in one spelling is the same server in another (host:port identity).
    add_node(n1, "node2", &base).unwrap();
    let e = format!("{:#}", add_node(n1, "again", &format!("postgresql://127.0.0.1:{p}/postgres?user=postgres")).unwrap_err());
    assert!(e.contains("node2"), "the same server in URI form is refused: {e}");
}
