//! A new server's encrypted volume and cluster, on a real cryptfs mount with a
//! real PostgreSQL 15 `initdb` (no vault needed: the DEK is given directly).
//!
//! One provisioned server directory serves every test, one test at a time (they
//! mount it in turn at its one mount point).

use std::os::unix::fs::PermissionsExt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use pgcmk_agent::contract::{AgentConfig, KekAccess, ServerDir, VaultEndpoints};
use pgcmk_agent::provision::{cryptfs_key, provision};
use pgcmk_crypto::{Dek, SecretBytes};
use pgcmk_keyprovider::KeyReference;
use pgcmk_testkit::shared::{Held, Shared};

const PASSWORD: &str = "provision-test-password-f00d";

/// A provisioned server directory, its configuration and DEK.
struct Provisioned {
    _root: tempfile::TempDir,
    dir: ServerDir,
    config: AgentConfig,
    dek: Dek,
    turn: Mutex<()>,
}

impl Provisioned {
    fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn provisioned() -> Held<Provisioned> {
    static PROVISIONED: Shared<Provisioned> = Shared::new();
    PROVISIONED.get(|| {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let dir = ServerDir::new(root.path().join("srv"));
        std::fs::create_dir(dir.root()).unwrap();
        std::fs::set_permissions(dir.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let config = AgentConfig {
            server_id: "0123456789abcdef0123456789abcdef".into(),
            port: 1,
            listen_addresses: pgcmk_agent::contract::config::loopback_only(),
            kek: KekAccess {
                key: KeyReference::parse("https://127.0.0.1:1/keys/unused").unwrap(),
                vault: VaultEndpoints {
                    identity_endpoint: "http://127.0.0.1:1/msi/token".into(),
                    ca_file: None,
                },
                client_id: "unused".into(),
            },
            interval_ms: 1000,
            grace_ms: 1000,
            backup: None,
            restore: None,
            replica: None,
            ha: None,
        };
        let dek = Dek::generate().unwrap();
        provision(
            &dir,
            &config,
            &dek,
            &SecretBytes::new(PASSWORD.as_bytes().to_vec()),
        )
        .unwrap();
        Provisioned {
            _root: root,
            dir,
            config,
            dek,
            turn: Mutex::new(()),
        }
    })
}

#[test]
fn provisioning_leaves_the_volume_unmounted() {
    let p = provisioned();
    let _turn = p.turn();
    assert!(
        !p.dir.data_dir().exists(),
        "something is readable at the mount point"
    );
}

#[test]
fn the_cluster_is_on_the_volume_for_the_dek_derived_key_without_its_password_file() {
    let p = provisioned();
    let _turn = p.turn();
    let mount = pgcmk_cryptfs::mount(
        &p.dir.cipher(),
        &p.dir.mountpoint(),
        cryptfs_key(&p.dek, &p.config.server_id).unwrap(),
        pgcmk_cryptfs::MountOptions::default(),
    )
    .unwrap();
    let version = std::fs::read_to_string(p.dir.data_dir().join("PG_VERSION")).unwrap();
    assert_eq!(version.trim(), "15");
    assert!(
        !p.dir.mountpoint().join(".initdb-password").exists(),
        "initdb's password file is left on the volume"
    );
    mount.unmount().unwrap();
}

#[test]
fn another_dek_does_not_open_the_volume() {
    let p = provisioned();
    let _turn = p.turn();
    let other = cryptfs_key(&Dek::generate().unwrap(), &p.config.server_id).unwrap();
    let err = pgcmk_cryptfs::mount(
        &p.dir.cipher(),
        &p.dir.mountpoint(),
        other,
        Default::default(),
    )
    .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("key"), "{err}");
}

#[test]
fn the_initial_password_is_nowhere_in_the_server_directory() {
    let p = provisioned();
    let _turn = p.turn();
    let mut stack = vec![p.dir.root().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes
                        .windows(PASSWORD.len())
                        .any(|w| w == PASSWORD.as_bytes()),
                    "password in {}",
                    path.display()
                );
            }
        }
    }
}
