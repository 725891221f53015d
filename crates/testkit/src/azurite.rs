//! Azurite (npm `azurite`, installed by `scripts/setup`), Azure Storage's emulator,
//! serving Blob Storage on a free loopback port with TLS: a certificate from a CA
//! made by the test, two storage accounts with keys of their own (standing for two
//! regions: the servers' and the paired one), containers created through the Azure
//! SDK for Python (a real client, from the workspace's `.venv`), its data in a
//! directory the test can read byte by byte.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};

use crate::kmip::{ca, venv_bin, write_private};
use crate::process::{kill_quietly, spawn_logged, terminate, wait_exit};
use crate::wait::wait_for;

/// Azurite's well-known development account (its key is public, in Azure's docs).
pub const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// A second account, standing for the paired region's, with a key of its own
/// (made for these tests: 64 random bytes, as Azure's keys).
pub const GEO_ACCOUNT: &str = "pgcmkgeo";
const GEO_ACCOUNT_KEY: &str =
    "tR5JghK0y0sxz9BHaf/tqWHXH/mIHKnKvOxtazkC/aIkmtN4AZ4cEoMzs4NmHAHOZ0K4+hz2vojXptre8joRJQ==";

/// The key of `account` (one of [`ACCOUNT`] and [`GEO_ACCOUNT`]).
fn key_of(account: &str) -> &'static str {
    match account {
        GEO_ACCOUNT => GEO_ACCOUNT_KEY,
        _ => ACCOUNT_KEY,
    }
}

/// Creates a container through the Azure SDK for Python.
const CREATE_CONTAINER: &str = r#"
import sys
from azure.storage.blob import BlobServiceClient
url, account, key, ca, container = sys.argv[1:6]
client = BlobServiceClient(account_url=url, credential={"account_name": account, "account_key": key},
                           connection_verify=ca)
client.create_container(container)
"#;

/// Lists the names of the blobs of a container that begin with a prefix, one a
/// line, through the Azure SDK for Python; the account's key comes on stdin (a test
/// may be looking for it in every process's arguments meanwhile).
const LIST_BLOBS: &str = r#"
import sys
from azure.storage.blob import BlobServiceClient
url, account, ca, container, prefix = sys.argv[1:6]
key = sys.stdin.read().strip()
client = BlobServiceClient(account_url=url, credential={"account_name": account, "account_key": key},
                           connection_verify=ca)
for blob in client.get_container_client(container).list_blobs(name_starts_with=prefix):
    print(blob.name)
"#;

/// A running Azurite Blob service; stopped (by its handle) when dropped.
pub struct Azurite {
    child: Child,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA that issued its certificate.
    pub ca_file: PathBuf,
    /// A file holding [`ACCOUNT`]'s key (mode 0600).
    pub key_file: PathBuf,
    /// A file holding [`GEO_ACCOUNT`]'s key (mode 0600).
    pub geo_key_file: PathBuf,
}

impl Azurite {
    /// Starts Azurite with [`ACCOUNT`] and [`GEO_ACCOUNT`], waits until it accepts
    /// connections, and creates each `(account, container)` of `containers`.
    pub fn start(containers: &[(&str, &str)]) -> Self {
        let program = "/usr/bin/azurite-blob";
        assert!(
            Path::new(program).exists(),
            "{program} is missing: run scripts/setup (it installs the npm package azurite)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (ca_pem, issuer) = ca("pgcmk test Azurite CA");
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        // pgBackRest matches the host it connects to against DNS names only.
        params
            .subject_alt_names
            .push(SanType::DnsName("127.0.0.1".try_into().unwrap()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let ca_file = d.join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        std::fs::write(d.join("server.pem"), cert.pem()).unwrap();
        write_private(&d.join("server.key"), &key.serialize_pem());
        let key_file = d.join("account.key");
        write_private(&key_file, ACCOUNT_KEY);
        let geo_key_file = d.join("geo-account.key");
        write_private(&geo_key_file, GEO_ACCOUNT_KEY);
        std::fs::create_dir(d.join("data")).unwrap();
        let port = crate::net::free_port();
        let mut command = Command::new(program);
        command
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--cert")
            .arg(d.join("server.pem"))
            .arg("--key")
            .arg(d.join("server.key"))
            .arg("--location")
            .arg(d.join("data"))
            .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"])
            .env(
                "AZURITE_ACCOUNTS",
                format!("{ACCOUNT}:{ACCOUNT_KEY};{GEO_ACCOUNT}:{GEO_ACCOUNT_KEY}"),
            );
        let out = d.join("out.log");
        let child = spawn_logged(&mut command, &out);
        let mut azurite = Self {
            child,
            dir,
            port,
            ca_file,
            key_file,
            geo_key_file,
        };
        let child = &mut azurite.child;
        wait_for("Azurite to listen", Duration::from_secs(60), || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "Azurite exited: {}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        for (account, container) in containers {
            azurite.create_container(account, container);
        }
        azurite
    }

    /// The Blob service's endpoint.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Where Azurite keeps the blobs' bytes.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The key of `account` (one of [`ACCOUNT`] and [`GEO_ACCOUNT`]).
    pub fn account_key(&self, account: &str) -> &'static str {
        key_of(account)
    }

    /// Azurite's process id (its environment holds the accounts' keys).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The names of the blobs in `account`'s `container` that begin with `prefix`,
    /// as a real client lists them.
    pub fn blob_names(&self, account: &str, container: &str, prefix: &str) -> Vec<String> {
        let url = format!("{}/{account}", self.endpoint());
        let mut child = Command::new(venv_bin("python"))
            .args(["-c", LIST_BLOBS, &url, account])
            .arg(&self.ca_file)
            .args([container, prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(key_of(account).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "listing the blobs of {container}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn create_container(&self, account: &str, container: &str) {
        let url = format!("{}/{account}", self.endpoint());
        let out = Command::new(venv_bin("python"))
            .args(["-c", CREATE_CONTAINER, &url, account, key_of(account)])
            .arg(&self.ca_file)
            .arg(container)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "creating container {container}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        terminate(self.child.id());
        wait_exit(&mut self.child, Duration::from_secs(10));
        kill_quietly(&mut self.child);
    }
}
