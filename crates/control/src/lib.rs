//! pgcmk control plane (`pgcmk serve`): the servers' state store, the REST API,
//! authentication, validation of encryption settings, the servers' lifecycle, and
//! the supervision of one node agent per server.
//!
//! The node agent is another process and another crate (`pgcmk-agent`). This crate
//! depends on it only for its [`pgcmk_agent::contract`] — the server directory
//! layout, `agent.json`, `status.json`, the start-up handshake, the agent's
//! command lines and signals, and its short-lived tasks — and for the generic
//! restart back-off ([`pgcmk_agent::backoff`]); never on the agent's internals.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
mod api_metrics;
pub mod api_tls;
pub mod assignments;
pub mod auth;
pub mod azure_blob;
pub mod console;
mod error;
mod error_code;
pub mod etcd;
pub mod etcd_auth;
pub mod etcd_tls;
pub mod host_agents;
pub mod host_daemon;
pub mod host_server_dir;
pub mod hosts;
pub mod identity_file;
pub mod metrics;
pub mod model;
pub mod node_agent;
pub mod platform;
pub mod root_key;
pub mod serve_info;
pub mod servers_ca;
pub mod standalone_etcd;
pub mod store;
pub mod stored_ca;
pub mod supervisor;
pub mod validate;

pub use error::{Error, StateConflict, StoreError};
pub use error_code::ErrorCode;
