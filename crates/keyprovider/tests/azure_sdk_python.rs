//! Real client: the unmodified Azure SDK for Python (tests/python/test_azure_sdk.py)
//! against a real `pgcmk vault serve`, through a user-assigned managed identity. The
//! vault has a SoftHSM2 token (made here) for the scenario's RSA-HSM key.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgcmk_testkit::binary::workspace_root;
use pgcmk_testkit::softhsm::{SoftHsm, MODULE};
use support::{pgcmk_binary, run_sdk_client, VaultService, ALL_KEY_PERMISSIONS};

/// The whole Python run must end within this.
const PYTEST_DEADLINE: Duration = Duration::from_secs(240);

fn venv_python(root: &Path) -> std::path::PathBuf {
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it creates .venv with tests/python/requirements.txt)",
        python.display()
    );
    let probe = Command::new(&python)
        .args(["-c", "import pytest, azure.identity, azure.keyvault.keys"])
        .output()
        .expect("run the venv's python");
    assert!(
        probe.status.success(),
        "the venv lacks pytest or the Azure SDK ({}): run scripts/setup",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    python
}

#[test]
fn unmodified_azure_sdk_drives_the_vault_through_a_managed_identity() {
    let root = workspace_root();
    let python = venv_python(root);
    // The token exists before the vault loads the module.
    let hsm = SoftHsm::start(&["sdk-hsm"], "sdk-user-pin");
    let pin_file = hsm.pin_file("vault.pin", "sdk-user-pin");
    let vault = VaultService::start_with(
        pgcmk_binary(false),
        &[
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token",
            "sdk-hsm",
            "--pkcs11-pin-file",
            pin_file.to_str().unwrap(),
        ],
    );

    let identity = vault.create_identity("sdk-workload");
    let url = vault.create_vault("sdkvault", true);
    // Purge included, so that the purge refusal comes from purge protection and
    // not from a missing permission.
    vault.set_policy("sdkvault", "sdk-workload", &ALL_KEY_PERMISSIONS);

    let mut pytest = Command::new(&python);
    pytest
        .current_dir(root)
        .args([
            "-m",
            "pytest",
            "tests/python",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
        ])
        .env("PGCMK_TEST_VAULT_URL", &url)
        .env("REQUESTS_CA_BUNDLE", &vault.info.ca_file)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let run = run_sdk_client(&vault, &identity, &mut pytest, PYTEST_DEADLINE);
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        run.succeeded(),
        "the Azure SDK scenario failed ({:?}):\n{stdout}\n{stderr}\nvault log:\n{}",
        run.status,
        vault.log()
    );
    assert!(
        stdout.contains("4 passed"),
        "expected all four SDK scenarios to run:\n{stdout}"
    );
    // The vault stops before the token store goes.
    drop(vault);
    drop(hsm);
}
