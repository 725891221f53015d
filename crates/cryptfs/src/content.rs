//! Content encryption: key derivation and per-block AES-256-GCM-SIV.
//!
//! The only module that touches keys. Why GCM-SIV with random nonces, and the
//! resulting bound on block writes per key, is argued in `docs/format.md`.

use pgcmk_crypto::aead::{AeadKey, Algorithm, NONCE_LEN, TAG_LEN};
use pgcmk_crypto::{kdf, SymmetricKey};

use crate::format::{block_aad, FileHeader, SlotEntry, FILE_ID_LEN, HOLE_FLAG};
use crate::Error;

/// The AEAD used for every block.
pub const ALGORITHM: Algorithm = Algorithm::Aes256GcmSiv;
/// The labels keep "v3": format v4 changed no key, so v3 volumes keep theirs.
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

    /// The cipher for the file with header `header` (its id and format version).
    pub fn file_cipher(&self, header: FileHeader) -> Result<FileCipher, Error> {
        let mut salt = [0u8; VOLUME_ID_LEN + FILE_ID_LEN];
        salt[..VOLUME_ID_LEN].copy_from_slice(&self.volume_id);
        salt[VOLUME_ID_LEN..].copy_from_slice(&header.file_id);
        let file_key = kdf::derive_key(&self.master, &salt, FILE_KEY_INFO)?;
        Ok(FileCipher {
            key: AeadKey::new(ALGORITHM, &file_key)?,
            header,
        })
    }
}

/// Seals and opens the blocks of one file.
#[derive(Debug)]
pub struct FileCipher {
    key: AeadKey,
    header: FileHeader,
}

impl FileCipher {
    /// The file's identifier.
    pub fn file_id(&self) -> &[u8; FILE_ID_LEN] {
        &self.header.file_id
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
        let aad = block_aad(&self.header, block, generation, plain_len(page.len())?);
        Ok(self.key.seal_in_place(nonce, &aad, page)?)
    }

    /// The tag of a hole: version `generation` of block `block` is `len` zeros
    /// (1..=4096). It seals an empty plaintext under AAD whose length field carries
    /// [`HOLE_FLAG`], so it can stand for no data version, and no data version for it.
    pub fn seal_hole(
        &self,
        block: u64,
        generation: u64,
        nonce: &[u8; NONCE_LEN],
        len: u32,
    ) -> Result<[u8; TAG_LEN], Error> {
        let aad = block_aad(&self.header, block, generation, len | HOLE_FLAG);
        Ok(self.key.seal_in_place(nonce, &aad, &mut [])?)
    }

    /// Verifies a hole entry of block `block`: its tag vouches for `plain_len`
    /// zeros, and there is no ciphertext.
    pub fn verify_hole(&self, block: u64, entry: &SlotEntry) -> Result<(), Error> {
        let aad = block_aad(&self.header, block, entry.generation, entry.stored_len());
        if !entry.hole || entry.is_empty() {
            return Err(Error::Tampered { block });
        }
        self.key
            .open_into(&entry.nonce, &aad, &[], &entry.tag, &mut [])
            .map_err(|_| Error::Tampered { block })
    }

    /// Verifies and decrypts one version of block `block` (ciphertext, with its
    /// nonce and tag from `entry`) into `out` (same length as `ciphertext`). A hole
    /// entry is verified alone and fills `out` with zeros (callers pass the zeros
    /// its data page holds, which are ignored). On failure `out` holds nothing
    /// usable.
    pub fn open(
        &self,
        block: u64,
        entry: &SlotEntry,
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<(), Error> {
        let tampered = || Error::Tampered { block };
        if entry.is_empty() || out.len() != ciphertext.len() {
            return Err(tampered());
        }
        if entry.hole {
            self.verify_hole(block, entry)?;
            out.fill(0);
            return Ok(());
        }
        if ciphertext.is_empty() {
            return Err(tampered());
        }
        let len = plain_len(ciphertext.len()).map_err(|_| tampered())?;
        let aad = block_aad(&self.header, block, entry.generation, len);
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

    fn header(id: u8) -> FileHeader {
        FileHeader {
            version: crate::format::FORMAT_VERSION,
            file_id: [id; 16],
        }
    }

    #[test]
    fn seal_open_and_binding() {
        let cipher = volume(7).file_cipher(header(2)).unwrap();
        let nonce = [5u8; NONCE_LEN];
        let mut page = [0xAAu8; 100];
        let tag = cipher.seal_in_place(5, 3, &nonce, &mut page).unwrap();
        assert_ne!(page, [0xAA; 100]);
        let entry = SlotEntry {
            generation: 3,
            plain_len: 100,
            hole: false,
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
        let other_file = volume(7).file_cipher(header(3)).unwrap();
        assert!(other_file.open(5, &entry, &page, &mut out).is_err());
        let other_key = volume(8).file_cipher(header(2)).unwrap();
        assert!(other_key.open(5, &entry, &page, &mut out).is_err());
        // A truncated block is rejected too (the length is in the AAD).
        assert!(cipher.open(5, &entry, &page[..92], &mut out[..92]).is_err());
        // The data version's tag does not make it a hole, nor a hole's tag data.
        let as_hole = SlotEntry {
            hole: true,
            ..entry
        };
        assert!(cipher.open(5, &as_hole, &[0; 100], &mut out).is_err());
        let hole = SlotEntry {
            hole: true,
            tag: cipher.seal_hole(5, 3, &nonce, 100).unwrap(),
            ..entry
        };
        out.fill(1);
        cipher.open(5, &hole, &[0; 100], &mut out).unwrap();
        assert_eq!(out, [0; 100]);
        let as_data = SlotEntry {
            hole: false,
            ..hole
        };
        assert!(cipher.open(5, &as_data, &[0; 100], &mut out).is_err());
        assert!(cipher.open(6, &hole, &[0; 100], &mut out).is_err());
        let shorter = SlotEntry {
            plain_len: 99,
            ..hole
        };
        assert!(cipher.open(5, &shorter, &[0; 99], &mut out[..99]).is_err());
    }

    #[test]
    fn key_check_differs_per_key() {
        assert_ne!(
            volume(1).key_check_value().unwrap(),
            volume(2).key_check_value().unwrap()
        );
    }
}
