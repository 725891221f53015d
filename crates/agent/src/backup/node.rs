//! The backups of a node of a highly available server (`docs/backups.md`,
//! "Highly available servers"). Every node configures pgBackRest on its own
//! mount for the server's one stanza and repository, under the server's one
//! repository key, and gives PostgreSQL (through Patroni's parameters) the
//! archive settings of a single server but for `archive_mode=always`: every
//! node archives every segment it completes, the standby the ones it received
//! by streaming too. pgBackRest takes a segment pushed a second time with the
//! same checksum as done (a warning in its log), so the repository holds each
//! once; what it gains is that a segment the primary completed but had not
//! archived when its host died is archived by the standby that received it,
//! and the archive has no gap after a failover. A promotion archives the new
//! timeline's history file and the old timeline's last, partial segment.
//!
//! Backups are taken by the primary's agent only: a standby's agent never starts
//! one, and ends one under way when its node is demoted. A node that becomes
//! primary reads the repository afresh, so the schedule continues from the
//! backups it lists, whichever node took them.

use std::time::{Duration, Instant};

use super::{unix_now, Backups};
use crate::postgres::Postgres;
use crate::report::Reporter;

/// PostgreSQL's `archive_mode` on a node of a highly available server (`always`:
/// the standby archives what it streamed, see the module's documentation) or on
/// a single server (`on`).
pub(super) fn archive_mode(on_node: bool) -> &'static str {
    if on_node {
        "always"
    } else {
        "on"
    }
}

/// How often the agent asks its PostgreSQL whether it is the primary.
const ROLE_EVERY: Duration = Duration::from_secs(2);
/// After a failed stanza creation, how long until the next try (seconds).
const RETRY_STANZA_AFTER: i64 = 30;

/// What a node's agent last learned of its PostgreSQL's role.
#[derive(Default)]
pub(super) struct NodeRole {
    /// It was the primary at the last look.
    primary: bool,
    /// When it last looked.
    looked_at: Option<Instant>,
}

impl Backups {
    /// On a node of a highly available server, while Patroni runs `pg`: follows its role (at most every [`ROLE_EVERY`]) and, while it is
    /// the primary, creates the stanza when the repository has none yet (the
    /// first primary, bootstrapped by Patroni) and takes the backups the schedule
    /// says are due ([`Backups::supervise`]).
    pub(crate) fn supervise_node(&mut self, pg: &Postgres, now: Instant, reporter: &Reporter) {
        if self.node.looked_at.is_none_or(|at| now >= at + ROLE_EVERY) {
            self.node.looked_at = Some(now);
            let primary = pg.install().is_primary(pg.layout());
            if primary && !self.node.primary {
                // The repository may have moved on while another node was primary.
                self.finished = [None, None];
                tracing::info!("this node is the primary: its agent takes the backups");
            } else if !primary && self.node.primary {
                self.end_job();
                tracing::info!("this node is no longer the primary: no backups from it");
            }
            self.node.primary = primary;
        }
        if !self.node.primary {
            return;
        }
        if !self.stanza_ready {
            if unix_now() < self.not_before {
                return;
            }
            match self.engine.create_stanza() {
                Ok(()) => self.stanza_ready = true,
                Err(e) => {
                    self.not_before = unix_now() + RETRY_STANZA_AFTER;
                    return tracing::warn!("creating the backup stanza: {e}; retrying");
                }
            }
        }
        self.supervise(reporter);
    }
}
