//! Clients that trust exactly one service's local CA (no system roots, no
//! "accept invalid certificates"), with errors that say which file to give.

use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Reads the CA certificate at `path`; `how_to_fix` ends each error message
/// (e.g. "pass --ca-cert or set PGCMK_CONTROL_CA_CERT to STATE/ca.pem").
pub fn read_ca_pem(path: &Path, how_to_fix: &str) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::Trust(format!(
            "cannot read the CA certificate {} ({e}): {how_to_fix}",
            path.display()
        ))
    })?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        _ => Err(Error::Trust(format!(
            "{} holds no PEM certificate: {how_to_fix}",
            path.display()
        ))),
    }
}

/// A blocking HTTPS client that trusts only the certificates in `ca_pem` and
/// speaks HTTPS only.
pub fn blocking_client(
    ca_pem: &[u8],
    timeout: Duration,
) -> Result<reqwest::blocking::Client, Error> {
    blocking_client_from(ca_pem, timeout, None)
}

/// Like [`blocking_client`], its connections leaving from `local_address` when
/// given (a host whose peer checks its requests' source address).
pub fn blocking_client_from(
    ca_pem: &[u8],
    timeout: Duration,
    local_address: Option<std::net::IpAddr>,
) -> Result<reqwest::blocking::Client, Error> {
    let certs = reqwest::Certificate::from_pem_bundle(ca_pem)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::Trust("the CA certificate is not a PEM certificate".into()))?;
    reqwest::blocking::Client::builder()
        .tls_certs_only(certs)
        .https_only(true)
        .timeout(timeout)
        .local_address(local_address)
        .build()
        .map_err(|e| Error::Trust(format!("cannot build an HTTPS client: {e}")))
}

/// True when `error` (from a request) is a TLS certificate the client does not
/// trust: the service was made by another CA than the one given.
pub fn is_untrusted_certificate(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref() {
            return true;
        }
        // An io::Error's source() skips the error it wraps: step into it instead.
        cause = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}
