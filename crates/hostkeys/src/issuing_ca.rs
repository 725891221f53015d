//! A CA that keeps its key, sealed, to issue short-lived certificates for a
//! fleet: the control plane's "servers CA", which gives every PostgreSQL node a
//! certificate for its addresses at each start of its agent.
//!
//! Unlike [`crate::local_ca`] (whose CA key is discarded once it signed the one
//! server certificate of a service), this CA signs again and again, so its key is
//! stored, sealed under a key the service derives from its root key; it is opened
//! only for the moment of a signature. Leaf keys are new for every certificate and
//! handed back as secrets: the issuer keeps no copy.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pgcmk_crypto::sealed::Sealer;
use pgcmk_crypto::SecretBytes;
use rcgen::{DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use zeroize::Zeroizing;

use crate::local_ca::{ca_params, decode, pem_certificate, server_params, tls_err};
use crate::Error;

/// Binds the sealed CA key to its purpose.
const SEAL_AAD: &[u8] = b"issuing-ca-key";
/// How far back a certificate's validity starts, for hosts whose clocks lag.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The CA certificate and its sealed key, each base64 (DER), stored as JSON.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct IssuingCa {
    common_name: String,
    ca_der: String,
    sealed_key: String,
}

/// What an issued certificate is for: its extended key usages. A client of a
/// service that requires client certificates (etcd's `--client-cert-auth`) accepts
/// only certificates that say `Client`; a server certificate cannot be used as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateUse {
    /// A TLS server (PostgreSQL, an etcd member's client URL).
    Server,
    /// A TLS client (Patroni and the control plane towards etcd, and towards
    /// Patroni's REST API). It names its holder in its organizational unit, not its
    /// common name: etcd's JSON gateway (what Patroni speaks) refuses a client
    /// certificate with a common name once authentication is on, since it would not
    /// take the user from it.
    Client,
    /// Both, for the two ends of a connection between peers (etcd members).
    Peer,
}

/// A certificate issued for one node, and its private key (PEM, PKCS#8).
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its private key, PEM: a secret, zeroized on drop.
    pub key_pem: SecretBytes,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("certificate_pem", &self.certificate_pem)
            .field("key_pem", &"REDACTED")
            .finish()
    }
}

impl IssuingCa {
    /// Makes a new CA named `common_name`, its key sealed with `sealer`.
    pub fn generate(common_name: &str, sealer: &Sealer) -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = ca_params(common_name)?.self_signed(&key).map_err(tls_err)?;
        let der = Zeroizing::new(key.serialize_der());
        Ok(Self {
            common_name: common_name.to_string(),
            ca_der: B64.encode(cert.der()),
            sealed_key: B64.encode(sealer.seal(SEAL_AAD, &der)?),
        })
    }

    /// The CA certificate, PEM: what clients trust.
    pub fn ca_pem(&self) -> Result<String, Error> {
        Ok(pem_certificate(&decode(&self.ca_der)?))
    }

    /// Issues a server certificate named `common_name` for `names` (IP addresses
    /// become IP subject alternative names, others DNS names), valid from a few
    /// minutes ago for `lifetime`, with a new key. `sealer` opens the CA key (the
    /// one it was generated with).
    pub fn issue(
        &self,
        sealer: &Sealer,
        common_name: &str,
        names: &[String],
        lifetime: Duration,
    ) -> Result<IssuedCertificate, Error> {
        self.issue_for(CertificateUse::Server, sealer, common_name, names, lifetime)
    }

    /// [`IssuingCa::issue`] for `usage`.
    pub fn issue_for(
        &self,
        usage: CertificateUse,
        sealer: &Sealer,
        common_name: &str,
        names: &[String],
        lifetime: Duration,
    ) -> Result<IssuedCertificate, Error> {
        let ca_key = sealer
            .open(SEAL_AAD, &decode(&self.sealed_key)?)
            .map_err(|_| {
                Error::Tls(
                    "the sealed CA key does not open with this root key: give the root key \
                     or passphrase the state was created with"
                        .into(),
                )
            })?;
        let ca_key = KeyPair::try_from(ca_key.expose_secret()).map_err(tls_err)?;
        // The CA's parameters as at generation: leaves name its subject as issuer.
        let issuer = Issuer::new(ca_params(&self.common_name)?, ca_key);
        let key = KeyPair::generate().map_err(tls_err)?;
        let mut params = server_params(common_name, names.to_vec())?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + lifetime;
        if usage == CertificateUse::Client {
            let mut holder = DistinguishedName::new();
            holder.push(DnType::OrganizationalUnitName, common_name);
            params.distinguished_name = holder;
        }
        params.extended_key_usages = match usage {
            CertificateUse::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            CertificateUse::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            CertificateUse::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        let cert = params.signed_by(&key, &issuer).map_err(tls_err)?;
        Ok(IssuedCertificate {
            certificate_pem: cert.pem(),
            key_pem: SecretBytes::new(Zeroizing::new(key.serialize_pem()).as_bytes().to_vec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use pgcmk_crypto::SymmetricKey;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&SymmetricKey::generate().unwrap()).unwrap()
    }

    fn der_of(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        B64.decode(body).unwrap()
    }

    /// Verifies `leaf` for `host` against `ca` as a TLS client would.
    fn verify(ca: &str, leaf: &str, host: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(der_of(ca))).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        verifier
            .verify_server_cert(
                &CertificateDer::from(der_of(leaf)),
                &[],
                &ServerName::try_from(host.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn leaves_verify_for_their_names_only_and_under_their_ca_only() {
        let sealer = sealer();
        let ca = IssuingCa::generate("test servers CA", &sealer).unwrap();
        let stored: IssuingCa = serde_json::from_str(&serde_json::to_string(&ca).unwrap()).unwrap();
        let names = ["127.0.0.1".to_string(), "db.example".to_string()];
        let leaf = stored
            .issue(&sealer, "node", &names, Duration::from_secs(3600))
            .unwrap();
        let ca_pem = stored.ca_pem().unwrap();
        verify(&ca_pem, &leaf.certificate_pem, "127.0.0.1").unwrap();
        verify(&ca_pem, &leaf.certificate_pem, "db.example").unwrap();
        assert!(verify(&ca_pem, &leaf.certificate_pem, "127.0.0.2").is_err());
        let other = IssuingCa::generate("test servers CA", &sealer).unwrap();
        assert!(verify(&other.ca_pem().unwrap(), &leaf.certificate_pem, "127.0.0.1").is_err());
        let key = std::str::from_utf8(leaf.key_pem.expose_secret()).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "a PEM key");
        assert!(!format!("{leaf:?}").contains("PRIVATE"), "{leaf:?}");
    }

    #[test]
    fn a_client_certificate_is_no_server_certificate() {
        let sealer = sealer();
        let ca = IssuingCa::generate("test etcd CA", &sealer).unwrap();
        let names = ["127.0.0.1".to_string()];
        let lifetime = Duration::from_secs(60);
        let ca_pem = ca.ca_pem().unwrap();
        for (usage, serves) in [
            (CertificateUse::Client, false),
            (CertificateUse::Server, true),
            (CertificateUse::Peer, true),
        ] {
            let leaf = ca.issue_for(usage, &sealer, "x", &names, lifetime).unwrap();
            let verified = verify(&ca_pem, &leaf.certificate_pem, "127.0.0.1");
            assert_eq!(verified.is_ok(), serves, "{usage:?}: {verified:?}");
        }
    }

    #[test]
    fn each_certificate_has_a_key_of_its_own() {
        let sealer = sealer();
        let ca = IssuingCa::generate("test servers CA", &sealer).unwrap();
        let names = ["127.0.0.1".to_string()];
        let a = ca
            .issue(&sealer, "a", &names, Duration::from_secs(60))
            .unwrap();
        let b = ca
            .issue(&sealer, "a", &names, Duration::from_secs(60))
            .unwrap();
        assert_ne!(a.key_pem.expose_secret(), b.key_pem.expose_secret());
    }

    #[test]
    fn the_ca_key_opens_only_with_its_sealer() {
        let ca = IssuingCa::generate("test servers CA", &sealer()).unwrap();
        let err = ca
            .issue(&sealer(), "node", &[], Duration::from_secs(60))
            .unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
    }
}
