//! Content encryption: key derivation and per-block AES-256-GCM-SIV.
//!
//! The only module that touches keys. Why GCM-SIV with random nonces, and the
//! resulting bound on block writes per key, is argued in `docs/format.md`.

use pgcmk_crypto::aead::{AeadKey, Algorithm, NONCE_LEN, TAG_LEN};
use pgcmk_crypto::{kdf, SymmetricKey};

use crate::format::{block_aad, SlotEntry, FILE_ID_LEN};
use crate::Error;

/// The AEAD used for every block.
pub const ALGORITHM: Algorithm = Algorithm::Aes256GcmSiv;
const FILE_KEY_INFO: &[u8] = b"pgcmk-cryptfs/v3/file-content";
const KEY_CHECK_INFO: &[u8] = b"pgcmk-cryptfs/v3/key-check";
/// Length of a volume identifier.
pub const VOLUME_ID_LEN: usize = 16;

/// The master key of one cipher directory together with its volume id.
#[derive(Clone)]
pub struct VolumeKey {
    master: SymmetricKey,
    volume_id: [u8; VOLUME_ID_LEN],
}

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKey(REDACTED)")
    }
}

impl VolumeKey {
    /// Binds `master` to the volume `volume_id`.
    pub fn new(master: SymmetricKey, volume_id: [u8; VOLUME_ID_LEN]) -> Self {
        Self { master, volume_id }
    }

    /// 32 bytes that prove knowledge of the key without revealing it (an HKDF output).
    pub fn key_check_value(&self) -> Result<[u8; 32], Error> {
        let mut out = [0u8; 32];
        kdf::expand_into(&self.master, &self.volume_id, KEY_CHECK_INFO, &mut out)?;
        Ok(out)
    }

    /// The cipher for the file with identifier `file_id`.
    pub fn file_cipher(&self, file_id: [u8; FILE_ID_LEN]) -> Result<FileCipher, Error> {
        let mut salt = [0u8; VOLUME_ID_LEN + FILE_ID_LEN];
        salt[..VOLUME_ID_LEN].copy_from_slice(&self.volume_id);
        salt[VOLUME_ID_LEN..].copy_from_slice(&file_id);
        let file_key = kdf::derive_key(&self.master, &salt, FILE_KEY_INFO)?;
        Ok(FileCipher {
            key: AeadKey::new(ALGORITHM, &file_key)?,
            file_id,
        })
    }
}

/// Seals and opens the blocks of one file.
#[derive(Debug)]
pub struct FileCipher {
    key: AeadKey,
    file_id: [u8; FILE_ID_LEN],
}

impl FileCipher {
    /// The file's identifier.
    pub fn file_id(&self) -> &[u8; FILE_ID_LEN] {
        &self.file_id
    }

    /// Encrypts `page` (the plaintext of block `block`, at generation `generation`)
    /// in place and returns the tag. The caller supplies a fresh random nonce
    /// (batched: one RNG call per write instead of per block). The AAD binds file,
    /// block, generation and plaintext length.
    pub fn seal_in_place(
        &self,
        block: u64,
        generation: u64,
        nonce: &[u8; NONCE_LEN],
        page: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        let aad = block_aad(&self.file_id, block, generation, plain_len(page.len())?);
        Ok(self.key.seal_in_place(nonce, &aad, page)?)
    }

    /// Verifies and decrypts one version of block `block` (ciphertext, with its
    /// nonce and tag from `entry`) into `out` (same length as `ciphertext`). On
    /// failure `out` holds nothing usable.
    pub fn open(
        &self,
        block: u64,
        entry: &SlotEntry,
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<(), Error> {
        let tampered = || Error::Tampered { block };
        if entry.is_empty() || ciphertext.is_empty() || out.len() != ciphertext.len() {
            return Err(tampered());
        }
        let len = plain_len(ciphertext.len()).map_err(|_| tampered())?;
        let aad = block_aad(&self.file_id, block, entry.generation, len);
        self.key
            .open_into(&entry.nonce, &aad, ciphertext, &entry.tag, out)
            .map_err(|_| tampered())
    }
}

/// A block's plaintext length as stored in its entry.
fn plain_len(len: usize) -> Result<u32, Error> {
    u32::try_from(len).map_err(|_| Error::InvalidArgument("block longer than 4 GiB".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(byte: u8) -> VolumeKey {
        VolumeKey::new(SymmetricKey::from_bytes([byte; 32]), [1; 16])
    }

    #[test]
    fn seal_open_and_binding() {
        let cipher = volume(7).file_cipher([2; 16]).unwrap();
        let nonce = [5u8; NONCE_LEN];
        let mut page = [0xAAu8; 100];
        let tag = cipher.seal_in_place(5, 3, &nonce, &mut page).unwrap();
        assert_ne!(page, [0xAA; 100]);
        let entry = SlotEntry {
            generation: 3,
            plain_len: 100,
            nonce,
            tag,
        };
        let mut out = [0u8; 100];
        cipher.open(5, &entry, &page, &mut out).unwrap();
        assert_eq!(out, [0xAA; 100]);
        // Another block number, generation, nonce, tag, file or key: all rejected.
        assert!(cipher.open(6, &entry, &page, &mut out).is_err());
        let older = SlotEntry {
            generation: 4,
            ..entry
        };
        assert!(cipher.open(5, &older, &page, &mut out).is_err());
        let mut bad_tag = entry;
        bad_tag.tag[0] ^= 1;
        assert!(cipher.open(5, &bad_tag, &page, &mut out).is_err());
        let mut bad_nonce = entry;
        bad_nonce.nonce[0] ^= 1;
        assert!(cipher.open(5, &bad_nonce, &page, &mut out).is_err());
        let other_file = volume(7).file_cipher([3; 16]).unwrap();
        assert!(other_file.open(5, &entry, &page, &mut out).is_err());
        let other_key = volume(8).file_cipher([2; 16]).unwrap();
        assert!(other_key.open(5, &entry, &page, &mut out).is_err());
        // A truncated block is rejected too (the length is in the AAD).
        assert!(cipher.open(5, &entry, &page[..92], &mut out[..92]).is_err());
    }

    #[test]
    fn key_check_differs_per_key() {
        assert_ne!(
            volume(1).key_check_value().unwrap(),
            volume(2).key_check_value().unwrap()
        );
    }
}
