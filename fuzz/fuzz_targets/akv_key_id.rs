#![no_main]
//! Key identifiers (`kid`) and key URLs, from requests, replies, configuration and
//! the command line: what parses prints back as the same reference.

use libfuzzer_sys::fuzz_target;
use pgcmk_akv_model::{valid_key_name, valid_key_version, KeyReference, KeyVersionId};

fuzz_target!(|url: &[u8]| {
    let Ok(url) = std::str::from_utf8(url) else {
        return;
    };
    let _ = (valid_key_name(url), valid_key_version(url));
    if let Ok(reference) = KeyReference::parse(url) {
        let printed = reference.to_string();
        assert_eq!(
            KeyReference::parse(&printed).as_ref(),
            Ok(&reference),
            "{url:?} printed as {printed:?}"
        );
    }
    if let Ok(id) = KeyVersionId::parse(url) {
        let printed = id.to_string();
        assert_eq!(KeyVersionId::parse(&printed).as_ref(), Ok(&id));
        assert!(id.versionless().is_versionless());
    }
});
