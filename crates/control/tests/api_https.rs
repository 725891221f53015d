//! The REST API is HTTPS with the control plane's own local CA, and nothing else
//! gets an answer: not plain HTTP on the same port, not a client that trusts
//! another CA (the vault's), not the CLI given a wrong, missing or non-certificate
//! CA file or an http:// endpoint. The CA is made once and survives restarts.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgcmk_hostkeys::trust;
use pgcmk_testkit::binary::pgcmk;
use serde_json::{json, Value};
use support::*;

#[test]
fn the_api_answers_only_https_clients_that_trust_its_own_ca() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let mut cp = ControlPlane::start(root.path(), &vault, 60, 300);
    let token = fs::read_to_string(cp.dba_credential()).unwrap();
    let token = token.trim().to_string();

    // serve.json names the HTTPS URL and the CA certificate, which anyone may read.
    assert!(cp.url.starts_with("https://127.0.0.1:"), "{}", cp.url);
    let serve: Value =
        serde_json::from_slice(&fs::read(cp.state_dir.join("serve.json")).unwrap()).unwrap();
    assert_eq!(serve["ca_file"], json!(cp.ca_file()));
    let mode = fs::metadata(cp.ca_file()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let ca = fs::read(cp.ca_file()).unwrap();
    assert_ne!(
        ca,
        fs::read(vault.ca_file()).unwrap(),
        "its own CA, not the vault's"
    );

    // A client trusting this CA is served.
    let list = |http: &reqwest::blocking::Client, url: &str| {
        http.get(format!("{url}/servers"))
            .bearer_auth(&token)
            .send()
    };
    let trusted = cp.https_client();
    assert_eq!(list(&trusted, &cp.url).unwrap().status().as_u16(), 200);

    // Plain HTTP on the same port gets no HTTP answer, with or without reqwest.
    let plain_url = cp.url.replacen("https://", "http://", 1);
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let err = plain
        .get(format!("{plain_url}/healthz"))
        .send()
        .expect_err("plain HTTP must not be answered");
    assert!(!err.is_status(), "{err}");
    let addr = cp.url.trim_start_matches("https://").to_string();
    let mut tcp = TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );

    // A client trusting another CA (the vault's) fails the handshake.
    let other =
        trust::blocking_client(&fs::read(vault.ca_file()).unwrap(), Duration::from_secs(20))
            .unwrap();
    let err = list(&other, &cp.url).expect_err("a client trusting another CA");
    assert!(trust::is_untrusted_certificate(&err), "{err:?}");

    // The CLI says what is wrong with its CA file or endpoint, and how to fix it.
    let not_a_cert = root.path().join("not-a-cert.pem");
    fs::write(&not_a_cert, "hello").unwrap();
    let missing = root.path().join("missing.pem");
    let cli = |endpoint: &str, ca: &std::path::Path| {
        Command::new(pgcmk())
            .args([
                "server",
                "list",
                "--endpoint",
                endpoint,
                "--credential-file",
            ])
            .arg(cp.dba_credential())
            .arg("--ca-cert")
            .arg(ca)
            .env_remove("PGCMK_CONTROL_CA_CERT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let cases = [
        (cp.url.as_str(), vault.ca_file(), "does not vouch for"),
        (
            cp.url.as_str(),
            missing.clone(),
            "cannot read the CA certificate",
        ),
        (
            cp.url.as_str(),
            not_a_cert.clone(),
            "holds no PEM certificate",
        ),
        (plain_url.as_str(), cp.ca_file(), "not an https:// URL"),
    ];
    for (endpoint, ca, expected) in cases {
        let out = cli(endpoint, &ca);
        assert!(!out.status.success(), "{endpoint} {}", ca.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains(&token), "the credential in an error");
    }
    let out = cli(&cp.url, &cp.ca_file());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no servers");

    // The CA is made once: after a restart the same certificate, and the same
    // client, still work.
    cp.restart();
    assert_eq!(fs::read(cp.ca_file()).unwrap(), ca);
    assert_eq!(list(&trusted, &cp.url).unwrap().status().as_u16(), 200);
}
