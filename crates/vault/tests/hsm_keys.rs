//! `kty: RSA-HSM` keys: the vault started with a real SoftHSM2 token (made by the
//! test in a temporary directory) generates each version's key pair in the token,
//! keeps only its reference and public half, and unwraps and signs there. The test
//! reads the token through cryptoki as the HSM administrator would.
//!
//! One token store and one vault for the binary (SoftHSM reads its configuration
//! once per process). SoftHSM's file store is not safe for processes that use it at
//! once (every login rewrites the token's file, which another process may be
//! reading), so the tests take turns: each holds the vault's lock while the vault
//! or the test touches the token. A vault should be its token's only user.

mod support;

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::softhsm::{SoftHsm, MODULE};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Mutex;

use support::{b64, unb64, Answer, Vault};

const TOKEN: &str = "vault-hsm";
const PIN: &str = "1234-vault-pin";

/// Fields drop in order: the vault stops before the token store goes.
struct Fixture {
    vault: Mutex<Vault>,
    url: String,
    token: String,
    hsm: SoftHsm,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let hsm = SoftHsm::start(&[TOKEN], PIN);
        let pin_file = hsm.pin_file("vault.pin", PIN);
        let pin_file = pin_file.to_str().unwrap();
        let vault = Vault::start_with(&[
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token",
            TOKEN,
            "--pkcs11-pin-file",
            pin_file,
        ]);
        let url = vault.vault("hsm", false);
        let token = vault.admin_token(&url);
        Fixture {
            vault: Mutex::new(vault),
            url,
            token,
            hsm,
        }
    })
}

impl Fixture {
    /// The vault, this test's alone until the guard drops.
    fn vault(&self) -> std::sync::MutexGuard<'_, Vault> {
        self.vault.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.vault().akv(method, &self.url, path, &self.token, body)
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body))
    }

    /// Creates RSA-HSM key `name`; its key bundle.
    fn create(&self, name: &str) -> Value {
        let a = self.post(
            &format!("/keys/{name}/create"),
            json!({ "kty": "RSA-HSM", "key_size": 2048 }),
        );
        assert_eq!(a.status, 200, "{}\n{}", a.body, self.vault().log());
        a.body
    }

    /// How many token objects carry the label of version `kid` (both halves: 2).
    fn objects_of(&self, kid: &str) -> usize {
        let mut parts = kid.rsplit('/');
        let (version, name) = (parts.next().unwrap(), parts.next().unwrap());
        let _turn = self.vault();
        self.hsm.reload();
        self.hsm
            .count_labelled(TOKEN, PIN, &format!("hsm/{name}/{version}"))
    }

    /// Wraps `dek` with `kid` (`alg`) and unwraps it again; the unwrapped bytes.
    fn round_trip(&self, kid: &str, alg: &str, dek: &[u8]) -> Vec<u8> {
        let path = kid.strip_prefix(&self.url).unwrap();
        let wrapped = self.post(
            &format!("{path}/wrapkey"),
            json!({ "alg": alg, "value": b64(dek) }),
        );
        assert_eq!(wrapped.status, 200, "{}", wrapped.body);
        let unwrapped = self.post(
            &format!("{path}/unwrapkey"),
            json!({ "alg": alg, "value": wrapped.body["value"] }),
        );
        assert_eq!(unwrapped.status, 200, "{}", unwrapped.body);
        unb64(unwrapped.body["value"].as_str().unwrap())
    }
}

fn kid(bundle: &Value) -> String {
    bundle["key"]["kid"].as_str().unwrap().to_string()
}

#[test]
fn an_rsa_hsm_key_is_generated_in_the_token_and_its_private_half_cannot_leave_it() {
    let f = fixture();
    let bundle = f.create("made-in-token");
    assert_eq!(bundle["key"]["kty"], "RSA-HSM");
    assert!(bundle["key"]["n"].as_str().is_some_and(|n| n.len() > 300));
    assert!(bundle["key"]["d"].is_null());
    let kid = kid(&bundle);
    assert_eq!(f.objects_of(&kid), 2, "a public and a private key object");
    let version = kid.rsplit('/').next().unwrap();
    let _turn = f.vault();
    assert!(
        f.hsm
            .never_extractable(TOKEN, PIN, &format!("hsm/made-in-token/{version}")),
        "the private key must be sensitive and not extractable"
    );
}

#[test]
fn keys_wrapped_with_an_rsa_hsm_key_unwrap_in_the_token() {
    let f = fixture();
    let kid = kid(&f.create("wraps"));
    // SoftHSM 2.6 has OAEP with SHA-1 only: RSA-OAEP-256 is raw RSA in the token
    // and OAEP decoding in the vault.
    for (alg, dek) in [("RSA-OAEP-256", [7u8; 32]), ("RSA-OAEP", [9u8; 32])] {
        assert_eq!(f.round_trip(&kid, alg, &dek), dek, "{alg}");
    }
    let path = kid.strip_prefix(&f.url).unwrap();
    let wrong = f.post(
        &format!("{path}/unwrapkey"),
        json!({ "alg": "RSA-OAEP-256", "value": b64(&[1u8; 256]) }),
    );
    assert_eq!(
        (wrong.status, wrong.code()),
        (400, "BadParameter"),
        "{}",
        wrong.body
    );
}

#[test]
fn signatures_made_in_the_token_verify_with_the_public_key() {
    let f = fixture();
    let kid = kid(&f.create("signs"));
    let path = kid.strip_prefix(&f.url).unwrap();
    let digest = b64(&[0x5a; 32]);
    for alg in ["RS256", "PS256"] {
        let signed = f.post(
            &format!("{path}/sign"),
            json!({ "alg": alg, "value": digest }),
        );
        assert_eq!(signed.status, 200, "{alg}: {}", signed.body);
        let verified = f.post(
            &format!("{path}/verify"),
            json!({ "alg": alg, "digest": digest, "value": signed.body["value"] }),
        );
        assert_eq!(verified.body["value"], true, "{alg}: {}", verified.body);
    }
}

#[test]
fn rotating_an_rsa_hsm_key_makes_a_new_token_key_pair_and_keeps_the_old() {
    let f = fixture();
    let old = kid(&f.create("rotates"));
    let rotated = f.post("/keys/rotates/rotate", json!({}));
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = kid(&rotated.body);
    assert_ne!(new, old);
    assert_eq!(rotated.body["key"]["kty"], "RSA-HSM");
    assert_eq!((f.objects_of(&old), f.objects_of(&new)), (2, 2));
    assert_eq!(f.round_trip(&old, "RSA-OAEP", &[1; 32]), [1; 32]);
    assert_eq!(f.round_trip(&new, "RSA-OAEP", &[2; 32]), [2; 32]);
}

#[test]
fn backing_up_an_rsa_hsm_key_is_forbidden() {
    let f = fixture();
    f.create("no-backup");
    let a = f.post("/keys/no-backup/backup", json!({}));
    assert_eq!((a.status, a.code()), (403, "Forbidden"), "{}", a.body);
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("RSA-HSM"), "{message}");
}

#[test]
fn importing_a_key_as_rsa_hsm_is_refused() {
    let f = fixture();
    let a = f.call(
        Method::PUT,
        "/keys/imported",
        Some(json!({ "key": { "kty": "RSA-HSM", "n": b64(&[1; 256]), "e": "AQAB" } })),
    );
    assert_eq!((a.status, a.code()), (400, "BadParameter"), "{}", a.body);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("BYOK"));
}

#[test]
fn purging_an_rsa_hsm_key_destroys_its_key_pairs_in_the_token() {
    let f = fixture();
    let first = kid(&f.create("purged"));
    let second = kid(&f.post("/keys/purged/rotate", json!({})).body);
    assert_eq!(f.objects_of(&first) + f.objects_of(&second), 4);
    let deleted = f.call(Method::DELETE, "/keys/purged", None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    // Soft delete keeps the key pairs: the key can be recovered.
    assert_eq!(f.objects_of(&first), 2);
    let purged = f.call(Method::DELETE, "/deletedkeys/purged", None);
    assert_eq!(purged.status, 204, "{}", purged.body);
    assert_eq!((f.objects_of(&first), f.objects_of(&second)), (0, 0));
}

#[test]
fn a_vault_killed_and_restarted_unwraps_with_its_rsa_hsm_keys() {
    let f = fixture();
    let kid = kid(&f.create("survives"));
    let path = kid.strip_prefix(&f.url).unwrap().to_string();
    let wrapped = f.post(
        &format!("{path}/wrapkey"),
        json!({ "alg": "RSA-OAEP-256", "value": b64(&[4; 32]) }),
    );
    let mut vault = f.vault();
    vault.kill9();
    vault.restart();
    let unwrapped = vault.akv(
        Method::POST,
        &f.url,
        &format!("{path}/unwrapkey"),
        &f.token,
        Some(json!({ "alg": "RSA-OAEP-256", "value": wrapped.body["value"] })),
    );
    assert_eq!(unwrapped.status, 200, "{}", unwrapped.body);
    assert_eq!(unb64(unwrapped.body["value"].as_str().unwrap()), [4; 32]);
}

#[test]
fn without_a_token_creating_an_rsa_hsm_key_names_the_flags_to_set() {
    // Held, though unused, so that the shared one stays up while this test runs.
    let _shared = fixture();
    let vault = Vault::start();
    let url = vault.vault("plain", false);
    let token = vault.admin_token(&url);
    let a = vault.akv(
        Method::POST,
        &url,
        "/keys/k/create",
        &token,
        Some(json!({ "kty": "RSA-HSM" })),
    );
    assert_eq!((a.status, a.code()), (400, "BadParameter"), "{}", a.body);
    let message = a.body["error"]["message"].as_str().unwrap();
    for flag in ["--pkcs11-module", "--pkcs11-token", "--pkcs11-pin-file"] {
        assert!(message.contains(flag), "{message}");
    }
    let after = vault.akv(Method::GET, &url, "/keys/k", &token, None);
    assert_eq!(after.status, 404, "nothing was created: {}", after.body);
}

#[test]
fn operations_on_an_rsa_hsm_key_are_audited_like_any_key() {
    let f = fixture();
    let kid = kid(&f.create("audited"));
    let version = kid.rsplit('/').next().unwrap();
    f.round_trip(&kid, "RSA-OAEP", &[5; 32]);
    let refused = f.post("/keys/audited/backup", json!({}));
    assert_eq!(refused.status, 403);
    let vault = f.vault();
    for (operation, result, status) in [
        ("KeyCreate", "allowed", 200),
        ("KeyUnwrap", "allowed", 200),
        ("KeyBackup", "denied", 403),
    ] {
        let entries = vault.audit(&format!(
            "operation={operation}&vault=hsm&key=audited&result={result}"
        ));
        assert_eq!(entries.len(), 1, "{operation}: {entries:?}");
        let e = &entries[0]["entry"];
        assert_eq!(e["status"], status, "{operation}: {e}");
        if status == 200 {
            assert_eq!(e["version"], version, "{operation}: {e}");
        }
    }
}

#[test]
fn a_wrong_pin_stops_the_vault_at_start_up_with_the_tokens_reason() {
    use pgcmk_testkit::process::{kill_quietly, wait_exit};
    let f = fixture();
    let wrong = f.hsm.pin_file("wrong.pin", "not-the-pin");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _turn = f.vault();
    let mut child = std::process::Command::new(pgcmk_testkit::binary::pgcmk())
        .args(["vault", "serve", "--data-dir"])
        .arg(&data)
        .args(["--pkcs11-module", MODULE, "--pkcs11-token", TOKEN])
        .arg("--pkcs11-pin-file")
        .arg(&wrong)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = wait_exit(&mut child, std::time::Duration::from_secs(30)) else {
        kill_quietly(&mut child);
        panic!("the vault kept running with a wrong PIN");
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("Login returned PinIncorrect"), "{stderr}");
    assert!(!stderr.contains("not-the-pin"), "the PIN is in the error");
    assert!(!data.exists(), "nothing is made before the token says no");
}
