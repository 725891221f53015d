//! Real parts for the control plane's end-to-end tests: a `pgcmk vault serve`
//! child driven through the security officer's CLI, a `pgcmk serve` child driven
//! through the DBA's CLI, and `psql`. Every process is stopped by its own handle
//! when its guard drops.

#![allow(dead_code)] // Each test binary uses a different part.

pub mod backups;
pub mod cpu;
pub mod geo;
pub mod ha;
pub mod hosts;
pub mod regress;

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgcmk_agent::contract::invocation::is_agent_of;
use pgcmk_agent::contract::ServerDir;
use pgcmk_agent::contract::ServerState;
use pgcmk_testkit::binary::pgcmk;
use pgcmk_testkit::cli::{run_json, SecurityOfficer};
use pgcmk_testkit::process::{
    children_of, is_gone, kill9, kill_quietly, spawn_logged, terminate, wait_exit,
};
use pgcmk_testkit::vault::{ServeCommand, VaultProcess};
use pgcmk_testkit::wait::wait_for;
use serde_json::Value;

/// A running `pgcmk vault serve`, killed on drop.
pub struct Vault {
    pub process: VaultProcess,
    officer: SecurityOfficer,
    pub dir: PathBuf,
    pub identity_endpoint: String,
}

/// A managed identity.
pub struct Identity {
    pub name: String,
    pub client_id: String,
    pub credential_file: PathBuf,
}

impl Vault {
    /// Starts the vault service with its data under `root/vault`.
    pub fn start(root: &Path) -> Self {
        Self::start_with(root, &[])
    }

    /// Like [`Vault::start`], with more `pgcmk vault serve` arguments.
    pub fn start_with(root: &Path, args: &[&str]) -> Self {
        let dir = root.join("vault");
        let mut command = ServeCommand::new(pgcmk(), dir.clone(), root.join("vault.log"));
        command.args = args.iter().map(|a| a.to_string()).collect();
        let process = VaultProcess::start(command);
        Self {
            identity_endpoint: process.service.info.identity_endpoint.clone(),
            officer: SecurityOfficer::new(pgcmk(), &dir),
            process,
            dir,
        }
    }

    /// Kills the vault service: an outage, not a revocation.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the killed service again with the same arguments.
    pub fn restart(&mut self) {
        self.process.restart();
        self.identity_endpoint = self.process.service.info.identity_endpoint.clone();
    }

    /// The security officer moves the running service to `listen` on purpose: stops
    /// it and starts it with `--listen` (its vaults keep their own ports). Returns
    /// when the old service was gone (RFC 3339): later audit entries came in through
    /// the new address.
    pub fn move_to(&mut self, listen: SocketAddr) -> String {
        self.process.stop();
        let moved = pgcmk_control::model::now_rfc3339();
        self.process.command.listen = Some(listen.to_string());
        self.restart();
        moved
    }

    /// How many allowed calls of `operation` (an audit name such as `KeyUnwrap`)
    /// `identity` made since `since` (RFC 3339), by the audit trail.
    pub fn calls_since(&self, identity: &Identity, operation: &str, since: &str) -> usize {
        let v = self.cli(&[
            "audit",
            "list",
            "--principal",
            &identity.name,
            "--operation",
            operation,
            "--result",
            "allowed",
            "--since",
            since,
        ]);
        v.as_array().map_or(0, Vec::len)
    }

    /// Runs a security officer's command (`--output json`) as the vault's administrator.
    pub fn try_cli(&self, args: &[&str]) -> Result<Value, String> {
        self.try_cli_as(None, args)
    }

    /// Runs a vault command as the principal whose credential file is `credentials`
    /// (the administrator when `None`).
    pub fn try_cli_as(&self, credentials: Option<&Path>, args: &[&str]) -> Result<Value, String> {
        self.officer.try_run_as(credentials, args)
    }

    pub fn cli(&self, args: &[&str]) -> Value {
        self.officer.run(args)
    }

    fn credential_file(&self, name: &str) -> PathBuf {
        self.dir
            .parent()
            .unwrap()
            .join(format!("{name}.credential"))
    }

    pub fn identity(&self, name: &str) -> Identity {
        let credential_file = self.credential_file(name);
        let v = self
            .officer
            .create_identity(name, "managed", &credential_file);
        Identity {
            name: name.into(),
            client_id: v["client_id"].as_str().expect("client_id").into(),
            credential_file,
        }
    }

    /// Creates a user principal (a person, such as the DBA); returns its credential file.
    pub fn user(&self, name: &str) -> PathBuf {
        let credential_file = self.credential_file(name);
        self.officer.create_identity(name, "user", &credential_file);
        credential_file
    }

    /// Asserts that the principal of `credentials` is refused (403) when it tries to
    /// give `identity` every key permission on `vault`.
    pub fn assert_cannot_set_policy(&self, credentials: &Path, vault: &str, identity: &str) {
        let err = self
            .officer
            .try_set_policy_as(Some(credentials), vault, identity, &["all"])
            .unwrap_err();
        assert!(
            err.to_lowercase().contains("forbidden") || err.contains("403"),
            "{err}"
        );
    }

    /// Creates a vault; returns its URL.
    pub fn keyvault(&self, name: &str, location: &str, purge_protection: bool) -> String {
        self.officer.create_vault(name, location, purge_protection)
    }

    pub fn grant(&self, vault: &str, identity: &Identity, permissions: &[&str]) {
        self.officer.set_policy(vault, &identity.name, permissions);
    }

    pub fn revoke(&self, vault: &str, identity: &Identity) {
        self.cli(&[
            "keyvault",
            "delete-policy",
            "--name",
            vault,
            "--identity",
            &identity.name,
        ]);
    }

    /// The vault service's CA certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.process.service.info.ca_file.clone()
    }

    /// The security officer's own Azure Key Vault client for `vault_url` (as the
    /// service's administrator, with client-credentials tokens).
    pub fn officer(&self, vault_url: &str) -> pgcmk_keyprovider::akv::AkvClient {
        use pgcmk_keyprovider::akv::{AkvClient, ClientOptions, TokenSource};
        let admin = self.process.admin_credential();
        let tokens = TokenSource::client_secret(
            &self.process.service.info.token_endpoint,
            &admin.client_id,
            pgcmk_crypto::SecretBytes::new(admin.client_secret.into_bytes()),
        )
        .unwrap();
        let options = ClientOptions::trusting_only(self.ca_file());
        AkvClient::new(vault_url, tokens, &options).unwrap()
    }

    /// An HTTPS client that trusts the vault service's CA (for raw REST calls).
    pub fn https_client(&self) -> reqwest::blocking::Client {
        let ca = reqwest::Certificate::from_pem(&fs::read(self.ca_file()).unwrap()).unwrap();
        reqwest::blocking::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap()
    }

    /// An access token for `vault_url`, as the principal of `credential_file`
    /// (OAuth2 client credentials).
    pub fn client_token(&self, credential_file: &Path, vault_url: &str) -> String {
        let scope = format!("{}/.default", vault_url.trim_end_matches('/'));
        let cred: Value = serde_json::from_slice(&fs::read(credential_file).unwrap()).unwrap();
        let reply: Value = self
            .https_client()
            .post(&self.process.service.info.token_endpoint)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", cred["client_id"].as_str().unwrap()),
                ("client_secret", cred["client_secret"].as_str().unwrap()),
                ("scope", &scope),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        reply["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {reply}"))
            .to_string()
    }

    /// Enables or disables one version of a key (the current one when `None`).
    pub fn set_enabled(&self, vault_url: &str, key: &str, version: Option<&str>, enabled: bool) {
        let update = pgcmk_keyprovider::akv::KeyUpdate {
            enabled: Some(enabled),
            ..Default::default()
        };
        self.officer(vault_url)
            .update_key(key, version, &update)
            .unwrap();
    }

    /// The security officer's four steps for a customer-managed server: identity
    /// `NAME-mi`, vault `NAME-kv` (westeurope, purge protection) granting it `get`,
    /// `wrapKey` and `unwrapKey`, and RSA key `NAME-key`.
    pub fn customer_key(&self, name: &str) -> CustomerKey {
        self.customer_key_of(name, "RSA")
    }

    /// Like [`Vault::customer_key`], the key of type `kty` (`RSA` or `RSA-HSM`).
    pub fn customer_key_of(&self, name: &str, kty: &str) -> CustomerKey {
        self.customer_key_at(name, "westeurope", kty)
    }

    /// Like [`Vault::customer_key_of`], the vault in `location`.
    pub fn customer_key_at(&self, name: &str, location: &str, kty: &str) -> CustomerKey {
        let identity = self.identity(&format!("{name}-mi"));
        let vault = format!("{name}-kv");
        let vault_url = self.keyvault(&vault, location, true);
        self.grant(&vault, &identity, &["get", "wrapKey", "unwrapKey"]);
        let key = format!("{name}-key");
        let kid = self.key_of(&vault, &key, 2048, kty);
        CustomerKey {
            identity,
            vault,
            vault_url,
            key,
            kid,
        }
    }

    /// Rotates `key`; returns the new version's full id.
    pub fn rotate(&self, key: &CustomerKey) -> String {
        kid_of(&self.cli(&["key", "rotate", "--vault", &key.vault, "--name", &key.key]))
    }

    /// Enables or disables the version of `key` whose full id is `kid`.
    pub fn set_version_enabled(&self, key: &CustomerKey, kid: &str, enabled: bool) {
        self.set_enabled(&key.vault_url, &key.key, Some(version_of(kid)), enabled);
    }

    /// Creates an RSA key; returns its full (versioned) id.
    pub fn key(&self, vault: &str, name: &str, size: u32) -> String {
        self.key_of(vault, name, size, "RSA")
    }

    /// Creates a key of type `kty`; returns its full (versioned) id.
    pub fn key_of(&self, vault: &str, name: &str, size: u32, kty: &str) -> String {
        let size = size.to_string();
        let v = self.cli(&[
            "key", "create", "--vault", vault, "--name", name, "--kty", kty, "--size", &size,
        ]);
        kid_of(&v)
    }
}

/// A customer's key and the identity that may use it ([`Vault::customer_key`]).
pub struct CustomerKey {
    pub identity: Identity,
    /// The vault's name and URL.
    pub vault: String,
    pub vault_url: String,
    /// The key's name, and its first version's full id.
    pub key: String,
    pub kid: String,
}

/// The version part of a full key id.
pub fn version_of(kid: &str) -> &str {
    kid.rsplit('/').next().unwrap()
}

/// The versioned key id in a key command's JSON output.
pub fn kid_of(v: &Value) -> String {
    v["key"]["kid"]
        .as_str()
        .or_else(|| v["kid"].as_str())
        .unwrap_or_else(|| panic!("no kid in {v}"))
        .to_string()
}

/// Drops the version from a key id.
pub fn versionless(kid: &str) -> String {
    kid.rsplit_once('/').unwrap().0.to_string()
}

/// A server as `server create` described it to its DBA.
pub struct Created {
    pub name: String,
    pub port: u64,
    pub password: String,
    pub dir: PathBuf,
    /// The `server` part of what `server create` printed.
    pub server: Value,
}

impl Created {
    /// From what `server create --output json` printed.
    pub fn from(created: &Value) -> Self {
        let server = &created["server"];
        Self {
            name: server["name"].as_str().expect("a name").into(),
            port: server["port"].as_u64().expect("a port"),
            password: created["password"].as_str().expect("a password").into(),
            dir: server["dir"].as_str().expect("a directory").into(),
            server: server.clone(),
        }
    }

    /// Runs SQL as `postgres` over TCP; stdout or the error text.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        psql(self.port, &self.password, sql)
    }
}

/// What was made at once for each named test (servers, side by side: their creates
/// take about what two or three take one after another), for the test to take.
pub struct MadeFor<T>(std::sync::Mutex<std::collections::HashMap<&'static str, T>>);

impl<T: Send> MadeFor<T> {
    /// Makes one `T` for each of `names`, each on a thread of its own.
    pub fn at_once(names: &[&'static str], make: impl Fn(&'static str) -> T + Sync) -> Self {
        let make = &make;
        let made = std::thread::scope(|s| {
            let threads: Vec<_> = names
                .iter()
                .map(|&name| s.spawn(move || (name, make(name))))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        Self(std::sync::Mutex::new(made))
    }

    /// What was made for the test `name`.
    pub fn take(&self, name: &str) -> T {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
            .unwrap_or_else(|| panic!("nothing was made for '{name}'"))
    }
}

/// A vault and a control plane in one scratch directory. Fields drop in order: the
/// control plane deletes its servers before the vault goes, and the directory last.
pub struct Stack {
    pub cp: ControlPlane,
    pub vault: Vault,
    pub root: tempfile::TempDir,
}

impl Stack {
    /// Starts a vault and a control plane checking keys every `interval_secs`
    /// with `grace_secs` of grace, its root key derived from `passphrase` when given.
    pub fn start(interval_secs: u64, grace_secs: u64, passphrase: Option<&str>) -> Self {
        Self::start_serving(interval_secs, grace_secs, passphrase, &[])
    }

    /// Like [`Stack::start`], with more `pgcmk serve` arguments.
    pub fn start_serving(
        interval_secs: u64,
        grace_secs: u64,
        passphrase: Option<&str>,
        serve_args: &[&str],
    ) -> Self {
        Self::start_with_vault(interval_secs, grace_secs, passphrase, serve_args, &[])
    }

    /// Like [`Stack::start_serving`], with more `pgcmk vault serve` arguments.
    pub fn start_with_vault(
        interval_secs: u64,
        grace_secs: u64,
        passphrase: Option<&str>,
        serve_args: &[&str],
        vault_args: &[&str],
    ) -> Self {
        let root = scratch();
        let vault = Vault::start_with(root.path(), vault_args);
        let cp = ControlPlane::start_serving(
            root.path(),
            &vault,
            (interval_secs, grace_secs),
            passphrase,
            serve_args,
        );
        Self { cp, vault, root }
    }

    /// Like [`Stack::start`] without a passphrase, the control plane (and so its
    /// agents) started with `env` added to its environment.
    pub fn start_in_env(interval_secs: u64, grace_secs: u64, env: &[(&str, &str)]) -> Self {
        let root = scratch();
        let vault = Vault::start(root.path());
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cp = ControlPlane::launch(root.path(), &vault, (interval_secs, grace_secs), &[], env);
        Self { cp, vault, root }
    }
}

/// A running `pgcmk serve`.
pub struct ControlPlane {
    child: Child,
    pub state_dir: PathBuf,
    pub url: String,
    /// The platform identity (its credential file is outside the state directory).
    pub platform: Identity,
    args: Vec<String>,
    /// Added to its environment (the root key's passphrase, when not the root key
    /// file, is one).
    env: Vec<(String, String)>,
    root: PathBuf,
}

/// The environment variable the tests pass a control plane's passphrase in.
pub const PASSPHRASE_ENV: &str = "PGCMK_TEST_CONTROL_PASSPHRASE";

impl ControlPlane {
    /// Starts the control plane with a platform identity and key in `vault`, and
    /// its root key in a file.
    pub fn start(root: &Path, vault: &Vault, interval_secs: u64, grace_secs: u64) -> Self {
        Self::start_with(root, vault, interval_secs, grace_secs, None)
    }

    /// Like [`ControlPlane::start`], with the root key derived from `passphrase` when given.
    pub fn start_with(
        root: &Path,
        vault: &Vault,
        interval_secs: u64,
        grace_secs: u64,
        passphrase: Option<&str>,
    ) -> Self {
        Self::start_serving(root, vault, (interval_secs, grace_secs), passphrase, &[])
    }

    /// Like [`ControlPlane::start_with`] (key check interval and grace in seconds),
    /// with more `pgcmk serve` arguments.
    pub fn start_serving(
        root: &Path,
        vault: &Vault,
        (interval_secs, grace_secs): (u64, u64),
        passphrase: Option<&str>,
        serve_args: &[&str],
    ) -> Self {
        let mut env = Vec::new();
        let mut args = serve_args.to_vec();
        if let Some(p) = passphrase {
            env.push((PASSPHRASE_ENV.to_string(), p.to_string()));
            args.extend(["--passphrase-env", PASSPHRASE_ENV]);
        }
        Self::launch(root, vault, (interval_secs, grace_secs), &args, env)
    }

    fn launch(
        root: &Path,
        vault: &Vault,
        (interval_secs, grace_secs): (u64, u64),
        serve_args: &[&str],
        env: Vec<(String, String)>,
    ) -> Self {
        let platform = vault.identity("platform-mi");
        let kv = vault.keyvault("platform-kv", "local", true);
        let _ = kv;
        vault.grant("platform-kv", &platform, &["get", "wrapKey", "unwrapKey"]);
        let kid = vault.key("platform-kv", "platform-key", 3072);
        let state_dir = root.join("control");
        let mut args = vec![
            "serve".to_string(),
            "--state-dir".into(),
            state_dir.to_str().unwrap().into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--vault-service-dir".into(),
            vault.dir.to_str().unwrap().into(),
            "--platform-key".into(),
            versionless(&kid),
            "--platform-identity".into(),
            platform.client_id.clone(),
            "--platform-identity-credential-file".into(),
            platform.credential_file.to_str().unwrap().into(),
            "--key-check-interval-secs".into(),
            interval_secs.to_string(),
            "--key-check-grace-secs".into(),
            grace_secs.to_string(),
        ];
        args.extend(serve_args.iter().map(|a| a.to_string()));
        let child = Self::spawn(root, &args, &env);
        let mut cp = Self {
            child,
            state_dir,
            url: String::new(),
            platform,
            args,
            env,
            root: root.into(),
        };
        cp.wait_listening();
        cp
    }

    fn spawn(root: &Path, args: &[String], env: &[(String, String)]) -> Child {
        let mut cmd = Command::new(pgcmk());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        spawn_logged(cmd.args(args), &root.join("control.log"))
    }

    fn wait_listening(&mut self) {
        let serve_json = self.state_dir.join("serve.json");
        let pid = self.child.id();
        let root = self.root.clone();
        let mut url = String::new();
        let child = &mut self.child;
        wait_for(
            "the control plane's serve.json",
            Duration::from_secs(120),
            || {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the control plane exited: {}",
                    fs::read_to_string(root.join("control.log")).unwrap_or_default()
                );
                let v: Option<Value> = fs::read(&serve_json)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                match v {
                    Some(v) if v["pid"].as_u64() == Some(u64::from(pid)) => {
                        url = v["url"].as_str().unwrap().to_string();
                        true
                    }
                    _ => false,
                }
            },
        );
        self.url = url;
    }

    /// The platform key URL the control plane was started with.
    pub fn platform_key(&self) -> String {
        let at = self
            .args
            .iter()
            .position(|a| a == "--platform-key")
            .unwrap();
        self.args[at + 1].clone()
    }

    /// Runs `pgcmk serve` on another state directory (a copy of this one) with
    /// the same settings but no platform credential file, and `passphrase` when
    /// given; it must exit at once. Returns its error output.
    pub fn serve_exits_on(&self, state_dir: &Path, passphrase: Option<&str>) -> String {
        let mut args: Vec<String> = Vec::new();
        let mut given = self.args.iter();
        while let Some(arg) = given.next() {
            match arg.as_str() {
                "--platform-identity-credential-file" | "--passphrase-env" => {
                    given.next();
                }
                "--state-dir" => {
                    given.next();
                    args.extend([arg.clone(), state_dir.to_str().unwrap().into()]);
                }
                _ => args.push(arg.clone()),
            }
        }
        let mut cmd = Command::new(pgcmk());
        cmd.args(&args).env_remove(PASSPHRASE_ENV);
        if let Some(p) = passphrase {
            cmd.args(["--passphrase-env", PASSPHRASE_ENV])
                .env(PASSPHRASE_ENV, p);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if wait_exit(&mut child, Duration::from_secs(60)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`pgcmk serve` started on {}", state_dir.display());
        }
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        err
    }

    /// Stops the control plane (SIGTERM; agents keep running) and starts it again.
    pub fn restart(&mut self) {
        self.restart_after(|| ());
    }

    /// Like [`ControlPlane::restart`], listening again on the port it listens on
    /// now (as a plane started with a fixed `--listen` does), so that clients that
    /// know its URL reach it again.
    pub fn restart_on_its_port(&mut self) {
        let port = self.url.rsplit(':').next().unwrap().trim_end_matches('/');
        let at = self.args.iter().position(|a| a == "--listen").unwrap();
        self.args[at + 1] = format!("127.0.0.1:{port}");
        self.restart();
    }

    /// Like [`ControlPlane::restart`], doing `meanwhile` while it is down.
    pub fn restart_after(&mut self, meanwhile: impl FnOnce()) {
        terminate(self.child.id());
        self.child.wait().unwrap();
        meanwhile();
        self.start_again();
    }

    /// The process id of `pgcmk serve`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9 of the control plane: no cleanup; its agents keep running.
    pub fn kill(&mut self) {
        kill_quietly(&mut self.child);
    }

    /// Starts the stopped or killed control plane again with the same arguments.
    pub fn start_again(&mut self) {
        self.child = Self::spawn(&self.root, &self.args, &self.env);
        self.wait_listening();
    }

    /// The DBA credential file `pgcmk serve` wrote on first start.
    pub fn dba_credential(&self) -> PathBuf {
        self.state_dir.join("dba.credential")
    }

    /// The CA certificate `pgcmk serve` wrote for its API's clients.
    pub fn ca_file(&self) -> PathBuf {
        self.state_dir.join("ca.pem")
    }

    /// An HTTPS client of the API trusting only this control plane's CA.
    pub fn https_client(&self) -> reqwest::blocking::Client {
        let ca = fs::read(self.ca_file()).unwrap();
        pgcmk_hostkeys::trust::blocking_client(&ca, Duration::from_secs(60)).unwrap()
    }

    /// `pgcmk server ARGS` against this control plane, as the DBA.
    fn server_command(&self, args: &[&str]) -> Command {
        self.dba_command("server", args)
    }

    /// `pgcmk FAMILY ARGS` (a DBA command) against this control plane, as the DBA.
    fn dba_command(&self, family: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(pgcmk());
        cmd.arg(family)
            .args(args)
            .args(["--endpoint", &self.url])
            .arg("--credential-file")
            .arg(self.dba_credential())
            .arg("--ca-cert")
            .arg(self.ca_file())
            .env_remove("PGCMK_CONTROL_CREDENTIALS")
            .env_remove("PGCMK_CONTROL_CA_CERT");
        cmd
    }

    /// Runs `pgcmk server ARGS --output json` against this control plane.
    pub fn try_server(&self, args: &[&str]) -> Result<Value, String> {
        run_json(
            self.server_command(args).args(["--output", "json"]),
            &format!("server {}", args.join(" ")),
        )
    }

    /// Runs `pgcmk backup ARGS --output json` against this control plane.
    pub fn try_backup(&self, args: &[&str]) -> Result<Value, String> {
        run_json(
            self.dba_command("backup", args).args(["--output", "json"]),
            &format!("backup {}", args.join(" ")),
        )
    }

    /// Runs `pgcmk backup ARGS --output json`, whatever its exit status.
    pub fn backup_output(&self, args: &[&str]) -> std::process::Output {
        self.dba_command("backup", args)
            .args(["--output", "json"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts `pgcmk backup ARGS --output json`; killed when the guard drops.
    pub fn spawn_backup(&self, args: &[&str]) -> KilledOnDrop {
        KilledOnDrop(
            self.dba_command("backup", args)
                .args(["--output", "json"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Starts `pgcmk backup ARGS` with human output, its stderr piped; killed when
    /// the guard drops.
    pub fn spawn_backup_text(&self, args: &[&str]) -> KilledOnDrop {
        KilledOnDrop(
            self.dba_command("backup", args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// Runs `pgcmk server ARGS` with human output; returns what it printed.
    pub fn server_text(&self, args: &[&str]) -> String {
        let out = self
            .server_command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `pgcmk server ARGS` (human output unless ARGS say otherwise), whatever
    /// its exit status.
    pub fn server_output(&self, args: &[&str]) -> std::process::Output {
        self.server_command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts `pgcmk server ARGS` with its stdout piped (e.g. `logs --follow`); it is
    /// killed when the guard drops, also when the test fails.
    pub fn spawn_server(&self, args: &[&str]) -> KilledOnDrop {
        KilledOnDrop(
            self.server_command(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    pub fn server(&self, args: &[&str]) -> Value {
        self.try_server(args)
            .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("control.log")).unwrap_or_default()
    }

    /// The server's state name and reason.
    pub fn state(&self, name: &str) -> (String, String) {
        let v = self.server(&["show", name]);
        let state: ServerState = serde_json::from_value(v["server"].clone())
            .unwrap_or_else(|e| panic!("no server state in {v}: {e}"));
        let reason = state.reason().unwrap_or_default().to_string();
        (state.name().to_string(), reason)
    }

    /// `pgcmk server create` with a customer-managed key, as `identity` (its name,
    /// object id or client id given as `identity_arg`); `--encryption
    /// customer-managed` is left to be implied by `--key`.
    pub fn create_cmk(
        &self,
        name: &str,
        identity: &Identity,
        identity_arg: &str,
        key: &str,
    ) -> Result<Value, String> {
        self.create_with_credential(name, identity_arg, &identity.credential_file, key)
    }

    /// `pgcmk server create` with a customer-managed key, as `identity` whose
    /// credential (secret, PIN or client certificate) is in `credential_file`.
    pub fn create_with_credential(
        &self,
        name: &str,
        identity: &str,
        credential_file: &Path,
        key: &str,
    ) -> Result<Value, String> {
        self.create_with_credential_and(name, identity, credential_file, key, &[])
    }

    /// [`ControlPlane::create_with_credential`], with `more` options.
    pub fn create_with_credential_and(
        &self,
        name: &str,
        identity: &str,
        credential_file: &Path,
        key: &str,
        more: &[&str],
    ) -> Result<Value, String> {
        let mut args = vec![
            "create",
            "--name",
            name,
            "--location",
            "westeurope",
            "--identity",
            identity,
            "--identity-credential-file",
            credential_file.to_str().unwrap(),
            "--key",
            key,
        ];
        args.extend_from_slice(more);
        self.try_server(&args)
    }

    /// `pgcmk server create` of `name` with `key`'s identity and `key_url` (its
    /// versionless or a versioned id); what it printed.
    pub fn create_with(&self, name: &str, key: &CustomerKey, key_url: &str) -> Value {
        let identity = &key.identity;
        self.create_cmk(name, identity, &identity.name, key_url)
            .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", self.log()))
    }

    /// The full id of the key version that wraps the server's DEK, as `server show` says.
    pub fn wrapped_by(&self, name: &str) -> String {
        let show = self.server(&["show", name]);
        show["server"]["wrapped_dek"]["kek"]
            .as_str()
            .unwrap_or_else(|| panic!("no wrapping key version in {show}"))
            .to_string()
    }

    /// True when the server's event trail has an event `what`.
    pub fn has_event(&self, name: &str, what: &str) -> bool {
        self.events(name).iter().any(|e| e["what"] == what)
    }

    /// The server's event trail, oldest first.
    pub fn events(&self, name: &str) -> Vec<Value> {
        let show = self.server(&["show", name]);
        show["events"].as_array().unwrap().clone()
    }

    /// The pids of `pgcmk agent` processes (node agents or their short-lived runs)
    /// for the server directory `dir`.
    pub fn agents_of(&self, dir: &Path) -> Vec<u32> {
        let dir = dir.as_os_str().as_encoded_bytes();
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
                args.contains(&&b"agent"[..]) && args.contains(&dir)
            })
            .collect()
    }

    /// The directory names under `servers/`.
    pub fn server_dirs(&self) -> Vec<String> {
        fs::read_dir(self.state_dir.join("servers"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Delete the servers first (each agent stops its PostgreSQL and unmounts; a
        // dead agent's mount is detached), then stop the control plane itself.
        if let Ok(list) = self.try_server(&["list"]) {
            for s in list.as_array().into_iter().flatten() {
                let _ =
                    self.try_server(&["delete", s["name"].as_str().unwrap_or_default(), "--yes"]);
            }
        }
        kill_quietly(&mut self.child);
        // Agents left behind by a failed stop: ask each to stop, by its pid file (when
        // that pid is still this server's agent), then detach what a killed one left mounted.
        for dir in self.server_dirs() {
            let dir = ServerDir::new(self.state_dir.join("servers").join(dir));
            if let Some(pid) = agent_pid(dir.root()) {
                if terminate(pid) {
                    wait_for("a leftover agent to exit", Duration::from_secs(60), || {
                        is_gone(pid)
                    });
                }
            }
            dir.detach_stale_mount();
        }
        ha::stop_etcd(&self.state_dir);
    }
}

/// The pid in the server directory's `agent.pid`, if that process is still a
/// `pgcmk agent` for this directory (and not a recycled pid).
pub fn agent_pid(server_dir: &Path) -> Option<u32> {
    fs::read_to_string(server_dir.join("agent.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid| is_agent_of(pid, server_dir))
}

/// A host crash for one server: kill -9 of its agent, its postmaster and every
/// PostgreSQL process under it, all at once; returns when they are all gone, as
/// after a reboot (reaped, not zombies).
pub fn crash_server_processes(server_dir: &Path) {
    let status: Value =
        serde_json::from_slice(&fs::read(server_dir.join("status.json")).unwrap()).unwrap();
    let postmaster = u32::try_from(status["postgres_pid"].as_u64().expect("postgres pid")).unwrap();
    let mut pids = vec![agent_pid(server_dir).expect("a running agent"), postmaster];
    pids.extend(children_of(postmaster));
    for &pid in &pids {
        kill9(pid);
    }
    wait_for(
        "the killed processes to be gone",
        Duration::from_secs(30),
        || pids.iter().all(|&pid| is_gone(pid)),
    );
}

/// Waits until, after `what`, connections to `server` are refused within `limit`
/// and the control plane says Inaccessible; the reason it gives.
pub fn wait_refused(cp: &ControlPlane, server: &Created, limit: Duration, what: &str) -> String {
    wait_for(&format!("connections refused after {what}"), limit, || {
        server.sql("SELECT 1").is_err()
    });
    wait_for(
        &format!("Inaccessible after {what}"),
        Duration::from_secs(5),
        || cp.state(&server.name).0 == "Inaccessible",
    );
    cp.state(&server.name).1
}

/// Asserts that `result` is a refusal saying `expected`, and that nothing was left
/// on `cp` (on which no server is ever made): no row, no directory.
pub fn assert_refused_leaving_nothing(
    cp: &ControlPlane,
    result: Result<Value, String>,
    expected: &str,
) {
    let err = result.expect_err(expected);
    assert!(err.contains(expected), "expected '{expected}' in: {err}");
    assert!(
        cp.server(&["list"]).as_array().unwrap().is_empty(),
        "a row was left: {expected}"
    );
    assert!(
        cp.server_dirs().is_empty(),
        "a directory was left: {expected}"
    );
}

/// An address on 127.0.0.1 whose port is free now.
pub fn free_loopback_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process of the test, killed (by its handle) and reaped on drop.
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        pgcmk_testkit::process::kill_quietly(&mut self.0);
    }
}

/// Asserts that a REST API error body has the stable `code` and a message saying
/// `message`.
pub fn assert_api_error(body: &Value, code: &str, message: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let said = body["error"]["message"].as_str().unwrap_or_default();
    assert!(said.contains(message), "'{message}' not in {body}");
}

/// A scratch directory that the `postgres` user can traverse.
/// Runs `pgcmk serve` with `args` (a `--listen` among them) over a new state
/// directory and a vault that is never reached, expecting it to be refused at
/// start: asserts exit 2, `says` on stderr, and nothing written to the state
/// directory.
pub fn assert_serve_refused(args: &[&str], says: &str) {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(pgcmk_testkit::binary::pgcmk())
        .arg("serve")
        .arg("--state-dir")
        .arg(state.path())
        .args(["--vault-service-dir", "/nonexistent"])
        .args(["--platform-key", "https://127.0.0.1:1/keys/k"])
        .args(["--platform-identity", "platform"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: '{says}' not in {stderr}");
    assert!(
        fs::read_dir(state.path()).unwrap().next().is_none(),
        "{args:?}: the state directory was written"
    );
}

pub fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// A loopback port that was free a moment ago (the OS picked it; released for the server).
pub fn free_port() -> u16 {
    pgcmk_testkit::net::free_port()
}

/// Runs SQL over TCP as `postgres` with `password`; stdout or the error text.
pub fn psql(port: u64, password: &str, sql: &str) -> Result<String, String> {
    pgcmk_agent::postgres::PgInstall::discover().unwrap().psql(
        u16::try_from(port).unwrap(),
        password,
        sql,
    )
}

/// Sends `signal` (e.g. `-9`) to `pid`, a process this test's stack started.
pub fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// The agent's latest report (`status.json`) in a server directory.
pub fn agent_status(server_dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(server_dir.join("status.json")).unwrap()).unwrap()
}

/// Asserts that `needle` is in no file of `server`'s directory (but its live
/// mount, the plaintext view) nor of the control plane's state.
pub fn assert_not_on_disk(cp: &ControlPlane, server: &Created, needle: &str) {
    let mut leaks = files_containing(&server.dir, needle.as_bytes(), &server.dir.join("mnt"));
    leaks.extend(files_containing(
        &cp.state_dir,
        needle.as_bytes(),
        &cp.state_dir.join("servers"),
    ));
    assert!(leaks.is_empty(), "'{needle}' on disk: {leaks:?}");
}

/// Every file under `dir` whose bytes contain `needle`, not descending into `skip`.
pub fn files_containing(dir: &Path, needle: &[u8], skip: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // What a running service removes meanwhile (a lock, a spool file, a
        // directory) is passed over: it is not on the disk any more.
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path == skip {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}
