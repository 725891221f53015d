//! What one client may cost a listener before it has proved anything: how long it
//! may take to finish its TLS handshake, its headers and its body, and how many
//! connections it (and everyone together) may hold. A client over a limit is
//! dropped; nothing it sent is buffered beyond the body limit its route sets.

use std::time::Duration;

/// Most connections a listener holds at once unless the open-file limit says fewer.
const MAX_CONNECTIONS: usize = 1024;

/// A listener's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time to complete the TLS handshake after the TCP connection.
    pub handshake: Duration,
    /// Time to send a request's headers (also the idle time allowed between requests
    /// on a kept-alive connection).
    pub headers: Duration,
    /// Time to send a request's whole body, counted from the end of its headers.
    pub body: Duration,
    /// Connections held at once, from everyone.
    pub max_connections: usize,
    /// Connections held at once from one client address.
    pub max_per_client: usize,
    /// Largest body a request may declare (`Content-Length`); a larger one is
    /// answered 413 without reading it. Routes set their own, smaller limits.
    pub max_body_bytes: u64,
}

impl Default for Limits {
    /// Half of the process's open-file limit (the other half for its files, its
    /// database and its children), at most 1024 connections; a quarter of them for
    /// one address.
    fn default() -> Self {
        let max_connections =
            open_file_limit().map_or(MAX_CONNECTIONS, |n| (n / 2).clamp(8, MAX_CONNECTIONS));
        Self {
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(30),
            body: Duration::from_secs(30),
            max_connections,
            max_per_client: (max_connections / 4).max(4),
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_half_the_open_files_to_the_process() {
        let limits = Limits::default();
        let open = open_file_limit().expect("Linux has /proc/self/limits");
        assert!(limits.max_connections <= open / 2 || limits.max_connections == 8);
        assert!(limits.max_connections <= MAX_CONNECTIONS);
        assert!(limits.max_per_client < limits.max_connections);
    }
}
