//! A service's Prometheus endpoint: `GET /metrics` in the text exposition format, on a
//! plain-HTTP listener of its own that exists only when the operator asks for it
//! (`--metrics-listen 127.0.0.1:PORT`) and only on a loopback address.
//!
//! Why a loopback listener rather than a route on the HTTPS API: the API's credentials
//! belong to roles (the DBA, the security officer), and Prometheus is run by the host's
//! administrator, who must not get a role's credential to scrape. On loopback only that
//! host's processes reach it, which is the administrator's domain already; and what the
//! services export is chosen for that audience: counts, states and latencies, labelled
//! by operation, outcome, opcode or server name — never a key name, an identity, a
//! token or any other secret (docs/operations.md "Metrics" lists every label).
//!
//! The recorder is the maintained `metrics` facade with the Prometheus exporter's
//! recorder; nothing is recorded (the facade's no-op) unless [`recorder`] installed it.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;

use crate::listen_limits::Limits;

/// Bucket bounds (seconds) of every latency histogram: 50 µs (a cached FUSE read) to
/// 10 s (an RSA-4096 key generation or a vault timeout).
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Gauges not set for this long leave the output: every gauge is set at each scrape
/// from the state it shows, so a deleted server's or key's series ends.
const GAUGE_IDLE: Duration = Duration::from_secs(120);

/// How often histogram samples are folded into their buckets between scrapes, so that
/// memory stays bounded when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The address of a metrics listener: a loopback address (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddress(SocketAddr);

impl MetricsAddress {
    /// The socket address to bind.
    pub fn socket_addr(self) -> SocketAddr {
        self.0
    }
}

/// Why a metrics listener cannot be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsEndpointError {
    /// The flag's value is not an address.
    #[error("'{0}' is not an IP:PORT address; e.g. 127.0.0.1:9480")]
    NotAnAddress(String),
    /// The address is reachable from other hosts.
    #[error(
        "{0} is not a loopback address: metrics are served without authentication, so only \
         on 127.0.0.1 or ::1 (run Prometheus on this host)"
    )]
    NotLoopback(SocketAddr),
    /// Binding failed (port taken, no permission).
    #[error("--metrics-listen {0}: cannot listen there ({1}); choose a free port")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The listener's thread or runtime could not start.
    #[error("cannot start the metrics listener: {0}")]
    Start(#[source] std::io::Error),
}

impl FromStr for MetricsAddress {
    type Err = MetricsEndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addr: SocketAddr = s
            .parse()
            .map_err(|_| MetricsEndpointError::NotAnAddress(s.to_string()))?;
        if !addr.ip().is_loopback() {
            return Err(MetricsEndpointError::NotLoopback(addr));
        }
        Ok(Self(addr))
    }
}

/// The process's recorder, installed on first use with histogram buckets for every
/// `*_seconds` metric; later calls return the same handle.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: /metrics stays empty");
            }
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!("no metrics upkeep thread ({e}): histograms fold only at scrapes");
            }
            handle
        })
        .clone()
}

/// A router answering `GET /metrics`; `refresh` sets the gauges that are read from
/// state at scrape time (it runs on a blocking thread: it may read storage).
pub fn router(refresh: impl Fn() + Send + Sync + 'static) -> Router {
    let handle = recorder();
    let refresh = Arc::new(refresh);
    Router::new().route(
        "/metrics",
        get(move || {
            let (handle, refresh) = (handle.clone(), refresh.clone());
            async move {
                let text = tokio::task::spawn_blocking(move || {
                    refresh();
                    handle.render()
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
            }
        }),
    )
}

/// Installs the [`recorder`] (so that what happens from now on is counted) and binds
/// `address`; the error names the flag and what to do.
pub async fn bind(address: MetricsAddress) -> Result<TcpListener, MetricsEndpointError> {
    recorder();
    TcpListener::bind(address.0)
        .await
        .map_err(|e| MetricsEndpointError::Bind(address.0, e))
}

/// For a process without an async runtime (a node agent, `pgcmk fs mount`): binds
/// `address` and serves `/metrics` from a thread of its own for the life of the
/// process; returns the bound address. Start it after blocking the signals that the
/// process handles itself: the thread inherits the mask.
pub fn serve_in_thread(address: MetricsAddress) -> Result<SocketAddr, MetricsEndpointError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MetricsEndpointError::Start)?;
    let listener = runtime.block_on(bind(address))?;
    let bound = listener.local_addr().map_err(MetricsEndpointError::Start)?;
    let router = router(|| {});
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(serve(listener, router, std::future::pending())))
        .map_err(MetricsEndpointError::Start)?;
    Ok(bound)
}

/// What a scraper may cost: a few connections (Prometheus keeps one), seconds to
/// send a request, no body. Anyone on the host can connect, so the listener is
/// bounded like the HTTPS ones, only tighter.
fn scrape_limits() -> Limits {
    Limits {
        handshake: Duration::from_secs(5),
        headers: Duration::from_secs(10),
        body: Duration::from_secs(5),
        max_connections: 16,
        max_per_client: 16,
        max_body_bytes: 1024,
    }
}

/// Serves `router` on `listener` until `shutdown` completes, within
/// [`scrape_limits`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_within(listener, router, shutdown, scrape_limits()).await;
}

async fn serve_within(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    crate::listener::serve_plain(listener, router, stopped, limits).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Reads until the peer closes (0) or `limit` passes (None).
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<usize> {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            match tokio::time::timeout(limit, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(total),
                Ok(Ok(n)) => total += n,
                Err(_) => return None,
            }
        }
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_silent_ones_dropped_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            headers: Duration::from_millis(500),
            max_connections: 2,
            max_per_client: 2,
            ..scrape_limits()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve_within(
            listener,
            router(|| {}),
            async {
                let _ = stopped.await;
            },
            limits,
        ));
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // A third connection while two are held is closed at once, unanswered.
        let mut over = TcpStream::connect(addr).await.unwrap();
        let _ = over
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        assert_eq!(
            closed_within(&mut over, Duration::from_secs(2)).await,
            Some(0),
            "over the cap: closed without an answer"
        );
        // The silent ones are dropped at the header deadline, freeing their slots.
        for s in &mut silent {
            assert!(
                closed_within(s, Duration::from_secs(5)).await.is_some(),
                "a silent connection outlived the header deadline"
            );
        }
        let mut scrape = TcpStream::connect(addr).await.unwrap();
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        scrape.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let _ = stop.send(());
        served.await.unwrap();
    }

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!("127.0.0.1:9480".parse::<MetricsAddress>().is_ok());
        assert!("[::1]:0".parse::<MetricsAddress>().is_ok());
        let err = "0.0.0.0:9480"
            .parse::<MetricsAddress>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        let err = "localhost"
            .parse::<MetricsAddress>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("127.0.0.1:9480"), "{err}");
    }
}
