//! The service's URLs are identities: key ids, token audiences and node agents'
//! identity endpoints contain them. They stay the same across restarts (clean or
//! kill -9), move only when the operator says so (`--listen`), and a port taken by
//! another process stops the start with what to do, instead of moving.

mod support;

use std::net::{SocketAddr, TcpListener};

use pgcmk_vault::service::ServiceInfo;
use reqwest::Method;
use serde_json::json;
use support::*;

/// The service's addresses, without the pid that changes at every start.
fn addresses(info: &ServiceInfo) -> [String; 3] {
    [
        info.url.clone(),
        info.identity_endpoint.clone(),
        info.token_endpoint.clone(),
    ]
}

/// The address in an `https://IP:PORT[/...]` URL.
fn address_of(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("https://").unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

fn vault_url(v: &Vault, name: &str) -> String {
    v.manage(Method::GET, &format!("/admin/vaults/{name}"), None)["url"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_string()
}

#[test]
fn restarts_keep_every_url_and_key_id() {
    let mut v = Vault::start();
    let first = addresses(&v.service().info);
    let kv = v.vault("kv1", false);
    let kid = v.create_key(&kv, &v.admin_token(&kv), "k1", 2048);
    let wrapped = v.raw(
        Method::POST,
        &format!("{kid}/wrapkey?api-version=7.5"),
        Some(v.admin_token(&kv).as_str()),
        Some(
            serde_json::to_vec(&json!({"alg": "RSA-OAEP-256", "value": b64(b"dek bytes")}))
                .unwrap(),
        ),
    );
    assert_eq!(wrapped.status, 200, "{}", wrapped.body);

    v.stop();
    v.restart();
    assert_eq!(addresses(&v.service().info), first, "after a clean restart");
    assert_eq!(vault_url(&v, "kv1"), kv);
    v.kill9();
    v.restart();
    assert_eq!(
        addresses(&v.service().info),
        first,
        "after kill -9 and a start"
    );
    assert_eq!(vault_url(&v, "kv1"), kv);
    // The key id from before still names the key, and unwraps what it wrapped.
    let unwrapped = v.raw(
        Method::POST,
        &format!("{kid}/unwrapkey?api-version=7.5"),
        Some(v.admin_token(&kv).as_str()),
        Some(
            serde_json::to_vec(&json!({"alg": "RSA-OAEP-256", "value": wrapped.body["value"]}))
                .unwrap(),
        ),
    );
    assert_eq!(unwrapped.status, 200, "{}", unwrapped.body);
    assert_eq!(unwrapped.body["kid"].as_str(), Some(kid.as_str()));
    assert_eq!(
        unb64(unwrapped.body["value"].as_str().unwrap()),
        b"dek bytes"
    );

    // An explicit --listen moves the service on purpose, and is kept without it.
    let moved = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    v.stop();
    v.set_listen(Some(moved));
    v.restart();
    assert_eq!(v.service().info.url, format!("https://{moved}"));
    assert_eq!(vault_url(&v, "kv1"), kv, "a vault keeps its own port");
    v.stop();
    v.set_listen(None);
    v.restart();
    assert_eq!(v.service().info.url, format!("https://{moved}"));
}

#[test]
fn a_taken_port_stops_the_start_and_says_what_to_do() {
    let mut v = Vault::start();
    let service = address_of(&v.service().info.url);
    let kv = v.vault("kv1", false);
    v.stop();

    let squatter = TcpListener::bind(service).unwrap();
    let log = v.restart_expecting_failure();
    for expected in [
        format!("cannot listen on {service}"),
        "in use by another process".into(),
        format!("stop the process holding port {}", service.port()),
        "--listen".into(),
    ] {
        assert!(log.contains(&expected), "'{expected}' not in:\n{log}");
    }
    drop(squatter);

    let squatter = TcpListener::bind(address_of(&kv)).unwrap();
    let log = v.restart_expecting_failure();
    let expected = format!("vault 'kv1' cannot listen on {}", address_of(&kv));
    assert!(log.contains(&expected), "'{expected}' not in:\n{log}");
    drop(squatter);

    v.restart();
    assert_eq!(address_of(&v.service().info.url), service);
    assert_eq!(vault_url(&v, "kv1"), kv);
}
