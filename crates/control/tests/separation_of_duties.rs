//! Separation of duties (DESIGN.md, "Who uses it"), each boundary shown by its
//! denied path, with real parts: `pgcmk vault serve`, `pgcmk serve` with its root
//! key derived from a passphrase, a node agent, cryptfs and PostgreSQL 15.
//!
//! - Anyone on the host without the DBA's credential: every `/servers` route
//!   (the server logs and fsck, which read the encrypted volume through the agent,
//!   included) answers 401 and changes nothing.
//! - The DBA's principal in the vault: sees the public JWK only; cannot unwrap a
//!   DEK, back up, change, rotate or delete a key, or set access policies (403).
//! - The system administrator with a copy of the server's and the control plane's
//!   disks, taken while the server runs: no DEK, no identity secret, no row of
//!   data; nothing in it gets a vault token; the control plane and the agent do
//!   not start from it. The running agent's arguments and environment hold no
//!   secret either.
//!
//! One server serves every check, to keep the run short.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use pgcmk_agent::contract::{KekAccess, VaultEndpoints};
use pgcmk_control::identity_file::read_identity_secret;
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::{KeyReference, WrappedDek};
use pgcmk_testkit::binary::pgcmk;
use serde_json::{json, Value};
use support::*;

const PASSPHRASE: &str = "separation-of-duties passphrase";
const MARKER: &str = "MARKER-5d1e-separation-of-duties";

#[test]
fn each_role_is_held_to_its_side_of_the_boundary() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start_with(root.path(), &vault, 60, 300, Some(PASSPHRASE));

    let mi = vault.identity("orders-mi");
    let kv = vault.keyvault("orders-kv", "westeurope", true);
    vault.grant("orders-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
    let kid = vault.key("orders-kv", "orders-key", 2048);
    let created = cp
        .create_cmk("orders", &mi, &mi.name, &versionless(&kid))
        .unwrap();
    let port = created["server"]["port"].as_u64().unwrap();
    let password = created["password"].as_str().unwrap().to_string();
    psql(
        port,
        &password,
        &format!("CREATE TABLE t(v text); INSERT INTO t SELECT '{MARKER}' || g FROM generate_series(1, 1000) g; CHECKPOINT"),
    )
    .unwrap();

    api_needs_the_dba_credential(&cp, &vault, port, &password);
    dba_principal_gets_no_key_material(&vault, &kv, &created["server"]);
    disk_copy_reveals_nothing(root.path(), &cp, &vault, &mi, &created["server"]);
    assert_eq!(
        psql(port, &password, "SELECT count(*) FROM t").unwrap(),
        "1000"
    );
}

/// Every route but the health probe refuses a request without the DBA's token or
/// with a wrong one, before reading its body; nothing changes.
fn api_needs_the_dba_credential(cp: &ControlPlane, vault: &Vault, port: u64, password: &str) {
    let http = cp.https_client();
    let token = fs::read_to_string(cp.dba_credential()).unwrap();
    let token = token.trim();
    let other_key = format!(
        "{}/keys/other",
        vault.keyvault("other-kv", "westeurope", true)
    );
    let before = cp.server(&["show", "orders"]);
    let dirs_before = cp.server_dirs();
    let wrong = "0".repeat(64);
    let create = json!({ "name": "intruder", "location": "local" });
    let routes: Vec<(&str, &str, Option<Value>)> = vec![
        ("POST", "/servers", Some(create)),
        ("GET", "/servers", None),
        ("GET", "/servers/orders", None),
        ("DELETE", "/servers/orders", None),
        ("POST", "/servers/orders/stop", None),
        ("POST", "/servers/orders/start", None),
        ("POST", "/servers/orders/revalidate", None),
        (
            "PUT",
            "/servers/orders/key",
            Some(json!({ "key": other_key })),
        ),
        ("GET", "/servers/orders/connection-string", None),
        // PostgreSQL's log is read from the encrypted volume, fsck unwraps the DEK:
        // both through the agent, for the DBA only.
        ("GET", "/servers/orders/logs", None),
        ("GET", "/servers/orders/logs?follow=true&lines=1000", None),
        ("POST", "/servers/orders/fsck", None),
    ];
    for (method, path, body) in &routes {
        for credential in [None, Some(wrong.as_str()), Some("not-even-hex")] {
            let mut request = http.request(method.parse().unwrap(), format!("{}{path}", cp.url));
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(c) = credential {
                request = request.bearer_auth(c);
            }
            let response = request.send().unwrap();
            assert_eq!(
                response.status().as_u16(),
                401,
                "{method} {path} {credential:?}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().unwrap();
            assert_eq!(body["error"]["code"], "Unauthorized", "{body}");
            let expected = if credential.is_some() {
                "not valid"
            } else {
                "needs the DBA credential"
            };
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(expected),
                "{body}"
            );
        }
    }
    // Nothing changed: same server, state and event trail; no new directory; still serving.
    assert_eq!(cp.server(&["show", "orders"]), before);
    assert_eq!(cp.server(&["list"]).as_array().unwrap().len(), 1);
    assert_eq!(cp.server_dirs(), dirs_before);
    assert_eq!(psql(port, password, "SELECT 1").unwrap(), "1");

    // The right token passes, whatever the case of the scheme.
    let ok = http
        .get(format!("{}/servers", cp.url))
        .header("authorization", format!("bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);

    // The health probe is open, and says nothing about servers.
    let health: Value = http
        .get(format!("{}/healthz", cp.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health, json!({ "status": "ok" }));

    // The CLI says what is wrong and how to fix it.
    let wrong_file = cp.state_dir.parent().unwrap().join("wrong.credential");
    fs::write(&wrong_file, &wrong).unwrap();
    let missing = cp.state_dir.parent().unwrap().join("missing.credential");
    for (file, expected) in [
        (&wrong_file, "not valid"),
        (&missing, "PGCMK_CONTROL_CREDENTIALS"),
    ] {
        let out = Command::new(pgcmk())
            .args(["server", "list", "--endpoint", &cp.url, "--credential-file"])
            .arg(file)
            .arg("--ca-cert")
            .arg(cp.ca_file())
            .env_remove("PGCMK_CONTROL_CREDENTIALS")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    }
    // Neither the token nor a presented wrong one reaches the log.
    let log = cp.log();
    assert!(
        !log.contains(token) && !log.contains(&wrong),
        "secret in the log"
    );
}

/// A vault principal holding the key rights a DBA may have (`get`, `list`) sees
/// the key's public JWK and nothing that would let it read or unwrap data, nor
/// change, rotate or delete the key.
fn dba_principal_gets_no_key_material(vault: &Vault, kv: &str, server: &Value) {
    let credential = vault.user("dba-user");
    let dba = Identity {
        name: "dba-user".into(),
        client_id: String::new(),
        credential_file: credential.clone(),
    };
    vault.grant("orders-kv", &dba, &["get", "list"]);
    let http = vault.https_client();
    let bearer = format!("Bearer {}", vault.client_token(&credential, kv));
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut r = http
            .request(
                method.parse().unwrap(),
                format!("{kv}{path}?api-version=7.5"),
            )
            .header("authorization", &bearer);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };

    // The key, current and exact version: the public part only.
    let wrapped: WrappedDek = serde_json::from_value(server["wrapped_dek"].clone()).unwrap();
    let version_path = wrapped
        .kek
        .to_string()
        .split_once("/keys/")
        .map(|(_, rest)| format!("/keys/{rest}"))
        .unwrap();
    for path in ["/keys/orders-key", version_path.as_str()] {
        let (status, key) = call("GET", path, None);
        assert_eq!(status, 200, "{key}");
        let jwk = key["key"].as_object().unwrap();
        assert!(jwk.contains_key("n") && jwk.contains_key("e"), "{key}");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                !jwk.contains_key(private),
                "private part '{private}' in {key}"
            );
        }
    }
    // No unwrap of the server's DEK, no backup blob, no change to the key.
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&wrapped.ciphertext);
    let denied = [
        (
            "POST",
            format!("{version_path}/unwrapkey"),
            Some(json!({ "alg": "RSA-OAEP-256", "value": value })),
        ),
        ("POST", "/keys/orders-key/backup".to_string(), None),
        ("POST", "/keys/orders-key/rotate".to_string(), None),
        ("DELETE", "/keys/orders-key".to_string(), None),
        (
            "PATCH",
            "/keys/orders-key".to_string(),
            Some(json!({ "attributes": { "enabled": false } })),
        ),
    ];
    for (method, path, body) in denied {
        let (status, answer) = call(method, &path, body);
        assert_eq!(status, 403, "{method} {path}: {answer}");
    }
    // No access policy change.
    vault.assert_cannot_set_policy(&credential, "orders-kv", "dba-user");
}

/// The system administrator copies the server's directory and the control plane's
/// state while the server runs (the disk, not the live plaintext mount).
fn disk_copy_reveals_nothing(
    root: &Path,
    cp: &ControlPlane,
    vault: &Vault,
    mi: &Identity,
    server: &Value,
) {
    let server_dir = PathBuf::from(server["dir"].as_str().unwrap());
    let customer_secret = read_identity_secret(&mi.credential_file).unwrap();
    let platform_secret = read_identity_secret(&cp.platform.credential_file).unwrap();

    // The agent got its identity's secret through a pipe: it is not in its
    // arguments or environment, and neither is the control plane's passphrase.
    let status: Value =
        serde_json::from_slice(&fs::read(server_dir.join("status.json")).unwrap()).unwrap();
    let agent_pid = status["agent_pid"].as_u64().unwrap();
    for part in ["cmdline", "environ"] {
        let bytes = fs::read(format!("/proc/{agent_pid}/{part}")).unwrap();
        assert!(!bytes.is_empty(), "/proc/{agent_pid}/{part} is empty");
        for (what, needle) in [
            ("identity secret", customer_secret.expose_secret()),
            ("passphrase", PASSPHRASE.as_bytes()),
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the {what} is in the agent's {part}"
            );
        }
    }

    let copy = root.join("disk-copy");
    copy_disk(&cp.state_dir, &copy, &server_dir.join("mnt"));
    assert!(copy.join("state.redb").exists());
    let copied_server = copy.join("servers").join(server_dir.file_name().unwrap());
    assert!(copied_server.join("cipher").read_dir().unwrap().count() > 0);

    // What must not be in it. The DEK comes from a real unwrap as the identity.
    let access = |client_id: &str, key: &str| KekAccess {
        key: KeyReference::parse(key).unwrap(),
        vault: VaultEndpoints {
            identity_endpoint: vault.identity_endpoint.clone(),
            ca_file: Some(vault.ca_file()),
        },
        client_id: client_id.to_string(),
    };
    let key_url = server["encryption"]["key"].as_str().unwrap();
    let wrapped: WrappedDek = serde_json::from_value(server["wrapped_dek"].clone()).unwrap();
    let dek = access(&mi.client_id, key_url)
        .connect(customer_secret.clone())
        .unwrap()
        .unwrap(&wrapped)
        .unwrap();
    let cryptfs_key =
        pgcmk_agent::provision::cryptfs_key(&dek, server["id"].as_str().unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("the DEK", dek.expose_secret().to_vec()),
        ("the DEK (hex)", hex(dek.expose_secret()).into_bytes()),
        (
            "the DEK (base64)",
            b64.encode(dek.expose_secret()).into_bytes(),
        ),
        ("the cryptfs key", cryptfs_key.expose_secret().to_vec()),
        (
            "the customer identity's secret",
            customer_secret.expose_secret().to_vec(),
        ),
        (
            "the platform identity's secret",
            platform_secret.expose_secret().to_vec(),
        ),
        ("the marker", MARKER.as_bytes().to_vec()),
    ];
    for (what, needle) in &needles {
        let found = files_containing(&copy, needle, &copy.join("none"));
        assert!(found.is_empty(), "{what} is in the disk copy: {found:?}");
    }
    assert!(
        !copy.join("root.key").exists(),
        "passphrase mode keeps no root key"
    );

    // Nothing in the copy gets a token for either identity. The real secret does
    // (so this check can fail), anything found in the copy does not.
    let platform_key = cp.platform_key();
    let identities = [
        (&mi.client_id, key_url),
        (&cp.platform.client_id, platform_key.as_str()),
    ];
    for (client_id, key) in identities {
        let real = if client_id == &mi.client_id {
            &customer_secret
        } else {
            &platform_secret
        };
        access(client_id, key)
            .connect(real.clone())
            .unwrap()
            .info()
            .unwrap();
    }
    let candidates = secret_candidates(&copy);
    assert!(
        candidates.len() > 10,
        "too few candidates: {}",
        candidates.len()
    );
    for candidate in &candidates {
        for (client_id, key) in identities {
            let Ok(kek) = access(client_id, key).connect(candidate.clone()) else {
                continue; // not even a valid header value
            };
            let err = kek.info().expect_err("a token from the disk copy");
            assert!(!err.is_retryable(), "{err}");
        }
    }

    // The copy's control plane does not start without the passphrase, nor with a
    // wrong one; its agent has no identity secret to start with.
    for passphrase in [None, Some("a wrong passphrase, long enough")] {
        let err = cp.serve_exits_on(&copy, passphrase);
        let expected = if passphrase.is_some() {
            "does not match"
        } else {
            "--passphrase-env"
        };
        assert!(err.contains(expected), "{err}");
    }
    let out = Command::new(pgcmk())
        .args(["agent", "--instance", "from-a-copy", "--server-dir"])
        .arg(&copied_server)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no handshake on stdin"), "{err}");
}

/// Copies the regular files under `from` to `to`, not descending into `skip` (the
/// live mount: a disk copy sees the ciphertext under it, not the plaintext view).
fn copy_disk(from: &Path, to: &Path, skip: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        let meta = fs::symlink_metadata(&path).unwrap();
        if path == skip {
            fs::create_dir(&target).unwrap();
        } else if meta.is_dir() {
            copy_disk(&path, &target, skip);
        } else if meta.is_file() {
            // Files may be replaced while the server runs; a vanished one is skipped.
            let _ = fs::copy(&path, &target);
        }
    }
}

/// Everything in the copy that could be a secret: each small file outside the
/// ciphertext, each JSON string in it, and each printable run of 16 or more bytes
/// (as `strings` would find in the state store).
fn secret_candidates(copy: &Path) -> Vec<SecretBytes> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut stack = vec![copy.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "cipher" {
                    stack.push(path);
                }
                continue;
            }
            let bytes = fs::read(&path).unwrap();
            if bytes.len() <= 4096 {
                out.push(bytes.trim_ascii().to_vec());
            }
            if let Ok(json) = serde_json::from_slice::<Value>(&bytes) {
                json_strings(&json, &mut out);
            }
            out.extend(
                bytes
                    .split(|b| !b.is_ascii_graphic())
                    .filter(|run| run.len() >= 16)
                    .map(<[u8]>::to_vec),
            );
        }
    }
    out.sort();
    out.dedup();
    out.into_iter()
        .filter(|c| !c.is_empty())
        .map(SecretBytes::new)
        .collect()
}

fn json_strings(v: &Value, out: &mut Vec<Vec<u8>>) {
    match v {
        Value::String(s) => out.push(s.as_bytes().to_vec()),
        Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}
