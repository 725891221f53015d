//! Durable file writes: what a call returned for survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::Error;

/// Writes `bytes` to `path` atomically and durably with `mode`: a temporary file,
/// fsync, rename over, fsync of the directory. Readers see the old or the new
/// content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let dir = parent(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io("creating", &tmp, e))?;
    // The mode given to open() is filtered by the umask; set it explicitly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("setting permissions of", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming into", path, e))?;
    sync_dir(dir)
}

/// Writes `bytes` to a new file readable only by its owner (0600), durably; fails
/// if the file exists, so a key is never overwritten.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("creating", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", path, e))?;
    sync_dir(parent(path))
}

/// Removes `path` durably: once this returns, a crash cannot bring it back. A file
/// already gone is not an error.
pub fn remove_durably(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", path, e)),
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn atomic_writes_replace_with_the_mode_and_private_writes_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("ca.pem");
        write_atomic(&public, b"one", 0o644).unwrap();
        write_atomic(&public, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&public).unwrap(), b"two");
        assert_eq!(mode(&public), 0o644);
        assert!(!dir.path().join(".ca.pem.tmp").exists());

        let private = dir.path().join("root.key");
        write_new_private(&private, b"secret").unwrap();
        assert_eq!(mode(&private), 0o600);
        let err = write_new_private(&private, b"other").unwrap_err();
        assert!(err.to_string().contains("root.key"), "{err}");
        assert_eq!(fs::read(&private).unwrap(), b"secret");
    }
}
