//! `pgcmk serve`'s options for an existing etcd cluster's TLS: its CA, and the
//! client certificate and key that the control plane and every node's Patroni
//! show it, and its root user's password when the control plane is to administer
//! its users (docs/high-availability.md, "An existing etcd cluster"). Deny by
//! default: an existing cluster is reached over `https://` only, with a client
//! certificate, because whoever writes there can move a server's primary.

use std::path::PathBuf;

use clap::Args;
use pgcmk_control::etcd_tls::GivenEtcdTls;

use crate::error::CliError;

/// TLS towards the cluster `--etcd-endpoints` names.
#[derive(Args)]
pub struct EtcdTlsArgs {
    /// The etcd cluster's CA certificate (PEM; readable by the PostgreSQL user,
    /// whose Patroni verifies the members by it).
    #[arg(long, value_name = "PATH", requires_all = ["etcd_endpoints", "etcd_cert_file", "etcd_key_file"])]
    etcd_ca_file: Option<PathBuf>,
    /// A client certificate of that CA (PEM), which the control plane and every
    /// node's Patroni show the cluster.
    #[arg(long, value_name = "PATH", requires = "etcd_ca_file")]
    etcd_cert_file: Option<PathBuf>,
    /// Its private key (PEM). It is handed to each node's agent and kept on the
    /// node's encrypted volume; this file stays where the operator keeps it.
    #[arg(long, value_name = "PATH", requires = "etcd_ca_file")]
    etcd_key_file: Option<PathBuf>,
    /// A file (mode 600) holding the password of that cluster's root user: with
    /// it, the control plane gives each highly available server an etcd user and
    /// role of its own there, confined to its server's keys (the cluster's
    /// authentication must be on). Without it, every server's nodes share the
    /// client certificate's access.
    #[arg(long, value_name = "PATH", requires = "etcd_ca_file")]
    etcd_root_password_file: Option<PathBuf>,
}

impl EtcdTlsArgs {
    /// The cluster's TLS for `endpoints` (none without endpoints: the control
    /// plane's own cluster). Refuses `http://` endpoints and endpoints without
    /// the three files.
    pub fn given(&self, endpoints: &[String]) -> Result<Option<GivenEtcdTls>, CliError> {
        if endpoints.is_empty() {
            return Ok(None);
        }
        if let Some(plain) = endpoints.iter().find(|e| !e.starts_with("https://")) {
            return Err(CliError::usage(format!(
                "--etcd-endpoints {plain}: an existing etcd cluster is reached over https:// \
                 only, with a client certificate (whoever writes there can move a server's \
                 primary): give https:// URLs with --etcd-ca-file, --etcd-cert-file and \
                 --etcd-key-file"
            )));
        }
        let (Some(ca), Some(cert), Some(key)) = (
            &self.etcd_ca_file,
            &self.etcd_cert_file,
            &self.etcd_key_file,
        ) else {
            return Err(CliError::usage(
                "--etcd-endpoints needs --etcd-ca-file, --etcd-cert-file and --etcd-key-file: \
                 the cluster's CA and a client certificate and key of it",
            ));
        };
        GivenEtcdTls::read(ca, cert, key, self.etcd_root_password_file.as_deref())
            .map(Some)
            .map_err(|e| CliError::usage(e.to_string()))
    }
}
