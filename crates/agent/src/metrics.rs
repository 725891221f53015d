//! What a node agent tells Prometheus: its key monitor's checks, and (recorded by
//! cryptfs in this process) its mount's requests. Served on a loopback listener of its
//! own when the control plane asks for one (`--metrics-listen 127.0.0.1:0`); the
//! address goes into the agent's reports, from which the control plane's `/agents`
//! tells Prometheus where to scrape (docs/operations.md "Metrics").

use std::net::SocketAddr;
use std::time::Duration;

use pgcmk_hostkeys::metrics_endpoint::{self, MetricsAddress};

use crate::Error;

/// The outcomes of a key check.
const OUTCOMES: [&str; 3] = ["ok", "denied", "transient"];

/// One key check: `outcome` is one of [`OUTCOMES`].
pub(crate) fn key_check(outcome: &'static str, elapsed: Duration) {
    metrics::counter!("pgcmk_agent_key_checks_total", "outcome" => outcome).increment(1);
    metrics::histogram!("pgcmk_agent_key_check_duration_seconds").record(elapsed);
}

/// Installs the recorder (before the mount registers its handles) and serves
/// `/metrics` on `address` for the life of the process; returns the bound address.
pub(crate) fn serve(address: MetricsAddress) -> Result<SocketAddr, Error> {
    let bound = metrics_endpoint::serve_in_thread(address)
        .map_err(|e| Error::io("starting the metrics listener", std::io::Error::other(e)))?;
    metrics::describe_counter!(
        "pgcmk_agent_key_checks_total",
        "Key checks (an unwrap and a read of the current version) by outcome"
    );
    metrics::describe_histogram!(
        "pgcmk_agent_key_check_duration_seconds",
        metrics::Unit::Seconds,
        "Latency of one key check"
    );
    // Every outcome from 0, so that the first failure is an increase Prometheus sees.
    for outcome in OUTCOMES {
        metrics::counter!("pgcmk_agent_key_checks_total", "outcome" => outcome).absolute(0);
    }
    Ok(bound)
}
