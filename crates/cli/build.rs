//! Records what `pgcmk version` reports about the build: the commit it was built
//! from (and that commit's date, not the build's, so builds stay reproducible), the
//! profile, the compiler and the target. Without git (a source tarball) the commit is
//! "unknown".

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        // A checkout changes HEAD; a commit or merge moves the branch it names
        // (its file, or packed-refs once packed) and HEAD's reflog, where kept.
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        let files = ["HEAD", "logs/HEAD", "packed-refs"];
        for file in files.iter().copied().chain(branch.as_deref()) {
            let path = Path::new(&git_dir).join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let commit_date = git(&["log", "-1", "--format=%cs"]).unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PGCMK_COMMIT={commit}");
    println!("cargo:rustc-env=PGCMK_COMMIT_DATE={commit_date}");
    println!(
        "cargo:rustc-env=PGCMK_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=PGCMK_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!("cargo:rustc-env=PGCMK_RUSTC={rustc_version}");
}
