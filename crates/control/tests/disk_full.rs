//! The backing disk fills while PostgreSQL writes to a pgcmk server (its control
//! plane's state, cipher directories included, on a size-limited tmpfs): PostgreSQL
//! reports "No space left on device", nothing committed before is lost, and once
//! space returns the server is Ready again with `pg_amcheck` and the volume's fsck
//! clean (issue: hardening, fault injection).

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
