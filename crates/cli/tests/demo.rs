//! `make demo` runs `pgkeeper demo`: it must tell the whole story, end to end, on real servers.

use std::process::Command;

#[test]
fn demo_fails_over_and_rejoins() {
    let o = Command::new(env!("CARGO_BIN_EXE_pgkeeper")).arg("demo").output().expect("run pgkeeper demo");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "demo failed:\n{out}\n{err}");
    for needle in [
        "SELECT pgkeeper.add_node('node3'",
        "pg_keeper master (connected, 2)",
        "writes resumed on node2",
        "none lost",
        "is a standby of node2 again (pg_rewind",
        "pgkeeper history: what happened, from every node",
        "election won",
        "rejoined",
    ] {
        assert!(out.contains(needle) || err.contains(needle), "demo output lacks {needle:?}:\n{out}\n{err}");
    }
    // The final status: node2 master, node1 and node3 standbys, no warning.
    let last = out.rsplit("NAME ").next().unwrap_or_default();
    let last = last.split("pgkeeper history").next().unwrap_or_default();
    assert!(!last.contains("WARNING"), "{last}");
    assert!(last.lines().any(|l| l.starts_with("node1") && l.contains("standby")), "{last}");
    assert!(last.lines().any(|l| l.starts_with("node2") && l.contains("master")), "{last}");
}
