//! What the console's buttons do, each one request to the service's own API as
//! the signed-in officer ([`super::api`]): create, rotate, disable and enable a key
//! (or one version), set and delete an access policy. Each leaves a notice saying
//! how it went and sends the browser back (303), so a reload never repeats it.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Form;
use pgcmk_akv_model::{AttributeChanges, KeyCreateParameters, KeyUpdateParameters};
use serde::{Deserialize, Serialize};

use pgcmk_console::{path_segment, see_other, TokenForm};

use super::api::{Refusal, Target};
use super::{Client, Console, Officer, Shared, BASE};

/// A key action's form: its token and, to act on one version, that version.
#[derive(Deserialize)]
pub(super) struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: String,
}

/// The create-key form.
#[derive(Deserialize)]
pub(super) struct CreateKeyForm {
    #[serde(default)]
    csrf: String,
    name: String,
    size: u64,
}

/// `PUT /admin/vaults/{vault}/policies/{identity}`'s body.
#[derive(Serialize)]
struct PolicyGrant {
    key_permissions: Vec<String>,
}

/// Leaves the outcome as a notice and sends the browser back to the vault.
fn back(
    c: &Console,
    officer: &Officer,
    vault: &str,
    done: String,
    result: Result<Vec<u8>, Refusal>,
) -> Response {
    match result {
        Ok(_) => c.gate.notify(&officer.visit, false, done),
        Err(e) => c
            .gate
            .notify(&officer.visit, true, format!("Refused: {}", e.message)),
    }
    see_other(&format!("{BASE}#vault-{}", path_segment(vault)))
}

/// `POST /console/vaults/{vault}/keys`: `POST /keys/{name}/create` (RSA).
pub(super) async fn create_key(
    State(c): Shared,
    headers: HeaderMap,
    client: Client,
    Path(vault): Path<String>,
    form: Result<Form<CreateKeyForm>, FormRejection>,
) -> Response {
    let (officer, form) = match c.admit(&headers, client, form, |f| &f.csrf) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let name = form.name.trim().to_string();
    let body = KeyCreateParameters {
        kty: "RSA".into(),
        key_size: Some(form.size),
        ..Default::default()
    };
    let path = format!("/keys/{}/create", path_segment(&name));
    let result = c
        .api
        .send(
            &officer.caller,
            Method::POST,
            Target::Vault(&vault),
            &path,
            Some(&body),
        )
        .await;
    back(&c, &officer, &vault, format!("Created key {name}."), result)
}

/// `POST /console/vaults/{vault}/keys/{key}/{rotate|disable|enable}`.
pub(super) async fn key_action(
    State(c): Shared,
    headers: HeaderMap,
    client: Client,
    Path((vault, key, action)): Path<(String, String, String)>,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Response {
    let (officer, form) = match c.admit(&headers, client, form, |f| &f.csrf) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let at = format!("/keys/{}", path_segment(&key));
    let version = form.version.trim();
    let which = match version {
        "" => format!("key {key}"),
        v => format!("version {v} of key {key}"),
    };
    let target = Target::Vault(&vault);
    let (result, done) = match action.as_str() {
        "rotate" => (
            c.api
                .send(&officer.caller, Method::POST, target, &format!("{at}/rotate"), None::<&()>)
                .await,
            format!("Rotated key {key}: servers that follow it adopt the new version at their next check."),
        ),
        "disable" | "enable" => {
            let enabled = action == "enable";
            let body = KeyUpdateParameters {
                attributes: Some(AttributeChanges {
                    enabled: Some(enabled),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let path = format!("{at}/{}", path_segment(version));
            (
                c.api.send(&officer.caller, Method::PATCH, target, &path, Some(&body)).await,
                format!("{}d {which}.", if enabled { "Enable" } else { "Disable" }),
            )
        }
        other => (
            Err(Refusal {
                status: axum::http::StatusCode::NOT_FOUND,
                message: format!("'{other}' is not a key action: rotate, disable or enable"),
            }),
            String::new(),
        ),
    };
    back(&c, &officer, &vault, done, result)
}

/// `POST /console/vaults/{vault}/policies`: grants an identity the checked
/// permissions (the form repeats `key_permissions`, so it is read as pairs).
pub(super) async fn set_policy(
    State(c): Shared,
    headers: HeaderMap,
    client: Client,
    Path(vault): Path<String>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let (officer, pairs) = match c.admit(&headers, client, form, |pairs| field(pairs, "csrf")) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let identity = field(&pairs, "identity").to_string();
    let grant = PolicyGrant {
        key_permissions: pairs
            .iter()
            .filter(|(k, _)| k == "key_permissions")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    let path = format!(
        "/admin/vaults/{}/policies/{}",
        path_segment(&vault),
        path_segment(&identity)
    );
    let done = format!(
        "Granted {identity} {} on vault {vault}.",
        grant.key_permissions.join(", ")
    );
    let result = c
        .api
        .send(
            &officer.caller,
            Method::PUT,
            Target::Manage,
            &path,
            Some(&grant),
        )
        .await;
    back(&c, &officer, &vault, done, result)
}

/// `POST /console/vaults/{vault}/policies/{identity}/delete`: revokes the identity's
/// access to the vault's keys (servers using it go Inaccessible at their next check).
pub(super) async fn delete_policy(
    State(c): Shared,
    headers: HeaderMap,
    client: Client,
    Path((vault, identity)): Path<(String, String)>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let (officer, _) = match c.admit(&headers, client, form, |f| &f.csrf) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let path = format!(
        "/admin/vaults/{}/policies/{}",
        path_segment(&vault),
        path_segment(&identity)
    );
    let result = c
        .api
        .send(
            &officer.caller,
            Method::DELETE,
            Target::Manage,
            &path,
            None::<&()>,
        )
        .await;
    let done = format!(
        "Removed {identity}'s access to vault {vault}: servers using it go Inaccessible at their next key check."
    );
    back(&c, &officer, &vault, done, result)
}

/// The value of form field `name` (empty when absent).
fn field<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}
