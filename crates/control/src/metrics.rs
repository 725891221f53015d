//! What the control plane tells Prometheus (docs/operations.md "Metrics"), on its
//! `--metrics-listen` loopback listener:
//!
//! - `GET /metrics`: servers by state, state transitions, the time since each
//!   server's last successful unwrap, and the REST API's requests;
//! - `GET /agents`: where each running node agent serves its own metrics (its mount's
//!   requests, its key checks), in Prometheus's HTTP service-discovery format, so one
//!   `http_sd_configs` entry follows agents as they come and go.
//!
//! Labels are state names, the API's route templates and server names — which the
//! host's administrator sees in the state directory anyway — never a key, an identity
//! or a credential.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use serde::Serialize;

use crate::model::ServerState;
use crate::platform::{Platform, ServerObservation};

/// Every state a server can be in, as the `state` label spells it.
const STATES: [&str; 7] = [
    "Provisioning",
    "Ready",
    "Inaccessible",
    "Stopped",
    "Failed",
    "Deleting",
    "Unknown",
];

/// Counts a server's move from `from` to `to`.
pub fn transition(from: &ServerState, to: &ServerState) {
    counter!(
        "pgcmk_control_state_transitions_total",
        "from" => from.name(),
        "to" => to.name()
    )
    .increment(1);
}

/// Gives each metric its `# HELP` line (once the recorder is installed).
fn describe() {
    describe_gauge!(
        "pgcmk_control_server_state",
        "1 for the server's current state, 0 for the others"
    );
    describe_gauge!("pgcmk_control_servers", "Servers in each state");
    describe_counter!(
        "pgcmk_control_state_transitions_total",
        "State changes of all servers, by from and to"
    );
    describe_gauge!(
        "pgcmk_control_seconds_since_last_unwrap",
        Unit::Seconds,
        "Seconds since the server's agent last unwrapped its DEK"
    );
    describe_counter!(
        "pgcmk_control_api_requests_total",
        "REST API requests by method, route template and status"
    );
    describe_histogram!(
        "pgcmk_control_api_request_duration_seconds",
        Unit::Seconds,
        "REST API request latency by route template"
    );
}

/// The metrics listener's routes over `platform`.
pub fn router(platform: Arc<Platform>) -> Router {
    describe();
    let scraped = platform.clone();
    pgcmk_hostkeys::metrics_endpoint::router(move || refresh(&scraped)).route(
        "/agents",
        get(move || {
            let platform = platform.clone();
            async move {
                let targets = tokio::task::spawn_blocking(move || agent_targets(&platform))
                    .await
                    .unwrap_or_default();
                Json(targets)
            }
        }),
    )
}

/// One target group of Prometheus's HTTP service discovery.
#[derive(Serialize)]
struct TargetGroup {
    targets: Vec<String>,
    labels: TargetLabels,
}

#[derive(Serialize)]
struct TargetLabels {
    server: String,
}

fn observe(platform: &Platform) -> Vec<ServerObservation> {
    platform.observe_servers().unwrap_or_else(|e| {
        tracing::warn!("servers for the metrics: {e}");
        Vec::new()
    })
}

fn agent_targets(platform: &Platform) -> Vec<TargetGroup> {
    observe(platform)
        .into_iter()
        .filter_map(|s| {
            Some(TargetGroup {
                targets: vec![s.agent_metrics?.to_string()],
                labels: TargetLabels { server: s.name },
            })
        })
        .collect()
}

/// Sets the per-server gauges at a scrape.
fn refresh(platform: &Platform) {
    let now = time::OffsetDateTime::now_utc();
    let mut by_state = [0u32; STATES.len()];
    for server in observe(platform) {
        let current = server.state.name();
        for (i, state) in STATES.iter().enumerate() {
            let is = *state == current;
            by_state[i] += u32::from(is);
            gauge!("pgcmk_control_server_state", "server" => server.name.clone(), "state" => *state)
                .set(f64::from(u8::from(is)));
        }
        let last_unwrap = server.last_unwrap_at.as_deref().and_then(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        });
        if let Some(at) = last_unwrap {
            gauge!("pgcmk_control_seconds_since_last_unwrap", "server" => server.name)
                .set((now - at).as_seconds_f64().max(0.0));
        }
    }
    for (state, n) in STATES.iter().zip(by_state) {
        gauge!("pgcmk_control_servers", "state" => *state).set(f64::from(n));
    }
}
