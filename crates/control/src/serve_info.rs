//! `STATE/serve.json`: where a running control plane's API is, for its clients. Written
//! by `pgcmk serve` once it listens; read by `pgcmk server` through the control-plane
//! directory (`PGCMK_CONTROL_DIR`), so that one setting gives a DBA the URL, the CA to
//! trust and the credential. Holds no secret: readable by everyone (0644).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The file's name in the control plane's state directory.
pub const FILE: &str = "serve.json";

/// A running control plane's API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeInfo {
    /// `https://IP:PORT`.
    pub url: String,
    /// The CA certificate clients trust for the API.
    pub ca_file: PathBuf,
    /// The control plane's process id.
    pub pid: u32,
}

impl ServeInfo {
    /// Writes `dir/serve.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io(format!("encoding {FILE}"), std::io::Error::other(e)))?;
        Ok(pgcmk_hostkeys::files::write_atomic(
            &dir.join(FILE),
            &bytes,
            0o644,
        )?)
    }

    /// Reads `dir/serve.json`, if a control plane has written one there.
    pub fn read(dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(dir.join(FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
