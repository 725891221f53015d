//! Azure Key Vault keys data plane (REST, api-version 7.5): a blocking client for
//! `pgcmk vault serve` or a real Azure Key Vault, and [`AkvKek`], the
//! [`KeyEncryptionKey`](crate::KeyEncryptionKey) it provides.
//!
//! - [`TokenSource`]: a user-assigned managed identity (App Service protocol) or a
//!   client secret (OAuth2 client credentials); tokens are cached until shortly
//!   before they expire and never logged.
//! - [`AkvClient`]: keys, versions, soft delete/recover/purge, wrap/unwrap,
//!   sign/verify, rotation and rotation policies, with errors mapped to
//!   [`KeyError`](crate::KeyError): denied (401/403/404, disabled, expired, deleted),
//!   transient (timeouts, refused connections, 408/429/5xx) or invalid (other 4xx).

mod challenge;
mod client;
mod failure;
mod kek;
mod location;
mod model;
mod options;
mod token;
mod transport;

pub use challenge::BearerChallenge;
pub use client::{AkvClient, Signature, DEFAULT_API_VERSION};
pub use failure::from_response as error_from_response;
pub use kek::AkvKek;
pub use model::{
    DeletedKeyBundle, DeletedKeyItem, DeletionInfo, JsonWebKey, KeyAttributes, KeyBundle, KeyItem,
    KeyUpdate, LifetimeAction, LifetimeActionKind, LifetimeTrigger, NewRsaKey, RotationPolicy,
    RotationPolicyAttributes, SignatureAlgorithm, WrapAlgorithm, RSA_KEY_SIZES,
};
pub use options::ClientOptions;
pub use pgcmk_akv_model::{KeyReference as AkvKeyReference, KeyVersionId as AkvKeyVersionId};
pub use token::TokenSource;
