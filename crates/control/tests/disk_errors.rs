//! I/O errors of the backing disk under a running server (issue: hardening, fault
//! injection): sectors under a relation's cipher file fail, on a real ext4 over a
//! loop device whose image a test daemon serves (`faulty_disk`). PostgreSQL reports
//! the I/O error and never returns a wrong row, a failed write-back makes it recover
//! from its WAL instead of trusting the page cache, and once the sectors work again
//! every committed row is there and `pg_amcheck` is clean.

mod faulty_disk;
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use faulty_disk::{drop_page_cache, FaultyDisk};
use pgcmk_agent::contract::ServerDir;
use support::regress::{amcheck, Target};
use support::*;

/// A checksum of every row of `t`, to tell its rows from any others.
const CONTENT: &str = "select count(*) || ':' || sum(hashtext(v)) from t";

/// The file under `dir` whose inode number is `ino`.
fn file_with_inode(dir: &Path, ino: u64) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let meta = entry.metadata().ok()?;
        if meta.is_dir() {
            if let Some(found) = file_with_inode(&entry.path(), ino) {
                return Some(found);
            }
        } else if meta.ino() == ino {
            return Some(entry.path());
        }
    }
    None
}

/// A server `NAME` holding table `t` on a faulty disk, and the sectors of `t`'s
/// cipher file. Fields drop in order: the servers go before the vault and the disk.
struct OnFaultyDisk {
    cp: ControlPlane,
    _vault: Vault,
    disk: FaultyDisk,
    _root: tempfile::TempDir,
    name: &'static str,
    port: u64,
    password: String,
    server_dir: ServerDir,
    sectors: Vec<std::ops::Range<u64>>,
}

impl OnFaultyDisk {
    fn start(name: &'static str) -> Self {
        let root = scratch();
        let disk = FaultyDisk::mount(&root.path().join("disk"), "600M");
        let vault = Vault::start(root.path());
        let cp = ControlPlane::start(&disk.path, &vault, 60, 300);
        let created = cp.server(&["create", name, "--location", "local"]);
        let mut me = Self {
            port: created["server"]["port"].as_u64().unwrap(),
            password: created["password"].as_str().unwrap().to_string(),
            server_dir: ServerDir::new(created["server"]["dir"].as_str().unwrap()),
            cp,
            _vault: vault,
            disk,
            _root: root,
            name,
            sectors: Vec::new(),
        };
        me.sql(
            "create table t as select g as id, md5(g::text) as v from generate_series(1, 50000) g; \
             checkpoint",
        )
        .unwrap();
        let relation = me
            .server_dir
            .data_dir()
            .join(me.sql("select pg_relation_filepath('t')").unwrap().trim());
        // cryptfs numbers a file as its cipher file is numbered on the backing disk.
        let ino = std::fs::metadata(&relation).unwrap().ino();
        let cipher = file_with_inode(&me.server_dir.cipher(), ino).expect("t's cipher file");
        me.sectors = me.disk.extents_of(&cipher);
        assert!(
            !me.sectors.is_empty(),
            "no extents for {}",
            cipher.display()
        );
        me
    }

    fn sql(&self, q: &str) -> Result<String, String> {
        psql(self.port, &self.password, q)
    }

    fn postgres_log(&self) -> String {
        std::fs::read_dir(self.server_dir.data_dir().join("log"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn assert_amcheck_clean(&self) {
        amcheck(&Target {
            port: u16::try_from(self.port).unwrap(),
            password: self.password.clone(),
            log_dir: self.server_dir.data_dir().join("log"),
        })
        .unwrap();
    }
}

#[test]
fn unreadable_sectors_under_a_relation_give_an_io_error_never_wrong_rows() {
    let s = OnFaultyDisk::start("eio-read");
    let content = s.sql(CONTENT).unwrap();
    // Nothing of the table left in PostgreSQL's buffers or any page cache.
    s.cp.server(&["stop", s.name]);
    drop_page_cache();
    s.cp.server(&["start", s.name]);
    s.disk.fail_reads(s.sectors.clone());
    let read = s.sql(CONTENT);
    s.disk.heal();
    let error = read.expect_err("rows read from unreadable sectors");
    assert!(
        error.contains("Input/output error"),
        "PostgreSQL did not report the I/O error: {error}"
    );
    assert_eq!(s.cp.state(s.name).0, "Ready");
    assert_eq!(s.sql(CONTENT).unwrap(), content, "rows changed");
    s.assert_amcheck_clean();
}

#[test]
fn unwritable_sectors_fail_the_checkpoint_and_lose_no_committed_row() {
    let s = OnFaultyDisk::start("eio-write");
    let before = s.sql(CONTENT).unwrap();
    let updated = s
        .sql("select count(*) || ':' || sum(hashtext(md5(v))) from t")
        .unwrap();
    s.disk.fail_writes(s.sectors.clone());
    // The update's WAL goes to sectors that work; a write-back of t's pages may
    // already fail under it and take the server down before it commits, or between
    // its commit and the answer: unacknowledged, it may have committed or not.
    let acknowledged = s.sql("update t set v = md5(v)").is_ok();
    // Writing t's pages back through cryptfs fails at their fsync (in the checkpoint,
    // or earlier in a background writer): PostgreSQL, which cannot trust the page
    // cache after that, stops and recovers from the WAL, over and over while the
    // sectors stay bad. No checkpoint can succeed meanwhile.
    let checkpoint = s.sql("checkpoint");
    assert!(
        checkpoint.is_err(),
        "a checkpoint over bad sectors succeeded"
    );
    pgcmk_testkit::wait::wait_for(
        "PostgreSQL to report the failed write",
        std::time::Duration::from_secs(60),
        || s.postgres_log().contains("Input/output error"),
    );
    s.disk.heal();
    pgcmk_testkit::wait::wait_for(
        "the server to serve again",
        std::time::Duration::from_secs(120),
        || s.sql("select 1").is_ok(),
    );
    let after = s.sql(CONTENT).unwrap();
    if acknowledged {
        assert_eq!(
            after, updated,
            "an acknowledged update was lost (before: {before})"
        );
    } else {
        assert!(
            after == updated || after == before,
            "the rows are neither as before ({before}) nor as updated ({updated}): {after}"
        );
    }
    s.sql("checkpoint").unwrap();
    pgcmk_testkit::wait::wait_for(
        "Ready after the recovery",
        std::time::Duration::from_secs(60),
        || s.cp.state(s.name).0 == "Ready",
    );
    s.assert_amcheck_clean();
}
