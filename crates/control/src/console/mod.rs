//! The DBA console: web pages over the control plane's HTTPS listener, at
//! `/console`, for the holder of the DBA's credential. It signs in with the same
//! credential as the REST API (checked by the same verifier, in constant time),
//! then runs on a server-side session ([`pgcmk_console`]). Every page reads and
//! every button calls the same [`Platform`] functions as the REST API's handlers:
//! there is no second implementation of any operation.
//!
//! | file          | concept                                               |
//! |---------------|-------------------------------------------------------|
//! | `mod.rs`      | routes, signing in and out                            |
//! | `pages.rs`    | the servers list, a server's page, the create form    |
//! | `actions.rs`  | create, stop, start, revalidate, delete               |
//! | `timeline.rs` | a server's states and key events as an SVG chart      |

mod actions;
mod pages;
mod timeline;

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use pgcmk_console::sign_in::Field;
use pgcmk_console::{Gate, HoldsGate, Refused, SessionLimits, Visit};

use crate::platform::Platform;
use crate::Error;

/// Where the console lives on the listener.
pub const BASE: &str = "/console";
/// The console's name in page titles.
const NAME: &str = "DBA console";

/// Who a DBA console session belongs to: the holder of the DBA credential.
#[derive(Clone, Copy, Debug)]
struct Dba;

struct Console {
    platform: Arc<Platform>,
    gate: Gate<Dba>,
}

type Shared = State<Arc<Console>>;

impl HoldsGate<Dba> for Arc<Console> {
    fn gate(&self) -> &Gate<Dba> {
        &self.gate
    }
}

/// The console's routes, all below [`BASE`].
pub fn router(platform: Arc<Platform>) -> Router {
    let console = Arc::new(Console {
        platform,
        gate: Gate::new("pgcmk-dba", BASE, SessionLimits::default()),
    });
    Router::new()
        .route(BASE, get(pages::servers))
        .route("/console/login", get(sign_in_page).post(sign_in))
        .route("/console/servers", post(actions::create))
        .route("/console/servers/new", get(pages::new_server))
        .route("/console/servers/{name}", get(pages::server))
        .route("/console/servers/{name}/backups", get(pages::backups))
        .route("/console/servers/{name}/delete", get(pages::confirm_delete))
        .route("/console/servers/{name}/{action}", post(actions::act))
        .merge(pgcmk_console::routes::common::<_, Dba>(BASE))
        .with_state(console)
}

const CREDENTIAL: Field = Field {
    name: "credential",
    label: "DBA credential",
    hint:
        "the 64 hex characters in dba.credential, written by `pgcmk serve` in its state directory",
    secret: true,
};

async fn sign_in_page(State(c): Shared) -> Response {
    c.gate.sign_in_page(NAME, &[CREDENTIAL], None)
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    credential: String,
}

async fn sign_in(
    State(c): Shared,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or(SignIn {
        csrf: String::new(),
        credential: String::new(),
    });
    if !c.gate.sign_in_form_is_ours(&headers, &form.csrf) {
        return c.gate.refusal(Refused::Forged);
    }
    if !c.platform.dba_allows(form.credential.trim().as_bytes()) {
        tracing::info!("console: a sign-in with a wrong DBA credential was refused");
        return c.gate.sign_in_page(
            NAME,
            &[CREDENTIAL],
            Some("That is not the DBA credential: paste the contents of dba.credential."),
        );
    }
    c.gate
        .sign_in(Dba)
        .unwrap_or_else(|e| pages::failure(Error::Crypto(e)))
}

/// Runs a platform operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    platform: &Arc<Platform>,
    op: impl FnOnce(&Platform) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let platform = platform.clone();
    tokio::task::spawn_blocking(move || op(&platform))
        .await
        .map_err(|e| Error::Aborted(e.to_string()))?
}

/// The signed-in frame of a page.
fn signed_in<'a>(visit: &'a Visit<Dba>) -> pgcmk_console::SignedIn<'a> {
    pgcmk_console::SignedIn {
        name: "DBA",
        csrf: &visit.session.csrf,
        notice: visit.session.notice.as_ref(),
    }
}
