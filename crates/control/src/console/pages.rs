//! The console's pages: the servers, one server with its timeline and actions, its
//! backups, the create form and the delete confirmation. Pages that show states
//! reload themselves every few seconds: states change without the DBA.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use pgcmk_console::{action_button, csrf_field, esc, path_segment, Page, Visit};

use super::{blocking, signed_in, timeline, Dba, Shared, BASE, NAME};
use crate::model::{Encryption, ServerRecord, ServerState};
use crate::platform::Created;
use crate::Error;

/// Seconds between reloads of the pages that show states.
const REFRESH_SECS: u32 = 3;

const NAV: &[(&str, &str)] = &[("", "Servers"), ("/servers/new", "Create server")];

fn page<'a>(visit: &'a Visit<Dba>, title: &'a str, refresh: bool) -> Page<'a> {
    Page {
        console: NAME,
        base: BASE,
        title,
        nav: NAV,
        signed_in: Some(signed_in(visit)),
        refresh_secs: refresh.then_some(REFRESH_SECS),
    }
}

/// A page saying what failed, with the status of the error.
pub(super) fn failure(e: Error) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Page::failure(NAME, BASE, status, &e.to_string())
}

/// The state as a coloured badge, with its reason.
fn state_badge(state: &ServerState) -> String {
    let class = match state {
        ServerState::Ready => "ok",
        ServerState::Inaccessible(_) | ServerState::Failed(_) => "bad",
        ServerState::Provisioning | ServerState::Deleting | ServerState::Unknown(_) => "warn",
        ServerState::Stopped => "",
    };
    let mut html = format!(
        "<span class=\"badge {class}\" data-state=\"{0}\">{0}</span>",
        state.name()
    );
    if let Some(reason) = state.reason() {
        let _ = write!(html, "<div class=\"muted\">{}</div>", esc(reason));
    }
    html
}

/// The key a server's DEK is wrapped by, and the version that wraps it now.
fn key_of(server: &ServerRecord) -> (String, String) {
    let key = match &server.encryption {
        Encryption::ServiceManaged => "service-managed (platform key)".to_string(),
        Encryption::CustomerManaged { key, .. } => key.to_string(),
    };
    (key, server.wrapped_dek.kek.short_name())
}

fn link(server: &ServerRecord) -> String {
    format!(
        "<a href=\"{BASE}/servers/{}\">{}</a>",
        path_segment(&server.name),
        esc(&server.name)
    )
}

/// `GET /console`: every server, its state, location, key and connection string.
pub(super) async fn servers(State(c): Shared, visit: Visit<Dba>) -> Response {
    let listed = blocking(&c.platform, |p| {
        p.list()?
            .into_iter()
            .map(|s| {
                let uri = p.connection_string(&s.id)?;
                Ok((s, uri))
            })
            .collect::<Result<Vec<_>, Error>>()
    })
    .await;
    let servers = match listed {
        Ok(s) => s,
        Err(e) => return failure(e),
    };
    let mut main = String::new();
    if servers.is_empty() {
        let _ = write!(
            main,
            "<section><p>No servers yet.</p><p><a class=\"button\" href=\"{BASE}/servers/new\">Create a server</a></p></section>"
        );
    } else {
        main.push_str(
            "<table><caption class=\"muted\">Servers, refreshed every few seconds</caption><thead><tr>\
             <th scope=\"col\">Name</th><th scope=\"col\">State</th><th scope=\"col\">Location</th>\
             <th scope=\"col\">Key</th><th scope=\"col\">Key version in use</th>\
             <th scope=\"col\">Connection string</th></tr></thead><tbody>",
        );
        for (s, uri) in &servers {
            let (key, version) = key_of(s);
            let _ = write!(
                main,
                "<tr data-server=\"{}\"><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td><code>{}</code></td>\
                 <td><code>{}</code></td><td><code>{}</code></td></tr>",
                esc(&s.name),
                link(s),
                state_badge(&s.state),
                esc(&s.location),
                esc(&key),
                esc(&version),
                esc(uri)
            );
        }
        main.push_str("</tbody></table>");
    }
    page(&visit, "Servers", true).render(StatusCode::OK, &main)
}

/// `GET /console/servers/{name}`: the server, its timeline, its events and actions.
pub(super) async fn server(
    State(c): Shared,
    visit: Visit<Dba>,
    Path(name): Path<String>,
) -> Response {
    let shown = blocking(&c.platform, move |p| {
        let (server, events) = p.show(&name)?;
        let uri = p.connection_string(&server.id)?;
        Ok((server, events, uri))
    })
    .await;
    let (s, events, uri) = match shown {
        Ok(shown) => shown,
        Err(e) => return failure(e),
    };
    let (key, version) = key_of(&s);
    let identity = match &s.encryption {
        Encryption::ServiceManaged => "the platform's identity".to_string(),
        Encryption::CustomerManaged { identity, .. } => identity.clone(),
    };
    let at = format!("{BASE}/servers/{}", path_segment(&s.name));
    let csrf = &visit.session.csrf;
    let mut main = String::new();
    let _ = write!(
        main,
        "<section aria-labelledby=\"facts\"><h2 id=\"facts\">Server</h2><dl class=\"facts\">\
         <dt>State</dt><dd>{}</dd><dt>Location</dt><dd>{}</dd><dt>Key</dt><dd><code>{}</code></dd>\
         <dt>Key version in use</dt><dd><code>{}</code> (it wraps the DEK: keep it enabled)</dd>\
         <dt>Identity</dt><dd>{}</dd><dt>Connection string</dt><dd><code>{}</code></dd>\
         <dt>Created</dt><dd>{}</dd></dl></section>",
        state_badge(&s.state),
        esc(&s.location),
        esc(&key),
        esc(&version),
        esc(&identity),
        esc(&uri),
        esc(&s.created_at)
    );
    let _ = write!(
        main,
        "<section aria-labelledby=\"acts\"><h2 id=\"acts\">Actions</h2><div class=\"actions\">"
    );
    for (action, label, class) in [
        ("stop", "Stop", "secondary"),
        ("start", "Start", "secondary"),
        ("revalidate", "Check the key now", "secondary"),
    ] {
        main.push_str(&action_button(
            &format!("{at}/{action}"),
            label,
            csrf,
            class,
        ));
    }
    let _ = write!(
        main,
        "<a class=\"button\" href=\"{at}/backups\">Backups</a>\
         <a class=\"button danger\" href=\"{at}/delete\">Delete…</a></div></section>"
    );
    let _ = write!(
        main,
        "<section aria-labelledby=\"tl\"><h2 id=\"tl\">Timeline</h2>{}</section>",
        timeline::render(&s, &events, time::OffsetDateTime::now_utc())
    );
    main.push_str(
        "<section aria-labelledby=\"ev\"><h2 id=\"ev\">Events</h2><table><thead><tr>\
         <th scope=\"col\">Time</th><th scope=\"col\">Who</th><th scope=\"col\">What</th>\
         <th scope=\"col\">Why</th></tr></thead><tbody>",
    );
    for e in events.iter().rev().take(timeline::MAX_EVENTS) {
        let _ = write!(
            main,
            "<tr><td>{}</td><td>{}</td><th scope=\"row\">{}</th><td>{}</td></tr>",
            esc(&e.at),
            esc(&e.who),
            esc(&e.what),
            esc(&e.why)
        );
    }
    main.push_str("</tbody></table></section>");
    page(&visit, &s.name, true).render(StatusCode::OK, &main)
}

/// `GET /console/servers/{name}/backups`: its backups and archived WAL (asks the
/// server's agent, so it is not reloaded by itself).
pub(super) async fn backups(
    State(c): Shared,
    visit: Visit<Dba>,
    Path(name): Path<String>,
) -> Response {
    let shown = name.clone();
    let catalog = match blocking(&c.platform, move |p| p.list_backups(&shown)).await {
        Ok(catalog) => catalog,
        Err(e) => return failure(e),
    };
    let mut main = format!(
        "<p>Kept {} days; the repository key is wrapped by <code>{}</code>.</p>",
        catalog.retention_days,
        esc(&catalog.key_version.short_name())
    );
    if catalog.backups.is_empty() {
        main.push_str("<p>No backups yet.</p>");
    } else {
        main.push_str(
            "<table><thead><tr><th scope=\"col\">Label</th><th scope=\"col\">Type</th>\
             <th scope=\"col\">Finished</th><th scope=\"col\">Database bytes</th>\
             <th scope=\"col\">Stored bytes</th><th scope=\"col\">Key version</th></tr></thead><tbody>",
        );
        for b in &catalog.backups {
            let _ = write!(
                main,
                "<tr><th scope=\"row\">{}</th><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&b.label),
                b.kind,
                esc(&b.finished_at),
                b.database_bytes,
                b.repository_bytes,
                esc(&b.key_version.short_name())
            );
        }
        main.push_str("</tbody></table>");
    }
    let title = format!("Backups of {name}");
    page(&visit, &title, false).render(StatusCode::OK, &main)
}

/// `GET /console/servers/new`: the create form.
pub(super) async fn new_server(visit: Visit<Dba>) -> Response {
    let main = format!(
        "<section><form class=\"stack\" method=\"post\" action=\"{BASE}/servers\">{}\
         <label for=\"name\">Name<span class=\"hint\">lowercase letters, digits and -, 3–63 characters</span>\
         <input id=\"name\" name=\"name\" required></label>\
         <label for=\"location\">Location<span class=\"hint\">for a customer-managed key: its vault's location</span>\
         <input id=\"location\" name=\"location\" required></label>\
         <fieldset><legend>Encryption</legend>\
         <label for=\"encryption\">Key<select id=\"encryption\" name=\"encryption\">\
         <option value=\"service-managed\">Service-managed (the platform's key)</option>\
         <option value=\"customer-managed\">Customer-managed (your key in your vault)</option></select></label>\
         <label for=\"identity\">Managed identity<span class=\"hint\">customer-managed: the identity's client id</span>\
         <input id=\"identity\" name=\"identity\"></label>\
         <label for=\"identity_secret\">Identity secret<span class=\"hint\">customer-managed: client_secret from the identity's credential file</span>\
         <input id=\"identity_secret\" name=\"identity_secret\" type=\"password\" autocomplete=\"off\"></label>\
         <label for=\"key\">Key URL<span class=\"hint\">customer-managed: versionless to follow rotation</span>\
         <input id=\"key\" name=\"key\"></label></fieldset>\
         <button type=\"submit\">Create</button></form></section>",
        csrf_field(&visit.session.csrf)
    );
    page(&visit, "Create a server", false).render(StatusCode::OK, &main)
}

/// `GET /console/servers/{name}/delete`: deleting asks for the name, typed.
pub(super) async fn confirm_delete(visit: Visit<Dba>, Path(name): Path<String>) -> Response {
    let main = format!(
        "<section><p>Deleting <strong>{0}</strong> removes its data and its DEK for good; \
         its backups stay until their retention ends.</p>\
         <form class=\"stack\" method=\"post\" action=\"{BASE}/servers/{1}/delete\">{2}\
         <label for=\"confirm\">Type the server's name to confirm<input id=\"confirm\" name=\"confirm\" \
         autocomplete=\"off\" required></label><button type=\"submit\" class=\"danger\">Delete {0}</button>\
         </form></section>",
        esc(&name),
        path_segment(&name),
        csrf_field(&visit.session.csrf)
    );
    let title = format!("Delete {name}");
    page(&visit, &title, false).render(StatusCode::OK, &main)
}

/// The answer to a create: rendered, not redirected to, since it shows the
/// superuser's password once and nothing keeps it (the page is not cached).
pub(super) fn created(visit: &Visit<Dba>, created: &Created) -> Response {
    let name = &created.server.name;
    let main = format!(
        "<section><p class=\"notice\" role=\"status\">Created {0}; it is {1}.</p>\
         <dl class=\"facts\"><dt>postgres password</dt><dd><code>{2}</code> (shown only now: \
         the platform keeps it nowhere)</dd></dl><p><a href=\"{BASE}/servers/{3}\">Go to {0}</a></p></section>",
        esc(name),
        created.server.state.name(),
        esc(created.password.expose_secret()),
        path_segment(name)
    );
    page(visit, "Server created", false).render(StatusCode::CREATED, &main)
}
