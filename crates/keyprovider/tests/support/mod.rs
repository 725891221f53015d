//! A real `pgcmk vault serve` child process for tests and the benchmark: started on a
//! free loopback port with a temporary data directory, driven through the `pgcmk` CLI
//! like a security officer would, and stopped (by pid) when dropped.

#![allow(dead_code)] // Each test binary uses a different part of this harness.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The key permissions (Azure names) the tests and the benchmark use: all but
/// import, backup, restore, encrypt and decrypt.
pub const ALL_KEY_PERMISSIONS: [&str; 14] = [
    "get",
    "list",
    "create",
    "update",
    "delete",
    "recover",
    "purge",
    "rotate",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
    "getrotationpolicy",
    "setrotationpolicy",
];

/// How long the service may take to write `service.json`.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Builds the `pgcmk` binary (a no-op when it is up to date) and returns its path, so
/// a test never runs a stale binary. `PGCMK_BIN` overrides both.
pub fn pgcmk_binary(release: bool) -> PathBuf {
    if let Some(bin) = std::env::var_os("PGCMK_BIN") {
        return PathBuf::from(bin);
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args(["build", "--quiet", "-p", "pgcmk", "--bin", "pgcmk"]);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .expect("run cargo build for the pgcmk binary");
    assert!(status.success(), "cargo build -p pgcmk failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target
        .join(if release { "release" } else { "debug" })
        .join("pgcmk")
}

/// What the service wrote to `DIR/service.json`.
#[derive(Clone, Debug)]
pub struct ServiceInfo {
    pub url: String,
    pub ca_file: PathBuf,
    pub identity_endpoint: String,
    pub token_endpoint: String,
    pub pid: u32,
}

/// A user-assigned managed identity created through the CLI.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub client_id: String,
    pub object_id: String,
    /// The 0600 file holding its credential.
    pub credential_file: PathBuf,
}

/// A running vault service, stopped on drop.
pub struct VaultService {
    child: Child,
    bin: PathBuf,
    /// Holds the data directory and logs; removed on drop.
    dir: tempfile::TempDir,
    pub info: ServiceInfo,
}

impl VaultService {
    /// Starts `pgcmk vault serve` on 127.0.0.1 with a free port and waits (with a
    /// deadline) until it has written `service.json`.
    pub fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        let log = fs::File::create(dir.path().join("vault.log")).unwrap();
        let child = Command::new(&bin)
            .args(["vault", "serve", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut service = Self {
            child,
            bin,
            dir,
            info: ServiceInfo {
                url: String::new(),
                ca_file: PathBuf::new(),
                identity_endpoint: String::new(),
                token_endpoint: String::new(),
                pid: 0,
            },
        };
        service.info = service.wait_for_service_json();
        service
    }

    fn wait_for_service_json(&mut self) -> ServiceInfo {
        let path = self.data_dir().join("service.json");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the vault exited early ({status}):\n{}", self.log());
            }
            // The file may be caught half-written; only a complete document counts.
            if let Some(info) = fs::read(&path).ok().and_then(|b| parse_service_json(&b)) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "no {} after {START_DEADLINE:?}:\n{}",
                path.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The service's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The service's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the service printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("vault.log")).unwrap_or_default()
    }

    /// A scratch path inside the temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `pgcmk ARGS --output json` as the bootstrap administrator.
    pub fn try_cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .args(["--output", "json"])
            .env("PGCMK_VAULT_SERVICE_DIR", self.data_dir())
            .env_remove("PGCMK_CREDENTIALS")
            .stdin(Stdio::null())
            .output()
            .expect("run pgcmk")
    }

    /// Runs `pgcmk ARGS --output json`, asserts success, returns the JSON it printed
    /// (`null` when it printed nothing).
    pub fn cli(&self, args: &[&str]) -> Value {
        let out = self.try_cli(args);
        assert!(
            out.status.success(),
            "pgcmk {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("pgcmk {} printed non-JSON ({e}): {text}", args.join(" "))
            })
        }
    }

    /// Creates a user-assigned managed identity.
    pub fn create_identity(&self, name: &str) -> Identity {
        let credential_file = self.scratch(&format!("{name}.credential"));
        let cred = credential_file.to_str().unwrap();
        let v = self.cli(&[
            "identity",
            "create",
            "--name",
            name,
            "--kind",
            "managed",
            "--credential-file",
            cred,
        ]);
        Identity {
            name: name.to_string(),
            client_id: field(&v, "client_id"),
            object_id: field(&v, "object_id"),
            credential_file,
        }
    }

    /// Creates a vault and returns its base URL.
    pub fn create_vault(&self, name: &str, purge_protection: bool) -> String {
        let mut args = vec![
            "keyvault",
            "create",
            "--name",
            name,
            "--location",
            "local",
            "--retention-days",
            "7",
        ];
        if purge_protection {
            args.push("--purge-protection");
        }
        let v = self.cli(&args);
        field(&v, "url").trim_end_matches('/').to_string()
    }

    /// Gives `identity` exactly `permissions` on the vault's keys.
    pub fn set_policy(&self, vault: &str, identity: &str, permissions: &[&str]) {
        let mut args = vec![
            "keyvault",
            "set-policy",
            "--name",
            vault,
            "--identity",
            identity,
            "--key-permissions",
        ];
        args.extend_from_slice(permissions);
        self.cli(&args);
    }

    /// The `IDENTITY_HEADER` secret a workload of `identity` presents to the
    /// managed-identity endpoint.
    pub fn identity_header(&self, identity: &Identity) -> String {
        let text = fs::read_to_string(&identity.credential_file)
            .expect("read the identity's credential file");
        let v: Value = serde_json::from_str(&text).expect("credential file is JSON");
        ["identity_header", "client_secret", "secret"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .expect("the credential file names the identity's secret")
            .to_string()
    }
}

impl Drop for VaultService {
    fn drop(&mut self) {
        // Only the process this harness started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(v: &Value, name: &str) -> String {
    v.get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string '{name}' in {v}"))
        .to_string()
}

fn parse_service_json(bytes: &[u8]) -> Option<ServiceInfo> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(ServiceInfo {
        url: text("url")?,
        ca_file: PathBuf::from(text("ca_file")?),
        identity_endpoint: text("identity_endpoint")?,
        token_endpoint: text("token_endpoint")?,
        pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
    })
}
