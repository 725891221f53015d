//! What a client that never authenticates can cost the vault is bounded: its audit
//! entries (a fixed size, a rate), its slow requests (deadlines), its connections
//! (caps), and a process out of file descriptors backs off instead of spinning.
//! Each test reproduces a defect that was found (issue: hardening, items 1 and 2).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pgcmk_testkit::wait::wait_for;
use reqwest::Method;
use support::*;

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn store_bytes(v: &Vault) -> u64 {
    std::fs::metadata(v.data_dir().join("vault.redb"))
        .unwrap()
        .len()
}

/// The vault's `/health`, answered or not.
fn healthy(v: &Vault) -> bool {
    let url = format!("{}/health", v.service().info.url);
    pgcmk_hostkeys::trust::blocking_client(&v.service().ca_pem, Duration::from_secs(2))
        .ok()
        .and_then(|c| c.get(url).send().ok())
        .is_some_and(|r| r.status().is_success())
}

/// `HOST:PORT` of the vault service.
fn address(v: &Vault) -> String {
    v.service()
        .info
        .url
        .trim_start_matches("https://")
        .to_string()
}

/// A TLS connection to the vault trusting its CA.
fn tls_connection(v: &Vault) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    pgcmk_testkit::net::tls_connection(&address(v), &v.service().ca_pem)
}

#[test]
fn anonymous_requests_with_huge_key_names_cost_a_bounded_record() {
    let v = Vault::start();
    let kv = v.vault("hostile-kv", false);
    let before = store_bytes(&v);
    let name = "k".repeat(60_000);
    let started = Instant::now();
    for _ in 0..300 {
        let a = v.raw(
            Method::GET,
            &format!("{kv}/keys/{name}?api-version=7.5"),
            None,
            None,
        );
        assert_eq!(a.status, 401);
    }
    let grown = store_bytes(&v).saturating_sub(before);
    // Before: ~115 KB per request (35 MB for these 300).
    assert!(
        grown < 2 * 1024 * 1024,
        "300 anonymous requests grew the store by {grown} bytes in {:?}",
        started.elapsed()
    );
    let anonymous = v.audit("principal=anonymous&include_challenges=true");
    assert!(
        anonymous.len() < 300,
        "every anonymous request got its own entry: {}",
        anonymous.len()
    );
    assert!(
        anonymous
            .iter()
            .any(|e| e["entry"]["key"] == "(invalid name of 60000 bytes)"),
        "the name is noted by its length"
    );
    let last = anonymous.last().unwrap();
    assert!(
        anonymous
            .iter()
            .any(|e| e["entry"]["anonymous_left_out"].as_u64() > Some(0)),
        "no entry counts the requests left out; last: {last}"
    );
    v.audit_verify().expect("the chain still verifies");
}

#[test]
fn a_body_that_never_arrives_is_dropped_at_the_client_deadline() {
    let v = Vault::start_with(&["--client-timeout-secs", "2"]);
    let mut tls = tls_connection(&v);
    let started = Instant::now();
    write!(
        tls,
        "POST /identity/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nclient_id="
    )
    .unwrap();
    tls.flush().unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "the connection was held for {waited:?}"
    );
    assert!(waited >= Duration::from_secs(2), "ended after {waited:?}");
}

#[test]
fn connections_over_the_cap_are_closed_and_silent_ones_dropped_at_the_deadline() {
    let v = Vault::start_with(&["--max-connections", "16", "--client-timeout-secs", "2"]);
    let addr = address(&v);
    let pid = v.pid();
    let cpu_before = cpu_seconds(pid);
    // Silent connections (no TLS handshake), far more than one address may hold.
    let held: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(!held.is_empty());
    // While they stay open, the vault drops them at the handshake deadline and
    // answers again; it does not spin meanwhile.
    wait_for("the vault to answer again", Duration::from_secs(15), || {
        healthy(&v)
    });
    let cpu = cpu_seconds(pid) - cpu_before;
    assert!(
        cpu < 2.0,
        "the vault used {cpu:.2} CPU seconds on silent clients"
    );
    let mut closed = 0;
    for mut s in held {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        if matches!(s.read(&mut buf), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 200, "silent connections the vault still holds");
}

#[test]
fn out_of_file_descriptors_the_vault_backs_off_and_recovers() {
    // Caps above what the process may open: accept itself fails (EMFILE).
    let v = Vault::start_with(&["--max-connections", "100000", "--client-timeout-secs", "3"]);
    let pid = v.pid();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=64:64"])
        .status()
        .unwrap();
    assert!(limited.success());
    let addr = address(&v);
    let cpu_before = cpu_seconds(pid);
    let held: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(2)); // the window being measured, not a wait for a state
    let cpu = cpu_seconds(pid) - cpu_before;
    assert!(
        cpu < 1.0,
        "the vault spun on failed accepts: {cpu:.2} CPU seconds in 2 s"
    );
    drop(held);
    wait_for("the vault to answer again", Duration::from_secs(20), || {
        healthy(&v)
    });
}

#[test]
fn a_declared_body_over_the_limit_is_refused_unread() {
    let v = Vault::start();
    let mut tls = tls_connection(&v);
    let head = pgcmk_testkit::net::answer_to_head(
        &mut tls,
        "POST /identity/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[test]
fn a_data_plane_request_without_api_version_is_refused() {
    let v = Vault::start();
    let kv = v.vault("apiversion-kv", false);
    let t = v.admin_token(&kv);
    let a = v.raw(Method::GET, &format!("{kv}/keys"), Some(&t), None);
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.code(), "BadParameter");
    assert!(a.body.to_string().contains("api-version"), "{}", a.body);
}
