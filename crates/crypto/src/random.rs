//! Random bytes from the system CSPRNG (via aws-lc).

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::Error;

/// Fills `buf` with cryptographically secure random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), Error> {
    SystemRandom::new().fill(buf).map_err(|_| Error::Random)
}

/// Returns `N` cryptographically secure random bytes.
pub fn array<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// Returns `n` random bytes as lowercase hex (2n characters): identifiers, not secrets.
pub fn hex_id(n: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; n];
    fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_draws_differ_and_ids_are_hex() {
        assert_ne!(array::<32>().unwrap(), array::<32>().unwrap());
        let id = hex_id(16).unwrap();
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}
