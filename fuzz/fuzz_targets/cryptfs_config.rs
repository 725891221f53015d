#![no_main]
//! The cipher directory's `pgcmk-cryptfs.conf`, read at every mount and fsck before
//! the key is checked: anyone who can write the cipher directory controls it.

use libfuzzer_sys::fuzz_target;
use pgcmk_cryptfs::VolumeConfig;

fuzz_target!(|text: &[u8]| {
    if let Ok(text) = std::str::from_utf8(text) {
        let _ = VolumeConfig::parse(text);
    }
});
