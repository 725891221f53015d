//! An etcd cluster of its own, as an operator runs one beside pgcmk: three members
//! over TLS that admit clients with a certificate of the cluster's own CA
//! ([`EtcdCluster`], [`EtcdCa`]; the CA's key sealed under a random key in a store
//! of its own). What a benchmark gives a peer's Patroni pair, and what the tests
//! point `pgcmk serve --etcd-endpoints` at. The control plane's own cluster is
//! the platform's, supervised with its servers.

use std::path::Path;
use std::time::{Duration, Instant};

use pgcmk_agent::contract::handshake::NodeTls;
use pgcmk_crypto::sealed::Sealer;
use pgcmk_crypto::SymmetricKey;

use crate::etcd::EtcdCluster;
use crate::etcd_tls::{self, EtcdCa};
use crate::store::Store;
use crate::Error;

/// How long its members' certificates live: longer than any run that uses it.
const MEMBER_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A running standalone etcd cluster; its members stop when it drops.
pub struct StandaloneEtcd {
    cluster: EtcdCluster,
    ca: EtcdCa,
    _store: Store,
}

impl StandaloneEtcd {
    /// Makes the cluster under `root` (its CA, store and members' directories)
    /// and waits until every member answers `/health`, at most `ready_within`.
    pub fn start(root: &Path, ready_within: Duration) -> Result<Self, Error> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::BadRequest(format!("cannot make {} ({e})", root.display())))?;
        let store = Store::open(&root.join("etcd-store.db"))?;
        let sealer = Sealer::new(&SymmetricKey::generate()?)?;
        let ca = EtcdCa::open(root, &store, sealer, MEMBER_LIFETIME)?;
        let mut cluster = EtcdCluster::open_or_make(&root.join("etcd"))?;
        cluster.supervise(Instant::now(), &ca, |_| true);
        let etcd = Self {
            cluster,
            ca,
            _store: store,
        };
        let http = etcd.http("standalone health check")?;
        let deadline = Instant::now() + ready_within;
        let healthy = |e: &String| {
            http.get(format!("{e}/health"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        };
        while !etcd.endpoints().iter().all(healthy) {
            if Instant::now() >= deadline {
                return Err(Error::Unreachable(format!(
                    "the standalone etcd cluster under {} did not answer within {ready_within:?}",
                    root.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(etcd)
    }

    /// Its members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    /// Its CA certificate's file.
    pub fn ca_file(&self) -> &Path {
        self.ca.file()
    }

    /// A new client certificate and key of its CA for `who`.
    pub fn client(&self, who: &str) -> Result<NodeTls, Error> {
        self.ca.client(who)
    }

    /// An HTTPS client of its members with a new client certificate for `who`.
    pub fn http(&self, who: &str) -> Result<reqwest::blocking::Client, Error> {
        let ca = std::fs::read(self.ca_file()).map_err(|e| {
            Error::BadRequest(format!("cannot read {} ({e})", self.ca_file().display()))
        })?;
        etcd_tls::client(&ca, &self.client(who)?, Duration::from_secs(5))
    }

    /// Stops its members (as dropping it does).
    pub fn stop(&mut self) {
        self.cluster.stop();
    }
}

impl Drop for StandaloneEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}
