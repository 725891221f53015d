//! Finding PostgreSQL's programs and the OS user it runs as.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::IoContext;
use crate::Error;

/// The PostgreSQL 15 binaries directory preferred when present.
const DEFAULT_BINDIR: &str = "/usr/lib/postgresql/15/bin";
/// The operating system user PostgreSQL runs as.
const PG_OS_USER: &str = "postgres";

/// An operating system user, as found in /etc/passwd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl OsUser {
    /// Looks `name` up in /etc/passwd.
    pub fn lookup(name: &str) -> Result<Self, Error> {
        let passwd = fs::read_to_string("/etc/passwd").ctx(|| "reading /etc/passwd")?;
        passwd
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 4 && f[0] == name).then(|| {
                    Some(OsUser {
                        name: name.to_string(),
                        uid: f[2].parse().ok()?,
                        gid: f[3].parse().ok()?,
                    })
                })?
            })
            .ok_or_else(|| {
                Error::Postgres(format!(
                    "the operating system user '{name}' does not exist: install PostgreSQL 15 \
                     (scripts/setup does) so that its system user is created"
                ))
            })
    }

    /// Gives `path` to this user.
    pub fn chown(&self, path: &Path) -> Result<(), Error> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .ctx(|| format!("giving {} to user {}", path.display(), self.name))
    }
}

/// Where PostgreSQL is installed and the user it runs as.
#[derive(Clone, Debug)]
pub struct PgInstall {
    bindir: PathBuf,
    user: OsUser,
}

impl PgInstall {
    /// Finds PostgreSQL 15: `/usr/lib/postgresql/15/bin`, else `pg_config --bindir`.
    pub fn discover() -> Result<Self, Error> {
        let bindir = if Path::new(DEFAULT_BINDIR).join("postgres").exists() {
            PathBuf::from(DEFAULT_BINDIR)
        } else {
            let out = Command::new("pg_config")
                .arg("--bindir")
                .output()
                .map_err(|e| {
                    Error::Postgres(format!(
                        "PostgreSQL 15 not found in {DEFAULT_BINDIR} and pg_config failed ({e}): \
                         install postgresql-15"
                    ))
                })?;
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        };
        if !bindir.join("postgres").exists() || !bindir.join("initdb").exists() {
            return Err(Error::Postgres(format!(
                "no postgres/initdb in {}: install postgresql-15",
                bindir.display()
            )));
        }
        Ok(Self {
            bindir,
            user: OsUser::lookup(PG_OS_USER)?,
        })
    }

    /// The user PostgreSQL runs as.
    pub fn user(&self) -> &OsUser {
        &self.user
    }

    /// The directory of PostgreSQL's programs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Path of one of the PostgreSQL programs.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// Runs `sql` with `psql` over TCP on 127.0.0.1:`port` as `postgres` with
    /// `password`; returns what it printed (unaligned, tuples only) or its error text.
    pub fn psql(&self, port: u16, password: &str, sql: &str) -> Result<String, String> {
        self.psql_at(
            &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
            password,
            sql,
        )
    }

    /// Runs `sql` with `psql` on the libpq URI `uri` (one host or several, as a
    /// highly available server's connection string) with `password`; returns what it
    /// printed (unaligned, tuples only) or its error text.
    pub fn psql_at(&self, uri: &str, password: &str, sql: &str) -> Result<String, String> {
        self.psql_within(uri, password, sql, std::time::Duration::from_secs(600))
    }

    /// [`PgInstall::psql_at`], given up (psql killed) after `limit`: a server that
    /// hangs (a host gone) holds an established connection forever, which no libpq
    /// timeout ends.
    pub fn psql_within(
        &self,
        uri: &str,
        password: &str,
        sql: &str,
        limit: std::time::Duration,
    ) -> Result<String, String> {
        let out = Command::new("timeout")
            .args(["-s", "KILL", &limit.as_secs().max(1).to_string()])
            .arg(self.program("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                uri,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "3")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// A command for `program` that runs as the PostgreSQL user with a minimal environment.
    pub(super) fn command_as_postgres(&self, program: &str) -> Command {
        self.run_as_postgres(&self.program(program))
    }

    /// A command for the program at `path` (PostgreSQL's or a tool that works on its
    /// files, as pgBackRest) that runs as the PostgreSQL user with a minimal
    /// environment: nothing of the agent's reaches it.
    pub(crate) fn run_as_postgres(&self, path: &Path) -> Command {
        let mut cmd = Command::new(path);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .current_dir("/")
            .uid(self.user.uid)
            .gid(self.user.gid);
        cmd
    }
}
