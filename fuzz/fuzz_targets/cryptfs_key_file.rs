#![no_main]
//! A key file (or a key on stdin) for `pgcmk fs`: 64 hex characters and an optional
//! newline; anything else is refused without echoing key material.

use libfuzzer_sys::fuzz_target;
use pgcmk_cryptfs::key_file::parse_key;

fuzz_target!(|text: &[u8]| {
    // Key material (a run of hex characters) is never echoed in an error.
    let key_like = text.len() >= 16 && text.iter().all(u8::is_ascii_hexdigit);
    if let Err(e) = parse_key(text) {
        let said = e.to_string();
        assert!(
            !key_like || !said.contains(std::str::from_utf8(text).unwrap_or_default()),
            "the error quotes the key: {said}"
        );
    }
});
