//! Provider-tagged key references: which key a server uses and which provider
//! reaches it, in one string an operator can type (`--key`) and that the control
//! plane and agent store.
//!
//! | form | provider |
//! |---|---|
//! | `https://HOST[:PORT]/keys/NAME[/VERSION]` | Azure Key Vault REST (`pgcmk vault serve` or Azure) |
//! | `pkcs11:token=T;object=O[;id=%01..]?module-path=/abs/lib.so` | a PKCS#11 token (RFC 7512) |
//! | `kmip://HOST:PORT/UNIQUE_IDENTIFIER` | a KMIP server |
//!
//! Both types serialize as that string, so the Azure references that servers were
//! created with before other providers existed read back unchanged.

use std::fmt;

pub use pgcmk_akv_model::InvalidKeyId;
use pgcmk_akv_model::{KeyReference as AkvKeyReference, KeyVersionId as AkvKeyVersionId};

use crate::kmip::KmipKeyReference;
use crate::pkcs11::{Pkcs11KeyReference, Pkcs11KeyVersion};

/// A reference to a key as a server is configured with it: which provider, which
/// key, and whether it is pinned to one version or follows the key's current one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum KeyReference {
    /// A key in an Azure Key Vault–compatible vault.
    Azure(AkvKeyReference),
    /// A private key object in a PKCS#11 token.
    Pkcs11(Pkcs11KeyReference),
    /// A key held by a KMIP server.
    Kmip(KmipKeyReference),
}

/// One exact key version, as recorded beside every wrapped DEK.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum KeyVersionId {
    /// A version of a key in an Azure Key Vault–compatible vault.
    Azure(AkvKeyVersionId),
    /// A token object, named by label and `CKA_ID`.
    Pkcs11(Pkcs11KeyVersion),
    /// A KMIP managed object: its unique identifier never names another key.
    Kmip(KmipKeyReference),
}

impl KeyReference {
    /// Parses any of the forms in the module docs; the error says which forms exist.
    pub fn parse(text: &str) -> Result<Self, InvalidKeyId> {
        if text.starts_with("pkcs11:") {
            Pkcs11KeyReference::parse(text).map(Self::Pkcs11)
        } else if text.starts_with("kmip://") {
            KmipKeyReference::parse(text).map(Self::Kmip)
        } else if text.starts_with("https://") {
            AkvKeyReference::parse(text).map(Self::Azure)
        } else {
            Err(unknown_form(text))
        }
    }

    /// True when the reference follows the key's current version: an Azure key
    /// without a version. A token object or a KMIP key has no versions: a new key is
    /// a new reference (`server update --key`).
    pub fn is_versionless(&self) -> bool {
        match self {
            Self::Azure(r) => r.is_versionless(),
            Self::Pkcs11(_) | Self::Kmip(_) => false,
        }
    }

    /// The provider's name, for messages and documentation links.
    pub fn provider(&self) -> &'static str {
        match self {
            Self::Azure(_) => "azure",
            Self::Pkcs11(_) => "pkcs11",
            Self::Kmip(_) => "kmip",
        }
    }
}

impl KeyVersionId {
    /// Parses a version id in the form [`fmt::Display`] writes.
    pub fn parse(text: &str) -> Result<Self, InvalidKeyId> {
        if text.starts_with("pkcs11:") {
            Pkcs11KeyVersion::parse(text).map(Self::Pkcs11)
        } else if text.starts_with("kmip://") {
            KmipKeyReference::parse(text).map(|r| Self::Kmip(r.version()))
        } else if text.starts_with("https://") {
            AkvKeyVersionId::parse(text).map(Self::Azure)
        } else {
            Err(unknown_form(text))
        }
    }

    /// A short name for tables: the key's name and version within its vault,
    /// token or server.
    pub fn short_name(&self) -> String {
        match self {
            Self::Azure(v) => format!("{}/{}", v.name, v.version),
            Self::Pkcs11(v) => {
                let id: String = v.id.iter().map(|b| format!("{b:02x}")).collect();
                format!("{}/{id}", v.object)
            }
            Self::Kmip(v) => v.unique_identifier.clone(),
        }
    }
}

fn unknown_form(text: &str) -> InvalidKeyId {
    let shown: String = text.chars().take(80).collect();
    InvalidKeyId {
        reason: format!(
            "key '{shown}' is not a key reference: use https://VAULT/keys/NAME[/VERSION] \
             (Azure Key Vault), pkcs11:token=TOKEN;object=LABEL?module-path=/path/to/module.so \
             (PKCS#11) or kmip://HOST:PORT/UNIQUE_IDENTIFIER (KMIP)"
        ),
    }
}

impl From<AkvKeyReference> for KeyReference {
    fn from(r: AkvKeyReference) -> Self {
        Self::Azure(r)
    }
}

impl From<AkvKeyVersionId> for KeyVersionId {
    fn from(v: AkvKeyVersionId) -> Self {
        Self::Azure(v)
    }
}

impl fmt::Display for KeyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Azure(r) => r.fmt(f),
            Self::Pkcs11(r) => r.fmt(f),
            Self::Kmip(r) => r.fmt(f),
        }
    }
}

impl fmt::Display for KeyVersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Azure(v) => v.fmt(f),
            Self::Pkcs11(v) => v.fmt(f),
            Self::Kmip(v) => v.fmt(f),
        }
    }
}

pgcmk_akv_model::string_conversions!(KeyReference);
pgcmk_akv_model::string_conversions!(KeyVersionId);

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn azure_references_stored_before_providers_existed_read_back_unchanged() {
        // agent.json and the state store hold these as plain strings.
        let stored = format!("\"https://127.0.0.1:8443/keys/k-1/{V}\"");
        let r: KeyReference = serde_json::from_str(&stored).unwrap();
        assert!(matches!(&r, KeyReference::Azure(a) if a.name == "k-1"));
        assert_eq!(serde_json::to_string(&r).unwrap(), stored);
        let v: KeyVersionId = serde_json::from_str(&stored).unwrap();
        assert!(matches!(&v, KeyVersionId::Azure(a) if a.version == V));
        assert_eq!(serde_json::to_string(&v).unwrap(), stored);
    }

    #[test]
    fn each_form_parses_to_its_provider_and_round_trips() {
        for (text, provider, versionless) in [
            ("https://v.example/keys/k", "azure", true),
            (
                "pkcs11:token=t1;object=kek?module-path=/usr/lib/softhsm/libsofthsm2.so",
                "pkcs11",
                false,
            ),
            (
                "pkcs11:token=t1;object=kek;id=%01%ab?module-path=/usr/lib/m.so",
                "pkcs11",
                false,
            ),
            ("kmip://127.0.0.1:5696/42", "kmip", false),
            (
                "kmip://127.0.0.1:5696/42?ca-file=/etc/kmip/ca.pem",
                "kmip",
                false,
            ),
        ] {
            let r = KeyReference::parse(text).unwrap();
            assert_eq!(
                (r.provider(), r.is_versionless()),
                (provider, versionless),
                "{text}"
            );
            assert_eq!(r.to_string(), text);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<KeyReference>(&json).unwrap(), r);
        }
    }

    #[test]
    fn an_unknown_scheme_names_the_forms_that_exist() {
        let err = KeyReference::parse("vault://x/y").unwrap_err().to_string();
        for form in ["https://", "pkcs11:", "kmip://"] {
            assert!(err.contains(form), "{err}");
        }
        assert!(KeyVersionId::parse("file:///k").is_err());
    }
}
