//! PKCS#11 tokens (HSMs, SoftHSM2) as key providers: the KEK is an RSA key pair
//! generated in the token; the DEK is wrapped with RSA-OAEP (SHA-256) by the token's
//! `C_Encrypt` on the public key and unwrapped by `C_Decrypt` on the private key,
//! which never leaves the token.
//!
//! - [`Pkcs11KeyReference`]: the RFC 7512 URI naming token, key and module.
//! - [`Pkcs11Kek`]: the [`KeyEncryptionKey`](crate::KeyEncryptionKey) it provides,
//!   logging in with the token user's PIN for every operation, so that a changed
//!   PIN is noticed at the next key check.

mod kek;
mod uri;

pub use kek::Pkcs11Kek;
pub use uri::{Pkcs11KeyReference, Pkcs11KeyVersion};

use pgcmk_pkcs11::TokenError;

use crate::KeyError;

/// A token's refusal as a server sees it: denied (Inaccessible at once), transient
/// (retried) or invalid.
impl From<TokenError> for KeyError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Denied { reason } => KeyError::Denied { reason },
            TokenError::Transient { reason } => KeyError::Transient { reason },
            _ => KeyError::Invalid {
                reason: e.reason().to_string(),
            },
        }
    }
}
