//! KMIP key references: `kmip://HOST:PORT/UNIQUE_IDENTIFIER[?ca-file=/abs/ca.pem]`,
//! a managed object on a KMIP server reached over TLS with a client certificate;
//! `ca-file` names the CA certificates to trust the server by (public, so it may be
//! in a reference that is stored and shown). The unique identifier names one key
//! for good, so a reference without `ca-file` is also the key's only version.

use std::fmt;
use std::path::PathBuf;

use pgcmk_akv_model::InvalidKeyId;

/// A key held by a KMIP server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KmipKeyReference {
    /// The server's host name or IP address (IPv6 in brackets).
    pub host: String,
    /// The server's TCP port (KMIP's registered port is 5696).
    pub port: u16,
    /// The key's Unique Identifier on that server.
    pub unique_identifier: String,
    /// The PEM file of CA certificates that issued the server's certificate.
    pub ca_file: Option<PathBuf>,
}

fn invalid(uri: &str, why: &str) -> InvalidKeyId {
    let shown: String = uri.chars().take(200).collect();
    InvalidKeyId {
        reason: format!(
            "KMIP key reference '{shown}' is not valid: {why}; expected \
             kmip://HOST:PORT/UNIQUE_IDENTIFIER[?ca-file=/path/to/ca.pem]"
        ),
    }
}

impl KmipKeyReference {
    /// Parses `kmip://HOST:PORT/UNIQUE_IDENTIFIER`.
    pub fn parse(uri: &str) -> Result<Self, InvalidKeyId> {
        let rest = uri
            .strip_prefix("kmip://")
            .ok_or_else(|| invalid(uri, "it must start with kmip://"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let ca_file = match query.split_once('=') {
            None if query.is_empty() => None,
            Some(("ca-file", path)) if path.starts_with('/') => Some(PathBuf::from(path)),
            Some(("ca-file", _)) => return Err(invalid(uri, "ca-file must be an absolute path")),
            _ => return Err(invalid(uri, "the only query attribute is ca-file")),
        };
        let (authority, uid) = rest
            .split_once('/')
            .ok_or_else(|| invalid(uri, "the key's unique identifier is missing"))?;
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| invalid(uri, "the port is missing (KMIP's is usually 5696)"))?;
        let host_ok = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
            });
        if !host_ok {
            return Err(invalid(uri, "the host is missing or malformed"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(uri, "the port must be a number from 1 to 65535"))?;
        let uid_ok = (1..=128).contains(&uid.len())
            && uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !uid_ok {
            return Err(invalid(
                uri,
                "the unique identifier must be 1 to 128 letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            unique_identifier: uid.to_string(),
            ca_file,
        })
    }

    /// The key itself, without how to trust its server: its only version.
    pub fn version(&self) -> Self {
        Self {
            ca_file: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for KmipKeyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kmip://{}:{}/{}",
            self.host, self.port, self.unique_identifier
        )?;
        match &self.ca_file {
            Some(ca) => write!(f, "?ca-file={}", ca.display()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_identifier() {
        let r = KmipKeyReference::parse("kmip://[::1]:5696/6f1e-2a").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("[::1]", 5696));
        assert_eq!(r.unique_identifier, "6f1e-2a");
        assert_eq!(r.to_string(), "kmip://[::1]:5696/6f1e-2a");
        let r = KmipKeyReference::parse("kmip://h:5696/7?ca-file=/etc/ca.pem").unwrap();
        assert_eq!(r.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(r.to_string(), "kmip://h:5696/7?ca-file=/etc/ca.pem");
        assert_eq!(r.version().to_string(), "kmip://h:5696/7");
    }

    #[test]
    fn rejects_malformed_references_saying_why() {
        for (uri, why) in [
            ("kmip://h:5696", "unique identifier is missing"),
            ("kmip://h/1", "port is missing"),
            ("kmip://h:0/1", "port must"),
            ("kmip://h:99999/1", "port must"),
            ("kmip://:5696/1", "host"),
            ("kmip://u@h:5696/1", "host"),
            ("kmip://h:5696/a/b", "unique identifier must"),
            ("kmip://h:5696/", "unique identifier must"),
            ("kmip://h:5696/1?ca-file=ca.pem", "absolute"),
            ("kmip://h:5696/1?pin=1", "only query attribute"),
        ] {
            let err = KmipKeyReference::parse(uri).unwrap_err().reason;
            assert!(err.contains(why), "{uri}: {err}");
        }
    }
}
