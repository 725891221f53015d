//! PKCS#11 tokens as both the key provider (a server's KEK in the customer's HSM)
//! and the vault (`kty: RSA-HSM` keys) use them: a module loaded once per process,
//! operations run logged in as the token's user, RSA-OAEP mechanisms, and the
//! token's refusals classified as denials or transient failures.

#![forbid(unsafe_code)]

mod error;
mod module;
pub mod oaep;
pub mod rsa_key;

pub use error::{classify, TokenError};
pub use module::{Access, Module};
