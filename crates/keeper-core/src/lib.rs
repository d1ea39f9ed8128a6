//! keeper-core: every decision pg_keeper makes, with no PostgreSQL and no I/O.
//!
//! The extension (crate `pg_keeper`) is a thin adapter: it gathers observations (the node
//! registry, settings, poll results, the clock), hands them to the functions and state
//! machines here, and carries out the actions they return. Keeping the rules here lets them
//! be unit-tested, property-tested and simulated without a server.

pub mod candidacy;
pub mod conninfo;
pub mod election;
pub mod eligibility;
pub mod failover;
pub mod gate;
pub mod health;
pub mod heartbeat;
pub mod history;
pub mod keeper;
pub mod lsn;
pub mod membership;
pub mod polling;
pub mod registry;
pub mod rejoin;
pub mod rules;
pub mod settings;
pub mod sync_guard;
pub mod sync_names;
pub mod timing;

pub use keeper::Keeper;
pub use registry::{Node, RegistryError};
pub use sync_names::{SyncConfig, SyncMethod};
