//! `pgcmk server` exits with the code its failure's kind has in docs/operations.md
//! ("Exit codes"), against a real control plane: scripts branch on these.

mod support;

use std::process::{Command, Stdio};

use support::*;

/// Runs `pgcmk server ARGS` and returns its exit code and what it printed on stderr.
fn exit_of(cp: &ControlPlane, args: &[&str]) -> (i32, String) {
    let out = cp.server_output(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().expect("exited, not killed"), stderr)
}

/// Checks one command's exit code and message; a mismatch is collected in `mismatches`
/// so that one run reports every code that is off, not only the first.
fn check_exit(
    mismatches: &mut Vec<String>,
    cp: &ControlPlane,
    args: &[&str],
    code: i32,
    says: &str,
) {
    let (got, stderr) = exit_of(cp, args);
    if got != code || !stderr.contains(says) {
        mismatches.push(format!(
            "`pgcmk server {}` exited {got} (want {code}, saying '{says}'): {stderr}",
            args.join(" ")
        ));
    }
}

#[test]
fn each_kind_of_failure_has_its_exit_code() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let mut cp = ControlPlane::start(root.path(), &vault, 60, 300);
    cp.server(&["create", "--name", "taken", "--location", "local"]);
    let mut mismatches = Vec::new();

    // 2: the request is invalid (checked by the control plane).
    check_exit(
        &mut mismatches,
        &cp,
        &["create", "--name", "Bad_Name", "--location", "local"],
        2,
        "is not valid",
    );
    // 3: no such server.
    check_exit(&mut mismatches, &cp, &["show", "nosuch"], 3, "not found");
    // 4: the name is taken; the server is already stopped.
    check_exit(
        &mut mismatches,
        &cp,
        &["create", "--name", "taken", "--location", "local"],
        4,
        "already exists",
    );
    cp.server(&["stop", "taken"]);
    check_exit(
        &mut mismatches,
        &cp,
        &["stop", "taken"],
        4,
        "already stopped",
    );
    // 5: a wrong DBA credential.
    let wrong = root.path().join("wrong.credential");
    std::fs::write(&wrong, "not-the-dba-credential").unwrap();
    let out = Command::new(pgcmk_testkit::binary::pgcmk())
        .args(["server", "list", "--endpoint", &cp.url, "--credential-file"])
        .arg(&wrong)
        .arg("--ca-cert")
        .arg(cp.ca_file())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.code() != Some(5) {
        mismatches.push(format!(
            "a wrong DBA credential exited {:?} (want 5): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    cp.server(&["delete", "taken", "--yes"]);

    // 6: the control plane is not there.
    cp.kill();
    check_exit(
        &mut mismatches,
        &cp,
        &["list"],
        6,
        "cannot reach the control plane",
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
