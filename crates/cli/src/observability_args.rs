//! The flags every long-running service shares: where its metrics are served, and
//! how it logs.

use clap::Args;
use pgcmk_hostkeys::metrics_endpoint::MetricsAddress;

use crate::logging::LogFormat;

/// `--metrics-listen` and `--log-format`.
#[derive(Args, Clone, Debug)]
pub struct ObservabilityArgs {
    /// Serve Prometheus metrics (GET /metrics, plain HTTP) on this loopback address;
    /// off by default. See docs/operations.md "Metrics".
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<MetricsAddress>,
    /// Log format: text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}
