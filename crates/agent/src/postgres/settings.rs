//! The PostgreSQL settings every pgcmk server runs with, in one place: the agent
//! passes them on `postgres`'s command line, and on a node of a highly available
//! server it writes them into Patroni's configuration ([`crate::patroni`]).

/// The settings for a server that listens on `listen_addresses` (PostgreSQL's
/// syntax: a comma-separated list), as `(name, value)` pairs.
pub fn base_settings(listen_addresses: &str) -> Vec<(&'static str, String)> {
    vec![
        ("listen_addresses", listen_addresses.to_string()),
        // The logging collector writes inside the data directory, so the server
        // log is on the encrypted mount like everything else.
        ("logging_collector", "on".into()),
        ("log_directory", "log".into()),
        // On cryptfs a WAL write opened with O_DSYNC is one request to the
        // filesystem (write, seal and sync together); write + fdatasync is two.
        // Measured with the WAL pattern in bench/RESULTS.md: 221-233 µs per flush
        // instead of 267-352 (the plain disk: the same with either).
        ("wal_sync_method", "open_datasync".into()),
        // With O_DSYNC, a WAL switch (every backup's start and stop, every
        // archive_timeout) pads the rest of the segment; with WAL buffers smaller
        // than a segment PostgreSQL writes that padding one synced 8 KiB page at a
        // time as it recycles buffers: 1-6 s per switch on cryptfs (and on the
        // plain disk) instead of 50-90 ms with one segment of buffers (RESULTS.md).
        ("wal_buffers", "16MB".into()),
    ]
}
