//! Hosts on which node agents may run ([docs/hosts.md](../../../docs/hosts.md)):
//! what an enrolled host is, how its credential is checked, and how alive it is.
//!
//! A host is enrolled by the DBA with a name and the IP address its requests come
//! from; the plane draws a random credential for it, hands it out once and keeps
//! only a verifier bound to the host's name. Liveness comes from heartbeats kept in
//! memory only: a plane that just started knows no host to be alive, and a host
//! that stopped speaking turns Silent after [`SILENT_AFTER`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgcmk_crypto::ct_eq;
use serde::{Deserialize, Serialize};

use crate::auth::verifier_for;
use crate::ErrorCode;

/// How often a host daemon sends its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// After how long without a heartbeat a registered host is Silent.
pub const SILENT_AFTER: Duration = Duration::from_secs(5);
/// How much later than its agent wrote it a report relayed by an Online host
/// may reach the plane: the host reads it once per heartbeat period, and its
/// heartbeats may come up to [`SILENT_AFTER`] apart before it is Silent.
pub const RELAY_DELAY: Duration = HEARTBEAT_EVERY.saturating_add(SILENT_AFTER);

/// An enrolled host, as the state store keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostRecord {
    /// Its name (the rules of server names).
    pub name: String,
    /// The address its requests must come from.
    pub address: IpAddr,
    /// When it was enrolled (RFC 3339).
    pub enrolled_at: String,
    /// The verifier of its credential (hex), never the credential.
    verifier: String,
}

impl HostRecord {
    /// A record for host `name` at `address` whose credential is `token`; `None`
    /// when the token is not of the credentials' form.
    pub fn new(name: &str, address: IpAddr, token: &[u8], enrolled_at: String) -> Option<Self> {
        let verifier = host_verifier(name, token)?;
        Some(Self {
            name: name.to_string(),
            address,
            enrolled_at,
            verifier: hex(&verifier),
        })
    }

    /// True when `token`, presented from `peer`, is this host's credential.
    pub fn admits(&self, token: &[u8], peer: IpAddr) -> bool {
        let presented = host_verifier(&self.name, token).map(|v| hex(&v));
        // Both checks always run: the answer takes as long whichever one fails.
        let credential = presented.is_some_and(|v| ct_eq(v.as_bytes(), self.verifier.as_bytes()));
        credential & (peer == self.address)
    }
}

impl HostRecord {
    /// The work of [`HostRecord::admits`] for a name no host has, so that an
    /// unknown name is refused in the time a wrong credential is.
    pub fn check_for_no_host(name: &str, token: &[u8]) {
        let presented = host_verifier(name, token).map(|v| hex(&v));
        std::hint::black_box(presented);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The verifier of a host credential, bound to the host's name so that a verifier
/// copied onto another host's row verifies nothing.
fn host_verifier(name: &str, token: &[u8]) -> Option<[u8; 32]> {
    verifier_for(token, format!("host-credential:{name}").as_bytes())
}

/// What the plane knows now of a host's daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    /// A heartbeat came within [`SILENT_AFTER`].
    Online,
    /// It registered with this plane, but its last heartbeat is older than
    /// [`SILENT_AFTER`].
    Silent,
    /// It has not spoken to this plane since the plane started.
    Unknown,
}

/// A host as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// Its name.
    pub name: String,
    /// The address its requests must come from.
    pub address: IpAddr,
    /// When it was enrolled (RFC 3339).
    pub enrolled_at: String,
    /// Whether its daemon speaks now.
    pub liveness: Liveness,
    /// Milliseconds since its last heartbeat, when it spoke to this plane.
    pub silent_for_ms: Option<u64>,
}

/// A newly enrolled host and its credential, shown once.
#[derive(Clone, Serialize, Deserialize)]
pub struct EnrolledHost {
    /// The host.
    pub host: HostView,
    /// Its credential (64 hex characters), for `pgcmk host serve --credential-file`;
    /// the plane keeps no copy.
    pub credential: String,
}

impl std::fmt::Debug for EnrolledHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolledHost")
            .field("host", &self.host)
            .field("credential", &"REDACTED")
            .finish()
    }
}

/// A host to enroll (`POST /hosts`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollHost {
    /// Its name.
    pub name: String,
    /// The IP address its requests will come from.
    pub address: IpAddr,
}

/// The plane's answer to a registration or heartbeat: the pace it expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPace {
    /// Send a heartbeat this often.
    pub heartbeat_ms: u64,
    /// Without one for this long the host is Silent.
    pub silent_after_ms: u64,
}

impl HostPace {
    /// The pace every host keeps.
    pub fn standard() -> Self {
        Self {
            heartbeat_ms: HEARTBEAT_EVERY.as_millis() as u64,
            silent_after_ms: SILENT_AFTER.as_millis() as u64,
        }
    }
}

/// Why a host operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// No host of that name is enrolled.
    #[error("host '{0}' not found: run `pgcmk host list` to see the hosts")]
    NotFound(String),
    /// A host of that name is enrolled already.
    #[error("a host named '{0}' is enrolled already: choose another name, or remove it first")]
    NameTaken(String),
    /// The request had no host credential, a wrong one, or came from another
    /// address than the host's. One answer for all, so that it tells nothing.
    #[error(
        "this request needs the host's credential from the host's enrolled address: send \
         `Authorization: Bearer TOKEN` with the credential `pgcmk host add` printed"
    )]
    Denied,
    /// A heartbeat came from another start of the daemon than the registered one.
    #[error(
        "host '{0}' is registered by another daemon instance: one host credential drives \
         one `pgcmk host serve`; stop the other, or register again"
    )]
    OtherInstance(String),
    /// A heartbeat came before any registration since the plane started.
    #[error("host '{0}' has not registered with this control plane: register first")]
    NotRegistered(String),
    /// A server cannot be placed on a host that does not speak now.
    #[error("host '{host}' {why}: check `pgcmk host serve` on it (`pgcmk host list` shows it)")]
    NotOnline {
        /// The host.
        host: String,
        /// What the plane knows of it ("has not sent a heartbeat for 12 s").
        why: String,
    },
    /// The server's host does not speak now: what it does is not known, so the
    /// plane does not guess.
    #[error(
        "host unavailable: server '{server}' runs on host '{host}', which {why}; try again          once `pgcmk host list` shows it Online"
    )]
    Unavailable {
        /// The server.
        server: String,
        /// Its host.
        host: String,
        /// What the plane knows of the host.
        why: String,
    },
    /// A host with servers assigned cannot be removed.
    #[error("host '{host}' keeps servers ({servers}): delete them first (`pgcmk server delete`)")]
    HasServers {
        /// The host.
        host: String,
        /// Their names, comma-separated.
        servers: String,
    },
    /// A task answer for no task this host was handed.
    #[error("no task '{0}' is waiting for this host's answer")]
    UnknownTask(String),
    /// An operation not built for servers on hosts yet.
    #[error(
        "server '{server}' runs on host '{host}': {what} is not available for servers on \
         hosts yet (docs/hosts.md, \"Not built yet\")"
    )]
    NotOnHostsYet {
        /// The server.
        server: String,
        /// Its host.
        host: String,
        /// The operation.
        what: &'static str,
    },
}

impl HostError {
    /// The REST API's code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            HostError::NotFound(_) => ErrorCode::NotFound,
            HostError::NameTaken(_) => ErrorCode::NameTaken,
            HostError::Denied => ErrorCode::Unauthorized,
            HostError::OtherInstance(_) => ErrorCode::StateConflict,
            // No registration is found: the daemon registers again (a plane restart).
            HostError::NotRegistered(_) | HostError::UnknownTask(_) => ErrorCode::NotFound,
            HostError::NotOnline { .. }
            | HostError::HasServers { .. }
            | HostError::NotOnHostsYet { .. } => ErrorCode::StateConflict,
            HostError::Unavailable { .. } => ErrorCode::HostUnavailable,
        }
    }
}

/// The heartbeats heard from hosts since the plane started, in memory only.
#[derive(Debug, Default)]
pub struct HostPresence {
    seen: Mutex<HashMap<String, Heard>>,
}

#[derive(Debug)]
struct Heard {
    instance: String,
    at: Instant,
}

impl HostPresence {
    /// Host `name`'s daemon `instance` registered at `now`; it replaces any
    /// earlier instance (a restarted daemon).
    pub fn register(&self, name: &str, instance: &str, now: Instant) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(
            name.to_string(),
            Heard {
                instance: instance.to_string(),
                at: now,
            },
        );
    }

    /// Host `name`'s daemon `instance` sent a heartbeat at `now`.
    pub fn heartbeat(&self, name: &str, instance: &str, now: Instant) -> Result<(), HostError> {
        self.with_registered(name, instance, |heard| heard.at = heard.at.max(now))
    }

    /// Checks that `instance` is host `name`'s registered daemon, without counting
    /// a heartbeat (its reports are taken in before it counts as alive again).
    pub fn check(&self, name: &str, instance: &str) -> Result<(), HostError> {
        self.with_registered(name, instance, |_| ())
    }

    fn with_registered(
        &self,
        name: &str,
        instance: &str,
        update: impl FnOnce(&mut Heard),
    ) -> Result<(), HostError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let heard = seen
            .get_mut(name)
            .ok_or_else(|| HostError::NotRegistered(name.to_string()))?;
        if heard.instance != instance {
            return Err(HostError::OtherInstance(name.to_string()));
        }
        update(heard);
        Ok(())
    }

    /// `None` while host `name` is Online at `now`; else what the plane knows of
    /// it, in words ("has not sent a heartbeat for 7 s").
    pub fn silence(&self, name: &str, now: Instant) -> Option<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(name).map(|h| now.saturating_duration_since(h.at)) {
            Some(d) if d <= SILENT_AFTER => None,
            Some(d) => Some(format!("has not sent a heartbeat for {} s", d.as_secs())),
            None => Some("has not been heard from since the control plane started".to_string()),
        }
    }

    /// Forgets host `name` (it was removed).
    pub fn forget(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// How `host` looks at `now`.
    pub fn view(&self, host: &HostRecord, now: Instant) -> HostView {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let silent_for = seen
            .get(&host.name)
            .map(|h| now.saturating_duration_since(h.at));
        let liveness = match silent_for {
            None => Liveness::Unknown,
            Some(d) if d <= SILENT_AFTER => Liveness::Online,
            Some(_) => Liveness::Silent,
        };
        HostView {
            name: host.name.clone(),
            address: host.address,
            enrolled_at: host.enrolled_at.clone(),
            liveness,
            silent_for_ms: silent_for.map(|d| d.as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn record(name: &str) -> HostRecord {
        HostRecord::new(name, "127.0.0.2".parse().unwrap(), TOKEN, "now".into()).unwrap()
    }

    #[test]
    fn a_host_is_admitted_only_with_its_credential_from_its_address() {
        let host = record("host-1");
        let home: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(host.admits(TOKEN, home));
        assert!(!host.admits(TOKEN, "127.0.0.3".parse().unwrap()));
        let mut wrong = TOKEN.to_vec();
        wrong[0] = b'1';
        for bad in [&wrong[..], b"", &TOKEN[..63]] {
            assert!(!host.admits(bad, home));
        }
        // The verifier is bound to the name: another host's row with the same
        // token has another verifier, and neither holds the token.
        let other = record("host-2");
        assert_ne!(host.verifier, other.verifier);
        let stored = serde_json::to_vec(&host).unwrap();
        assert!(!stored.windows(TOKEN.len()).any(|w| w == TOKEN));
    }

    #[test]
    fn liveness_follows_heartbeats_and_starts_unknown() {
        let presence = HostPresence::default();
        let host = record("host-1");
        let t0 = Instant::now();
        assert_eq!(presence.view(&host, t0).liveness, Liveness::Unknown);
        assert_eq!(
            presence.silence("host-1", t0).as_deref(),
            Some("has not been heard from since the control plane started")
        );
        assert!(matches!(
            presence.heartbeat("host-1", "a", t0),
            Err(HostError::NotRegistered(_))
        ));
        presence.register("host-1", "a", t0);
        assert_eq!(presence.view(&host, t0).liveness, Liveness::Online);
        assert_eq!(presence.silence("host-1", t0), None);
        let later = t0 + SILENT_AFTER + Duration::from_millis(1);
        assert_eq!(presence.view(&host, later).liveness, Liveness::Silent);
        assert_eq!(
            presence.silence("host-1", later).as_deref(),
            Some("has not sent a heartbeat for 5 s")
        );
        assert!(matches!(
            presence.heartbeat("host-1", "b", later),
            Err(HostError::OtherInstance(_))
        ));
        presence.heartbeat("host-1", "a", later).unwrap();
        let view = presence.view(&host, later);
        assert_eq!(view.liveness, Liveness::Online);
        assert_eq!(view.silent_for_ms, Some(0));
        presence.forget("host-1");
        assert_eq!(presence.view(&host, later).liveness, Liveness::Unknown);
    }
}
