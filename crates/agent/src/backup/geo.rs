//! The geo key, as a serving agent holds it: the key in a vault of the geo
//! location that wraps the geo-redundant copy's repository key, reached through its
//! own managed identity. It governs the copy only: when the vault refuses it, the
//! copy is taken out of pgBackRest's configuration and the server keeps serving,
//! archiving and backing up to its own repository (`docs/backups.md`).

use std::path::PathBuf;

use pgcmk_crypto::{Dek, SecretBytes};
use pgcmk_keyprovider::{KeyEncryptionKey, KeyError};

use super::{key, Backups};
use crate::contract::{Actor, AgentConfig, ServerDir};
use crate::report::Reporter;
use crate::Error;

/// The geo key of a server with a geo-redundant copy.
pub(crate) struct GeoKey {
    kek: Box<dyn KeyEncryptionKey>,
    /// The copy's wrapped repository key.
    file: PathBuf,
}

impl GeoKey {
    /// The geo key of the server in `dir`, reached with `secret` (the handshake's
    /// `geo_identity_secret`); `None` when the server has no geo copy. A copy whose
    /// identity's secret did not come is reported and left out: the server serves.
    pub(crate) fn connect(
        dir: &ServerDir,
        config: &AgentConfig,
        secret: Option<SecretBytes>,
        reporter: &Reporter,
    ) -> Option<Self> {
        let geo = config.backup.as_ref()?.geo.as_ref()?;
        let connected = match secret {
            Some(secret) => geo.kek.connect(secret).map_err(|e| e.to_string()),
            None => Err("the handshake brought no geo_identity_secret".into()),
        };
        match connected {
            Ok(kek) => Some(Self {
                kek,
                file: config.geo_backup_key_file(dir),
            }),
            Err(e) => {
                reporter.event(Actor::Agent, GEO_REFUSED, &format!("{e}; {LEFT_OUT}"));
                None
            }
        }
    }

    /// The copy's repository key, unwrapped through the geo vault, after
    /// re-wrapping it with the geo key's current version when that moved on
    /// (rotation of the geo key re-wraps only the copy's key).
    pub(crate) fn unwrap(&self, reporter: &Reporter) -> Result<Dek, Error> {
        let key = key::unwrap(&self.file, self.kek.as_ref())?;
        let current = self.kek.info()?.current;
        match key::follow(&self.file, self.kek.as_ref(), &current) {
            Ok(Some(from)) => reporter.event(
                Actor::KeyMonitor,
                "geo backup key re-wrapped",
                &format!("the geo-redundant copy's key is wrapped by {current} (was {from})"),
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("re-wrapping the geo copy's key: {e}; retrying"),
        }
        Ok(key)
    }

    /// The copy's repository key at a mount, or `None` (reported) when the vault
    /// refuses it or cannot be reached: the server serves without the copy, and
    /// the next check puts it back.
    pub(crate) fn key_at_mount(&self, reporter: &Reporter) -> Option<Dek> {
        self.unwrap(reporter)
            .inspect_err(|e| {
                reporter.event(Actor::KeyMonitor, GEO_REFUSED, &format!("{e}; {LEFT_OUT}"));
            })
            .ok()
    }

    /// At a key check of the serving server: takes the copy out of `backups` when
    /// the vault refuses the geo key now, and puts it back when it unwraps again. A
    /// vault that does not answer changes nothing (an outage is not a refusal).
    pub(crate) fn check(&self, backups: &mut Backups, reporter: &Reporter) {
        match self.unwrap(reporter) {
            Ok(key) if !backups.geo_active() => match backups.set_geo(Some(&key)) {
                Ok(()) => reporter.event(
                    Actor::KeyMonitor,
                    "geo backups resumed",
                    "the geo key unwraps the geo-redundant copy's key again: WAL goes to \
                     both repositories, and the copy gets a full backup now",
                ),
                Err(e) => tracing::error!("putting the geo copy back: {e}"),
            },
            Ok(_) => {}
            Err(Error::Key(KeyError::Transient { reason })) => {
                tracing::warn!("the geo key's vault did not answer ({reason}); retrying");
            }
            Err(e) if backups.geo_active() => match backups.set_geo(None) {
                Ok(()) => {
                    reporter.event(Actor::KeyMonitor, GEO_REFUSED, &format!("{e}; {LEFT_OUT}"));
                }
                Err(set) => tracing::error!("taking the geo copy out: {set}"),
            },
            Err(e) => tracing::debug!("the geo key is still refused: {e}"),
        }
    }
}

/// The event of a geo key the vault refuses.
const GEO_REFUSED: &str = "geo backup key refused";
/// What a refused geo key means for the server.
const LEFT_OUT: &str = "the geo-redundant copy (repo2) is not kept up to date until the geo \
                        key unwraps again; the server serves, and archives and backs up to \
                        its own repository";
