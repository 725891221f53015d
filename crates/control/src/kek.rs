//! Reaching a server's KEK as its managed identity, and the key monitor's check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgcmk_crypto::{Dek, SecretBytes};
use pgcmk_keyprovider::akv::{AkvKek, ClientOptions, TokenSource};
use pgcmk_keyprovider::{KeyEncryptionKey, KeyError, KeyReference, WrappedDek};
use serde::{Deserialize, Serialize};

use crate::monitor::CheckResult;
use crate::server_dir::read_json;

/// Where the vault service hands out managed-identity tokens, and the CA to trust
/// it by: what the control plane reads from the vault service's `service.json` and
/// keeps current in every agent's `agent.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultEndpoints {
    /// The managed-identity token endpoint (`IDENTITY_ENDPOINT`).
    pub identity_endpoint: String,
    /// A PEM CA bundle to trust instead of the system roots (a private vault).
    pub ca_file: Option<PathBuf>,
}

impl VaultEndpoints {
    /// Reads them from `service.json` in the vault service's directory (written by
    /// `pgcmk vault serve` at every start).
    pub fn read(service_dir: &Path) -> Result<Self, crate::Error> {
        read_json(&service_dir.join("service.json"))
    }
}

/// How to reach one KEK: the key, the managed identity to act as (App Service
/// managed-identity protocol), and the vault service's endpoints. The identity's
/// secret is not here (this is written to the server's `agent.json`): the control
/// plane keeps it sealed in its state and hands it to the agent over a pipe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekAccess {
    /// The key, versioned or versionless.
    pub key: KeyReference,
    /// The vault service's identity endpoint and CA (`identity_endpoint`, `ca_file`).
    #[serde(flatten)]
    pub vault: VaultEndpoints,
    /// The managed identity's client id.
    pub client_id: String,
}

impl KekAccess {
    /// Connects as the identity whose `IDENTITY_HEADER` secret is `header` (lazily:
    /// no request is sent until the first operation).
    pub fn connect(&self, header: SecretBytes) -> Result<AkvKek, KeyError> {
        let header = SecretBytes::new(header.expose_secret().trim_ascii().to_vec());
        let tokens =
            TokenSource::managed_identity(&self.vault.identity_endpoint, header, &self.client_id)?;
        let mut options = match &self.vault.ca_file {
            Some(ca) => ClientOptions::trusting_only(ca),
            None => ClientOptions::default(),
        };
        // A check must finish well within the monitor's interval.
        options.timeout = Duration::from_secs(5);
        options.connect_timeout = Duration::from_secs(2);
        AkvKek::connect(self.key.clone(), tokens, &options)
    }
}

/// One key-monitor check: a real unwrap of `wrapped`, then a read of the key's
/// current version. Returns the unwrapped DEK when the unwrap succeeded.
pub fn check(kek: &dyn KeyEncryptionKey, wrapped: &WrappedDek) -> (CheckResult, Option<Dek>) {
    let dek = match kek.unwrap(wrapped) {
        Ok(dek) => dek,
        Err(e) => return (classify(e), None),
    };
    let result = match kek.info() {
        Ok(info) if !info.enabled => {
            CheckResult::Denied(format!("key {} is disabled", info.current))
        }
        Ok(info) => CheckResult::Ok {
            current: info.current,
        },
        Err(e) => classify(e),
    };
    (result, Some(dek))
}

/// Maps a key error onto the monitor's two kinds of failure. An invalid request
/// cannot heal by retrying, so it counts as a denial.
fn classify(e: KeyError) -> CheckResult {
    if e.is_retryable() {
        CheckResult::Transient(e.to_string())
    } else {
        CheckResult::Denied(e.to_string())
    }
}

/// Reads a managed identity's header secret from its credential file: the JSON
/// that `pgcmk identity create --credential-file` writes (field `identity_header`,
/// `client_secret` or `secret`), or a file holding just the secret.
pub fn read_identity_secret(path: &std::path::Path) -> Result<SecretBytes, crate::Error> {
    let bytes = SecretBytes::new(std::fs::read(path).map_err(|e| {
        crate::Error::io(format!("reading the credential file {}", path.display()), e)
    })?);
    let text = bytes.expose_secret().trim_ascii();
    if text.first() != Some(&b'{') {
        return Ok(SecretBytes::new(text.to_vec()));
    }
    let json: serde_json::Value = serde_json::from_slice(text).map_err(|_| {
        crate::Error::InvalidRequest(format!(
            "the credential file {} is not valid JSON",
            path.display()
        ))
    })?;
    ["identity_header", "client_secret", "secret"]
        .iter()
        .find_map(|k| json.get(*k).and_then(|v| v.as_str()))
        .map(|s| SecretBytes::new(s.as_bytes().to_vec()))
        .ok_or_else(|| {
            crate::Error::InvalidRequest(format!(
                "the credential file {} holds no identity secret (identity_header)",
                path.display()
            ))
        })
}

/// The client id to ask tokens for when the DBA names `identity` (by name, object id
/// or client id) and hands over its credential file. Checks that the file belongs
/// to that identity; a file holding only the secret leaves `identity` as given.
pub fn resolve_client_id(
    identity: &str,
    credential_file: &std::path::Path,
) -> Result<String, crate::Error> {
    let text = std::fs::read(credential_file).map_err(|e| {
        crate::Error::io(
            format!("reading the credential file {}", credential_file.display()),
            e,
        )
    })?;
    let text = SecretBytes::new(text);
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(text.expose_secret()) else {
        return Ok(identity.to_string());
    };
    let field = |k: &str| json.get(k).and_then(|v| v.as_str());
    let Some(client_id) = field("client_id") else {
        return Ok(identity.to_string());
    };
    if [field("name"), field("object_id"), Some(client_id)].contains(&Some(identity)) {
        Ok(client_id.to_string())
    } else {
        Err(crate::Error::InvalidRequest(format!(
            "the credential file {} belongs to identity '{}', not '{identity}': pass that \
             identity's credential file",
            credential_file.display(),
            field("name").unwrap_or(client_id)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_resolve_to_the_credential_client_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mi.credential");
        std::fs::write(
            &file,
            r#"{"name":"orders-mi","object_id":"oid-1","client_id":"cid-1","kind":"managed","client_secret":"hdr"}"#,
        )
        .unwrap();
        for given in ["orders-mi", "oid-1", "cid-1"] {
            assert_eq!(resolve_client_id(given, &file).unwrap(), "cid-1");
        }
        let err = resolve_client_id("other-mi", &file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to identity 'orders-mi'"), "{err}");
        assert_eq!(read_identity_secret(&file).unwrap().expose_secret(), b"hdr");
        let raw = dir.path().join("raw");
        std::fs::write(&raw, "just-the-secret\n").unwrap();
        assert_eq!(resolve_client_id("cid-9", &raw).unwrap(), "cid-9");
        assert_eq!(
            read_identity_secret(&raw).unwrap().expose_secret(),
            b"just-the-secret"
        );
    }
}
