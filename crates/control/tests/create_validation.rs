//! Create-time validation with the real vault: every way a customer-managed key
//! can be unfit is refused with its own message, and leaves nothing behind (no
//! server directory, no agent, no row). A service-managed server needs none of it.

mod support;

use support::*;

/// The identity secret in a credential file.
fn read_secret(credential_file: &std::path::Path) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(credential_file).unwrap()).unwrap();
    v["client_secret"].as_str().unwrap().to_string()
}

#[test]
fn unfit_keys_are_refused_with_their_own_message_and_leave_nothing() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 60, 300);

    let mi = vault.identity("app-mi");
    let kv = vault.keyvault("app-kv", "westeurope", true);
    vault.grant("app-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
    let good = versionless(&vault.key("app-kv", "good", 2048));
    let create = |name: &str, client_id: &str, key: &str| cp.create_cmk(name, &mi, client_id, key);
    let refused = |result: Result<serde_json::Value, String>, expected: &str| {
        let err = result.expect_err(expected);
        assert!(err.contains(expected), "expected '{expected}' in: {err}");
        assert!(
            cp.server(&["list"]).as_array().unwrap().is_empty(),
            "a row was left: {expected}"
        );
        assert!(
            cp.server_dirs().is_empty(),
            "a directory was left: {expected}"
        );
    };

    // The key URL must be well formed.
    refused(
        create("bad-url", &mi.client_id, "http://127.0.0.1/keys/good"),
        "must start with https://",
    );
    refused(
        create("bad-url", &mi.client_id, &format!("{kv}/keys/good/XYZ")),
        "32 lowercase hex",
    );

    // Rights: none, get only, get+wrapKey.
    let key_of = |name: &str| versionless(&vault.key("app-kv", name, 3072));
    let rights_key = key_of("rights");
    let weak = vault.identity("weak-mi");
    let create_weak = |name: &str| cp.create_cmk(name, &weak, &weak.client_id, &rights_key);
    refused(create_weak("no-rights"), "(needs `get`)");
    vault.grant("app-kv", &weak, &["get"]);
    refused(create_weak("get-only"), "(needs `wrapKey`)");
    vault.grant("app-kv", &weak, &["get", "wrapKey"]);
    refused(create_weak("no-unwrap"), "(needs `unwrapKey`)");

    // A credential file of another identity is refused before anything is asked.
    refused(
        create("ghost", "00000000-0000-0000-0000-000000000000", &good),
        "belongs to identity 'app-mi'",
    );
    // An identity the vault service does not know (a bare secret, no file check).
    let bare = root.path().join("bare.secret");
    std::fs::write(&bare, read_secret(&mi.credential_file)).unwrap();
    let ghost = Identity {
        name: "ghost".into(),
        client_id: "00000000-0000-0000-0000-000000000000".into(),
        credential_file: bare,
    };
    refused(
        cp.create_cmk("ghost", &ghost, &ghost.client_id, &good),
        "cannot read key",
    );

    // Key state: disabled, not yet valid, expired.
    let disabled = key_of("disabled");
    vault.set_enabled(&kv, "disabled", None, false);
    refused(create("disabled", &mi.client_id, &disabled), "is disabled");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let future = key_of("future");
    let update = |name: &str, u: pgcmk_keyprovider::akv::KeyUpdate| {
        vault.officer(&kv).update_key(name, None, &u).unwrap();
    };
    update(
        "future",
        pgcmk_keyprovider::akv::KeyUpdate {
            nbf: Some(now + 3600),
            ..Default::default()
        },
    );
    refused(create("future", &mi.client_id, &future), "not valid yet");
    let expired = key_of("expired");
    update(
        "expired",
        pgcmk_keyprovider::akv::KeyUpdate {
            exp: Some(now - 60),
            ..Default::default()
        },
    );
    refused(create("expired", &mi.client_id, &expired), "has expired");

    // Vault protections and location.
    vault.keyvault("soft-only-kv", "westeurope", false);
    vault.grant("soft-only-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
    let unprotected = versionless(&vault.key("soft-only-kv", "k", 2048));
    refused(
        create("unprotected", &mi.client_id, &unprotected),
        "purge protection",
    );
    vault.keyvault("faraway-kv", "eastus", true);
    vault.grant("faraway-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
    let faraway = versionless(&vault.key("faraway-kv", "k", 2048));
    refused(
        create("faraway", &mi.client_id, &faraway),
        "is in location 'eastus'",
    );

    // Missing parts of the request.
    refused(
        cp.try_server(&[
            "create",
            "--name",
            "half",
            "--location",
            "westeurope",
            "--encryption",
            "customer-managed",
            "--key",
            &good,
        ]),
        "needs --identity",
    );
    refused(
        cp.try_server(&["create", "--name", "Bad_Name", "--location", "westeurope"]),
        "3-63 lowercase",
    );

    // The REST API answers bad requests with a status and an error body.
    let http = cp.https_client();
    let token = std::fs::read_to_string(cp.dba_credential()).unwrap();
    let r = http
        .post(format!("{}/servers", cp.url))
        .bearer_auth(token.trim())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "BadRequest", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad request body"),
        "{body}"
    );
    let r = http
        .get(format!("{}/servers/nope", cp.url))
        .bearer_auth(token.trim())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "NotFound", "{body}");

    // The same request with a fit key succeeds, and the name is then taken.
    let ok = create("fit", &mi.client_id, &good).unwrap();
    assert_eq!(ok["server"]["state"]["state"], "Ready");
    let err = create("fit", &mi.client_id, &good).unwrap_err();
    assert!(err.contains("already exists"), "{err}");

    // An agent that cannot start leaves the server Failed with the agent's own
    // error, and is restarted with back-off; once the cause is fixed, `start`
    // starts it at once.
    let fit_dir = std::path::PathBuf::from(ok["server"]["dir"].as_str().unwrap());
    let config = std::fs::read(fit_dir.join("agent.json")).unwrap();
    cp.server(&["stop", "fit"]);
    std::fs::write(fit_dir.join("agent.json"), b"{}").unwrap();
    let err = cp.try_server(&["start", "fit"]).unwrap_err();
    assert!(err.contains("exited with code 1"), "{err}");
    assert!(err.contains("agent.json is not valid"), "{err}");
    assert_eq!(cp.state("fit").0, "Failed");
    assert!(cp.has_event("fit", "agent restarted"));
    std::fs::write(fit_dir.join("agent.json"), config).unwrap();
    let started = cp.server(&["start", "fit"]);
    assert_eq!(started["state"]["state"], "Ready", "{started}");

    // Service-managed is the default and needs no identity or key of the DBA's.
    let sm = cp.server(&["create", "--name", "plain", "--location", "local"]);
    assert_eq!(sm["server"]["encryption"]["kind"], "service-managed");
    let port = sm["server"]["port"].as_u64().unwrap();
    let password = sm["password"].as_str().unwrap();
    assert_eq!(psql(port, password, "SELECT 40 + 2").unwrap(), "42");
    // The DBA's own principal cannot change vault policies or create keys.
    let dba_cred = vault.user("dba");
    vault.assert_cannot_set_policy(&dba_cred, "app-kv", "dba");
    vault
        .try_cli_as(
            Some(&dba_cred),
            &["key", "create", "--vault", "app-kv", "--name", "dba-key"],
        )
        .unwrap_err();
    // ... and it can never be moved to a customer key.
    let err = cp
        .try_server(&["update", "plain", "--key", &good])
        .unwrap_err();
    assert!(err.contains("service-managed"), "{err}");
}
