//! The repository key: a random 256-bit key per backup repository, wrapped by the
//! repository's KEK (RSA-OAEP-256, like the DEK) and stored beside the wrapped DEK:
//! the server's own repository's by the server's KEK, the geo-redundant copy's by
//! the geo key ([`crate::contract::ServerDir::wrapped_geo_backup_key`]). Each is
//! re-wrapped only when its own KEK rotates. pgBackRest's `repoN-cipher-pass` is its
//! hex form.
//!
//! Why not derived from the DEK: a pgBackRest repository's passphrase can never
//! change, so it must outlive a DEK rotation; a second repository (geo copy) must
//! be governed by its own key in its own vault, which a derivation from this
//! server's DEK cannot be; and a restore needs only the repository, its wrapped key
//! and the vault, not the source server's volume. `docs/threat-model.md` has the
//! whole argument.

use pgcmk_crypto::Dek;
use pgcmk_keyprovider::{KeyEncryptionKey, KeyVersionId, WrappedDek};
use zeroize::Zeroizing;

use std::path::Path;

use crate::contract::server_dir::{read_json, write_json_atomic};
use crate::Error;

/// Creates the server's repository key and stores it in `file` wrapped by `kek`,
/// unless it exists: a repository keeps one passphrase for its whole life. (A
/// highly available server's is made by the control plane before its nodes start,
/// so they never race to make two.)
pub(crate) fn ensure_wrapped(file: &Path, kek: &dyn KeyEncryptionKey) -> Result<(), Error> {
    if file.exists() {
        return Ok(());
    }
    let key = Dek::generate()?;
    let wrapped = kek.wrap(&key)?;
    write_json_atomic(file, &wrapped)?;
    tracing::info!("backup repository key created, wrapped by {}", wrapped.kek);
    Ok(())
}

/// Re-wraps the repository key stored in `file` with the key version `to` (for
/// the server's own repository, the one that wraps the DEK now; for the geo copy,
/// the geo key's current one) when another wraps it: no backup is rewritten, and
/// the version it was wrapped by is no longer needed for them. The old version it
/// moves from; `None` when there was nothing to do.
pub(crate) fn follow(
    file: &Path,
    kek: &dyn KeyEncryptionKey,
    to: &KeyVersionId,
) -> Result<Option<KeyVersionId>, Error> {
    let wrapped = read_wrapped(file)?;
    if &wrapped.kek == to {
        return Ok(None);
    }
    let key = kek.unwrap(&wrapped)?;
    let rewrapped = kek.wrap(&key)?;
    if &rewrapped.kek != to {
        return Err(Error::KeyMoved {
            wanted: Box::new(to.clone()),
            got: Box::new(rewrapped.kek),
        });
    }
    write_json_atomic(file, &rewrapped)?;
    tracing::info!(
        "backup repository key re-wrapped with {to} (was {})",
        wrapped.kek
    );
    Ok(Some(wrapped.kek))
}

/// The wrapped repository key stored in `file`.
pub(crate) fn read_wrapped(file: &Path) -> Result<WrappedDek, Error> {
    read_json(file)
}

/// The repository key stored in `file`, unwrapped through the vault.
pub(crate) fn unwrap(file: &Path, kek: &dyn KeyEncryptionKey) -> Result<Dek, Error> {
    Ok(kek.unwrap(&read_wrapped(file)?)?)
}

/// pgBackRest's passphrase for the repository whose key is `key`.
pub(crate) fn passphrase(key: &Dek) -> Zeroizing<String> {
    Zeroizing::new(hex::encode(key.expose_secret()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passphrase_is_the_whole_key_in_hex() {
        let key = Dek::from_slice(&[0xab; 32]).unwrap();
        assert_eq!(passphrase(&key).as_str(), "ab".repeat(32));
    }
}
