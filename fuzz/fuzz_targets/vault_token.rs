#![no_main]
//! Bearer tokens: the input as a token, then as the claims of a token signed with
//! the vault's key (what only a token that passes the signature check reaches). A
//! token signed with another key never verifies; one that verifies is for the
//! audience asked and valid now.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use pgcmk_crypto::mac::MacKey;
use pgcmk_crypto::SymmetricKey;
use pgcmk_vault::token::verify;

const AUDIENCE: &str = "https://127.0.0.1:8443/vaults/v1";
/// A fixed "now" (2026-01-01), so a run is repeatable.
const NOW: i64 = 1_767_225_600;
/// The JOSE header the vault issues.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fuzz_target!(|input: &[u8]| {
    let key = MacKey::new(&SymmetricKey::from_bytes([7; 32]));
    let other = MacKey::new(&SymmetricKey::from_bytes([8; 32]));
    if let Ok(token) = std::str::from_utf8(input) {
        let _ = verify(&key, token, AUDIENCE, NOW);
    }
    let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(input));
    let tag = key.sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", B64.encode(tag.as_bytes()));
    assert!(
        verify(&other, &token, AUDIENCE, NOW).is_err(),
        "a foreign key verified"
    );
    if let Ok(claims) = verify(&key, &token, AUDIENCE, NOW) {
        assert!(NOW < claims.exp, "an expired token verified: {claims:?}");
        assert_eq!(claims.aud.trim_end_matches('/'), AUDIENCE);
    }
});
