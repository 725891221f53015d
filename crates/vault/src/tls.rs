//! The service's TLS identity: a local CA (whose private key is discarded after it
//! signs the server certificate, so nobody can mint more) and a server certificate
//! for the loopback names. The server key is sealed under the root key.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::files::{self, DataDir};
use crate::seal::DerivedKeys;
use crate::storage::{Store, META};
use crate::Error;

const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
const SEAL_AAD: &[u8] = b"tls-server-key";

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredTls {
    ca_der: String,
    cert_der: String,
    sealed_key: String,
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

/// Loads the TLS identity, creating the CA and server certificate on first start,
/// (re)writes `ca.pem`, and returns the rustls server configuration.
pub fn server_config(
    store: &Store,
    keys: &DerivedKeys,
    dir: &DataDir,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let stored = match store.get::<StoredTls>(META, "tls")? {
        Some(s) => s,
        None => {
            let s = generate(keys)?;
            store.write(|tx| tx.put(META, "tls", &s))?;
            s
        }
    };
    let decode = |s: &str| B64.decode(s).map_err(tls_err);
    let ca_der = decode(&stored.ca_der)?;
    let pem = pem_certificate(&ca_der);
    files::write_atomic(&dir.ca_file(), pem.as_bytes(), 0o644)?;
    let key = keys.storage.open(SEAL_AAD, &decode(&stored.sealed_key)?)?;
    let chain = vec![CertificateDer::from(decode(&stored.cert_der)?)];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.expose_secret().to_vec()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn generate(keys: &DerivedKeys) -> Result<StoredTls, Error> {
    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params.distinguished_name = name("pgcmk vault local CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(tls_err)?;
    let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).map_err(tls_err)?;
    params.distinguished_name = name("pgcmk vault");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    let cert = params.signed_by(&server_key, &issuer).map_err(tls_err)?;
    let sealed = keys.storage.seal(SEAL_AAD, &server_key.serialize_der())?;
    Ok(StoredTls {
        ca_der: B64.encode(ca_cert.der()),
        cert_der: B64.encode(cert.der()),
        sealed_key: B64.encode(sealed),
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn pem_certificate(der: &[u8]) -> String {
    let body = B64.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
