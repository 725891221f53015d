//! Whether a running server is a primary now, asked of PostgreSQL itself: on a
//! node of a highly available server Patroni decides the role, and only
//! PostgreSQL knows whether a promotion or demotion has happened yet.

use std::process::Stdio;

use super::{PgInstall, PgLayout, SUPERUSER};

impl PgInstall {
    /// True when the server running with `layout` accepts connections on its
    /// socket and is not in recovery (`pg_is_in_recovery()` is false). A server
    /// that is down, starting, or a standby is not a primary.
    pub(crate) fn is_primary(&self, layout: &PgLayout) -> bool {
        self.command_as_postgres("psql")
            .args(["-X", "-A", "-t", "-q", "-h"])
            .arg(&layout.socket_dir)
            .args(["-p", &layout.port.to_string()])
            .args(["-U", SUPERUSER, "-d", "postgres"])
            .args(["-c", "SELECT pg_is_in_recovery()"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"f")
    }
}
