//! The accept loop: [`serve`] accepts a client once the connection limit (the sibling
//! `connections` module, where the oldest idle connection makes room) gives it a lease, and
//! spawns `serve_connection` for it: the TLS handshake, then hyper-util (HTTP/1.1 and HTTP/2 on
//! one listener) bounded by header and idle timeouts, drained on shutdown. Plus the plain-HTTP
//! metrics listener and the signal that starts shutdown.
//!
//! Touches only the listeners it is given; what a request gets is decided by the routes in
//! the parent module.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Interval;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use super::connections::{Connections, Lease};
use super::{AppState, HEARTBEAT_EVERY, Health, Limits, metrics_router, router};
use crate::metrics::{Metrics, RejectReason};
use crate::tls::ReloadingConfig;

/// How long the accept loop backs off after a failed `accept` (EMFILE and friends).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every connection task shares: the protocol settings, the routes, the metrics and the
/// bounds.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    metrics: Arc<Metrics>,
    limits: Arc<Limits>,
}

impl Shared {
    fn new(state: &AppState) -> Self {
        let limits = state.limits.clone();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_h2_streams)
            .keep_alive_interval(Duration::from_secs(30));
        Self {
            builder,
            app: router(state.clone()),
            metrics: state.metrics.clone(),
            limits,
        }
    }
}

/// Serve the webhook over TLS on `listener` until `shutdown` completes. Then: `/readyz` turns
/// unready, the server keeps serving for `drain_delay` (so endpoints drop it before the port
/// closes), stops accepting, and lets in-flight requests finish (up to
/// [`Limits::drain_timeout`]). The bounds are the state's [`AppState::limits`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ReloadingConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()>,
    drain_delay: Duration,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(&state));
    let connections = Connections::new(shared.limits.max_connections);
    let (stop_tx, stop_rx) = watch::channel(false);
    let health = state.health.clone();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let draining = draining(shutdown, &health, drain_delay);
    tokio::pin!(draining);
    loop {
        let next = next_connection(&listener, &connections, &shared.metrics);
        let (stream, peer, lease) = tokio::select! {
            _ = &mut draining => break,
            next = ticking(&mut heartbeat, &health, next) => match next {
                Some(next) => next,
                None => break,
            },
        };
        let acceptor = TlsAcceptor::from(tls.current());
        let stop = stop_rx.clone();
        tokio::spawn(serve_connection(
            shared.clone(),
            acceptor,
            stream,
            peer,
            lease,
            stop,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain_timeout = shared.limits.drain_timeout;
    if tokio::time::timeout(drain_timeout, connections.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within {drain_timeout:?}; exiting anyway"
        );
    }
    Ok(())
}

/// Completes `drain_delay` after `shutdown`, having reported unready in between.
async fn draining(shutdown: impl Future<Output = ()>, health: &Health, drain_delay: Duration) {
    shutdown.await;
    health.begin_shutdown();
    tracing::info!(
        ?drain_delay,
        "shutdown requested: reporting unready, then draining"
    );
    tokio::time::sleep(drain_delay).await;
}

/// Run `work`, proving the accept loop alive on every heartbeat meanwhile.
async fn ticking<T>(heartbeat: &mut Interval, health: &Health, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = heartbeat.tick() => health.tick(),
        }
    }
}

/// The next client and its lease within the connection limit (counting each time the limit is
/// hit); `None` if the limit was closed.
async fn next_connection(
    listener: &TcpListener,
    connections: &Connections,
    metrics: &Metrics,
) -> Option<(TcpStream, SocketAddr, Lease)> {
    let (stream, peer) = loop {
        match listener.accept().await {
            Ok(accepted) => break accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    };
    let on_full = || metrics.reject(RejectReason::connection_limit);
    let lease = connections.acquire(HEARTBEAT_EVERY, on_full).await?;
    Some((stream, peer, lease))
}

/// Completes when the server starts draining (or is gone).
async fn stopping(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopping| *stopping).await;
}

/// Serve one client: the TLS handshake (bounded by [`Limits::tls_handshake_timeout`]), then
/// HTTP/1.1 or HTTP/2 until the client closes, or until the server stops, the limit evicts
/// this connection or it idles out ([`Limits::idle_timeout`]) — then in-flight requests get
/// [`Limits::drain_timeout`] to finish before the connection is dropped. The lease is given
/// back when this returns.
async fn serve_connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    lease: Lease,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls_stream) = handshake(&shared, acceptor, stream, peer, &lease, &mut stop).await
    else {
        return;
    };
    shared.metrics.connections().inc();
    lease.mark_idle();
    let requests = lease.requests();
    let app = shared.app.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let busy = requests.start();
        let app = app.clone();
        async move {
            let _busy = busy;
            app.oneshot(request).await
        }
    });
    let connection = shared
        .builder
        .serve_connection(TokioIo::new(tls_stream), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        _ = stopping(&mut stop) => None,
        _ = lease.evicted() => None,
        _ = lease.idle_expired(shared.limits.idle_timeout) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            // Finish what is in flight, then close; drop the connection if it lingers.
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(shared.limits.drain_timeout, connection)
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
    shared.metrics.connections().dec();
}

/// The TLS handshake, bounded by [`Limits::tls_handshake_timeout`]; `None` when it failed, timed
/// out (both counted as `tls_handshake` rejections), or was cut short by a stop or an eviction.
async fn handshake(
    shared: &Shared,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    lease: &Lease,
    stop: &mut watch::Receiver<bool>,
) -> Option<TlsStream<TcpStream>> {
    let handshake =
        tokio::time::timeout(shared.limits.tls_handshake_timeout, acceptor.accept(stream));
    let outcome = tokio::select! {
        _ = stopping(stop) => return None,
        _ = lease.evicted() => {
            tracing::debug!(%peer, "handshake in progress closed to make room");
            return None;
        }
        handshake = handshake => handshake,
    };
    match outcome {
        Ok(Ok(tls_stream)) => return Some(tls_stream),
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
    shared.metrics.reject(RejectReason::tls_handshake);
    None
}

/// Serve `/metrics`, `/healthz` and `/readyz` in plain HTTP on `listener` until `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A future that completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
