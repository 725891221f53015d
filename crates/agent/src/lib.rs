//! pgcmk node agent: one process per server (`pgcmk agent`). It provisions a new
//! server (encrypted volume, `initdb`), holds the server's DEK in locked memory,
//! mounts cryptfs, runs PostgreSQL on the mount as its child, runs the key monitor
//! that enforces the server states of `docs/operations.md`, reports to the
//! control plane, and does short-lived tasks that need the DEK (logs, fsck,
//! adopting a rotated key version).
//!
//! [`contract`] is the one interface between the control plane and the agent: the
//! control plane (`pgcmk-control`) depends on it and, besides it, only on the
//! generic [`backoff`] policy; nothing else here is the plane's to use.

#![warn(missing_docs)]

pub mod agent;
pub mod backoff;
mod backup;
mod clock;
pub mod contract;
mod error;
mod kek;
mod key_watch;
mod memory;
mod metrics;
mod monitor;
mod own_mount;
pub mod patroni;
mod pg_lock;
mod pg_log;
pub mod postgres;
mod process;
pub mod provision;
mod report;
mod server_logs;
mod serving;
mod sys;
pub mod task_run;

pub use error::Error;
