//! Issue 5/7: the recommended secure setup on a real cluster. pg_hba.conf takes only
//! `hostssl ... scram-sha-256` over TCP (plain text is rejected), certificates are made here
//! with openssl, node conninfo says `sslmode=verify-full` and holds no password, passwords
//! live in a password file (PGPASSFILE of the servers), the nodes talk to each other as
//! `pgkeeper`, a login role in pgkeeper_agent. Registration, polling, heartbeats, an
//! election, `pgkeeper status`, `uri`, `switchover` and `rejoin` all work; a wrong root
//! certificate, a wrong password or a password file others can read is reported, naming the
//! node and the reason, and causes no failover.

use keeper_integration::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const AGENT_PASSWORD: &str = "agent-secret-1";
const ADMIN_PASSWORD: &str = "admin-secret-2";

fn pgkeeper(args: &[&str], passfile: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgkeeper"))
        .args(args)
        .env("PGPASSFILE", passfile)
        .output()
        .expect("run pgkeeper")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run(cmd: &mut Command) {
    let o = cmd.output().expect("run");
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
}

/// Give a file or directory to the servers' OS user (tests run as root).
fn give_to_postgres(p: &Path) {
    if unsafe { libc::geteuid() } == 0 {
        run(Command::new("chown").arg("postgres:postgres").arg(p));
    }
}

fn write_private(p: &Path, contents: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, contents).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    give_to_postgres(p);
}

/// A CA, a server certificate for 127.0.0.1 signed by it (every node uses it), and another
/// CA that signed nothing here (the wrong root).
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn make() -> Pki {
        let dir = std::env::temp_dir().join(format!("pgk-pki-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        give_to_postgres(&dir);
        let ossl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(&dir));
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for (name, cn) in [("root", "pg_keeper test CA"), ("wrong", "some other CA")] {
            let mut a = vec!["req", "-x509", "-days", "2", "-subj"];
            let subj = format!("/CN={cn}");
            a.push(&subj);
            a.extend(ec);
            let (k, c) = (format!("{name}.key"), format!("{name}.crt"));
            a.extend(["-keyout", &k, "-out", &c]);
            ossl(&a);
        }
        let mut a = vec!["req", "-subj", "/CN=127.0.0.1"];
        a.extend(ec);
        a.extend(["-keyout", "server.key", "-out", "server.csr"]);
        ossl(&a);
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        ossl(&[
            "x509", "-req", "-in", "server.csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial", "-days",
            "2", "-extfile", "san.ext", "-out", "server.crt",
        ]);
        for f in ["root.crt", "wrong.crt", "server.crt", "server.key"] {
            give_to_postgres(&dir.join(f));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000
}

const HBA: &str = "\
local     all         all                trust
hostssl   all         all  127.0.0.1/32  scram-sha-256
hostssl   replication all  127.0.0.1/32  scram-sha-256
hostnossl all         all  0.0.0.0/0     reject
hostnossl replication all  0.0.0.0/0     reject
";

/// `user`'s conninfo for `n`: TLS with the name checked, no password.
fn secure_conninfo(n: &Node, user: &str, root: Option<&str>) -> String {
    let mut s = format!("host=127.0.0.1 port={} user={user} dbname=postgres sslmode=verify-full", n.port());
    if let Some(r) = root {
        s.push_str(&format!(" sslrootcert={r}"));
    }
    s
}

struct Secure {
    cluster: Cluster,
    pki: Pki,
    /// The servers' password file (and the operator's, for the CLI).
    passfile: PathBuf,
}

/// Three nodes, switched to the secure setup before anything is registered. With
/// `root_in_conninfo` false, the nodes find the root certificate through PGSSLROOTCERT (each
/// node's own environment), not in node_info.
fn secure_cluster(name: &str, root_in_conninfo: bool) -> Secure {
    let pki = Pki::make();
    let cluster = Cluster::builder(name)
        .standbys(2)
        .keeper(true)
        .conf("ssl = on")
        .conf(&format!("ssl_cert_file = '{}'", pki.path("server.crt")))
        .conf(&format!("ssl_key_file = '{}'", pki.path("server.key")))
        .conf("password_encryption = 'scram-sha-256'")
        .conf("log_connections = on")
        .build()
        .expect("cluster builds");
    let m = cluster.master();
    m.execute("CREATE EXTENSION pg_keeper").unwrap();
    m.execute(&format!("CREATE ROLE pgkeeper LOGIN REPLICATION IN ROLE pgkeeper_agent PASSWORD '{AGENT_PASSWORD}'"))
        .unwrap();
    m.execute(&format!("ALTER ROLE postgres PASSWORD '{ADMIN_PASSWORD}'")).unwrap();
    m.execute("CREATE TABLE app_data(i int primary key)").unwrap();
    let passfile = cluster.base_dir().join("pgpass");
    write_private(
        &passfile,
        &format!("127.0.0.1:*:*:pgkeeper:{AGENT_PASSWORD}\n127.0.0.1:*:*:postgres:{ADMIN_PASSWORD}\n"),
        0o600,
    );
    let root = pki.path("root.crt");
    let in_ci = root_in_conninfo.then_some(root.as_str());
    for n in cluster.nodes() {
        std::fs::write(n.data_dir().join("pg_hba.conf"), HBA).unwrap();
        n.set_env("PGPASSFILE", &passfile.display().to_string());
        n.set_env("PGSSLROOTCERT", &root);
        if n.name() != "node1" {
            let pc = format!("{} application_name={}", secure_conninfo(m, "pgkeeper", in_ci), n.name());
            n.execute(&format!("ALTER SYSTEM SET primary_conninfo = '{pc}'")).unwrap();
        }
    }
    for n in cluster.nodes() {
        n.restart().unwrap();
    }
    for n in cluster.nodes() {
        let ci = secure_conninfo(n, "pgkeeper", in_ci);
        add_node(m, n.name(), &ci).unwrap_or_else(|e| panic!("add_node {} over TLS: {e:#}", n.name()));
    }
    cluster.wait_streaming(PATIENCE).expect("standbys stream over TLS");
    Secure { cluster, pki, passfile }
}

/// Every connection a node's worker made to `n` and every WAL sender on `n` uses TLS.
fn connections_use_tls(n: &Node) -> Vec<Vec<Option<String>>> {
    n.query(
        "SELECT a.application_name, a.usename::text, s.ssl::text FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'pg_keeper' OR a.backend_type = 'walsender' ORDER BY 1",
    )
    .unwrap()
}

fn worker_state(n: &Node) -> String {
    n.query_one("SELECT mode || ' ' || state || ' ' || peers::text FROM pgkeeper.status()")
        .unwrap_or_default()
        .unwrap_or_default()
}

#[test]
fn tls_scram_passfile_cluster_registers_polls_fails_over_switches_over_and_rejoins() {
    let s = secure_cluster("secure", true);
    let c = &s.cluster;
    let (n1, n2, n3) = (c.node("node1"), c.node("node2"), c.node("node3"));
    wait_title(n1, "master").unwrap();
    wait_title(n2, "standby").unwrap();
    wait_title(n3, "standby").unwrap();
    // Polls and heartbeats flow, over TLS, as pgkeeper.
    for n in [n1, n2, n3] {
        wait_until(PATIENCE, || connections_use_tls(n).iter().any(|r| r[0].as_deref() == Some("pg_keeper")))
            .unwrap_or_else(|_| panic!("{}: no pg_keeper connection: {}", n.name(), worker_state(n)));
    }
    for n in [n1, n2, n3] {
        let rows = connections_use_tls(n);
        assert!(!rows.is_empty(), "{}: no pg_keeper connection or WAL sender seen", n.name());
        for r in &rows {
            assert_eq!(r[2].as_deref(), Some("true"), "{}: a connection without TLS: {rows:?}", n.name());
            assert_eq!(r[1].as_deref(), Some("pgkeeper"), "{}: a connection not as the agent: {rows:?}", n.name());
        }
    }
    let op = secure_conninfo(n1, "postgres", Some(&s.pki.path("root.crt")));

    // pgkeeper status through TLS, as the operator (the password from the password file).
    let o = pgkeeper(&["status", &op], &s.passfile);
    let out = text(&o);
    assert!(o.status.success(), "pgkeeper status: {out}");
    for name in ["node1", "node2", "node3"] {
        assert!(out.contains(name), "status lists {name}: {out}");
    }
    assert!(!out.to_lowercase().contains("error"), "status shows no error: {out}");

    // pgkeeper uri: the TLS settings go with it, the agent user does not.
    let o = pgkeeper(&["uri", &op], &s.passfile);
    let uri = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(uri.contains("sslmode=verify-full") && uri.contains("sslrootcert="), "{uri}");
    assert!(uri.starts_with("postgresql://postgres@"), "{uri}");
    std::env::set_var("PGPASSFILE", &s.passfile);
    let mut client = keeper_pq::Conn::connect(&uri, &[], Instant::now() + Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("a client connects with the URI: {e}"));
    assert!(client.ssl_in_use());
    let until = || Instant::now() + Duration::from_secs(10);
    client.execute("INSERT INTO app_data VALUES (1)", &[], until()).unwrap();
    drop(client);

    // Failover: the master killed, an election over TLS, the survivor follows.
    n1.kill9();
    let started = Instant::now();
    wait_until(PATIENCE, || !writable(c).is_empty()).unwrap_or_else(|_| {
        panic!("a new master is elected:\n{}\n{}", n2.log_tail(30), n3.log_tail(30))
    });
    let new = writable(c)[0].clone();
    let other = if new == "node2" { n3 } else { n2 };
    eprintln!("secure: {new} writable {:.1} s after node1's kill", started.elapsed().as_secs_f64());
    wait_until(PATIENCE, || streams_from(c.node(&new), other.name())).expect("the other standby follows");
    assert_eq!(rows_of(c.node(&new)), vec![1], "the acknowledged row survived");

    // Rejoin by hand, as the operator: pg_rewind over TLS, then streaming over TLS.
    n1.start().unwrap();
    let new_op = secure_conninfo(c.node(&new), "postgres", Some(&s.pki.path("root.crt")));
    let pgdata = n1.data_dir().display().to_string();
    let o = pgkeeper(&["rejoin", "--pgdata", &pgdata, "--name", "node1", &new_op], &s.passfile);
    assert!(o.status.success(), "pgkeeper rejoin: {}\n{}", text(&o), n1.log_tail(30));
    wait_until(PATIENCE, || streams_from(c.node(&new), "node1")).expect("node1 streams from the new master");

    // Switchover back to node1, run where the master runs.
    let new_pgdata = c.node(&new).data_dir().display().to_string();
    let o = pgkeeper(&["switchover", "--to", "node1", "--pgdata", &new_pgdata, &new_op], &s.passfile);
    assert!(o.status.success(), "pgkeeper switchover: {}", text(&o));
    wait_until(PATIENCE, || writable(c) == vec!["node1".to_string()]).expect("node1 is the master again");

    // Nothing ever tried plain text (that would be a `no encryption` rejection in a log).
    for n in c.nodes() {
        let log = n.log_contents();
        assert!(!log.contains("no encryption"), "{}: a plain-text attempt was refused:\n{}", n.name(), n.log_tail(40));
    }
    // A fast shutdown with TLS probes in flight: every server shuts down cleanly (no process
    // crashed in OpenSSL's exit-time cleanup, which would skip the shutdown checkpoint).
    for n in c.nodes() {
        n.stop().unwrap();
        let log = n.log_contents();
        assert!(log.contains("database system is shut down"), "{}: clean shutdown:\n{}", n.name(), n.log_tail(20));
        assert!(!log.contains("terminated by signal"), "{}: a process crashed:\n{}", n.name(), n.log_tail(40));
    }
}

fn rows_of(n: &Node) -> Vec<i64> {
    n.query("SELECT i FROM app_data ORDER BY i")
        .unwrap()
        .into_iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect()
}

/// One wrong thing on node3 at a time (its root certificate, its password, its password
/// file's permissions): node3 and its status say what, naming the node; nobody fails over.
#[test]
fn wrong_root_wrong_password_or_open_passfile_is_reported_and_causes_no_failover() {
    let s = secure_cluster("secure-bad", false);
    let c = &s.cluster;
    let (n1, n3) = (c.node("node1"), c.node("node3"));
    wait_title(c.node("node2"), "standby").unwrap();
    wait_title(n3, "standby").unwrap();
    let bad_pass = c.base_dir().join("pgpass-bad");
    write_private(&bad_pass, "127.0.0.1:*:*:pgkeeper:not-the-password\n", 0o600);
    let open_pass = c.base_dir().join("pgpass-open");
    write_private(&open_pass, &format!("127.0.0.1:*:*:pgkeeper:{AGENT_PASSWORD}\n"), 0o644);
    let cases: [(&str, &str, String, &str); 3] = [
        ("wrong root certificate", "PGSSLROOTCERT", s.pki.path("wrong.crt"), "certificate verify failed"),
        ("wrong password", "PGPASSFILE", bad_pass.display().to_string(), "password authentication failed"),
        ("password file others can read", "PGPASSFILE", open_pass.display().to_string(), "no password supplied"),
    ];
    for (what, var, value, reason) in cases {
        n3.set_env(var, &value);
        n3.restart().unwrap();
        // node3's own status names the master and the reason.
        wait_until(PATIENCE, || worker_state(n3).contains(reason))
            .unwrap_or_else(|_| panic!("{what}: node3's status says {reason:?}: {}", worker_state(n3)));
        let st = worker_state(n3);
        assert!(st.contains("node1"), "{what}: the failing peer is named: {st}");
        assert!(n3.log_contents().contains(reason), "{what}: node3's log says why:\n{}", n3.log_tail(20));
        // Long enough for several failover timeouts at the defaults: no failover.
        std::thread::sleep(Duration::from_secs(12));
        assert_eq!(writable(c), vec!["node1".to_string()], "{what}: node1 stays the only master");
        assert!(n1.query_one("SELECT pg_is_in_recovery()::text").unwrap().as_deref() == Some("false"));
        // The CLI, given the wrong root, says so and names the node it could not reach.
        if var == "PGSSLROOTCERT" {
            let op = secure_conninfo(n1, "postgres", Some(&s.pki.path("wrong.crt")));
            let o = pgkeeper(&["status", &op], &s.passfile);
            assert!(!o.status.success(), "status with the wrong root fails");
            assert!(text(&o).contains("certificate verify failed"), "{}", text(&o));
        }
        // Put it right: node3 recovers.
        n3.set_env("PGSSLROOTCERT", &s.pki.path("root.crt"));
        n3.set_env("PGPASSFILE", &s.passfile.display().to_string());
        n3.restart().unwrap();
        wait_until(PATIENCE, || streams_from(n1, "node3")).expect("node3 streams again");
    }
    // A frozen peer: its kept TLS connection times out, then every new connection's TLS
    // handshake gets no answer; each probe ends at its deadline and the master's rounds go on.
    let n2 = c.node("node2");
    let rounds = || n1.query_one("SELECT rounds FROM pgkeeper.status()").unwrap().unwrap().parse::<i64>().unwrap();
    let rate = || {
        let (r0, t0) = (rounds(), Instant::now());
        std::thread::sleep(Duration::from_secs(8));
        (rounds() - r0) as f64 / t0.elapsed().as_secs_f64()
    };
    let healthy = rate();
    n2.sigstop();
    wait_until(PATIENCE, || worker_state(n1).contains("no answer within"))
        .unwrap_or_else(|_| panic!("the frozen node2 fails its probes: {}", worker_state(n1)));
    let frozen = rate();
    n2.sigcont();
    eprintln!("master rounds per second: {healthy:.2} healthy, {frozen:.2} with node2 frozen");
    assert!(frozen >= healthy * 0.4, "the master's rounds go on while node2 is frozen: {frozen:.2} vs {healthy:.2}");
    assert_eq!(writable(c), vec!["node1".to_string()]);
    // The operator's CLI with the right settings sees a healthy cluster.
    let op = secure_conninfo(n1, "postgres", None);
    let o = Command::new(env!("CARGO_BIN_EXE_pgkeeper"))
        .args(["status", &op])
        .env("PGPASSFILE", &s.passfile)
        .env("PGSSLROOTCERT", s.pki.path("root.crt"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// The agent role may do what nodes ask of each other and nothing else.
#[test]
fn the_agent_role_cannot_read_user_tables_or_manage_the_cluster() {
    let s = secure_cluster("secure-agent", true);
    let n1 = s.cluster.node("node1");
    let ci = format!("{} sslrootcert={}", secure_conninfo(n1, "pgkeeper", None), s.pki.path("root.crt"));
    std::env::set_var("PGPASSFILE", &s.passfile);
    let until = || Instant::now() + Duration::from_secs(10);
    let mut a = keeper_pq::Conn::connect(&ci, &[], until()).expect("the agent connects over TLS");
    // What nodes ask of each other works.
    a.query_one("SELECT in_recovery FROM pgkeeper._poll()", &[], until()).expect("_poll");
    a.query_one("SELECT count(*) FROM pgkeeper.node_info", &[], until()).expect("node_info is readable");
    let registered = secure_conninfo(s.cluster.node("node2"), "pgkeeper", Some(&s.pki.path("root.crt")));
    a.query_one("SELECT pgkeeper.indirect_polling($1::text)", &[&registered], until()).expect("polls a registered node");
    // Nothing else.
    let denied: [(&str, Vec<&dyn keeper_pq::ToParam>); 5] = [
        ("SELECT count(*) FROM app_data", vec![]),
        ("SELECT pgkeeper.add_node($1::text, $2::text)", vec![&"x", &"host=127.0.0.1 port=1"]),
        ("SELECT pgkeeper.step_down()", vec![]),
        ("SELECT pgkeeper.del_node($1::text)", vec![&"node2"]),
        ("SELECT pgkeeper.indirect_polling($1::text)", vec![&"host=10.255.255.1 port=5432"]),
    ];
    for (sql, params) in denied {
        let e = a.query(sql, &params, until()).expect_err(sql);
        assert_eq!(e.sqlstate.as_deref(), Some("42501"), "{sql}: {e}");
    }
    let e = a.execute("DELETE FROM pgkeeper.node_info", &[], until()).expect_err("delete");
    assert_eq!(e.sqlstate.as_deref(), Some("42501"), "{e}");
}
