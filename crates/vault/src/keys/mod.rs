//! The Azure Key Vault–compatible keys data plane.

pub mod backup;
pub mod cache;
pub mod crypto;
pub mod lifecycle;
pub mod listing;
pub mod maintenance;
pub mod model;
pub mod ops;
pub mod request;
pub mod rotation;
pub mod route;
