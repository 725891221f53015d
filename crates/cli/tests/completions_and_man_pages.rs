//! Shell completions and man pages come from the command line's definition: every
//! command is in them, with its options.

use std::process::Command;

use pgcmk_testkit::binary::pgcmk;

#[test]
fn bash_completion_knows_every_command_and_their_options() {
    let out = Command::new(pgcmk())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for word in [
        "complete -F _pgcmk",
        "reset-password",
        "set-rotation-policy",
        "--control-dir",
        "--identity-credential-file",
    ] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completion"
        );
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Command::new(pgcmk())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(pgcmk())
        .arg("man-pages")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "pgcmk.1",
        "pgcmk-server.1",
        "pgcmk-server-create.1",
        "pgcmk-key-rotate.1",
        "pgcmk-audit-list.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page} was not written");
    }
    let create = std::fs::read_to_string(dir.path().join("pgcmk-server-create.1")).unwrap();
    assert!(create.contains("location"), "{create}");
    assert!(
        !dir.path().join("pgcmk-help.1").exists(),
        "a page for clap's help command"
    );
}
