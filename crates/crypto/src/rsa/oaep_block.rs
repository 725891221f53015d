//! EME-OAEP decoding (RFC 8017 §7.1.2) of a block that a token decrypted with raw
//! RSA: for tokens whose `CKM_RSA_PKCS_OAEP` lacks SHA-256 (SoftHSM 2.6), the
//! private-key operation stays in the token and only the unpadding runs here.
//!
//! Every check runs over the whole block without branching on secret bytes, and
//! every failure is the same [`Error::Authentication`]: a caller that tells failures
//! apart would hand out Manger's padding oracle.

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use super::EncryptionAlgorithm;
use crate::{Error, SecretBytes};

/// The message inside `block` (the raw RSA decryption, as long as the modulus),
/// OAEP-decoded for `algorithm` with an empty label.
pub fn oaep_decode(algorithm: EncryptionAlgorithm, block: &[u8]) -> Result<SecretBytes, Error> {
    let hash = match algorithm {
        EncryptionAlgorithm::RsaOaep256 => &digest::SHA256,
        EncryptionAlgorithm::RsaOaep => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        EncryptionAlgorithm::Rsa1_5 => {
            return Err(Error::Unsupported("RSA1_5 is not OAEP"));
        }
    };
    let h = hash.output_len();
    if block.len() < 2 * h + 2 {
        return Err(Error::Authentication);
    }
    let (masked_seed, masked_db) = block[1..].split_at(h);
    let mut seed = Zeroizing::new(masked_seed.to_vec());
    xor_mgf1(hash, masked_db, &mut seed);
    let mut db = Zeroizing::new(masked_db.to_vec());
    xor_mgf1(hash, &seed, &mut db);
    let empty_label = digest::digest(hash, b"");
    // 0 when all is well; any other bit set marks a bad block.
    let mut bad = u32::from(block[0]);
    for (a, b) in db[..h].iter().zip(empty_label.as_ref()) {
        bad |= u32::from(a ^ b);
    }
    // Past the label hash: zeros, one 0x01, the message.
    let (mut start, mut found) = (0usize, 0u32);
    for (i, &byte) in db.iter().enumerate().skip(h) {
        let is_one = eq_mask(u32::from(byte), 1);
        let is_zero = eq_mask(u32::from(byte), 0);
        let first_one = is_one & !found;
        start |= (i + 1) & (first_one as usize);
        // A byte other than 0 before the 0x01 spoils the block.
        bad |= !found & !is_one & !is_zero & 1;
        found |= is_one;
    }
    bad |= !found & 1;
    if bad != 0 {
        return Err(Error::Authentication);
    }
    Ok(SecretBytes::new(db[start..].to_vec()))
}

/// All ones when `a == b`, else zero, without a branch.
fn eq_mask(a: u32, b: u32) -> u32 {
    let x = a ^ b;
    // x == 0 ⇔ (x | -x) has its top bit clear.
    (((x | x.wrapping_neg()) >> 31) & 1).wrapping_sub(1)
}

/// `out ^= MGF1(seed)` over `out`'s length.
fn xor_mgf1(hash: &'static digest::Algorithm, seed: &[u8], out: &mut [u8]) {
    for (counter, chunk) in out.chunks_mut(hash.output_len()).enumerate() {
        let mut ctx = digest::Context::new(hash);
        ctx.update(seed);
        ctx.update(&(counter as u32).to_be_bytes());
        for (o, m) in chunk.iter_mut().zip(ctx.finish().as_ref()) {
            *o ^= m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_that_are_not_oaep_are_refused_alike() {
        for block in [vec![0u8; 256], vec![1u8; 256], vec![0u8; 10]] {
            assert!(matches!(
                oaep_decode(EncryptionAlgorithm::RsaOaep256, &block),
                Err(Error::Authentication)
            ));
        }
    }

    #[test]
    fn the_mask_is_all_ones_exactly_when_equal() {
        assert_eq!(eq_mask(7, 7), u32::MAX);
        assert_eq!(eq_mask(7, 6), 0);
        assert_eq!(eq_mask(0, 0x8000_0000), 0);
    }
}
