//! Loopback ports for the servers a test starts.

/// A TCP port on 127.0.0.1 that is free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
