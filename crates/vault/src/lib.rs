//! pgcmk key vault: an Azure Key Vault–compatible keys service with identities,
//! access policies and a tamper-evident audit trail.
//!
//! `pgcmk vault serve` runs [`service::run`]. The wire contract (ports, endpoints,
//! JSON shapes) is documented in `docs/api.md`.

#![forbid(unsafe_code)]

mod anonymous_budget;
pub mod audit;
mod audit_filter;
pub mod client;
pub mod clock;
pub mod console;
mod error;
pub mod files;
pub mod http;
pub mod identity;
pub mod keys;
pub mod listen;
pub mod maintenance;
pub mod metrics;
pub mod policy;
pub mod seal;
pub mod serve;
pub mod service;
pub mod storage;
pub mod tls;
pub mod token;
pub mod vaults;
pub mod worker_pool;

pub use error::{Error, StorageError};

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The current time as RFC 3339 (UTC, with fractional seconds).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
