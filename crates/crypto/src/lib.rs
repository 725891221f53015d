//! Cryptographic building blocks shared by every pgcmk component: AEAD, HKDF, HMAC,
//! RSA key wrapping, randomness, secret types and PostgreSQL's SCRAM verifier.
//!
//! All primitives come from aws-lc-rs: this crate is the one place where the
//! backend is chosen (and where a FIPS build would switch it). It does no I/O.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aead;
mod error;
pub mod kdf;
pub mod mac;
pub mod random;
pub mod rsa;
pub mod scram;
pub mod sealed;
pub mod secret;

pub use error::Error;
pub use secret::{ct_eq, Dek, SecretBytes, SymmetricKey};
