//! Real client: the unmodified Azure SDK for Rust (`azure_security_keyvault_keys`,
//! `azure_identity`; the program in `tests/rust-sdk`, a crate outside the workspace so
//! that the product's build does not carry the SDK) against a real `pgcmk vault serve`,
//! through a user-assigned managed identity: every `KeyClient` operation.

mod support;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgcmk_crypto::rsa::{RsaKeySize, RsaPrivateKey};
use pgcmk_testkit::binary::workspace_root;
use support::{pgcmk_binary, run_sdk_client, VaultService};

/// Building the SDK program the first time (about 2 CPU-minutes) and running it must
/// end within these.
const BUILD_DEADLINE: Duration = Duration::from_secs(900);
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// The target directory this test was built into (`TARGET/debug/deps/THIS`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.ancestors()
        .nth(3)
        .expect("the test runs from TARGET/PROFILE/deps")
        .to_path_buf()
}

/// Builds the SDK program (a no-op when it is current) into `TARGET/rust-sdk`, a
/// target directory of its own (own lock, Cargo's default dev profile: see its
/// Cargo.toml) inside this test's, so `cargo clean` removes it too; its path.
fn build_sdk_program(root: &Path) -> PathBuf {
    let target = target_dir().join("rust-sdk");
    let manifest = root.join("tests/rust-sdk/Cargo.toml");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.args(["build", "--locked", "--quiet", "--manifest-path"]);
    cargo.arg(&manifest).arg("--target-dir").arg(&target);
    let log = std::env::temp_dir().join(format!("pgcmk-rust-sdk-build-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("build log");
    cargo
        .stdout(file.try_clone().expect("build log"))
        .stderr(file);
    let mut child = cargo.spawn().expect("run cargo");
    let status = pgcmk_testkit::process::wait_exit(&mut child, BUILD_DEADLINE);
    if status.is_none() {
        pgcmk_testkit::process::kill_quietly(&mut child);
    }
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        status.is_some_and(|s| s.success()),
        "building {} failed ({status:?}; crates.io is needed once, scripts/setup fetches them):\n{output}",
        manifest.display()
    );
    target.join("debug/pgcmk-azure-sdk-rust-check")
}

/// A fresh RSA key's private JWK in a 0600 file, for the import check.
fn import_jwk_file(vault: &VaultService) -> PathBuf {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let key = RsaPrivateKey::generate(RsaKeySize::Bits2048).expect("an RSA key");
    let c = pgcmk_testkit::rsa_jwk::components(&key);
    let jwk = serde_json::json!({
        "kty": "RSA", "key_ops": ["sign", "verify"],
        "n": b64(&c.n), "e": b64(&c.e), "d": b64(c.d.expose_secret()),
        "p": b64(c.p.expose_secret()), "q": b64(c.q.expose_secret()),
        "dp": b64(c.dp.expose_secret()), "dq": b64(c.dq.expose_secret()),
        "qi": b64(c.qi.expose_secret()),
    });
    let path = vault.scratch("import.jwk");
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .expect("the JWK file");
    serde_json::to_writer(file, &jwk).expect("write the JWK");
    path
}

#[test]
fn unmodified_azure_sdk_for_rust_runs_every_key_client_operation() {
    let root = workspace_root();
    let program = build_sdk_program(root);
    let vault = VaultService::start(pgcmk_binary(false));
    let identity = vault.create_identity("rust-workload");
    let protected = vault.create_vault("rustsdk", true);
    let plain = vault.create_vault("rustplain", false);
    for name in ["rustsdk", "rustplain"] {
        vault.set_policy(name, "rust-workload", &["all"]);
    }

    let mut client = Command::new(&program);
    client
        .env("PGCMK_TEST_VAULT_URL", &protected)
        .env("PGCMK_TEST_PLAIN_VAULT_URL", &plain)
        .env("PGCMK_TEST_CA_FILE", &vault.info.ca_file)
        .env("PGCMK_TEST_IMPORT_JWK_FILE", import_jwk_file(&vault))
        .env("RUST_LOG", "off");
    let run = run_sdk_client(&vault, &identity, &mut client, RUN_DEADLINE);
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        run.succeeded(),
        "the Azure SDK for Rust failed ({:?}):\n{stdout}\n{stderr}\nvault log:\n{}",
        run.status,
        vault.log()
    );
    assert!(
        stdout.contains("14 checks, 0 failed"),
        "expected all fourteen checks to run:\n{stdout}"
    );
}
