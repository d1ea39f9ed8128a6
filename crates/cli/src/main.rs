//! `pgkeeper`: the operator's command line for pg_keeper clusters.
//! Results go to stdout, progress and errors to stderr; exit codes: 0 ok, 1 failure,
//! 2 usage error.

mod demo;
mod local;
mod rejoin;
mod status;
mod switchover;
mod writer;

use std::process::ExitCode;

const USAGE: &str = "\
usage: pgkeeper <command> [options]

commands:
  status CONNINFO [--json] [--watch [SECONDS]]
                         the cluster: node_info read from CONNINFO (any node; a multi-host
                         conninfo works too), then every node asked: role, keeper state,
                         timeline, LSN, lag, and warnings
  rejoin --pgdata DIR --name NODE CONNINFO [--basebackup] [--no-start] [--log FILE]
                         make a failed old master (or a standby that cannot follow) a
                         standby of the current master: pg_rewind, else pg_basebackup;
                         run it on that node's host (root or the data directory's owner)
  switchover --to NODE --pgdata DIR CONNINFO [--max-lag BYTES] [--log FILE]
                         planned role swap with no acknowledged commit lost; run it on the
                         current master's host (DIR: its data directory)
  uri CONNINFO           a multi-host connection URI for clients (target_session_attrs=read-write)
  demo [--keep]          build a local 3-node cluster with pg_keeper and show it
                         (--keep leaves it running and prints how to connect and stop it)
  demo --stop DIR        stop and remove a cluster left by demo --keep
  help                   this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "status" => {
            if rest.iter().all(|a| a.starts_with("--")) {
                eprintln!("pgkeeper status: give a conninfo, e.g. 'host=10.0.0.1 port=5432 user=postgres'");
                return ExitCode::from(2);
            }
            status::run(rest)
        }
        "rejoin" => rejoin::rejoin(rest),
        "switchover" => switchover::switchover(rest),
        "uri" => match rest.first() {
            Some(ci) => status::uri(ci).map(|u| println!("{u}")),
            None => {
                eprintln!("pgkeeper uri: give a conninfo of any node");
                return ExitCode::from(2);
            }
        },
        "demo" => match rest.iter().position(|a| a == "--stop") {
            Some(i) => match rest.get(i + 1) {
                Some(dir) => demo::stop(std::path::Path::new(dir)),
                None => {
                    eprintln!("pgkeeper demo --stop: give the directory printed by demo --keep");
                    return ExitCode::from(2);
                }
            },
            None => demo::run(rest.iter().any(|a| a == "--keep")),
        },
        "bench" => Err(anyhow::anyhow!("the benchmarks are their own program now: make bench (pgkeeper-bench)")),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("pgkeeper: unknown command \"{other}\"\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgkeeper: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
