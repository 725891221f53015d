//! The Azure Key Vault–compatible keys data plane: each operation on the typed AKV
//! model, failing with [`error::KeyOpError`]; `crate::http` maps it to HTTP.

pub mod backup;
pub mod cache;
pub mod crypto;
pub mod error;
pub mod hsm;
mod hsm_version;
pub mod lifecycle;
pub mod listing;
pub mod model;
pub mod ops;
pub mod random;
pub mod request;
pub mod rotation;
pub mod route;
