//! Nodes registered with a conninfo naming another database than the extension's
//! (`dbname=template1`): the CLI asks every node in pg_keeper's database, as the worker does.
//! Before, `status` showed them unreachable ("schema pgkeeper does not exist"), `rejoin`
//! found "no master to rejoin", and `uri` handed clients template1.

use keeper_integration::*;
use std::process::{Command, Output};

fn pgkeeper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgkeeper")).args(args).output().expect("run pgkeeper")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn nodes_registered_with_another_database_show_rejoin_and_give_clients_the_right_one() {
    let cluster = keeper_harness::ClusterBuilder::new("otherdb").standbys(2).keeper(true).build().unwrap();
    let m = cluster.master();
    m.execute("CREATE EXTENSION pg_keeper").unwrap();
    for n in cluster.nodes() {
        add_node(m, n.name(), &n.conninfo_db("template1")).unwrap();
    }
    let (n1, n2) = (cluster.node("node1"), cluster.node("node2"));
    wait_title(n2, "standby").unwrap();
    let ci = n2.conninfo_db("template1");
    // (right after the registrations the master is fenced for a round and node3 may not have
    // replayed node_info yet: wait for the settled cluster, which before showed every standby
    // unreachable for ever)
    wait_until(PATIENCE, || {
        let o = pgkeeper(&["status", &ci]);
        let out = text(&o);
        o.status.success()
            && !out.contains("WARNING")
            && !out.contains("does not exist")
            && !out.contains("unreachable")
            && !out.contains("not registered")
    })
    .unwrap_or_else(|_| panic!("status sees every node: {}", text(&pgkeeper(&["status", &ci]))));

    let bare = format!("host=127.0.0.1 port={} user=postgres", n2.port());
    let uri = String::from_utf8_lossy(&pgkeeper(&["uri", &bare]).stdout).trim().to_string();
    assert!(uri.contains("/postgres?") && !uri.contains("template1"), "{uri}");

    n1.kill9();
    wait_until(PATIENCE, || !writable(&cluster).is_empty()).expect("a new master");
    let new = writable(&cluster)[0].clone();
    n1.start().unwrap();
    let new_ci = cluster.node(&new).conninfo_db("template1");
    let o = pgkeeper(&["rejoin", "--pgdata", n1.data_dir().to_str().unwrap(), "--name", "node1", &new_ci]);
    assert!(o.status.success(), "rejoin finds the master: {}", text(&o));
    wait_until(PATIENCE, || streams_from(cluster.node(&new), "node1")).expect("node1 streams from the new master");
}
