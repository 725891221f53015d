//! The one contract between the control plane and a node agent (documented for
//! operators in `docs/agent-contract.md`). The control plane depends on this
//! module and on nothing else of the agent.
//!
//! - [`server_dir`]: the layout of a server's directory, and how its JSON files
//!   are written (durably and atomically) and read.
//! - [`config`]: `DIR/agent.json`, what the plane tells the agent (no secrets).
//! - [`ha`]: in `agent.json`, what a node of a highly available server is told.
//! - [`backup`]: the server's backup repository and retention, in `agent.json`.
//! - [`status`]: `DIR/status.json`, what the agent reports.
//! - [`handshake`]: what the plane writes on the agent's stdin at every start.
//! - [`invocation`]: the agent's command lines and the signals it answers.
//! - [`task`]: the short-lived runs (`pgcmk agent --server-dir DIR TASK`) and
//!   their answers.

pub mod backup;
pub mod config;
pub mod ha;
pub mod handshake;
pub mod invocation;
pub mod replica;
pub mod server_dir;
pub mod status;
pub mod task;

pub use backup::BackupConfig;
pub use config::{AgentConfig, KekAccess, VaultEndpoints};
pub use ha::HaNode;
pub use handshake::{Handshake, HandshakeError};
pub use server_dir::ServerDir;
pub use status::{now_rfc3339, Actor, AgentEvent, AgentStatus, ServerState};
