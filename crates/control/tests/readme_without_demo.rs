//! The README's "Without the demo" runs as written: every `sh` block of that section,
//! in order, in one shell, with only `/var/lib/pgcmk` moved to a temporary directory
//! and the control plane on a free port (another test may hold its default 7480).
//! The two services (`pgcmk vault serve`, `pgcmk serve`), which a reader leaves
//! running in a terminal of their own, are started in the background and waited for
//! (their `service.json` / `serve.json` appear once they listen).

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pgcmk_agent::contract::ServerDir;
use pgcmk_testkit::binary::pgcmk;
use pgcmk_testkit::process::{is_gone, terminate};
use pgcmk_testkit::wait::wait_for;
use support::agent_pid;

/// The README's base directory for both services' state, replaced by the test's.
const BASE: &str = "/var/lib/pgcmk";

/// The `sh` blocks of the README's "Without the demo" section, in order.
fn readme_blocks() -> Vec<String> {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
        .expect("README.md");
    let start = readme
        .find("\n## Without the demo\n")
        .expect("the README has a 'Without the demo' section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + "```sh\n".len()..];
        let close = body.find("```").expect("a closed code block");
        blocks.push(body[..close].to_string());
        rest = &body[close + 3..];
    }
    blocks
}

/// One shell script of the blocks, each command line as written (continuations
/// joined), the long-running services started in the background and waited for.
fn script(blocks: &[String], root: &Path) -> String {
    let base = root.to_str().expect("a UTF-8 path");
    let mut out = String::from("set -euo pipefail\n");
    for block in blocks {
        for command in block.replace("\\\n", " ").lines() {
            let command = command.replace(BASE, base);
            let trimmed = command.trim_start();
            if trimmed.starts_with("pgcmk vault serve ") {
                out.push_str(&format!(
                    "{command} >> vault.log 2>&1 &\necho $! >> services.pids\n\
                     timeout 60 bash -c 'until [ -s {base}/vault/service.json ]; do sleep 0.1; done'\n"
                ));
            } else if trimmed.starts_with("pgcmk serve ") {
                out.push_str(&format!(
                    "{command} --listen 127.0.0.1:0 >> control.log 2>&1 &\necho $! >> services.pids\n\
                     timeout 60 bash -c 'until [ -s {base}/control/serve.json ]; do sleep 0.1; done'\n"
                ));
            } else {
                out.push_str(&command);
                out.push('\n');
            }
        }
    }
    out
}

/// Stops what the script started, also when it failed half-way: the servers (each
/// agent stops its PostgreSQL and unmounts), then both services, then any agent left.
struct Cleanup {
    root: PathBuf,
    path: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let control = self.root.join("control");
        let pgcmk_server = |args: &[&str]| {
            Command::new(pgcmk())
                .arg("server")
                .args(args)
                .env("PGCMK_CONTROL_DIR", &control)
                .env("PATH", &self.path)
                .stdin(Stdio::null())
                .output()
        };
        if let Ok(out) = pgcmk_server(&["list", "-o", "json"]) {
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for s in list.as_array().into_iter().flatten() {
                let _ = pgcmk_server(&["delete", s["name"].as_str().unwrap_or_default(), "--yes"]);
            }
        }
        let pids = fs::read_to_string(self.root.join("services.pids")).unwrap_or_default();
        for pid in pids
            .lines()
            .rev()
            .filter_map(|p| p.trim().parse::<u32>().ok())
        {
            if terminate(pid) {
                wait_for("a service to stop", Duration::from_secs(60), || {
                    is_gone(pid)
                });
            }
        }
        for entry in fs::read_dir(control.join("servers")).into_iter().flatten() {
            let dir = ServerDir::new(entry.expect("a directory entry").path());
            if let Some(pid) = agent_pid(dir.root()) {
                if terminate(pid) {
                    wait_for("a leftover agent", Duration::from_secs(60), || is_gone(pid));
                }
            }
            dir.detach_stale_mount();
        }
    }
}

#[test]
fn the_readme_commands_without_the_demo_run_as_written() {
    let blocks = readme_blocks();
    assert!(blocks.len() >= 6, "the section's blocks: {blocks:?}");
    let root = tempfile::Builder::new()
        .prefix("pgcmk-readme")
        .tempdir_in("/var/tmp")
        .unwrap();
    // The postgres user reaches the servers' directories under it.
    fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let bin_dir = pgcmk().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _cleanup = Cleanup {
        root: root.path().to_path_buf(),
        path: path.clone(),
    };
    let script = script(&blocks, root.path());
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(root.path())
        .env("PATH", &path)
        .stdin(Stdio::null());
    for (var, _) in std::env::vars() {
        if var.starts_with("PGCMK_") {
            command.env_remove(var);
        }
    }
    let out = command.output().unwrap();
    let log = |name: &str| fs::read_to_string(root.path().join(name)).unwrap_or_default();
    assert!(
        out.status.success(),
        "the README's commands failed:\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}\n\
         --- vault.log\n{}\n--- control.log\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log("vault.log"),
        log("control.log"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for said in [
        "server orders",
        "connected",
        "server billing",
        "deleted orders",
        "deleted billing",
    ] {
        assert!(stdout.contains(said), "'{said}' not in:\n{stdout}");
    }
}
