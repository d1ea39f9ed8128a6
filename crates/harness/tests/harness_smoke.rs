//! Smoke tests against real PostgreSQL 15 processes.
//! Run with: cargo test -p keeper-harness -- --test-threads=1

use std::time::Duration;

use keeper_harness::{proc, wait_until, ClusterBuilder};

/// Live processes whose cmdline mentions `needle`.
fn procs_mentioning(needle: &str) -> Vec<(i32, String)> {
    proc::all_pids()
        .into_iter()
        .filter(|&p| proc::alive(p))
        .filter_map(|p| proc::cmdline(p).map(|c| (p, c)))
        .filter(|(_, c)| c.contains(needle))
        .collect()
}

#[test]
fn cluster_lifecycle() {
    let cluster = ClusterBuilder::new("smoke").standbys(2).keeper(false).build().expect("build");
    assert_eq!(cluster.nodes().len(), 3);
    let m = cluster.master();
    assert_eq!(m.name(), "node1");
    assert!(!m.is_in_recovery().unwrap());
    for s in cluster.standbys() {
        assert!(s.is_in_recovery().unwrap(), "{} should be in recovery", s.name());
    }
    cluster.wait_streaming(Duration::from_secs(10)).unwrap();

    // replication of a row
    m.execute("CREATE TABLE t(id int primary key, v text); INSERT INTO t VALUES (1, 'hello')").unwrap();
    for s in cluster.standbys() {
        wait_until(Duration::from_secs(20), || {
            s.query_one("SELECT v FROM t WHERE id = 1").ok().flatten().as_deref() == Some("hello")
        })
        .unwrap_or_else(|e| panic!("{} did not replicate: {e}", s.name()));
    }
    let rows = m.query("SELECT 1, NULL::text, 'x'").unwrap();
    assert_eq!(rows, vec![vec![Some("1".into()), None, Some("x".into())]]);

    // process introspection: the walsenders show up as children with a title
    let kids = m.children();
    assert!(kids.iter().any(|(_, c)| c.contains("walsender")), "children: {kids:?}");

    // kill -9 a standby and bring it back
    let s2 = cluster.node("node2");
    let old_pid = s2.postmaster_pid().unwrap();
    s2.kill9();
    assert!(!s2.is_running());
    assert!(!proc::alive(old_pid));
    s2.start().unwrap();
    s2.wait_ready(Duration::from_secs(30)).unwrap();
    cluster.wait_streaming(Duration::from_secs(60)).unwrap();
    m.execute("INSERT INTO t VALUES (2, 'after-kill')").unwrap();
    wait_until(Duration::from_secs(20), || {
        s2.query_one("SELECT v FROM t WHERE id = 2").ok().flatten().as_deref() == Some("after-kill")
    })
    .unwrap();

    // SIGSTOP / SIGCONT a standby
    let s3 = cluster.node("node3");
    s3.sigstop();
    let pm = s3.postmaster_pid().unwrap();
    assert_eq!(proc::stat(pm).unwrap().0, 'T', "postmaster should be stopped");
    assert!(s3.try_connect().is_err(), "a stopped server must not accept queries");
    s3.sigcont();
    s3.wait_ready(Duration::from_secs(30)).unwrap();
    cluster.wait_streaming(Duration::from_secs(60)).unwrap();

    // kill9_all + restart of node3, plus config append + reload
    s3.kill9_all();
    s3.start().unwrap();
    s3.append_conf("work_mem = '7MB'").unwrap();
    s3.reload().unwrap();
    wait_until(Duration::from_secs(10), || s3.query_one("SHOW work_mem").ok().flatten().as_deref() == Some("7MB"))
        .unwrap();
    assert!(s3.log_contents().contains("database system is ready to accept read-only connections"));

    // drop: nothing survives, dir is gone
    let base = cluster.base_dir().to_path_buf();
    let base_s = base.display().to_string();
    let pids: Vec<i32> = cluster.nodes().iter().filter_map(|n| n.postmaster_pid()).collect();
    assert!(!procs_mentioning(&base_s).is_empty());
    drop(cluster);
    assert!(procs_mentioning(&base_s).is_empty(), "leftovers: {:?}", procs_mentioning(&base_s));
    for p in pids {
        assert!(!proc::alive(p), "postmaster {p} survived");
    }
    assert!(!base.exists(), "{} still exists", base.display());
}

#[test]
fn synchronous_standby() {
    let cluster = ClusterBuilder::new("sync")
        .standbys(2)
        .synchronous_standby_names("node2")
        .conf("log_min_duration_statement = -1")
        .build()
        .expect("build");
    let m = cluster.master();
    assert_eq!(m.query_one("SHOW synchronous_standby_names").unwrap().as_deref(), Some("node2"));
    let rows = m.query("SELECT application_name, sync_state FROM pg_stat_replication ORDER BY 1").unwrap();
    assert_eq!(
        rows,
        vec![vec![Some("node2".into()), Some("sync".into())], vec![Some("node3".into()), Some("async".into())],]
    );
    // a commit waits for node2: it must still succeed while node2 is up
    m.execute("CREATE TABLE s(i int); INSERT INTO s VALUES (1)").unwrap();

    // with node2 stopped, a commit blocks in SyncRep until node2 is back
    let n2 = cluster.node("node2");
    n2.stop().unwrap();
    std::thread::scope(|sc| {
        let h = sc.spawn(|| m.execute("INSERT INTO s VALUES (2)"));
        wait_until(Duration::from_secs(20), || {
            m.query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").ok().flatten().as_deref()
                == Some("1")
        })
        .expect("commit should wait for the synchronous standby");
        assert!(!h.is_finished());
        n2.start().unwrap();
        h.join().unwrap().expect("commit completes once node2 is back");
    });
    cluster.wait_streaming(Duration::from_secs(60)).unwrap();
    assert!(cluster.node("node3").is_in_recovery().unwrap());
}

/// A base dir left by a process that died without tearing down (a killed test run) has its
/// servers killed and is removed by the next build; one kept on purpose (KEPT) stays.
#[test]
fn abandoned_base_dirs_are_swept() {
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let parent = &keeper_harness::base_parent();
    let abandoned = parent.join(format!("pgk-sweep-test-{dead_pid}-0"));
    let kept = parent.join(format!("pgk-sweep-kept-{dead_pid}-0"));
    struct RemoveOnDrop(Vec<std::path::PathBuf>);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            self.0.iter().for_each(|d| drop(std::fs::remove_dir_all(d)));
        }
    }
    let _cleanup = RemoveOnDrop(vec![abandoned.clone(), kept.clone()]);
    // Other tests of this binary build clusters (and sweep) concurrently: each dir is filled
    // under a name the sweep ignores, then renamed.
    // Stands in for a postmaster: a process whose command line names the data directory,
    // and whose pid is in its postmaster.pid.
    let data = abandoned.join("node1/data");
    let mut server = std::process::Command::new("bash")
        .args(["-c", "while :; do sleep 1; done", &data.display().to_string()])
        .spawn()
        .unwrap();
    let server_pid = server.id() as i32;
    let staged = parent.join(format!("pgk-sweep-test-{dead_pid}-unnamed"));
    std::fs::create_dir_all(staged.join("node1/data")).unwrap();
    std::fs::write(staged.join("node1/data/postmaster.pid"), format!("{server_pid}\n")).unwrap();
    std::fs::rename(&staged, &abandoned).unwrap();
    let unnamed = parent.join(format!("pgk-sweep-kept-{dead_pid}-unnamed"));
    std::fs::create_dir_all(unnamed.join("node1/data")).unwrap();
    std::fs::write(unnamed.join("KEPT"), "kept\n").unwrap();
    std::fs::rename(&unnamed, &kept).unwrap();
    // A bystander that only mentions the dir (a `tail -f` on a log) is left alone.
    let mut bystander = std::process::Command::new("bash")
        .args(["-c", "while :; do sleep 1; done", &abandoned.join("node1/server.log").display().to_string()])
        .spawn()
        .unwrap();
    let bystander_pid = bystander.id() as i32;

    let cluster = ClusterBuilder::new("sweeper").standbys(0).keeper(false).build().expect("build");
    // (the sweep that ran may be another test's, in another thread: give its kill a moment.
    // By command line, not pid alone: once reaped, a pid is soon reused on a busy machine,
    // pid_max being 32768 here.)
    let is = |pid: i32, arg: &std::path::Path| {
        proc::alive(pid) && proc::cmdline(pid).is_some_and(|c| c.contains(&arg.display().to_string()))
    };
    let killed = wait_until(Duration::from_secs(5), || !is(server_pid, &data)).is_ok();
    let seen = format!(
        "pid {server_pid}: stat {:?}, cmdline {:?}; the dir {}",
        proc::stat(server_pid),
        proc::cmdline(server_pid),
        if abandoned.exists() { "is still there" } else { "is gone" }
    );
    let spared = is(bystander_pid, &abandoned.join("node1/server.log"));
    // (never signal a pid that is no longer ours)
    if is(server_pid, &data) {
        let _ = server.kill();
    }
    if is(bystander_pid, &abandoned.join("node1/server.log")) {
        let _ = bystander.kill();
    }
    for p in [&mut server, &mut bystander] {
        let _ = p.wait();
    }
    assert!(killed, "its server still runs: {seen}");
    assert!(spared, "a process that only mentions the dir was killed");
    assert!(!abandoned.exists(), "the abandoned dir is still there");
    assert!(kept.join("node1/data").exists(), "a kept dir was removed");
    drop(cluster);
}
