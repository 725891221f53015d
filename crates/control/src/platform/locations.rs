//! Where a vault is: asked of the vault service at create, to check that a
//! customer's vault is in the server's location.

use std::process::{Command, Stdio};

use super::Platform;
use crate::error::IoContext;
use crate::validate::VaultLocations;
use crate::Error;

impl VaultLocations for Platform {
    /// Asks the vault service (`pgcmk keyvault list`) for its vaults' locations.
    fn location_of(&self, vault_url: &str) -> Result<Option<String>, Error> {
        let Some(service_dir) = &self.config.vault_service_dir else {
            return Ok(None);
        };
        let out = Command::new(&self.config.agent_program)
            .args(["keyvault", "list", "--output", "json"])
            .env("PGCMK_VAULT_SERVICE_DIR", service_dir)
            .stdin(Stdio::null())
            .output()
            .ctx(|| "listing the vault service's vaults")?;
        if !out.status.success() {
            return Err(Error::BadRequest(format!(
                "cannot list the vault service's vaults: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let list: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            .ctx(|| "reading the vault service's vault list")?;
        let vaults = list
            .as_array()
            .or_else(|| list.get("value").and_then(|v| v.as_array()))
            .cloned()
            .unwrap_or_default();
        let want = vault_url.trim_end_matches('/');
        let want_port = want
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u64>().ok());
        Ok(vaults.iter().find_map(|v| {
            let same = match v.get("url").and_then(|u| u.as_str()) {
                Some(url) => url.trim_end_matches('/').eq_ignore_ascii_case(want),
                // Vaults are told apart by their port on the service's address.
                None => want_port.is_some() && v.get("port").and_then(|p| p.as_u64()) == want_port,
            };
            same.then(|| v.get("location")?.as_str().map(str::to_string))?
        }))
    }
}
