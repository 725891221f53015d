//! What the mount tells Prometheus through its process's recorder (the node agent's
//! `--metrics-listen`): requests by opcode with their latency, bytes through the
//! mount, and blocks that failed authentication by the class of their file.
//!
//! The handles are registered once, at mount, so a request costs two clock reads and
//! a few atomic adds — no lookup by name, no lock, no allocation (bench/RESULTS.md
//! measures it). Without an installed recorder every handle is a no-op.

use std::time::Instant;

use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Histogram, Unit};

/// The FUSE requests counted, by the name of their opcode in the `op` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Releasedir,
    Fsyncdir,
    Statfs,
    Create,
    Fallocate,
    /// xattr and ioctl requests, all refused.
    Unsupported,
}

impl Op {
    const ALL: [Op; 26] = [
        Op::Lookup,
        Op::Forget,
        Op::Getattr,
        Op::Setattr,
        Op::Readlink,
        Op::Mknod,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Symlink,
        Op::Rename,
        Op::Link,
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Flush,
        Op::Release,
        Op::Fsync,
        Op::Opendir,
        Op::Readdir,
        Op::Releasedir,
        Op::Fsyncdir,
        Op::Statfs,
        Op::Create,
        Op::Fallocate,
        Op::Unsupported,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Forget => "forget",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Symlink => "symlink",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Releasedir => "releasedir",
            Op::Fsyncdir => "fsyncdir",
            Op::Statfs => "statfs",
            Op::Create => "create",
            Op::Fallocate => "fallocate",
            Op::Unsupported => "unsupported",
        }
    }
}

/// The class of a file whose block failed authentication, from its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileClass {
    /// Relations, catalogs and everything else.
    Data,
    /// Under `pg_wal`.
    Wal,
    /// Under a `pgsql_tmp` directory (sorts and hashes spilled by queries).
    Temp,
}

impl FileClass {
    /// The class of the file at `path` (as the mount shows it).
    pub(crate) fn of(path: &str) -> Self {
        let mut parts = path.split('/');
        if parts.clone().any(|p| p == "pg_wal") {
            FileClass::Wal
        } else if parts.any(|p| p == "pgsql_tmp" || p.starts_with("pgsql_tmp")) {
            FileClass::Temp
        } else {
            FileClass::Data
        }
    }

    fn label(self) -> &'static str {
        match self {
            FileClass::Data => "data",
            FileClass::Wal => "wal",
            FileClass::Temp => "temp",
        }
    }
}

/// Gives each metric its `# HELP` line.
fn describe() {
    describe_counter!("pgcmk_cryptfs_requests_total", "FUSE requests by opcode");
    describe_histogram!(
        "pgcmk_cryptfs_request_duration_seconds",
        Unit::Seconds,
        "Time to handle and answer a FUSE request, by opcode"
    );
    describe_counter!(
        "pgcmk_cryptfs_read_bytes_total",
        Unit::Bytes,
        "Plaintext bytes read through the mount"
    );
    describe_counter!(
        "pgcmk_cryptfs_written_bytes_total",
        Unit::Bytes,
        "Plaintext bytes written through the mount"
    );
    describe_counter!(
        "pgcmk_cryptfs_auth_failures_total",
        "Blocks or headers that failed authentication (EIO), by file class"
    );
    describe_counter!(
        "pgcmk_cryptfs_crash_recoveries_total",
        "Mounts that found the volume dirty and ran crash recovery"
    );
    describe_counter!(
        "pgcmk_cryptfs_recovery_repaired_blocks_total",
        "Blocks crash recovery brought back to their last synced version"
    );
}

/// The handles of one opcode.
struct OpMetrics {
    requests: Counter,
    latency: Histogram,
}

/// Every handle the mount records into.
pub(crate) struct RequestMetrics {
    ops: Vec<OpMetrics>,
    bytes_read: Counter,
    bytes_written: Counter,
    auth_failures: [Counter; 3],
}

impl RequestMetrics {
    /// Registers every handle with the process's recorder.
    pub(crate) fn register() -> Self {
        describe();
        let ops = Op::ALL
            .iter()
            .map(|op| OpMetrics {
                requests: counter!("pgcmk_cryptfs_requests_total", "op" => op.label()),
                latency: histogram!("pgcmk_cryptfs_request_duration_seconds", "op" => op.label()),
            })
            .collect();
        let auth = |class: FileClass| counter!("pgcmk_cryptfs_auth_failures_total", "class" => class.label());
        Self {
            ops,
            bytes_read: counter!("pgcmk_cryptfs_read_bytes_total"),
            bytes_written: counter!("pgcmk_cryptfs_written_bytes_total"),
            auth_failures: [
                auth(FileClass::Data),
                auth(FileClass::Wal),
                auth(FileClass::Temp),
            ],
        }
    }

    /// Starts timing a request of `op`; it is counted when the timer drops.
    pub(crate) fn start(&self, op: Op) -> RequestTimer<'_> {
        // ALL lists the variants in declaration order.
        RequestTimer {
            metrics: &self.ops[op as usize],
            started: Instant::now(),
        }
    }

    /// Counts `n` plaintext bytes read through the mount.
    pub(crate) fn read(&self, n: usize) {
        self.bytes_read.increment(n as u64);
    }

    /// Counts `n` plaintext bytes written through the mount.
    pub(crate) fn written(&self, n: usize) {
        self.bytes_written.increment(n as u64);
    }

    /// Counts a block of a `class` file that failed authentication (answered EIO).
    pub(crate) fn auth_failure(&self, class: FileClass) {
        self.auth_failures[class as usize].increment(1);
    }
}

/// Times one request (see [`RequestMetrics::start`]).
pub(crate) struct RequestTimer<'a> {
    metrics: &'a OpMetrics,
    started: Instant,
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.metrics.requests.increment(1);
        self.metrics.latency.record(self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_indexes_its_own_handles() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?}");
        }
    }

    #[test]
    fn files_are_classed_by_their_directory() {
        for (path, class) in [
            ("/base/5/16384", FileClass::Data),
            ("/pg_wal/000000010000000000000001", FileClass::Wal),
            ("/base/pgsql_tmp/pgsql_tmp1234.0", FileClass::Temp),
            (
                "/pg_tblspc/16385/PG_15_202209061/pgsql_tmp/pgsql_tmp9.1",
                FileClass::Temp,
            ),
            ("/global/pg_control", FileClass::Data),
        ] {
            assert_eq!(FileClass::of(path), class, "{path}");
        }
    }
}
