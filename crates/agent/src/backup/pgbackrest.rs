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

use pgcmk_crypto::{Dek, SecretBytes};
use zeroize::Zeroizing;

use super::key;
use crate::contract::backup::{AzureStore, Repository};
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
    /// Every node of a highly available server pushes each segment
    /// (`archive_mode=always`): see [`PgBackRest::archiving_on_every_node`].
    every_node_archives: bool,
}

impl PgBackRest {
    /// pgBackRest for the server in `dir`, with `stanza` (named after the id of
    /// the server the repository belongs to: its own, or the highly available
    /// server it is a node of).
    pub(crate) fn new(dir: &ServerDir, stanza: &str, install: PgInstall) -> Result<Self, Error> {
        Self::at(dir.backup_engine_dir(), stanza, install)
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
            every_node_archives: false,
        })
    }

    /// pgBackRest for a node of a highly available server, whose PostgreSQL
    /// archives with `archive_mode=always` (`docs/backups.md`). pgBackRest 2.45
    /// refuses to back up such a cluster while it checks the archive
    /// ("archive_mode=always not supported"), so its backups do not wait for
    /// their WAL to reach the archive (`archive-check=n`). The second push of each
    /// segment is a warning ("already exists ... with the same checksum"): it goes
    /// to pgBackRest's own log only, not on every segment into PostgreSQL's
    /// (`log-level-stderr=error`).
    pub(crate) fn archiving_on_every_node(mut self) -> Self {
        self.every_node_archives = true;
        self
    }

    /// Writes the configuration (mode 0600, PostgreSQL's user) and creates the log,
    /// spool and lock directories beside it on the mount, and the repository (a
    /// local one); with `keys.geo`, the server's geo-redundant copy too (`repo2`).
    pub(crate) fn configure(
        &self,
        layout: &PgLayout,
        backup: &BackupConfig,
        keys: &RepositoryKeys<'_>,
    ) -> Result<(), Error> {
        let engine = &self.engine_dir;
        for path in [
            engine.clone(),
            engine.join("log"),
            engine.join("spool"),
            engine.join("lock"),
        ] {
            self.private_dir(&path)?;
        }
        let store = self.store(
            &backup.repository,
            backup.azure.as_ref(),
            keys.storage.own,
            "storage_key",
        )?;
        let mut text = self.render(engine, layout);
        // Room for the repositories: no reallocation leaves a passphrase behind.
        text.reserve(REPOSITORY_ROOM);
        text.insert_str(
            GLOBAL.len(),
            &repository_lines(
                1,
                &backup.repository,
                keys.cipher,
                backup.retention_days,
                store,
            ),
        );
        self.write_config(&text)?;
        self.set_geo(backup, keys.geo, keys.storage.geo)
    }

    /// Adds the geo-redundant copy (`repo2`) to the configuration with its key
    /// `geo_key` (and, for a copy in Azure Blob Storage, its account's key
    /// `storage`), or takes it out with `None` (its key is refused): pgBackRest
    /// reads the file at each command, so archiving and backups follow at once.
    pub(crate) fn set_geo(
        &self,
        backup: &BackupConfig,
        geo_key: Option<&Dek>,
        storage: Option<&SecretBytes>,
    ) -> Result<(), Error> {
        let old = Zeroizing::new(
            fs::read_to_string(&self.config_file)
                .ctx(|| format!("reading {}", self.config_file.display()))?,
        );
        let geo_lines = match (&backup.geo, geo_key) {
            (Some(geo), Some(key)) => {
                let store = self.store(
                    &geo.repository,
                    geo.azure.as_ref(),
                    storage,
                    "geo_storage_key",
                )?;
                Some(repository_lines(
                    2,
                    &geo.repository,
                    key,
                    backup.retention_days,
                    store,
                ))
            }
            _ => None,
        };
        self.write_config(&with_geo(&old, geo_lines.as_deref().map(String::as_str)))
    }

    /// Keeps full backups (and the WAL they need) `days` days in every repository
    /// from the next expiry on (after the next backup).
    pub(crate) fn set_retention(&self, days: u32) -> Result<(), Error> {
        let old = Zeroizing::new(
            fs::read_to_string(&self.config_file)
                .ctx(|| format!("reading {}", self.config_file.display()))?,
        );
        self.write_config(&with_retention(&old, days))
    }

    /// True when the configuration names repository `repo` now (the geo copy is
    /// taken out while its key is refused).
    pub(crate) fn has_repository(&self, repo: Repository) -> Result<bool, Error> {
        let text = Zeroizing::new(
            fs::read_to_string(&self.config_file)
                .ctx(|| format!("reading {}", self.config_file.display()))?,
        );
        let prefix = format!("repo{}-path=", repo.number());
        Ok(text.lines().any(|l| l.starts_with(&prefix)))
    }

    /// Where a repository at `path` is kept: in `azure`'s container with the
    /// account's key `key` (which came in the handshake's field `field`), or in the
    /// local directory `path`, created here.
    fn store<'a>(
        &self,
        path: &Path,
        azure: Option<&'a AzureStore>,
        key: Option<&'a SecretBytes>,
        field: &str,
    ) -> Result<Option<(&'a AzureStore, &'a SecretBytes)>, Error> {
        match (azure, key) {
            (None, _) => self.private_dir(path).map(|()| None),
            (Some(azure), Some(key)) => Ok(Some((azure, key))),
            (Some(azure), None) => Err(Error::Backup(format!(
                "the backup repository {} is in Azure Blob Storage (account {}), but the \
                 storage account's key did not come in the handshake ({field})",
                path.display(),
                azure.account
            ))),
        }
    }

    /// Creates `path` (0700, PostgreSQL's user) when it is not there.
    fn private_dir(&self, path: &Path) -> Result<(), Error> {
        fs::create_dir_all(path).ctx(|| format!("creating {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("setting permissions of {}", path.display()))?;
        self.install.user().chown(path)
    }

    fn write_config(&self, text: &str) -> Result<(), Error> {
        pgcmk_hostkeys::files::write_atomic(&self.config_file, text.as_bytes(), 0o600)?;
        self.install.user().chown(&self.config_file)
    }

    /// The configuration file's text, without its repositories.
    fn render(&self, engine: &Path, layout: &PgLayout) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::new());
        let (stderr, archive_check) = if self.every_node_archives {
            ("error", "archive-check=n\n")
        } else {
            ("warn", "")
        };
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "{GLOBAL}\
             compress-type=zst\n\
             archive-async=y\n\
             archive-timeout={ARCHIVE_TIMEOUT_SECS}\n\
             start-fast=y\n\
             spool-path={engine}/spool\n\
             lock-path={engine}/lock\n\
             log-path={engine}/log\n\
             log-level-console=off\n\
             log-level-stderr={stderr}\n\
             log-level-file=info\n\
             {archive_check}\
             \n\
             [{stanza}]\n\
             pg1-path={data}\n\
             pg1-port={port}\n\
             pg1-socket-path={socket}\n",
            engine = engine.display(),
            stderr = stderr,
            archive_check = archive_check,
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
        self.running_commands()
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The pgBackRest processes running with this configuration: pid and
    /// arguments (which hold no secret: the passphrase is only in the file).
    pub(crate) fn running_commands(&self) -> Vec<(u32, Vec<String>)> {
        let config = format!("--config={}", self.config_file.display());
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                let cmdline = fs::read(e.path().join("cmdline")).ok()?;
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.contains(&config).then_some((pid, args))
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

/// The first line of the configuration; the repositories' options follow it.
const GLOBAL: &str = "[global]\n";

/// Bytes reserved for the repositories' options (their paths are short).
const REPOSITORY_ROOM: usize = 4096;

/// The configuration `config` with the repository options of `repo2` replaced by
/// `geo_lines` (none: no geo copy).
fn with_geo(config: &str, geo_lines: Option<&str>) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(config.len() + REPOSITORY_ROOM));
    for line in config.lines().filter(|l| !l.starts_with("repo2-")) {
        text.push_str(line);
        text.push('\n');
    }
    if let Some(lines) = geo_lines {
        text.insert_str(GLOBAL.len(), lines);
    }
    text
}

/// The configuration `config` with every repository's `retention-full` set to `days`.
fn with_retention(config: &str, days: u32) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(config.len() + 16));
    for line in config.lines() {
        match line.split_once("-retention-full=") {
            Some((repo, _)) if repo.starts_with("repo") => {
                let _ = writeln!(text, "{repo}-retention-full={days}");
            }
            _ => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

/// The keys of a server's repositories, for its pgBackRest configuration.
pub(crate) struct RepositoryKeys<'a> {
    /// The repository key of the server's own repository (`repo1`).
    pub(crate) cipher: &'a Dek,
    /// The geo-redundant copy's, when the server has one and the geo key unwrapped it.
    pub(crate) geo: Option<&'a Dek>,
    /// The storage accounts' keys, for repositories in Azure Blob Storage.
    pub(crate) storage: StorageKeys<'a>,
}

/// The shared keys of the storage accounts that hold a server's repositories in
/// Azure Blob Storage (from the handshake).
#[derive(Clone, Copy, Default)]
pub(crate) struct StorageKeys<'a> {
    /// The account of the server's own repository (`repo1`): `storage_key`.
    pub(crate) own: Option<&'a SecretBytes>,
    /// The paired location's account, of the geo-redundant copy (`repo2`):
    /// `geo_storage_key`.
    pub(crate) geo: Option<&'a SecretBytes>,
}

/// pgBackRest's options of repository `n` at `path` (in the Azure container of
/// `azure`, with the account's key, when given), encrypted with the passphrase of
/// `key`, its full backups kept `days` days.
fn repository_lines(
    n: u8,
    path: &Path,
    key: &Dek,
    days: u32,
    azure: Option<(&AzureStore, &SecretBytes)>,
) -> Zeroizing<String> {
    let passphrase = key::passphrase(key);
    let mut text = Zeroizing::new(String::with_capacity(REPOSITORY_ROOM));
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "repo{n}-path={path}\n\
         repo{n}-cipher-type=aes-256-cbc\n\
         repo{n}-cipher-pass={pass}\n\
         repo{n}-retention-full-type=time\n\
         repo{n}-retention-full={days}\n",
        path = path.display(),
        pass = passphrase.as_str(),
    );
    if let Some((store, account_key)) = azure {
        let _ = write!(
            text,
            "repo{n}-type=azure\n\
             repo{n}-azure-account={account}\n\
             repo{n}-azure-container={container}\n\
             repo{n}-azure-key={key}\n\
             repo{n}-azure-uri-style={style}\n\
             repo{n}-storage-host={host}\n\
             repo{n}-storage-port={port}\n",
            account = store.account,
            container = store.container,
            key = String::from_utf8_lossy(account_key.expose_secret()).trim(),
            style = if store.path_style { "path" } else { "host" },
            host = store.host,
            port = store.port,
        );
        if let Some(ca) = &store.ca_file {
            let _ = writeln!(text, "repo{n}-storage-ca-file={}", ca.display());
        }
    }
    text
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
    fn the_geo_copy_is_added_and_taken_out_of_the_configuration() {
        let key = Dek::from_slice(&[0xcd; 32]).unwrap();
        let repo1 = repository_lines(1, Path::new("/r1"), &key, 7, None);
        let base = format!("{GLOBAL}{}compress-type=zst\n", repo1.as_str());
        let repo2 = repository_lines(2, Path::new("/r2"), &key, 7, None);
        let with = with_geo(&base, Some(&repo2));
        assert!(
            with.starts_with("[global]\nrepo2-path=/r2\n"),
            "{}",
            with.as_str()
        );
        assert!(with.contains(&format!("repo2-cipher-pass={}\n", "cd".repeat(32))));
        assert!(with.contains("repo1-path=/r1\n") && with.ends_with("compress-type=zst\n"));
        let without = with_geo(&with, None);
        assert_eq!(without.as_str(), base);
        assert_eq!(with_geo(&with, Some(&repo2)).as_str(), with.as_str());
    }

    #[test]
    fn retention_changes_in_every_repository_and_nowhere_else() {
        let key = Dek::from_slice(&[0xab; 32]).unwrap();
        let repo1 = repository_lines(1, Path::new("/r1"), &key, 7, None);
        let repo2 = repository_lines(2, Path::new("/r2"), &key, 7, None);
        let base = format!(
            "{GLOBAL}{}{}compress-type=zst\n",
            repo2.as_str(),
            repo1.as_str()
        );
        let changed = with_retention(&base, 14);
        assert_eq!(
            changed.as_str(),
            base.replace("retention-full=7\n", "retention-full=14\n"),
        );
        assert!(changed.contains("repo1-retention-full-type=time\n"));
        assert!(changed.contains("repo2-retention-full=14\n"));
    }

    #[test]
    fn a_repository_in_azure_names_its_container_and_endpoint() {
        let key = Dek::from_slice(&[1; 32]).unwrap();
        let store = AzureStore {
            account: "acct".into(),
            container: "backups".into(),
            host: "127.0.0.1".into(),
            port: 10443,
            ca_file: Some("/ca.pem".into()),
            path_style: true,
        };
        let account_key = SecretBytes::new(b"a2V5\n".to_vec());
        let lines = repository_lines(1, Path::new("/id"), &key, 7, Some((&store, &account_key)));
        for expected in [
            "repo1-type=azure\n",
            "repo1-azure-account=acct\n",
            "repo1-azure-container=backups\n",
            "repo1-azure-key=a2V5\n",
            "repo1-azure-uri-style=path\n",
            "repo1-storage-host=127.0.0.1\n",
            "repo1-storage-port=10443\n",
            "repo1-storage-ca-file=/ca.pem\n",
            "repo1-path=/id\n",
        ] {
            assert!(
                lines.contains(expected),
                "{expected} not in {}",
                lines.as_str()
            );
        }
    }

    #[test]
    fn shell_words_survive_quotes_and_percent_signs() {
        assert_eq!(shell_word("/a b/c"), "'/a b/c'");
        assert_eq!(shell_word("it's 100%"), r"'it'\''s 100%%'");
    }
}
