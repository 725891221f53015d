//! A real `pgcmk vault serve` child process on free loopback ports, with a raw HTTPS
//! client for the data plane and the management client for setup. The child is
//! stopped by pid when the harness is dropped.

#![allow(dead_code)] // Each test binary uses a different part of this harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgcmk_vault::client::{AdminClient, ServiceDir};
use pgcmk_vault::identity::Credential;
use reqwest::Method;
use serde_json::{json, Value};

const START_DEADLINE: Duration = Duration::from_secs(60);

/// Builds `pgcmk` once per test binary (no-op when up to date) and returns its path;
/// `PGCMK_BIN` overrides.
pub fn pgcmk_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(build_pgcmk).clone()
}

fn build_pgcmk() -> PathBuf {
    if let Some(bin) = std::env::var_os("PGCMK_BIN") {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "-p", "pgcmk", "--bin", "pgcmk"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p pgcmk failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("debug/pgcmk")
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub challenge: Option<String>,
}

impl Answer {
    /// The AKV error code, if this is an error.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// A running vault service.
pub struct Vault {
    child: Option<Child>,
    bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub service: ServiceDir,
    pub admin: AdminClient,
    extra_args: Vec<String>,
    /// Environment for the child (e.g. a passphrase variable).
    pub env: Vec<(String, String)>,
}

impl Vault {
    /// Starts a fresh service that checks rotation policies every second.
    pub fn start() -> Self {
        Self::start_with(&["--maintenance-interval-secs", "1"])
    }

    /// Starts a fresh service with extra `serve` arguments.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_env(args, &[])
    }

    /// Starts a fresh service with extra `serve` arguments and environment.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = pgcmk_binary();
        let extra_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn(&bin, dir.path(), &extra_args, &env);
        let (child, service) = wait_ready(child, dir.path());
        let admin = admin_client(&service, &service.admin_credential());
        Self {
            child: Some(child),
            bin,
            dir,
            service,
            admin,
            extra_args,
            env,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "vault exited with {status}:\n{}",
                        self.log()
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "vault did not stop after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the service again on the same data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the service first");
        let child = spawn(&self.bin, self.dir.path(), &self.extra_args, &self.env);
        let (child, service) = wait_ready(child, self.dir.path());
        self.admin = admin_client(&service, &service.admin_credential());
        self.service = service;
        self.child = Some(child);
    }

    /// Starts the service on the same data directory expecting it to refuse; returns its output.
    pub fn restart_expecting_failure(&self) -> String {
        assert!(self.child.is_none(), "stop or kill the service first");
        let mut child = spawn(&self.bin, self.dir.path(), &self.extra_args, &self.env);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    !status.success(),
                    "the service should have refused to start"
                );
                return self.log();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the service started although it should have refused:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vault.log")).unwrap_or_default()
    }

    /// A management call that must succeed.
    pub fn manage(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.admin
            .call(method.clone(), path, body.as_ref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Creates an identity and returns its credential.
    pub fn identity(&self, name: &str, kind: &str) -> Credential {
        let v = self.manage(
            Method::POST,
            "/admin/identities",
            Some(json!({ "name": name, "kind": kind })),
        );
        serde_json::from_value(v).unwrap()
    }

    /// Creates a vault and returns its base URL.
    pub fn vault(&self, name: &str, purge_protection: bool) -> String {
        let v = self.manage(
            Method::POST,
            "/admin/vaults",
            Some(json!({ "name": name, "location": "local", "retention_days": 7, "purge_protection": purge_protection })),
        );
        v["url"].as_str().unwrap().to_string()
    }

    pub fn set_policy(&self, vault: &str, who: &str, perms: &[&str]) {
        self.manage(
            Method::PUT,
            &format!("/admin/vaults/{vault}/policies/{who}"),
            Some(json!({ "key_permissions": perms })),
        );
    }

    /// The admin's token for a vault.
    pub fn admin_token(&self, vault_url: &str) -> String {
        self.admin.token_for(vault_url).unwrap()
    }

    /// A managed identity's token from the App Service endpoint.
    pub fn mi_token(&self, cred: &Credential, resource: &str) -> String {
        let a = self.mi_request(cred.client_secret.as_str(), &cred.client_id, resource);
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["access_token"].as_str().unwrap().to_string()
    }

    pub fn mi_request(&self, header: &str, client_id: &str, resource: &str) -> Answer {
        let url = format!(
            "{}?api-version=2019-08-01&resource={}&client_id={client_id}",
            self.service.info.identity_endpoint,
            pgcmk_vault::client::urlencode(resource)
        );
        let resp = self
            .admin
            .http()
            .get(url)
            .header("X-IDENTITY-HEADER", header)
            .send()
            .unwrap();
        answer(resp)
    }

    /// A raw data-plane request with an optional bearer token and raw body.
    pub fn raw(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self.admin.http().request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        answer(req.send().unwrap())
    }

    /// A data-plane request with a JSON body; `path` is appended to `vault_url` with api-version 7.5.
    pub fn akv(
        &self,
        method: Method,
        vault_url: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Answer {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{vault_url}{path}{sep}api-version=7.5");
        self.raw(
            method,
            &url,
            Some(token),
            body.map(|b| serde_json::to_vec(&b).unwrap()),
        )
    }

    /// Creates an RSA key and returns its versioned kid.
    pub fn create_key(&self, vault_url: &str, token: &str, name: &str, size: u32) -> String {
        let a = self.akv(
            Method::POST,
            vault_url,
            &format!("/keys/{name}/create"),
            token,
            Some(json!({ "kty": "RSA", "key_size": size })),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["key"]["kid"].as_str().unwrap().to_string()
    }

    /// `audit verify` through the API: Ok(entries) or Err(problem).
    pub fn audit_verify(&self) -> Result<u64, String> {
        let v = self.manage(Method::GET, "/admin/audit/verify", None);
        if v["ok"] == json!(true) {
            Ok(v["entries"].as_u64().unwrap())
        } else {
            Err(v["problem"].as_str().unwrap().to_string())
        }
    }

    /// Audit entries matching a query string.
    pub fn audit(&self, query: &str) -> Vec<Value> {
        self.manage(Method::GET, &format!("/admin/audit?{query}"), None)["value"]
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        // Only the process this harness started, by its handle.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(bin: &Path, dir: &Path, extra: &[String], env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("vault.log"))
        .unwrap();
    Command::new(bin)
        .args(["vault", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start pgcmk vault serve")
}

fn wait_ready(mut child: Child, dir: &Path) -> (Child, ServiceDir) {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "vault exited early ({status}):\n{}",
                std::fs::read_to_string(dir.join("vault.log")).unwrap_or_default()
            );
        }
        // A service.json left by a previous run names another pid: wait for ours.
        if let Ok(s) = ServiceDir::open(&dir.join("data")) {
            if s.info.pid == child.id() {
                return (child, s);
            }
        }
        assert!(Instant::now() < deadline, "vault did not start in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn admin_client(service: &ServiceDir, credential: &Path) -> AdminClient {
    let cred = pgcmk_vault::client::read_credential(credential).unwrap();
    AdminClient::new(service.clone(), cred).unwrap()
}

fn answer(resp: reqwest::blocking::Response) -> Answer {
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        challenge,
    }
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url.
pub fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}
