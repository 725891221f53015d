#![no_main]
//! A key file (or a key on stdin) for `pgcmk fs`: 64 hex characters and an optional
//! newline; anything else is refused without echoing the key.

use libfuzzer_sys::fuzz_target;
use pgcmk_cryptfs::key_file::parse_key;

fuzz_target!(|text: &[u8]| {
    if let Err(e) = parse_key(text) {
        let said = e.to_string();
        assert!(
            text.len() < 16 || !said.contains(&String::from_utf8_lossy(text).into_owned()),
            "the error quotes the key: {said}"
        );
    }
});
