#![no_main]
//! Every data-plane request body the vault decodes (create, update, import,
//! crypto operations, verify, restore, rotation policy), decoded and validated as
//! the handlers do. One input is tried as each body: they share most fields.

use libfuzzer_sys::fuzz_target;
use pgcmk_akv_model::{
    KeyCreateParameters, KeyOperationParameters, KeyUpdateParameters, KeyVerifyParameters,
    RotationPolicy as WirePolicy, ValueParameter,
};
use pgcmk_vault::keys::request::{attributes, decode, decode_b64url, key_ops, tags};
use pgcmk_vault::keys::rotation::RotationPolicy;

/// A fixed "now" (2026-01-01), so a run is repeatable.
const NOW: i64 = 1_767_225_600;

fuzz_target!(|body: &[u8]| {
    if let Ok(create) = decode::<KeyCreateParameters>(body) {
        let _ = key_ops(create.key_ops.as_deref());
        let _ = tags(create.tags);
        let _ = attributes(create.attributes);
    }
    if let Ok(update) = decode::<KeyUpdateParameters>(body) {
        let _ = key_ops(update.key_ops.as_deref());
        let _ = tags(update.tags);
        let _ = attributes(update.attributes);
    }
    if let Ok(op) = decode::<KeyOperationParameters>(body) {
        let _ = decode_b64url("value", &op.value);
    }
    if let Ok(verify) = decode::<KeyVerifyParameters>(body) {
        let _ = decode_b64url("digest", &verify.digest);
        let _ = decode_b64url("value", &verify.value);
    }
    if let Ok(restore) = decode::<ValueParameter>(body) {
        let _ = decode_b64url("value", &restore.value);
    }
    if let Ok(wire) = decode::<WirePolicy>(body) {
        if let Ok(policy) = RotationPolicy::from_wire(&wire, NOW, None) {
            let _ = policy.due(NOW, policy.expiry_for(NOW), NOW + 86_400);
            let _ = RotationPolicy::from_wire(&wire, NOW, Some(&policy));
        }
    }
});
