//! The layout of one server's directory, shared by the control plane and the
//! server's node agent:
//!
//! ```text
//! DIR/cipher/            cryptfs ciphertext: the only place data reaches the disk
//! DIR/mnt/               mount point; DIR/mnt/pgdata is PostgreSQL's data directory
//! DIR/mnt/tls/           the node's TLS certificate, key and pg_hba.conf
//! DIR/run/               PostgreSQL's Unix socket
//! DIR/agent.json         the agent's configuration (no secrets)
//! DIR/wrapped_dek.json   the DEK wrapped by the KEK (never the plaintext DEK)
//! DIR/wrapped_backup_key.json  the backup repository's key wrapped by the KEK
//! DIR/wrapped_geo_backup_key.json  the geo-redundant copy's key, wrapped by the geo key
//! DIR/status.json        what the agent reports: state, cause, KEK version, events
//! DIR/.status.json.tmp   the next report, while it is being written
//! DIR/agent.pid          the running agent's process id
//! DIR/agent.log          the agent's diagnostics (no secrets, no SQL)
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::IoContext;
use crate::Error;

/// Paths inside one server's directory.
#[derive(Clone, Debug)]
pub struct ServerDir(PathBuf);

impl ServerDir {
    /// The server directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// cryptfs's cipher directory.
    pub fn cipher(&self) -> PathBuf {
        self.0.join("cipher")
    }

    /// The cryptfs mount point.
    pub fn mountpoint(&self) -> PathBuf {
        self.0.join("mnt")
    }

    /// PostgreSQL's data directory, on the mount.
    pub fn data_dir(&self) -> PathBuf {
        self.mountpoint().join("pgdata")
    }

    /// PostgreSQL's socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.0.join("run")
    }

    /// The agent's configuration.
    pub fn agent_config(&self) -> PathBuf {
        self.0.join("agent.json")
    }

    /// The wrapped DEK.
    pub fn wrapped_dek(&self) -> PathBuf {
        self.0.join("wrapped_dek.json")
    }

    /// The backup repository's key, wrapped by the KEK (`docs/backups.md`).
    pub fn wrapped_backup_key(&self) -> PathBuf {
        self.0.join("wrapped_backup_key.json")
    }

    /// The geo-redundant copy's repository key, wrapped by the geo key
    /// (`docs/backups.md`).
    pub fn wrapped_geo_backup_key(&self) -> PathBuf {
        self.0.join("wrapped_geo_backup_key.json")
    }

    /// The node's TLS certificate, its key and `pg_hba.conf`: on the mount, so the
    /// key is encrypted at rest and gone when the mount is.
    pub fn tls_dir(&self) -> PathBuf {
        self.mountpoint().join("tls")
    }

    /// pgBackRest's configuration (with the repository's passphrase), log, spool
    /// and lock files: on the mount, so encrypted at rest and gone when it is.
    pub fn backup_engine_dir(&self) -> PathBuf {
        self.mountpoint().join("pgbackrest")
    }

    /// pgBackRest's files for restoring this server from another's repository,
    /// on the mount while the restore runs.
    pub fn restore_engine_dir(&self) -> PathBuf {
        self.mountpoint().join("pgbackrest-restore")
    }

    /// The agent's status report.
    pub fn status(&self) -> PathBuf {
        self.0.join("status.json")
    }

    /// The running agent's pid.
    pub fn agent_pid(&self) -> PathBuf {
        self.0.join("agent.pid")
    }

    /// The agent's log.
    pub fn agent_log(&self) -> PathBuf {
        self.0.join("agent.log")
    }

    /// The last `error: ...` line of `agent.log` (`pgcmk agent` prints one as its
    /// last line before it exits with an error), when there is one.
    pub fn last_agent_error(&self) -> Option<String> {
        use std::io::{Read, Seek, SeekFrom};
        const TAIL: u64 = 16 * 1024;
        let mut f = fs::File::open(self.agent_log()).ok()?;
        let len = f.metadata().ok()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).ok()?;
        String::from_utf8_lossy(&tail)
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: ").map(str::to_string))
    }

    /// Present while the agent provisions the server (its first start): a
    /// directory that still has it after that start ended was left half-made.
    pub fn provisioning_marker(&self) -> PathBuf {
        self.0.join("provisioning")
    }

    /// True when the server's encrypted volume exists and its provisioning
    /// finished.
    pub fn is_provisioned(&self) -> bool {
        self.cipher().exists() && !self.provisioning_was_cut_short()
    }

    /// True when a first start began provisioning the server and did not finish
    /// (or is still at it).
    pub fn provisioning_was_cut_short(&self) -> bool {
        self.provisioning_marker().exists()
    }

    /// True when something is mounted at the mount point (in this process's mount
    /// namespace), live or left behind by a killed agent.
    pub fn is_mounted(&self) -> bool {
        let mnt = self.mountpoint();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&*mnt.to_string_lossy()))
    }

    /// Detaches a mount left at the mount point by an agent that was killed (its
    /// FUSE daemon is gone, so the mount only answers ENOTCONN).
    pub fn detach_stale_mount(&self) {
        let mnt = self.mountpoint();
        if self.is_mounted() {
            tracing::warn!("detaching a stale mount at {}", mnt.display());
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&mnt)
                .status();
        }
    }
}

/// Writes `value` as JSON to `path` durably and atomically: a temporary file,
/// fsync, rename over, fsync of the directory. Readers see the old or the new
/// content, never a mix, even after a crash.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| unencodable(path, &e))?;
    Ok(pgcmk_hostkeys::files::write_atomic(path, &bytes, 0o600)?)
}

/// Replaces `path` with `value` as JSON atomically (a temporary file renamed over
/// it: readers see the old or the new content) but not durably: for reports that
/// are about now, rewritten every second, and stale after a crash anyway, so
/// they cost no disk flush.
pub fn write_json_replace<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| unencodable(path, &e))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .ctx(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {} over {}", tmp.display(), path.display()))
}

/// Writes `bytes` to a new file readable only by its owner (mode 0600), durably.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    Ok(pgcmk_hostkeys::files::write_new_private(path, bytes)?)
}

/// Reads JSON written by [`write_json_atomic`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let bytes = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(path, &e))
}

fn invalid(path: &Path, e: &serde_json::Error) -> Error {
    Error::InvalidFile {
        path: path.to_path_buf(),
        reason: format!("is not valid: {e}"),
    }
}

fn unencodable(path: &Path, e: &serde_json::Error) -> Error {
    Error::InvalidFile {
        path: path.to_path_buf(),
        reason: format!("cannot be encoded: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_json_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_json_atomic(&path, &vec![1, 2]).unwrap();
        write_json_atomic(&path, &vec![3]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), vec![3]);
        write_json_replace(&path, &vec![4]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), vec![4]);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
        let err = read_json::<Vec<u32>>(&dir.path().join("missing.json")).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
    }

    #[test]
    fn a_volume_is_provisioned_only_once_its_first_start_removed_the_marker() {
        let root = tempfile::tempdir().unwrap();
        let dir = ServerDir::new(root.path());
        assert!(!dir.is_provisioned() && !dir.provisioning_was_cut_short());
        write_private_file(&dir.provisioning_marker(), b"instance").unwrap();
        fs::create_dir(dir.cipher()).unwrap();
        assert!(!dir.is_provisioned() && dir.provisioning_was_cut_short());
        pgcmk_hostkeys::files::remove_durably(&dir.provisioning_marker()).unwrap();
        assert!(dir.is_provisioned() && !dir.provisioning_was_cut_short());
        // Removing it again (a retried removal) is not an error.
        pgcmk_hostkeys::files::remove_durably(&dir.provisioning_marker()).unwrap();
    }
}
