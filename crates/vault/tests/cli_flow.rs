//! The security officer's commands of `pgcmk`, as a script runs them (`--output json`)
//! and as a person reads them (human output): one behaviour per test, each on a fresh
//! service set up by the shared steps below.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
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

/// A fresh service; the steps below add the identity `app`, the purge-protected vault
/// `cli-vault` granting `app` get/wrapKey/unwrapKey, and the key `kek`.
struct Flow {
    v: Vault,
    cred_path: PathBuf,
}

impl Flow {
    fn start() -> Self {
        let v = Vault::start();
        let cred_path = v.dir.path().join("app.credential");
        Self { v, cred_path }
    }

    fn officer(&self) -> Cli<'_> {
        Cli {
            vault: &self.v,
            credentials: None,
        }
    }

    /// The managed identity `app`, through its credential file.
    fn app(&self) -> Cli<'_> {
        Cli {
            vault: &self.v,
            credentials: Some(self.cred_path.clone()),
        }
    }

    fn cred(&self) -> &str {
        self.cred_path.to_str().unwrap()
    }

    /// `identity create --name app`; the raw output.
    fn create_identity(&self) -> Output {
        let out = self.officer().run(&[
            "identity",
            "create",
            "--name",
            "app",
            "--credential-file",
            self.cred(),
            "--output",
            "json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `app` and `cli-vault` with its policy; the vault's JSON from `create` and from
    /// `set-policy`.
    fn create_vault(&self) -> (Value, Value) {
        self.create_identity();
        let kv = self.officer().json(&[
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
        let policy = self.officer().json(&[
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
        (kv, policy)
    }

    /// `keyvault delete-policy` for `app` on `cli-vault`.
    fn delete_policy(&self) {
        self.officer().json(&[
            "keyvault",
            "delete-policy",
            "--name",
            "cli-vault",
            "--identity",
            "app",
        ]);
    }

    /// Everything above and the key `kek`; the vault's JSON and the key's kid.
    fn create_key(&self) -> (Value, String) {
        let (kv, _) = self.create_vault();
        let key = self.officer().json(&[
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
        let kid = key["key"]["kid"].as_str().unwrap().to_string();
        // The versionless URL, for `server create --key`, beside the versioned id.
        assert_eq!(
            key["key_url"].as_str(),
            kid.rsplit_once('/').map(|(url, _)| url),
            "{key}"
        );
        (kv, kid)
    }
}

#[test]
fn identity_create_writes_a_0600_credential_and_keeps_the_secret_off_stdout() {
    let f = Flow::start();
    let out = f.create_identity();
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let file: Value = serde_json::from_slice(&std::fs::read(&f.cred_path).unwrap()).unwrap();
    let secret = file["client_secret"].as_str().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(secret),
        "the secret must not reach stdout"
    );
    assert_eq!(created["object_id"], file["object_id"]);
    assert_eq!(created["kind"], "managed");
    assert_eq!(
        std::fs::metadata(&f.cred_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(f
        .officer()
        .fails(&[
            "identity",
            "create",
            "--name",
            "app2",
            "--credential-file",
            f.cred()
        ])
        .contains("already exists"));
    assert_eq!(
        f.officer().json(&["identity", "show", "app"])["client_id"],
        file["client_id"]
    );
}

#[test]
fn keyvault_create_checks_retention_and_set_policy_grants_exactly_the_permissions() {
    let f = Flow::start();
    let (kv, policy) = f.create_vault();
    assert_eq!(kv["retention_days"], 7);
    assert_eq!(kv["purge_protection"], true);
    assert!(kv["url"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    assert!(f
        .officer()
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
}

#[test]
fn purge_protection_cannot_be_turned_off() {
    let f = Flow::start();
    f.create_vault();
    assert!(f
        .officer()
        .fails(&[
            "keyvault",
            "update",
            "--name",
            "cli-vault",
            "--purge-protection",
            "false"
        ])
        .contains("cannot be turned off"));
}

#[test]
fn keys_are_created_rotated_listed_disabled_and_enabled() {
    let f = Flow::start();
    let (_, kid1) = f.create_key();
    let officer = f.officer();
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
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let disabled = officer.json(&["key", "disable", "--vault", "cli-vault", "--name", "kek"]);
    assert_eq!(disabled["attributes"]["enabled"], false);
    let enabled = officer.json(&["key", "enable", "--vault", "cli-vault", "--name", "kek"]);
    assert_eq!(enabled["attributes"]["enabled"], true);
}

#[test]
fn rotation_policies_are_set_and_shown() {
    let f = Flow::start();
    f.create_key();
    let officer = f.officer();
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
}

#[test]
fn deleted_keys_are_listed_protected_from_purge_and_recovered() {
    let f = Flow::start();
    let (_, kid) = f.create_key();
    let officer = f.officer();
    let deleted = officer.json(&["key", "delete", "--vault", "cli-vault", "--name", "kek"]);
    assert!(deleted.to_string().contains("deletedkeys/kek"), "{deleted}");
    assert_eq!(
        officer
            .json(&["key", "list", "--vault", "cli-vault", "--deleted"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(officer
        .fails(&[
            "key",
            "purge",
            "--vault",
            "cli-vault",
            "--name",
            "kek",
            "--yes"
        ])
        .contains("purge"));
    officer.json(&["key", "recover", "--vault", "cli-vault", "--name", "kek"]);
    assert_eq!(
        officer.json(&["key", "show", "--vault", "cli-vault", "--name", "kek"])["key"]["kid"],
        kid.as_str()
    );
}

#[test]
fn the_managed_identity_reads_the_key_but_manages_nothing_and_is_audited() {
    let f = Flow::start();
    let (kv, kid) = f.create_key();
    let url = kv["url"].as_str().unwrap();
    let app = f.app();
    assert_eq!(
        app.json(&["key", "show", "--vault", url, "--name", "kek"])["key"]["kid"],
        kid.as_str()
    );
    assert!(app
        .fails(&["key", "rotate", "--vault", url, "--name", "kek"])
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
    let officer = f.officer();
    f.delete_policy();
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
    let callers: Vec<&str> = rotates
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"]["caller_name"].as_str().unwrap_or("-"))
        .collect();
    assert!(callers.contains(&"app"), "{callers:?}");
}

#[test]
fn audit_verify_passes_and_a_bad_time_filter_is_explained() {
    let f = Flow::start();
    f.create_key();
    let officer = f.officer();
    assert!(officer.json(&["audit", "verify"])["ok"].as_bool().unwrap());
    assert!(officer
        .fails(&["audit", "list", "--since", "last tuesday"])
        .contains("RFC 3339"));
}

#[test]
fn human_output_is_text_not_json() {
    let f = Flow::start();
    f.create_vault();
    let officer = f.officer();
    let human = officer.run(&["keyvault", "show", "--name", "cli-vault"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("cli-vault")
            && text.contains("purge_protection=true")
            && !text.trim_start().starts_with('{'),
        "{text}"
    );
    let created = officer.run(&[
        "key",
        "create",
        "--vault",
        "cli-vault",
        "--name",
        "shown",
        "--size",
        "2048",
    ]);
    let text = String::from_utf8_lossy(&created.stdout);
    assert!(
        text.contains("key URL: https://") && text.contains("/keys/shown (for"),
        "{text}"
    );
    let verify = officer.run(&["audit", "verify"]);
    assert!(String::from_utf8_lossy(&verify.stdout).contains("audit trail intact"));
}

#[test]
fn a_deleted_identity_leaves_the_list() {
    let f = Flow::start();
    f.create_vault();
    let officer = f.officer();
    f.delete_policy();
    officer.json(&["identity", "delete", "app", "--yes"]);
    assert!(officer
        .json(&["identity", "list"])
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["name"] != "app"));
}

#[test]
fn audit_list_leaves_out_anonymous_challenges_unless_asked() {
    let f = Flow::start();
    let (kv, _) = f.create_vault();
    let keys = format!("{}/keys?api-version=7.5", kv["url"].as_str().unwrap());
    // An SDK's first request carries no Authorization header and is answered with a
    // challenge; a refused token, or any other credential, is a real denial.
    let challenge = f.v.raw(reqwest::Method::GET, &keys, None, None);
    let refused = f.v.raw(reqwest::Method::GET, &keys, Some("forged"), None);
    let basic =
        f.v.admin
            .http()
            .get(&keys)
            .header("authorization", "Basic YTpi")
            .send()
            .unwrap();
    assert_eq!(
        (challenge.status, refused.status, basic.status().as_u16()),
        (401, 401, 401)
    );

    let officer = f.officer();
    let denied_lists = [
        "audit",
        "list",
        "--vault",
        "cli-vault",
        "--operation",
        "KeyList",
        "--result",
        "denied",
    ];
    let listed = |extra: &[&str]| -> Vec<Value> {
        let args: Vec<&str> = denied_lists.iter().chain(extra).copied().collect();
        officer.json(&args).as_array().unwrap().clone()
    };
    let real = listed(&[]);
    assert_eq!(
        real.len(),
        2,
        "the forged token and the Basic credential: {real:?}"
    );
    assert!(
        real.iter()
            .all(|e| e["entry"]["status"] == 401 && e["entry"].get("challenge").is_none()),
        "{real:?}"
    );

    let all = listed(&["--include-challenges"]);
    assert_eq!(all.len(), 3, "{all:?}");
    let challenges: Vec<&Value> = all
        .iter()
        .filter(|e| e["entry"]["challenge"] == true)
        .collect();
    assert_eq!(challenges.len(), 1, "{all:?}");
    assert_eq!(challenges[0]["entry"]["caller"], "anonymous");
    assert_eq!(challenges[0]["entry"]["result"], "denied");

    let text = officer.run(&[&denied_lists[..], &["--include-challenges"]].concat());
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(
        text.matches("denied (anonymous challenge)").count(),
        1,
        "{text}"
    );
}
