//! pgcmk control plane: the servers' state store, the REST API (`pgcmk serve`), the
//! node agent that holds a server's DEK, mounts cryptfs and runs PostgreSQL on it,
//! and the key monitor that enforces the server states of `docs/operations.md`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod agent_task;
pub mod api;
pub mod api_tls;
pub mod auth;
pub mod backoff;
pub mod demo;
mod error;
pub mod kek;
pub mod memory;
pub mod model;
pub mod monitor;
mod own_mount;
mod pg_lock;
mod pg_log;
pub mod platform;
pub mod postgres;
mod process;
pub mod report;
pub mod root_key;
pub mod server_dir;
pub mod server_logs;
pub mod store;
pub mod supervisor;
mod sys;
pub mod task;
pub mod validate;

pub use error::Error;
