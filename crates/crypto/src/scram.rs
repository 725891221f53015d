//! PostgreSQL's SCRAM-SHA-256 password verifier (RFC 5802, RFC 7677): what
//! PostgreSQL stores for a role instead of its password. Setting a role's
//! password to a verifier computed here means the password itself never reaches
//! PostgreSQL (nor a statement it could log).

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::{random, Error};

/// PBKDF2 iterations, PostgreSQL's default (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;
/// Salt length in bytes, PostgreSQL's.
const SALT_LEN: usize = 16;

/// The verifier of `password` with a new random salt:
/// `SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY`. `password` is used as is:
/// PostgreSQL applies SASLprep, which leaves printable ASCII unchanged.
pub fn verifier(password: &[u8]) -> Result<String, Error> {
    verifier_with_salt(password, &random::array::<SALT_LEN>()?, ITERATIONS)
}

fn verifier_with_salt(password: &[u8], salt: &[u8], iterations: u32) -> Result<String, Error> {
    let rounds = std::num::NonZeroU32::new(iterations)
        .ok_or(Error::Unsupported("SCRAM with zero iterations"))?;
    let mut salted = zeroize::Zeroizing::new([0u8; 32]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password,
        salted.as_mut(),
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, salted.as_ref());
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    Ok(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example password and salt; expected value computed independently
    /// with Python's `hashlib.pbkdf2_hmac` and `hmac`.
    #[test]
    fn known_answer() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        assert_eq!(
            verifier_with_salt(b"pencil", &salt, 4096).unwrap(),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
             WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
             wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn each_verifier_has_its_own_salt_and_no_password() {
        let (a, b) = (verifier(b"pw0rd").unwrap(), verifier(b"pw0rd").unwrap());
        assert_ne!(a, b);
        assert!(
            a.starts_with("SCRAM-SHA-256$4096:") && !a.contains("pw0rd"),
            "{a}"
        );
    }
}
