//! The `pgcmk` binary under test, built from this workspace so that a test never runs
//! a stale one. `PGCMK_BIN` overrides the build (e.g. to test an installed binary).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (two levels above this crate), absolute.
pub fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .expect("the workspace root exists")
    })
}

/// The debug `pgcmk`, built once per test binary (a no-op when it is up to date).
pub fn pgcmk() -> &'static Path {
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    DEBUG.get_or_init(|| build(false))
}

/// The release `pgcmk` (for benchmarks), built once per process.
pub fn pgcmk_release() -> &'static Path {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    RELEASE.get_or_init(|| build(true))
}

fn build(release: bool) -> PathBuf {
    if let Some(bin) = std::env::var_os("PGCMK_BIN") {
        return PathBuf::from(bin);
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(root)
        .args(["build", "--quiet", "-p", "pgcmk", "--bin", "pgcmk"]);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .expect("run cargo build for the pgcmk binary");
    assert!(status.success(), "cargo build -p pgcmk failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join(if release { "release" } else { "debug" })
        .join("pgcmk")
}
