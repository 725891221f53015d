//! Who may do what: access policies, token checks and management roles, each denied
//! path shown with its status and its audit entry.

mod support;

use pgcmk_vault::seal::DerivedKeys;
use pgcmk_vault::token::{self, Claims};
use reqwest::Method;
use serde_json::json;
use support::{b64, Vault};

#[test]
fn identity_without_unwrap_gets_403_and_an_audit_entry() {
    let v = Vault::start();
    let url = v.vault("sod-unwrap", false);
    let kid = v.create_key(&url, &v.admin_token(&url), "kek", 2048);
    let app = v.identity("wrap-only", "managed");
    v.set_policy("sod-unwrap", "wrap-only", &["get", "wrapKey"]);
    let token = v.mi_token(&app, &url);

    let wrapped = v.akv(
        Method::POST,
        &kid,
        "/wrapkey",
        &token,
        Some(json!({ "alg": "RSA-OAEP-256", "value": b64(&[7; 32]) })),
    );
    assert_eq!(wrapped.status, 200, "{}", wrapped.body);
    let ct = wrapped.body["value"].as_str().unwrap();
    let denied = v.akv(
        Method::POST,
        &kid,
        "/unwrapkey",
        &token,
        Some(json!({ "alg": "RSA-OAEP-256", "value": ct })),
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.code(), "Forbidden");
    assert!(denied.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unwrapKey"));

    let entries = v.audit(&format!(
        "operation=KeyUnwrap&result=denied&principal={}",
        app.object_id
    ));
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0]["entry"];
    assert_eq!(e["status"], 403);
    assert_eq!(e["vault"], "sod-unwrap");
    assert_eq!(e["key"], "kek");
    assert_eq!(e["caller_name"], "wrap-only");
    assert!(e["client"].as_str().unwrap().starts_with("127.0.0.1:"));

    // Granting unwrapKey takes effect at once, with the same token.
    v.set_policy("sod-unwrap", "wrap-only", &["get", "wrapKey", "unwrapKey"]);
    let ok = v.akv(
        Method::POST,
        &kid,
        "/unwrapkey",
        &token,
        Some(json!({ "alg": "RSA-OAEP-256", "value": ct })),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        support::unb64(ok.body["value"].as_str().unwrap()),
        vec![7; 32]
    );
}

fn forged(v: &Vault, key: &DerivedKeys, aud: &str, oid: &str, exp_offset: i64) -> String {
    let now = pgcmk_vault::now_unix();
    let claims = Claims {
        iss: v.service().info.url.clone(),
        aud: aud.to_string(),
        oid: oid.to_string(),
        appid: "x".into(),
        iat: now - 7200,
        nbf: now - 7200,
        exp: now + exp_offset,
        jti: "t".into(),
    };
    token::issue(&key.tokens, &claims)
}

#[test]
fn forged_expired_wrong_audience_and_orphaned_tokens_get_401() {
    let v = Vault::start();
    let url_a = v.vault("sod-a", false);
    let url_b = v.vault("sod-b", false);
    let admin_oid = v.manage(Method::GET, "/admin/identities/admin", None)["object_id"]
        .as_str()
        .unwrap()
        .to_string();
    let good = v.admin_token(&url_a);
    assert_eq!(v.akv(Method::GET, &url_a, "/keys", &good, None).status, 200);

    let check_401 = |token: &str, url: &str, why: &str| {
        let a = v.akv(Method::GET, url, "/keys", token, None);
        assert_eq!(a.status, 401, "{why}: {}", a.body);
        assert_eq!(a.code(), "Unauthorized", "{why}");
        let challenge = a.challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer authorization=\""),
            "{why}: {challenge}"
        );
        assert!(
            challenge.contains(&format!("resource=\"{url}\"")),
            "{why}: {challenge}"
        );
    };
    // No token at all: the challenge that Azure SDKs start from.
    let none = v.raw(
        Method::GET,
        &format!("{url_a}/keys?api-version=7.5"),
        None,
        None,
    );
    assert_eq!(none.status, 401);
    // A token for vault A at vault B.
    check_401(&good, &url_b, "wrong audience");
    // Signed with another key.
    let other = DerivedKeys::derive(&pgcmk_crypto::SymmetricKey::from_bytes([9; 32])).unwrap();
    check_401(
        &forged(&v, &other, &url_a, &admin_oid, 3600),
        &url_a,
        "foreign key",
    );
    // Properly signed (root key read from the data directory) but expired.
    let root = std::fs::read(v.data_dir().join("root.key")).unwrap();
    let real =
        DerivedKeys::derive(&pgcmk_crypto::SymmetricKey::from_slice(&root).unwrap()).unwrap();
    assert_eq!(
        v.akv(
            Method::GET,
            &url_a,
            "/keys",
            &forged(&v, &real, &url_a, &admin_oid, 60),
            None
        )
        .status,
        200
    );
    check_401(
        &forged(&v, &real, &url_a, &admin_oid, -1),
        &url_a,
        "expired",
    );
    // Claims edited after signing.
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    parts[1] = b64(br#"{"iss":"x","aud":"x","oid":"x","appid":"x","iat":0,"nbf":0,"exp":99999999999,"jti":"x"}"#);
    check_401(&parts.join("."), &url_a, "edited claims");
    check_401("not-a-token", &url_a, "garbage");

    // A deleted principal's token stops working at once.
    let app = v.identity("short-lived", "managed");
    v.set_policy("sod-a", "short-lived", &["list"]);
    let t = v.mi_token(&app, &url_a);
    assert_eq!(v.akv(Method::GET, &url_a, "/keys", &t, None).status, 200);
    v.manage(Method::DELETE, "/admin/identities/short-lived", None);
    check_401(&t, &url_a, "deleted principal");
    // And it can no longer get tokens.
    assert_eq!(
        v.mi_request(&app.client_secret, &app.client_id, &url_a)
            .status,
        401
    );
    // A wrong identity header is refused too.
    let other_app = v.identity("other-app", "managed");
    assert_eq!(
        v.mi_request("wrong-secret", &other_app.client_id, &url_a)
            .status,
        401
    );
    assert!(v.audit("operation=KeyList&result=denied").len() >= 6);
}

#[test]
fn principals_without_rights_cannot_manage_policies_or_create_keys() {
    let v = Vault::start();
    let url = v.vault("sod-admin", true);
    let user = v.identity("dba", "user");
    let dba = pgcmk_vault::client::AdminClient::new(v.service().clone(), user.clone()).unwrap();
    let denied = |method: Method, p: &str, body: Option<serde_json::Value>| {
        let err = dba.call(method.clone(), p, body.as_ref()).unwrap_err();
        match err {
            pgcmk_vault::Error::Api { status, code, .. } => {
                assert_eq!((status, code.as_str()), (403, "Forbidden"), "{method} {p}")
            }
            other => panic!("{method} {p}: {other}"),
        }
    };
    denied(
        Method::PUT,
        "/admin/vaults/sod-admin/policies/dba",
        Some(json!({ "key_permissions": ["all"] })),
    );
    denied(
        Method::DELETE,
        "/admin/vaults/sod-admin/policies/admin",
        None,
    );
    denied(
        Method::PATCH,
        "/admin/vaults/sod-admin",
        Some(json!({ "location": "elsewhere" })),
    );
    denied(
        Method::POST,
        "/admin/vaults",
        Some(json!({ "name": "dba-vault", "location": "x" })),
    );
    denied(
        Method::POST,
        "/admin/identities",
        Some(json!({ "name": "sneaky", "kind": "user" })),
    );
    denied(Method::GET, "/admin/audit", None);
    denied(Method::GET, "/admin/vaults/sod-admin", None);

    // On the data plane: no access policy, no key creation.
    let token = dba.token_for(&url).unwrap();
    let a = v.akv(
        Method::POST,
        &url,
        "/keys/k1/create",
        &token,
        Some(json!({ "kty": "RSA", "key_size": 2048 })),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    // A service administrator who is not this vault's administrator cannot grant either.
    let v2 = v.manage(
        Method::POST,
        "/admin/identities",
        Some(json!({ "name": "officer2", "kind": "user", "service_admin": true })),
    );
    let officer: pgcmk_vault::identity::Credential = serde_json::from_value(v2).unwrap();
    let officer = pgcmk_vault::client::AdminClient::new(v.service().clone(), officer).unwrap();
    let err = officer
        .call(
            Method::PUT,
            "/admin/vaults/sod-admin/policies/dba",
            Some(&json!({ "key_permissions": ["get"] })),
        )
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let denied_policy = v.audit("operation=SetPolicy&result=denied");
    let callers: Vec<&str> = denied_policy
        .iter()
        .map(|e| e["entry"]["caller_name"].as_str().unwrap())
        .collect();
    assert_eq!(callers, vec!["dba", "officer2"]);
    // A vault never loses its last administrator.
    let err = officer
        .call(Method::DELETE, "/admin/identities/admin", None)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only administrator of vault 'sod-admin'"),
        "{err}"
    );
    v.manage(
        Method::PATCH,
        "/admin/vaults/sod-admin",
        Some(json!({ "add_administrators": ["officer2"] })),
    );
    let err = v
        .admin
        .call(
            Method::PATCH,
            "/admin/vaults/sod-admin",
            Some(&json!({ "remove_administrators": ["admin", "officer2"] })),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("at least one administrator"),
        "{err}"
    );
    // Purge protection is one-way.
    let err = v
        .admin
        .call(
            Method::PATCH,
            "/admin/vaults/sod-admin",
            Some(&json!({ "purge_protection": false })),
        )
        .unwrap_err();
    assert!(err.to_string().contains("cannot be turned off"), "{err}");
}
