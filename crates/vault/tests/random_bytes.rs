//! `POST /rng` (Azure Key Vault's Get Random Bytes), which the Azure SDKs'
//! `get_random_bytes` calls: bytes from the service's generator, behind the `rng`
//! permission, audited like every request.

mod support;

use reqwest::Method;
use serde_json::json;
use support::{unb64, Vault};

#[test]
fn random_bytes_come_in_the_count_asked_and_are_audited() {
    let v = Vault::start();
    let url = v.vault("rng", false);
    let t = v.admin_token(&url);
    let ask = |count: i64| {
        let a = v.akv(
            Method::POST,
            &url,
            "/rng",
            &t,
            Some(json!({ "count": count })),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        unb64(a.body["value"].as_str().expect("a base64url value"))
    };
    assert_eq!(ask(1).len(), 1);
    let first = ask(128);
    assert_eq!(first.len(), 128);
    assert_ne!(first, ask(128), "two answers must differ");

    let entries = v.audit("operation=GetRandomBytes");
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(
        entries
            .iter()
            .map(|e| &e["entry"])
            .all(|e| e["status"] == 200 && e["result"] == "allowed" && e["caller_name"] == "admin"),
        "{entries:?}"
    );
}

#[test]
fn random_bytes_need_the_rng_permission() {
    let v = Vault::start();
    let url = v.vault("rngperm", false);
    let app = v.identity("app1", "managed");
    v.set_policy("rngperm", "app1", &["get", "wrapKey", "unwrapKey"]);
    let t = v.mi_token(&app, &url);
    let body = Some(json!({ "count": 16 }));

    let denied = v.akv(Method::POST, &url, "/rng", &t, body.clone());
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.code(), "Forbidden");
    assert_eq!(
        denied.body["error"]["innererror"]["code"],
        "ForbiddenByPolicy"
    );
    let message = denied.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("does not have keys rng permission")
            && message.contains("--key-permissions rng"),
        "{message}"
    );

    v.set_policy("rngperm", "app1", &["get", "wrapKey", "unwrapKey", "rng"]);
    let granted = v.akv(Method::POST, &url, "/rng", &t, body);
    assert_eq!(granted.status, 200, "{}", granted.body);
    assert_eq!(unb64(granted.body["value"].as_str().unwrap()).len(), 16);
}
