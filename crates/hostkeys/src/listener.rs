//! An HTTPS listener serving one axum router, with graceful shutdown. Each request
//! carries its TCP peer as a [`PeerAddr`] extension. A connection that does not
//! complete a TLS handshake (plain HTTP, an untrusting client) gets no answer. The
//! same listener without TLS ([`serve_plain`]) serves the loopback-only metrics
//! endpoints, within the same kind of limits.
//!
//! What a client may cost before it has proved anything is bounded ([`Limits`]):
//! the handshake, the headers and the body each have a deadline; connections are
//! capped in total and per client address (a connection over a cap is closed at
//! once); a body declared larger than the listener's limit is refused unread; and an
//! accept that fails (no file descriptor left) backs off instead of spinning.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::connection_caps::{ConnectionCaps, Refusal};
pub use crate::listen_limits::Limits;
use crate::timed_body::TimedBody;

const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(1));
/// Shortest time between two warnings about refused connections or failed accepts.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The TCP peer of a connection, attached to each request.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// [`serve_with`] the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, tls, router, shutdown, Limits::default()).await;
}

/// Accepts TLS connections on `listener` and serves `router` within `limits` until
/// `shutdown` flips; then stops accepting, lets in-flight requests finish (bounded),
/// and returns.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    accept_loop(
        listener,
        Some(TlsAcceptor::from(tls)),
        router,
        shutdown,
        limits,
    )
    .await;
}

/// Like [`serve_with`], for plain HTTP (a loopback listener: the metrics); the
/// handshake deadline does not apply.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    accept_loop(listener, None, router, shutdown, limits).await;
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    let caps = ConnectionCaps::new(limits.max_connections, limits.max_per_client);
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut warned: Option<Instant> = None;
    let mut warn = |what: String| {
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!("{what}");
            warned = Some(Instant::now());
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => {
                        backoff = ACCEPT_BACKOFF.0;
                        accepted
                    }
                    Err(e) => {
                        warn(format!("accepting a connection failed ({e}); pausing {backoff:?}"));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                        continue;
                    }
                };
                let admission = match caps.admit(peer.ip()) {
                    Ok(admission) => admission,
                    Err(refusal) => {
                        warn(match refusal {
                            Refusal::Full => format!(
                                "refusing connections: {} held, the most allowed",
                                limits.max_connections
                            ),
                            Refusal::ClientFull => format!(
                                "refusing connections from {}: it holds {}, the most one address may",
                                peer.ip(),
                                limits.max_per_client
                            ),
                        });
                        drop(tcp);
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let router = router.clone();
                let stop = shutdown.clone();
                connections.spawn(async move {
                    let _admission = admission;
                    let Some(acceptor) = acceptor else {
                        return serve_connection(tcp, peer, router, limits, stop).await;
                    };
                    let Ok(Ok(stream)) = tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await else {
                        return;
                    };
                    serve_connection(stream, peer, router, limits, stop).await;
                });
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

async fn serve_connection(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            if declared_length(&req).is_some_and(|n| n > limits.max_body_bytes) {
                return Ok::<_, Infallible>(too_large(limits.max_body_bytes));
            }
            req.extensions_mut().insert(PeerAddr(peer));
            router
                .oneshot(req.map(|body| axum::body::Body::new(TimedBody::new(body, limits.body))))
                .await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.headers)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        }
    }
}

/// The body length a request declares.
fn declared_length<B>(req: &hyper::Request<B>) -> Option<u64> {
    req.headers()
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// 413, in the `{"error": {"code", "message"}}` shape both services answer with.
fn too_large(limit: u64) -> axum::response::Response {
    let body = format!(
        "{{\"error\":{{\"code\":\"RequestTooLarge\",\"message\":\"the request declares a body \
         larger than {limit} bytes\"}}}}"
    );
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
