//! Who may do what: access policies, token checks and management roles, each denied
//! path shown with its status and its audit entry.

mod support;

use pgcmk_vault::http::admin_route::{AdminRoute, Role};
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
    // Every other management route, for every lesser role, is proven refused by
    // `every_management_route_refuses_every_lesser_role` from the route table.
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

/// A principal the table test calls with, and the facts that decide its roles.
struct Caller {
    name: &'static str,
    token: Option<String>,
    service_admin: bool,
    administers_target: bool,
    policy_on_target: bool,
}

/// What each role means, stated here independently of the server's code: the
/// server's table says which role a route needs; this says who holds it.
fn holds(role: Role, c: &Caller) -> bool {
    match role {
        Role::Anonymous => true,
        Role::AnyCaller => c.token.is_some(),
        Role::VaultReader => {
            c.token.is_some() && (c.service_admin || c.administers_target || c.policy_on_target)
        }
        Role::VaultAdministrator => c.token.is_some() && c.administers_target,
        Role::ServiceAdministrator => c.token.is_some() && c.service_admin,
        other => panic!("the test does not know role {other:?}: say who holds it"),
    }
}

#[test]
fn every_management_route_refuses_every_lesser_role() {
    let v = Vault::start();
    v.vault("sod-target", false);
    v.vault("sod-other", false);
    let service_url = v.service().info.url.clone();
    let user_token = |name: &str, service_admin: bool| {
        let cred = v.manage(
            Method::POST,
            "/admin/identities",
            Some(json!({ "name": name, "kind": "user", "service_admin": service_admin })),
        );
        let cred: pgcmk_vault::identity::Credential = serde_json::from_value(cred).unwrap();
        pgcmk_vault::client::AdminClient::new(v.service().clone(), cred)
            .unwrap()
            .token_for(&service_url)
            .unwrap()
    };
    // The managed identity a server's KEK uses: a policy on the target vault only.
    let mi = v.identity("sod-mi", "managed");
    v.set_policy("sod-target", "sod-mi", &["get", "wrapKey", "unwrapKey"]);
    let mi_token = v.mi_token(&mi, &service_url);
    // A user who reads keys of the target vault.
    let reader_token = user_token("sod-reader", false);
    v.set_policy("sod-target", "sod-reader", &["get", "list"]);
    // An administrator of another vault, and of no other.
    let other_admin_token = user_token("sod-other-admin", false);
    v.manage(
        Method::PATCH,
        "/admin/vaults/sod-other",
        Some(json!({ "add_administrators": ["sod-other-admin"] })),
    );
    // A service administrator who does not administer the target vault.
    let officer_token = user_token("sod-officer", true);
    let callers = [
        Caller {
            name: "no token",
            token: None,
            service_admin: false,
            administers_target: false,
            policy_on_target: false,
        },
        Caller {
            name: "managed identity with a policy",
            token: Some(mi_token),
            service_admin: false,
            administers_target: false,
            policy_on_target: true,
        },
        Caller {
            name: "key reader",
            token: Some(reader_token),
            service_admin: false,
            administers_target: false,
            policy_on_target: true,
        },
        Caller {
            name: "administrator of another vault",
            token: Some(other_admin_token),
            service_admin: false,
            administers_target: false,
            policy_on_target: false,
        },
        Caller {
            name: "service administrator",
            token: Some(officer_token),
            service_admin: true,
            administers_target: false,
            policy_on_target: false,
        },
    ];
    let mut refused = 0;
    for route in AdminRoute::ALL {
        let path = route
            .path
            .replace("{vault}", "sod-target")
            .replace("{identity}", "sod-mi")
            .replace("{tenant}", "t");
        let mut lesser = 0;
        for caller in callers.iter().filter(|c| !holds(route.role, c)) {
            lesser += 1;
            let method = Method::from_bytes(route.method.as_bytes()).unwrap();
            let a = v.raw(
                method,
                &format!("{service_url}{path}"),
                caller.token.as_deref(),
                Some(
                    br#"{"name":"sod-intruder","location":"x","key_permissions":["all"]}"#.to_vec(),
                ),
            );
            let want = if caller.token.is_none() {
                (401, "Unauthorized")
            } else {
                (403, "Forbidden")
            };
            assert_eq!(
                (a.status, a.code()),
                want,
                "{} {} as {}: {}",
                route.method,
                route.path,
                caller.name,
                a.body
            );
            refused += 1;
        }
        assert!(
            route.role == Role::Anonymous || lesser > 0,
            "{} {} has no lesser role to try",
            route.method,
            route.path
        );
    }
    assert!(refused >= 30, "only {refused} refusals were tried");
    // Nothing was created, changed or deleted by any of them.
    let target = v.manage(Method::GET, "/admin/vaults/sod-target", None);
    assert_eq!(target["administrators"], json!(["admin"]));
    let mut holders: Vec<(String, usize)> = target["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let perms = p["key_permissions"].as_array().unwrap().len();
            (p["identity"].as_str().unwrap().to_string(), perms)
        })
        .collect();
    holders.sort();
    assert_eq!(
        holders,
        vec![
            ("admin".to_string(), 20),
            ("sod-mi".to_string(), 3),
            ("sod-reader".to_string(), 2)
        ]
    );
    let names: Vec<String> = v.manage(Method::GET, "/admin/identities", None)["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.iter().any(|n| n == "sod-intruder"), "{names:?}");
    assert!(names.iter().any(|n| n == "sod-mi"), "{names:?}");
}
