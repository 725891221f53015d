//! Shared harness for the real-program tests: a temp tree that the `postgres` user can reach,
//! a cryptfs mount that is unmounted on drop, a PostgreSQL 15 cluster that is stopped on drop,
//! and the `pgcmk` binary for the CLI checks.
//!
//! Every guard cleans up by what it started (its own mount point, its own postmaster pid), so a
//! failing assertion never leaves a server running or a mount behind.

// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod mount;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use cluster::PgCluster;
pub use mount::CryptMount;

/// The tests in one binary share the two cores; the heavy ones take this lock so they run one
/// at a time (cargo already runs the test binaries one after another).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A temporary directory that the `postgres` user can traverse (tempfile makes it 0700).
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pgcmk-real-")
            .tempdir()
            .expect("create temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh subdirectory; owned by `postgres` when the server has to write into it.
    pub fn subdir(&self, name: &str, for_postgres: bool) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::create_dir(&path).expect("create subdir");
        if for_postgres {
            chown_postgres(&path);
        }
        path
    }
}

/// uid/gid of the `postgres` system user (PostgreSQL refuses to run as root).
pub fn postgres_ids() -> (u32, u32) {
    let out = run(Command::new("id").arg("-u").arg("postgres"));
    let uid = out.trim().parse().expect("uid of postgres");
    let out = run(Command::new("id").arg("-g").arg("postgres"));
    let gid = out.trim().parse().expect("gid of postgres");
    (uid, gid)
}

pub fn chown_postgres(path: &Path) {
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
}

/// Runs a command to completion; panics with its stderr if it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    expect_success(cmd, out)
}

/// Like [`run`], with `input` fed to the command's stdin.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Dropping stdin after the write closes it, so the command sees EOF.
    let written = child.stdin.take().expect("stdin").write_all(input);
    let out = child.wait_with_output().expect("wait for command");
    written.unwrap_or_else(|e| panic!("write to {cmd:?}: {e}"));
    expect_success(cmd, out)
}

fn expect_success(cmd: &Command, out: Output) -> String {
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command to completion and returns its output whatever the exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// A command run as the `postgres` user.
pub fn as_postgres(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every regular file under `root`, recursively (symlinks not followed).
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        {
            let entry = entry.expect("dir entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The `pgcmk` binary of this workspace, built on first use (the cryptfs tests do not
/// otherwise build the CLI crate), in the same profile as the running test.
pub fn pgcmk_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test exe> -> target/<profile>/pgcmk
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        build.args(["build", "--quiet", "-p", "pgcmk", "--bin", "pgcmk"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        run(build.env(
            "CARGO_TARGET_DIR",
            profile_dir.parent().expect("target dir"),
        ));
        profile_dir.join("pgcmk")
    })
}
