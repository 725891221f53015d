//! What the console's buttons do: each one checks the session and its
//! anti-forgery token, calls the [`Platform`](crate::platform::Platform) function
//! the REST API calls, leaves a notice saying how it went, and sends the browser
//! back to a page (303), so a reload never repeats the action.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use pgcmk_console::{path_segment, see_other, Visit};

use super::{blocking, pages, Console, Dba, Shared, BASE};
use crate::model::SecretString;
use crate::platform::{CreateServer, KeyChoice};
use crate::Error;

/// The create form.
#[derive(Deserialize)]
pub(super) struct CreateForm {
    #[serde(default)]
    csrf: String,
    name: String,
    location: String,
    encryption: String,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    identity_secret: String,
    #[serde(default)]
    key: String,
}

impl CreateForm {
    /// The API's create request: the customer-managed fields only when chosen.
    fn request(self) -> CreateServer {
        let given = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let protection = match self.encryption.as_str() {
            "customer-managed" => KeyChoice {
                encryption: Some(self.encryption),
                identity: given(self.identity),
                identity_secret: given(self.identity_secret).map(SecretString::new),
                key: given(self.key),
            },
            _ => KeyChoice {
                encryption: Some(self.encryption),
                ..KeyChoice::default()
            },
        };
        CreateServer {
            name: self.name.trim().to_string(),
            location: self.location.trim().to_string(),
            protection,
            backup_settings: Default::default(),
            // A geo-redundant copy is set up from the command line (`--geo-backup-key`).
            geo_backup: None,
            high_availability: false,
            // Listen addresses too (`--listen-addresses`); the console's servers listen on loopback.
            listen_addresses: Vec::new(),
            host: None,
            hosts: Vec::new(),
        }
    }
}

/// `POST /console/servers`: creates a server and waits for it, like `POST /servers`.
pub(super) async fn create(
    State(c): Shared,
    headers: HeaderMap,
    Form(form): Form<CreateForm>,
) -> Response {
    let visit = match c.gate.post(&headers, &form.csrf) {
        Ok(visit) => visit,
        Err(refused) => return c.gate.refusal(refused),
    };
    let request = form.request();
    match blocking(&c.platform, move |p| p.create(&request)).await {
        Ok(created) => pages::created(&visit, &created),
        Err(e) => back(&c, &visit, &format!("{BASE}/servers/new"), "create", Err(e)),
    }
}

/// An action's form: its token, and for a delete the name typed again.
#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /console/servers/{name}/{stop|start|revalidate|delete}`.
pub(super) async fn act(
    State(c): Shared,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let visit = match c.gate.post(&headers, &form.csrf) {
        Ok(visit) => visit,
        Err(refused) => return c.gate.refusal(refused),
    };
    let page = format!("{BASE}/servers/{}", path_segment(&name));
    let target = name.clone();
    let result = match action.as_str() {
        "stop" => blocking(&c.platform, move |p| p.stop(&target).map(drop)).await,
        "start" => blocking(&c.platform, move |p| p.start(&target).map(drop)).await,
        "revalidate" => blocking(&c.platform, move |p| p.revalidate(&target).map(drop)).await,
        "delete" if form.confirm.trim() != name => Err(Error::BadRequest(format!(
            "the name typed does not match: type '{name}' to delete it"
        ))),
        "delete" => {
            let result = blocking(&c.platform, move |p| p.delete(&target)).await;
            if result.is_ok() {
                c.gate.notify(&visit, false, format!("Deleted {name}."));
                return see_other(BASE);
            }
            result
        }
        other => Err(Error::BadRequest(format!(
            "'{other}' is not an action of the console: stop, start, revalidate or delete"
        ))),
    };
    back(&c, &visit, &page, &action, result)
}

/// Leaves the outcome of `action` as a notice and sends the browser to `page`.
fn back(
    c: &Console,
    visit: &Visit<Dba>,
    page: &str,
    action: &str,
    result: Result<(), Error>,
) -> Response {
    match result {
        Ok(()) => c.gate.notify(visit, false, format!("Done: {action}.")),
        Err(e) => c
            .gate
            .notify(visit, true, format!("Could not {action}: {e}")),
    }
    see_other(page)
}
