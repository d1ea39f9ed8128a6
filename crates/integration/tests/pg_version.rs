//! Which PostgreSQL the suite runs on: the harness starts the servers from PGK_PG_BINDIR (or
//! pg_config --bindir, else Debian's 15), and `make test-pg16` / `test-pg18` set
//! PGK_EXPECT_PG so that a suite meant for one version cannot pass on another.

use keeper_integration::*;

#[test]
fn servers_run_the_expected_version_with_pg_keeper() {
    let cluster = keeper_cluster("pg-version", 1, None, &["pg_keeper.keepalive_time = 1"]);
    let m = cluster.node("node1");
    let num: u32 = m.query_one("SHOW server_version_num").unwrap().unwrap().parse().unwrap();
    let version = m.query_one("SELECT version()").unwrap().unwrap();
    eprintln!("{version} from {}", keeper_harness::pg_bindir().display());
    if let Ok(want) = std::env::var("PGK_EXPECT_PG") {
        assert_eq!((num / 10000).to_string(), want, "{version}");
    }
    // The extension is this version's build: its library loaded, its worker running.
    assert_eq!(m.query_one("SELECT mode FROM pgkeeper.status()").unwrap().as_deref(), Some("master"));
    wait_title(cluster.node("node2"), "standby (connected to node1)").unwrap();
}
