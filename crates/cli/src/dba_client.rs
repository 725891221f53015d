//! The DBA's client of the control plane's REST API, shared by `pgcmk server` and
//! `pgcmk backup`: where the plane is, the CA it is trusted by, and the DBA
//! credential every request carries.

use std::time::Duration;

use pgcmk_control::api_tls::ApiClient;
use pgcmk_control::auth::read_credential;
use pgcmk_control::model::SecretString;

use crate::control_dir::ControlConnection;
use crate::error::CliError;

/// An API client that sends the DBA credential.
pub struct DbaClient {
    api: ApiClient,
    token: SecretString,
}

impl DbaClient {
    /// Reads the credential and trusts the CA `control` names; requests time out
    /// after `timeout`.
    pub fn open(control: &ControlConnection, timeout: Duration) -> Result<Self, CliError> {
        let api = ApiClient::new(&control.endpoint(), &control.ca_cert(), timeout)?;
        let token = read_credential(&control.credential_file())?;
        // read_credential checked its form: 64 hex characters.
        let token = SecretString::new(String::from_utf8_lossy(token.expose_secret()).into_owned());
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

    /// The URL of `path` (starting with `/`) on the API.
    pub fn url(&self, path: &str) -> String {
        self.api.url(path)
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
