//! `pgcmk server reset-password`: the new password, shown once or written to a
//! file of the DBA's own that only its owner reads.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use pgcmk_control::platform::PasswordChanged;
use serde_json::{json, Value};

use crate::error::CliError;
use crate::{output, Format};

/// Where the new password goes: shown, or written to a new 0600 file (created
/// before the reset, so that a path that cannot be written loses no password).
pub enum PasswordSink {
    /// Printed once.
    Shown,
    /// Written to this new file.
    File(PathBuf, File),
}

impl PasswordSink {
    /// Shown, or a new file at `path` that only its owner may read.
    pub fn open(path: Option<PathBuf>) -> Result<Self, CliError> {
        let Some(path) = path else {
            return Ok(PasswordSink::Shown);
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                CliError::usage(format!(
                    "cannot create the password file {}: {e} (give a path of a new file)",
                    path.display()
                ))
            })?;
        Ok(PasswordSink::File(path, file))
    }

    /// Removes a file created for a reset that failed.
    pub fn abandon(self) {
        if let PasswordSink::File(path, file) = self {
            drop(file);
            let _ = fs::remove_file(path);
        }
    }

    /// Shows or writes the password of the API's answer `v`.
    pub fn deliver(self, v: &Value, format: Format) -> Result<(), CliError> {
        let changed: PasswordChanged = serde::Deserialize::deserialize(v).map_err(|e| {
            CliError::failed(format!("unexpected answer from the control plane: {e}"))
        })?;
        match self {
            PasswordSink::Shown => output::print(format, v, |_| {
                format!(
                    "new password of {} on server {}: {} (shown once; the platform does not \
                     keep it)",
                    changed.role,
                    changed.server,
                    changed.password.expose_secret()
                )
            }),
            PasswordSink::File(path, mut file) => {
                write_password(&path, &mut file, &changed)?;
                let written = json!({
                    "server": changed.server,
                    "role": changed.role,
                    "password_file": path,
                });
                output::print(format, &written, |_| {
                    format!(
                        "new password of {} on server {} written to {} (mode 0600)",
                        changed.role,
                        changed.server,
                        path.display()
                    )
                });
            }
        }
        Ok(())
    }
}

fn write_password(path: &Path, file: &mut File, changed: &PasswordChanged) -> Result<(), CliError> {
    file.write_all(changed.password.expose_secret().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            CliError::failed(format!(
                "the password was reset, but writing it to {} failed: {e}; run `pgcmk server \
                 reset-password {}` again",
                path.display(),
                changed.server
            ))
        })
}
