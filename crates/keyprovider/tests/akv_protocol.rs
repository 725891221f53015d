//! Protocol edges of the AKV client that a well-behaved vault never shows: throttling
//! and server errors, a challenge naming another audience, a nextLink that leaves
//! the vault, a token rejected mid-life. A small scripted HTTPS server on loopback
//! (rustls, a fresh self-signed certificate) answers; the real vault is tested in
//! akv_vault.rs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::akv::{AkvClient, ClientOptions, TokenSource, WrapAlgorithm};
use pgcmk_keyprovider::KeyError;

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
    identity_header: Option<String>,
    body: Vec<u8>,
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

/// A reply status that makes the server close the connection without answering.
const HANG_UP: u16 = 0;

type Handler = dyn Fn(&Seen, &str) -> Reply + Send + Sync;

/// A scripted HTTPS server; `handler` gets each request and the server's own URL.
struct ScriptedVault {
    url: String,
    ca_file: tempfile::NamedTempFile,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ScriptedVault {
    fn start(handler: impl Fn(&Seen, &str) -> Reply + Send + Sync + 'static) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        ca_file.write_all(certified.cert.pem().as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certified.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(
                    certified.signing_key.serialize_der().into(),
                ),
            )
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (thread_seen, thread_url) = (Arc::clone(&seen), url.clone());
        // Serves until the test process ends; each connection on its own thread.
        std::thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                let (config, handler, seen, url) = (
                    Arc::clone(&config),
                    Arc::clone(&handler),
                    Arc::clone(&thread_seen),
                    thread_url.clone(),
                );
                std::thread::spawn(move || {
                    let tls = rustls::ServerConnection::new(config).unwrap();
                    serve_connection(rustls::StreamOwned::new(tls, tcp), &*handler, &seen, &url);
                });
            }
        });
        Self { url, ca_file, seen }
    }

    fn client(&self, tokens: TokenSource) -> AkvClient {
        AkvClient::new(
            &self.url,
            tokens,
            &ClientOptions::trusting_only(self.ca_file.path()),
        )
        .unwrap()
    }

    fn tokens(&self) -> TokenSource {
        TokenSource::client_secret(
            &format!("{}/token", self.url),
            "app",
            SecretBytes::new(b"s3cret".to_vec()),
        )
        .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_connection(
    stream: impl Read + Write,
    handler: &Handler,
    seen: &Mutex<Vec<Seen>>,
    url: &str,
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut length, mut authorization, mut identity_header) = (0, None, None);
        loop {
            let mut header = String::new();
            if stream.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_string()),
                "x-identity-header" => identity_header = Some(value.trim().to_string()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let request = Seen {
            method,
            target,
            authorization,
            identity_header,
            body,
        };
        let answer = handler(&request, url);
        seen.lock().unwrap().push(request);
        if answer.status == HANG_UP {
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n",
            answer.status,
            answer.body.len()
        );
        for (name, value) in &answer.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let out = stream.get_mut();
        if out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(answer.body.as_bytes()))
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

fn challenge(resource: &str) -> Reply {
    Reply {
        status: 401,
        headers: vec![(
            "WWW-Authenticate",
            format!(r#"Bearer authorization="https://login.local/tenant", resource="{resource}""#),
        )],
        body: r#"{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}"#.into(),
    }
}

fn token_reply(token: &str) -> Reply {
    reply(
        200,
        &format!(r#"{{"access_token":"{token}","expires_in":3600,"token_type":"Bearer"}}"#),
    )
}

const KID: &str = "0123456789abcdef0123456789abcdef";

fn key_body(url: &str) -> String {
    format!(
        r#"{{"key":{{"kid":"{url}/keys/k1/{KID}","kty":"RSA","key_ops":["wrapKey"],"n":"gA","e":"AQAB"}},"attributes":{{"enabled":true}}}}"#
    )
}

/// A vault that challenges requests without `Bearer tok-N`, issues tok-1, tok-2, ...
fn well_behaved(issued: Arc<Mutex<u32>>) -> impl Fn(&Seen, &str) -> Reply + Send + Sync {
    move |req, url| {
        if req.target.starts_with("/token") {
            let mut n = issued.lock().unwrap();
            *n += 1;
            return token_reply(&format!("tok-{n}"));
        }
        match &req.authorization {
            Some(a) if a.starts_with("Bearer tok-") => reply(200, &key_body(url)),
            _ => challenge(url),
        }
    }
}

#[test]
fn challenge_first_without_body_then_one_token_for_many_requests() {
    let issued = Arc::new(Mutex::new(0));
    let vault = ScriptedVault::start(well_behaved(Arc::clone(&issued)));
    let client = vault.client(vault.tokens());
    for _ in 0..5 {
        assert_eq!(
            client.get_key("k1", None).unwrap().key.kid,
            format!("{}/keys/k1/{KID}", vault.url)
        );
    }
    client
        .wrap_key("k1", None, WrapAlgorithm::RsaOaep256, &[0xAA; 32])
        .ok();
    assert_eq!(*issued.lock().unwrap(), 1, "the token must be reused");

    let seen = vault.seen();
    assert_eq!(seen[0].authorization, None, "the probe carries no token");
    assert!(seen[1].target.starts_with("/token"));
    let form = String::from_utf8_lossy(&seen[1].body);
    assert!(
        form.contains("grant_type=client_credentials")
            && form.contains(&format!(
                "scope={}",
                urlencode(&format!("{}/.default", vault.url))
            )),
        "{form}"
    );
    assert!(
        seen[2].target.contains("api-version=7.5"),
        "{}",
        seen[2].target
    );
    assert_eq!(seen[2].authorization.as_deref(), Some("Bearer tok-1"));
    assert_eq!(
        seen.iter()
            .filter(|s| s.authorization.is_none() && !s.target.starts_with("/token"))
            .count(),
        1
    );
    let wrap = seen.iter().find(|s| s.target.contains("/wrapkey")).unwrap();
    assert_eq!(wrap.method, "POST");
    assert!(String::from_utf8_lossy(&wrap.body).contains(r#""alg":"RSA-OAEP-256""#));
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('/', "%2F")
}

#[test]
fn a_rejected_token_is_replaced_once() {
    let issued = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&issued);
    // Accepts only the second token, as after a key-vault restart with new signing keys.
    let vault = ScriptedVault::start(move |req, url| {
        if req.target.starts_with("/token") {
            let mut n = counter.lock().unwrap();
            *n += 1;
            return token_reply(&format!("tok-{n}"));
        }
        match req.authorization.as_deref() {
            Some("Bearer tok-2") => reply(200, &key_body(url)),
            _ => challenge(url),
        }
    });
    let client = vault.client(vault.tokens());
    client.get_key("k1", None).unwrap();
    assert_eq!(*issued.lock().unwrap(), 2);
}

#[test]
fn a_challenge_for_another_audience_gets_no_token() {
    let issued = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&issued);
    let vault = ScriptedVault::start(move |req, _| {
        if req.target.starts_with("/token") {
            *counter.lock().unwrap() += 1;
            return token_reply("tok");
        }
        challenge("https://other.example")
    });
    let err = vault
        .client(vault.tokens())
        .get_key("k1", None)
        .unwrap_err();
    assert!(
        matches!(err, KeyError::Invalid { .. }) && err.to_string().contains("not that vault"),
        "{err}"
    );
    assert_eq!(
        *issued.lock().unwrap(),
        0,
        "no token may be fetched for a foreign audience"
    );
}

#[test]
fn throttling_and_server_errors_are_transient_denials_are_not() {
    for (status, body, retryable) in [
        (
            429,
            r#"{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received."}}"#,
            true,
        ),
        (503, "upstream unavailable", true),
        (
            500,
            r#"{"error":{"code":"InternalServerError","message":"boom"}}"#,
            true,
        ),
        (
            403,
            r#"{"error":{"code":"Forbidden","message":"Operation unwrapKey is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}"#,
            false,
        ),
        (
            400,
            r#"{"error":{"code":"BadParameter","message":"Invalid algorithm"}}"#,
            false,
        ),
    ] {
        let vault = ScriptedVault::start(move |req, url| {
            if req.target.starts_with("/token") {
                return token_reply("tok");
            }
            match req.authorization {
                Some(_) => reply(status, body),
                None => challenge(url),
            }
        });
        let err = vault
            .client(vault.tokens())
            .get_key("k1", None)
            .unwrap_err();
        assert_eq!(err.is_retryable(), retryable, "{status}: {err}");
        assert!(err.to_string().contains(&format!("HTTP {status}")), "{err}");
    }
}

#[test]
fn token_endpoint_refusal_is_a_denial() {
    let vault = ScriptedVault::start(|req, url| {
        if req.target.starts_with("/token") {
            return reply(
                400,
                r#"{"error":"invalid_client","error_description":"bad secret"}"#,
            );
        }
        challenge(url)
    });
    let err = vault
        .client(vault.tokens())
        .get_key("k1", None)
        .unwrap_err();
    assert!(matches!(err, KeyError::Denied { .. }), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn a_next_link_leaving_the_vault_is_not_followed() {
    let vault = ScriptedVault::start(|req, url| {
        if req.target.starts_with("/token") {
            return token_reply("tok");
        }
        match req.authorization {
            Some(_) => reply(
                200,
                r#"{"value":[],"nextLink":"https://elsewhere.example/keys?$skiptoken=1"}"#,
            ),
            None => challenge(url),
        }
    });
    let err = vault.client(vault.tokens()).list_keys().unwrap_err();
    assert!(err.to_string().contains("leaves the vault"), "{err}");
    assert!(vault.seen().iter().all(|s| !s.target.contains("skiptoken")));
}

#[test]
fn managed_identity_requests_follow_the_app_service_protocol() {
    let vault = ScriptedVault::start(|req, url| {
        if req.target.starts_with("/msi/token") {
            return reply(
                200,
                r#"{"access_token":"mi-tok","expires_on":"4102444800","resource":"x","token_type":"Bearer"}"#,
            );
        }
        match req.authorization.as_deref() {
            Some("Bearer mi-tok") => reply(200, &key_body(url)),
            _ => challenge(url),
        }
    });
    let tokens = TokenSource::managed_identity(
        &format!("{}/msi/token", vault.url),
        SecretBytes::new(b"hdr".to_vec()),
        "cid-1",
    )
    .unwrap();
    vault.client(tokens).get_key("k1", None).unwrap();
    let msi = vault
        .seen()
        .into_iter()
        .find(|s| s.target.starts_with("/msi/token"))
        .unwrap();
    assert_eq!(msi.method, "GET");
    assert_eq!(msi.identity_header.as_deref(), Some("hdr"));
    for part in [
        "api-version=2019-08-01",
        "client_id=cid-1",
        &format!("resource={}", urlencode(&vault.url)),
    ] {
        assert!(msi.target.contains(part), "{} lacks {part}", msi.target);
    }
}

#[test]
fn a_connection_closed_under_a_request_is_retried_once_on_a_new_one() {
    let served = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&served);
    // Hangs up on the second key request, as a server closing an idle connection
    // just as the client reuses it.
    let vault = ScriptedVault::start(move |req, url| {
        if req.target.starts_with("/token") {
            return token_reply("tok");
        }
        if req.authorization.is_none() {
            return challenge(url);
        }
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n == 2 {
            reply(HANG_UP, "")
        } else {
            reply(200, &key_body(url))
        }
    });
    let client = vault.client(vault.tokens());
    client.get_key("k1", None).unwrap();
    client.get_key("k1", None).unwrap();
    assert_eq!(
        *served.lock().unwrap(),
        3,
        "the hung-up request was sent again"
    );
}
