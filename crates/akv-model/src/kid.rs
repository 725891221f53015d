//! Key identifiers in Azure Key Vault form: `https://HOST[:PORT]/keys/NAME[/VERSION]`.

use std::fmt;

/// A key URL that is not of the form `https://HOST[:PORT]/keys/NAME[/VERSION]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid key request: {reason}")]
pub struct InvalidKeyId {
    /// What is wrong with it and the expected form.
    pub reason: String,
}

/// A reference to a key as a server is configured with it: versioned (pinned) or
/// versionless (follows rotation).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyReference {
    /// The vault's base URL without a trailing slash, e.g. `https://127.0.0.1:8443`.
    pub vault_url: String,
    /// The key name (`^[0-9a-zA-Z-]{1,127}$`).
    pub name: String,
    /// The pinned version (32 lowercase hex), or `None` to follow the current one.
    pub version: Option<String>,
}

/// One exact key version, as recorded beside every wrapped DEK.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyVersionId {
    /// The vault's base URL without a trailing slash.
    pub vault_url: String,
    /// The key name.
    pub name: String,
    /// The version: 32 lowercase hex characters.
    pub version: String,
}

fn invalid(url: &str, why: &str) -> InvalidKeyId {
    InvalidKeyId {
        reason: format!(
            "key URL '{url}' is not valid: {why}; expected https://HOST[:PORT]/keys/NAME[/VERSION]"
        ),
    }
}

/// True for an AKV key name: `^[0-9a-zA-Z-]{1,127}$`.
pub fn valid_key_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// True for an AKV key version: 32 lowercase hex characters.
pub fn valid_key_version(version: &str) -> bool {
    version.len() == 32
        && version
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl KeyReference {
    /// Parses a key URL; see the module docs for the accepted form.
    pub fn parse(url: &str) -> Result<Self, InvalidKeyId> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| invalid(url, "it must start with https://"))?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid(url, "it has no /keys/ path"))?;
        if host.is_empty() || host.contains(['?', '#', '@']) {
            return Err(invalid(url, "the host is missing or malformed"));
        }
        let mut parts = path.trim_end_matches('/').split('/');
        if parts.next() != Some("keys") {
            return Err(invalid(url, "the path must be /keys/NAME[/VERSION]"));
        }
        let name = parts.next().unwrap_or_default();
        if !valid_key_name(name) {
            return Err(invalid(
                url,
                "the key name must match ^[0-9a-zA-Z-]{1,127}$",
            ));
        }
        let version = match parts.next() {
            None => None,
            Some(v) if valid_key_version(v) => Some(v.to_string()),
            Some(_) => {
                return Err(invalid(
                    url,
                    "the version must be 32 lowercase hex characters",
                ))
            }
        };
        if parts.next().is_some() {
            return Err(invalid(url, "unexpected path segments after the version"));
        }
        Ok(Self {
            vault_url: format!("https://{host}"),
            name: name.to_string(),
            version,
        })
    }

    /// True when the reference follows the key's current version.
    pub fn is_versionless(&self) -> bool {
        self.version.is_none()
    }
}

impl KeyVersionId {
    /// Parses a full key id (`kid`), which must carry a version.
    pub fn parse(url: &str) -> Result<Self, InvalidKeyId> {
        let r = KeyReference::parse(url)?;
        let version = r
            .version
            .ok_or_else(|| invalid(url, "a key version is required here"))?;
        Ok(Self {
            vault_url: r.vault_url,
            name: r.name,
            version,
        })
    }
}

impl KeyVersionId {
    /// The versionless reference to its key: a server configured with it follows
    /// the key's rotation.
    pub fn versionless(&self) -> KeyReference {
        KeyReference {
            vault_url: self.vault_url.clone(),
            name: self.name.clone(),
            version: None,
        }
    }
}

impl fmt::Display for KeyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/keys/{}", self.vault_url, self.name)?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyVersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/keys/{}/{}", self.vault_url, self.name, self.version)
    }
}

/// `TryFrom<String>` (by the type's `parse`) and `From<T> for String` (by its
/// `Display`), for key identifiers that serialize as their string form; shared with
/// the provider-tagged references of `pgcmk-keyprovider`.
#[doc(hidden)]
#[macro_export]
macro_rules! string_conversions {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = $crate::InvalidKeyId;
            fn try_from(s: String) -> Result<Self, $crate::InvalidKeyId> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(k: $t) -> String {
                k.to_string()
            }
        }
    };
}
string_conversions!(KeyReference);
string_conversions!(KeyVersionId);

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_versioned_and_versionless() {
        let r = KeyReference::parse(&format!("https://127.0.0.1:8443/keys/k-1/{V}")).unwrap();
        assert_eq!(r.vault_url, "https://127.0.0.1:8443");
        assert_eq!(r.name, "k-1");
        assert_eq!(r.version.as_deref(), Some(V));
        let r = KeyReference::parse("https://vault.example/keys/k1/").unwrap();
        assert!(r.is_versionless());
        assert_eq!(r.to_string(), "https://vault.example/keys/k1");
    }

    #[test]
    fn rejects_malformed_urls_with_reason() {
        for (url, why) in [
            ("http://h/keys/k", "https://"),
            ("https://h/secrets/k", "/keys/NAME"),
            ("https://h/keys/bad_name", "key name"),
            ("https://h/keys/k/XYZ", "32 lowercase hex"),
            (&format!("https://h/keys/k/{V}/extra")[..], "unexpected"),
            ("https:///keys/k", "host"),
        ] {
            let err = KeyReference::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
        assert!(KeyVersionId::parse("https://h/keys/k").is_err());
    }
}
