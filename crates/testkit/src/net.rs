//! Loopback ports for the servers a test starts.

/// A TCP port on 127.0.0.1 that is free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TLS connection to `address` (`HOST:PORT` on loopback) trusting only the CA
/// certificate(s) in `ca_pem`, for tests that speak raw HTTP over it (a client that
/// misbehaves on purpose).
pub fn tls_connection(
    address: &str,
    ca_pem: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("a PEM certificate")).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = std::net::TcpStream::connect(address).unwrap();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "127.0.0.1".try_into().unwrap())
            .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends `head` (a request line and headers, ending in an empty line) over `tls` and
/// returns the start of the answer.
pub fn answer_to_head(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    head: &str,
) -> String {
    use std::io::{Read, Write};
    tls.write_all(head.as_bytes()).unwrap();
    tls.flush().unwrap();
    tls.sock
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut answer = [0u8; 256];
    let n = tls.read(&mut answer).unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}
