//! On-disk layout of one encrypted file: header, block geometry, size arithmetic.
//!
//! ```text
//! [header 24 B][block 0: nonce 12 | ciphertext ≤ 4096 | tag 16][block 1] ...
//! ```
//! Every block but the last holds exactly [`BLOCK_SIZE`] plaintext bytes, so the
//! plaintext size follows from the cipher file size alone (see `docs/format.md`).

use crate::Error;
use pgcmk_crypto::aead::{NONCE_LEN, TAG_LEN};

/// Plaintext bytes per block.
pub const BLOCK_SIZE: u64 = 4096;
/// Ciphertext overhead per block: nonce + tag.
pub const BLOCK_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Cipher bytes of a full block.
pub const CIPHER_BLOCK_SIZE: u64 = BLOCK_SIZE + BLOCK_OVERHEAD;
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Magic bytes opening every encrypted file.
pub const FILE_MAGIC: [u8; 6] = *b"PGCMKF";
/// Length of the random per-file identifier.
pub const FILE_ID_LEN: usize = 16;
/// Length of the file header.
pub const HEADER_LEN: u64 = 24;
/// Largest plaintext size (keeps every offset computation far from u64 overflow).
pub const MAX_PLAIN_SIZE: u64 = 1 << 50;

/// The header at the start of every non-empty encrypted file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Random identifier: salt of the file key and part of every block's AAD.
    pub file_id: [u8; FILE_ID_LEN],
}

impl FileHeader {
    /// Serialises the header (magic, version, file id).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[..6].copy_from_slice(&FILE_MAGIC);
        out[6..8].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[8..].copy_from_slice(&self.file_id);
        out
    }

    /// Parses and validates a header.
    pub fn parse(bytes: &[u8; HEADER_LEN as usize]) -> Result<Self, Error> {
        if bytes[..6] != FILE_MAGIC {
            return Err(Error::BadHeader("bad magic"));
        }
        if u16::from_be_bytes([bytes[6], bytes[7]]) != FORMAT_VERSION {
            return Err(Error::BadHeader("unsupported format version"));
        }
        let mut file_id = [0u8; FILE_ID_LEN];
        file_id.copy_from_slice(&bytes[8..]);
        Ok(Self { file_id })
    }
}

/// Associated data of block `block` of file `file_id`: version ‖ file id ‖ block number.
pub fn block_aad(file_id: &[u8; FILE_ID_LEN], block: u64) -> [u8; 26] {
    let mut aad = [0u8; 26];
    aad[..2].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    aad[2..18].copy_from_slice(file_id);
    aad[18..].copy_from_slice(&block.to_be_bytes());
    aad
}

/// Offset in the cipher file where block `block` starts.
pub fn cipher_offset(block: u64) -> u64 {
    HEADER_LEN + block * CIPHER_BLOCK_SIZE
}

/// Cipher file size holding `plain` plaintext bytes (0 stays 0: no header yet).
pub fn cipher_size(plain: u64) -> u64 {
    if plain == 0 {
        return 0;
    }
    let full = plain / BLOCK_SIZE;
    let rest = plain % BLOCK_SIZE;
    cipher_offset(full) + if rest == 0 { 0 } else { rest + BLOCK_OVERHEAD }
}

/// Plaintext size of a cipher file of `cipher` bytes.
///
/// `Err` when no valid file has that size (a truncated header or a last block shorter
/// than its overhead); the caller treats the tail as damaged.
pub fn plain_size(cipher: u64) -> Result<u64, Error> {
    if cipher == 0 {
        return Ok(0);
    }
    let body = cipher
        .checked_sub(HEADER_LEN)
        .ok_or(Error::BadHeader("file shorter than its header"))?;
    let full = body / CIPHER_BLOCK_SIZE;
    let rest = body % CIPHER_BLOCK_SIZE;
    match rest {
        0 => Ok(full * BLOCK_SIZE),
        r if r > BLOCK_OVERHEAD => Ok(full * BLOCK_SIZE + r - BLOCK_OVERHEAD),
        _ => Err(Error::Tampered { block: full }),
    }
}

/// Plaintext size to report for a cipher file of `cipher` bytes: exact for valid
/// sizes; for a damaged tail, one byte into the damaged block so reads of it fail
/// loudly instead of the file silently looking shorter.
pub fn reported_plain_size(cipher: u64) -> u64 {
    match plain_size(cipher) {
        Ok(size) => size,
        Err(Error::Tampered { block }) => block * BLOCK_SIZE + 1,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        for plain in [0, 1, 4095, 4096, 4097, 8192, 10_000, 1 << 30] {
            let cipher = cipher_size(plain);
            assert_eq!(plain_size(cipher).unwrap(), plain, "plain {plain}");
        }
        assert_eq!(cipher_size(1), 24 + 1 + 28);
        assert_eq!(cipher_size(4096), 24 + 4124);
    }

    #[test]
    fn impossible_sizes_are_errors() {
        assert!(plain_size(10).is_err());
        assert!(matches!(
            plain_size(HEADER_LEN + 28),
            Err(Error::Tampered { block: 0 })
        ));
        assert!(matches!(
            plain_size(HEADER_LEN + CIPHER_BLOCK_SIZE + 5),
            Err(Error::Tampered { block: 1 })
        ));
        assert_eq!(
            reported_plain_size(HEADER_LEN + CIPHER_BLOCK_SIZE + 5),
            4097
        );
    }

    #[test]
    fn header_round_trip_and_rejects() {
        let header = FileHeader { file_id: [9; 16] };
        let bytes = header.to_bytes();
        assert_eq!(FileHeader::parse(&bytes).unwrap(), header);
        let mut bad = bytes;
        bad[0] ^= 1;
        assert!(FileHeader::parse(&bad).is_err());
        let mut newer = bytes;
        newer[7] = 2;
        assert!(FileHeader::parse(&newer).is_err());
    }
}
