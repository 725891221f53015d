//! `--log-format json` on every service: after a demo-like story (a customer-managed
//! server created with backups, written to, backed up, revoked, granted back) every
//! line the vault, the control plane and the server's node agent logged is one JSON
//! object naming its request or its server, and no line holds any secret the story
//! used: the DBA credential, the identities' secrets, the DEK (raw, hex, base64), the
//! PostgreSQL password, the backup repository's passphrase.

mod support;

use std::fs;
use std::time::Duration;

use base64::Engine;
use pgcmk_agent::contract::{KekAccess, VaultEndpoints};
use pgcmk_control::identity_file::read_identity_secret;
use pgcmk_keyprovider::{KeyReference, WrappedDek};
use pgcmk_testkit::wait::wait_for;
use serde_json::Value;
use support::backups::passphrase;
use support::*;

const INTERVAL: u64 = 1;

/// Every secret of the story, by what it is.
fn secrets(stack: &Stack, key: &CustomerKey, server: &Created) -> Vec<(&'static str, String)> {
    let (vault, cp) = (&stack.vault, &stack.cp);
    let customer = read_identity_secret(&key.identity.credential_file).unwrap();
    let platform = read_identity_secret(&cp.platform.credential_file).unwrap();
    let wrapped: WrappedDek = serde_json::from_value(server.server["wrapped_dek"].clone()).unwrap();
    let dek = KekAccess {
        key: KeyReference::parse(server.server["encryption"]["key"].as_str().unwrap()).unwrap(),
        vault: VaultEndpoints {
            identity_endpoint: vault.identity_endpoint.clone(),
            ca_file: Some(vault.ca_file()),
        },
        client_id: key.identity.client_id.clone(),
    }
    .connect(customer.clone())
    .unwrap()
    .unwrap(&wrapped)
    .unwrap();
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        (
            "the DBA credential",
            fs::read_to_string(cp.dba_credential())
                .unwrap()
                .trim()
                .into(),
        ),
        (
            "the customer identity's secret",
            text(customer.expose_secret()),
        ),
        (
            "the platform identity's secret",
            text(platform.expose_secret()),
        ),
        (
            "the vault administrator's secret",
            vault.process.admin_credential().client_secret,
        ),
        ("the DEK (hex)", hex(dek.expose_secret())),
        ("the DEK (base64)", b64.encode(dek.expose_secret())),
        ("the DEK (base64url)", b64url.encode(dek.expose_secret())),
        ("the PostgreSQL password", server.password.clone()),
        ("the backup passphrase", passphrase(server)),
    ]
}

#[test]
fn json_logs_of_a_whole_story_are_json_lines_with_ids_and_no_secret() {
    let json = ["--log-format", "json"];
    let stack = Stack::start_with_vault(INTERVAL, 300, None, &json, &json);
    let (vault, cp) = (&stack.vault, &stack.cp);
    let key = vault.customer_key("story");
    let server = Created::from(&cp.create_with("story", &key, &versionless(&key.kid)));
    wait_for("the first full backup", Duration::from_secs(60), || {
        cp.has_event("story", "backup completed")
    });
    server
        .sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        .unwrap();
    cp.backup_output(&["create", "story", "--type", "incr"]);
    let secrets = secrets(&stack, &key, &server);
    vault.revoke(&key.vault, &key.identity);
    wait_refused(cp, &server, Duration::from_secs(INTERVAL + 10), "revoke");
    vault.grant(&key.vault, &key.identity, &["get", "wrapKey", "unwrapKey"]);
    wait_for("Ready after the grant", Duration::from_secs(60), || {
        cp.state("story").0 == "Ready"
    });

    let agent_log = fs::read_to_string(server.dir.join("agent.log")).unwrap();
    let server_id = server.dir.file_name().unwrap().to_str().unwrap();
    for (what, log, id) in [
        ("the vault's log", vault.process.log(), "request_id"),
        ("the control plane's log", cp.log(), "request_id"),
        ("the agent's log", agent_log, "server"),
    ] {
        let mut with_id = 0;
        for line in log.lines() {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: a line is not JSON ({e}): {line}"));
            assert!(event["level"].is_string(), "{what}: no level: {line}");
            let names = event[id].as_str().or(event["span"][id].as_str());
            if id == "server" {
                assert_eq!(names, Some(server_id), "{what}: not the server: {line}");
            }
            with_id += usize::from(names.is_some());
            for (secret, value) in &secrets {
                assert!(
                    !line.contains(value.as_str()),
                    "{what} holds {secret}: {line}"
                );
            }
        }
        assert!(with_id > 0, "{what}: no line has a {id}:\n{log}");
    }
}
