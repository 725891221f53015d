//! Setting the `postgres` superuser's password of a running server, and running
//! other statements as the superuser through its socket.

use std::io::Write;
use std::process::Stdio;

use pgcmk_crypto::SecretBytes;

use super::{PgInstall, PgLayout};
use crate::error::IoContext;
use crate::Error;

/// The superuser, whose password is set.
pub const SUPERUSER: &str = "postgres";

impl PgInstall {
    /// Sets the superuser's password of the server running with `layout` to
    /// `password`: as its SCRAM verifier ([`pgcmk_crypto::scram`]), through
    /// `psql` on the server's Unix socket (trusted, reachable by root and the
    /// PostgreSQL user only), with the statement on `psql`'s stdin.
    pub fn set_superuser_password(
        &self,
        layout: &PgLayout,
        password: &SecretBytes,
    ) -> Result<(), Error> {
        let verifier = pgcmk_crypto::scram::verifier(password.expose_secret())?;
        // A verifier is base64, digits and `$:=+/`: nothing to escape in a literal.
        let statement = format!("ALTER ROLE {SUPERUSER} PASSWORD '{verifier}';\n");
        self.run_statement(
            layout,
            &statement,
            &format!("setting the {SUPERUSER} password"),
        )
    }

    /// Creates `role` (a login role with the replication privilege) if it does not
    /// exist, and sets its password to `password` as a SCRAM verifier, like
    /// [`PgInstall::set_superuser_password`]. It may also call the functions
    /// `pg_rewind` reads the source's files with: a node of a server made highly
    /// available after create rewinds as this role (the platform does not know
    /// the superuser's password), and a role that can take a base backup reads
    /// every file anyway.
    pub fn set_replication_role(
        &self,
        layout: &PgLayout,
        role: &str,
        password: &SecretBytes,
    ) -> Result<(), Error> {
        let verifier = pgcmk_crypto::scram::verifier(password.expose_secret())?;
        let statement = format!(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN \
             CREATE ROLE {role}; END IF; END$$;\n\
             ALTER ROLE {role} WITH LOGIN REPLICATION PASSWORD '{verifier}';\n\
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean), \
             pg_catalog.pg_stat_file(text, boolean), pg_catalog.pg_read_binary_file(text), \
             pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {role};\n"
        );
        self.run_statement(layout, &statement, &format!("setting the role {role}"))
    }

    /// Runs `statement` as the superuser through `psql` on the server's Unix
    /// socket, the statement on `psql`'s stdin (never in an argument); `what` names
    /// it in an error.
    pub(crate) fn run_statement(
        &self,
        layout: &PgLayout,
        statement: &str,
        what: &str,
    ) -> Result<(), Error> {
        let mut child = self
            .command_as_postgres("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&layout.socket_dir)
            .args(["-p", &layout.port.to_string()])
            .args(["-U", SUPERUSER, "-d", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ctx(|| "running psql")?;
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(statement.as_bytes()));
        let out = child.wait_with_output().ctx(|| "waiting for psql")?;
        if let Some(written) = written {
            written.ctx(|| "writing to psql")?;
        }
        super::succeeded(what, &out)
    }
}
