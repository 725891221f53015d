//! Standalone key files: 64 hex characters (a 256-bit key) and an optional newline,
//! created with mode 0600. Used by `pgcmk fs`; the node agent passes keys in memory.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use pgcmk_crypto::SymmetricKey;
use zeroize::Zeroizing;

use crate::Error;

/// Parses the text of a key file (or stdin): exactly 64 hex characters, optionally
/// followed by one newline.
pub fn parse_key(text: &[u8]) -> Result<SymmetricKey, Error> {
    let body = text
        .strip_suffix(b"\n")
        .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
        .unwrap_or(text);
    if body.len() != 64 {
        return Err(Error::InvalidArgument(format!(
            "a key must be 64 hex characters (256 bits) plus an optional newline, got {} characters; create one with `pgcmk fs keygen --out FILE`",
            body.len()
        )));
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(body, bytes.as_mut_slice()).map_err(|_| {
        Error::InvalidArgument(
            "a key must contain only hex characters 0-9 and a-f; create one with `pgcmk fs keygen --out FILE`"
                .into(),
        )
    })?;
    Ok(SymmetricKey::from_bytes(*bytes))
}

/// Reads and parses a key file. Warns (does not fail) when others can read it.
pub fn read_key_file(path: &Path) -> Result<SymmetricKey, Error> {
    let mut file = std::fs::File::open(path).map_err(Error::path("opening key file", path))?;
    let mode = file
        .metadata()
        .map_err(Error::path("reading key file", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "key file is readable by group or others (mode {:o}); run chmod 600 on it",
            mode & 0o777
        );
    }
    let mut text = Zeroizing::new(Vec::with_capacity(66));
    // Read at most a little more than a valid file, so a wrong path cannot make us
    // read a huge file.
    Read::by_ref(&mut file)
        .take(128)
        .read_to_end(&mut text)
        .map_err(Error::path("reading key file", path))?;
    parse_key(&text)
}

/// Reads a key from standard input (same format as a key file).
pub fn read_key_stdin() -> Result<SymmetricKey, Error> {
    let mut text = Zeroizing::new(Vec::with_capacity(66));
    std::io::stdin()
        .take(128)
        .read_to_end(&mut text)
        .map_err(Error::path("reading key from", "stdin"))?;
    parse_key(&text)
}

/// Writes a new random key to `path` (mode 0600); refuses to overwrite.
pub fn write_new_key_file(path: &Path) -> Result<(), Error> {
    let key = SymmetricKey::generate()?;
    let mut text = Zeroizing::new(hex::encode(key.expose_secret()));
    text.push('\n');
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::InvalidArgument(format!(
                    "{} already exists; remove it or choose another path",
                    path.display()
                ))
            } else {
                Error::path("creating key file", path)(e)
            }
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(Error::path("writing key file", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_invalid() {
        let hex = "ab".repeat(32);
        let key = parse_key(hex.as_bytes()).unwrap();
        assert_eq!(key.expose_secret(), &[0xab; 32]);
        assert_eq!(parse_key(format!("{hex}\n").as_bytes()).unwrap(), key);
        let short = parse_key(b"abcd").unwrap_err().to_string();
        assert!(short.contains("got 4 characters"), "{short}");
        let bad = "zz".repeat(32);
        assert!(parse_key(bad.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("only hex"));
        assert!(parse_key(format!("{hex}\n\n").as_bytes()).is_err());
    }

    #[test]
    fn keygen_writes_0600_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_new_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        read_key_file(&path).unwrap();
        assert!(write_new_key_file(&path)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
    }
}
