//! The Azure SDK for Rust (`azure_security_keyvault_keys`, `azure_identity`) as an
//! unmodified client of `pgcmk vault serve`: every `KeyClient` operation, with its
//! answer checked. Run by `cargo test -p pgcmk-keyprovider --test azure_sdk_rust`,
//! which starts the vault, a user-assigned managed identity with every key permission
//! on two vaults, and passes them here through the environment:
//!
//! - `PGCMK_TEST_VAULT_URL`: a vault with purge protection
//! - `PGCMK_TEST_PLAIN_VAULT_URL`: a vault without it (purge, restore)
//! - `PGCMK_TEST_CA_FILE`: the vault service's CA (the SDK trusts only it)
//! - `PGCMK_TEST_IMPORT_JWK_FILE`: an RSA private JWK to import (0600, test-made)
//! - `AZURE_CLIENT_ID`, `IDENTITY_ENDPOINT`, `IDENTITY_HEADER`: the App Service
//!   managed-identity protocol, as `ManagedIdentityCredential` reads it
//!
//! Each check runs whatever the others did and prints `ok NAME` or `FAILED NAME: why`;
//! the exit code is 1 when any failed.

#![forbid(unsafe_code)]

mod checks;
mod crypto_checks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, DeserializeWith, JsonFormat, Response, Transport};
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use azure_security_keyvault_keys::models::JsonWebKey;
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};

/// What a check found wrong.
pub type Outcome = Result<(), String>;

/// The clients and inputs every check shares.
pub struct Env {
    /// A client of the purge-protected vault.
    pub protected: KeyClient,
    /// A client of the vault without purge protection.
    pub plain: KeyClient,
    /// The private JWK to import.
    pub import_jwk: JsonWebKey,
}

/// Turns any error into a check failure that says what was being done.
pub trait Context<T> {
    /// `self`, or a failure naming `what`.
    fn context(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Awaits an SDK call and reads its answer; a failure names `what`.
pub async fn model<T: DeserializeWith<JsonFormat>>(
    call: impl Future<Output = azure_core::Result<Response<T>>>,
    what: &str,
) -> Result<T, String> {
    call.await.context(what)?.into_model().context(what)
}

/// A failure unless `condition` holds.
pub fn ensure(condition: bool, why: impl FnOnce() -> String) -> Outcome {
    if condition {
        Ok(())
    } else {
        Err(why())
    }
}

/// The HTTP status and the error code the SDK reports for a failed call.
pub fn http_error(e: &azure_core::Error) -> Option<(u16, Option<String>)> {
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => Some((u16::from(*status), error_code.clone())),
        _ => None,
    }
}

/// A failure unless `result` is the error `status` with SDK error code `code`.
pub fn expect_error<T>(
    result: azure_core::Result<T>,
    what: &str,
    status: u16,
    code: &str,
) -> Outcome {
    match result {
        Ok(_) => Err(format!("{what}: succeeded, expected {status} {code}")),
        Err(e) => ensure(
            http_error(&e) == Some((status, Some(code.to_string()))),
            || {
                format!(
                    "{what}: expected {status} {code}, got {:?}: {e}",
                    http_error(&e)
                )
            },
        ),
    }
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!(
            "{name} is not set: run this through `cargo test -p pgcmk-keyprovider --test azure_sdk_rust`"
        )
    })
}

/// Client options whose HTTPS client trusts the vault service's CA and nothing else.
fn client_options(ca_file: &str) -> Result<ClientOptions, String> {
    let pem = std::fs::read(ca_file).context(ca_file)?;
    let ca = reqwest::Certificate::from_pem(&pem).context("the CA file")?;
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .context("building the HTTPS client")?;
    Ok(ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        ..ClientOptions::default()
    })
}

fn setup() -> Result<Env, String> {
    let options = client_options(&var("PGCMK_TEST_CA_FILE")?)?;
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: Some(UserAssignedId::ClientId(var("AZURE_CLIENT_ID")?)),
        client_options: options.clone(),
    }))
    .context("ManagedIdentityCredential")?;
    let client = |url: &str| {
        // The vault is addressed by IP and port, which has no parent domain for the
        // challenge's resource to match: the SDK's documented switch turns that check off.
        let options = KeyClientOptions {
            client_options: options.clone(),
            verify_challenge_resource: Some(false),
            ..KeyClientOptions::default()
        };
        KeyClient::new(url, credential.clone(), Some(options)).context("KeyClient")
    };
    let jwk_file = var("PGCMK_TEST_IMPORT_JWK_FILE")?;
    let jwk_text = std::fs::read_to_string(&jwk_file).context(&jwk_file)?;
    Ok(Env {
        protected: client(&var("PGCMK_TEST_VAULT_URL")?)?,
        plain: client(&var("PGCMK_TEST_PLAIN_VAULT_URL")?)?,
        import_jwk: azure_core::json::from_json(jwk_text).context("the JWK to import")?,
    })
}

type Check = for<'a> fn(&'a Env) -> Pin<Box<dyn Future<Output = Outcome> + 'a>>;

macro_rules! checks {
    ($($module:ident :: $name:ident),* $(,)?) => {
        [$((stringify!($name), (|env| Box::pin($module::$name(env))) as Check)),*]
    };
}

fn main() {
    let env = match setup() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("setup failed: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let all = checks![
        checks::create_get_and_list_in_pages,
        checks::update_properties_disables_a_version,
        checks::rotate_adds_a_version_listed_with_the_others,
        checks::rotation_policy_reads_back_as_set,
        checks::delete_get_deleted_list_deleted_and_recover,
        checks::purge_is_refused_under_purge_protection_as_forbidden,
        checks::purge_removes_a_deleted_key,
        checks::backup_restores_into_another_vault,
        checks::import_keeps_the_private_key_usable,
        checks::attestation_and_release_are_refused,
        crypto_checks::wrap_and_unwrap_round_trip,
        crypto_checks::encrypt_and_decrypt_round_trip,
        crypto_checks::sign_verifies_in_the_vault_and_locally,
        crypto_checks::random_bytes_come_in_the_count_asked,
    ];
    let mut failed = 0;
    for (name, check) in all {
        match runtime.block_on(check(&env)) {
            Ok(()) => println!("ok {name}"),
            Err(why) => {
                failed += 1;
                println!("FAILED {name}: {why}");
            }
        }
    }
    println!("{} checks, {failed} failed", all.len());
    std::process::exit(i32::from(failed > 0));
}
