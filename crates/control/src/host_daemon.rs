//! The host daemon (`pgcmk host serve`, [docs/hosts.md](../../../docs/hosts.md)):
//! on a host enrolled with the control plane, it registers over HTTPS with the
//! host's own credential and keeps sending heartbeats at the pace the plane sets.
//!
//! It never listens: every exchange is a request it makes, verified against the
//! plane's CA. A plane it cannot reach, or one that fails, is retried at the same
//! pace (the plane sees the host Silent meanwhile, which is true); a plane that
//! restarted (it forgot the registration) is registered with again; a refusal of
//! the credential, or another daemon registered with it, ends the daemon with an
//! error that says what to do.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api_tls::ApiClient;
use crate::assignments::{HeartbeatAnswer, HostReport};
use crate::host_agents::{HostAgents, TaskDone};
use crate::hosts::HostPace;
use crate::model::SecretString;
use crate::{Error, ErrorCode};

/// How long one request to the plane may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the plane is and who this host is.
#[derive(Clone, Debug)]
pub struct HostDaemonConfig {
    /// The control plane's URL (`https://HOST:PORT`).
    pub control_plane: String,
    /// The plane's CA certificate, the only one trusted for it.
    pub ca_file: PathBuf,
    /// The host's credential, as `pgcmk host add` printed it.
    pub credential_file: PathBuf,
    /// The host's name, as enrolled.
    pub name: String,
    /// The address its requests leave from (the enrolled one), when the system's
    /// choice would be another.
    pub source_address: Option<IpAddr>,
    /// Where the host keeps its servers' directories (created 0711: PostgreSQL,
    /// another user, traverses to its mount and socket, as under the plane's).
    pub state_dir: PathBuf,
    /// The `pgcmk` program, run as `pgcmk agent --server-dir DIR --instance NAME`.
    pub agent_program: PathBuf,
}

/// Registers, then sends heartbeats until the plane refuses this host; returns
/// only with that refusal (or a local error before the first request).
pub fn run(config: &HostDaemonConfig) -> Result<(), Error> {
    let token = read_host_credential(&config.credential_file)?;
    create_state_dir(&config.state_dir)?;
    let api = ApiClient::leaving_from(
        &config.control_plane,
        &config.ca_file,
        REQUEST_TIMEOUT,
        config.source_address,
    )?;
    let mut agents =
        HostAgents::open(&config.state_dir, config.agent_program.clone()).map_err(|e| {
            Error::io(
                format!(
                    "opening the host's servers in {}",
                    config.state_dir.display()
                ),
                e,
            )
        })?;
    let instance = pgcmk_crypto::random::hex_id(8)?;
    // Task answers, from the threads that run them to the requests that post them.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<TaskDone>();
    let mut unposted: Vec<TaskDone> = Vec::new();
    let mut pace = HostPace::standard();
    let mut registered = false;
    let mut failing: Option<String> = None;
    loop {
        let call = if registered { "heartbeat" } else { "register" };
        let url = api.url(&format!("/hosts/{}/{call}", config.name));
        let report = HostReport {
            instance: instance.clone(),
            servers: agents.report(),
        };
        let request = api
            .http()
            .post(url)
            .bearer_auth(token.expose_secret())
            .json(&report);
        match api.call(request).and_then(read_answer) {
            Ok(HeartbeatAnswer {
                pace: answer,
                assignments,
                tasks,
            }) => {
                for assignment in assignments {
                    agents.apply(assignment);
                }
                for task in tasks {
                    agents.run_task(task, done_tx.clone());
                }
                if !registered {
                    tracing::info!(host = %config.name, instance = %instance, "registered");
                }
                if failing.take().is_some() {
                    tracing::info!("the control plane answers again");
                }
                registered = true;
                pace = answer;
            }
            Err(Error::Api {
                code: ErrorCode::NotFound,
                ..
            }) if registered => {
                tracing::info!("the control plane forgot this host (it restarted): registering");
                registered = false;
                continue;
            }
            Err(
                e @ Error::Api {
                    status: 401 | 404 | 409,
                    ..
                },
            ) => {
                return Err(Error::Unauthorized(format!(
                    "the control plane refuses host '{}': {e} (is it still enrolled, with this \
                     credential, from this address? `pgcmk host list` shows it)",
                    config.name
                )));
            }
            Err(e) => {
                let e = e.to_string();
                if failing.as_ref() != Some(&e) {
                    tracing::warn!("the control plane does not answer: {e}; trying again");
                    failing = Some(e);
                }
            }
        }
        unposted.extend(done_rx.try_iter());
        unposted.retain(|done| !post_answer(&api, config, &token, done));
        std::thread::sleep(Duration::from_millis(pace.heartbeat_ms));
    }
}

/// Posts a task's answer; true once the plane took it, or refused it for good
/// (it no longer waits for it: its host went silent meanwhile).
fn post_answer(
    api: &ApiClient,
    config: &HostDaemonConfig,
    token: &SecretString,
    done: &TaskDone,
) -> bool {
    let url = api.url(&format!("/hosts/{}/tasks/{}", config.name, done.task_id));
    let request = api
        .http()
        .post(url)
        .bearer_auth(token.expose_secret())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(done.answer.expose_secret().to_vec());
    match api.call(request) {
        Ok(_) => true,
        Err(e @ Error::Api { status: 404, .. }) => {
            tracing::warn!(task = %done.task_id, "the plane no longer waits for this answer: {e}");
            true
        }
        Err(e) => {
            tracing::warn!(task = %done.task_id, "posting a task's answer: {e}; trying again");
            false
        }
    }
}

/// The plane's answer, read whole into memory that is zeroized after parsing (it
/// may carry handshakes).
fn read_answer(response: reqwest::blocking::Response) -> Result<HeartbeatAnswer, Error> {
    let body = response
        .bytes()
        .map_err(|e| Error::Unreachable(format!("reading the plane's answer: {e}")))?;
    let body = pgcmk_crypto::SecretBytes::new(body.to_vec());
    serde_json::from_slice(body.expose_secret())
        .map_err(|e| Error::Unreachable(format!("the plane's answer is not understood: {e}")))
}

/// Reads the host's credential: 64 hex characters.
fn read_host_credential(path: &Path) -> Result<SecretString, Error> {
    let bytes = pgcmk_crypto::SecretBytes::new(std::fs::read(path).map_err(|e| {
        Error::Unauthorized(format!(
            "cannot read the host credential {} ({e}): give the file holding the credential \
             `pgcmk host add` printed for this host",
            path.display()
        ))
    })?);
    let token = bytes.expose_secret().trim_ascii();
    if token.len() != 64 || !token.iter().all(u8::is_ascii_hexdigit) {
        return Err(Error::Unauthorized(format!(
            "{} is not a host credential: it holds the 64 hex characters `pgcmk host add` \
             printed",
            path.display()
        )));
    }
    // Checked above: ASCII hex.
    Ok(SecretString::new(
        String::from_utf8_lossy(token).into_owned(),
    ))
}

/// The host's state directory: root's; others may only traverse it.
fn create_state_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)))
        .map_err(|e| {
            Error::io(
                format!("creating the host's state directory {}", dir.display()),
                e,
            )
        })
}
