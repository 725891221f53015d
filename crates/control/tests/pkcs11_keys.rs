//! Customer-managed servers whose KEK is an RSA key pair in a PKCS#11 token: a
//! real SoftHSM2 token store made by the test, the control plane allowed to load
//! its module (`pgcmk serve --pkcs11-module`), the token user's PIN handed over in a
//! 0600 file. The customer's HSM administrator revokes by changing the PIN,
//! forbidding decryption or deleting the key; undoing it brings the server back.
//!
//! One token store for the binary (SoftHSM reads its configuration once per
//! process); servers share one stack, refusals another on which no server is made.

mod support;

use std::time::Duration;

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::softhsm::{SoftHsm, MODULE};
use pgcmk_testkit::wait::wait_for;
use support::*;

/// Key check interval for the tests (seconds).
const INTERVAL: u64 = 2;
/// The user PIN of every token, and the one the PIN test changes to.
const PIN: &str = "4711-user-pin";
const NEW_PIN: &str = "0815-changed-pin";
/// The token most tests' keys live in, and the one whose PIN is changed.
const TOKEN: &str = "pgcmk-test";
const PIN_TOKEN: &str = "pgcmk-pin";
/// The token of the stack's vault, for its RSA-HSM keys (a token of its own: SoftHSM
/// processes that log in to one token at once may read its file half-written).
const VAULT_TOKEN: &str = "pgcmk-vault";

/// Fields drop in order: the stacks delete their servers before the token store goes.
struct Fixture {
    stack: Stack,
    refusals: Stack,
    hsm: SoftHsm,
    pin_file: std::path::PathBuf,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        // The tokens exist before the control plane loads the module.
        let hsm = SoftHsm::start(&[TOKEN, PIN_TOKEN, VAULT_TOKEN], PIN);
        let pin_file = hsm.pin_file("user.pin", PIN);
        let vault_pin_file = hsm.pin_file("vault.pin", PIN);
        let serve = ["--pkcs11-module", MODULE];
        let vault_serve = [
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token",
            VAULT_TOKEN,
            "--pkcs11-pin-file",
            vault_pin_file.to_str().unwrap(),
        ];
        Fixture {
            stack: Stack::start_with_vault(INTERVAL, 30, None, &serve, &vault_serve),
            refusals: Stack::start_serving(INTERVAL, 30, None, &serve),
            hsm,
            pin_file,
        }
    })
}

/// The key URI of `label` in `token`.
fn uri(token: &str, label: &str) -> String {
    format!("pkcs11:token={token};object={label}?module-path={MODULE}")
}

impl Fixture {
    /// An RSA 3072 key pair `label` in `token`; its URI.
    fn key(&self, token: &str, label: &str) -> String {
        self.hsm
            .generate_rsa(token, PIN, label, label.as_bytes(), 3072);
        uri(token, label)
    }

    /// `server create NAME --key KEY` as the token's user, on `cp`.
    fn create_on(
        &self,
        cp: &ControlPlane,
        name: &str,
        key: &str,
    ) -> Result<serde_json::Value, String> {
        cp.create_with_credential(name, "user", &self.pin_file, key)
    }

    /// A server `name` with the key `name` in `token` and a table `t` of 1000 rows.
    fn server(&self, token: &str, name: &str) -> Created {
        let key = self.key(token, name);
        let created = self
            .create_on(&self.stack.cp, name, &key)
            .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", self.stack.cp.log()));
        let server = Created::from(&created);
        server
            .sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
            .unwrap();
        server
    }

    /// Asserts that creating `name` with `key` is refused saying `expected`, and
    /// that nothing was left: no row, no directory.
    fn refused(&self, name: &str, key: &str, expected: &str) {
        self.refused_with_pin(name, key, &self.pin_file, expected);
    }

    /// Like [`Fixture::refused`], with the PIN in `pin_file`.
    fn refused_with_pin(&self, name: &str, key: &str, pin_file: &std::path::Path, expected: &str) {
        let cp = &self.refusals.cp;
        let result = cp.create_with_credential(name, "user", pin_file, key);
        if let Err(e) = &result {
            assert!(!e.contains(PIN), "the PIN is in the error: {e}");
        }
        assert_refused_leaving_nothing(cp, result, expected);
    }
}

fn assert_rows_intact(server: &Created) {
    assert_eq!(server.sql("SELECT count(*) FROM t").unwrap(), "1000");
}

/// Waits until connections are refused within an interval (plus the check) and the
/// server is Inaccessible; its reason.
fn wait_locked(cp: &ControlPlane, server: &Created, what: &str) -> String {
    wait_refused(cp, server, Duration::from_secs(INTERVAL + 2), what)
}

/// Waits until the server is Ready again without an operator, with its rows.
fn wait_unlocked(cp: &ControlPlane, server: &Created, what: &str) {
    wait_for(
        &format!("Ready after {what}"),
        Duration::from_secs(INTERVAL + 30),
        || cp.state(&server.name).0 == "Ready",
    );
    assert_rows_intact(server);
}

#[test]
fn a_server_with_a_token_key_is_ready_and_no_plaintext_or_pin_reaches_the_disk() {
    let f = fixture();
    let cp = &f.stack.cp;
    let key = f.key(TOKEN, "marker");
    let created = f.create_on(cp, "marker", &key).unwrap();
    assert_eq!(created["server"]["state"], "Ready");
    let kek = created["server"]["wrapped_dek"]["kek"].as_str().unwrap();
    assert_eq!(
        kek,
        format!("pkcs11:token={TOKEN};object=marker;id=%6d%61%72%6b%65%72")
    );
    assert!(f.hsm.never_extractable(TOKEN, PIN, "marker"));
    let server = Created::from(&created);
    let marker = "MARKER-pkcs11-4e1d-plaintext";
    server
        .sql(&format!(
            "CREATE TABLE m AS SELECT '{marker}' || g AS v FROM generate_series(1, 5000) g; CHECKPOINT"
        ))
        .unwrap();
    // Neither the data nor the token's PIN is on the disk in the clear: not in the
    // server's files (the live mount is the plaintext view), not in the state store.
    for needle in [marker, PIN] {
        assert_not_on_disk(cp, &server, needle);
    }
    cp.server(&["delete", "marker", "--yes"]);
}

#[test]
fn a_changed_pin_locks_the_server_within_an_interval_and_the_old_pin_unlocks_it() {
    let f = fixture();
    let cp = &f.stack.cp;
    let server = f.server(PIN_TOKEN, "pinned");
    f.hsm.change_pin(PIN_TOKEN, PIN, NEW_PIN);
    let reason = wait_locked(cp, &server, "the PIN changed");
    assert!(reason.contains("PinIncorrect"), "{reason}");
    f.hsm.change_pin(PIN_TOKEN, NEW_PIN, PIN);
    wait_unlocked(cp, &server, "the PIN changed back");
    cp.server(&["delete", "pinned", "--yes"]);
}

#[test]
fn a_key_forbidden_to_decrypt_locks_the_server_and_allowing_it_unlocks_it() {
    let f = fixture();
    let cp = &f.stack.cp;
    let server = f.server(TOKEN, "forbidden");
    f.hsm.set_decrypt(TOKEN, PIN, "forbidden", false);
    let reason = wait_locked(cp, &server, "CKA_DECRYPT was cleared");
    assert!(reason.contains("CKA_DECRYPT"), "{reason}");
    f.hsm.set_decrypt(TOKEN, PIN, "forbidden", true);
    wait_unlocked(cp, &server, "CKA_DECRYPT was set again");
    cp.server(&["delete", "forbidden", "--yes"]);
}

#[test]
fn a_deleted_key_locks_the_server_for_good() {
    let f = fixture();
    let cp = &f.stack.cp;
    let server = f.server(TOKEN, "deleted");
    f.hsm.delete(TOKEN, PIN, "deleted");
    let reason = wait_locked(cp, &server, "the key was deleted");
    assert!(reason.contains("no such private key"), "{reason}");
    cp.server(&["delete", "deleted", "--yes"]);
}

#[test]
fn moving_to_another_token_key_rewraps_the_dek_and_keeps_the_data() {
    let f = fixture();
    let cp = &f.stack.cp;
    let server = f.server(TOKEN, "moved");
    let second = f.key(TOKEN, "moved-2");
    let updated = cp.server(&["update", "moved", "--key", &second]);
    assert_eq!(updated["state"], "Ready", "{updated}");
    assert_eq!(
        updated["wrapped_dek"]["kek"],
        format!("pkcs11:token={TOKEN};object=moved-2;id=%6d%6f%76%65%64%2d%32")
    );
    assert_rows_intact(&server);
    cp.server(&["delete", "moved", "--yes"]);
}

#[test]
fn a_key_of_the_wrong_type_is_refused() {
    let f = fixture();
    f.hsm.generate_ec(TOKEN, PIN, "ec-key", b"ec");
    f.refused(
        "eckey",
        &uri(TOKEN, "ec-key"),
        "use an RSA key of 2048, 3072 or 4096 bits",
    );
}

#[test]
fn a_key_that_may_not_decrypt_is_refused() {
    let f = fixture();
    f.key(TOKEN, "no-decrypt");
    f.hsm.set_decrypt(TOKEN, PIN, "no-decrypt", false);
    f.refused(
        "nodecrypt",
        &uri(TOKEN, "no-decrypt"),
        "may not decrypt (CKA_DECRYPT is false)",
    );
}

#[test]
fn a_missing_key_is_refused() {
    let f = fixture();
    f.refused(
        "missing",
        &uri(TOKEN, "never-made"),
        "the token has no such private key",
    );
}

#[test]
fn an_absent_token_is_refused() {
    let f = fixture();
    f.refused(
        "notoken",
        &uri("elsewhere", "k"),
        "no such token is present",
    );
}

#[test]
fn a_module_the_platform_did_not_allow_is_refused() {
    let f = fixture();
    f.refused(
        "badmodule",
        "pkcs11:token=t;object=k?module-path=/usr/lib/other/libpkcs11.so",
        "is not allowed on this control plane",
    );
}

#[test]
fn a_wrong_pin_is_refused() {
    let f = fixture();
    f.key(TOKEN, "wrong-pin");
    let wrong = f.hsm.pin_file("wrong.pin", "not-the-pin");
    f.refused_with_pin("wrongpin", &uri(TOKEN, "wrong-pin"), &wrong, "PinIncorrect");
}

#[test]
fn a_pin_file_other_users_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let open = f.hsm.pin_file("open.pin", PIN);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    f.refused_with_pin("openpin", &uri(TOKEN, "never-made"), &open, "chmod 600");
}

/// The vault's own RSA-HSM keys (docs/providers/vault-hsm.md) serve as a KEK like
/// any vault key: the agent's unwrap reaches the vault's token.
#[test]
fn a_server_whose_kek_is_an_rsa_hsm_key_in_the_vault_is_ready() {
    let f = fixture();
    let stack = &f.stack;
    let key = stack.vault.customer_key_of("vault-hsm", "RSA-HSM");
    let created = stack.cp.create_with("vault-hsm", &key, &key.kid);
    let server = Created::from(&created);
    server.sql("CREATE TABLE t(id int)").unwrap();
    assert_eq!(stack.cp.state("vault-hsm").0, "Ready");
    assert_eq!(stack.cp.wrapped_by("vault-hsm"), key.kid);
}
