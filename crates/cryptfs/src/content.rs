//! Content encryption: key derivation and per-block AES-256-GCM-SIV.
//!
//! The only module that touches keys. Why GCM-SIV with random nonces, and the
//! resulting bound on block writes per key, is argued in `docs/format.md`.

use pgcmk_crypto::aead::{AeadKey, Algorithm, NONCE_LEN, TAG_LEN};
use pgcmk_crypto::{kdf, random, SymmetricKey};

use crate::format::{block_aad, SlotHeader, FILE_ID_LEN};
use crate::Error;

/// The AEAD used for every block.
pub const ALGORITHM: Algorithm = Algorithm::Aes256GcmSiv;
const FILE_KEY_INFO: &[u8] = b"pgcmk-cryptfs/v2/file-content";
const KEY_CHECK_INFO: &[u8] = b"pgcmk-cryptfs/v2/key-check";
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

    /// Encrypts block `block` at generation `generation`: `out` (length
    /// `plain.len()` + overhead) receives nonce ‖ ciphertext ‖ tag, with a fresh
    /// random nonce.
    pub fn seal(
        &self,
        block: u64,
        generation: u64,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<(), Error> {
        let nonce: [u8; NONCE_LEN] = random::array()?;
        out[NONCE_LEN..NONCE_LEN + plain.len()].copy_from_slice(plain);
        self.seal_in_place(block, generation, &nonce, out)
    }

    /// Encrypts in place: `sealed` = space for the nonce ‖ plaintext ‖ space for the
    /// tag; on return it holds nonce ‖ ciphertext ‖ tag. The caller supplies a
    /// fresh random nonce (batched: one RNG call per write instead of per block).
    /// The AAD binds file, block, generation and plaintext length.
    pub fn seal_in_place(
        &self,
        block: u64,
        generation: u64,
        nonce: &[u8; NONCE_LEN],
        sealed: &mut [u8],
    ) -> Result<(), Error> {
        let body_len =
            sealed
                .len()
                .checked_sub(NONCE_LEN + TAG_LEN)
                .ok_or(Error::InvalidArgument(
                    "sealed block shorter than its overhead".into(),
                ))?;
        let header = slot_header(generation, body_len)?;
        let (nonce_out, rest) = sealed.split_at_mut(NONCE_LEN);
        let (body, tag_out) = rest.split_at_mut(body_len);
        nonce_out.copy_from_slice(nonce);
        let tag = self
            .key
            .seal_in_place(nonce, &block_aad(&self.file_id, block, &header), body)?;
        tag_out.copy_from_slice(&tag);
        Ok(())
    }

    /// Verifies and decrypts block `block` at generation `generation` (`sealed` =
    /// nonce ‖ ciphertext ‖ tag) into `out` (length `sealed.len()` − overhead). On
    /// failure `out` holds nothing usable.
    pub fn open(
        &self,
        block: u64,
        generation: u64,
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<(), Error> {
        let tampered = Error::Tampered { block };
        if sealed.len() <= NONCE_LEN + TAG_LEN || out.len() != sealed.len() - NONCE_LEN - TAG_LEN {
            return Err(tampered);
        }
        let header = slot_header(generation, out.len()).map_err(|_| Error::Tampered { block })?;
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::Tampered { block })?;
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Tampered { block })?;
        self.key
            .open_into(
                nonce,
                &block_aad(&self.file_id, block, &header),
                body,
                tag,
                out,
            )
            .map_err(|_| tampered)
    }
}

/// The slot header a sealed block of `plain_len` bytes at `generation` carries.
fn slot_header(generation: u64, plain_len: usize) -> Result<SlotHeader, Error> {
    let plain_len = u32::try_from(plain_len)
        .map_err(|_| Error::InvalidArgument("block longer than 4 GiB".into()))?;
    Ok(SlotHeader {
        generation,
        plain_len,
    })
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
        let mut sealed = vec![0u8; 100 + 28];
        cipher.seal(5, 3, &[0xAA; 100], &mut sealed).unwrap();
        let mut out = [0u8; 100];
        cipher.open(5, 3, &sealed, &mut out).unwrap();
        assert_eq!(out, [0xAA; 100]);
        // Another block number, generation, file or key: all rejected.
        assert!(cipher.open(6, 3, &sealed, &mut out).is_err());
        assert!(cipher.open(5, 4, &sealed, &mut out).is_err());
        let other_file = volume(7).file_cipher([3; 16]).unwrap();
        assert!(other_file.open(5, 3, &sealed, &mut out).is_err());
        let other_key = volume(8).file_cipher([2; 16]).unwrap();
        assert!(other_key.open(5, 3, &sealed, &mut out).is_err());
        // A truncated block is rejected too.
        assert!(cipher.open(5, 3, &sealed[..120], &mut out[..92]).is_err());
    }

    #[test]
    fn key_check_differs_per_key() {
        assert_ne!(
            volume(1).key_check_value().unwrap(),
            volume(2).key_check_value().unwrap()
        );
    }
}
