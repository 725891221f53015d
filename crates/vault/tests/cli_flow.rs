//! The security officer's flow through the `pgcmk` commands, as a script would run
//! them (`--output json`) and as a person reads them (human output).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use serde_json::Value;
use support::Vault;

struct Cli<'a> {
    vault: &'a Vault,
    credentials: Option<std::path::PathBuf>,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(support::pgcmk_binary());
        cmd.args(args)
            .env("PGCMK_VAULT_SERVICE_DIR", self.vault.data_dir());
        match &self.credentials {
            Some(c) => cmd.env("PGCMK_CREDENTIALS", c),
            None => cmd.env_remove("PGCMK_CREDENTIALS"),
        };
        cmd.output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "pgcmk {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "pgcmk {} should fail",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn security_officer_commands_end_to_end() {
    let v = Vault::start();
    let officer = Cli {
        vault: &v,
        credentials: None,
    };
    let cred_path = v.dir.path().join("app.credential");
    let cred = cred_path.to_str().unwrap();

    let out = officer.run(&[
        "identity",
        "create",
        "--name",
        "app",
        "--credential-file",
        cred,
        "--output",
        "json",
    ]);
    assert!(out.status.success());
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let file: Value = serde_json::from_slice(&std::fs::read(&cred_path).unwrap()).unwrap();
    let secret = file["client_secret"].as_str().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(secret),
        "the secret must not reach stdout"
    );
    assert_eq!(created["object_id"], file["object_id"]);
    assert_eq!(created["kind"], "managed");
    assert_eq!(
        std::fs::metadata(&cred_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(officer
        .fails(&[
            "identity",
            "create",
            "--name",
            "app2",
            "--credential-file",
            cred
        ])
        .contains("already exists"));
    assert_eq!(
        officer.json(&["identity", "show", "app"])["client_id"],
        file["client_id"]
    );

    let kv = officer.json(&[
        "keyvault",
        "create",
        "--name",
        "cli-vault",
        "--location",
        "westeurope",
        "--retention-days",
        "7",
        "--purge-protection",
    ]);
    assert_eq!(kv["retention_days"], 7);
    assert_eq!(kv["purge_protection"], true);
    assert!(kv["url"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    assert!(officer
        .fails(&[
            "keyvault",
            "create",
            "--name",
            "x",
            "--location",
            "l",
            "--retention-days",
            "5"
        ])
        .contains("5"));
    let policy = officer.json(&[
        "keyvault",
        "set-policy",
        "--name",
        "cli-vault",
        "--identity",
        "app",
        "--key-permissions",
        "get",
        "wrapKey",
        "unwrapKey",
    ]);
    let app_policy = policy["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identity"] == "app")
        .unwrap()
        .clone();
    assert_eq!(
        app_policy["key_permissions"],
        serde_json::json!(["get", "unwrapKey", "wrapKey"])
    );
    assert!(officer
        .fails(&[
            "keyvault",
            "update",
            "--name",
            "cli-vault",
            "--purge-protection",
            "false"
        ])
        .contains("cannot be turned off"));

    let key = officer.json(&[
        "key",
        "create",
        "--vault",
        "cli-vault",
        "--name",
        "kek",
        "--kty",
        "RSA",
        "--size",
        "2048",
    ]);
    let kid1 = key["key"]["kid"].as_str().unwrap().to_string();
    assert!(officer
        .fails(&[
            "key",
            "create",
            "--vault",
            "cli-vault",
            "--name",
            "small",
            "--size",
            "1024"
        ])
        .contains("1024"));
    let rotated = officer.json(&["key", "rotate", "--vault", "cli-vault", "--name", "kek"]);
    let kid2 = rotated["key"]["kid"].as_str().unwrap().to_string();
    assert_ne!(kid1, kid2);
    let versions = officer.json(&["key", "list", "--vault", "cli-vault", "--name", "kek"]);
    assert_eq!(versions["value"].as_array().unwrap().len(), 2);
    let disabled = officer.json(&["key", "disable", "--vault", "cli-vault", "--name", "kek"]);
    assert_eq!(disabled["attributes"]["enabled"], false);
    let enabled = officer.json(&["key", "enable", "--vault", "cli-vault", "--name", "kek"]);
    assert_eq!(enabled["attributes"]["enabled"], true);
    let policy = officer.json(&[
        "key",
        "set-rotation-policy",
        "--vault",
        "cli-vault",
        "--name",
        "kek",
        "--rotate-after",
        "P90D",
        "--expires-after",
        "P1Y",
    ]);
    assert_eq!(
        policy["lifetimeActions"][0]["trigger"]["timeAfterCreate"],
        "P90D"
    );
    assert_eq!(
        officer.json(&[
            "key",
            "show-rotation-policy",
            "--vault",
            "cli-vault",
            "--name",
            "kek"
        ])["attributes"]["expiryTime"],
        "P1Y"
    );
    let deleted = officer.json(&["key", "delete", "--vault", "cli-vault", "--name", "kek"]);
    assert!(deleted.to_string().contains("deletedkeys/kek"), "{deleted}");
    assert_eq!(
        officer.json(&["key", "list", "--vault", "cli-vault", "--deleted"])["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(officer
        .fails(&["key", "purge", "--vault", "cli-vault", "--name", "kek"])
        .contains("purge"));
    officer.json(&["key", "recover", "--vault", "cli-vault", "--name", "kek"]);
    assert_eq!(
        officer.json(&["key", "show", "--vault", "cli-vault", "--name", "kek"])["key"]["kid"],
        kid2.as_str()
    );

    // The managed identity may read the key but not manage anything.
    let app = Cli {
        vault: &v,
        credentials: Some(cred_path.clone()),
    };
    assert_eq!(
        app.json(&[
            "key",
            "show",
            "--vault",
            kv["url"].as_str().unwrap(),
            "--name",
            "kek"
        ])["key"]["kid"],
        kid2.as_str()
    );
    assert!(app
        .fails(&[
            "key",
            "rotate",
            "--vault",
            kv["url"].as_str().unwrap(),
            "--name",
            "kek"
        ])
        .contains("denied"));
    assert!(app
        .fails(&[
            "keyvault",
            "set-policy",
            "--name",
            "cli-vault",
            "--identity",
            "app",
            "--key-permissions",
            "all"
        ])
        .contains("403"));

    officer.json(&[
        "keyvault",
        "delete-policy",
        "--name",
        "cli-vault",
        "--identity",
        "app",
    ]);
    let rotates = officer.json(&[
        "audit",
        "list",
        "--vault",
        "cli-vault",
        "--operation",
        "KeyRotate",
        "--result",
        "denied",
    ]);
    let callers: Vec<&str> = rotates["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"]["caller_name"].as_str().unwrap_or("-"))
        .collect();
    assert!(callers.contains(&"app"), "{callers:?}");
    assert!(officer.json(&["audit", "verify"])["ok"].as_bool().unwrap());
    assert!(officer
        .fails(&["audit", "list", "--since", "last tuesday"])
        .contains("RFC 3339"));

    // Human output is text, not JSON.
    let human = officer.run(&["keyvault", "show", "--name", "cli-vault"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("cli-vault")
            && text.contains("purge_protection=true")
            && !text.trim_start().starts_with('{'),
        "{text}"
    );
    let verify = officer.run(&["audit", "verify"]);
    assert!(String::from_utf8_lossy(&verify.stdout).contains("audit trail intact"));

    officer.json(&["identity", "delete", "app"]);
    assert!(officer.json(&["identity", "list"])["value"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["name"] != "app"));
}
