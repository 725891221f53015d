//! pgBackRest as the agent runs it: its configuration file on the server's
//! encrypted mount (the one place the repository passphrase is written), and its
//! commands, run as PostgreSQL's user with an empty environment. The passphrase
//! is never in an argument or an environment variable: pgBackRest reads it from
//! the file, and refuses it on a command line itself.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pgcmk_crypto::Dek;
use zeroize::Zeroizing;

use super::key;
use crate::contract::{BackupConfig, ServerDir};
use crate::error::IoContext;
use crate::postgres::{PgInstall, PgLayout};
use crate::Error;

/// Where the Debian package installs pgBackRest.
const PROGRAM: &str = "/usr/bin/pgbackrest";
/// Seconds a backup waits for the WAL it needs to reach the archive, and an
/// `archive-push` for the asynchronous pusher.
const ARCHIVE_TIMEOUT_SECS: u32 = 60;

/// pgBackRest for one server: its program, configuration and stanza.
#[derive(Clone, Debug)]
pub(crate) struct PgBackRest {
    install: PgInstall,
    program: PathBuf,
    /// The directory of the configuration, log, spool and lock files.
    engine_dir: PathBuf,
    config_file: PathBuf,
    stanza: String,
}

impl PgBackRest {
    /// pgBackRest for the server in `dir` (whose stanza is named after its id).
    pub(crate) fn new(dir: &ServerDir, server_id: &str, install: PgInstall) -> Result<Self, Error> {
        Self::at(dir.backup_engine_dir(), server_id, install)
    }

    /// pgBackRest for `stanza`, with its files in `engine_dir` (on a mount).
    pub(crate) fn at(engine_dir: PathBuf, stanza: &str, install: PgInstall) -> Result<Self, Error> {
        let program = PathBuf::from(PROGRAM);
        if !program.exists() {
            return Err(Error::Backup(format!(
                "pgBackRest is not installed ({PROGRAM} is missing): install the Debian \
                 package pgbackrest (scripts/setup does)"
            )));
        }
        Ok(Self {
            install,
            program,
            config_file: engine_dir.join("pgbackrest.conf"),
            engine_dir,
            stanza: stanza.to_string(),
        })
    }

    /// Writes the configuration (mode 0600, PostgreSQL's user) and creates the log,
    /// spool and lock directories beside it on the mount, and the repository.
    pub(crate) fn configure(
        &self,
        layout: &PgLayout,
        backup: &BackupConfig,
        repository_key: &Dek,
    ) -> Result<(), Error> {
        let user = self.install.user();
        let engine = &self.engine_dir;
        for path in [
            engine.clone(),
            engine.join("log"),
            engine.join("spool"),
            engine.join("lock"),
            backup.repository.clone(),
        ] {
            fs::create_dir_all(&path).ctx(|| format!("creating {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .ctx(|| format!("setting permissions of {}", path.display()))?;
            user.chown(&path)?;
        }
        let text = self.render(engine, layout, backup, repository_key);
        pgcmk_hostkeys::files::write_atomic(&self.config_file, text.as_bytes(), 0o600)?;
        user.chown(&self.config_file)
    }

    /// The configuration file's text.
    fn render(
        &self,
        engine: &Path,
        layout: &PgLayout,
        backup: &BackupConfig,
        repository_key: &Dek,
    ) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::new());
        let passphrase = key::passphrase(repository_key);
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "[global]\n\
             repo1-path={repo}\n\
             repo1-cipher-type=aes-256-cbc\n\
             repo1-cipher-pass={pass}\n\
             repo1-retention-full-type=time\n\
             repo1-retention-full={days}\n\
             compress-type=zst\n\
             archive-async=y\n\
             archive-timeout={ARCHIVE_TIMEOUT_SECS}\n\
             start-fast=y\n\
             spool-path={engine}/spool\n\
             lock-path={engine}/lock\n\
             log-path={engine}/log\n\
             log-level-console=off\n\
             log-level-stderr=warn\n\
             log-level-file=info\n\
             \n\
             [{stanza}]\n\
             pg1-path={data}\n\
             pg1-port={port}\n\
             pg1-socket-path={socket}\n",
            repo = backup.repository.display(),
            pass = passphrase.as_str(),
            days = backup.retention_days,
            engine = engine.display(),
            stanza = self.stanza,
            data = layout.data_dir.display(),
            port = layout.port,
            socket = layout.socket_dir.display(),
        );
        text
    }

    /// `pgbackrest --config=FILE --stanza=ID` followed by `args`, as PostgreSQL's
    /// user, with an empty environment and no stdin.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.install.run_as_postgres(&self.program);
        cmd.arg(format!("--config={}", self.config_file.display()))
            .arg(format!("--stanza={}", self.stanza))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `args` to its end; its stdout, or its failure with what it said.
    pub(crate) fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = self
            .command(args)
            .output()
            .ctx(|| format!("running pgbackrest {}", args.join(" ")))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(Error::Backup(format!(
            "pgbackrest {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    /// The pids of the pgBackRest processes running with this configuration.
    pub(crate) fn running_processes(&self) -> Vec<u32> {
        let config = format!("--config={}", self.config_file.display());
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                let cmdline = fs::read(e.path().join("cmdline")).ok()?;
                cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == config.as_bytes())
                    .then_some(pid)
            })
            .collect()
    }

    /// Creates the stanza from the cluster's control file (PostgreSQL need not
    /// run); a no-op when it exists and matches the cluster.
    pub(crate) fn create_stanza(&self) -> Result<(), Error> {
        self.run(&["--no-online", "stanza-create"]).map(drop)
    }

    /// PostgreSQL's `archive_command`: pushes each finished WAL segment to the
    /// repository through pgBackRest's asynchronous pusher.
    pub(crate) fn archive_command(&self) -> String {
        format!(
            "{} {} {} archive-push %p",
            shell_word(&self.program.display().to_string()),
            shell_word(&format!("--config={}", self.config_file.display())),
            shell_word(&format!("--stanza={}", self.stanza)),
        )
    }
}

/// `word` quoted for the shell PostgreSQL runs `archive_command` with, and with
/// `%` doubled as PostgreSQL's placeholders require.
fn shell_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''").replace('%', "%%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_survive_quotes_and_percent_signs() {
        assert_eq!(shell_word("/a b/c"), "'/a b/c'");
        assert_eq!(shell_word("it's 100%"), r"'it'\''s 100%%'");
    }
}
