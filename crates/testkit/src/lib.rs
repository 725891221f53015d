//! Test support shared by pgcmk's integration tests (a dev-dependency only).
//!
//! Everything here drives real processes: the `pgcmk` binary built from this
//! workspace, a `pgcmk vault serve` child on a free loopback port, and the
//! security officer's CLI against it. A process is stopped by its own handle or pid,
//! never by name.

#![forbid(unsafe_code)]

pub mod azurite;
pub mod binary;
pub mod cli;
pub mod kmip;
pub mod net;
pub mod netns;
pub mod process;
pub mod rsa_jwk;
pub mod shared;
pub mod softhsm;
pub mod vault;
pub mod wait;
pub mod webdriver;
