//! Customer-managed servers whose KEK is an AES-256 key held by a real KMIP
//! server (PyKMIP, started by the test on loopback with certificates it made),
//! reached over TLS with the platform's client certificate; wrap and unwrap are
//! the server's Encrypt and Decrypt (AES-256-GCM), never Get. Revoking or
//! destroying the key refuses the server within an interval; a new key through
//! `server update --key` moves it.
//!
//! One KMIP server; servers share one stack, refusals another on which no server
//! is made.

mod support;

use std::time::Duration;

use pgcmk_testkit::kmip::KmipServer;
use pgcmk_testkit::shared::{Held, Shared};
use support::*;

/// Key check interval for the tests (seconds).
const INTERVAL: u64 = 2;

/// Fields drop in order: the stacks delete their servers before the KMIP server goes.
struct Fixture {
    stack: Stack,
    refusals: Stack,
    kmip: KmipServer,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let kmip = KmipServer::start();
        let ca = kmip.ca_file.to_str().unwrap().to_string();
        let stack = Stack::start_serving(INTERVAL, 30, None, &["--kmip-ca-file", &ca]);
        // The refusals' control plane also allows a CA that did not issue the KMIP
        // server's certificate: the first stack's vault CA.
        let other_ca = stranger_ca(&stack);
        let refusals = Stack::start_serving(
            INTERVAL,
            30,
            None,
            &[
                "--kmip-ca-file",
                &ca,
                "--kmip-ca-file",
                other_ca.to_str().unwrap(),
            ],
        );
        Fixture {
            stack,
            refusals,
            kmip,
        }
    })
}

/// A real CA file that did not issue the KMIP server's certificate: `stack`'s vault's.
fn stranger_ca(stack: &Stack) -> std::path::PathBuf {
    stack.vault.process.service.info.ca_file.clone()
}

impl Fixture {
    /// An Active AES-256 key for encryption and decryption; its reference.
    fn key(&self) -> (String, String) {
        let uid = self.kmip.create_key(256, "encrypt,decrypt", true);
        let reference = self.kmip.reference(&uid);
        (uid, reference)
    }

    fn create_on(
        &self,
        cp: &ControlPlane,
        name: &str,
        key: &str,
        credential: &std::path::Path,
    ) -> Result<serde_json::Value, String> {
        cp.create_with_credential(name, "platform", credential, key)
    }

    /// A server `name` with a new key and a table `t` of 1000 rows; its key's uid.
    fn server(&self, name: &str) -> (String, Created) {
        let (uid, key) = self.key();
        let cp = &self.stack.cp;
        let created = self
            .create_on(cp, name, &key, &self.kmip.credential)
            .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", cp.log()));
        let server = Created::from(&created);
        server
            .sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
            .unwrap();
        (uid, server)
    }

    /// Asserts that creating `name` with `key` (as the client in `credential`) is
    /// refused saying `expected`, leaving no row and no directory.
    fn refused(&self, name: &str, key: &str, credential: &std::path::Path, expected: &str) {
        let cp = &self.refusals.cp;
        assert_refused_leaving_nothing(cp, self.create_on(cp, name, key, credential), expected);
    }
}

fn wait_locked(cp: &ControlPlane, server: &Created, what: &str) -> String {
    wait_refused(cp, server, Duration::from_secs(INTERVAL + 2), what)
}

#[test]
fn a_server_with_a_kmip_key_is_ready_and_no_plaintext_or_client_key_reaches_the_disk() {
    let f = fixture();
    let cp = &f.stack.cp;
    let (uid, server) = f.server("kmipmarker");
    assert_eq!(
        server.server["wrapped_dek"]["kek"],
        format!("kmip://127.0.0.1:{}/{uid}", f.kmip.port)
    );
    assert_eq!(server.server["wrapped_dek"]["algorithm"], "A256GCM");
    let marker = "MARKER-kmip-91c2-plaintext";
    server
        .sql(&format!(
            "CREATE TABLE m AS SELECT '{marker}' || g AS v FROM generate_series(1, 5000) g; CHECKPOINT"
        ))
        .unwrap();
    // The client's private key is sealed in the state like any credential.
    let credential = std::fs::read_to_string(&f.kmip.credential).unwrap();
    let key_line = credential
        .lines()
        .skip_while(|l| !l.contains("PRIVATE KEY"))
        .nth(1)
        .unwrap()
        .to_string();
    for needle in [marker, key_line.as_str()] {
        assert_not_on_disk(cp, &server, needle);
    }
    cp.server(&["delete", "kmipmarker", "--yes"]);
}

#[test]
fn a_revoked_key_locks_the_server_within_an_interval() {
    let f = fixture();
    let cp = &f.stack.cp;
    let (uid, server) = f.server("kmiprevoked");
    f.kmip.revoke(&uid);
    let reason = wait_locked(cp, &server, "the key was revoked");
    // Whichever the agent tried first after the revocation: the decrypt (refused)
    // or reading the key's attributes (its state is no longer Active).
    assert!(
        reason.contains("refused") || reason.contains("is not Active (state Deactivated)"),
        "{reason}"
    );
    cp.server(&["delete", "kmiprevoked", "--yes"]);
}

#[test]
fn a_destroyed_key_locks_the_server_within_an_interval() {
    let f = fixture();
    let cp = &f.stack.cp;
    let (uid, server) = f.server("kmipdestroyed");
    f.kmip.destroy(&uid);
    wait_locked(cp, &server, "the key was destroyed");
    cp.server(&["delete", "kmipdestroyed", "--yes"]);
}

#[test]
fn moving_to_a_new_kmip_key_rewraps_the_dek_and_keeps_the_data() {
    let f = fixture();
    let cp = &f.stack.cp;
    let (_, server) = f.server("kmipmoved");
    let (uid, second) = f.key();
    let updated = cp.server(&["update", "kmipmoved", "--key", &second]);
    assert_eq!(updated["state"], "Ready", "{updated}");
    assert_eq!(
        updated["wrapped_dek"]["kek"],
        format!("kmip://127.0.0.1:{}/{uid}", f.kmip.port)
    );
    assert_eq!(server.sql("SELECT count(*) FROM t").unwrap(), "1000");
    cp.server(&["delete", "kmipmoved", "--yes"]);
}

#[test]
fn a_key_that_is_not_active_is_refused() {
    let f = fixture();
    let uid = f.kmip.create_key(256, "encrypt,decrypt", false);
    f.refused(
        "kmippreactive",
        &f.kmip.reference(&uid),
        &f.kmip.credential,
        "is not Active (state Pre-Active)",
    );
}

#[test]
fn a_key_whose_usage_mask_lacks_decrypt_is_refused() {
    let f = fixture();
    let uid = f.kmip.create_key(256, "encrypt", true);
    f.refused(
        "kmipnodecrypt",
        &f.kmip.reference(&uid),
        &f.kmip.credential,
        "lacks Encrypt or Decrypt",
    );
}

#[test]
fn a_key_of_the_wrong_size_is_refused() {
    let f = fixture();
    let uid = f.kmip.create_key(128, "encrypt,decrypt", true);
    f.refused(
        "kmipaes128",
        &f.kmip.reference(&uid),
        &f.kmip.credential,
        "is AES with 128 bits: use an AES-256 key",
    );
}

#[test]
fn a_client_the_server_does_not_trust_is_refused() {
    let f = fixture();
    let (_, key) = f.key();
    f.refused(
        "kmipstranger",
        &key,
        &f.kmip.stranger,
        "refused this client's certificate",
    );
}

#[test]
fn an_unreachable_kmip_server_is_refused() {
    let f = fixture();
    let closed = format!(
        "kmip://127.0.0.1:{}/1?ca-file={}",
        free_port(),
        f.kmip.ca_file.display()
    );
    f.refused(
        "kmipunreachable",
        &closed,
        &f.kmip.credential,
        "Connection refused",
    );
}

/// Asserts that a new key named with `ca_file` instead of the KMIP server's CA is
/// refused saying `expected`.
fn refused_with_ca(f: &Fixture, name: &str, ca_file: &std::path::Path, expected: &str) {
    let (uid, _) = f.key();
    let key = format!(
        "kmip://127.0.0.1:{}/{uid}?ca-file={}",
        f.kmip.port,
        ca_file.display()
    );
    f.refused(name, &key, &f.kmip.credential, expected);
}

#[test]
fn a_ca_file_the_platform_did_not_allow_is_refused() {
    let f = fixture();
    let not_allowed = stranger_ca(&f.refusals);
    refused_with_ca(
        &f,
        "kmipcanotallowed",
        &not_allowed,
        "is not allowed on this control plane",
    );
}

#[test]
fn a_kmip_server_whose_certificate_another_ca_issued_is_refused() {
    let f = fixture();
    let allowed_but_wrong = stranger_ca(&f.stack);
    refused_with_ca(
        &f,
        "kmipwrongca",
        &allowed_but_wrong,
        "was not issued by a CA in the key's ca-file",
    );
}
