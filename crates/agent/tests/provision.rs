//! A new server's encrypted volume and cluster, on a real cryptfs mount with a
//! real PostgreSQL 15 `initdb` (no vault needed: the DEK is given directly).

use std::os::unix::fs::PermissionsExt;

use pgcmk_agent::contract::{AgentConfig, KekAccess, ServerDir, VaultEndpoints};
use pgcmk_agent::provision::{cryptfs_key, provision};
use pgcmk_crypto::{Dek, SecretBytes};
use pgcmk_keyprovider::KeyReference;

#[test]
fn provision_creates_an_encrypted_cluster_readable_only_with_the_dek() {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = ServerDir::new(root.path().join("srv"));
    std::fs::create_dir(dir.root()).unwrap();
    std::fs::set_permissions(dir.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let config = AgentConfig {
        server_id: "0123456789abcdef0123456789abcdef".into(),
        port: 1,
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
    };
    let dek = Dek::generate().unwrap();
    let password = "provision-test-password-f00d";
    provision(
        &dir,
        &config,
        &dek,
        &SecretBytes::new(password.as_bytes().to_vec()),
    )
    .unwrap();

    // Unmounted afterwards: nothing readable at the mount point.
    assert!(!dir.data_dir().exists());
    // The cluster is on the volume: mount it again with the DEK-derived key.
    let mount = pgcmk_cryptfs::mount(
        &dir.cipher(),
        &dir.mountpoint(),
        cryptfs_key(&dek, &config.server_id).unwrap(),
        pgcmk_cryptfs::MountOptions::default(),
    )
    .unwrap();
    let version = std::fs::read_to_string(dir.data_dir().join("PG_VERSION")).unwrap();
    assert_eq!(version.trim(), "15");
    assert!(!dir.mountpoint().join(".initdb-password").exists());
    mount.unmount().unwrap();

    // Another DEK does not open it; the password is nowhere in the ciphertext.
    let other = cryptfs_key(&Dek::generate().unwrap(), &config.server_id).unwrap();
    let err = pgcmk_cryptfs::mount(&dir.cipher(), &dir.mountpoint(), other, Default::default())
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("key"), "{err}");
    let mut stack = vec![dir.root().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes
                        .windows(password.len())
                        .any(|w| w == password.as_bytes()),
                    "password in {}",
                    p.display()
                );
            }
        }
    }
}
