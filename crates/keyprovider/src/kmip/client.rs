//! One KMIP server over TLS with a client certificate (rustls, aws-lc-rs): a new
//! connection per operation, so that a refused certificate or a server gone is
//! what the next key check meets, bounded in time and in what it reads.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use pgcmk_crypto::SecretBytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use zeroize::Zeroize;

use super::message::{request, response_payload, Operation, ResponseError};
use super::ttlv::{Item, MAX_MESSAGE};
use super::uri::KmipKeyReference;
use crate::KeyError;

/// Time to connect, and for each read or write after.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A KMIP server and the client identity to present to it.
pub(super) struct KmipClient {
    /// `HOST:PORT`, for connecting and messages.
    address: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for KmipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmipClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

fn invalid(reason: String) -> KeyError {
    KeyError::Invalid { reason }
}

impl KmipClient {
    /// A client for the server of `key`, trusting its `ca-file`, presenting the
    /// certificate chain and private key in the PEM `credential`.
    pub(super) fn new(key: &KmipKeyReference, credential: &SecretBytes) -> Result<Self, KeyError> {
        let ca_file = key.ca_file.as_ref().ok_or_else(|| {
            invalid(format!(
                "key {key}: say which CA issued the KMIP server's certificate with \
                 ?ca-file=/path/to/ca.pem in the key reference"
            ))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(ca_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(format!("reading the CA file {}: {e}", ca_file.display())))?;
        let (added, _) = roots.add_parsable_certificates(cas);
        if added == 0 {
            return Err(invalid(format!(
                "the CA file {} holds no usable certificate",
                ca_file.display()
            )));
        }
        let pem = credential.expose_secret();
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|c| !c.is_empty());
        let client_key = PrivateKeyDer::from_pem_slice(pem).ok();
        let (Some(chain), Some(client_key)) = (chain, client_key) else {
            return Err(invalid(
                "the KMIP credential file must hold the client's certificate (chain) and \
                 its private key, in PEM"
                    .into(),
            ));
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_root_certificates(roots)
                    .with_client_auth_cert(chain, client_key)
            })
            .map_err(|e| invalid(format!("the KMIP client certificate or key: {e}")))?;
        let host = key.host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| invalid(format!("'{}' is not a host name or IP address", key.host)))?;
        Ok(Self {
            address: format!("{}:{}", key.host, key.port),
            server_name,
            tls: Arc::new(tls),
        })
    }

    /// Sends `operation` with `payload` and returns the response payload (which
    /// the caller wipes when it carries a secret).
    pub(super) fn call(&self, operation: Operation, payload: Vec<Item>) -> Result<Item, KeyError> {
        let what = format!("KMIP {operation:?} at {}", self.address);
        // Requests and answers may carry a DEK: wiped once used.
        let mut sent = request(operation, payload);
        let answer = self.exchange(&sent);
        sent.zeroize();
        let mut answer = answer.map_err(|e| classify_io(&what, e))?;
        let decoded = Item::decode(&answer);
        answer.zeroize();
        let mut message = decoded.map_err(|e| KeyError::Transient {
            reason: format!("{what}: the server sent a malformed message ({e})"),
        })?;
        let payload = response_payload(&message, operation);
        message.wipe();
        payload.map_err(|e| match e {
            ResponseError::Refused(r) if r.is_denial() => KeyError::Denied {
                reason: format!("{what}: refused (reason {:?}): {}", r.reason, r.message),
            },
            ResponseError::Refused(r) => KeyError::Transient {
                reason: format!("{what}: failed (reason {:?}): {}", r.reason, r.message),
            },
            ResponseError::Malformed(why) => KeyError::Transient {
                reason: format!("{what}: the server's answer is unusable ({why})"),
            },
        })
    }

    /// Writes `message` on a new connection and reads one answer.
    fn exchange(&self, message: &[u8]) -> std::io::Result<Vec<u8>> {
        let addr = self
            .address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("the host name resolves to no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let connection = rustls::ClientConnection::new(self.tls.clone(), self.server_name.clone())
            .map_err(std::io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        tls.write_all(message)?;
        tls.flush()?;
        let mut header = [0u8; 8];
        tls.read_exact(&mut header)?;
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > MAX_MESSAGE - header.len() {
            return Err(std::io::Error::other(format!(
                "the server announced a {len}-byte answer, over the limit"
            )));
        }
        let mut answer = header.to_vec();
        answer.resize(header.len() + len, 0);
        tls.read_exact(&mut answer[header.len()..])?;
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(answer)
    }
}

/// A refused client certificate is a denial (the customer revoked this client), and
/// so is a server certificate that the key's CA file did not issue (whoever answers
/// is not the customer's server); anything else on the way (refused connection,
/// timeout, reset) may pass.
fn classify_io(what: &str, e: std::io::Error) -> KeyError {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let reason = format!("{what}: {e}");
    match tls {
        Some(rustls::Error::AlertReceived(_)) => KeyError::Denied {
            reason: format!("{reason} (the server refused this client's certificate)"),
        },
        Some(rustls::Error::InvalidCertificate(_)) => KeyError::Denied {
            reason: format!(
                "{reason} (the KMIP server's certificate was not issued by a CA in the key's \
                 ca-file, or does not name this host: give the CA file of the server's CA)"
            ),
        },
        _ => KeyError::Transient { reason },
    }
}
