//! The control plane's core: creates, stops, starts and deletes servers, spawns
//! and supervises their node agents, and keeps the state store in step with what
//! the agents report. The REST API ([`crate::api`]) is a thin layer over this.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use pgcmk_crypto::{random, SecretBytes};
use pgcmk_keyprovider::{KeyEncryptionKey, KeyReference, WrappedDek};
use serde::{Deserialize, Serialize};

use crate::agent::{self, AgentConfig};
use crate::api_tls;
use crate::auth::DbaAuth;
use crate::backoff::describe_delay;
use crate::error::IoContext;
use crate::kek::{KekAccess, VaultEndpoints};
use crate::model::{
    now_rfc3339, Actor, Encryption, Event, SecretString, ServerRecord, ServerState,
};
use crate::process;
use crate::report::AgentStatus;
use crate::root_key::{ControlKeys, IdentitySecrets, RootKeySource};
use crate::server_dir::{read_json, write_json_atomic, ServerDir};
use crate::store::{Store, PLATFORM_IDENTITY};
use crate::supervisor::{AgentExit, AgentProcess, Reading, Supervised, STALE_AFTER};
use crate::sys::{self, Signal};
use crate::validate::{self, Requirements, VaultLocations};
use crate::Error;

mod tasks;

pub use tasks::{LogStream, LogStreamItem, LogStreamStopper};

/// How long a new or restarted server may take to become Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an agent may take to stop PostgreSQL, unmount and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The platform's settings.
#[derive(Clone, Debug)]
pub struct PlatformConfig {
    /// Where the state store and the servers' directories live.
    pub state_dir: PathBuf,
    /// The vault service's identity endpoint and CA certificate at start.
    pub vault: VaultEndpoints,
    /// The vault service's data directory: its `service.json` is followed when the
    /// service moves, and its vault list gives vaults' locations.
    pub vault_service_dir: Option<PathBuf>,
    /// The platform key for service-managed encryption.
    pub platform_key: KeyReference,
    /// The platform identity's client id.
    pub platform_client_id: String,
    /// The platform identity's secret: needed on first start, then kept sealed in
    /// the state (given again, it replaces the stored one).
    pub platform_identity_secret: Option<SecretBytes>,
    /// Where the root key that seals identity secrets comes from.
    pub root_key: RootKeySource,
    /// Time between key checks.
    pub interval: Duration,
    /// Transient key failures tolerated for this long.
    pub grace: Duration,
    /// The `pgcmk` program, run as `pgcmk agent --server-dir DIR --instance NAME`.
    pub agent_program: PathBuf,
}

/// A request to create a server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateServer {
    /// Unique name: lowercase letters, digits and `-`, 3–63 characters.
    pub name: String,
    /// Where the server runs.
    pub location: String,
    /// `service-managed` (default) or `customer-managed`.
    #[serde(default)]
    pub encryption: Option<String>,
    /// Customer-managed: the managed identity's client id.
    #[serde(default)]
    pub identity: Option<String>,
    /// Customer-managed: the identity's header secret (from its credential file),
    /// which assigns the identity to the server.
    #[serde(default)]
    pub identity_secret: Option<SecretString>,
    /// Customer-managed: the key URL, versioned or versionless.
    #[serde(default)]
    pub key: Option<String>,
}

/// The answer to a create: the server, and its superuser password, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Created {
    /// The new server.
    pub server: ServerRecord,
    /// The `postgres` superuser's password: stored nowhere by the platform.
    pub password: SecretString,
}

/// The control plane.
pub struct Platform {
    config: PlatformConfig,
    store: Store,
    secrets: IdentitySecrets,
    /// The REST API's TLS configuration (its CA certificate is `STATE/ca.pem`).
    tls: Arc<rustls::ServerConfig>,
    dba: DbaAuth,
    /// The DBA credential file, when this start created it.
    new_dba_credential: Option<PathBuf>,
    /// Every server that should run, by id: its agent and how it is supervised.
    agents: Mutex<HashMap<String, Supervised>>,
    /// Where agents reach the vault service now (see [`Platform::follow_vault_service`]).
    vault: RwLock<VaultEndpoints>,
    /// Serializes lifecycle operations on servers (not key checks).
    lifecycle: Mutex<()>,
    /// Serializes supervision passes, so that one report becomes one event.
    supervision: Mutex<()>,
}

impl Platform {
    /// Opens the state in `config.state_dir` and brings every server that should
    /// run back: re-attaches to agents still running, restarts the others.
    pub fn open(config: PlatformConfig) -> Result<Self, Error> {
        fs::create_dir_all(config.state_dir.join("servers"))
            .ctx(|| format!("creating {}", config.state_dir.display()))?;
        // PostgreSQL (another user) must traverse to its mount and socket.
        for dir in [config.state_dir.clone(), config.state_dir.join("servers")] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
                .ctx(|| format!("setting permissions of {}", dir.display()))?;
        }
        let store = Store::open(&config.state_dir.join("state.redb"))?;
        let keys = ControlKeys::open(&config.state_dir, &store, config.root_key.clone())?;
        let secrets = keys.identity_secrets;
        let tls = api_tls::server_config(&config.state_dir, &store, &keys.tls)?;
        match &config.platform_identity_secret {
            Some(secret) => secrets.put(&store, PLATFORM_IDENTITY, secret)?,
            None => drop(secrets.get(&store, PLATFORM_IDENTITY)?),
        }
        let (dba, new_dba_credential) = DbaAuth::open(&config.state_dir, &store)?;
        let vault = RwLock::new(config.vault.clone());
        let platform = Self {
            config,
            store,
            secrets,
            tls,
            dba,
            new_dba_credential,
            agents: Mutex::new(HashMap::new()),
            vault,
            lifecycle: Mutex::new(()),
            supervision: Mutex::new(()),
        };
        for server in platform.store.servers()? {
            match server.state {
                ServerState::Stopped => {}
                ServerState::Deleting => platform.finish_delete(&server)?,
                _ => platform.attach_or_spawn(&server)?,
            }
        }
        Ok(platform)
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The REST API's TLS server configuration.
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.clone()
    }

    /// The CA certificate clients of the REST API trust (`STATE/ca.pem`).
    pub fn ca_file(&self) -> PathBuf {
        self.config.state_dir.join(api_tls::CA_FILE)
    }

    /// True when `token` is the DBA's API credential.
    pub fn dba_allows(&self, token: &[u8]) -> bool {
        self.dba.allows(token)
    }

    /// The DBA credential file, when this start created it (first start).
    pub fn new_dba_credential(&self) -> Option<&Path> {
        self.new_dba_credential.as_deref()
    }

    /// The secret of the identity the server's agent acts as.
    fn identity_secret(&self, server: &ServerRecord) -> Result<SecretBytes, Error> {
        let owner = match server.encryption {
            Encryption::ServiceManaged => PLATFORM_IDENTITY,
            Encryption::CustomerManaged { .. } => &server.id,
        };
        self.secrets.get(&self.store, owner)
    }

    /// All servers.
    pub fn list(&self) -> Result<Vec<ServerRecord>, Error> {
        self.store.servers()
    }

    /// One server and its events.
    pub fn show(&self, name: &str) -> Result<(ServerRecord, Vec<Event>), Error> {
        let server = self.store.server(name)?;
        let events = self.store.events(&server.id)?;
        Ok((server, events))
    }

    /// A libpq connection URI for the server (the password is not included).
    pub fn connection_string(&self, name: &str) -> Result<String, Error> {
        let s = self.store.server(name)?;
        Ok(format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            s.port
        ))
    }

    /// Creates a server: validates its key (with a real wrap and unwrap), creates
    /// its encrypted volume and cluster, starts its agent and waits for Ready. On
    /// any failure nothing is left: no directory, no process, no row.
    pub fn create(&self, req: &CreateServer) -> Result<Created, Error> {
        let _guard = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        validate_name(&req.name)?;
        validate_location(&req.location)?;
        if self.store.server(&req.name).is_ok() {
            return Err(Error::Conflict(format!(
                "a server named '{}' already exists: choose another name",
                req.name
            )));
        }
        let id = hex_id()?;
        let dir = ServerDir::new(self.config.state_dir.join("servers").join(&id));
        let (encryption, access, secret) = self.encryption_for(req)?;
        let kek = match &secret {
            Some(secret) => access.connect(secret.clone()),
            None => access.connect(self.secrets.get(&self.store, PLATFORM_IDENTITY)?),
        }
        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let sealed_secret = secret
            .as_ref()
            .map(|s| self.secrets.seal(&id, s))
            .transpose()?;
        let (dek, wrapped) = validate::new_wrapped_dek(
            &kek,
            &access.client_id,
            &Requirements {
                customer_managed: matches!(encryption, Encryption::CustomerManaged { .. }),
                location: &req.location,
            },
            self,
        )?;
        let port = free_port()?;
        let password = hex_id()?;
        let record = ServerRecord {
            id: id.clone(),
            name: req.name.clone(),
            location: req.location.clone(),
            encryption,
            wrapped_dek: wrapped.clone(),
            state: ServerState::Provisioning,
            port,
            dir: dir.root().to_path_buf(),
            created_at: now_rfc3339(),
        };
        let agent_config = self.agent_config(&record, access);
        let provisioned = (|| {
            fs::create_dir(dir.root()).ctx(|| format!("creating {}", dir.root().display()))?;
            fs::set_permissions(dir.root(), fs::Permissions::from_mode(0o711))
                .ctx(|| "setting permissions of the server directory")?;
            write_json_atomic(&dir.agent_config(), &agent_config)?;
            write_json_atomic(&dir.wrapped_dek(), &wrapped)?;
            agent::provision(
                &dir,
                &agent_config,
                &dek,
                &SecretBytes::new(password.as_bytes().to_vec()),
            )?;
            self.store.insert_server(&record, sealed_secret.as_deref())
        })();
        drop(dek);
        if let Err(e) = provisioned {
            let _ = fs::remove_dir_all(dir.root());
            return Err(e);
        }
        self.event(&record, Actor::Dba, "server created", &describe(&record))?;
        if let Err(e) = self
            .spawn_agent(&record)
            .and_then(|()| self.wait_settled(&record))
        {
            self.stop_agent(&record.id);
            self.store.remove_server(&record.id)?;
            let _ = fs::remove_dir_all(dir.root());
            self.event(
                &record,
                Actor::ControlPlane,
                "server removed",
                &format!("create failed: {e}"),
            )?;
            return Err(e);
        }
        let server = self.store.server(&record.id)?;
        Ok(Created {
            server,
            password: SecretString::new(password),
        })
    }

    /// The encryption, the way to reach its KEK, and (customer-managed) the
    /// identity's secret to store for the agent.
    fn encryption_for(
        &self,
        req: &CreateServer,
    ) -> Result<(Encryption, KekAccess, Option<SecretBytes>), Error> {
        match req.encryption.as_deref().unwrap_or("service-managed") {
            "service-managed" => {
                if req.identity.is_some() || req.key.is_some() {
                    return Err(Error::InvalidRequest(
                        "--identity and --key are only for --encryption customer-managed".into(),
                    ));
                }
                Ok((Encryption::ServiceManaged, self.platform_access(), None))
            }
            "customer-managed" => {
                let (Some(identity), Some(key)) = (&req.identity, &req.key) else {
                    return Err(Error::InvalidRequest(
                        "customer-managed encryption needs --identity (the managed identity's \
                         client id) and --key (the key URL)"
                            .into(),
                    ));
                };
                let secret = req
                    .identity_secret
                    .as_ref()
                    .map_or("", |s| s.expose_secret())
                    .trim();
                if secret.is_empty() {
                    return Err(Error::InvalidRequest(
                        "customer-managed encryption needs the identity's credential \
                         (--identity-credential-file) to assign the identity to the server"
                            .into(),
                    ));
                }
                let key =
                    KeyReference::parse(key).map_err(|e| Error::InvalidRequest(e.to_string()))?;
                let access = KekAccess {
                    key: key.clone(),
                    vault: self.vault_endpoints(),
                    client_id: identity.clone(),
                };
                Ok((
                    Encryption::CustomerManaged {
                        identity: identity.clone(),
                        key,
                    },
                    access,
                    Some(SecretBytes::new(secret.as_bytes().to_vec())),
                ))
            }
            other => Err(Error::InvalidRequest(format!(
                "unknown encryption '{other}': use service-managed or customer-managed"
            ))),
        }
    }
}

impl Platform {
    fn platform_access(&self) -> KekAccess {
        KekAccess {
            key: self.config.platform_key.clone(),
            vault: self.vault_endpoints(),
            client_id: self.config.platform_client_id.clone(),
        }
    }

    /// Where agents reach the vault service now.
    fn vault_endpoints(&self) -> VaultEndpoints {
        self.vault
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Follows the vault service when it was moved: re-reads its `service.json` (when
    /// the control plane was given its directory) and hands every running agent where
    /// it is now. Agents started later get it in their `agent.json` at spawn.
    pub fn follow_vault_service(&self) -> Result<(), Error> {
        let Some(service_dir) = &self.config.vault_service_dir else {
            return Ok(());
        };
        let now = VaultEndpoints::read(service_dir)?;
        {
            let mut held = self.vault.write().unwrap_or_else(PoisonError::into_inner);
            if *held != now {
                tracing::info!(
                    "the vault service moved: identity endpoint {} -> {}",
                    held.identity_endpoint,
                    now.identity_endpoint
                );
                *held = now;
            }
        }
        // Every pass, not only on a change: an agent spawned while the address changed
        // is brought up to date by the next one.
        let running: Vec<(String, u32)> = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(id, supervised)| Some((id.clone(), supervised.agent()?.pid())))
            .collect();
        for (id, pid) in running {
            match self.store.server(&id) {
                Ok(server) => self.hand_vault_address(&server, Some(pid)),
                Err(e) => tracing::error!(server = %id, "following the vault service: {e}"),
            }
        }
        Ok(())
    }

    /// Writes where the vault service is now into the server's `agent.json`; when
    /// that changed it and the agent runs (`running`), asks the agent to check its key
    /// now (SIGHUP), which re-reads it. A failure is logged: an agent reports a
    /// configuration it cannot use itself, and the next pass of
    /// [`Platform::follow_vault_service`] tries again.
    fn hand_vault_address(&self, record: &ServerRecord, running: Option<u32>) {
        let handed = (|| {
            let path = ServerDir::new(&record.dir).agent_config();
            let mut config: AgentConfig = read_json(&path)?;
            let vault = self.vault_endpoints();
            if config.kek.vault == vault {
                return Ok(());
            }
            config.kek.vault = vault.clone();
            write_json_atomic(&path, &config)?;
            if let Some(pid) = running {
                sys::send_signal(pid, Signal::Hup).ctx(|| "signalling the agent")?;
                self.event(
                    record,
                    Actor::ControlPlane,
                    "vault address refreshed",
                    &format!(
                        "the agent reaches the vault service at {} from now on",
                        vault.identity_endpoint
                    ),
                )?;
            }
            Ok::<_, Error>(())
        })();
        if let Err(e) = handed {
            tracing::error!(server = %record.name, "handing the agent the vault service's address: {e}");
        }
    }

    fn agent_config(&self, record: &ServerRecord, kek: KekAccess) -> AgentConfig {
        AgentConfig {
            server_id: record.id.clone(),
            port: record.port,
            kek,
            interval_ms: u64::try_from(self.config.interval.as_millis()).unwrap_or(u64::MAX),
            grace_ms: u64::try_from(self.config.grace.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn event(
        &self,
        record: &ServerRecord,
        who: Actor,
        what: &str,
        why: &str,
    ) -> Result<Event, Error> {
        let who = who.as_str();
        tracing::info!(server = %record.name, who, what, why, "event");
        self.store.append_event(&record.id, who, what, why)
    }

    /// Moves the server from the state it had when read (`server.state`) to `to`,
    /// recorded as an event caused by `who`. A no-op when it is in `to` already, or
    /// when its state changed since it was read: a supervision pass does not undo
    /// what a DBA did meanwhile (a stop, a delete).
    fn transition(
        &self,
        server: &ServerRecord,
        to: ServerState,
        who: Actor,
        why: &str,
    ) -> Result<(), Error> {
        if server.state == to {
            return Ok(());
        }
        let mut moved = false;
        self.store.update_server(&server.id, |s| {
            if s.state == server.state {
                s.state = to.clone();
                moved = true;
            }
        })?;
        if moved {
            let what = format!("state {} -> {}", server.state.name(), to.name());
            self.event(server, who, &what, why)?;
        }
        Ok(())
    }

    /// Starts `pgcmk agent --server-dir DIR --instance NAME` with its output in
    /// DIR/agent.log and its identity's secret written to its stdin. NAME is new
    /// at every spawn and is in each of the agent's reports, so a report left by
    /// an earlier agent is never taken for this one's.
    fn spawn_agent_process(&self, record: &ServerRecord) -> Result<AgentProcess, Error> {
        let secret = self.identity_secret(record)?;
        self.hand_vault_address(record, None);
        let dir = ServerDir::new(&record.dir);
        let instance = hex_id()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.agent_log())
            .ctx(|| format!("opening {}", dir.agent_log().display()))?;
        let err = log.try_clone().ctx(|| "duplicating the log handle")?;
        let mut child = Command::new(&self.config.agent_program)
            .arg("agent")
            .arg("--server-dir")
            .arg(dir.root())
            .args(["--instance", &instance])
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(err)
            .spawn()
            .ctx(|| format!("starting {} agent", self.config.agent_program.display()))?;
        // Far below a pipe's capacity, so this never waits for the agent. The
        // pipe closes when `stdin` drops, which ends the agent's read.
        if let Some(mut stdin) = child.stdin.take() {
            if let Err(e) = stdin.write_all(secret.expose_secret()) {
                // The agent exited at once; supervision reports why.
                tracing::error!(server = %record.name, "passing the identity secret to the agent: {e}");
            }
        }
        Ok(AgentProcess::spawned(child, instance))
    }

    /// Starts the server's agent and supervises it from now on.
    fn spawn_agent(&self, record: &ServerRecord) -> Result<(), Error> {
        // Held while spawning, so a supervision pass cannot restart it meanwhile.
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        let agent = self.spawn_agent_process(record)?;
        agents.insert(
            record.id.clone(),
            Supervised::spawned(agent, Instant::now()),
        );
        Ok(())
    }

    /// Re-attaches to the server's agent if it still runs, else starts one.
    fn attach_or_spawn(&self, record: &ServerRecord) -> Result<(), Error> {
        let dir = ServerDir::new(&record.dir);
        let running = fs::read_to_string(dir.agent_pid())
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .and_then(|pid| Some((pid, agent_instance(pid, dir.root())?)));
        match running {
            Some((pid, instance)) => {
                self.agents
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        record.id.clone(),
                        Supervised::attached(AgentProcess::attached(pid, instance), Instant::now()),
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
            None => {
                self.event(
                    record,
                    Actor::ControlPlane,
                    "agent started",
                    "the server should run and had no agent",
                )?;
                self.spawn_agent(record)
            }
        }
    }

    /// Stops supervising the server: asks its agent (if it runs) to stop, waits
    /// until it has exited, and detaches a mount a killed agent left.
    fn stop_agent(&self, id: &str) {
        let supervised = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(mut agent) = supervised.and_then(|mut s| s.take_agent()) {
            let _ = sys::send_signal(agent.pid(), Signal::Term);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while agent.exit().is_none() {
                if Instant::now() >= deadline {
                    tracing::error!(pid = agent.pid(), "agent did not stop; killing it");
                    let _ = sys::send_signal(agent.pid(), Signal::Kill);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            agent.reap();
        }
        if let Ok(server) = self.store.server(id) {
            ServerDir::new(&server.dir).detach_stale_mount();
        }
    }

    /// Supervises the server until it is Ready (its agent's report taken into the
    /// store); any other settled state is the error.
    fn wait_settled(&self, record: &ServerRecord) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.supervise_once();
            match self.store.server(&record.id)?.state {
                ServerState::Ready => return Ok(()),
                ServerState::Provisioning => {}
                other => {
                    return Err(Error::Conflict(format!(
                        "server '{}' did not become Ready: {}{}",
                        record.name,
                        other.name(),
                        other
                            .reason()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )))
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Conflict(format!(
                    "server '{}' did not become Ready within {READY_TIMEOUT:?}; see {}",
                    record.name,
                    ServerDir::new(&record.dir).agent_log().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One supervision pass over every server (see [`Platform::supervise_server`]).
    pub fn supervise_once(&self) {
        let _pass = self
            .supervision
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let servers = match self.store.servers() {
            Ok(s) => s,
            Err(e) => return tracing::error!("supervision: {e}"),
        };
        let now = Instant::now();
        for server in servers {
            if let Err(e) = self.supervise_server(&server, now) {
                tracing::error!(server = %server.name, "supervision: {e}");
            }
        }
    }

    /// Supervises one server at `now`: a dead agent makes it Failed and its
    /// restart is scheduled; a due restart is made; otherwise the live agent's
    /// current report is taken in (its events, its state, a re-wrapped DEK), and
    /// a live agent whose reports stopped makes it Failed.
    fn supervise_server(&self, server: &ServerRecord, now: Instant) -> Result<(), Error> {
        if matches!(server.state, ServerState::Stopped | ServerState::Deleting) {
            return Ok(());
        }
        let dir = ServerDir::new(&server.dir);
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(supervised) = agents.get_mut(&server.id) else {
            return Ok(());
        };
        let after_death;
        let server = match supervised.check_alive(now) {
            Some((exit, delay)) => {
                let why = format!(
                    "the node agent {}; restarting it {}",
                    exit_detail(&dir, exit),
                    describe_delay(delay)
                );
                tracing::warn!(server = %server.name, "{why}");
                self.transition(server, ServerState::Failed(why.clone()), Actor::Agent, &why)?;
                after_death = self.store.server(&server.id)?;
                &after_death
            }
            None => server,
        };
        if supervised.restart_due(now) {
            return match self.spawn_agent_process(server) {
                Ok(agent) => {
                    let why = format!(
                        "restart {} in a row; the new agent's pid is {}",
                        supervised.restarts(),
                        agent.pid()
                    );
                    supervised.restarted(agent, now);
                    self.event(server, Actor::ControlPlane, "agent restarted", &why)
                        .map(drop)
                }
                Err(e) => {
                    let delay = supervised.spawn_failed(now);
                    let why = format!(
                        "the node agent could not be started: {e}; retrying {}",
                        describe_delay(delay)
                    );
                    self.transition(
                        server,
                        ServerState::Failed(why.clone()),
                        Actor::ControlPlane,
                        &why,
                    )
                }
            };
        }
        let report = read_json::<AgentStatus>(&dir.status()).ok();
        match supervised.read(report.as_ref(), now) {
            Reading::Current(report) => {
                for e in supervised.new_events(report) {
                    self.event(server, e.who, &e.what, &e.why)?;
                }
                if report.state == ServerState::Ready {
                    supervised.ready();
                }
                self.take_report(server, &dir, report)
            }
            Reading::Waiting => Ok(()),
            Reading::Stale => {
                let why = format!(
                    "the node agent (pid {}) has not reported for more than {} s: what it \
                     does is unknown",
                    supervised.agent().map_or(0, AgentProcess::pid),
                    STALE_AFTER.as_secs()
                );
                self.transition(
                    server,
                    ServerState::Failed(why.clone()),
                    Actor::ControlPlane,
                    &why,
                )
            }
        }
    }

    /// Takes in a current report: a DEK the agent re-wrapped, and its state.
    fn take_report(
        &self,
        server: &ServerRecord,
        dir: &ServerDir,
        status: &AgentStatus,
    ) -> Result<(), Error> {
        if status.wrapped_by != server.wrapped_dek.kek {
            let wrapped: WrappedDek = read_json(&dir.wrapped_dek())?;
            if wrapped.kek == status.wrapped_by {
                self.store
                    .update_server(&server.id, |s| s.wrapped_dek = wrapped.clone())?;
                self.event(
                    server,
                    Actor::KeyMonitor,
                    "dek re-wrapped",
                    &format!(
                        "adopted key version {} (was {})",
                        wrapped.kek, server.wrapped_dek.kek
                    ),
                )?;
            }
        }
        // Stopped is the control plane's to record, when the DBA asked for it.
        if status.state == ServerState::Stopped {
            return Ok(());
        }
        self.transition(server, status.state.clone(), status.cause, &status.why)
    }

    fn set_state(&self, server: &ServerRecord, state: ServerState, why: &str) -> Result<(), Error> {
        self.store
            .update_server(&server.id, |s| s.state = state.clone())?;
        self.event(
            server,
            Actor::Dba,
            &format!("state {} -> {}", server.state.name(), state.name()),
            why,
        )?;
        Ok(())
    }

    /// Stops the server: PostgreSQL, mount and agent. The DEK leaves memory.
    pub fn stop(&self, name: &str) -> Result<ServerRecord, Error> {
        let _guard = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let server = self.store.server(name)?;
        if server.state == ServerState::Stopped {
            return Err(Error::Conflict(format!(
                "server '{name}' is already stopped"
            )));
        }
        self.stop_agent(&server.id);
        self.set_state(&server, ServerState::Stopped, "stopped by the DBA")?;
        self.store.server(&server.id)
    }

    /// Starts a server that does not serve — stopped, failed, inaccessible,
    /// waiting for its agent's restart — at once, with a new agent, and waits
    /// until it is Ready (or says why not). A key version the vault refuses is
    /// found before any agent runs: the server stays as it was, and the error
    /// names the version and the fix.
    pub fn start(&self, name: &str) -> Result<ServerRecord, Error> {
        let _guard = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let server = self.store.server(name)?;
        let running = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&server.id)
            .and_then(Supervised::live_agent)
            .map(AgentProcess::pid);
        match (&server.state, running) {
            (ServerState::Deleting, _) => {
                return Err(Error::Conflict(format!("server '{name}' is being deleted")))
            }
            (ServerState::Ready | ServerState::Provisioning, Some(pid)) => {
                return Err(Error::Conflict(format!(
                    "server '{name}' is {} and its agent (pid {pid}) runs: stop it first to \
                     start it again",
                    server.state.name()
                )))
            }
            // An agent that is up but cannot serve is replaced, and one waiting for
            // its restart is not restarted by supervision meanwhile.
            _ => self.stop_agent(&server.id),
        }
        self.check_key_before_start(&server)?;
        self.set_state(&server, ServerState::Provisioning, "started by the DBA")?;
        let server = self.store.server(&server.id)?;
        self.spawn_agent(&server)?;
        self.wait_settled(&server)?;
        self.store.server(&server.id)
    }

    /// Asks the server's agent to check its key now.
    pub fn revalidate(&self, name: &str) -> Result<ServerRecord, Error> {
        let server = self.store.server(name)?;
        let pid = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&server.id)
            .and_then(Supervised::live_agent)
            .map(AgentProcess::pid)
            .ok_or_else(|| {
                Error::Conflict(format!("server '{name}' is not running: start it first"))
            })?;
        sys::send_signal(pid, Signal::Hup).ctx(|| "signalling the agent")?;
        self.event(
            &server,
            Actor::Dba,
            "revalidate requested",
            "key check requested by the DBA",
        )?;
        Ok(server)
    }

    /// Deletes the server: stops it and removes its directory and row.
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        let _guard = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let server = self.store.server(name)?;
        self.set_state(&server, ServerState::Deleting, "deleted by the DBA")?;
        self.stop_agent(&server.id);
        self.finish_delete(&server)
    }

    fn finish_delete(&self, server: &ServerRecord) -> Result<(), Error> {
        let dir = ServerDir::new(&server.dir);
        // An agent killed earlier may have left its mount behind.
        dir.detach_stale_mount();
        if dir.root().exists() {
            fs::remove_dir_all(dir.root()).ctx(|| format!("removing {}", dir.root().display()))?;
        }
        self.store.remove_server(&server.id)?;
        self.event(
            server,
            Actor::Dba,
            "server deleted",
            "directory and state removed",
        )?;
        Ok(())
    }

    /// Moves a customer-managed server to another key (same identity): the DEK is
    /// unwrapped with the old key and wrapped with the new one, which is validated
    /// like at create; the agent restarts with the new key.
    pub fn update_key(&self, name: &str, key_url: &str) -> Result<ServerRecord, Error> {
        let _guard = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let server = self.store.server(name)?;
        let Encryption::CustomerManaged { identity, .. } = &server.encryption else {
            return Err(Error::InvalidRequest(format!(
                "server '{name}' uses service-managed encryption: the key can only be changed \
                 for customer-managed servers (chosen at create)"
            )));
        };
        let key = KeyReference::parse(key_url).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let dir = ServerDir::new(&server.dir);
        let mut config: AgentConfig = read_json(&dir.agent_config())?;
        let secret = self.identity_secret(&server)?;
        let old = config.kek.connect(secret.clone())?;
        let new_access = KekAccess {
            key: key.clone(),
            ..config.kek.clone()
        };
        let new = new_access
            .connect(secret)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        // Validates the new key end to end (with a throwaway DEK) before touching anything.
        validate::new_wrapped_dek(
            &new,
            identity,
            &Requirements {
                customer_managed: true,
                location: &server.location,
            },
            self,
        )?;
        let current: WrappedDek = read_json(&dir.wrapped_dek())?;
        let dek = old.unwrap(&current)?;
        let wrapped = new.wrap(&dek)?;
        drop(dek);
        self.stop_agent(&server.id);
        write_json_atomic(&dir.wrapped_dek(), &wrapped)?;
        config.kek = new_access;
        write_json_atomic(&dir.agent_config(), &config)?;
        let updated = self.store.update_server(&server.id, |s| {
            s.wrapped_dek = wrapped.clone();
            s.encryption = Encryption::CustomerManaged {
                identity: identity.clone(),
                key: key.clone(),
            };
            s.state = ServerState::Provisioning;
        })?;
        self.event(
            &server,
            Actor::Dba,
            "key changed",
            &format!("now {key}, DEK wrapped by {}", wrapped.kek),
        )?;
        self.spawn_agent(&updated)?;
        self.wait_settled(&updated)?;
        self.store.server(&server.id)
    }

    /// Stops every agent (used when the control plane shuts down for good in tests;
    /// a normal control plane exit leaves agents running for re-attachment).
    pub fn stop_all_agents(&self) {
        let ids: Vec<String> = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.stop_agent(&id);
        }
    }
}

impl VaultLocations for Platform {
    /// Asks the vault service (`pgcmk keyvault list`) for its vaults' locations.
    fn location_of(&self, vault_url: &str) -> Result<Option<String>, Error> {
        let Some(service_dir) = &self.config.vault_service_dir else {
            return Ok(None);
        };
        let out = Command::new(&self.config.agent_program)
            .args(["keyvault", "list", "--output", "json"])
            .env("PGCMK_VAULT_SERVICE_DIR", service_dir)
            .stdin(Stdio::null())
            .output()
            .ctx(|| "listing the vault service's vaults")?;
        if !out.status.success() {
            return Err(Error::InvalidRequest(format!(
                "cannot list the vault service's vaults: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let list: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Store(format!("vault list is not JSON: {e}")))?;
        let vaults = list
            .as_array()
            .or_else(|| list.get("value").and_then(|v| v.as_array()))
            .cloned()
            .unwrap_or_default();
        let want = vault_url.trim_end_matches('/');
        let want_port = want
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u64>().ok());
        Ok(vaults.iter().find_map(|v| {
            let same = match v.get("url").and_then(|u| u.as_str()) {
                Some(url) => url.trim_end_matches('/').eq_ignore_ascii_case(want),
                // Vaults are told apart by their port on the service's address.
                None => want_port.is_some() && v.get("port").and_then(|p| p.as_u64()) == want_port,
            };
            same.then(|| v.get("location")?.as_str().map(str::to_string))?
        }))
    }
}

/// True when `pid` is a running `pgcmk agent` for `dir` (not a recycled pid, not a
/// zombie).
pub fn is_agent_of(pid: u32, dir: &Path) -> bool {
    agent_instance(pid, dir).is_some()
}

/// The instance name of `pid` when it is a running `pgcmk agent` for `dir` (not a
/// recycled pid, not a zombie).
fn agent_instance(pid: u32, dir: &Path) -> Option<String> {
    let args = process::cmdline(pid)?;
    let for_dir = args.iter().any(|a| a == b"agent")
        && process::arg_after(&args, "--server-dir").is_some_and(|d| process::arg_is_path(d, dir));
    let instance = process::arg_after(&args, "--instance")?;
    (for_dir && process::is_running(pid)).then(|| String::from_utf8_lossy(instance).into_owned())
}

/// How an agent ended, with its last error when it gave one: `pgcmk agent`
/// prints `error: ...` as its last line before it exits with an error.
fn exit_detail(dir: &ServerDir, exit: AgentExit) -> String {
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

fn validate_name(name: &str) -> Result<(), Error> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "server name '{name}' is not valid: use 3-63 lowercase letters, digits and '-', \
             not starting or ending with '-'"
        )))
    }
}

fn validate_location(location: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&location.len())
        && location
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "location '{location}' is not valid: use letters, digits and '-' (e.g. westeurope)"
        )))
    }
}

/// 128 random bits as 32 lowercase hex characters.
fn hex_id() -> Result<String, Error> {
    let bytes: [u8; 16] = random::array()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A TCP port on 127.0.0.1 that is free now.
fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ctx(|| "finding a free port")?;
    Ok(listener.local_addr().ctx(|| "finding a free port")?.port())
}

fn describe(record: &ServerRecord) -> String {
    match &record.encryption {
        Encryption::ServiceManaged => format!(
            "service-managed key; DEK wrapped by {}",
            record.wrapped_dek.kek
        ),
        Encryption::CustomerManaged { identity, key } => format!(
            "customer-managed key {key} via identity {identity}; DEK wrapped by {}",
            record.wrapped_dek.kek
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locations_are_checked_with_reasons() {
        for ok in ["abc", "my-server-1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["ab", "-abc", "abc-", "Abc", "a_b_c", &"a".repeat(64)] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("3-63 lowercase"), "{bad}: {err}");
        }
        validate_location("westeurope").unwrap();
        assert!(validate_location("west europe").is_err());
        assert!(validate_location("").is_err());
    }

    #[test]
    fn secrets_in_requests_are_not_printed() {
        let req: CreateServer = serde_json::from_str(
            r#"{"name":"a1b","location":"l","identity_secret":"s3cr3t-header"}"#,
        )
        .unwrap();
        assert_eq!(
            req.identity_secret.as_ref().unwrap().expose_secret(),
            "s3cr3t-header"
        );
        let printed = format!("{req:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("REDACTED"), "{printed}");
    }

    #[test]
    fn ids_are_32_hex_and_distinct() {
        let (a, b) = (hex_id().unwrap(), hex_id().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
