//! The story `pgcmk demo` tells, step by step.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgcmk_control::serve_info::ServeInfo;
use serde_json::Value;

use super::{
    explain, grant, psql, read_json, say, scan, wait, Demo, Error, IoContext, INTERVAL_SECS, MARKER,
};

pub(super) fn story(demo: &mut Demo) -> Result<(), Error> {
    let d = &demo.dir;
    say("Starting a key vault service (Azure Key Vault compatible, HTTPS on loopback)");
    let vault_dir = demo.vault_dir.to_string_lossy().into_owned();
    let _vault = demo.spawn(
        &[
            "vault",
            "serve",
            "--data-dir",
            &vault_dir,
            "--listen",
            "127.0.0.1:0",
        ],
        "vault.log",
    )?;
    wait("the vault", Duration::from_secs(60), || {
        read_json(&demo.vault_dir.join("service.json")).is_some()
    })?;

    say("Platform setup: the platform's own key for service-managed encryption");
    let cred = |name: &str| {
        d.join(format!("{name}.credential"))
            .to_string_lossy()
            .into_owned()
    };
    let platform = demo.pgcmk(&[
        "identity",
        "create",
        "--name",
        "platform-mi",
        "--kind",
        "managed",
        "--credential-file",
        &cred("platform-mi"),
    ])?;
    demo.pgcmk(&[
        "keyvault",
        "create",
        "--name",
        "platform-kv",
        "--location",
        "local",
        "--retention-days",
        "7",
        "--purge-protection",
    ])?;
    demo.pgcmk(&[
        "keyvault",
        "set-policy",
        "--name",
        "platform-kv",
        "--identity",
        "platform-mi",
        "--key-permissions",
        "get",
        "wrapKey",
        "unwrapKey",
    ])?;
    let pkey = demo.pgcmk(&[
        "key",
        "create",
        "--vault",
        "platform-kv",
        "--name",
        "platform-key",
        "--size",
        "3072",
    ])?;
    let pkid = kid(&pkey)?;

    say(&format!(
        "Starting the control plane (key check every {INTERVAL_SECS} s)"
    ));
    let state_dir = d.join("control");
    let serve_args = [
        "serve",
        "--state-dir",
        &state_dir.to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
        "--vault-service-dir",
        &vault_dir,
        "--platform-key",
        versionless(&pkid),
        "--platform-identity",
        platform["client_id"].as_str().unwrap_or_default(),
        "--platform-identity-credential-file",
        &cred("platform-mi"),
        "--key-check-interval-secs",
        &INTERVAL_SECS.to_string(),
    ]
    .map(str::to_string);
    let serve_args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
    let mut control = demo.spawn(&serve_args, "control.log")?;
    wait("the control plane", Duration::from_secs(60), || {
        ServeInfo::read(&state_dir).is_some()
    })?;
    demo.endpoint = ServeInfo::read(&state_dir)
        .map(|info| info.url)
        .unwrap_or_default();
    fs::remove_file(cred("platform-mi")).ctx(|| "removing the platform credential file")?;
    explain(
        "the platform identity's secret is now sealed in the control plane's state; its \
         credential file is deleted",
    );
    explain(&format!(
        "the DBA's API credential: {} (every `pgcmk server` command sends it)",
        demo.dba_credential().display()
    ));
    explain(&format!(
        "the API is HTTPS at {} with the control plane's own CA {} (every `pgcmk server` \
         command trusts it and nothing else)",
        demo.endpoint,
        demo.ca_cert().display()
    ));
    print_consoles(demo);

    let result = customer_story(demo, &state_dir);
    demo.step("Deleting the server and stopping the services");
    // Also after a failure, so that no agent, mount or PostgreSQL is left running.
    let _ = demo.pgcmk(&["server", "delete", "orders", "--yes"]);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(control.0.id().to_string())
        .status();
    let _ = control.0.wait();
    result
}

/// The four steps and what follows, once the vault and control plane run.
fn customer_story(demo: &Demo, state_dir: &Path) -> Result<(), Error> {
    let d = &demo.dir;
    let cred = |name: &str| {
        d.join(format!("{name}.credential"))
            .to_string_lossy()
            .into_owned()
    };
    demo.step("Step 1 (security officer): a user-assigned managed identity for the database");
    demo.pgcmk(&[
        "identity",
        "create",
        "--name",
        "orders-mi",
        "--kind",
        "managed",
        "--credential-file",
        &cred("orders-mi"),
    ])?;
    demo.step(
        "Step 2: a key vault with soft delete and purge protection; grant get, wrapKey, unwrapKey",
    );
    demo.pgcmk(&[
        "keyvault",
        "create",
        "--name",
        "orders-kv",
        "--location",
        "westeurope",
        "--retention-days",
        "7",
        "--purge-protection",
    ])?;
    grant(demo)?;
    demo.step("Step 3: an RSA 3072 key");
    let key = demo.pgcmk(&[
        "key",
        "create",
        "--vault",
        "orders-kv",
        "--name",
        "orders-key",
        "--size",
        "3072",
    ])?;
    let key_url = versionless(&kid(&key)?).to_string();
    explain(&format!(
        "versionless key URL {key_url}: the server will follow rotations"
    ));

    demo.step("Step 4 (DBA): a PostgreSQL server encrypted with that key");
    let t = Instant::now();
    let created = demo.pgcmk(&[
        "server",
        "create",
        "--name",
        "orders",
        "--location",
        "westeurope",
        "--encryption",
        "customer-managed",
        "--identity",
        "orders-mi",
        "--identity-credential-file",
        &cred("orders-mi"),
        "--key",
        &key_url,
    ])?;
    let port = created["server"]["port"].as_u64().unwrap_or_default();
    let password = created["password"].as_str().unwrap_or_default().to_string();
    let server_dir = PathBuf::from(created["server"]["dir"].as_str().unwrap_or_default());
    explain(&format!(
        "Ready in {:.1} s on 127.0.0.1:{port}; the key was proved with a real wrap and unwrap",
        t.elapsed().as_secs_f64()
    ));

    demo.step("Only the DBA drives servers: a request with another credential");
    let wrong = demo.dir.join("wrong.credential");
    fs::write(&wrong, "0".repeat(64)).ctx(|| "writing a wrong credential")?;
    let refused = Command::new(&demo.program)
        .args(["server", "delete", "orders", "--yes", "--credential-file"])
        .arg(&wrong)
        .env("PGCMK_CONTROL_DIR", demo.control_dir())
        .stdin(Stdio::null())
        .output()
        .ctx(|| "running pgcmk")?;
    println!("   $ pgcmk server delete orders --yes --credential-file wrong.credential");
    explain(&format!(
        "refused: {}",
        String::from_utf8_lossy(&refused.stderr).trim()
    ));
    if refused.status.success() {
        return Err(Error::Step(
            "the control plane accepted a request without the DBA credential".into(),
        ));
    }

    demo.step("Storing rows through SQL");
    let sql = format!("CREATE TABLE orders(id int, note text); INSERT INTO orders SELECT g, '{MARKER} #' || g FROM generate_series(1, 1000) g; CHECKPOINT");
    psql(port, &password, &sql).map_err(Error::Step)?;
    explain(&format!(
        "SELECT note FROM orders WHERE id = 42  ->  {}",
        psql(port, &password, "SELECT note FROM orders WHERE id = 42").map_err(Error::Step)?
    ));

    demo.step("What is on the disk");
    let (files, hits) = scan(&server_dir.join("cipher"), MARKER.as_bytes());
    explain(&format!(
        "{files} files under {}: {hits} contain '{MARKER}'",
        server_dir.join("cipher").display()
    ));
    let (_, state_hits) = scan(&state_dir.join("state.redb"), MARKER.as_bytes());
    explain(&format!(
        "the control plane's state store holds only the wrapped DEK ({state_hits} hits)"
    ));

    demo.step("The customer revokes the identity's access");
    demo.pgcmk(&[
        "keyvault",
        "delete-policy",
        "--name",
        "orders-kv",
        "--identity",
        "orders-mi",
    ])?;
    let took = wait(
        "connections refused",
        Duration::from_secs(INTERVAL_SECS + 30),
        || psql(port, &password, "SELECT 1").is_err(),
    )?;
    wait("Inaccessible", Duration::from_secs(10), || {
        demo.state("orders").is_ok_and(|s| s.0 == "Inaccessible")
    })?;
    let (state, reason) = demo.state("orders")?;
    explain(&format!(
        "{state} after {:.1} s: {reason}",
        took.as_secs_f64()
    ));
    explain("PostgreSQL stopped, the encrypted volume unmounted, the DEK erased from memory");

    demo.step("The customer gives access back");
    grant(demo)?;
    let took = wait("Ready", Duration::from_secs(INTERVAL_SECS + 60), || {
        psql(port, &password, "SELECT 1").is_ok()
    })?;
    explain(&format!(
        "Ready again after {:.1} s, with no operator: {} rows",
        took.as_secs_f64(),
        psql(port, &password, "SELECT count(*) FROM orders").map_err(Error::Step)?
    ));

    demo.step("The customer rotates the key");
    let rotated = kid(&demo.pgcmk(&[
        "key",
        "rotate",
        "--vault",
        "orders-kv",
        "--name",
        "orders-key",
    ])?)?;
    let took = wait("re-wrap", Duration::from_secs(INTERVAL_SECS + 30), || {
        read_json(&server_dir.join("status.json"))
            .is_some_and(|s| s["wrapped_by"] == rotated.as_str())
    })?;
    explain(&format!(
        "the DEK was re-wrapped with {rotated} after {:.1} s; no data was rewritten, no downtime",
        took.as_secs_f64()
    ));

    demo.step("The server's audit trail");
    let shown = demo.pgcmk(&["server", "show", "orders"])?;
    for e in shown["events"].as_array().into_iter().flatten() {
        explain(&format!(
            "{} {:<12} {} ({})",
            e["at"].as_str().unwrap_or(""),
            e["who"].as_str().unwrap_or(""),
            e["what"].as_str().unwrap_or(""),
            e["why"].as_str().unwrap_or("")
        ));
    }

    Ok(())
}

/// Where the two web consoles are and how to sign in to each (docs/operations.md,
/// "Web consoles").
fn print_consoles(demo: &Demo) {
    let Ok(vault) = pgcmk_vault::client::ServiceDir::open(&demo.vault_dir) else {
        return;
    };
    say("Follow the story in the web consoles (they reload by themselves)");
    explain(&format!(
        "DBA console: {}/console (sign in with the contents of {})",
        demo.endpoint,
        demo.dba_credential().display()
    ));
    explain(&format!(
        "security officer console: {}/console (sign in with client_id and client_secret \
         from {})",
        vault.info.url,
        vault.admin_credential().display()
    ));
    explain(&format!(
        "each is signed by its service's own CA: trust {} and {} in the browser",
        demo.ca_cert().display(),
        vault.info.ca_file.display()
    ));
    if !demo.pause {
        explain("`pgcmk demo --pause` waits for Enter before each step, to look in between");
    }
}

fn kid(v: &Value) -> Result<String, Error> {
    v["key"]["kid"]
        .as_str()
        .or_else(|| v["kid"].as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Step(format!("no key id in {v}")))
}

fn versionless(kid: &str) -> &str {
    kid.rsplit_once('/').map_or(kid, |(base, _)| base)
}
