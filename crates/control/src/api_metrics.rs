//! Every REST API request gets a request id — in its log lines' span, in its access
//! log line and in the `x-request-id` response header — and is counted and timed by
//! route template (`/servers/{name}`, never a server's name) and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, histogram};
use tracing::Instrument;

/// The middleware (`axum::middleware::from_fn(observe)`), outermost: refused
/// requests are counted too.
pub async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = request.method().as_str().to_string();
    let request_id = pgcmk_crypto::random::hex_id(8).unwrap_or_default();
    let span = tracing::info_span!("request", request_id = %request_id, %method, %route);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            ms = elapsed.as_millis() as u64,
            "request"
        )
    });
    let status = response.status().as_u16().to_string();
    counter!(
        "pgcmk_control_api_requests_total",
        "method" => method,
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    histogram!("pgcmk_control_api_request_duration_seconds", "route" => route).record(elapsed);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
