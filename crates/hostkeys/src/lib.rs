//! What a pgcmk service (the key vault, the control plane) keeps on its host and
//! serves with, in one place so both services behave the same:
//!
//! - [`root_key`]: the service's root key, from a 0600 file or derived with
//!   Argon2id from a passphrase (salt and check value kept by the service);
//! - [`local_ca`]: a local CA and the server certificate it signs for the loopback
//!   names, the server key sealed under a key derived from the root key;
//! - [`issuing_ca`]: a CA that keeps its key sealed and issues short-lived server
//!   certificates (the control plane's servers CA, for PostgreSQL's TLS);
//! - [`listener`]: an HTTPS listener serving an axum router with that identity;
//! - [`trust`]: clients that trust exactly a service's CA certificate;
//! - [`files`]: durable writes of the files above;
//! - [`reopening_db`]: the services' redb database, opened again after an I/O error;
//! - [`metrics_endpoint`]: the loopback listener serving the process's Prometheus metrics.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection_caps;
mod error;
pub mod files;
pub mod issuing_ca;
mod listen_limits;
pub mod listener;
pub mod local_ca;
pub mod metrics_endpoint;
pub mod reopening_db;
pub mod root_key;
mod timed_body;
pub mod trust;

pub use error::Error;
