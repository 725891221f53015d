//! How `pgcmk server` finds the control plane: one setting, the control-plane
//! directory (`--control-dir` or `PGCMK_CONTROL_DIR`, default the control plane's
//! default state directory), holding `serve.json` (the API's URL), `ca.pem` (the only
//! certificate trusted for it) and `dba.credential`, as the vault side's
//! `PGCMK_VAULT_SERVICE_DIR` does. Each can still be given on its own, and wins.

use std::path::PathBuf;

use clap::Args;
use pgcmk_control::api_tls::CA_FILE;
use pgcmk_control::auth::CREDENTIAL_FILE;
use pgcmk_control::serve_info::ServeInfo;

use crate::setting::flag_or_env;

/// The control plane's default state directory (`pgcmk serve --state-dir`).
const DEFAULT_CONTROL_DIR: &str = "/var/lib/pgcmk/control";
/// The API's URL when the directory has no `serve.json`: `pgcmk serve`'s default.
const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7480";

/// Where the control plane is and how to prove to be its DBA (the environment
/// variables are read by [`flag_or_env`], not clap).
#[derive(Args)]
pub struct ControlConnection {
    /// The control plane's directory: its state directory, or wherever its serve.json,
    /// ca.pem and dba.credential were handed to you [env: PGCMK_CONTROL_DIR; default:
    /// /var/lib/pgcmk/control].
    #[arg(long, global = true)]
    control_dir: Option<PathBuf>,
    /// The control plane's URL [env: PGCMK_ENDPOINT; default: serve.json's in the
    /// control directory, else https://127.0.0.1:7480].
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// The DBA credential file [env: PGCMK_CONTROL_CREDENTIALS; default: dba.credential
    /// in the control directory].
    #[arg(long, global = true)]
    credential_file: Option<PathBuf>,
    /// The control plane's CA certificate, the only one trusted for the API [env:
    /// PGCMK_CONTROL_CA_CERT; default: ca.pem in the control directory].
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
}

impl ControlConnection {
    fn control_dir(&self) -> PathBuf {
        flag_or_env(&self.control_dir, "PGCMK_CONTROL_DIR")
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_DIR))
    }

    /// The API's URL.
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .or_else(|| std::env::var("PGCMK_ENDPOINT").ok())
            .or_else(|| ServeInfo::read(&self.control_dir()).map(|info| info.url))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
    }

    /// The DBA credential file.
    pub fn credential_file(&self) -> PathBuf {
        flag_or_env(&self.credential_file, "PGCMK_CONTROL_CREDENTIALS")
            .unwrap_or_else(|| self.control_dir().join(CREDENTIAL_FILE))
    }

    /// The CA certificate to trust.
    pub fn ca_cert(&self) -> PathBuf {
        flag_or_env(&self.ca_cert, "PGCMK_CONTROL_CA_CERT")
            .unwrap_or_else(|| self.control_dir().join(CA_FILE))
    }
}
