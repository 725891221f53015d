//! A CA of the control plane that keeps its key, sealed in the state store under
//! a key derived from the root key, and issues certificates with new keys: the
//! servers CA ([`crate::servers_ca`]) and the etcd CA ([`crate::etcd_tls`]). Its
//! certificate is (re)written to a file in the state directory at every start:
//! what clients trust it by.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgcmk_agent::contract::handshake::NodeTls;
use pgcmk_crypto::sealed::Sealer;
use pgcmk_hostkeys::issuing_ca::{CertificateUse, IssuingCa};

use crate::error::StoreError;
use crate::store::Store;
use crate::Error;

/// Which CA: where it is kept and what it is called.
pub struct CaPlace {
    /// The state store's setting that holds it (JSON; its key sealed).
    pub setting: &'static str,
    /// Its certificate's file name in the state directory.
    pub file_name: &'static str,
    /// Its certificate's common name.
    pub common_name: &'static str,
    /// What an undecodable setting is called in the error.
    pub corrupt: &'static str,
}

/// A CA kept in the state store, able to issue.
#[derive(Debug)]
pub struct StoredCa {
    ca: IssuingCa,
    sealer: Sealer,
    file: PathBuf,
}

impl StoredCa {
    /// Loads the CA at `place`, generating it (its key sealed with `sealer`) when
    /// there is none, and writes its certificate to `STATE/FILE_NAME` (0644: it is
    /// public).
    pub fn open(
        state_dir: &Path,
        store: &Store,
        sealer: Sealer,
        place: &CaPlace,
    ) -> Result<Self, Error> {
        let corrupt = |source| {
            Error::Store(StoreError::Codec {
                what: place.corrupt,
                source,
            })
        };
        let ca = match store.setting(place.setting)? {
            Some(json) => serde_json::from_slice::<IssuingCa>(&json).map_err(corrupt)?,
            None => {
                let ca = IssuingCa::generate(place.common_name, &sealer)?;
                let json = serde_json::to_vec(&ca).map_err(corrupt)?;
                store.put_settings(&[(place.setting, &json)])?;
                ca
            }
        };
        let file = state_dir.join(place.file_name);
        pgcmk_hostkeys::files::write_atomic(&file, ca.ca_pem()?.as_bytes(), 0o644)?;
        Ok(Self { ca, sealer, file })
    }

    /// The CA certificate's file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// A new certificate for `usage`, named `common_name` and valid for `names`
    /// for `lifetime`, with a new key (the issuer keeps no copy).
    pub fn issue(
        &self,
        usage: CertificateUse,
        common_name: &str,
        names: &[String],
        lifetime: Duration,
    ) -> Result<NodeTls, Error> {
        let issued = self
            .ca
            .issue_for(usage, &self.sealer, common_name, names, lifetime)?;
        Ok(NodeTls {
            certificate_pem: issued.certificate_pem,
            key_pem: issued.key_pem,
        })
    }
}
