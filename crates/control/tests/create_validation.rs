//! Create-time validation with the real vault: every way a customer-managed key
//! can be unfit is refused with its own message, and leaves nothing behind (no
//! server directory, no agent, no row). A service-managed server needs none of it.
//!
//! The refusals share one stack on which no server is ever made, so "nothing left"
//! means an empty list and no directory; the tests that make servers share another.

mod support;

use std::path::PathBuf;

use pgcmk_keyprovider::akv::KeyUpdate;
use pgcmk_testkit::shared::{Held, Shared};
use serde_json::Value;
use support::*;

/// A stack with the identity `app-mi` granted `get`, `wrapKey` and `unwrapKey` on
/// vault `app-kv` (westeurope, purge protection), which holds the fit key `good`.
struct Fixture {
    stack: Stack,
    mi: Identity,
    /// The vault's URL.
    kv: String,
    /// The fit key (versionless).
    good: String,
}

impl Fixture {
    fn start() -> Self {
        let stack = Stack::start(60, 300, None);
        let vault = &stack.vault;
        let mi = vault.identity("app-mi");
        let kv = vault.keyvault("app-kv", "westeurope", true);
        vault.grant("app-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
        let good = versionless(&vault.key("app-kv", "good", 2048));
        Self {
            stack,
            mi,
            kv,
            good,
        }
    }

    fn cp(&self) -> &ControlPlane {
        &self.stack.cp
    }

    fn vault(&self) -> &Vault {
        &self.stack.vault
    }

    /// `server create` of `name` as `app-mi`, named by `client_id`, with `key`.
    fn create(&self, name: &str, client_id: &str, key: &str) -> Result<Value, String> {
        self.cp().create_cmk(name, &self.mi, client_id, key)
    }

    /// A new RSA 3072 key `name` in `app-kv` (versionless).
    fn key(&self, name: &str) -> String {
        versionless(&self.vault().key("app-kv", name, 3072))
    }

    /// Asserts that `result` is a refusal saying `expected`, and that nothing was
    /// left: no row, no directory (no server is ever made on this stack).
    fn refused(&self, result: Result<Value, String>, expected: &str) {
        let err = result.expect_err(expected);
        assert!(err.contains(expected), "expected '{expected}' in: {err}");
        assert!(
            self.cp().server(&["list"]).as_array().unwrap().is_empty(),
            "a row was left: {expected}"
        );
        assert!(
            self.cp().server_dirs().is_empty(),
            "a directory was left: {expected}"
        );
    }

    /// A key `k` (versionless) in a new vault `name`, where `app-mi` has every right
    /// it needs.
    fn key_in_new_vault(&self, name: &str, location: &str, purge_protection: bool) -> String {
        self.vault().keyvault(name, location, purge_protection);
        self.vault()
            .grant(name, &self.mi, &["get", "wrapKey", "unwrapKey"]);
        versionless(&self.vault().key(name, "k", 2048))
    }

    /// Asserts that `server create` of `name` as `app-mi` with `key` is refused
    /// saying `expected`, leaving nothing.
    fn refused_create(&self, name: &str, key: &str, expected: &str) {
        self.refused(self.create(name, &self.mi.client_id, key), expected);
    }

    /// `pgcmk key update` of the key `name` in `app-kv`, as the security officer.
    fn update_key(&self, name: &str, update: &KeyUpdate) {
        self.vault()
            .officer(&self.kv)
            .update_key(name, None, update)
            .unwrap();
    }
}

/// The stack of the refusals, on which no server is ever made, and the stack of
/// the tests that make servers; one fixture, so both stay up while any test runs.
struct Stacks {
    refusals: Fixture,
    servers: Fixture,
}

fn stacks() -> Held<Stacks> {
    static STACKS: Shared<Stacks> = Shared::new();
    STACKS.get(|| Stacks {
        refusals: Fixture::start(),
        servers: Fixture::start(),
    })
}

/// Seconds since the epoch, now.
fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn a_key_url_that_is_not_https_or_has_a_malformed_version_is_refused() {
    let stacks = stacks();
    let f = &stacks.refusals;
    f.refused_create(
        "bad-url",
        "http://127.0.0.1/keys/good",
        "is not a key reference: use https://VAULT/keys/NAME",
    );
    f.refused_create(
        "bad-url",
        &format!("{}/keys/good/XYZ", f.kv),
        "32 lowercase hex",
    );
}

#[test]
fn an_identity_without_get_wrap_key_or_unwrap_key_is_refused_naming_the_missing_right() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let rights_key = f.key("rights");
    let weak = f.vault().identity("weak-mi");
    let create_weak = |name: &str| f.cp().create_cmk(name, &weak, &weak.client_id, &rights_key);
    f.refused(create_weak("no-rights"), "(needs `get`)");
    f.vault().grant("app-kv", &weak, &["get"]);
    f.refused(create_weak("get-only"), "(needs `wrapKey`)");
    f.vault().grant("app-kv", &weak, &["get", "wrapKey"]);
    f.refused(create_weak("no-unwrap"), "(needs `unwrapKey`)");
}

#[test]
fn a_credential_file_of_another_identity_is_refused_before_anything_is_asked() {
    let stacks = stacks();
    let f = &stacks.refusals;
    f.refused(
        f.create("ghost", "00000000-0000-0000-0000-000000000000", &f.good),
        "belongs to identity 'app-mi'",
    );
}

#[test]
fn an_identity_the_vault_service_does_not_know_is_refused() {
    // A bare secret, so there is no credential file to check first.
    let stacks = stacks();
    let f = &stacks.refusals;
    let bare = f.stack.root.path().join("bare.secret");
    let credential: Value =
        serde_json::from_slice(&std::fs::read(&f.mi.credential_file).unwrap()).unwrap();
    std::fs::write(&bare, credential["client_secret"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&bare, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let ghost = Identity {
        name: "ghost".into(),
        client_id: "00000000-0000-0000-0000-000000000000".into(),
        credential_file: bare,
    };
    f.refused(
        f.cp()
            .create_cmk("ghost", &ghost, &ghost.client_id, &f.good),
        "cannot read key",
    );
}

#[test]
fn a_disabled_key_is_refused() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let disabled = f.key("disabled");
    f.vault().set_enabled(&f.kv, "disabled", None, false);
    f.refused_create("disabled", &disabled, "is disabled");
}

#[test]
fn a_key_not_valid_yet_is_refused() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let future = f.key("future");
    f.update_key(
        "future",
        &KeyUpdate {
            nbf: Some(now() + 3600),
            ..Default::default()
        },
    );
    f.refused_create("future", &future, "not valid yet");
}

#[test]
fn an_expired_key_is_refused() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let expired = f.key("expired");
    f.update_key(
        "expired",
        &KeyUpdate {
            exp: Some(now() - 60),
            ..Default::default()
        },
    );
    f.refused_create("expired", &expired, "has expired");
}

#[test]
fn a_key_in_a_vault_without_purge_protection_is_refused() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let unprotected = f.key_in_new_vault("soft-only-kv", "westeurope", false);
    f.refused_create("unprotected", &unprotected, "purge protection");
}

#[test]
fn a_key_in_a_vault_in_another_location_is_refused() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let faraway = f.key_in_new_vault("faraway-kv", "eastus", true);
    f.refused_create("faraway", &faraway, "is in location 'eastus'");
}

#[test]
fn a_misspelled_key_name_is_refused_as_missing_not_as_a_missing_right() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let err = f
        .create("typo", &f.mi.client_id, &format!("{}/keys/goood", f.kv))
        .expect_err("a key that does not exist");
    assert!(
        err.contains("no such key") && err.contains("pgcmk key list"),
        "{err}"
    );
    assert!(!err.contains("set-policy"), "advice to grant rights: {err}");
    f.refused(Err(err), "goood");
}

#[test]
fn a_vault_address_where_nothing_answers_is_unavailable_and_says_what_to_check() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let nothing = pgcmk_testkit::net::free_port();
    let key = format!("https://127.0.0.1:{nothing}/keys/good");
    let out = f.cp().server_output(&[
        "create",
        "nowhere",
        "--location",
        "westeurope",
        "--identity",
        &f.mi.client_id,
        "--identity-credential-file",
        f.mi.credential_file.to_str().unwrap(),
        "--key",
        &key,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{nothing}")) && stderr.contains("host and port"),
        "{stderr}"
    );
    assert!(!stderr.contains("will retry"), "{stderr}");
    f.refused(Err(stderr.into_owned()), "nothing was created");
}

#[test]
fn a_customer_managed_create_without_a_key_names_the_missing_flag() {
    let stacks = stacks();
    let f = &stacks.refusals;
    f.refused(
        f.cp().try_server(&[
            "create",
            "keyless",
            "--location",
            "westeurope",
            "--encryption",
            "customer-managed",
            "--identity",
            &f.mi.client_id,
            "--identity-credential-file",
            f.mi.credential_file.to_str().unwrap(),
        ]),
        "needs --key (the key's URL",
    );
}

#[test]
fn a_customer_managed_create_without_an_identity_is_refused() {
    let stacks = stacks();
    let f = &stacks.refusals;
    f.refused(
        f.cp().try_server(&[
            "create",
            "--name",
            "half",
            "--location",
            "westeurope",
            "--encryption",
            "customer-managed",
            "--key",
            &f.good,
        ]),
        "needs --identity",
    );
}

#[test]
fn a_server_name_that_is_not_3_to_63_lowercase_characters_is_refused() {
    let stacks = stacks();
    let f = &stacks.refusals;
    f.refused(
        f.cp()
            .try_server(&["create", "--name", "Bad_Name", "--location", "westeurope"]),
        "3-63 lowercase",
    );
}

#[test]
fn the_api_answers_a_malformed_body_with_400_bad_request() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let cp = f.cp();
    let token = std::fs::read_to_string(cp.dba_credential()).unwrap();
    let r = cp
        .https_client()
        .post(format!("{}/servers", cp.url))
        .bearer_auth(token.trim())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_api_error(&r.json().unwrap(), "BadRequest", "bad request body");
}

#[test]
fn the_api_answers_an_unknown_server_with_404_not_found() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let cp = f.cp();
    let token = std::fs::read_to_string(cp.dba_credential()).unwrap();
    let r = cp
        .https_client()
        .get(format!("{}/servers/nope", cp.url))
        .bearer_auth(token.trim())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "NotFound", "{body}");
}

#[test]
fn the_dbas_own_principal_cannot_change_vault_policies_or_create_keys() {
    let stacks = stacks();
    let f = &stacks.refusals;
    let dba_cred = f.vault().user("dba");
    f.vault()
        .assert_cannot_set_policy(&dba_cred, "app-kv", "dba");
    f.vault()
        .try_cli_as(
            Some(&dba_cred),
            &["key", "create", "--vault", "app-kv", "--name", "dba-key"],
        )
        .expect_err("the DBA's principal created a key");
}

#[test]
fn a_fit_key_is_accepted_and_the_name_is_then_taken() {
    let stacks = stacks();
    let f = &stacks.servers;
    let ok = f.create("fit", &f.mi.client_id, &f.good).unwrap();
    assert_eq!(ok["server"]["state"], "Ready");
    let err = f.create("fit", &f.mi.client_id, &f.good).unwrap_err();
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn an_agent_that_cannot_start_leaves_the_server_failed_with_its_error_until_start_after_the_fix() {
    // It is restarted with back-off; once the cause is fixed, `start` starts it at once.
    let stacks = stacks();
    let f = &stacks.servers;
    let cp = f.cp();
    let created = f.create("broken", &f.mi.client_id, &f.good).unwrap();
    let dir = PathBuf::from(created["server"]["dir"].as_str().unwrap());
    let config = std::fs::read(dir.join("agent.json")).unwrap();
    cp.server(&["stop", "broken"]);
    std::fs::write(dir.join("agent.json"), b"{}").unwrap();
    let err = cp.try_server(&["start", "broken"]).unwrap_err();
    assert!(err.contains("exited with code 1"), "{err}");
    assert!(err.contains("agent.json is not valid"), "{err}");
    assert_eq!(cp.state("broken").0, "Failed");
    assert!(cp.has_event("broken", "agent restarted"));
    std::fs::write(dir.join("agent.json"), config).unwrap();
    let started = cp.server(&["start", "broken"]);
    assert_eq!(started["state"], "Ready", "{started}");
}

#[test]
fn a_service_managed_server_is_the_default_and_needs_no_identity_or_key() {
    let stacks = stacks();
    let f = &stacks.servers;
    let sm = f
        .cp()
        .server(&["create", "--name", "plain", "--location", "local"]);
    assert_eq!(sm["server"]["encryption"]["kind"], "service-managed");
    let port = sm["server"]["port"].as_u64().unwrap();
    let password = sm["password"].as_str().unwrap();
    assert_eq!(psql(port, password, "SELECT 40 + 2").unwrap(), "42");
}

#[test]
fn a_service_managed_server_can_never_move_to_a_customer_key() {
    let stacks = stacks();
    let f = &stacks.servers;
    f.cp()
        .server(&["create", "--name", "plain-stays", "--location", "local"]);
    let err = f
        .cp()
        .try_server(&["update", "plain-stays", "--key", &f.good])
        .unwrap_err();
    assert!(err.contains("service-managed"), "{err}");
}
