//! Real client: the unmodified Azure SDK for Python (tests/python/test_azure_sdk.py)
//! against a real `pgcmk vault serve`, through a user-assigned managed identity.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgcmk_testkit::binary::workspace_root;
use support::{pgcmk_binary, VaultService, ALL_KEY_PERMISSIONS};

/// The whole Python run must end within this.
const PYTEST_DEADLINE: Duration = Duration::from_secs(240);

/// Azure SDK settings that would make the credential look elsewhere for tokens.
const FOREIGN_AZURE_ENV: [&str; 6] = [
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
];

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
    let vault = VaultService::start(pgcmk_binary(false));

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
        .env("AZURE_CLIENT_ID", &identity.client_id)
        .env("IDENTITY_ENDPOINT", &vault.info.identity_endpoint)
        .env("IDENTITY_HEADER", vault.identity_header(&identity))
        .env("REQUESTS_CA_BUNDLE", &vault.info.ca_file)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in FOREIGN_AZURE_ENV {
        pytest.env_remove(name);
    }
    let mut child = pytest.spawn().expect("start pytest");
    let started = Instant::now();
    while child.try_wait().expect("poll pytest").is_none() {
        if started.elapsed() > PYTEST_DEADLINE {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("collect pytest output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the Azure SDK scenario failed ({}):\n{stdout}\n{stderr}\nvault log:\n{}",
        out.status,
        vault.log()
    );
    assert!(
        stdout.contains("3 passed"),
        "expected all three SDK scenarios to run:\n{stdout}"
    );
}
