//! The root key: without it the data directory reveals no key material and the
//! service refuses to start; a passphrase-derived root key works the same way.

mod support;

use reqwest::Method;
use serde_json::json;
use support::{b64, unb64, Vault};

/// DER of the rsaEncryption OID, present in every PKCS#8 RSA private key.
const RSA_OID: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

#[test]
fn data_directory_without_root_key_reveals_nothing_and_does_not_start() {
    let mut v = Vault::start();
    let url = v.vault("sealed", false);
    let t = v.admin_token(&url);
    let kid = v.create_key(&url, &t, "k", 2048);
    let n = unb64(
        v.akv(Method::GET, &kid, "", &t, None).body["key"]["n"]
            .as_str()
            .unwrap(),
    );
    v.stop();

    let mut all = Vec::new();
    for entry in std::fs::read_dir(v.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "root.key" {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(
        !all.windows(RSA_OID.len()).any(|w| w == RSA_OID),
        "a PKCS#8 RSA key is stored in the clear"
    );
    assert!(
        !all.windows(32).any(|w| w == &n[..32]),
        "not even the modulus is stored as raw bytes"
    );
    assert!(!String::from_utf8_lossy(&all).contains("PRIVATE KEY"));

    let root = v.data_dir().join("root.key");
    let saved = std::fs::read(&root).unwrap();
    std::fs::remove_file(&root).unwrap();
    let log = v.restart_expecting_failure();
    assert!(log.contains("root.key is missing"), "{log}");
    std::fs::write(&root, [0u8; 32]).unwrap();
    let log = v.restart_expecting_failure();
    assert!(
        log.contains("the root key does not match this data directory"),
        "{log}"
    );
    std::fs::write(&root, saved).unwrap();
    v.restart();
    let t = v.admin_token(&url);
    assert_eq!(v.akv(Method::GET, &kid, "", &t, None).status, 200);
}

#[test]
fn passphrase_derived_root_key() {
    let mut v = Vault::start_env(
        &["--passphrase-env", "VAULT_PASSPHRASE"],
        &[("VAULT_PASSPHRASE", "correct horse battery staple")],
    );
    assert!(!v.data_dir().join("root.key").exists());
    let url = v.vault("phrase", false);
    let t = v.admin_token(&url);
    let kid = v.create_key(&url, &t, "k", 2048);
    let wrapped = v.akv(
        Method::POST,
        &kid,
        "/wrapkey",
        &t,
        Some(json!({ "alg": "RSA-OAEP-256", "value": b64(&[2; 32]) })),
    );
    v.stop();

    v.set_env(&[("VAULT_PASSPHRASE", "wrong horse battery staple")]);
    let log = v.restart_expecting_failure();
    assert!(log.contains("wrong passphrase"), "{log}");
    v.set_env(&[]);
    let log = v.restart_expecting_failure();
    assert!(log.contains("VAULT_PASSPHRASE is not set"), "{log}");

    v.set_env(&[("VAULT_PASSPHRASE", "correct horse battery staple")]);
    v.restart();
    let t = v.admin_token(&url);
    let out = v.akv(
        Method::POST,
        &kid,
        "/unwrapkey",
        &t,
        Some(json!({ "alg": "RSA-OAEP-256", "value": wrapped.body["value"] })),
    );
    assert_eq!(unb64(out.body["value"].as_str().unwrap()), vec![2; 32]);
}
