//! The service's TLS identity ([`pgcmk_hostkeys::local_ca`]): made on first start,
//! kept in the database with its server key sealed under the root key, and its CA
//! certificate (re)written to `ca.pem` for clients.

use std::sync::Arc;

use pgcmk_hostkeys::local_ca::TlsIdentity;

use crate::files::{self, DataDir};
use crate::seal::DerivedKeys;
use crate::storage::{Store, META};
use crate::Error;

/// Loads the TLS identity, creating the CA and server certificate on first start,
/// (re)writes `ca.pem`, and returns the rustls server configuration.
pub fn server_config(
    store: &Store,
    keys: &DerivedKeys,
    dir: &DataDir,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let identity = match store.get::<TlsIdentity>(META, "tls")? {
        Some(identity) => identity,
        None => {
            let identity = TlsIdentity::generate("pgcmk vault", &keys.storage)?;
            store.write(|tx| tx.put(META, "tls", &identity))?;
            identity
        }
    };
    files::write_atomic(&dir.ca_file(), identity.ca_pem()?.as_bytes(), 0o644)?;
    Ok(identity.server_config(&keys.storage)?)
}
