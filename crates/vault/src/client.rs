//! A blocking client for the management API (identities, vaults, policies, audit),
//! used by the `pgcmk` security-officer commands and by tests.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::files;
use crate::identity::Credential;
use crate::service::ServiceInfo;
use crate::{now_unix, Error};

/// How to reach a running service: the directory holding `service.json` and `ca.pem`.
#[derive(Clone, Debug)]
pub struct ServiceDir {
    /// Contents of `service.json`.
    pub info: ServiceInfo,
    /// The CA certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// The directory.
    pub dir: PathBuf,
}

impl ServiceDir {
    /// Reads `DIR/service.json` and the CA it names.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let path = dir.join("service.json");
        let bytes = files::read(&path).map_err(|_| {
            Error::Client(format!(
                "{} not found: start the service with `pgcmk vault serve --data-dir {}` or set PGCMK_VAULT_SERVICE_DIR",
                path.display(),
                dir.display()
            ))
        })?;
        let info: ServiceInfo = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Client(format!(
                "{} is not a service description: {e}",
                path.display()
            ))
        })?;
        let ca_pem = files::read(&info.ca_file).or_else(|_| files::read(&dir.join("ca.pem")))?;
        Ok(Self {
            info,
            ca_pem,
            dir: dir.to_path_buf(),
        })
    }

    /// The default credential file: the bootstrap administrator's.
    pub fn admin_credential(&self) -> PathBuf {
        self.dir.join("admin.credential")
    }
}

/// Reads a credential file written by `pgcmk identity create` or the service.
pub fn read_credential(path: &Path) -> Result<Credential, Error> {
    let bytes = files::read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|_| Error::Client(format!("{} is not a pgcmk credential file", path.display())))
}

/// An authenticated management API client.
pub struct AdminClient {
    http: reqwest::blocking::Client,
    service: ServiceDir,
    credential: Credential,
    token: Mutex<Option<(String, i64)>>,
}

impl AdminClient {
    /// A client for `service` acting as `credential`.
    pub fn new(service: ServiceDir, credential: Credential) -> Result<Self, Error> {
        let http =
            pgcmk_hostkeys::trust::blocking_client(&service.ca_pem, Duration::from_secs(60))?;
        Ok(Self {
            http,
            service,
            credential,
            token: Mutex::new(None),
        })
    }

    /// The HTTPS client (trusting the service CA), for data-plane calls.
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// A client-credentials token for `resource` (the service URL or a vault URL).
    pub fn token_for(&self, resource: &str) -> Result<String, Error> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.credential.client_id.as_str()),
            ("client_secret", self.credential.client_secret.as_str()),
            ("scope", &format!("{resource}/.default")),
        ];
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .http
            .post(&self.service.info.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .map_err(|e| unreachable(&self.service.info.url, e))?;
        let status = resp.status().as_u16();
        let v: Value = resp
            .json()
            .map_err(|e| Error::Client(format!("token endpoint answered garbage: {e}")))?;
        if status != 200 {
            return Err(Error::Api {
                status,
                code: v["error"].as_str().unwrap_or("TokenError").to_string(),
                message: v["error_description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        v["access_token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| Error::Client("token endpoint returned no access_token".into()))
    }

    fn management_token(&self) -> Result<String, Error> {
        let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, exp)) = cached.as_ref() {
            if *exp > now_unix() + 60 {
                return Ok(t.clone());
            }
        }
        let token = self.token_for(&self.service.info.url)?;
        *cached = Some((token.clone(), now_unix() + 300));
        Ok(token)
    }

    /// Sends a management request; returns the JSON body or the service's error.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let url = format!("{}{path}", self.service.info.url);
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(self.management_token()?);
        if let Some(b) = body {
            req = req.json(b);
        }
        send_json(req, &self.service.info.url)
    }
}

/// Sends a request and maps non-2xx answers to [`Error::Api`].
pub fn send_json(req: reqwest::blocking::RequestBuilder, target: &str) -> Result<Value, Error> {
    let resp = req.send().map_err(|e| unreachable(target, e))?;
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let v: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if (200..300).contains(&status) {
        return Ok(v);
    }
    Err(Error::Api {
        status,
        code: v["error"]["code"].as_str().unwrap_or("Error").to_string(),
        message: v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

fn unreachable(target: &str, e: reqwest::Error) -> Error {
    Error::Client(format!(
        "cannot reach the vault service at {target}: {e}; is `pgcmk vault serve` running?"
    ))
}

/// Percent-encodes a form value (every byte but the unreserved ones, as a path
/// segment of the consoles' links is).
pub fn urlencode(s: &str) -> String {
    pgcmk_console::path_segment(s)
}
