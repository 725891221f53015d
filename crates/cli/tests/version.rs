//! `pgcmk version` says which commit and build it is.

use std::process::Command;

use pgcmk_testkit::binary::pgcmk;
use serde_json::Value;

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = Command::new(pgcmk())
        .args(["version", "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(v["commit"], head.as_str(), "{v}");
    for field in ["commit_date", "profile", "target", "rustc"] {
        assert!(
            v[field]
                .as_str()
                .is_some_and(|s| !s.is_empty() && s != "unknown"),
            "{field}: {v}"
        );
    }
    let human = Command::new(pgcmk()).arg("--version").output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains(&head), "{human}");
}
