//! When a server's next backup is due: a full backup when the repository has none
//! or the last full one is older than a week, a differential one when the last
//! backup of any kind is older than a day (the intervals are in `agent.json`).
//! A pure function of the times, so that it is tested without waiting.

use crate::contract::backup::BackupKind;
use crate::contract::BackupConfig;

/// The backup schedule of one server, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    full_every: i64,
    diff_every: i64,
}

impl Schedule {
    /// The schedule `config` asks for.
    pub(crate) fn of(config: &BackupConfig) -> Self {
        Self {
            full_every: i64::from(config.full_every_hours) * 3600,
            diff_every: i64::from(config.diff_every_hours) * 3600,
        }
    }

    /// The backup due at `now` (Unix seconds), given when the last full backup and
    /// the last backup of any kind finished; `None` when none is due.
    pub(crate) fn due(
        &self,
        now: i64,
        last_full: Option<i64>,
        last_any: Option<i64>,
    ) -> Option<BackupKind> {
        let Some(last_full) = last_full else {
            return Some(BackupKind::Full);
        };
        if now - last_full >= self.full_every {
            return Some(BackupKind::Full);
        }
        let last_any = last_any.unwrap_or(last_full).max(last_full);
        (now - last_any >= self.diff_every).then_some(BackupKind::Diff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn schedule() -> Schedule {
        Schedule {
            full_every: 168 * HOUR,
            diff_every: 24 * HOUR,
        }
    }

    #[test]
    fn a_repository_without_a_full_backup_needs_one_at_once() {
        assert_eq!(schedule().due(0, None, None), Some(BackupKind::Full));
    }

    #[test]
    fn a_differential_follows_a_day_after_the_last_backup() {
        let s = schedule();
        let full = 1_000_000;
        assert_eq!(s.due(full + 23 * HOUR, Some(full), Some(full)), None);
        assert_eq!(
            s.due(full + 24 * HOUR, Some(full), Some(full)),
            Some(BackupKind::Diff)
        );
        let diff = full + 24 * HOUR;
        assert_eq!(s.due(diff + 23 * HOUR, Some(full), Some(diff)), None);
        assert_eq!(
            s.due(diff + 24 * HOUR, Some(full), Some(diff)),
            Some(BackupKind::Diff)
        );
    }

    #[test]
    fn a_full_backup_follows_a_week_after_the_last_full_one() {
        let s = schedule();
        let full = 1_000_000;
        let diff = full + 167 * HOUR;
        assert_eq!(s.due(full + 167 * HOUR + 1, Some(full), Some(diff)), None);
        assert_eq!(
            s.due(full + 168 * HOUR, Some(full), Some(diff)),
            Some(BackupKind::Full)
        );
    }
}
