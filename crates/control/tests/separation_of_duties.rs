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
//! One stack and one server serve every test (none of them changes it), and one
//! disk copy every test of the copy.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use base64::Engine;
use pgcmk_agent::contract::{KekAccess, VaultEndpoints};
use pgcmk_control::identity_file::read_identity_secret;
use pgcmk_crypto::{Dek, SecretBytes};
use pgcmk_keyprovider::{KeyReference, WrappedDek};
use pgcmk_testkit::binary::pgcmk;
use pgcmk_testkit::shared::{Held, Shared};
use serde_json::{json, Value};
use support::*;

const PASSPHRASE: &str = "separation-of-duties passphrase";
const MARKER: &str = "MARKER-5d1e-separation-of-duties";
/// A token of the right form that is not the DBA's.
const WRONG_TOKEN: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A customer-managed server `orders` holding 1000 rows with the marker; the DBA's
/// vault principal and the disk copy are made by the first test that needs them.
struct Fixture {
    stack: Stack,
    mi: Identity,
    /// The customer's vault URL.
    kv: String,
    orders: Created,
    /// A key in another vault, to move the server to.
    other_key: String,
    dba_principal: OnceLock<PathBuf>,
    disk_copy: OnceLock<PathBuf>,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let stack = Stack::start(60, 300, Some(PASSPHRASE));
        let vault = &stack.vault;
        let mi = vault.identity("orders-mi");
        let kv = vault.keyvault("orders-kv", "westeurope", true);
        vault.grant("orders-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
        let kid = vault.key("orders-kv", "orders-key", 2048);
        let created = stack
            .cp
            .create_cmk("orders", &mi, &mi.name, &versionless(&kid))
            .unwrap();
        let orders = Created::from(&created);
        orders
            .sql(&format!("CREATE TABLE t(v text); INSERT INTO t SELECT '{MARKER}' || g FROM generate_series(1, 1000) g; CHECKPOINT"))
            .unwrap();
        let other_key = format!(
            "{}/keys/other",
            vault.keyvault("other-kv", "westeurope", true)
        );
        Fixture {
            other_key,
            stack,
            mi,
            kv,
            orders,
            dba_principal: OnceLock::new(),
            disk_copy: OnceLock::new(),
        }
    })
}

impl Fixture {
    fn cp(&self) -> &ControlPlane {
        &self.stack.cp
    }

    fn vault(&self) -> &Vault {
        &self.stack.vault
    }

    fn token(&self) -> String {
        fs::read_to_string(self.cp().dba_credential())
            .unwrap()
            .trim()
            .to_string()
    }

    /// The credential file of a vault user `dba-user` holding the key rights a DBA
    /// may have (`get`, `list`) on the customer's vault.
    fn dba_principal(&self) -> &Path {
        self.dba_principal.get_or_init(|| {
            let credential = self.vault().user("dba-user");
            let dba = Identity {
                name: "dba-user".into(),
                client_id: String::new(),
                credential_file: credential.clone(),
            };
            self.vault().grant("orders-kv", &dba, &["get", "list"]);
            credential
        })
    }

    /// What the system administrator copied of the control plane's state directory
    /// while the server ran (the disk, not the live plaintext mount).
    fn disk_copy(&self) -> &Path {
        self.disk_copy.get_or_init(|| {
            let copy = self.stack.root.path().join("disk-copy");
            copy_disk(&self.cp().state_dir, &copy, &self.orders.dir.join("mnt"));
            copy
        })
    }

    /// The server's directory in the disk copy.
    fn copied_server(&self) -> PathBuf {
        self.disk_copy()
            .join("servers")
            .join(self.orders.dir.file_name().unwrap())
    }

    fn wrapped(&self) -> WrappedDek {
        serde_json::from_value(self.orders.server["wrapped_dek"].clone()).unwrap()
    }

    fn customer_secret(&self) -> SecretBytes {
        read_identity_secret(&self.mi.credential_file).unwrap()
    }

    fn platform_secret(&self) -> SecretBytes {
        read_identity_secret(&self.cp().platform.credential_file).unwrap()
    }

    /// The server's key reference.
    fn key_url(&self) -> &str {
        self.orders.server["encryption"]["key"].as_str().unwrap()
    }

    /// How the identity `client_id` reaches `key` through this vault service.
    fn access(&self, client_id: &str, key: &str) -> KekAccess {
        KekAccess {
            key: KeyReference::parse(key).unwrap(),
            vault: VaultEndpoints {
                identity_endpoint: self.vault().identity_endpoint.clone(),
                ca_file: Some(self.vault().ca_file()),
            },
            client_id: client_id.to_string(),
        }
    }

    /// The server's DEK, by a real unwrap as its identity.
    fn dek(&self) -> Dek {
        self.access(&self.mi.client_id, self.key_url())
            .connect(self.customer_secret())
            .unwrap()
            .unwrap(&self.wrapped())
            .unwrap()
    }

    /// The DBA's principal's REST call to the customer's vault: status and JSON body.
    fn dba_call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let bearer = format!(
            "Bearer {}",
            self.vault().client_token(self.dba_principal(), &self.kv)
        );
        let mut r = self
            .vault()
            .https_client()
            .request(
                method.parse().unwrap(),
                format!("{}{path}?api-version=7.5", self.kv),
            )
            .header("authorization", &bearer);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    }

    /// `/keys/orders-key/VERSION`: the version that wraps the server's DEK.
    fn version_path(&self) -> String {
        self.wrapped()
            .kek
            .to_string()
            .split_once("/keys/")
            .map(|(_, rest)| format!("/keys/{rest}"))
            .unwrap()
    }
}

/// Every `/servers` route, with a body where it takes one.
fn server_routes(f: &Fixture) -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        (
            "POST",
            "/servers",
            Some(json!({ "name": "intruder", "location": "local" })),
        ),
        ("GET", "/servers", None),
        ("GET", "/servers/orders", None),
        ("DELETE", "/servers/orders", None),
        ("POST", "/servers/orders/stop", None),
        ("POST", "/servers/orders/start", None),
        ("POST", "/servers/orders/revalidate", None),
        (
            "PUT",
            "/servers/orders/key",
            Some(json!({ "key": f.other_key })),
        ),
        ("GET", "/servers/orders/connection-string", None),
        // PostgreSQL's log is read from the encrypted volume, fsck unwraps the DEK:
        // both through the agent, for the DBA only.
        ("GET", "/servers/orders/logs", None),
        ("GET", "/servers/orders/logs?follow=true&lines=1000", None),
        ("POST", "/servers/orders/fsck", None),
    ]
}

/// Sends every `/servers` request with no token, a wrong one and a malformed one;
/// `answered` sees each (method, path, credential) and its response.
fn send_without_the_dba_token(
    f: &Fixture,
    mut answered: impl FnMut(&str, &str, Option<&str>, reqwest::blocking::Response),
) {
    let http = f.cp().https_client();
    for (method, path, body) in server_routes(f) {
        for credential in [None, Some(WRONG_TOKEN), Some("not-even-hex")] {
            let mut request =
                http.request(method.parse().unwrap(), format!("{}{path}", f.cp().url));
            if let Some(body) = &body {
                request = request.json(body);
            }
            if let Some(c) = credential {
                request = request.bearer_auth(c);
            }
            answered(method, path, credential, request.send().unwrap());
        }
    }
}

#[test]
fn every_server_route_answers_401_without_the_dba_token_or_with_a_wrong_one() {
    let f = fixture();
    send_without_the_dba_token(&f, |method, path, credential, response| {
        assert_eq!(
            response.status().as_u16(),
            401,
            "{method} {path} {credential:?} was not refused"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let expected = if credential.is_some() {
            "not valid"
        } else {
            "needs the DBA credential"
        };
        assert_api_error(&response.json().unwrap(), "Unauthorized", expected);
    });
}

#[test]
fn refused_requests_change_nothing_and_the_server_keeps_serving() {
    let f = fixture();
    let cp = f.cp();
    let before = cp.server(&["show", "orders"]);
    let dirs_before = cp.server_dirs();
    send_without_the_dba_token(&f, |_, _, _, _| ());
    // Same server, state and event trail; no new directory; still serving its rows.
    assert_eq!(
        cp.server(&["show", "orders"]),
        before,
        "a refused request changed the server"
    );
    assert_eq!(
        cp.server(&["list"]).as_array().unwrap().len(),
        1,
        "a refused request created a server"
    );
    assert_eq!(
        cp.server_dirs(),
        dirs_before,
        "a refused request made a directory"
    );
    assert_eq!(f.orders.sql("SELECT 1").unwrap(), "1");
    assert_eq!(f.orders.sql("SELECT count(*) FROM t").unwrap(), "1000");
}

#[test]
fn the_dba_token_is_accepted_whatever_the_case_of_the_scheme() {
    let f = fixture();
    let ok = f
        .cp()
        .https_client()
        .get(format!("{}/servers", f.cp().url))
        .header("authorization", format!("bearer {}", f.token()))
        .send()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200, "'bearer TOKEN' was refused");
}

#[test]
fn the_health_probe_answers_without_a_credential_and_says_nothing_about_servers() {
    let f = fixture();
    let health: Value = f
        .cp()
        .https_client()
        .get(format!("{}/healthz", f.cp().url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health, json!({ "status": "ok" }));
}

#[test]
fn the_cli_says_what_is_wrong_with_a_wrong_or_missing_credential_file() {
    let f = fixture();
    let cp = f.cp();
    let wrong_file = f.stack.root.path().join("wrong.credential");
    fs::write(&wrong_file, WRONG_TOKEN).unwrap();
    let missing = f.stack.root.path().join("missing.credential");
    for (file, expected) in [(&wrong_file, "not valid"), (&missing, "PGCMK_CONTROL_DIR")] {
        let out = Command::new(pgcmk())
            .args(["server", "list", "--endpoint", &cp.url, "--credential-file"])
            .arg(file)
            .arg("--ca-cert")
            .arg(cp.ca_file())
            .env_remove("PGCMK_CONTROL_CREDENTIALS")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{} was accepted", file.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "'{expected}' not in: {err}");
    }
}

#[test]
fn neither_the_dba_token_nor_a_wrong_one_reaches_the_control_plane_log() {
    let f = fixture();
    let cp = f.cp();
    let http = cp.https_client();
    for token in [f.token().as_str(), WRONG_TOKEN] {
        http.get(format!("{}/servers", cp.url))
            .bearer_auth(token)
            .send()
            .unwrap();
    }
    let log = cp.log();
    assert!(!log.contains(&f.token()), "the DBA token is in the log");
    assert!(
        !log.contains(WRONG_TOKEN),
        "a presented wrong token is in the log"
    );
}

#[test]
fn the_dba_principal_sees_only_the_public_part_of_the_key() {
    let f = fixture();
    for path in ["/keys/orders-key".to_string(), f.version_path()] {
        let (status, key) = f.dba_call("GET", &path, None);
        assert_eq!(status, 200, "GET {path}: {key}");
        let jwk = key["key"].as_object().unwrap();
        assert!(jwk.contains_key("n") && jwk.contains_key("e"), "{key}");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                !jwk.contains_key(private),
                "private part '{private}' in {key}"
            );
        }
    }
}

#[test]
fn the_dba_principal_cannot_unwrap_back_up_rotate_delete_or_change_the_key() {
    let f = fixture();
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&f.wrapped().ciphertext);
    let denied = [
        (
            "POST",
            format!("{}/unwrapkey", f.version_path()),
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
        let (status, answer) = f.dba_call(method, &path, body);
        assert_eq!(status, 403, "{method} {path} was not refused: {answer}");
    }
}

#[test]
fn the_dba_principal_cannot_set_access_policies() {
    let f = fixture();
    f.vault()
        .assert_cannot_set_policy(f.dba_principal(), "orders-kv", "dba-user");
}

#[test]
fn the_running_agent_has_no_secret_in_its_arguments_or_environment() {
    // The agent got its identity's secret through a pipe: it is not in its
    // arguments or environment, and neither is the control plane's passphrase.
    let f = fixture();
    let customer_secret = f.customer_secret();
    let agent_pid = agent_status(&f.orders.dir)["agent_pid"].as_u64().unwrap();
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
}

#[test]
fn a_disk_copy_holds_no_dek_key_identity_secret_or_row() {
    let f = fixture();
    let copy = f.disk_copy();
    assert!(
        copy.join("state.redb").exists(),
        "the copy has no state store"
    );
    assert!(
        f.copied_server().join("cipher").read_dir().unwrap().count() > 0,
        "the copy has no ciphertext"
    );
    // The DEK comes from a real unwrap as the identity.
    let dek = f.dek();
    let cryptfs_key =
        pgcmk_agent::provision::cryptfs_key(&dek, f.orders.server["id"].as_str().unwrap()).unwrap();
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
            f.customer_secret().expose_secret().to_vec(),
        ),
        (
            "the platform identity's secret",
            f.platform_secret().expose_secret().to_vec(),
        ),
        ("the marker", MARKER.as_bytes().to_vec()),
    ];
    for (what, needle) in &needles {
        let found = files_containing(copy, needle, &copy.join("none"));
        assert!(found.is_empty(), "{what} is in the disk copy: {found:?}");
    }
}

#[test]
fn a_disk_copy_in_passphrase_mode_holds_no_root_key() {
    let f = fixture();
    assert!(
        !f.disk_copy().join("root.key").exists(),
        "passphrase mode keeps no root key"
    );
}

#[test]
fn nothing_in_a_disk_copy_gets_a_vault_token_for_either_identity() {
    let f = fixture();
    let platform_key = f.cp().platform_key();
    let identities = [
        (f.mi.client_id.as_str(), f.key_url(), f.customer_secret()),
        (
            f.cp().platform.client_id.as_str(),
            platform_key.as_str(),
            f.platform_secret(),
        ),
    ];
    // The real secret gets one (so this check can fail), anything found in the copy
    // does not.
    for (client_id, key, real) in &identities {
        f.access(client_id, key)
            .connect(real.clone())
            .unwrap()
            .info()
            .unwrap_or_else(|e| panic!("the real secret of {client_id} got no token: {e}"));
    }
    let candidates = secret_candidates(f.disk_copy());
    assert!(
        candidates.len() > 10,
        "too few candidates: {}",
        candidates.len()
    );
    for candidate in &candidates {
        for (client_id, key, _) in &identities {
            let Ok(kek) = f.access(client_id, key).connect(candidate.clone()) else {
                continue; // not even a valid header value
            };
            match kek.info() {
                Ok(_) => panic!("something in the disk copy got a token for {client_id}"),
                Err(err) => assert!(!err.is_retryable(), "{err}"),
            }
        }
    }
}

#[test]
fn the_control_plane_does_not_start_from_a_disk_copy_without_the_passphrase() {
    let f = fixture();
    for passphrase in [None, Some("a wrong passphrase, long enough")] {
        let err = f.cp().serve_exits_on(f.disk_copy(), passphrase);
        let expected = if passphrase.is_some() {
            "does not match"
        } else {
            "--passphrase-env"
        };
        assert!(err.contains(expected), "'{expected}' not in: {err}");
    }
}

#[test]
fn the_agent_does_not_start_from_a_disk_copy_without_the_planes_handshake() {
    // Its identity's secret comes only through the handshake.
    let f = fixture();
    let out = Command::new(pgcmk())
        .args(["agent", "--instance", "from-a-copy", "--server-dir"])
        .arg(f.copied_server())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the agent started from a disk copy");
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
