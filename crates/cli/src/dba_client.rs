//! The DBA's client of the control plane's REST API, shared by `pgcmk server` and
//! `pgcmk backup`: where the plane is, the CA it is trusted by, and the DBA
//! credential every request carries.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pgcmk_control::api_tls::ApiClient;
use pgcmk_control::auth::read_credential;
use pgcmk_control::model::SecretString;

use crate::error::CliError;

/// Where the DBA's commands find the control plane unless told otherwise.
const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7480";
/// The CA certificate trusted unless told otherwise: the one `pgcmk serve` writes
/// in its default state directory.
const DEFAULT_CA_CERT: &str = "/var/lib/pgcmk/control/ca.pem";
/// Where the DBA credential is found unless told otherwise: the file `pgcmk serve`
/// writes in its default state directory.
const DEFAULT_CREDENTIAL_FILE: &str = "/var/lib/pgcmk/control/dba.credential";

/// How to reach the control plane as the DBA (options of every DBA command).
#[derive(Args)]
pub struct DbaConnection {
    /// The control plane's URL.
    #[arg(long, env = "PGCMK_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    endpoint: String,
    /// The DBA credential file (`dba.credential`, written by `pgcmk serve` in its state
    /// directory on first start).
    #[arg(long, env = "PGCMK_CONTROL_CREDENTIALS", default_value = DEFAULT_CREDENTIAL_FILE, global = true)]
    credential_file: PathBuf,
    /// The control plane's CA certificate (`ca.pem`, written by `pgcmk serve` in its state
    /// directory); the only certificate trusted for the API.
    #[arg(long, env = "PGCMK_CONTROL_CA_CERT", default_value = DEFAULT_CA_CERT, global = true)]
    ca_cert: PathBuf,
}

/// An API client that sends the DBA credential.
pub struct DbaClient {
    api: ApiClient,
    token: SecretString,
}

impl DbaClient {
    /// Reads the credential and trusts the CA of `connection`; requests time out
    /// after `timeout`.
    pub fn open(connection: &DbaConnection, timeout: Duration) -> Result<Self, CliError> {
        let api = ApiClient::new(&connection.endpoint, &connection.ca_cert, timeout)?;
        let token = read_credential(&connection.credential_file)?;
        let token = String::from_utf8(token.expose_secret().to_vec())
            .map(SecretString::new)
            .map_err(|_| {
                CliError::usage(format!(
                    "{} is not a DBA credential: use the dba.credential file `pgcmk serve` wrote",
                    connection.credential_file.display()
                ))
            })?;
        Ok(Self { api, token })
    }

    /// The HTTP client, to build requests with.
    pub fn http(&self) -> &reqwest::blocking::Client {
        self.api.http()
    }

    /// The URL of `path` under `/servers`.
    pub fn servers_url(&self, path: &str) -> String {
        self.api.url(&format!("/servers{path}"))
    }

    /// Sends `request` with the DBA credential; an API error becomes the CLI's.
    pub fn call(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, CliError> {
        Ok(self
            .api
            .call(request.bearer_auth(self.token.expose_secret()))?)
    }
}
