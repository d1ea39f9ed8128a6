//! libpq for every connection pg_keeper and pgkeeper make (issue 5/7).
//!
//! PostgreSQL's own walreceiver connects with libpq, so a node's conninfo means exactly what
//! it means in `primary_conninfo` only if pg_keeper connects with libpq too. This crate is
//! that, and it is small because libpq does the work:
//! - the conninfo grammar (`PQconninfoParse`: keywords, quoting, URIs, libpq's messages);
//! - TLS with libpq's `sslmode` rules and defaults (`~/.postgresql/root.crt`, ...), CRLs,
//!   `sslpassword`, SNI, `ssl_min_protocol_version`, GSS encryption;
//! - passwords from `passfile`, `PGPASSFILE` or `~/.pgpass` (with libpq's 0600 check),
//!   `service` files, SCRAM-SHA-256 and channel binding, `PG*` environment variables.
//!
//! What is ours: a deadline on every step (libpq's non-blocking API driven with poll(2), so a
//! black-holed peer, in the TCP connect, the TLS handshake, authentication or a query, costs
//! at most the deadline), statements prepared once per connection, and values in text form.

mod conn;
pub mod conninfo;
pub mod exit;
mod value;

pub use conn::{Conn, Error};
pub use value::{FromText, Row, ToParam};
