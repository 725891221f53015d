//! Running `pgcmk` commands the way a person would, with `--output json`, and the
//! security officer's vault commands (identities, vaults, access policies).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs `command` (a `pgcmk ... --output json`); the JSON it printed (`null` for
/// nothing), or its status and output when it failed. `what` names it in messages.
pub fn run_json(command: &mut Command, what: &str) -> Result<Value, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run pgcmk {what}: {e}"));
    if !out.status.success() {
        // With --output json the error is `{"error": {"code", "message", "exit_code"}}`
        // on stderr; tests read its message as the text `error: MESSAGE`.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = serde_json::from_str::<Value>(&stderr)
            .ok()
            .and_then(|v| {
                v["error"]["message"]
                    .as_str()
                    .map(|m| format!("error: {m}"))
            })
            .unwrap_or_else(|| stderr.into_owned());
        return Err(format!(
            "pgcmk {what} failed ({}): {}{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("pgcmk {what} printed non-JSON ({e}): {text}"))
    })
}

/// The security officer at a terminal: `pgcmk` vault commands against the service
/// whose `service.json` is in `service_dir`, as its administrator by default.
#[derive(Clone, Debug)]
pub struct SecurityOfficer {
    bin: PathBuf,
    service_dir: PathBuf,
}

impl SecurityOfficer {
    pub fn new(bin: &Path, service_dir: &Path) -> Self {
        Self {
            bin: bin.to_path_buf(),
            service_dir: service_dir.to_path_buf(),
        }
    }

    /// Runs `pgcmk ARGS --output json` as the principal whose credential file is
    /// `credentials` (the administrator when `None`).
    pub fn try_run_as(&self, credentials: Option<&Path>, args: &[&str]) -> Result<Value, String> {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .args(["--output", "json"])
            .env("PGCMK_VAULT_SERVICE_DIR", &self.service_dir)
            .env_remove("PGCMK_CREDENTIALS");
        if let Some(c) = credentials {
            command.env("PGCMK_CREDENTIALS", c);
        }
        run_json(&mut command, &args.join(" "))
    }

    /// Runs a command as the administrator; it must succeed.
    pub fn run(&self, args: &[&str]) -> Value {
        self.try_run_as(None, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `pgcmk identity create` of `kind` (`managed` or `user`), its credential
    /// written to `credential_file`; what the command printed.
    pub fn create_identity(&self, name: &str, kind: &str, credential_file: &Path) -> Value {
        self.run(&[
            "identity",
            "create",
            "--name",
            name,
            "--kind",
            kind,
            "--credential-file",
            credential_file.to_str().expect("a UTF-8 path"),
        ])
    }

    /// `pgcmk keyvault create` with 7 days' retention; the vault's URL.
    pub fn create_vault(&self, name: &str, location: &str, purge_protection: bool) -> String {
        let mut args = vec![
            "keyvault",
            "create",
            "--name",
            name,
            "--location",
            location,
            "--retention-days",
            "7",
        ];
        if purge_protection {
            args.push("--purge-protection");
        }
        let v = self.run(&args);
        v["url"]
            .as_str()
            .unwrap_or_else(|| panic!("no vault url in {v}"))
            .trim_end_matches('/')
            .to_string()
    }

    /// Gives `identity` exactly `permissions` on the keys of `vault`.
    pub fn set_policy(&self, vault: &str, identity: &str, permissions: &[&str]) {
        self.try_set_policy_as(None, vault, identity, permissions)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `pgcmk keyvault set-policy` as the principal of `credentials` (the
    /// administrator when `None`), which may be refused.
    pub fn try_set_policy_as(
        &self,
        credentials: Option<&Path>,
        vault: &str,
        identity: &str,
        permissions: &[&str],
    ) -> Result<Value, String> {
        let mut args = vec![
            "keyvault",
            "set-policy",
            "--name",
            vault,
            "--identity",
            identity,
            "--key-permissions",
        ];
        args.extend_from_slice(permissions);
        self.try_run_as(credentials, &args)
    }
}
