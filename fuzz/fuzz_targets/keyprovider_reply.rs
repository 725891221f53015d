#![no_main]
//! What a vault (or anything answering in its place) sends the key provider: the
//! `WWW-Authenticate` challenge, error bodies, and the JSON replies it decodes
//! (key bundles, operation results, list pages, deleted keys, rotation policies).
//! An error reply always yields a bounded reason.

use libfuzzer_sys::fuzz_target;
use pgcmk_akv_model::{
    b64url, DeletedKeyBundle, KeyBundle, KeyItem, KeyOperationResult, ListPage, RotationPolicy,
};
use pgcmk_crypto::Dek;
use pgcmk_keyprovider::akv::{error_from_response, BearerChallenge};

const VAULT_URL: &str = "https://vault.example:8443/vaults/v1";

fuzz_target!(|reply: &[u8]| {
    if let Ok(header) = std::str::from_utf8(reply) {
        if let Some(challenge) = BearerChallenge::parse(header) {
            let _ = challenge.verify_for(VAULT_URL);
        }
    }
    let status = 400 + u16::from(reply.first().copied().unwrap_or(0) % 200);
    let reason = error_from_response("unwrapKey", status, reply).to_string();
    assert!(reason.len() < 10_000, "a {}-byte reason", reason.len());
    if let Ok(bundle) = serde_json::from_slice::<KeyBundle>(reply) {
        let _ = (bundle.version_id(), bundle.size_bits());
    }
    if let Ok(result) = serde_json::from_slice::<KeyOperationResult>(reply) {
        if let Ok(plain) = b64url::decode(&result.value) {
            let _ = Dek::from_slice(&plain);
        }
    }
    let _ = serde_json::from_slice::<ListPage<KeyItem>>(reply);
    let _ = serde_json::from_slice::<DeletedKeyBundle>(reply);
    let _ = serde_json::from_slice::<RotationPolicy>(reply);
});
