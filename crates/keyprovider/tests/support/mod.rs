//! A real `pgcmk vault serve` child process for tests and the benchmark: started on a
//! free loopback port with a temporary data directory, driven through the `pgcmk` CLI
//! like a security officer would, and stopped (by pid) when dropped. The shared parts
//! live in `pgcmk-testkit`.

#![allow(dead_code)] // Each test binary uses a different part of this harness.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use pgcmk_testkit::binary;
use pgcmk_testkit::cli::SecurityOfficer;
use pgcmk_testkit::vault::{ServeCommand, VaultProcess};
use serde_json::Value;

pub use pgcmk_vault::service::ServiceInfo;

/// The key permissions (Azure names) the tests and the benchmark use: all but
/// import, backup, restore, encrypt and decrypt.
pub const ALL_KEY_PERMISSIONS: [&str; 14] = [
    "get",
    "list",
    "create",
    "update",
    "delete",
    "recover",
    "purge",
    "rotate",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
    "getrotationpolicy",
    "setrotationpolicy",
];

/// The `pgcmk` binary, built from this workspace (release for the benchmark).
pub fn pgcmk_binary(release: bool) -> PathBuf {
    if release {
        binary::pgcmk_release()
    } else {
        binary::pgcmk()
    }
    .to_path_buf()
}

/// A user-assigned managed identity created through the CLI.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub client_id: String,
    pub object_id: String,
    /// The 0600 file holding its credential.
    pub credential_file: PathBuf,
}

/// A running vault service, stopped on drop.
pub struct VaultService {
    process: VaultProcess,
    officer: SecurityOfficer,
    /// Holds the data directory and logs; removed on drop (after the process stops).
    dir: tempfile::TempDir,
    pub info: ServiceInfo,
}

impl VaultService {
    /// Starts `pgcmk vault serve` on 127.0.0.1 with a free port and waits (with a
    /// deadline) until it has written `service.json`.
    pub fn start(bin: PathBuf) -> Self {
        Self::start_with(bin, &[])
    }

    /// Like [`VaultService::start`], with more `serve` arguments.
    pub fn start_with(bin: PathBuf, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        let mut command = ServeCommand::new(&bin, data.clone(), dir.path().join("vault.log"));
        command.args = args.iter().map(|a| a.to_string()).collect();
        let process = VaultProcess::start(command);
        Self {
            info: process.service.info.clone(),
            officer: SecurityOfficer::new(&bin, &data),
            process,
            dir,
        }
    }

    /// The service's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.process.command.data_dir.clone()
    }

    /// The service's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the service (SIGTERM, clean exit asserted) and starts it again on its
    /// ports with its data.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process.restart();
        self.info = self.process.service.info.clone();
    }

    /// Everything the service printed so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// A scratch path inside the temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `pgcmk ARGS --output json` as the bootstrap administrator, asserts
    /// success, returns the JSON it printed (`null` when it printed nothing).
    pub fn cli(&self, args: &[&str]) -> Value {
        self.officer.run(args)
    }

    /// Creates a user-assigned managed identity.
    pub fn create_identity(&self, name: &str) -> Identity {
        let credential_file = self.scratch(&format!("{name}.credential"));
        let v = self
            .officer
            .create_identity(name, "managed", &credential_file);
        Identity {
            name: name.to_string(),
            client_id: field(&v, "client_id"),
            object_id: field(&v, "object_id"),
            credential_file,
        }
    }

    /// Creates a vault and returns its base URL.
    pub fn create_vault(&self, name: &str, purge_protection: bool) -> String {
        self.officer.create_vault(name, "local", purge_protection)
    }

    /// Gives `identity` exactly `permissions` on the vault's keys.
    pub fn set_policy(&self, vault: &str, identity: &str, permissions: &[&str]) {
        self.officer.set_policy(vault, identity, permissions);
    }

    /// The `IDENTITY_HEADER` secret a workload of `identity` presents to the
    /// managed-identity endpoint.
    pub fn identity_header(&self, identity: &Identity) -> String {
        pgcmk_vault::client::read_credential(&identity.credential_file)
            .expect("read the identity's credential file")
            .client_secret
    }
}

fn field(v: &Value, name: &str) -> String {
    v.get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string '{name}' in {v}"))
        .to_string()
}

/// Azure SDK settings that would make a managed-identity credential look elsewhere
/// for tokens than the vault's identity endpoint.
const FOREIGN_AZURE_ENV: [&str; 6] = [
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
];

/// How a real SDK client's run ended.
pub struct ClientRun {
    /// Its exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// What it printed.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl ClientRun {
    /// Whether it ran to its end and succeeded.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs a real SDK client against the vault with `identity`'s managed-identity
/// environment (App Service protocol) and nothing that would point it elsewhere;
/// killed past `limit`. Its output goes to files in the scratch directory, so a
/// chatty client never blocks on a full pipe.
pub fn run_sdk_client(
    vault: &VaultService,
    identity: &Identity,
    command: &mut Command,
    limit: Duration,
) -> ClientRun {
    let (out_path, err_path) = (vault.scratch("client.out"), vault.scratch("client.err"));
    let file = |p: &Path| std::fs::File::create(p).expect("client output file");
    command
        .env("AZURE_CLIENT_ID", &identity.client_id)
        .env("IDENTITY_ENDPOINT", &vault.info.identity_endpoint)
        .env("IDENTITY_HEADER", vault.identity_header(identity))
        .stdin(Stdio::null())
        .stdout(file(&out_path))
        .stderr(file(&err_path));
    for name in FOREIGN_AZURE_ENV {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("start the SDK client");
    let status = pgcmk_testkit::process::wait_exit(&mut child, limit);
    if status.is_none() {
        pgcmk_testkit::process::kill_quietly(&mut child);
    }
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    ClientRun {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}
