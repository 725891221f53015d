//! The Azure Key Vault keys REST API (api-version 7.5) as typed Rust values: what
//! `pgcmk vault serve` reads and answers, and what `pgcmk-keyprovider`'s client sends
//! and reads. One model, so both sides agree on every field name and shape.
//!
//! JSON names are AKV's (camelCase in attributes and policies, JWK names in keys);
//! times are Unix seconds. Unknown fields are ignored when reading, as Azure's own
//! clients and service do, so newer SDKs that send extra fields keep working.

#![forbid(unsafe_code)]

pub mod b64url;
mod error_body;
mod key;
mod kid;
mod operations;
mod rotation;

pub use error_body::{ErrorBody, ErrorDetail};
pub use key::{
    DeletedKeyBundle, DeletedKeyItem, DeletionInfo, JsonWebKey, KeyAttributes, KeyBundle, KeyItem,
    ListPage,
};
pub use kid::{valid_key_name, valid_key_version, InvalidKeyId, KeyReference, KeyVersionId};
pub use operations::{
    AttributeChanges, GetRandomBytesParameters, KeyCreateParameters, KeyImportParameters,
    KeyOperationParameters, KeyOperationResult, KeyUpdateParameters, KeyVerifyParameters,
    KeyVerifyResult, PrivateJsonWebKey, RandomBytes, ValueParameter, MAX_RANDOM_BYTES,
};
pub use rotation::{
    LifetimeAction, LifetimeActionKind, LifetimeTrigger, RotationPolicy, RotationPolicyAttributes,
};

/// Key sizes AKV accepts for RSA keys.
pub const RSA_KEY_SIZES: [u32; 3] = [2048, 3072, 4096];
