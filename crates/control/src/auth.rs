//! The DBA's credential for the control plane's REST API.
//!
//! On first start the control plane makes a random 256-bit token, writes it once
//! to `STATE/dba.credential` (0600) for the operator to hand to the DBA, and keeps
//! only a verifier of it (HKDF of the token) in the state store. Requests carry it
//! as `Authorization: Bearer TOKEN`; it is compared in constant time.

use std::path::{Path, PathBuf};

use pgcmk_crypto::{ct_eq, kdf, SecretBytes, SymmetricKey};

use crate::error::StoreError;
use crate::store::Store;
use crate::Error;

/// The credential file's name in the state directory.
pub const CREDENTIAL_FILE: &str = "dba.credential";
/// Settings: the verifier of the DBA's token.
const VERIFIER: &str = "dba-credential-verifier";
/// Token length in bytes (written as hex).
const TOKEN_LEN: usize = 32;

/// Checks presented DBA tokens.
pub struct DbaAuth {
    verifier: [u8; 32],
}

impl std::fmt::Debug for DbaAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbaAuth(REDACTED)")
    }
}

impl DbaAuth {
    /// Loads the verifier; on first start creates the token, writes it to
    /// `STATE/dba.credential` and returns that path too.
    pub fn open(state_dir: &Path, store: &Store) -> Result<(Self, Option<PathBuf>), Error> {
        if let Some(stored) = store.setting(VERIFIER)? {
            let verifier = stored.try_into().map_err(|_| {
                Error::Store(StoreError::Missing(
                    "the DBA credential's verifier is corrupt".into(),
                ))
            })?;
            return Ok((Self { verifier }, None));
        }
        let file = state_dir.join(CREDENTIAL_FILE);
        let token = new_token()?;
        let verifier = verifier_of(token.expose_secret()).ok_or_else(|| {
            Error::Store(StoreError::Missing(
                "a fresh DBA token did not have the expected form".into(),
            ))
        })?;
        if file.exists() {
            return Err(Error::Store(StoreError::Foreign(format!(
                "{} exists but this state has no DBA credential: it belongs to another state \
                 directory; move it away and start again",
                file.display()
            ))));
        }
        pgcmk_hostkeys::files::write_new_private(&file, &[token.expose_secret(), b"\n"].concat())?;
        store.put_settings(&[(VERIFIER, &verifier)])?;
        Ok((Self { verifier }, Some(file)))
    }

    /// True when `token` is the DBA's.
    pub fn allows(&self, token: &[u8]) -> bool {
        verifier_of(token).is_some_and(|v| ct_eq(&v, &self.verifier))
    }
}

/// A fresh random credential: 256 bits, written as 64 hex characters.
pub(crate) fn new_token() -> Result<SecretBytes, Error> {
    let key = SymmetricKey::generate()?;
    let hex: String = key
        .expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(SecretBytes::new(hex.into_bytes()))
}

/// The verifier of a DBA token of the right form (64 hex characters), else `None`.
fn verifier_of(token: &[u8]) -> Option<[u8; 32]> {
    verifier_for(token, b"dba-api-credential")
}

/// The verifier of a token of the right form (64 hex characters) for `purpose`
/// (which binds it to one use, and for a host to that host's name), else `None`.
pub(crate) fn verifier_for(token: &[u8], purpose: &[u8]) -> Option<[u8; 32]> {
    if token.len() != TOKEN_LEN * 2 {
        return None;
    }
    let mut bytes = [0u8; TOKEN_LEN];
    for (out, pair) in bytes.iter_mut().zip(token.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *out = u8::from_str_radix(pair, 16).ok()?;
    }
    let key = SymmetricKey::from_bytes(bytes);
    let verifier = kdf::derive_key(&key, b"pgcmk-control-v1", purpose).ok()?;
    Some(*verifier.expose_secret())
}

/// Reads the DBA's token from its credential file.
pub fn read_credential(path: &Path) -> Result<SecretBytes, Error> {
    let bytes = SecretBytes::new(std::fs::read(path).map_err(|e| {
        Error::Unauthorized(format!(
            "cannot read the DBA credential {} ({e}): set PGCMK_CONTROL_DIR to the directory \
             holding it (the control plane's state directory, or where its files were handed \
             to you), or pass --credential-file: the dba.credential file `pgcmk serve` wrote \
             on first start",
            path.display()
        ))
    })?);
    let token = bytes.expose_secret().trim_ascii();
    if verifier_of(token).is_none() {
        let looks_like = if token.starts_with(b"{") {
            " (it is a JSON file: a managed identity's credential, which belongs to `pgcmk \
             server create --identity-credential-file`)"
        } else {
            ""
        };
        return Err(Error::Unauthorized(format!(
            "{} is not a DBA credential{looks_like}: use the dba.credential file `pgcmk serve` \
             wrote in its state directory (64 hex characters)",
            path.display()
        )));
    }
    Ok(SecretBytes::new(token.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_is_written_once_and_only_its_verifier_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let (auth, created) = DbaAuth::open(dir.path(), &store).unwrap();
        drop(store);
        let file = created.expect("created on first start");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let token = read_credential(&file).unwrap();
        assert_eq!(token.len(), 64);
        assert!(auth.allows(token.expose_secret()));
        let mut wrong = token.expose_secret().to_vec();
        wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
        for bad in [&wrong[..], b"", &token.expose_secret()[..63], b"Bearer x"] {
            assert!(!auth.allows(bad));
        }
        // The store never holds the token itself.
        let db = std::fs::read(dir.path().join("state.redb")).unwrap();
        assert!(!db.windows(64).any(|w| w == token.expose_secret()));
        // The next start finds the verifier; the file may have been handed over.
        std::fs::remove_file(&file).unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let (auth, created) = DbaAuth::open(dir.path(), &store).unwrap();
        assert!(created.is_none());
        assert!(auth.allows(token.expose_secret()));
        assert!(format!("{auth:?}").contains("REDACTED"));
    }
}
