//! What `pgbackrest info --output=json` says about a stanza, typed: the part of
//! its output the agent reads (backup sets and the WAL archive's range).

use serde::Deserialize;

/// One stanza of `pgbackrest info --output=json` (an array of them).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct StanzaInfo {
    /// Backup sets, oldest first.
    #[serde(default)]
    pub backup: Vec<BackupSet>,
    /// The WAL archive, per database history (one entry per `initdb`).
    #[serde(default)]
    pub archive: Vec<ArchiveRange>,
    /// The stanza's health, and whether a backup holds its lock now.
    #[serde(default)]
    pub status: StanzaStatus,
}

/// `status` of a stanza: pgBackRest tries the stanza's backup lock itself, so
/// `held` is a fact about now (a lock file left by a killed process is not held).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct StanzaStatus {
    /// The locks pgBackRest looked at.
    #[serde(default)]
    pub lock: Locks,
}

/// The locks of a stanza's status.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Locks {
    /// The backup lock (held by a backup, its expire, or a stanza command).
    #[serde(default)]
    pub backup: BackupLock,
}

/// The backup lock: whether it is held, and (pgBackRest 2.48 and later) the
/// running backup's bytes.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct BackupLock {
    /// A pgBackRest process holds it now.
    #[serde(default)]
    pub held: bool,
    /// Bytes the running backup copies (2.48 and later).
    pub size: Option<u64>,
    /// Bytes it copied so far (2.48 and later).
    #[serde(rename = "size-cplt")]
    pub size_cplt: Option<u64>,
}

/// One backup set in the repository: pgBackRest lists a backup only once it is
/// complete (its manifest saved and `backup.info` updated).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct BackupSet {
    /// `YYYYMMDD-HHMMSSF`, with `_YYYYMMDD-HHMMSSD|I` for differential/incremental.
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Start and stop, Unix seconds.
    pub timestamp: Range<i64>,
    /// The WAL position range the backup needs.
    pub lsn: Range<String>,
    /// Sizes.
    pub info: Sizes,
    /// The backup this one depends on (diff/incr).
    pub prior: Option<String>,
    /// The first and last WAL segment it needs.
    #[serde(default)]
    pub archive: Option<Range<String>>,
}

/// A start and a stop.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Range<T> {
    /// Start.
    pub start: T,
    /// Stop.
    pub stop: T,
}

/// Sizes of a backup.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Sizes {
    /// Bytes of the database.
    pub size: u64,
    /// Bytes in the repository (compressed and encrypted).
    pub repository: RepoSize,
}

/// Bytes in the repository.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct RepoSize {
    /// Bytes.
    pub size: u64,
}

/// The archived WAL of one database history.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ArchiveRange {
    /// The oldest archived segment.
    pub min: Option<String>,
    /// The newest archived segment.
    pub max: Option<String>,
}

/// Parses `pgbackrest info --output=json` for one stanza.
pub(crate) fn parse(json: &str) -> Result<StanzaInfo, String> {
    let mut stanzas: Vec<StanzaInfo> = serde_json::from_str(json)
        .map_err(|e| format!("pgbackrest info is not understood: {e}"))?;
    stanzas
        .pop()
        .ok_or_else(|| "pgbackrest info lists no stanza".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pgBackRest 2.45 printed for a stanza with one full backup.
    const ONE_FULL: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000003","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000002","stop":"000000010000000000000002"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":22992374,"repository":{"delta":2833632,"size":2833632},"size":22992374},"label":"20261207-092058F","lsn":{"start":"0/2000028","stop":"0/2000100"},"prior":null,"reference":null,"timestamp":{"start":1796635258,"stop":1796635261},"type":"full"}],"cipher":"aes-256-cbc","db":[{"id":1,"repo-key":1,"system-id":7716489662165876927,"version":"15"}],"name":"s1","repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    #[test]
    fn reads_backup_sets_and_the_archive_range() {
        let info = parse(ONE_FULL).unwrap();
        let set = &info.backup[0];
        assert_eq!(set.label, "20261207-092058F");
        assert_eq!(set.kind, "full");
        assert_eq!(
            (set.timestamp.start, set.timestamp.stop),
            (1796635258, 1796635261)
        );
        assert_eq!(set.lsn.start, "0/2000028");
        assert_eq!(set.info.repository.size, 2833632);
        assert_eq!(
            set.archive.as_ref().map(|a| a.stop.as_str()),
            Some("000000010000000000000002")
        );
        assert_eq!(
            info.archive[0].max.as_deref(),
            Some("000000010000000000000003")
        );
        assert!(parse("[]").unwrap_err().contains("no stanza"));
        assert!(parse("{").unwrap_err().contains("not understood"));
    }
}
