//! The routes every console has: its style sheet and signing out.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};

use crate::gate::{HoldsGate, TokenForm};
use crate::page::style_sheet;

/// `GET {base}/console.css` and `POST {base}/logout` for a console whose state is `S`.
pub fn common<S, W>(base: &str) -> Router<S>
where
    S: HoldsGate<W> + Clone + Send + Sync + 'static,
    W: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(&format!("{base}/console.css"), get(style_sheet))
        .route(&format!("{base}/logout"), post(sign_out::<S, W>))
}

async fn sign_out<S: HoldsGate<W>, W: Clone>(
    State(state): State<S>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    state.gate().sign_out_posted(&headers, form)
}
