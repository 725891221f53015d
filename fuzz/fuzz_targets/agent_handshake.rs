#![no_main]
//! The agent's start-up handshake on its stdin: what reads is written back
//! unchanged.

use libfuzzer_sys::fuzz_target;
use pgcmk_agent::contract::Handshake;

fuzz_target!(|input: &[u8]| {
    let Ok(handshake) = Handshake::read(input) else {
        return;
    };
    let mut written = Vec::new();
    if handshake.write(&mut written).is_err() {
        return;
    }
    let again = Handshake::read(written.as_slice()).expect("a written handshake reads");
    assert_eq!(
        again.identity_secret.expose_secret(),
        handshake.identity_secret.expose_secret()
    );
    let secret =
        |s: &Option<pgcmk_crypto::SecretBytes>| s.as_ref().map(|s| s.expose_secret().to_vec());
    assert_eq!(
        secret(&again.initial_password),
        secret(&handshake.initial_password)
    );
    assert_eq!(secret(&again.new_password), secret(&handshake.new_password));
});
