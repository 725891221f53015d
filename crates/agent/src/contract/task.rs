//! Short-lived runs of the node agent: `pgcmk agent --server-dir DIR TASK`.
//!
//! Some work on a server that is not running needs its DEK: adopting a rotated key
//! version, reading PostgreSQL's log (it lives on the encrypted volume), checking
//! the volume. Resetting the superuser's password of a serving server needs the
//! password in a process that may hold it: not the control plane. The control plane never holds a server's plaintext DEK, so it
//! starts the agent for one task instead. Like the node agent, the run reads its
//! managed identity's secret on stdin and unwraps through the vault; unlike it, it
//! never starts PostgreSQL, does its one task, answers on stdout and exits.
//!
//! This module is that contract: the tasks, their arguments and their answers.
//! [`crate::agent_task`] runs them in the agent; the control plane starts them.

use std::path::PathBuf;

use pgcmk_keyprovider::akv::AkvKeyVersionId;
use pgcmk_keyprovider::{KeyVersionId, WrappedDek};
use serde::{Deserialize, Serialize};

use super::backup::{BackupKind, Repository};

/// One task of a short-lived agent run (as JSON, how the control plane hands it
/// to a host daemon: `{"task": "backup-list"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum AgentTask {
    /// Re-wrap the DEK with the key's current version when the server follows
    /// rotation (versionless key) and the version moved on; prove that the vault
    /// unwraps it either way. Answers [`TaskAnswer`] of [`Wrapping`].
    AdoptKeyVersion,
    /// Print PostgreSQL's and the agent's logs as [`LogRecord`]s, one JSON document
    /// per line: from the live mount while the server serves, else from a private
    /// read-only mount of its volume.
    Logs {
        /// Lines of each log to start with.
        lines: usize,
        /// Keep printing lines as they are written (while the server serves).
        follow: bool,
    },
    /// Verify every block of the volume (the server must not be running). Answers
    /// [`TaskAnswer`] of [`VolumeCheck`].
    Fsck,
    /// Set the `postgres` superuser's password of the serving server to the
    /// handshake's `new_password` (PostgreSQL stores only its SCRAM verifier; the
    /// password is in no statement). Answers [`TaskAnswer`] of [`PasswordReset`].
    ResetPassword,
    /// Create (or update) the serving server's replication role for its read
    /// replicas ([`super::replica::REPLICATION_ROLE`]), with the handshake's
    /// `new_password` (as its SCRAM verifier). Answers [`TaskAnswer`] of
    /// [`PasswordReset`].
    ReplicationRole,
    /// List the serving server's complete backups and archived WAL. Answers
    /// [`TaskAnswer`] of [`BackupCatalog`](super::backup::BackupCatalog).
    BackupList,
    /// Take a backup of the serving server and wait for its end. Answers
    /// [`TaskAnswer`] of [`BackupSummary`](super::backup::BackupSummary).
    BackupCreate {
        /// Full, differential or incremental.
        kind: BackupKind,
        /// The server's own repository, or its geo-redundant copy.
        repository: Repository,
    },
    /// Verify every backup file and archived WAL segment of one repository of the
    /// serving server. Answers [`TaskAnswer`] of
    /// [`BackupVerification`](super::backup::BackupVerification).
    BackupVerify {
        /// The server's own repository, or its geo-redundant copy.
        repository: Repository,
    },
    /// The serving server's backups running now (its scheduled ones too), with
    /// their progress. Answers [`TaskAnswer`] of a list of
    /// [`RunningBackup`](super::backup::RunningBackup).
    BackupProgress,
    /// Prove that the vault unwraps the server's repository key (before a restore
    /// from its backups; the server need not run). Answers [`TaskAnswer`] of
    /// [`RepositoryKeyCheck`](super::backup::RepositoryKeyCheck).
    BackupKeyCheck,
    /// Prove that the geo vault unwraps the geo-redundant copy's repository key,
    /// as the geo identity (whose secret comes as the handshake's
    /// `geo_identity_secret`). Answers [`TaskAnswer`] of
    /// [`RepositoryKeyCheck`](super::backup::RepositoryKeyCheck).
    GeoBackupKeyCheck,
}

impl AgentTask {
    /// The subcommand name.
    pub fn name(&self) -> &'static str {
        match self {
            AgentTask::AdoptKeyVersion => "adopt-key-version",
            AgentTask::Logs { .. } => "logs",
            AgentTask::Fsck => "fsck",
            AgentTask::ResetPassword => "reset-password",
            AgentTask::ReplicationRole => "replication-role",
            AgentTask::BackupList => "backup-list",
            AgentTask::BackupCreate { .. } => "backup-create",
            AgentTask::BackupVerify { .. } => "backup-verify",
            AgentTask::BackupProgress => "backup-progress",
            AgentTask::BackupKeyCheck => "backup-key-check",
            AgentTask::GeoBackupKeyCheck => "geo-backup-key-check",
        }
    }

    /// Its arguments after `pgcmk agent --server-dir DIR` (the `pgcmk` command line
    /// parses them back; a test there keeps the two in step).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![self.name().to_string()];
        match self {
            AgentTask::Logs { lines, follow } => {
                args.extend(["--lines".to_string(), lines.to_string()]);
                if *follow {
                    args.push("--follow".into());
                }
            }
            AgentTask::BackupCreate { kind, repository } => {
                args.extend(["--type".to_string(), kind.as_str().to_string()]);
                args.extend(["--repository".into(), repository.number().to_string()]);
            }
            AgentTask::BackupVerify { repository } => {
                args.extend(["--repository".into(), repository.number().to_string()]);
            }
            _ => {}
        }
        args
    }
}

/// The one JSON document a task that ends prints on stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskAnswer<T> {
    /// It was done.
    Done(T),
    /// It could not be done, and why.
    Failed(TaskFailure),
}

/// Why a task could not be done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskFailure {
    /// The vault refused a key version the server needs.
    VersionRefused(Box<VersionRefusal>),
    /// The vault could not be reached or failed; may pass.
    VaultUnavailable {
        /// What went wrong.
        reason: String,
    },
    /// Anything else (unreadable files, a volume that does not open).
    Failed {
        /// What went wrong.
        message: String,
    },
}

/// A key version the server needs, refused by the vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRefusal {
    /// The refused version.
    pub version: KeyVersionId,
    /// True when it is the version that wraps the DEK (else: the key's current
    /// version, which a server that follows rotation checks too).
    pub wraps_dek: bool,
    /// The key's current version, when the vault told it.
    pub current: Option<KeyVersionId>,
    /// True when the vault says the version is disabled.
    pub disabled: bool,
    /// True when the server follows rotation (versionless key reference).
    pub follows_rotation: bool,
    /// What the vault said.
    pub reason: String,
}

impl VersionRefusal {
    /// True when a newer version exists than the refused one that wraps the DEK.
    pub fn predates_rotation(&self) -> bool {
        self.wraps_dek && self.current.as_ref().is_some_and(|c| c != &self.version)
    }

    /// What happened and how to fix it, for server `server`.
    pub fn explain(&self, server: &str) -> String {
        let v = &self.version;
        let state = if self.disabled {
            "is disabled"
        } else {
            "is refused"
        };
        let mut text = if self.wraps_dek {
            format!("the DEK of server '{server}' is wrapped by key version {v}, which {state}")
        } else {
            format!("the current version of server '{server}''s key, {v}, {state}")
        };
        text.push_str(&format!(" ({})", self.reason));
        if let (true, Some(current)) = (self.predates_rotation(), &self.current) {
            text.push_str(&format!(
                ". That version predates a rotation: the key's current version is {current}"
            ));
            text.push_str(if self.follows_rotation {
                ", and the DEK had not been re-wrapped to it before the old version was disabled"
            } else {
                ", but the server is pinned to the old version (its key URL names it)"
            });
        }
        let fix = match &self.version {
            KeyVersionId::Azure(v) => self.azure_fix(v, server),
            other => format!(
                "make key {other} usable again where it is held (restore it, or give the \
                 server's credential back its access), or move the server to another key \
                 (`pgcmk server update {server} --key ...`); docs/providers/ says what \
                 revocation means for each provider"
            ),
        };
        text.push_str(&format!(". To fix: {fix}"));
        text
    }

    /// The `pgcmk key` commands that fix a refused version of a key in this
    /// platform's vault.
    fn azure_fix(&self, v: &AkvKeyVersionId, server: &str) -> String {
        let enable = format!(
            "pgcmk key enable {} --vault {} --key-version {}",
            v.name, v.vault_url, v.version
        );
        match (self.disabled, self.wraps_dek, self.follows_rotation) {
            (true, true, true) => format!(
                "enable that version (`{enable}`) and start the server again: the start \
                 re-wraps the DEK to the current version, after which the old version may \
                 be disabled"
            ),
            (true, true, false) => format!(
                "enable that version (`{enable}`) and start the server again; to follow \
                 rotation from then on, move it to the versionless key \
                 (`pgcmk server update {server} --key {}/keys/{}`), after which the old \
                 version may be disabled",
                v.vault_url, v.name
            ),
            (true, false, _) => format!("enable that version (`{enable}`)"),
            (false, ..) => format!(
                "make that version usable again (`pgcmk key show {} --vault {} \
                 --key-version {}` shows whether it expired or was deleted, which \
                 `pgcmk key recover` undoes) and check that the server's identity has get, \
                 wrapKey and unwrapKey on the key",
                v.name, v.vault_url, v.version
            ),
        }
    }
}

/// The answer of [`AgentTask::AdoptKeyVersion`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrapping {
    /// The wrapped DEK now stored in the server's directory.
    pub wrapped_dek: WrappedDek,
    /// The version it was wrapped by before, when this run re-wrapped it.
    pub rewrapped_from: Option<KeyVersionId>,
}

/// The answer of [`AgentTask::ResetPassword`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordReset {
    /// The role whose password was set.
    pub role: String,
}

/// Which log a line comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogSource {
    /// PostgreSQL's server log (its logging collector, on the encrypted volume).
    Postgres,
    /// The node agent's log (`agent.log`).
    Agent,
}

impl LogSource {
    /// Its name as printed.
    pub fn name(self) -> &'static str {
        match self {
            LogSource::Postgres => "postgres",
            LogSource::Agent => "agent",
        }
    }
}

/// Where PostgreSQL's log is read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "view", rename_all = "kebab-case")]
pub enum VolumeView {
    /// The serving agent's mount.
    Live,
    /// A read-only mount of the volume, private to this run (the server is not
    /// serving): the log does not grow while it is read.
    ReadOnly,
    /// Not readable now.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// One record of [`AgentTask::Logs`] output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum LogRecord {
    /// Where PostgreSQL's lines come from from here on.
    Volume(VolumeView),
    /// One line of a log.
    Line {
        /// Which log.
        source: LogSource,
        /// The line, without its end.
        text: String,
    },
}

/// One block (or header) that failed verification, or that a crash tore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockIssue {
    /// The file, relative to the volume's root (e.g. `pgdata/base/5/16384`).
    pub file: PathBuf,
    /// The block number (4 KiB of plaintext each); `None` for the file's header.
    pub block: Option<u64>,
    /// Why.
    pub reason: String,
}

/// The answer of [`AgentTask::Fsck`]: cryptfs's fsck of the server's volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCheck {
    /// Files checked.
    pub files_checked: u64,
    /// Blocks checked.
    pub blocks_checked: u64,
    /// The last session did not unmount cleanly (the next start runs crash recovery).
    pub dirty: bool,
    /// Blocks that fail authentication and that recovery cannot repair: tampering
    /// or damage. Reads of them fail.
    pub bad_blocks: Vec<BlockIssue>,
    /// On a dirty volume: blocks torn by the crash that the next start repairs.
    pub torn_blocks: Vec<BlockIssue>,
}

impl VolumeCheck {
    /// True when no block is bad.
    pub fn is_clean(&self) -> bool {
        self.bad_blocks.is_empty()
    }
}

impl From<pgcmk_cryptfs::FsckReport> for VolumeCheck {
    fn from(report: pgcmk_cryptfs::FsckReport) -> Self {
        let issues = |blocks: Vec<pgcmk_cryptfs::BadBlock>| {
            blocks
                .into_iter()
                .map(|b| BlockIssue {
                    file: b.file,
                    block: b.block,
                    reason: b.reason,
                })
                .collect()
        };
        Self {
            files_checked: report.files_checked,
            blocks_checked: report.blocks_checked,
            dirty: report.dirty,
            bad_blocks: issues(report.bad_blocks),
            torn_blocks: issues(report.torn_blocks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(v: char) -> KeyVersionId {
        KeyVersionId::parse(&format!(
            "https://127.0.0.1:9/keys/k/{}",
            v.to_string().repeat(32)
        ))
        .unwrap()
    }

    fn refusal(follows_rotation: bool) -> VersionRefusal {
        VersionRefusal {
            version: version('a'),
            wraps_dek: true,
            current: Some(version('b')),
            disabled: true,
            follows_rotation,
            reason: "KeyDisabled".into(),
        }
    }

    #[test]
    fn a_refusal_names_the_version_the_rotation_and_the_fix() {
        let a = "a".repeat(32);
        let text = refusal(false).explain("orders");
        for expected in [
            format!("wrapped by key version https://127.0.0.1:9/keys/k/{a}, which is disabled"),
            "(KeyDisabled)".into(),
            "predates a rotation".into(),
            format!(
                "current version is https://127.0.0.1:9/keys/k/{}",
                "b".repeat(32)
            ),
            format!("pgcmk key enable k --vault https://127.0.0.1:9 --key-version {a}"),
            "pgcmk server update orders --key https://127.0.0.1:9/keys/k`".into(),
        ] {
            assert!(text.contains(&expected), "'{expected}' not in: {text}");
        }
        let follows = refusal(true).explain("orders");
        assert!(follows.contains("not been re-wrapped"), "{follows}");
        assert!(!follows.contains("server update"), "{follows}");

        let current = VersionRefusal {
            current: None,
            ..refusal(true)
        };
        assert!(!current.predates_rotation());
        assert!(!current.explain("orders").contains("predates"));
        let other = VersionRefusal {
            disabled: false,
            ..refusal(true)
        };
        let text = other.explain("orders");
        assert!(
            text.contains("is refused") && text.contains("pgcmk key show"),
            "{text}"
        );
    }

    #[test]
    fn task_arguments_name_the_task_and_its_options() {
        assert_eq!(AgentTask::AdoptKeyVersion.args(), ["adopt-key-version"]);
        assert_eq!(AgentTask::Fsck.args(), ["fsck"]);
        assert_eq!(AgentTask::ResetPassword.args(), ["reset-password"]);
        assert_eq!(AgentTask::ReplicationRole.args(), ["replication-role"]);
        assert_eq!(
            AgentTask::BackupCreate {
                kind: BackupKind::Diff,
                repository: Repository::Geo,
            }
            .args(),
            ["backup-create", "--type", "diff", "--repository", "2"]
        );
        assert_eq!(
            AgentTask::BackupVerify {
                repository: Repository::Primary
            }
            .args(),
            ["backup-verify", "--repository", "1"]
        );
        let logs = AgentTask::Logs {
            lines: 20,
            follow: true,
        };
        assert_eq!(logs.args(), ["logs", "--lines", "20", "--follow"]);
    }

    #[test]
    fn answers_and_records_round_trip_as_json() {
        let answer: TaskAnswer<Wrapping> =
            TaskAnswer::Failed(TaskFailure::VersionRefused(Box::new(refusal(true))));
        let json = serde_json::to_string(&answer).unwrap();
        assert_eq!(
            serde_json::from_str::<TaskAnswer<Wrapping>>(&json).unwrap(),
            answer
        );
        let record = LogRecord::Line {
            source: LogSource::Postgres,
            text: "LOG:  ready".into(),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"record":"line","source":"postgres","text":"LOG:  ready"}"#
        );
        assert_eq!(serde_json::from_str::<LogRecord>(&json).unwrap(), record);
        let volume = LogRecord::Volume(VolumeView::Unavailable {
            reason: "key refused".into(),
        });
        let json = serde_json::to_string(&volume).unwrap();
        assert_eq!(
            json,
            r#"{"record":"volume","view":"unavailable","reason":"key refused"}"#
        );
        assert_eq!(serde_json::from_str::<LogRecord>(&json).unwrap(), volume);
    }
}
