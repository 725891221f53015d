//! `pgcmk fs mount --metrics-listen`: the mount's own metrics, read from its
//! `/metrics` as Prometheus reads them — bytes and requests of writes, and a block
//! that fails authentication counted as EIO of its file's class (WAL here, not data).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgcmk_testkit::binary::pgcmk;
use pgcmk_testkit::net::free_port;
use pgcmk_testkit::process::{kill_quietly, wait_exit};
use pgcmk_testkit::wait::wait_for;

/// EIO on Linux.
const EIO: i32 = 5;

/// A cipher directory, its key and a mountpoint in a scratch directory.
struct Volume {
    dir: tempfile::TempDir,
}

impl Volume {
    fn new() -> Self {
        let volume = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        volume.pgcmk(&["fs", "keygen", "--out", &volume.path("key")]);
        volume.pgcmk(&[
            "fs",
            "init",
            "--cipher-dir",
            &volume.path("cipher"),
            "--key-file",
            &volume.path("key"),
        ]);
        fs::create_dir(volume.dir.path().join("mnt")).unwrap();
        volume
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn pgcmk(&self, args: &[&str]) {
        let out = Command::new(pgcmk()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }

    /// Mounts it, serving metrics on a free port; unmounted when dropped.
    fn mount(&self) -> Mounted<'_> {
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = Command::new(pgcmk())
            .args(["fs", "mount", "--cipher-dir", &self.path("cipher")])
            .args([
                "--mountpoint",
                &self.path("mnt"),
                "--key-file",
                &self.path("key"),
            ])
            .args(["--metrics-listen", &metrics])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mounted = Mounted {
            volume: self,
            child,
            metrics,
        };
        wait_for("the mount", Duration::from_secs(20), || {
            fs::read_to_string("/proc/self/mounts")
                .unwrap()
                .contains(&self.path("mnt"))
        });
        mounted
    }
}

struct Mounted<'a> {
    volume: &'a Volume,
    child: Child,
    metrics: String,
}

impl Mounted<'_> {
    fn file(&self, name: &str) -> PathBuf {
        Path::new(&self.volume.path("mnt")).join(name)
    }

    /// The value of one series in `/metrics` (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        let text = reqwest::blocking::get(format!("http://{}/metrics", self.metrics))
            .and_then(|r| r.text())
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new(pgcmk())
            .args(["fs", "unmount", &self.volume.path("mnt")])
            .output();
        if wait_exit(&mut self.child, Duration::from_secs(20)).is_none() {
            kill_quietly(&mut self.child);
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = fs::File::create(path).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn writes_and_a_tampered_wal_block_show_in_the_mounts_metrics() {
    let volume = Volume::new();
    let data = vec![7u8; 256 * 1024];
    {
        let mounted = volume.mount();
        write_synced(&mounted.file("pg_wal/000000010000000000000001"), &data);
        write_synced(&mounted.file("base/1/1259"), &data);
        assert!(mounted.metric(r#"pgcmk_cryptfs_requests_total{op="write"}"#) >= 1.0);
        assert!(
            mounted.metric("pgcmk_cryptfs_written_bytes_total") >= 2.0 * data.len() as f64,
            "two files of {} bytes were written",
            data.len()
        );
        assert!(
            mounted.metric(r#"pgcmk_cryptfs_request_duration_seconds_count{op="fsync"}"#) >= 2.0
        );
    }
    // The system administrator flips the WAL file's bytes on disk.
    let cipher = Path::new(&volume.path("cipher")).join("pg_wal/000000010000000000000001");
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&cipher)
        .unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    let flipped: Vec<u8> = bytes[8192..].iter().map(|b| !b).collect();
    file.seek(SeekFrom::Start(8192)).unwrap();
    file.write_all(&flipped).unwrap();
    file.sync_all().unwrap();

    let mounted = volume.mount();
    let read = fs::read(mounted.file("pg_wal/000000010000000000000001"));
    assert_eq!(
        read.map_err(|e| e.raw_os_error()).unwrap_err(),
        Some(EIO),
        "a tampered block reads as EIO"
    );
    assert_eq!(fs::read(mounted.file("base/1/1259")).unwrap(), data);
    assert!(mounted.metric(r#"pgcmk_cryptfs_auth_failures_total{class="wal"}"#) >= 1.0);
    assert_eq!(
        mounted.metric(r#"pgcmk_cryptfs_auth_failures_total{class="data"}"#),
        0.0
    );
    assert!(mounted.metric("pgcmk_cryptfs_read_bytes_total") >= data.len() as f64);
}
