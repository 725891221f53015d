//! Transport failures are transient (a vault outage is not a revocation), and each
//! request is bounded by its timeout. Real sockets on loopback, no vault needed.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::akv::{AkvClient, ClientOptions, TokenSource};
use pgcmk_keyprovider::KeyError;

fn tokens() -> TokenSource {
    TokenSource::client_secret(
        "https://127.0.0.1:1/token",
        "cid",
        SecretBytes::new(b"s".to_vec()),
    )
    .unwrap()
}

fn options(timeout: Duration) -> ClientOptions {
    ClientOptions {
        timeout,
        connect_timeout: timeout,
        ..ClientOptions::default()
    }
}

#[test]
fn connection_refused_is_transient() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = AkvClient::new(
        &format!("https://127.0.0.1:{port}"),
        tokens(),
        &options(Duration::from_secs(5)),
    )
    .unwrap();
    let err = client.get_key("k1", None).unwrap_err();
    assert!(matches!(err, KeyError::Transient { .. }), "{err}");
    assert!(err.to_string().contains("could not connect"), "{err}");
}

#[test]
fn a_silent_server_times_out_as_transient() {
    // Accepts TCP (the kernel backlog does) but never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = AkvClient::new(
        &format!("https://127.0.0.1:{port}"),
        tokens(),
        &options(Duration::from_millis(500)),
    )
    .unwrap();
    let started = Instant::now();
    let err = client.get_key("k1", None).unwrap_err();
    let took = started.elapsed();
    assert!(err.is_retryable(), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(listener);
}

#[test]
fn bad_names_and_urls_are_refused_before_any_request() {
    let err =
        AkvClient::new("http://127.0.0.1:1", tokens(), &ClientOptions::default()).unwrap_err();
    assert!(err.to_string().contains("https://HOST[:PORT]"), "{err}");
    let err = AkvClient::new(
        "https://127.0.0.1:1/path",
        tokens(),
        &ClientOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
    let client =
        AkvClient::new("https://127.0.0.1:1", tokens(), &ClientOptions::default()).unwrap();
    let err = client.get_key("bad_name", None).unwrap_err();
    assert!(err.to_string().contains("key name 'bad_name'"), "{err}");
    let err = client.get_key("k1", Some("XYZ")).unwrap_err();
    assert!(err.to_string().contains("32 lowercase hex"), "{err}");
    let err = client
        .create_rsa_key("k1", &pgcmk_keyprovider::akv::NewRsaKey::new(3071))
        .unwrap_err();
    assert!(err.to_string().contains("2048, 3072 or 4096"), "{err}");
    let err = AkvClient::new(
        "https://127.0.0.1:1",
        tokens(),
        &ClientOptions::trusting_only("/nonexistent/ca.pem"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("cannot read CA file"), "{err}");
}
