//! Whether a running server is a primary now, asked of PostgreSQL itself: on a
//! node of a highly available server Patroni decides the role, and only
//! PostgreSQL knows whether a promotion or demotion has happened yet.

use std::process::Stdio;

use super::{PgInstall, PgLayout, SUPERUSER};

impl PgInstall {
    /// True when the server running with `layout` accepts connections on its
    /// socket, is not in recovery (`pg_is_in_recovery()` is false) and its
    /// promotion, if it was promoted, is complete: the last checkpoint in
    /// `pg_control` is on the timeline it writes. Until then pgBackRest refuses to
    /// back it up ("WAL timeline N does not match pg_control timeline M"). A server
    /// that is down, starting, or a standby is not a primary.
    pub(crate) fn is_primary(&self, layout: &PgLayout) -> bool {
        self.command_as_postgres("psql")
            .args(["-X", "-A", "-t", "-q", "-h"])
            .arg(&layout.socket_dir)
            .args(["-p", &layout.port.to_string()])
            .args(["-U", SUPERUSER, "-d", "postgres"])
            .args(["-c", PROMOTED])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"t")
    }
}

/// A primary whose checkpoint in `pg_control` is on its current timeline (the
/// timeline is the first 8 hex digits of a WAL file's name). `CASE`, so that
/// `pg_current_wal_lsn()` is not called during recovery, where it fails.
const PROMOTED: &str = "SELECT CASE WHEN pg_is_in_recovery() THEN false ELSE \
     (SELECT timeline_id FROM pg_control_checkpoint()) = \
     ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";
