//! A service's TLS identity: a local CA, whose private key is discarded once it
//! has signed the server certificate (so nobody can mint more), and that server
//! certificate for the loopback names (and any the service adds). The server key is kept sealed under a key
//! the service derives from its root key; the service stores the whole identity
//! with its other state and gives clients the CA certificate ([`TlsIdentity::ca_pem`]).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pgcmk_crypto::sealed::Sealer;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// The names every server certificate is valid for (a service may add its own,
/// [`TlsIdentity::generate_for`]).
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Binds the sealed server key to its purpose.
const SEAL_AAD: &[u8] = b"tls-server-key";

/// A CA certificate, the server certificate it signed, and the sealed server key,
/// each base64 (DER) so that the identity stores as JSON.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TlsIdentity {
    ca_der: String,
    cert_der: String,
    sealed_key: String,
}

pub(crate) fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

impl TlsIdentity {
    /// Makes a new CA named "`service` local CA" and a server certificate for
    /// [`SERVER_NAMES`] named `service`, sealing the server key with `sealer`.
    pub fn generate(service: &str, sealer: &Sealer) -> Result<Self, Error> {
        Self::generate_for(service, &[], sealer)
    }

    /// Like [`TlsIdentity::generate`], the server certificate also naming
    /// `more_names` (DNS names or IP addresses clients on other machines use).
    pub fn generate_for(
        service: &str,
        more_names: &[String],
        sealer: &Sealer,
    ) -> Result<Self, Error> {
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let ca_params = ca_params(&format!("{service} local CA"))?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(tls_err)?;
        let names: Vec<String> = SERVER_NAMES
            .iter()
            .map(|s| s.to_string())
            .chain(more_names.iter().cloned())
            .collect();
        let mut params = server_params(service, names)?;
        params.not_after = rcgen::date_time_ymd(2046, 1, 1);
        let cert = params.signed_by(&server_key, &issuer).map_err(tls_err)?;
        let sealed = sealer.seal(SEAL_AAD, &server_key.serialize_der())?;
        Ok(Self {
            ca_der: B64.encode(ca_cert.der()),
            cert_der: B64.encode(cert.der()),
            sealed_key: B64.encode(sealed),
        })
    }

    /// The CA certificate, PEM: what clients trust.
    pub fn ca_pem(&self) -> Result<String, Error> {
        Ok(pem_certificate(&decode(&self.ca_der)?))
    }

    /// The rustls server configuration (HTTP/1.1, the aws-lc-rs provider), with
    /// the server key opened by `sealer` (the one it was generated with).
    pub fn server_config(&self, sealer: &Sealer) -> Result<Arc<rustls::ServerConfig>, Error> {
        let key = sealer
            .open(SEAL_AAD, &decode(&self.sealed_key)?)
            .map_err(|_| {
                Error::Tls(
                    "the sealed TLS server key does not open with this root key: give the \
                     root key or passphrase the state was created with"
                        .into(),
                )
            })?;
        let chain = vec![CertificateDer::from(decode(&self.cert_der)?)];
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
}

/// The parameters of a CA named `common_name` that signs server certificates
/// only (never another CA), valid until 2046.
pub(crate) fn ca_params(common_name: &str) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    Ok(params)
}

/// The parameters of a TLS server certificate named `common_name` for `names`
/// (IP addresses become IP subject alternative names, the others DNS names); the
/// caller sets its validity.
pub(crate) fn server_params(
    common_name: &str,
    names: Vec<String>,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(names).map_err(tls_err)?;
    params.distinguished_name = name(common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

pub(crate) fn decode(field: &str) -> Result<Vec<u8>, Error> {
    B64.decode(field)
        .map_err(|e| Error::Tls(format!("the stored TLS identity is corrupt: {e}")))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

pub(crate) fn pem_certificate(der: &[u8]) -> String {
    let body = B64.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use pgcmk_crypto::SymmetricKey;

    use super::*;

    #[test]
    fn the_identity_round_trips_as_json_and_needs_its_sealing_key() {
        let sealer = Sealer::new(&SymmetricKey::generate().unwrap()).unwrap();
        let identity = TlsIdentity::generate("pgcmk test", &sealer).unwrap();
        let json = serde_json::to_string(&identity).unwrap();
        assert!(!json.contains("PRIVATE"));
        let stored: TlsIdentity = serde_json::from_str(&json).unwrap();
        stored.server_config(&sealer).unwrap();
        let pem = stored.ca_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        let other = Sealer::new(&SymmetricKey::generate().unwrap()).unwrap();
        let err = stored.server_config(&other).unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
    }
}
