//! The start-up handshake: the one message the control plane writes on a node
//! agent's stdin (a pipe) before closing it, for every run of the agent (serving
//! or one task). Secrets travel only here: never in arguments, environment or
//! files.
//!
//! Wire format, version 1: one JSON object, then end of input.
//!
//! ```json
//! {"version": 1, "identity_secret": "…", "initial_password": "…"}
//! ```
//!
//! - `version` (required): 1. An agent refuses any other version, naming it.
//! - `identity_secret` (required, non-empty): the managed identity's header secret.
//! - `initial_password` (optional): present only for the first start of a new
//!   server; the agent provisions the server (encrypted volume, `initdb`) and
//!   gives the `postgres` superuser this password.
//!
//! Errors never echo the input: it holds secrets.

use std::borrow::Cow;
use std::io::{Read, Write};

use pgcmk_crypto::SecretBytes;
use serde::{Deserialize, Serialize};

/// The handshake version this agent speaks.
pub const HANDSHAKE_VERSION: u32 = 1;
/// The longest handshake accepted (secrets are far shorter).
const MAX_LEN: usize = 64 * 1024;

/// What the control plane hands a starting agent.
pub struct Handshake {
    /// The managed identity's header secret.
    pub identity_secret: SecretBytes,
    /// The `postgres` superuser's password, when the agent is to provision a new
    /// server before serving it.
    pub initial_password: Option<SecretBytes>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("identity_secret", &"REDACTED")
            .field(
                "initial_password",
                &self.initial_password.as_ref().map(|_| "REDACTED"),
            )
            .finish()
    }
}

/// Why a handshake could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Nothing came on stdin.
    #[error(
        "no handshake on stdin: the agent is started by `pgcmk serve`, which passes it \
         through a pipe"
    )]
    Empty,
    /// Reading stdin failed.
    #[error("reading the handshake from stdin: {0}")]
    Read(#[source] std::io::Error),
    /// Writing to the agent's stdin failed (it exited at once).
    #[error("writing the handshake to the agent: {0}")]
    Write(#[source] std::io::Error),
    /// More than the handshake's size limit came.
    #[error("the handshake on stdin is longer than {MAX_LEN} bytes")]
    TooLong,
    /// Not a handshake object (the input is not shown: it holds secrets).
    #[error(
        "the handshake on stdin is not valid ({what} at line {line}, column {column}): \
         expected {{\"version\": {HANDSHAKE_VERSION}, \"identity_secret\": ...}}"
    )]
    Malformed {
        /// serde_json's category of the error (syntax, data, eof).
        what: &'static str,
        /// Where it was found.
        line: usize,
        /// Where it was found.
        column: usize,
    },
    /// A version this agent does not speak.
    #[error(
        "handshake version {found} is not supported by this agent (it speaks version \
         {HANDSHAKE_VERSION}): run the same pgcmk build for `pgcmk serve` and the agents"
    )]
    UnsupportedVersion {
        /// The version that came.
        found: u32,
    },
    /// The identity secret is empty.
    #[error("the handshake on stdin has an empty identity_secret")]
    NoIdentitySecret,
    /// A secret to send is not UTF-8 text.
    #[error("the {0} to hand to the agent is not UTF-8 text")]
    NotText(&'static str),
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct WireV1<'a> {
    version: u32,
    #[serde(borrow)]
    identity_secret: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    initial_password: Option<Cow<'a, str>>,
}

fn malformed(e: &serde_json::Error) -> HandshakeError {
    use serde_json::error::Category;
    HandshakeError::Malformed {
        what: match e.classify() {
            Category::Io => "unreadable",
            Category::Syntax => "not JSON",
            Category::Data => "a missing or mistyped field",
            Category::Eof => "cut short",
        },
        line: e.line(),
        column: e.column(),
    }
}

fn text_of<'a>(what: &'static str, secret: &'a SecretBytes) -> Result<&'a str, HandshakeError> {
    std::str::from_utf8(secret.expose_secret()).map_err(|_| HandshakeError::NotText(what))
}

fn secret_of(text: Cow<'_, str>) -> SecretBytes {
    SecretBytes::new(text.into_owned().into_bytes())
}

impl Handshake {
    /// Reads a handshake from `input` to its end.
    pub fn read(input: impl Read) -> Result<Self, HandshakeError> {
        // Room up front: no reallocation leaves copies of the secrets behind.
        let mut buffer = Vec::with_capacity(8192);
        let read = input.take(MAX_LEN as u64 + 1).read_to_end(&mut buffer);
        let buffer = SecretBytes::new(buffer);
        read.map_err(HandshakeError::Read)?;
        let bytes = buffer.expose_secret();
        if bytes.trim_ascii().is_empty() {
            return Err(HandshakeError::Empty);
        }
        if bytes.len() > MAX_LEN {
            return Err(HandshakeError::TooLong);
        }
        let VersionOnly { version } = serde_json::from_slice(bytes).map_err(|e| malformed(&e))?;
        if version != HANDSHAKE_VERSION {
            return Err(HandshakeError::UnsupportedVersion { found: version });
        }
        let wire: WireV1<'_> = serde_json::from_slice(bytes).map_err(|e| malformed(&e))?;
        let identity_secret = secret_of(wire.identity_secret);
        if identity_secret.expose_secret().trim_ascii().is_empty() {
            return Err(HandshakeError::NoIdentitySecret);
        }
        Ok(Self {
            identity_secret,
            initial_password: wire.initial_password.map(secret_of),
        })
    }

    /// Writes the handshake to `output` (the agent's stdin; the caller closes it).
    pub fn write(&self, mut output: impl Write) -> Result<(), HandshakeError> {
        let wire = WireV1 {
            version: HANDSHAKE_VERSION,
            identity_secret: Cow::Borrowed(text_of("identity secret", &self.identity_secret)?),
            initial_password: self
                .initial_password
                .as_ref()
                .map(|p| text_of("initial password", p).map(Cow::Borrowed))
                .transpose()?,
        };
        let mut bytes = Vec::with_capacity(
            256 + 2 * self.identity_secret.expose_secret().len()
                + self
                    .initial_password
                    .as_ref()
                    .map_or(0, |p| 2 * p.expose_secret().len()),
        );
        serde_json::to_writer(&mut bytes, &wire).map_err(|e| malformed(&e))?;
        let bytes = SecretBytes::new(bytes);
        // Far below a pipe's capacity, so this never waits for the agent.
        output
            .write_all(bytes.expose_secret())
            .map_err(HandshakeError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Handshake, HandshakeError> {
        Handshake::read(text.as_bytes())
    }

    #[test]
    fn round_trips_with_and_without_a_password() {
        for password in [None, Some("pw-\"quoted\"\\")] {
            let sent = Handshake {
                identity_secret: SecretBytes::new(b"header-secret".to_vec()),
                initial_password: password.map(|p| SecretBytes::new(p.as_bytes().to_vec())),
            };
            let mut wire = Vec::new();
            sent.write(&mut wire).unwrap();
            let got = Handshake::read(wire.as_slice()).unwrap();
            assert_eq!(got.identity_secret.expose_secret(), b"header-secret");
            assert_eq!(
                got.initial_password.as_ref().map(|p| p.expose_secret()),
                password.map(str::as_bytes)
            );
        }
    }

    #[test]
    fn bad_handshakes_say_what_is_wrong_without_echoing_secrets() {
        let cases: [(&str, &str); 6] = [
            ("", "no handshake on stdin"),
            ("  \n", "no handshake on stdin"),
            ("s3cr3t-raw-secret", "not JSON at line 1"),
            (
                r#"{"version":2,"identity_secret":"s3cr3t"}"#,
                "handshake version 2 is not supported",
            ),
            (r#"{"version":1}"#, "a missing or mistyped field"),
            (
                r#"{"version":1,"identity_secret":" "}"#,
                "empty identity_secret",
            ),
        ];
        for (input, want) in cases {
            let err = read(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(!err.contains("s3cr3t"), "{input:?}: {err}");
        }
        let err = read(r#"{"version":1,"identity_secret":7}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mistyped"), "{err}");
        let long = format!(
            r#"{{"version":1,"identity_secret":"{}"}}"#,
            "x".repeat(MAX_LEN)
        );
        assert!(matches!(read(&long), Err(HandshakeError::TooLong)));
    }

    #[test]
    fn debug_prints_no_secret() {
        let h =
            read(r#"{"version":1,"identity_secret":"s3cr3t","initial_password":"pw0rd"}"#).unwrap();
        let printed = format!("{h:?}");
        assert!(
            !printed.contains("s3cr3t") && !printed.contains("pw0rd"),
            "{printed}"
        );
    }
}
