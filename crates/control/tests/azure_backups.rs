//! Backup repositories in Azure Blob Storage (`docs/backups.md`), with real parts:
//! Azurite on loopback with TLS (a certificate from the test's CA), a control plane
//! started with `--backup-azure-*`, pgBackRest's `azure` repository type. A server
//! backs up and archives there, a new server restores from there, and no blob
//! holds a row in plaintext; the account's key is in no process's arguments or
//! environment. Geo-redundant copies go to a second account (`--geo-backup-azure-*`,
//! standing for the paired region's) with a key of its own.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use pgcmk_testkit::azurite::{Azurite, ACCOUNT, GEO_ACCOUNT};
use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use support::backups::*;
use support::geo::*;
use support::*;

const CONTAINER: &str = "pgcmk-backups";
/// The paired region's container, in [`GEO_ACCOUNT`].
const GEO_CONTAINER: &str = "pgcmk-geo-backups";

/// Azurite and a control plane keeping its servers' repositories there, for the
/// tests of the binary (fields drop in order: the servers go before Azurite).
struct Fixture {
    stack: Stack,
    azurite: Azurite,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let azurite = Azurite::start(&[(ACCOUNT, CONTAINER), (GEO_ACCOUNT, GEO_CONTAINER)]);
        let endpoint = azurite.endpoint();
        let ca = azurite.ca_file.to_str().unwrap().to_string();
        let key_file = azurite.key_file.to_str().unwrap().to_string();
        let geo_key_file = azurite.geo_key_file.to_str().unwrap().to_string();
        let stack = Stack::start_serving(
            60,
            300,
            None,
            &[
                "--backup-azure-account",
                ACCOUNT,
                "--backup-azure-container",
                CONTAINER,
                "--backup-azure-endpoint",
                &endpoint,
                "--backup-azure-ca-file",
                &ca,
                "--backup-azure-key-file",
                &key_file,
                "--geo-backup-azure-account",
                GEO_ACCOUNT,
                "--geo-backup-azure-container",
                GEO_CONTAINER,
                "--geo-backup-azure-endpoint",
                &endpoint,
                "--geo-backup-azure-ca-file",
                &ca,
                "--geo-backup-azure-key-file",
                &geo_key_file,
            ],
        );
        Fixture { stack, azurite }
    })
}

#[test]
fn a_server_backs_up_to_azure_blob_and_restores_from_it_without_plaintext() {
    let fixture = fixture();
    let (stack, azurite) = (&fixture.stack, &fixture.azurite);
    let source = create_backed_up(stack, "az-source");
    let marker = "azure-marker-5c1e";
    archive_marker(&source, marker);
    // Nothing went to a local repository.
    assert!(!repository(&source).exists());

    let restored = Created::from(&stack.cp.server(&[
        "restore",
        "--source",
        "az-source",
        "--name",
        "az-copy",
        "--point-in-time",
        "latest",
    ]));
    assert_eq!(
        restored.sql("SELECT t FROM markers").unwrap(),
        marker,
        "the restored server's rows"
    );

    // The blobs are in Azurite's data directory (its catalogue names them, its
    // extents hold their bytes), and none holds the row in plaintext.
    let data = azurite.data_dir();
    let catalogue = fs::read_to_string(data.join("__azurite_db_blob__.json")).unwrap();
    let id = source.dir.file_name().unwrap().to_str().unwrap();
    for blob in ["backup.info", "archive.info", ".zst"] {
        assert!(
            catalogue.contains(&format!("{id}/")) && catalogue.contains(blob),
            "no {blob} of the server {id} in Azurite's catalogue"
        );
    }
    assert_no_blob_holds(&data, marker);
    // The account's key reaches pgBackRest through its configuration on the mount
    // only: no process shows it in its arguments or environment.
    assert_no_process_shows(azurite, ACCOUNT);
}

/// Azurite's data (more than a MiB of it) holds `marker` in no byte.
fn assert_no_blob_holds(data: &Path, marker: &str) {
    let blobs = files_under(data);
    let bytes: u64 = blobs
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(bytes > 1 << 20, "{bytes} bytes in {blobs:?}");
    let plaintext: Vec<_> = blobs
        .iter()
        .filter(|f| contains(&fs::read(f).unwrap_or_default(), marker.as_bytes()))
        .collect();
    assert!(plaintext.is_empty(), "the marker in {plaintext:?}");
}

/// No process but Azurite (the storage service itself) shows `account`'s key in
/// its arguments or environment.
fn assert_no_process_shows(azurite: &Azurite, account: &str) {
    let key = azurite.account_key(account).as_bytes();
    let azurite_pid = azurite.pid().to_string();
    let showing: Vec<_> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| e.file_name().to_string_lossy() != azurite_pid)
        .filter(|e| {
            ["cmdline", "environ"]
                .iter()
                .any(|f| contains(&fs::read(e.path().join(f)).unwrap_or_default(), key))
        })
        .map(|e| e.file_name())
        .collect();
    assert!(
        showing.is_empty(),
        "processes showing {account}'s key: {showing:?}"
    );
}

#[test]
fn deleting_a_server_deletes_its_blobs() {
    let fixture = fixture();
    let (stack, azurite) = (&fixture.stack, &fixture.azurite);
    let server = create_backed_up(stack, "az-deleted");
    let id = server.dir.file_name().unwrap().to_str().unwrap();
    let prefix = format!("{id}/");
    let before = azurite.blob_names(ACCOUNT, CONTAINER, &prefix);
    assert!(
        before.iter().any(|b| b.ends_with("backup.info")),
        "{before:?}"
    );

    stack.cp.server(&["delete", "az-deleted", "--yes"]);
    let left = azurite.blob_names(ACCOUNT, CONTAINER, &prefix);
    assert!(
        left.is_empty(),
        "blobs of the deleted server left: {left:?}"
    );
    assert!(!server.dir.exists());
}

#[test]
fn a_geo_copy_in_the_paired_account_restores_with_the_servers_key_revoked() {
    let fixture = fixture();
    let (stack, azurite) = (&fixture.stack, &fixture.azurite);
    let name = "az-geo";
    let key = stack.vault.customer_key(name);
    let geo = geo_key(&stack.vault, name);
    let source = Created::from(&create_under(stack, name, &key, &geo_options(&geo)).unwrap());
    wait_first_geo_backup(stack, name);
    let marker = "azure-geo-marker-91d4";
    archive_marker(&source, marker);

    // A backup in both accounts' containers, under the server's path.
    let id = source.dir.file_name().unwrap().to_str().unwrap();
    let prefix = format!("{id}/");
    for (account, container) in [(ACCOUNT, CONTAINER), (GEO_ACCOUNT, GEO_CONTAINER)] {
        let blobs = azurite.blob_names(account, container, &prefix);
        assert!(
            blobs.iter().any(|b| b.ends_with("backup.info"))
                && blobs.iter().any(|b| b.contains("/archive/")),
            "{account}/{container}: {blobs:?}"
        );
    }

    // With the server's key revoked, the restore reads the copy, through the geo
    // key and the paired account.
    stack.vault.revoke(&key.vault, &key.identity);
    stack.cp.server(&["revalidate", name]);
    wait_for("the source Inaccessible", Duration::from_secs(30), || {
        stack.cp.state(name).0 == "Inaccessible"
    });
    let restored = restore_with(stack, name, "az-geo-copy", "latest", &[]).unwrap();
    assert_eq!(restored.sql("SELECT t FROM markers").unwrap(), marker);
    assert_restored_from_the_copy(stack, "az-geo-copy");
    assert_no_blob_holds(&azurite.data_dir(), marker);
    assert_no_process_shows(azurite, GEO_ACCOUNT);

    // Deleting the server removes its blobs from both accounts.
    stack.cp.server(&["delete", name, "--yes"]);
    for (account, container) in [(ACCOUNT, CONTAINER), (GEO_ACCOUNT, GEO_CONTAINER)] {
        let left = azurite.blob_names(account, container, &prefix);
        assert!(left.is_empty(), "{account}/{container} kept {left:?}");
    }
}
