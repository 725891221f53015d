//! PKCS#11 URIs (RFC 7512) naming a private key object in a token, and the module
//! that reaches the token:
//! `pkcs11:token=TOKEN;object=LABEL[;id=%01%02][;type=private]?module-path=/abs/module.so`.
//!
//! Only the attributes pgcmk uses are accepted; anything else (a `pin-value`
//! above all: a PIN does not belong in a string that is stored and shown) is
//! refused with what to do instead.

use std::fmt;
use std::path::PathBuf;

use pgcmk_akv_model::InvalidKeyId;

/// A key object in a token, as a server is configured with it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pkcs11KeyReference {
    /// The token's label (`CKA_LABEL` of the token, `token=`).
    pub token: String,
    /// The key pair's label (`object=`).
    pub object: String,
    /// The key's `CKA_ID` (`id=`), when several private keys share the label;
    /// `None` names the one private key labelled `object`. Either way the wrapped
    /// DEK records the id it was wrapped with, and is unwrapped with that object.
    pub id: Option<Vec<u8>>,
    /// The PKCS#11 module (shared library) that reaches the token (`module-path=`).
    pub module_path: PathBuf,
}

/// One exact key object: what wrapped a DEK. The module is not part of it: the
/// same token may be reached through another path to the module.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pkcs11KeyVersion {
    /// The token's label.
    pub token: String,
    /// The key's label.
    pub object: String,
    /// The key's `CKA_ID`.
    pub id: Vec<u8>,
}

const FORM: &str = "pkcs11:token=TOKEN;object=LABEL[;id=%HH..]?module-path=/path/to/module.so";

fn invalid(uri: &str, why: &str) -> InvalidKeyId {
    let shown: String = uri
        .split('?')
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    InvalidKeyId {
        reason: format!("PKCS#11 URI '{shown}' is not valid: {why}; expected {FORM}"),
    }
}

/// The path attributes of a URI, decoded.
#[derive(Default)]
struct PathAttributes {
    token: Option<String>,
    object: Option<String>,
    id: Option<Vec<u8>>,
}

fn parse_path(uri: &str, path: &str) -> Result<PathAttributes, InvalidKeyId> {
    let mut out = PathAttributes::default();
    for attribute in path.split(';').filter(|a| !a.is_empty()) {
        let (name, value) = attribute
            .split_once('=')
            .ok_or_else(|| invalid(uri, &format!("attribute '{attribute}' has no '='")))?;
        let bytes = pct_decode(value)
            .ok_or_else(|| invalid(uri, &format!("the value of '{name}' has a bad %-escape")))?;
        let text = || {
            String::from_utf8(bytes.clone())
                .map_err(|_| invalid(uri, &format!("the value of '{name}' is not UTF-8")))
        };
        let slot = match name {
            "token" => out.token.replace(text()?).is_some(),
            "object" => out.object.replace(text()?).is_some(),
            "id" => out.id.replace(bytes.clone()).is_some(),
            "type" if text()? == "private" => false,
            "type" => return Err(invalid(uri, "type must be 'private' (the RSA private key)")),
            other => {
                return Err(invalid(
                    uri,
                    &format!("attribute '{other}' is not supported (use token, object, id)"),
                ))
            }
        };
        if slot {
            return Err(invalid(uri, &format!("attribute '{name}' appears twice")));
        }
    }
    Ok(out)
}

impl PathAttributes {
    fn names(self, uri: &str) -> Result<(String, String), InvalidKeyId> {
        let token = self.token.filter(|t| !t.is_empty());
        let object = self.object.filter(|o| !o.is_empty());
        match (token, object) {
            (Some(t), Some(o)) => Ok((t, o)),
            (None, _) => Err(invalid(uri, "the token label (token=) is missing")),
            (_, None) => Err(invalid(uri, "the key label (object=) is missing")),
        }
    }
}

impl Pkcs11KeyReference {
    /// Parses a URI of the form in the module docs.
    pub fn parse(uri: &str) -> Result<Self, InvalidKeyId> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| invalid(uri, "it must start with pkcs11:"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let attributes = parse_path(uri, path)?;
        let mut module_path = None;
        for attribute in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attribute.split_once('=').unwrap_or((attribute, ""));
            match name {
                "module-path" => {
                    let decoded = pct_decode(value)
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| invalid(uri, "module-path has a bad %-escape"))?;
                    if module_path.replace(PathBuf::from(decoded)).is_some() {
                        return Err(invalid(uri, "module-path appears twice"));
                    }
                }
                "pin-value" | "pin-source" => {
                    return Err(invalid(
                        uri,
                        "a PIN is never part of the key URI: give it in a file of mode 0600 \
                         (--identity-credential-file)",
                    ))
                }
                other => {
                    return Err(invalid(
                        uri,
                        &format!("query attribute '{other}' is not supported (use module-path)"),
                    ))
                }
            }
        }
        let module_path = module_path
            .ok_or_else(|| invalid(uri, "module-path is missing (the token's PKCS#11 module)"))?;
        if !module_path.is_absolute() {
            return Err(invalid(uri, "module-path must be an absolute path"));
        }
        let id = attributes.id.clone();
        let (token, object) = attributes.names(uri)?;
        Ok(Self {
            token,
            object,
            id,
            module_path,
        })
    }
}

impl Pkcs11KeyVersion {
    /// Parses a version as [`fmt::Display`] writes it (no query; `id` required).
    pub fn parse(uri: &str) -> Result<Self, InvalidKeyId> {
        let path = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| invalid(uri, "it must start with pkcs11:"))?;
        if path.contains('?') {
            return Err(invalid(uri, "a key version has no query attributes"));
        }
        let attributes = parse_path(uri, path)?;
        let id = attributes
            .id
            .clone()
            .ok_or_else(|| invalid(uri, "a key version needs the key's id (id=)"))?;
        let (token, object) = attributes.names(uri)?;
        Ok(Self { token, object, id })
    }
}

/// Decodes `%HH` escapes; `None` on a malformed one.
fn pct_decode(value: &str) -> Option<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Writes `bytes` with everything but RFC 3986 unreserved characters (and `/` in
/// paths, as RFC 7512 allows) %-escaped; `all` escapes every byte (for ids).
fn pct_encode(f: &mut fmt::Formatter<'_>, bytes: &[u8], all: bool) -> fmt::Result {
    for &b in bytes {
        let plain = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/');
        if plain && !all {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "%{b:02x}")?;
        }
    }
    Ok(())
}

fn write_path(
    f: &mut fmt::Formatter<'_>,
    token: &str,
    object: &str,
    id: Option<&[u8]>,
) -> fmt::Result {
    f.write_str("pkcs11:token=")?;
    pct_encode(f, token.as_bytes(), false)?;
    f.write_str(";object=")?;
    pct_encode(f, object.as_bytes(), false)?;
    if let Some(id) = id {
        f.write_str(";id=")?;
        pct_encode(f, id, true)?;
    }
    Ok(())
}

impl fmt::Display for Pkcs11KeyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_path(f, &self.token, &self.object, self.id.as_deref())?;
        f.write_str("?module-path=")?;
        pct_encode(f, self.module_path.to_string_lossy().as_bytes(), false)
    }
}

impl fmt::Display for Pkcs11KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_path(f, &self.token, &self.object, Some(&self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "?module-path=/usr/lib/softhsm/libsofthsm2.so";

    #[test]
    fn parses_rfc7512_attributes_with_escapes() {
        let r = Pkcs11KeyReference::parse(&format!(
            "pkcs11:type=private;token=my%20token;object=kek;id=%01%FF{M}"
        ))
        .unwrap();
        assert_eq!(r.token, "my token");
        assert_eq!(r.object, "kek");
        assert_eq!(r.id.as_deref(), Some(&[1u8, 255][..]));
        assert_eq!(
            r.module_path,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(
            r.to_string(),
            format!("pkcs11:token=my%20token;object=kek;id=%01%ff{M}")
        );
        let v = Pkcs11KeyVersion::parse("pkcs11:token=t;object=o;id=%0a").unwrap();
        assert_eq!(
            (v.id.as_slice(), v.to_string().as_str()),
            (&[10u8][..], "pkcs11:token=t;object=o;id=%0a")
        );
    }

    #[test]
    fn rejects_what_it_cannot_use_saying_why() {
        for (uri, why) in [
            ("pkcs11:object=k?module-path=/m.so", "token label"),
            ("pkcs11:token=t?module-path=/m.so", "key label"),
            ("pkcs11:token=t;object=k", "module-path is missing"),
            ("pkcs11:token=t;object=k?module-path=m.so", "absolute"),
            (
                "pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234",
                "never part",
            ),
            (
                "pkcs11:token=t;object=k?pin-source=file:/p&module-path=/m.so",
                "never part",
            ),
            (
                "pkcs11:token=t;object=k;slot-id=1?module-path=/m.so",
                "slot-id",
            ),
            (
                "pkcs11:token=t;object=k;type=cert?module-path=/m.so",
                "private",
            ),
            ("pkcs11:token=t;token=u;object=k?module-path=/m.so", "twice"),
            (
                "pkcs11:token=t;object=k;id=%zz?module-path=/m.so",
                "%-escape",
            ),
            (
                "pkcs11:token=t;object=k;id=%1?module-path=/m.so",
                "%-escape",
            ),
            ("pkcs11:token=t;object?module-path=/m.so", "no '='"),
        ] {
            let err = Pkcs11KeyReference::parse(uri).unwrap_err().reason;
            assert!(err.contains(why), "{uri}: {err}");
            assert!(!err.contains("1234"), "the PIN is echoed: {err}");
        }
        assert!(Pkcs11KeyVersion::parse("pkcs11:token=t;object=o").is_err());
        assert!(Pkcs11KeyVersion::parse("pkcs11:token=t;object=o;id=%01?module-path=/m").is_err());
    }
}
