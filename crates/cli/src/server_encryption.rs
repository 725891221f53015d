//! The encryption options of a new server (`server create`, `server restore`),
//! and the request fields they become.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use pgcmk_control::identity_file::{read_identity_secret, resolve_client_id};
use pgcmk_control::model::SecretString;
use pgcmk_control::platform::KeyChoice;

use crate::error::CliError;

/// Encryption choices for a new server.
#[derive(Clone, Copy, ValueEnum)]
pub enum EncryptionChoice {
    /// A platform-managed key (the default).
    ServiceManaged,
    /// Your key in your vault, through your managed identity.
    CustomerManaged,
}

/// How a new server's data encryption key is protected.
#[derive(Args)]
pub struct EncryptionArgs {
    /// How the server's data encryption key is protected (default: customer-managed
    /// with --key, else service-managed).
    #[arg(long, value_enum)]
    encryption: Option<EncryptionChoice>,
    /// Customer-managed: the user-assigned managed identity (name, object id or client id).
    #[arg(long)]
    identity: Option<String>,
    /// Customer-managed: the identity's credential file, assigning it to the server.
    #[arg(long)]
    identity_credential_file: Option<PathBuf>,
    /// Customer-managed: the key URL, https://VAULT/keys/NAME[/VERSION] (or a
    /// pkcs11: / kmip:// reference, docs/providers).
    #[arg(short, long)]
    key: Option<String>,
}

impl EncryptionArgs {
    /// The request's fields: the identity resolved to its client id, its
    /// credential file read.
    pub fn into_key_choice(self) -> Result<KeyChoice, CliError> {
        let identity = match (&self.identity, &self.identity_credential_file) {
            (Some(i), Some(f)) => Some(resolve_client_id(i, f)?),
            _ => self.identity,
        };
        let identity_secret = self
            .identity_credential_file
            .map(|f| read_identity_secret(&f))
            .transpose()?
            .map(|s| SecretString::new(String::from_utf8_lossy(s.expose_secret()).into_owned()));
        let encryption = match self.encryption {
            Some(EncryptionChoice::ServiceManaged) => "service-managed",
            Some(EncryptionChoice::CustomerManaged) => "customer-managed",
            None if self.key.is_some() => "customer-managed",
            None => "service-managed",
        };
        Ok(KeyChoice {
            encryption: Some(encryption.into()),
            identity,
            identity_secret,
            key: self.key,
        })
    }
}
