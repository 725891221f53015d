//! The REST API is HTTPS with the control plane's own local CA, and nothing else
//! gets an answer: not plain HTTP on the same port, not a client that trusts
//! another CA (the vault's), not the CLI given a wrong, missing or non-certificate
//! CA file or an http:// endpoint. The CA is made once and survives restarts. Its
//! certificate names each `--api-name` (what clients on other machines use); a
//! listen address it would not name is refused.
//!
//! The tests share one stack that holds no server, except the restart's own.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pgcmk_hostkeys::trust;
use pgcmk_testkit::binary::pgcmk;
use pgcmk_testkit::shared::{Held, Shared};
use serde_json::{json, Value};
use support::*;

fn shared_stack() -> Held<Stack> {
    static STACK: Shared<Stack> = Shared::new();
    STACK.get(|| Stack::start(60, 300, None))
}

/// The DBA's token.
fn token(cp: &ControlPlane) -> String {
    fs::read_to_string(cp.dba_credential())
        .unwrap()
        .trim()
        .to_string()
}

/// `GET /servers` at `url` with the DBA's token, through `http`.
fn list(
    cp: &ControlPlane,
    http: &reqwest::blocking::Client,
    url: &str,
) -> reqwest::Result<reqwest::blocking::Response> {
    http.get(format!("{url}/servers"))
        .bearer_auth(token(cp))
        .send()
}

/// The control plane's URL with `http://` instead of `https://`.
fn plain_url(cp: &ControlPlane) -> String {
    cp.url.replacen("https://", "http://", 1)
}

#[test]
fn serve_json_names_the_https_url_and_a_world_readable_ca_of_its_own() {
    let stack = shared_stack();
    let cp = &stack.cp;
    assert!(cp.url.starts_with("https://127.0.0.1:"), "{}", cp.url);
    let serve: Value =
        serde_json::from_slice(&fs::read(cp.state_dir.join("serve.json")).unwrap()).unwrap();
    assert_eq!(serve["ca_file"], json!(cp.ca_file()));
    let mode = fs::metadata(cp.ca_file()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_ne!(
        fs::read(cp.ca_file()).unwrap(),
        fs::read(stack.vault.ca_file()).unwrap(),
        "its own CA, not the vault's"
    );
}

#[test]
fn a_client_trusting_its_ca_is_served() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let status = list(cp, &cp.https_client(), &cp.url).unwrap().status();
    assert_eq!(status.as_u16(), 200);
}

#[test]
fn plain_http_on_the_same_port_gets_no_http_answer() {
    let stack = shared_stack();
    let cp = &stack.cp;
    // Neither through reqwest ...
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let err = plain
        .get(format!("{}/healthz", plain_url(cp)))
        .send()
        .expect_err("plain HTTP must not be answered");
    assert!(!err.is_status(), "{err}");
    // ... nor written by hand.
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
}

#[test]
fn a_client_trusting_another_ca_fails_the_handshake() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let other = trust::blocking_client(
        &fs::read(stack.vault.ca_file()).unwrap(),
        Duration::from_secs(20),
    )
    .unwrap();
    let err = list(cp, &other, &cp.url).expect_err("a client trusting another CA");
    assert!(trust::is_untrusted_certificate(&err), "{err:?}");
}

/// `pgcmk server list` against `endpoint` trusting the CA in `ca`.
fn cli_list(cp: &ControlPlane, endpoint: &str, ca: &Path) -> Output {
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
}

#[test]
fn the_cli_says_what_is_wrong_with_its_ca_file_or_endpoint_and_never_shows_the_token() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let not_a_cert = stack.root.path().join("not-a-cert.pem");
    fs::write(&not_a_cert, "hello").unwrap();
    let missing = stack.root.path().join("missing.pem");
    let plain_url = plain_url(cp);
    let cases = [
        (cp.url.as_str(), stack.vault.ca_file(), "does not vouch for"),
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
        let out = cli_list(cp, endpoint, &ca);
        assert!(
            !out.status.success(),
            "{endpoint} {} was accepted",
            ca.display()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "'{expected}' not in: {err}");
        assert!(!err.contains(&token(cp)), "the credential in an error");
    }
}

#[test]
fn the_cli_given_its_ca_and_https_endpoint_is_served() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let out = cli_list(cp, &cp.url, &cp.ca_file());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no servers");
}

#[test]
fn the_ca_is_made_once_and_the_same_client_works_after_a_restart() {
    // Its own stack: the control plane goes away for a moment.
    let _shared = shared_stack(); // kept up for the tests after this one
    let mut stack = Stack::start(60, 300, None);
    let trusted = stack.cp.https_client();
    let ca = fs::read(stack.cp.ca_file()).unwrap();
    stack.cp.restart();
    assert_eq!(
        fs::read(stack.cp.ca_file()).unwrap(),
        ca,
        "a new CA after a restart"
    );
    let cp = &stack.cp;
    assert_eq!(list(cp, &trusted, &cp.url).unwrap().status().as_u16(), 200);
}

#[test]
fn the_certificate_names_each_api_name_and_a_listen_it_does_not_name_is_refused() {
    let _shared = shared_stack(); // kept up for the tests after this one
    let stack = Stack::start_serving(
        60,
        300,
        None,
        &["--api-name", "plane.pgcmk.test", "--api-name", "10.9.8.7"],
    );
    let cp = &stack.cp;
    let port = cp.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let roots = reqwest::Certificate::from_pem(&fs::read(cp.ca_file()).unwrap()).unwrap();
    // A client on another machine reaching it by that name verifies it by that name.
    let by_name = reqwest::blocking::Client::builder()
        .tls_certs_only([roots])
        .resolve("plane.pgcmk.test", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let url = format!("https://plane.pgcmk.test:{port}");
    assert_eq!(list(cp, &by_name, &url).unwrap().status().as_u16(), 200);

    for (listen, says) in [
        ("10.9.8.7:7480", "add --api-name 10.9.8.7"),
        ("0.0.0.0:7480", "listens on every address"),
    ] {
        assert_serve_refused(&["--listen", listen], says);
    }
}

/// Runs `pgcmk server ARGS` with nothing but the environment variables `env` saying
/// where the control plane is.
fn server_with_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(pgcmk());
    cmd.arg("server").args(args);
    for var in [
        "PGCMK_CONTROL_DIR",
        "PGCMK_ENDPOINT",
        "PGCMK_CONTROL_CREDENTIALS",
        "PGCMK_CONTROL_CA_CERT",
    ] {
        cmd.env_remove(var);
    }
    for (var, value) in env {
        cmd.env(var, value);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn the_control_directory_alone_tells_the_cli_where_and_who() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let out = server_with_env(
        &["list", "--output", "json"],
        &[("PGCMK_CONTROL_DIR", &cp.state_dir)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(listed.is_array(), "{listed}");
}

#[test]
fn a_control_directory_without_its_files_says_which_setting_to_fix() {
    let stack = shared_stack();
    let empty = tempfile::tempdir().unwrap();
    let out = server_with_env(&["list"], &[("PGCMK_CONTROL_DIR", empty.path())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ca.pem") && stderr.contains("PGCMK_CONTROL_DIR"),
        "{stderr}"
    );
    // Given the CA alone, the missing credential is next, with the same advice.
    let out = server_with_env(
        &["list"],
        &[
            ("PGCMK_CONTROL_DIR", empty.path()),
            ("PGCMK_CONTROL_CA_CERT", &stack.cp.ca_file()),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("dba.credential") && stderr.contains("PGCMK_CONTROL_DIR"),
        "{stderr}"
    );
}

#[test]
fn an_identity_credential_given_as_the_dba_credential_is_named_as_such() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let dir = tempfile::tempdir().unwrap();
    let identity_file = dir.path().join("orders-mi.credential");
    fs::write(
        &identity_file,
        r#"{"name":"orders-mi","client_id":"c","secret":"s"}"#,
    )
    .unwrap();
    let out = server_with_env(
        &["list"],
        &[
            ("PGCMK_CONTROL_DIR", &cp.state_dir),
            ("PGCMK_CONTROL_CREDENTIALS", &identity_file),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("is not a DBA credential") && stderr.contains("--identity-credential-file"),
        "{stderr}"
    );
    assert!(!stderr.contains("builder error"), "{stderr}");
}

#[test]
fn a_declared_body_over_the_limit_is_refused_unread() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let ca = fs::read(cp.ca_file()).unwrap();
    let mut tls = pgcmk_testkit::net::tls_connection(cp.url.trim_start_matches("https://"), &ca);
    let head = pgcmk_testkit::net::answer_to_head(
        &mut tls,
        "POST /servers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}
