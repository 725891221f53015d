//! PostgreSQL over TLS only (docs/tls.md), with real parts: a server's node gets a
//! certificate from the control plane's servers CA for its listen addresses; a
//! client connects with the connection string's `sslmode=verify-full`; a wrong CA
//! or host name fails; plaintext is refused by pg_hba, also from a non-loopback
//! client (a network namespace of the test's own); the certificate's key is on the
//! encrypted volume only.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use pgcmk_agent::postgres::PgInstall;
use pgcmk_testkit::netns::PeerHost;
use pgcmk_testkit::shared::{Held, Shared};
use support::*;

/// The servers, made at once when the stack starts: one on loopback that the tests
/// only connect to, and one that a test moves to another address.
const SERVERS: [&str; 2] = ["tls-loopback", "tls-moved"];

struct Fixture {
    stack: Stack,
    /// Only connected to: shared by the tests.
    loopback: Created,
    /// For the test that changes its listen addresses.
    moved: MadeFor<Created>,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let stack = Stack::start(60, 300, None);
        let moved = MadeFor::at_once(&SERVERS, |name| {
            Created::from(
                &stack
                    .cp
                    .server(&["create", "--name", name, "--location", "local"]),
            )
        });
        let loopback = moved.take("tls-loopback");
        Fixture {
            stack,
            loopback,
            moved,
        }
    })
}

/// Runs `sql` with `psql` on `conninfo` (a URI or key=value pairs) as `postgres`
/// with `password`, in `host`'s namespace when given; stdout or the error text.
fn psql_at(
    conninfo: &str,
    password: &str,
    sql: &str,
    host: Option<&PeerHost>,
) -> Result<String, String> {
    let psql = PgInstall::discover().unwrap().program("psql");
    let mut cmd = match host {
        Some(host) => host.command(psql.to_str().unwrap()),
        None => Command::new(psql),
    };
    let out = cmd
        .args(["-X", "-A", "-t", "-q", "-d", conninfo, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn servers_ca(cp: &ControlPlane) -> String {
    cp.state_dir.join("servers-ca.pem").display().to_string()
}

#[test]
fn psql_connects_through_the_connection_string_over_tls_verified() {
    let f = fixture();
    let cp = &f.stack.cp;
    let server = &f.loopback;
    let uri = cp.server_text(&["connection-string", &server.name]);
    let uri = uri.trim();
    assert_eq!(
        uri,
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
            server.port,
            servers_ca(cp)
        )
    );
    let tls = psql_at(
        uri,
        &server.password,
        "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        None,
    )
    .unwrap();
    assert!(tls == "t|TLSv1.3" || tls == "t|TLSv1.2", "{tls}");
    let show = cp.server_text(&["show", &server.name]);
    assert!(show.contains(&format!("connect:    {uri}")), "{show}");
    // Plaintext is refused even on loopback: pg_hba has no `host` line.
    let plain = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        server.port
    );
    let err = psql_at(&plain, &server.password, "SELECT 1", None).unwrap_err();
    assert!(
        err.contains("no pg_hba.conf entry") && err.contains("no encryption"),
        "{err}"
    );
    // TLS 1.1 is refused.
    let old = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require ssl_max_protocol_version=TLSv1.1",
        server.port
    );
    assert!(psql_at(&old, &server.password, "SELECT 1", None).is_err());
}

#[test]
fn verify_full_fails_with_another_ca_or_another_host_name() {
    let f = fixture();
    let cp = &f.stack.cp;
    let server = &f.loopback;
    let base = format!(
        "port={} user=postgres dbname=postgres sslmode=verify-full",
        server.port
    );
    // The REST API's CA (ca.pem) vouches for the control plane, not for servers.
    let wrong_ca = format!(
        "host=127.0.0.1 {base} sslrootcert={}",
        cp.ca_file().display()
    );
    let err = psql_at(&wrong_ca, &server.password, "SELECT 1", None).unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");
    let wrong_name = format!(
        "host=db.wrong.example hostaddr=127.0.0.1 {base} sslrootcert={}",
        servers_ca(cp)
    );
    let err = psql_at(&wrong_name, &server.password, "SELECT 1", None).unwrap_err();
    assert!(err.contains("does not match host name"), "{err}");
    let right = format!("host=localhost {base} sslrootcert={}", servers_ca(cp));
    assert_eq!(
        psql_at(&right, &server.password, "SELECT 1", None).unwrap(),
        "1"
    );
}

#[test]
fn a_plaintext_client_on_another_host_is_refused_and_a_tls_one_served() {
    let f = fixture();
    let cp = &f.stack.cp;
    let server = f.moved.take("tls-moved");
    let peer = PeerHost::create(0);
    let listen = format!("127.0.0.1,{}", peer.host_address);
    let updated = cp.server(&["update", &server.name, "--listen-addresses", &listen]);
    assert_eq!(updated["state"], "Ready", "{updated}");
    assert_eq!(
        updated["listen_addresses"],
        serde_json::json!(["127.0.0.1", peer.host_address.to_string()])
    );
    assert!(cp.has_event(&server.name, "listen addresses changed"));
    let base = format!(
        "host={} port={} user=postgres dbname=postgres",
        peer.host_address, server.port
    );
    let plain = format!("{base} sslmode=disable");
    let err = psql_at(&plain, &server.password, "SELECT 1", Some(&peer)).unwrap_err();
    let refusal = format!("no pg_hba.conf entry for host \"{}\"", peer.peer_address);
    assert!(
        err.contains(&refusal) && err.contains("no encryption"),
        "{err}"
    );
    // The same client over TLS, verified for the non-loopback address, is served:
    // the refusal above was pg_hba's, not the network's.
    let verified = format!("{base} sslmode=verify-full sslrootcert={}", servers_ca(cp));
    let client = psql_at(
        &verified,
        &server.password,
        "SELECT inet_client_addr()",
        Some(&peer),
    )
    .unwrap();
    assert_eq!(client, peer.peer_address.to_string());
    drop(peer);
    cp.server(&["delete", &server.name, "--yes"]);
}

#[test]
fn listen_addresses_that_are_not_this_hosts_are_refused_and_change_nothing() {
    let f = fixture();
    let cp = &f.stack.cp;
    let name = &f.loopback.name;
    for (given, says) in [
        ("0.0.0.0", "every address of the host"),
        ("db.example", "not an IP address"),
        // TEST-NET-3: documentation only, never an address of this host.
        ("203.0.113.7", "not usable on this host"),
    ] {
        let err = cp
            .try_server(&["update", name, "--listen-addresses", given])
            .unwrap_err();
        assert!(err.contains(says), "{given}: {err}");
        let err = cp
            .try_server(&[
                "create",
                "--name",
                "tls-refused",
                "-l",
                "local",
                "--listen-addresses",
                given,
            ])
            .unwrap_err();
        assert!(err.contains(says), "{given}: {err}");
    }
    let show = cp.server(&["show", name]);
    assert_eq!(
        show["server"]["listen_addresses"],
        serde_json::json!(["127.0.0.1"])
    );
    assert_eq!(show["server"]["state"], "Ready");
    assert!(cp.try_server(&["show", "tls-refused"]).is_err());
}

#[test]
fn the_node_key_is_on_the_encrypted_volume_only() {
    let f = fixture();
    let server = &f.loopback;
    let key_file = server.dir.join("mnt/tls/server.key");
    let meta = fs::metadata(&key_file).unwrap();
    let postgres = PgInstall::discover().unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), postgres.user().uid);
    let pem = fs::read_to_string(&key_file).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "a PEM key");
    // A piece of the key's base64 body: in no file but the mount's, no argv, no environ.
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let needle = &body[body.len() / 2 - 20..body.len() / 2 + 20];
    let mut leaks = Vec::new();
    find_outside_mounts(f.stack.root.path(), needle.as_bytes(), &mut leaks);
    assert!(leaks.is_empty(), "the TLS key is on disk in: {leaks:?}");
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        for what in ["cmdline", "environ"] {
            let bytes = fs::read(entry.path().join(what)).unwrap_or_default();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "the TLS key is in {}/{what}",
                entry.path().display()
            );
        }
    }
}

/// Every file under `dir` holding `needle`, skipping the servers' live mounts (the
/// plaintext views) and files that vanish while read (other tests' servers run).
fn find_outside_mounts(dir: &Path, needle: &[u8], found: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() && path.file_name() != Some("mnt".as_ref()) {
            find_outside_mounts(&path, needle, found);
        } else if meta.is_file() {
            let bytes = fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
}
