#![no_main]
//! `POST /servers` on the control plane: the create body decoded as the API does
//! and checked, and its key URL parsed, before anything is stored or started.

use libfuzzer_sys::fuzz_target;
use pgcmk_control::platform::CreateServer;
use pgcmk_keyprovider::KeyReference;

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<CreateServer>(body) {
        let _ = request.check();
        if let Some(key) = &request.protection.key {
            let _ = KeyReference::parse(key);
        }
    }
});
