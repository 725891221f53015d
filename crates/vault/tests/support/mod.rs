//! A real `pgcmk vault serve` child process on free loopback ports, with a raw HTTPS
//! client for the data plane and the management client for setup. The child is
//! stopped by pid when the harness is dropped.

#![allow(dead_code)] // Each test binary uses a different part of this harness.

use std::net::SocketAddr;
use std::path::PathBuf;

use pgcmk_testkit::vault::{ServeCommand, VaultProcess};
use pgcmk_vault::client::{AdminClient, ServiceDir};
use pgcmk_vault::identity::Credential;
use reqwest::Method;
use serde_json::{json, Value};

/// The `pgcmk` binary, built once per test binary; `PGCMK_BIN` overrides.
pub fn pgcmk_binary() -> PathBuf {
    pgcmk_testkit::binary::pgcmk().to_path_buf()
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
    process: VaultProcess,
    pub dir: tempfile::TempDir,
    pub admin: AdminClient,
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
        let mut command = ServeCommand::new(
            pgcmk_testkit::binary::pgcmk(),
            dir.path().join("data"),
            dir.path().join("vault.log"),
        );
        command.args = args.iter().map(|s| s.to_string()).collect();
        command.env = child_env(env);
        let process = VaultProcess::start(command);
        Self {
            admin: admin_client(&process),
            process,
            dir,
        }
    }

    /// Sets `--listen` for the next (re)start (`None`: no `--listen`).
    pub fn set_listen(&mut self, listen: Option<SocketAddr>) {
        self.process.command.listen = listen.map(|a| a.to_string());
    }

    /// Sets the environment of the next (re)start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.process.command.env = child_env(env);
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// Starts the service again on the same data directory.
    pub fn restart(&mut self) {
        self.process.restart();
        self.admin = admin_client(&self.process);
    }

    /// What the service wrote to `service.json` on its last start.
    pub fn service(&self) -> &ServiceDir {
        &self.process.service
    }

    /// Starts the service on the same data directory expecting it to refuse; returns its output.
    pub fn restart_expecting_failure(&self) -> String {
        self.process.start_expecting_failure()
    }

    pub fn log(&self) -> String {
        self.process.log()
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
            self.service().info.identity_endpoint,
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

/// The child's environment: `env`, with the service's own log kept to warnings.
fn child_env(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .chain(&[("RUST_LOG", "warn")])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn admin_client(process: &VaultProcess) -> AdminClient {
    AdminClient::new(process.service.clone(), process.admin_credential()).unwrap()
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
