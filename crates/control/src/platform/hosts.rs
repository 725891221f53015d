//! Enrolling hosts and hearing from them ([docs/hosts.md](../../../../docs/hosts.md)):
//! the DBA's side (enroll, list, remove) and the host daemon's (register, heartbeat),
//! each checked against the state store and the in-memory [`HostPresence`].

use std::net::IpAddr;
use std::time::Instant;

use crate::assignments::{HeartbeatAnswer, HostReport};
use crate::auth::new_token;
use crate::hosts::{EnrollHost, EnrolledHost, HostError, HostPace, HostRecord, HostView};
use crate::model::now_rfc3339;
use crate::{Error, StoreError};

use super::names::{validate_host_name, validate_instance};
use super::Platform;

impl Platform {
    /// Enrolls a host: stores the verifier of a fresh credential and returns the
    /// credential, which is never stored.
    pub fn enroll_host(&self, request: &EnrollHost) -> Result<EnrolledHost, Error> {
        validate_host_name(&request.name)?;
        let token = new_token()?;
        let record = HostRecord::new(
            &request.name,
            request.address,
            token.expose_secret(),
            now_rfc3339(),
        )
        .ok_or_else(|| {
            Error::Store(StoreError::Missing(
                "a fresh host credential did not have the expected form".into(),
            ))
        })?;
        self.store().insert_host(&record)?;
        tracing::info!(host = %record.name, address = %record.address, "host enrolled");
        let credential = String::from_utf8(token.expose_secret().to_vec())
            .map_err(|_| Error::Aborted("a host credential was not text".into()))?;
        Ok(EnrolledHost {
            host: self.host_presence.view(&record, Instant::now()),
            credential,
        })
    }

    /// Every enrolled host, with its liveness now.
    pub fn hosts(&self) -> Result<Vec<HostView>, Error> {
        let now = Instant::now();
        let mut hosts: Vec<HostView> = self
            .store()
            .hosts()?
            .iter()
            .map(|h| self.host_presence.view(h, now))
            .collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(hosts)
    }

    /// Removes host `name`: its credential is refused from now on. Refused while
    /// servers are assigned to it: they would be left without their host.
    pub fn remove_host(&self, name: &str) -> Result<(), Error> {
        let kept: Vec<String> = self
            .store()
            .servers()?
            .into_iter()
            .filter(|s| s.host.as_deref() == Some(name))
            .map(|s| s.name)
            .collect();
        if !kept.is_empty() {
            return Err(HostError::HasServers {
                host: name.to_string(),
                servers: kept.join(", "),
            }
            .into());
        }
        self.store().remove_host(name)?;
        self.host_presence.forget(name);
        tracing::info!(host = %name, "host removed");
        Ok(())
    }

    /// Host `name` when `token` is its credential presented from its enrolled
    /// address; one refusal ([`HostError::Denied`]) for every other case.
    pub fn admit_host(
        &self,
        name: &str,
        token: Option<&[u8]>,
        peer: IpAddr,
    ) -> Result<AdmittedHost, Error> {
        let Some(host) = self.store().host(name)? else {
            // As long as a wrong credential takes: the answer tells no names.
            HostRecord::check_for_no_host(name, token.unwrap_or_default());
            return Err(HostError::Denied.into());
        };
        if !token.is_some_and(|t| host.admits(t, peer)) {
            return Err(HostError::Denied.into());
        }
        Ok(AdmittedHost(host))
    }

    /// An admitted host's daemon registers (a new start of it, or again after a
    /// plane restart) with its servers' reports, taken in before it counts as
    /// alive: a re-attached server is never judged on a host with no reports yet.
    pub fn register_host(
        &self,
        host: &AdmittedHost,
        hello: &HostReport,
    ) -> Result<HeartbeatAnswer, Error> {
        validate_instance(&hello.instance)?;
        self.relay.take(&host.0.name, &hello.servers);
        self.host_presence
            .register(&host.0.name, &hello.instance, Instant::now());
        self.host_tasks.daemon_restarted(&host.0.name);
        tracing::info!(host = %host.0.name, instance = %hello.instance, "host registered");
        Ok(HeartbeatAnswer {
            pace: HostPace::standard(),
            assignments: Vec::new(),
            tasks: Vec::new(),
        })
    }

    /// An admitted host's daemon says it is alive, with its servers' reports; the
    /// answer carries its assignments.
    pub fn host_heartbeat(
        &self,
        host: &AdmittedHost,
        report: &HostReport,
    ) -> Result<HeartbeatAnswer, Error> {
        validate_instance(&report.instance)?;
        Ok(HeartbeatAnswer {
            pace: HostPace::standard(),
            assignments: self.host_assignments(host, report)?,
            tasks: self.host_tasks.hand_over(host.name()),
        })
    }
}

/// A host whose credential was checked just now ([`Platform::admit_host`] makes
/// the only ones): a host's calls take nothing less.
#[derive(Debug)]
pub struct AdmittedHost(HostRecord);

impl AdmittedHost {
    /// The host's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}
