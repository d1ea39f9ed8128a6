//! The Debian package (`make package`), installed with dpkg into the system's PostgreSQL 15,
//! runs a cluster that fails over; `dpkg -r` removes every file it brought. Run by
//! `make test-package` (it changes the system: ignored by `cargo test` otherwise).

use keeper_integration::*;
use std::process::Command;
use std::time::Duration;

fn dpkg(args: &[&str]) -> (bool, String) {
    let o = Command::new("dpkg").args(args).output().expect("dpkg");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

const FILES: [&str; 4] = [
    "/usr/lib/postgresql/15/lib/pg_keeper.so",
    "/usr/share/postgresql/15/extension/pg_keeper.control",
    "/usr/share/postgresql/15/extension/pg_keeper--0.1.0.sql",
    "/usr/bin/pgkeeper",
];

#[test]
#[ignore = "installs a Debian package: make test-package"]
fn deb_installs_fails_over_and_removes_cleanly() {
    let deb = std::env::var("PGK_DEB").expect("PGK_DEB: the .deb to test");
    let (ok, out) = dpkg(&["-i", &deb]);
    assert!(ok, "dpkg -i {deb}:\n{out}");
    let (_, list) = dpkg(&["-L", "postgresql-15-pg-keeper"]);
    for f in FILES {
        assert!(list.lines().any(|l| l == f), "{f} in the package:\n{list}");
        assert!(std::path::Path::new(f).exists(), "{f} installed");
    }
    let (_, info) = dpkg(&["-s", "postgresql-15-pg-keeper"]);
    assert!(info.contains("Status: install ok installed") && info.contains("Depends: postgresql-15"), "{info}");
    let v = Command::new("/usr/bin/pgkeeper").arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains("0.1.0"));

    // The packaged extension in a cluster: kill -9 of the master, a new one elected.
    {
        let cluster = keeper_cluster("deb", 2, None, &["pg_keeper.keepalive_time = 1", "pg_keeper.keepalive_count = 2"]);
        let (n1, n2, n3) = (cluster.node("node1"), cluster.node("node2"), cluster.node("node3"));
        wait_until(PATIENCE, || streams_from(n1, "node2") && streams_from(n1, "node3")).unwrap();
        n1.execute(WRITES_TABLE).unwrap();
        n1.execute("INSERT INTO pgk_writes (id) VALUES (1)").unwrap();
        wait_replayed(n1, n2).unwrap();
        wait_replayed(n1, n3).unwrap();
        n1.kill9_all();
        wait_until(PATIENCE, || !n2.is_in_recovery().unwrap_or(true) || !n3.is_in_recovery().unwrap_or(true))
            .expect("a new master elected");
        let new = if n2.is_in_recovery().unwrap() { n3 } else { n2 };
        wait_until(PATIENCE, || commit_gate(new) == "open").unwrap();
        new.execute("INSERT INTO pgk_writes (id) VALUES (2)").unwrap();
        assert_eq!(rows(new), vec![1, 2]);
        let h = new.query_one("SELECT count(*) FROM pgkeeper.history() WHERE event = 'failover'").unwrap();
        assert_eq!(h.as_deref(), Some("1"));
    }
    std::thread::sleep(Duration::from_millis(200));

    let (ok, out) = dpkg(&["-r", "postgresql-15-pg-keeper"]);
    assert!(ok, "dpkg -r:\n{out}");
    for f in FILES {
        assert!(!std::path::Path::new(f).exists(), "{f} left behind by dpkg -r");
    }
    let (_, info) = dpkg(&["-s", "postgresql-15-pg-keeper"]);
    assert!(!info.contains("install ok installed"), "{info}");
}
