//! The control plane holds no vault administrator's credential (docs/operations.md,
//! "Who may do what"): what it must know about a vault — soft delete, purge
//! protection, location — it learns as the server's own managed identity, and every
//! credential it does hold is refused for creating or deleting vaults, identities,
//! access policies and keys.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

/// The vault service's administrator credential, moved out of its directory for as
/// long as this guard lives (and put back when it drops, also when a test fails).
struct AdministratorAway {
    file: PathBuf,
    aside: PathBuf,
}

impl AdministratorAway {
    fn new(vault: &Vault, root: &Path) -> Self {
        let file = vault.dir.join("admin.credential");
        let aside = root.join("admin.credential.aside");
        fs::rename(&file, &aside).expect("move the administrator's credential aside");
        Self { file, aside }
    }
}

impl Drop for AdministratorAway {
    fn drop(&mut self) {
        let _ = fs::rename(&self.aside, &self.file);
    }
}

/// A customer's identity, and a key it may use in a new vault at `location`.
fn customer_key(vault: &Vault, name: &str, location: &str, purge: bool) -> (Identity, String) {
    let kv = format!("{name}-kv");
    vault.keyvault(&kv, location, purge);
    let mi = vault.identity(&format!("{name}-mi"));
    vault.grant(&kv, &mi, &["get", "wrapKey", "unwrapKey"]);
    let key = versionless(&vault.key(&kv, &format!("{name}-key"), 2048));
    (mi, key)
}

#[test]
fn validation_learns_protection_and_location_without_an_administrator() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 60, 300);
    let (here_mi, here) = customer_key(&vault, "here", "westeurope", true);
    let (far_mi, faraway) = customer_key(&vault, "faraway", "eastus", true);
    let (soft_mi, unprotected) = customer_key(&vault, "soft", "westeurope", false);

    let _away = AdministratorAway::new(&vault, root.path());
    let created = cp
        .create_cmk("here-db", &here_mi, &here_mi.name, &here)
        .expect("a key in the server's location");
    assert_eq!(created["server"]["state"], "Ready");
    let err = cp
        .create_cmk("far-db", &far_mi, &far_mi.name, &faraway)
        .expect_err("a vault elsewhere");
    assert!(err.contains("is in location 'eastus'"), "{err}");
    let err = cp
        .create_cmk("soft-db", &soft_mi, &soft_mi.name, &unprotected)
        .expect_err("no purge protection");
    assert!(err.contains("purge protection"), "{err}");
}

/// A token for `resource` from the managed-identity endpoint, as the plane's agents
/// get them with the identity secret it holds.
fn managed_token(vault: &Vault, identity: &Identity, resource: &str) -> String {
    let credential: Value =
        serde_json::from_slice(&fs::read(&identity.credential_file).unwrap()).unwrap();
    let secret = credential["client_secret"]
        .as_str()
        .expect("identity secret");
    let reply: Value = vault
        .https_client()
        .get(&vault.identity_endpoint)
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", resource),
            ("client_id", &identity.client_id),
        ])
        .header("X-IDENTITY-HEADER", secret)
        .send()
        .unwrap()
        .json()
        .unwrap();
    reply["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token for {resource}: {reply}"))
        .to_string()
}

/// Every administrative write a stolen plane credential might try: vaults,
/// identities, access policies and keys, created and deleted.
fn administrative_writes(service: &str, vault_url: &str) -> Vec<(Method, String, Value)> {
    let policy = json!({ "key_permissions": ["get", "wrapKey", "unwrapKey"] });
    vec![
        (
            Method::POST,
            format!("{service}/admin/vaults"),
            json!({ "name": "stolen-kv", "location": "westeurope" }),
        ),
        (
            Method::DELETE,
            format!("{service}/admin/vaults/app-kv"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("{service}/admin/identities"),
            json!({ "name": "stolen-mi", "kind": "managed" }),
        ),
        (
            Method::DELETE,
            format!("{service}/admin/identities/app-mi"),
            Value::Null,
        ),
        (
            Method::PUT,
            format!("{service}/admin/vaults/app-kv/policies/app-mi"),
            policy,
        ),
        (
            Method::DELETE,
            format!("{service}/admin/vaults/app-kv/policies/app-mi"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("{vault_url}/keys/stolen/create?api-version=7.5"),
            json!({ "kty": "RSA", "key_size": 2048 }),
        ),
        (
            Method::DELETE,
            format!("{vault_url}/keys/app-key?api-version=7.5"),
            Value::Null,
        ),
    ]
}

#[test]
fn every_credential_the_plane_holds_is_refused_for_administration() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 60, 300);
    let (app_mi, key) = customer_key(&vault, "app", "westeurope", true);
    let service: Value =
        serde_json::from_slice(&fs::read(vault.dir.join("service.json")).unwrap()).unwrap();
    let service = service["url"].as_str().unwrap().trim_end_matches('/');
    // The vault where the customer's identity holds get, wrapKey and unwrapKey.
    let vault_url = key.split("/keys/").next().unwrap();

    // The plane holds: the platform identity's secret, each customer identity's
    // secret (sealed in its state), and the DBA credential of its own API.
    let mut bearers = Vec::new();
    for identity in [&cp.platform, &app_mi] {
        for resource in [service, vault_url] {
            bearers.push((
                format!("{} for {resource}", identity.name),
                managed_token(&vault, identity, resource),
            ));
        }
    }
    let dba = fs::read_to_string(cp.dba_credential()).unwrap();
    bearers.push(("the DBA credential".into(), dba.trim().to_string()));

    let http = vault.https_client();
    let mut allowed = Vec::new();
    for (who, token) in &bearers {
        for (method, url, body) in administrative_writes(service, vault_url) {
            let mut request = http.request(method.clone(), &url).bearer_auth(token);
            if !body.is_null() {
                request = request.json(&body);
            }
            let status = request.send().unwrap().status().as_u16();
            // 404 only where no such route exists (vaults cannot be deleted).
            let refused = matches!(status, 401 | 403)
                || (status == 404
                    && method == Method::DELETE
                    && url.ends_with("/admin/vaults/app-kv"));
            if !refused {
                allowed.push(format!("{who}: {method} {url} answered {status}"));
            }
        }
    }
    assert!(allowed.is_empty(), "{}", allowed.join("\n"));
}

#[test]
fn the_plane_keeps_no_administrator_credential() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 60, 300);
    let (mi, key) = customer_key(&vault, "app", "westeurope", true);
    cp.create_cmk("app-db", &mi, &mi.name, &key).unwrap();

    let admin: Value =
        serde_json::from_slice(&fs::read(vault.dir.join("admin.credential")).unwrap()).unwrap();
    let secret = admin["client_secret"]
        .as_str()
        .expect("administrator secret");
    let mut found = Vec::new();
    let mut pending = vec![cp.state_dir.clone()];
    while let Some(dir) = pending.pop() {
        // The server keeps running while the walk goes on: its agent, PostgreSQL and pgBackRest
        // create and remove files (locks, spool, temporary files), so one may vanish under it.
        let Some(entries) = present(fs::read_dir(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(kind) = present(entry.file_type()) else {
                continue;
            };
            // The mounted volume is PostgreSQL's data; its cipher files are scanned.
            if kind.is_dir() && path.file_name() != Some("mnt".as_ref()) {
                pending.push(path);
            } else if kind.is_file()
                && present(fs::read(&path)).is_some_and(|bytes| contains(&bytes, secret.as_bytes()))
            {
                found.push(path.display().to_string());
            }
        }
    }
    let pid = cp.pid();
    for what in ["environ", "cmdline"] {
        let bytes = fs::read(format!("/proc/{pid}/{what}")).unwrap();
        if contains(&bytes, secret.as_bytes()) || contains(&bytes, b"admin.credential") {
            found.push(format!("/proc/{pid}/{what}"));
        }
    }
    assert!(
        found.is_empty(),
        "the administrator's credential in: {found:?}"
    );
}

/// The result of reading something that may have been removed meanwhile: `None` if it is gone.
fn present<T>(result: std::io::Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{e}"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
