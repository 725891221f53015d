//! Every malformed request gets a 4xx with an Azure Key Vault error code, and the
//! service keeps serving.

mod support;

use reqwest::Method;
use serde_json::json;
use support::{b64, Vault};

#[test]
fn malformed_requests_get_4xx_with_akv_codes_and_the_service_keeps_serving() {
    let v = Vault::start();
    let url = v.vault("bad-input", false);
    let t = v.admin_token(&url);
    let kid = v.create_key(&url, &t, "good", 2048);
    let raw = |method: Method, path: &str, body: &[u8]| {
        v.raw(
            method,
            &format!("{url}{path}?api-version=7.5"),
            Some(&t),
            Some(body.to_vec()),
        )
    };

    let cases: Vec<(&str, support::Answer, u16, &str)> = vec![
        ("malformed JSON", raw(Method::POST, "/keys/k/create", b"{\"kty\": \"RSA\","), 400, "BadParameter"),
        ("JSON that is not an object", raw(Method::POST, "/keys/k/create", b"[1,2]"), 400, "BadParameter"),
        ("missing kty", v.akv(Method::POST, &url, "/keys/k/create", &t, Some(json!({ "key_size": 2048 }))), 400, "BadParameter"),
        ("EC key", v.akv(Method::POST, &url, "/keys/k/create", &t, Some(json!({ "kty": "EC" }))), 400, "BadParameter"),
        ("1024-bit key", v.akv(Method::POST, &url, "/keys/k/create", &t, Some(json!({ "kty": "RSA", "key_size": 1024 }))), 400, "BadParameter"),
        ("3071-bit key", v.akv(Method::POST, &url, "/keys/k/create", &t, Some(json!({ "kty": "RSA", "key_size": 3071 }))), 400, "BadParameter"),
        ("key size as text", v.akv(Method::POST, &url, "/keys/k/create", &t, Some(json!({ "kty": "RSA", "key_size": "big" }))), 400, "BadParameter"),
        ("name with underscore", v.akv(Method::POST, &url, "/keys/bad_name/create", &t, Some(json!({ "kty": "RSA" }))), 400, "BadParameter"),
        ("128-character name", v.akv(Method::POST, &url, &format!("/keys/{}/create", "a".repeat(128)), &t, Some(json!({ "kty": "RSA" }))), 400, "BadParameter"),
        ("unknown key_ops", v.akv(Method::POST, &url, "/keys/k/create", &t, Some(json!({ "kty": "RSA", "key_ops": ["fly"] }))), 400, "BadParameter"),
        ("bad base64url", v.akv(Method::POST, &kid, "/wrapkey", &t, Some(json!({ "alg": "RSA-OAEP-256", "value": "a+b/c==" }))), 400, "BadParameter"),
        ("unknown algorithm", v.akv(Method::POST, &kid, "/wrapkey", &t, Some(json!({ "alg": "RSA-OAEP-512", "value": b64(&[1; 32]) }))), 400, "BadParameter"),
        ("RSA1_5 not enabled", v.akv(Method::POST, &kid, "/encrypt", &t, Some(json!({ "alg": "RSA1_5", "value": b64(&[1; 32]) }))), 400, "BadParameter"),
        ("ciphertext of the wrong length", v.akv(Method::POST, &kid, "/unwrapkey", &t, Some(json!({ "alg": "RSA-OAEP-256", "value": b64(&[1; 10]) }))), 400, "BadParameter"),
        ("garbage ciphertext", v.akv(Method::POST, &kid, "/unwrapkey", &t, Some(json!({ "alg": "RSA-OAEP-256", "value": b64(&[1; 256]) }))), 400, "BadParameter"),
        ("digest of the wrong length", v.akv(Method::POST, &kid, "/sign", &t, Some(json!({ "alg": "RS256", "value": b64(&[1; 20]) }))), 400, "BadParameter"),
        ("malformed version", v.akv(Method::GET, &url, "/keys/good/XYZ", &t, None), 400, "BadParameter"),
        ("unknown version", v.akv(Method::GET, &url, &format!("/keys/good/{}", "0".repeat(32)), &t, None), 404, "KeyNotFound"),
        ("unknown key", v.akv(Method::GET, &url, "/keys/missing", &t, None), 404, "KeyNotFound"),
        ("maxresults 0", v.akv(Method::GET, &url, "/keys?maxresults=0", &t, None), 400, "BadParameter"),
        ("maxresults 26", v.akv(Method::GET, &url, "/keys?maxresults=26", &t, None), 400, "BadParameter"),
        ("unknown operation", v.akv(Method::POST, &url, "/keys/good/explode", &t, Some(json!({}))), 404, "NotFound"),
        ("rotation policy without action type", v.akv(Method::PUT, &url, "/keys/good/rotationpolicy", &t, Some(json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "P1D" } }] }))), 400, "BadParameter"),
        ("bad ISO duration", v.akv(Method::PUT, &url, "/keys/good/rotationpolicy", &t, Some(json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "90 days" }, "action": { "type": "Rotate" } }] }))), 400, "BadParameter"),
        ("restore of a foreign blob", v.akv(Method::POST, &url, "/keys/restore", &t, Some(json!({ "value": b64(b"not a backup") }))), 400, "BadParameter"),
        ("exp before nbf", v.akv(Method::PATCH, &url, "/keys/good", &t, Some(json!({ "attributes": { "nbf": 2000, "exp": 1000 } }))), 400, "BadParameter"),
        ("no random byte count", v.akv(Method::POST, &url, "/rng", &t, Some(json!({}))), 400, "BadParameter"),
        ("129 random bytes", v.akv(Method::POST, &url, "/rng", &t, Some(json!({ "count": 129 }))), 400, "BadParameter"),
        ("random byte count as text", v.akv(Method::POST, &url, "/rng", &t, Some(json!({ "count": "\"many\"" }))), 400, "BadParameter"),
        ("name with quotes and backslashes", v.akv(Method::GET, &url, "/keys/a%22b%5Cc", &t, None), 400, "BadParameter"),
        ("oversized body", raw(Method::POST, "/keys/k/create", &vec![b' '; 200 * 1024]), 413, "RequestBodyTooLarge"),
    ];
    for (what, answer, status, code) in cases {
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert_eq!(answer.code(), code, "{what}: {}", answer.body);
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.len() > 10,
            "{what}: the error must say what was wrong: {}",
            answer.body
        );
        // The Azure SDK for Rust reads messages as borrowed strings: no escapes.
        assert!(
            !message.contains(['"', '\\']) && !message.contains(char::is_control),
            "{what}: the message needs JSON escapes: {message:?}"
        );
    }

    // Bad management input is refused too.
    for (path, body) in [
        ("/admin/vaults", json!({ "name": "x", "location": "l" })),
        (
            "/admin/vaults",
            json!({ "name": "okname", "location": "l", "retention_days": 3 }),
        ),
        (
            "/admin/vaults",
            json!({ "name": "okname", "location": "l", "retention_days": 91 }),
        ),
        (
            "/admin/identities",
            json!({ "name": "bad name", "kind": "user" }),
        ),
        ("/admin/identities", json!({ "name": "n", "kind": "robot" })),
    ] {
        let err = v.admin.call(Method::POST, path, Some(&body)).unwrap_err();
        assert!(
            err.to_string().contains("400 BadParameter"),
            "{path} {body}: {err}"
        );
    }
    let err = v
        .admin
        .call(
            Method::PUT,
            "/admin/vaults/bad-input/policies/admin",
            Some(&json!({ "key_permissions": ["read"] })),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown key permission 'read'"),
        "{err}"
    );

    // Nothing above left a half-created key, and the service still works.
    let list = v.akv(Method::GET, &url, "/keys", &t, None);
    assert_eq!(list.status, 200);
    let names: Vec<&str> = list.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kid"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![format!("{url}/keys/good")]);
    let ok = v.akv(
        Method::POST,
        &kid,
        "/wrapkey",
        &t,
        Some(json!({ "alg": "RSA-OAEP", "value": b64(&[1; 32]) })),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(v.audit_verify().map(|n| n > 30), Ok(true));
}

#[test]
fn overload_is_answered_429_throttled_and_the_service_recovers() {
    let v = Vault::start_with(&["--max-in-flight", "1"]);
    let url = v.vault("throttle", false);
    let t = v.admin_token(&url);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..6)
            .map(|i| {
                let (barrier, v, url, t) = (barrier.clone(), &v, &url, &t);
                s.spawn(move || {
                    barrier.wait();
                    // 3072-bit key generation keeps the single slot busy long enough to overlap.
                    let a = v.akv(
                        Method::POST,
                        url,
                        &format!("/keys/t{i}/create"),
                        t,
                        Some(json!({ "kty": "RSA", "key_size": 3072 })),
                    );
                    (a.status, a.code().to_string())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(statuses.iter().any(|(s, _)| *s == 200), "{statuses:?}");
    assert!(
        statuses.iter().any(|(s, c)| *s == 429 && c == "Throttled"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(v.akv(Method::GET, &url, "/keys", &t, None).status, 200);
}
