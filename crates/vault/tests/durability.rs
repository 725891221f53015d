//! State survives restarts and kill -9: keys, versions, policies, deleted keys and
//! the audit chain, and no acknowledged write is lost.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use support::{b64, unb64, Vault};

#[test]
fn restart_keeps_keys_versions_policies_deleted_keys_and_the_audit_chain() {
    let mut v = Vault::start();
    let url = v.vault("durable", true);
    let t = v.admin_token(&url);
    let app = v.identity("app", "managed");
    v.set_policy("durable", "app", &["get", "wrapKey", "unwrapKey"]);
    let first = v.create_key(&url, &t, "kek", 2048);
    let wrapped = v.akv(
        Method::POST,
        &first,
        "/wrapkey",
        &t,
        Some(json!({ "alg": "RSA-OAEP-256", "value": b64(&[5; 32]) })),
    );
    assert_eq!(wrapped.status, 200);
    assert_eq!(
        v.akv(Method::POST, &url, "/keys/kek/rotate", &t, Some(json!({})))
            .status,
        200
    );
    let policy = json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "P90D" }, "action": { "type": "Rotate" } }], "attributes": { "expiryTime": "P1Y" } });
    assert_eq!(
        v.akv(
            Method::PUT,
            &url,
            "/keys/kek/rotationpolicy",
            &t,
            Some(policy)
        )
        .status,
        200
    );
    v.create_key(&url, &t, "gone", 2048);
    assert_eq!(
        v.akv(Method::DELETE, &url, "/keys/gone", &t, None).status,
        200
    );
    let entries_before = v.audit_verify().unwrap();

    v.stop();
    v.restart();

    // Same vault URL, same identity secret, same policy.
    let vaults = v.manage(Method::GET, "/admin/vaults/durable", None);
    assert_eq!(vaults["url"], url);
    assert_eq!(vaults["purge_protection"], true);
    let app_token = v.mi_token(&app, &url);
    let unwrapped = v.akv(
        Method::POST,
        &first,
        "/unwrapkey",
        &app_token,
        Some(json!({ "alg": "RSA-OAEP-256", "value": wrapped.body["value"] })),
    );
    assert_eq!(unwrapped.status, 200, "{}", unwrapped.body);
    assert_eq!(
        unb64(unwrapped.body["value"].as_str().unwrap()),
        vec![5; 32]
    );
    let t = v.admin_token(&url);
    let versions = v.akv(Method::GET, &url, "/keys/kek/versions", &t, None);
    assert_eq!(versions.body["value"].as_array().unwrap().len(), 2);
    let p = v.akv(Method::GET, &url, "/keys/kek/rotationpolicy", &t, None);
    assert_eq!(
        p.body["lifetimeActions"][0]["trigger"]["timeAfterCreate"],
        "P90D"
    );
    assert_eq!(p.body["attributes"]["expiryTime"], "P1Y");
    let deleted = v.akv(Method::GET, &url, "/deletedkeys/gone", &t, None);
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.body["recoveryId"],
        format!("{url}/deletedkeys/gone")
    );
    let after = v.audit_verify().unwrap();
    assert!(after > entries_before, "{after} > {entries_before}");
}

#[test]
fn kill_9_during_a_burst_of_creates_loses_no_acknowledged_key_and_leaves_none_unaudited() {
    let mut v = Vault::start();
    let url = v.vault("burst", false);
    let token = v.admin_token(&url);
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let http = v.admin.http().clone();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, http, url, token) = (
                acknowledged.clone(),
                stop.clone(),
                http.clone(),
                url.clone(),
                token.clone(),
            );
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let name = format!("burst-{w}-{i}");
                    let resp = http
                        .post(format!("{url}/keys/{name}/create?api-version=7.5"))
                        .bearer_auth(&token)
                        .json(&json!({ "kty": "RSA", "key_size": 2048 }))
                        .send();
                    match resp {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().push(name),
                        Ok(r) => panic!("create {name}: {}", r.status()),
                        Err(_) => break, // the service died under us
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().unwrap().len() < 12 {
        assert!(Instant::now() < deadline, "creates too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    v.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acknowledged.lock().unwrap().clone();
    v.restart();
    let t = v.admin_token(&url);
    for name in &acked {
        let a = v.akv(Method::GET, &url, &format!("/keys/{name}"), &t, None);
        assert_eq!(a.status, 200, "acknowledged key {name} lost: {}", a.body);
    }
    assert!(v.audit_verify().is_ok(), "{:?}", v.audit_verify());
    // Every key the store holds, acknowledged or not, has its KeyCreate entry: the
    // entry commits with the key (a crash between the two left keys unaudited).
    let audited: std::collections::BTreeSet<(String, String)> = v
        .audit("operation=KeyCreate&vault=burst&limit=100000")
        .iter()
        .filter(|e| e["entry"]["status"] == 200)
        .map(|e| {
            let entry = &e["entry"];
            (
                entry["key"].as_str().unwrap_or_default().to_string(),
                entry["version"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut next = Some(format!("{url}/keys?api-version=7.5&maxresults=25"));
    while let Some(page_url) = next.take() {
        let page = v.raw(Method::GET, &page_url, Some(&t), None);
        for item in page.body["value"].as_array().unwrap() {
            let kid = item["kid"].as_str().unwrap();
            let name = kid.rsplit('/').next().unwrap();
            let key = v.akv(Method::GET, &url, &format!("/keys/{name}"), &t, None);
            let version = key.body["key"]["kid"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            assert!(
                audited.contains(&(name.to_string(), version.clone())),
                "key {name} version {version} is in the store without its KeyCreate entry"
            );
        }
        next = page.body["nextLink"].as_str().map(str::to_string);
    }
}

/// Keys created in six bursts of 20, the service ended after each burst (SIGTERM, or
/// kill -9 when `crash`) and started again, then stopped: the store's allocated
/// pages (by redb's own count) and its file's size.
fn store_after_bursts(crash: bool) -> (u64, u64) {
    let mut v = Vault::start();
    let url = v.vault("grow", false);
    for burst in 0..6 {
        let token = v.admin_token(&url);
        for i in 0..20 {
            v.create_key(&url, &token, &format!("k{burst}-{i}"), 2048);
        }
        if crash {
            v.kill9();
        } else {
            v.stop();
        }
        v.restart();
    }
    v.stop();
    let path = v.data_dir().join("vault.redb");
    let db = redb::Database::open(&path).unwrap();
    let pages = db.begin_write().unwrap().stats().unwrap().allocated_pages();
    (pages, std::fs::metadata(&path).unwrap().len())
}

#[test]
fn crashes_grow_the_store_no_more_than_clean_restarts_do() {
    let (clean_pages, clean_bytes) = store_after_bursts(false);
    let (crashed_pages, crashed_bytes) = store_after_bursts(true);
    // The same writes; a crash must leave no page allocated that nothing uses (the
    // start after it repairs the store). The file grows in doubling steps: one step
    // apart at most.
    assert!(
        crashed_pages <= clean_pages + clean_pages / 10,
        "after 6 crashes {crashed_pages} pages allocated, after 6 clean stops {clean_pages}"
    );
    assert!(
        crashed_bytes <= 2 * clean_bytes,
        "after 6 crashes the store is {crashed_bytes} bytes, after 6 clean stops {clean_bytes}"
    );
}
