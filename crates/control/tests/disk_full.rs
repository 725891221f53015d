//! Full disks, on size-limited tmpfs mounts (issue: hardening, fault injection):
//! - under a writing PostgreSQL (its control plane's state, cipher directories
//!   included): PostgreSQL reports "No space left on device", nothing committed before
//!   is lost, and once space returns the server is Ready again with `pg_amcheck` and
//!   the volume's fsck clean;
//! - under the services' own stores (the vault's and the control plane's): a change
//!   is refused with an error, nothing acknowledged is lost, the audit chain verifies,
//!   and the next change after space returns succeeds.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgcmk_agent::contract::ServerDir;
use pgcmk_testkit::wait::wait_for;
use support::regress::{amcheck, Target};
use support::*;

/// A tmpfs of `size` mounted on `dir`, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0711"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Self(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "resize the tmpfs to {size}");
    }
}

/// Fills the filesystem of `dir` with one file until it is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 1 << 20];
    loop {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(ENOSPC), "{e}");
            return path;
        }
    }
}

/// ENOSPC on Linux.
const ENOSPC: i32 = 28;

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_reported_loses_nothing_committed_and_heals_when_space_returns() {
    let root = scratch();
    // Dropped last: after the control plane and its servers.
    let disk = Tmpfs::mount(&root.path().join("small"), "160m");
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(&disk.0, &vault, 60, 300);
    let created = cp.server(&["create", "full", "--location", "local"]);
    let port = created["server"]["port"].as_u64().unwrap();
    let password = created["password"].as_str().unwrap().to_string();
    let server_dir = ServerDir::new(created["server"]["dir"].as_str().unwrap());
    let sql = |q: &str| psql(port, &password, q);

    sql("create table kept (id int primary key, pad text); \
         insert into kept select g, repeat('k', 200) from generate_series(1, 2000) g")
    .unwrap();
    // Fill the disk with committed-or-refused batches until PostgreSQL says so.
    let mut refusal = None;
    sql("create table filler (pad text)").unwrap();
    for _ in 0..200 {
        match sql(
            "insert into filler select repeat(md5(g::text), 60) from generate_series(1, 20000) g",
        ) {
            Ok(_) => continue,
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk never filled");
    // The server may have restarted (a WAL write that fails is a PANIC by design):
    // what it said, or its log, names the cause.
    let log = std::fs::read_dir(server_dir.data_dir().join("log"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect::<String>()
        })
        .unwrap_or_default();
    assert!(
        refusal.contains("No space left on device") || log.contains("No space left on device"),
        "PostgreSQL did not report the full disk: {refusal}"
    );

    disk.resize("1g");
    wait_for(
        "the server to accept writes again",
        Duration::from_secs(120),
        || sql("insert into kept values (0, 'after') on conflict do nothing").is_ok(),
    );
    let kept = sql("select count(*) from kept where id > 0").unwrap();
    assert_eq!(kept.trim(), "2000", "committed rows lost");
    let target = Target {
        port: u16::try_from(port).unwrap(),
        password: password.clone(),
        log_dir: server_dir.data_dir().join("log"),
    };
    amcheck(&target).unwrap();
    cp.server(&["stop", "full"]);
    let fsck = cp.server_output(&["fsck", "full"]);
    assert!(
        fsck.status.success(),
        "fsck after the full disk: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
}

#[test]
fn full_disks_under_the_vault_and_control_plane_refuse_changes_and_lose_nothing() {
    let root = scratch();
    let disk = Tmpfs::mount(&root.path().join("small"), "96m");
    let vault = Vault::start(&disk.0);
    let cp = ControlPlane::start(&disk.0, &vault, 60, 300);
    let kept = vault.identity("kept-mi");
    let ballast = fill(&disk.0);

    // The vault: a new identity cannot be stored (nor its audit entry appended).
    let refused = vault.try_cli(&[
        "identity",
        "create",
        "refused-mi",
        "--credential-file",
        disk.0.join("refused.credential").to_str().unwrap(),
    ]);
    assert!(refused.is_err(), "an identity was created on a full disk");
    // The control plane: a new server cannot be made, and nothing of it is left.
    let made = cp.try_server(&["create", "nospace", "--location", "local"]);
    assert!(
        made.is_err(),
        "a server was created on a full disk: {made:?}"
    );

    std::fs::remove_file(&ballast).unwrap();
    if let Err(e) = vault.try_cli(&["identity", "show", &kept.name]) {
        panic!(
            "after space returned: {e}\nvault log:\n{}",
            vault.process.log()
        );
    }
    vault.identity("after-mi");
    assert!(vault.cli(&["audit", "verify"])["ok"].as_bool().unwrap());
    assert!(
        cp.server(&["list"])
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "nospace" || s["state"] == "Failed"),
        "a half-made server claims to be usable"
    );
    let _ = cp.try_server(&["delete", "nospace", "--yes"]);
    let created = cp.server(&["create", "roomy", "--location", "local"]);
    assert_eq!(created["server"]["state"], "Ready");
}

#[test]
fn a_busy_vault_whose_disk_fills_serves_again_once_space_returns() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let root = scratch();
    let disk = Tmpfs::mount(&root.path().join("small"), "64m");
    let vault = Vault::start(&disk.0);
    let key = vault.customer_key("busy");
    let token = vault.client_token(&key.identity.credential_file, &key.vault_url);
    let client = vault.https_client();
    let url = format!("{}/keys/{}?api-version=7.4", key.vault_url, key.key);
    // Every data-plane request, a read included, appends to the audit trail.
    let read = || {
        client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .map_or(0, |r| r.status().as_u16())
    };
    assert_eq!(read(), 200);
    let stop = AtomicBool::new(false);
    let refused = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if read() != 200 {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let ballast = fill(&disk.0);
        // Long enough on a full disk for the vault's log lines about it to fill the
        // last page of its log file: then even logging fails.
        wait_for(
            "200 requests refused on a full disk",
            Duration::from_secs(60),
            || refused.load(Ordering::Relaxed) >= 200,
        );
        std::fs::remove_file(&ballast).unwrap();
        let served =
            pgcmk_testkit::wait::poll(Duration::from_secs(30), Duration::from_millis(100), || {
                read() == 200
            });
        stop.store(true, Ordering::Relaxed);
        assert!(
            served.is_some(),
            "the vault still refuses 30 s after space returned:\n{}",
            vault.process.log()
        );
    });
    assert!(vault.cli(&["audit", "verify"])["ok"].as_bool().unwrap());
}
