//! Starting, re-attaching to and stopping a server's node agent.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use pgcmk_agent::contract::invocation::{running_instance, serve_command, signal, AgentSignal};
use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::{AgentConfig, AgentStatus, Handshake, KekAccess, ServerDir};

use super::create::{hex_id, FirstStart};
use super::Platform;
use crate::error::IoContext;
use crate::model::{Actor, ServerRecord, ServerState};
use crate::supervisor::{AgentExit, AgentProcess, Supervised};
use crate::Error;

/// How long an agent that keeps reporting may take to stop PostgreSQL, unmount
/// and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an agent asked to stop may go without a report before it is killed.
const UNANSWERED_STOP: Duration = Duration::from_secs(10);

impl Platform {
    pub(super) fn agent_config(&self, record: &ServerRecord, kek: KekAccess) -> AgentConfig {
        AgentConfig {
            server_id: record.id.clone(),
            port: record.port,
            listen_addresses: record.listen_addresses.clone(),
            kek,
            interval_ms: u64::try_from(self.config.interval.as_millis()).unwrap_or(u64::MAX),
            grace_ms: u64::try_from(self.config.grace.as_millis()).unwrap_or(u64::MAX),
            backup: Some(self.backup_config(&record.id)),
            restore: None,
            replica: None,
            ha: None,
        }
    }

    /// Starts `pgcmk agent --server-dir DIR --instance NAME`
    /// ([`pgcmk_agent::contract::invocation`]) with its output in DIR/agent.log and
    /// the start-up handshake — the identity's secret, a new TLS certificate and
    /// key for its listen addresses, and for a new server the superuser's initial
    /// password — written to its stdin.
    pub(super) fn spawn_agent_process(
        &self,
        record: &ServerRecord,
        first_start: Option<&FirstStart>,
    ) -> Result<AgentProcess, Error> {
        let (storage_key, geo_storage_key) = self.storage_keys(record)?;
        let handshake = Handshake {
            initial_password: first_start.map(|f| f.password.clone()),
            source_identity_secret: first_start.and_then(|f| f.source_identity_secret.clone()),
            geo_identity_secret: self.geo_identity_secret(record)?,
            storage_key,
            geo_storage_key,
            // A node of a highly available server: at its first start; a read
            // replica: at every start (its source's role).
            replication_password: match first_start.and_then(|f| f.replication_password.clone()) {
                Some(node_first_start) => Some(node_first_start),
                None => self.replication_password(record)?,
            },
            tls: Some(self.servers_ca.issue(record)?),
            // A node of a highly available server: its way into etcd, and the
            // password its Patroni's REST API asks (docs/high-availability.md).
            etcd_tls: self.etcd_client_tls(record)?,
            patroni_api_password: self.new_patroni_api_password(record)?,
            etcd_password: self.etcd_password(record)?,
            ..Handshake::identity_only(self.identity_secret(record)?)
        };
        self.hand_vault_address(record, None);
        let dir = ServerDir::new(&record.dir);
        let instance = hex_id()?;
        let log = open_agent_log(&dir)?;
        let err = log.try_clone().ctx(|| "duplicating the log handle")?;
        let mut child = serve_command(
            &self.config.agent_program,
            &dir,
            &instance,
            self.config.agent_observability,
        )
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(err)
        .spawn()
        .ctx(|| format!("starting {} agent", self.config.agent_program.display()))?;
        // The pipe closes when `stdin` drops, which ends the agent's read.
        if let Some(stdin) = child.stdin.take() {
            if let Err(e) = handshake.write(stdin) {
                // The agent exited at once; supervision reports why.
                tracing::error!(server = %record.name, "{e}");
            }
        }
        Ok(AgentProcess::spawned(child, instance))
    }

    /// Starts the server's agent and supervises it from now on.
    pub(super) fn spawn_agent(
        &self,
        record: &ServerRecord,
        first_start: Option<&FirstStart>,
    ) -> Result<(), Error> {
        // Held while spawning, so a supervision pass cannot restart it meanwhile.
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        let agent = self.spawn_agent_process(record, first_start)?;
        let supervised = match first_start {
            Some(_) => Supervised::provisioning(agent, Instant::now()),
            None => Supervised::spawned(agent, Instant::now()),
        };
        agents.insert(record.id.clone(), supervised);
        Ok(())
    }

    /// Re-attaches to the server's agent if it still runs, else starts one.
    pub(super) fn attach_or_spawn(&self, record: &ServerRecord) -> Result<(), Error> {
        let dir = ServerDir::new(&record.dir);
        let running = fs::read_to_string(dir.agent_pid())
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .and_then(|pid| Some((pid, running_instance(pid, dir.root())?)));
        match running {
            Some((pid, instance)) => {
                self.agents
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        record.id.clone(),
                        Supervised::attached(
                            AgentProcess::attached(pid, instance),
                            Instant::now(),
                            // Still at its first start: its death is final.
                            dir.provisioning_was_cut_short(),
                        ),
                    );
                self.event(
                    record,
                    Actor::ControlPlane,
                    "agent re-attached",
                    &format!("agent pid {pid} still running"),
                )?;
                self.hand_vault_address(record, Some(pid));
                Ok(())
            }
            // Only the create's first start provisions: a restart would start
            // whatever it left.
            None if !dir.is_provisioned() => {
                let why = "its first start ended before the server was provisioned \
                           (the control plane stopped during the create): it holds no \
                           usable cluster; delete it with `pgcmk server delete` and create \
                           it again";
                self.transition(
                    record,
                    ServerState::Failed(why.into()),
                    Actor::ControlPlane,
                    why,
                )
            }
            None => {
                self.event(
                    record,
                    Actor::ControlPlane,
                    "agent started",
                    "the server should run and had no agent",
                )?;
                self.spawn_agent(record, None)
            }
        }
    }

    /// Stops supervising the server: asks its agent (if it runs) to stop, waits
    /// until it has exited, and detaches a mount a killed agent left.
    ///
    /// An agent that stops reports every second while it shuts PostgreSQL down and
    /// unmounts, and gets [`STOP_TIMEOUT`] for it. One whose reports stopped for
    /// [`UNANSWERED_STOP`] — hung, or stopped with SIGSTOP — is not answering and
    /// is killed then: waiting longer only holds the DBA up. Its PostgreSQL gets
    /// SIGQUIT from the kernel as its parent dies (crash-like, recovered at the
    /// next start) and its mount is detached here.
    pub(super) fn stop_agent(&self, id: &str) {
        let supervised = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        let dir = self
            .store
            .server(id)
            .ok()
            .map(|server| ServerDir::new(server.dir));
        if let Some(mut agent) = supervised.and_then(|mut s| s.take_agent()) {
            let _ = signal(agent.pid(), AgentSignal::Stop);
            let started = Instant::now();
            let mut reports = ReportProgress::new(dir.as_ref(), started);
            while agent.exit().is_none() {
                let now = Instant::now();
                let unanswered = reports.silent_since(now) >= UNANSWERED_STOP;
                if unanswered || now >= started + STOP_TIMEOUT {
                    tracing::error!(
                        pid = agent.pid(),
                        "agent did not stop ({}); killing it",
                        if unanswered {
                            "it stopped reporting"
                        } else {
                            "too slow"
                        }
                    );
                    let _ = signal(agent.pid(), AgentSignal::Kill);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            agent.reap();
        }
        if let Some(dir) = dir {
            dir.detach_stale_mount();
        }
    }
}

/// Opens the server's `agent.log` for appending (created 0600).
pub(super) fn open_agent_log(dir: &ServerDir) -> Result<fs::File, Error> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.agent_log())
        .ctx(|| format!("opening {}", dir.agent_log().display()))
}

/// Whether an agent's reports (`status.json`) still come: the time of the last
/// change of their sequence number.
struct ReportProgress<'a> {
    dir: Option<&'a ServerDir>,
    seq: Option<u64>,
    changed_at: Instant,
}

impl<'a> ReportProgress<'a> {
    fn new(dir: Option<&'a ServerDir>, now: Instant) -> Self {
        let mut progress = Self {
            dir,
            seq: None,
            changed_at: now,
        };
        progress.seq = progress.read();
        progress
    }

    fn read(&self) -> Option<u64> {
        let status: AgentStatus = read_json(&self.dir?.status()).ok()?;
        Some(status.seq)
    }

    /// How long no new report has come, at `now`.
    fn silent_since(&mut self, now: Instant) -> Duration {
        let seq = self.read();
        if seq != self.seq {
            self.seq = seq;
            self.changed_at = now;
        }
        now - self.changed_at
    }
}

/// How an agent ended, with its last error when it gave one: `pgcmk agent`
/// prints `error: ...` as its last line before it exits with an error.
pub(super) fn exit_detail(dir: &ServerDir, exit: AgentExit) -> String {
    const TAIL: u64 = 16 * 1024;
    let AgentExit::Code(code) = exit else {
        return exit.to_string();
    };
    let log = dir.agent_log();
    let tail = fs::File::open(&log).and_then(|mut f| {
        use std::io::{Read, Seek, SeekFrom};
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        Ok(String::from_utf8_lossy(&tail).into_owned())
    });
    let error = tail.ok().and_then(|t| {
        t.lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: ").map(str::to_string))
    });
    match error {
        Some(error) if code != 0 => format!("{exit}: {error}"),
        _ => format!("{exit} (see {})", log.display()),
    }
}
