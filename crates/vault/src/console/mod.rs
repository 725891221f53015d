//! The security officer's console: web pages over the vault service's main HTTPS
//! listener, at `/console`, for service administrators. It signs in with a
//! service administrator's client credentials (`admin.credential`: its
//! `client_id` and `client_secret`), checked as the token endpoint checks them,
//! then runs on a server-side session ([`pgcmk_console`]). What the pages show and
//! what the buttons do go through the service's own API in process ([`api`]),
//! so they are authorized and audited as the signed-in principal.
//!
//! | file         | concept                                                     |
//! |--------------|-------------------------------------------------------------|
//! | `mod.rs`     | routes, signing in and out, the signed-in caller            |
//! | `api.rs`     | requests to the service's routes, in process                |
//! | `views.rs`   | the typed answers the pages read                            |
//! | `pages.rs`   | vaults with keys and policies, a key's versions, the audit  |
//! | `actions.rs` | create/rotate/disable/enable a key, set/delete a policy     |

mod actions;
mod api;
mod pages;
mod views;

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use pgcmk_console::sign_in::Field;
use pgcmk_console::{Gate, HoldsGate, Refused, SessionLimits, Visit};

use crate::http::ClientAddr;
use crate::service::Service;
use api::{Caller, InProcess};

/// Where the console lives on the main listener.
pub const BASE: &str = "/console";
/// The console's name in page titles.
const NAME: &str = "security officer console";

struct Console {
    service: Arc<Service>,
    api: InProcess,
    /// Sessions name the principal by object id; it is looked up on every request.
    gate: Gate<OfficerId>,
}

type Shared = State<Arc<Console>>;

/// Who a session belongs to: the object id of a service administrator.
#[derive(Clone, Debug)]
struct OfficerId(String);

impl HoldsGate<OfficerId> for Arc<Console> {
    fn gate(&self) -> &Gate<OfficerId> {
        &self.gate
    }
}

/// The console's routes, all below [`BASE`].
pub fn router(service: Arc<Service>) -> Router {
    let console = Arc::new(Console {
        api: InProcess::new(service.clone()),
        service,
        gate: Gate::new("pgcmk-officer", BASE, SessionLimits::default()),
    });
    Router::new()
        .route(BASE, get(pages::vaults))
        .route("/console/login", get(sign_in_page).post(sign_in))
        .route("/console/audit", get(pages::audit))
        .route("/console/vaults/{vault}/keys", post(actions::create_key))
        .route("/console/vaults/{vault}/keys/{key}", get(pages::key))
        .route(
            "/console/vaults/{vault}/keys/{key}/{action}",
            post(actions::key_action),
        )
        .route(
            "/console/vaults/{vault}/policies",
            post(actions::set_policy),
        )
        .route(
            "/console/vaults/{vault}/policies/{identity}/delete",
            post(actions::delete_policy),
        )
        .merge(pgcmk_console::routes::common::<_, OfficerId>(BASE))
        .with_state(console)
}

const FIELDS: &[Field] = &[
    Field {
        name: "client_id",
        label: "Client id",
        hint: "client_id in admin.credential (the service's data directory) or another service administrator's credential",
        secret: false,
    },
    Field {
        name: "client_secret",
        label: "Client secret",
        hint: "client_secret in the same file",
        secret: true,
    },
];

async fn sign_in_page(State(c): Shared) -> Response {
    c.gate.sign_in_page(NAME, FIELDS, None)
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    csrf: String,
    client_id: String,
    client_secret: String,
}

/// Signs in a service administrator. The credentials go to the token endpoint in
/// process, so every attempt is in the audit trail; the principal they name must
/// be a service administrator.
async fn sign_in(
    State(c): Shared,
    headers: HeaderMap,
    client: Client,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return c.gate.refusal(Refused::Forged);
    };
    if !c.gate.sign_in_form_is_ours(&headers, &form.csrf) {
        return c.gate.refusal(Refused::Forged);
    }
    let (id, secret) = (form.client_id.trim(), form.client_secret.trim());
    let client = client.map(|Extension(a)| a);
    let principal = match c.api.token_granted(id, secret, client).await {
        true => c.service.directory.authenticate(id, secret),
        false => None,
    };
    match principal {
        Some(p) if p.service_admin => c
            .gate
            .sign_in(OfficerId(p.object_id))
            .unwrap_or_else(|e| pages::failure(&api::Refusal::from(e))),
        _ => c.gate.sign_in_page(
            NAME,
            FIELDS,
            Some(
                "Those are not a service administrator's client credentials: use the \
                 client_id and client_secret of admin.credential.",
            ),
        ),
    }
}

/// The browser's address, when the listener attached it.
type Client = Option<Extension<ClientAddr>>;

impl Console {
    /// The caller a session names, while it is still a service administrator.
    fn caller(&self, visit: &Visit<OfficerId>, client: Client) -> Option<Caller> {
        let principal = self
            .service
            .directory
            .get(&visit.session.who.0)
            .filter(|p| p.service_admin)?;
        Some(Caller {
            principal,
            client: client.map(|Extension(a)| a),
        })
    }

    /// The officer of a form post, its form's token checked, or its refusal.
    fn admit<F>(
        &self,
        headers: &HeaderMap,
        client: Client,
        form: Result<Form<F>, FormRejection>,
        csrf: impl FnOnce(&F) -> &str,
    ) -> Result<(Officer, F), Box<Response>> {
        let Ok(Form(form)) = form else {
            return Err(Box::new(self.gate.refusal(Refused::Forged)));
        };
        let visit = self
            .gate
            .post(headers, csrf(&form))
            .map_err(|refused| Box::new(self.gate.refusal(refused)))?;
        let caller = self
            .caller(&visit, client)
            .ok_or_else(|| Box::new(self.gate.sign_out(&visit)))?;
        Ok((Officer { visit, caller }, form))
    }
}

/// The signed-in security officer of a request: its session and the principal
/// (an extractor; without a live session, or once the principal is no service
/// administrator, the browser is sent to sign in).
struct Officer {
    visit: Visit<OfficerId>,
    caller: Caller,
}

impl FromRequestParts<Arc<Console>> for Officer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Arc<Console>) -> Result<Self, Response> {
        let visit = c
            .gate
            .visit(&parts.headers)
            .ok_or_else(|| c.gate.to_sign_in())?;
        let client = parts.extensions.get::<ClientAddr>().copied().map(Extension);
        let caller = c
            .caller(&visit, client)
            .ok_or_else(|| c.gate.sign_out(&visit))?;
        Ok(Officer { visit, caller })
    }
}

impl Officer {
    /// The signed-in frame of a page.
    fn signed_in(&self) -> pgcmk_console::SignedIn<'_> {
        pgcmk_console::SignedIn {
            name: &self.caller.principal.name,
            csrf: &self.visit.session.csrf,
            notice: self.visit.session.notice.as_ref(),
        }
    }
}
