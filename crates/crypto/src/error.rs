/// Errors from cryptographic operations.
///
/// Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Authentication failed: the ciphertext, its tag or its associated data were
    /// altered, or the wrong key was used.
    #[error("authentication failed: the data was altered or the key is wrong")]
    Authentication,
    /// A key or nonce had the wrong length.
    #[error("invalid length for {what}: expected {expected} bytes, got {got}")]
    InvalidLength {
        /// What the bytes were meant to be.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A primitive was used outside its limits (e.g. too much output requested).
    #[error("cryptographic operation rejected: {0}")]
    Unsupported(&'static str),
}
