//! `pgkeeper`: the operator's command line for pg_keeper clusters.
//! Results go to stdout, progress and errors to stderr; exit codes: 0 ok, 1 failure,
//! 2 usage error (clap's).

mod clone;
mod demo;
mod failover;
mod history;
mod local;
mod maintenance;
mod rejoin;
mod status;
mod switchover;
mod writer;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The operator's command line for pg_keeper clusters. CONNINFO is a libpq conninfo or URI
/// of any node (a multi-host one works too); left out, libpq's environment (PGHOST, PGPORT,
/// PGUSER, PGDATABASE, PGSERVICE, ...) says where to connect. pgkeeper connects to every node
/// as the user CONNINFO names.
#[derive(Parser, Debug)]
#[command(name = "pgkeeper", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The cluster: node_info read from CONNINFO, then every node asked at once: role, keeper
    /// state, term and commit gate, timeline, LSN, lag, and warnings
    #[command(visible_alias = "list")]
    Status {
        /// Any node of the cluster; default: libpq's environment (PGHOST, PGPORT, ...)
        #[arg(value_name = "CONNINFO", default_value = "", hide_default_value = true)]
        conninfo: String,
        /// JSON instead of the table
        #[arg(long)]
        json: bool,
        /// Again every SECONDS (default 2) until interrupted
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// A multi-host connection string over every registered node, for clients
    /// (target_session_attrs=read-write): a URI, or with --keyvalue the key=value form
    Uri {
        /// Any node of the cluster; default: libpq's environment (PGHOST, PGPORT, ...)
        #[arg(value_name = "CONNINFO", default_value = "", hide_default_value = true)]
        conninfo: String,
        /// host=... port=... key=value form instead of a URI
        #[arg(long)]
        keyvalue: bool,
    },
    /// The cluster's events (failovers, switchovers, elections, degrades, fences, rejoins...),
    /// gathered from every node, oldest first
    History {
        /// Any node of the cluster; default: libpq's environment (PGHOST, PGPORT, ...)
        #[arg(value_name = "CONNINFO", default_value = "", hide_default_value = true)]
        conninfo: String,
        /// JSON instead of the table
        #[arg(long)]
        json: bool,
    },
    /// Cluster-wide maintenance mode: no automatic failover until resume (kept across
    /// restarts; switchover and failover --to still work)
    Pause {
        /// Any node of the cluster; default: libpq's environment (PGHOST, PGPORT, ...)
        #[arg(value_name = "CONNINFO", default_value = "", hide_default_value = true)]
        conninfo: String,
        /// Why (kept in the history)
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End the maintenance mode of pause
    Resume {
        /// Any node of the cluster; default: libpq's environment (PGHOST, PGPORT, ...)
        #[arg(value_name = "CONNINFO", default_value = "", hide_default_value = true)]
        conninfo: String,
    },
    Failover(failover::Opts),
    Clone(clone::Opts),
    Rejoin(rejoin::Opts),
    Switchover(switchover::Opts),
    /// Build a local 3-node cluster with pg_keeper and fail it over before your eyes
    Demo {
        /// Leave the cluster running and print how to connect and stop it
        #[arg(long, conflicts_with = "stop")]
        keep: bool,
        /// Stop and remove a cluster left by demo --keep
        #[arg(long, value_name = "DIR")]
        stop: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // clap prints usage errors with exit code 2, --help and --version with 0.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Status { conninfo, json, watch } => status::run(&conninfo, json, watch),
        Command::Uri { conninfo, keyvalue } => status::uri(&conninfo, keyvalue).map(|u| println!("{u}")),
        Command::History { conninfo, json } => history::run(&conninfo, json),
        Command::Pause { conninfo, reason } => maintenance::run(&conninfo, true, &reason),
        Command::Resume { conninfo } => maintenance::run(&conninfo, false, ""),
        Command::Failover(o) => failover::failover(&o),
        Command::Clone(o) => clone::clone(&o),
        Command::Rejoin(o) => rejoin::rejoin(&o),
        Command::Switchover(o) => switchover::switchover(&o),
        Command::Demo { keep, stop } => match stop {
            Some(dir) => demo::stop(&dir),
            None => demo::run(keep),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgkeeper: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
