//! `pgkeeper`: the operator's command line for pg_keeper clusters.
//! Results go to stdout, progress and errors to stderr; exit codes: 0 ok, 1 failure,
//! 2 usage error (clap's).

mod demo;
mod local;
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
    /// A multi-host connection URI over every registered node, for clients
    /// (target_session_attrs=read-write)
    Uri {
        /// Any node of the cluster; default: libpq's environment (PGHOST, PGPORT, ...)
        #[arg(value_name = "CONNINFO", default_value = "", hide_default_value = true)]
        conninfo: String,
    },
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
        Command::Uri { conninfo } => status::uri(&conninfo).map(|u| println!("{u}")),
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
