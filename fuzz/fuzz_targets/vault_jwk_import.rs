#![no_main]
//! `PUT /keys/{name}`: a JWK import body decoded and turned into an RSA private key
//! (base64url components, CRT consistency, size), as the import handler does.

use libfuzzer_sys::fuzz_target;
use pgcmk_akv_model::KeyImportParameters;
use pgcmk_vault::keys::request::{decode, imported_private_key, key_ops};

fuzz_target!(|body: &[u8]| {
    if let Ok(import) = decode::<KeyImportParameters>(body) {
        let _ = key_ops(import.key.key_ops.as_deref());
        let _ = imported_private_key(&import);
    }
});
