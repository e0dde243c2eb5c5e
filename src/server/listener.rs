//! The accept loop: TLS connections served by hyper-util (HTTP/1.1 and HTTP/2 on one
//! listener), each bounded — handshake, header and idle timeouts, a connection limit at which
//! the oldest idle connection makes room — and drained on shutdown. Plus the plain-HTTP
//! metrics listener and the signal that starts shutdown.
//!
//! Touches only the listeners it is given; what a request gets is decided by the routes in
//! the parent module.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use axum::extract::Request;

use super::{AppState, HEARTBEAT_EVERY, metrics_router, router};
use crate::metrics::RejectReason;
use crate::tls::ReloadingConfig;

/// One open connection, as the accept loop sees it: the requests in flight on it, since when it
/// has been idle, and a way to ask it to close.
#[derive(Debug)]
struct Slot {
    opened: Instant,
    /// Requests being handled on this connection.
    requests: AtomicUsize,
    /// Milliseconds after `opened` when the connection last became idle.
    idle_since_ms: AtomicU64,
    evicted: AtomicBool,
    evict: Notify,
}

impl Slot {
    /// From now on the connection is idle (its handshake completed, or its last request ended).
    fn mark_idle(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.idle_since_ms.store(now, Ordering::SeqCst);
    }

    fn idle_for(&self) -> Duration {
        let now = self.opened.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.idle_since_ms.load(Ordering::SeqCst)))
    }

    /// Completes once the connection has had no request in flight for `limit`.
    async fn idle_expired(&self, limit: Duration) {
        loop {
            let wait = if self.requests.load(Ordering::SeqCst) > 0 {
                limit
            } else {
                let idle = self.idle_for();
                if idle >= limit {
                    return;
                }
                limit - idle
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Completes once the accept loop asked this connection to make room.
    async fn evicted(&self) {
        self.evict.notified().await;
    }
}

/// Counts a request on its connection until dropped.
struct Busy(Arc<Slot>);

impl Busy {
    fn start(slot: &Arc<Slot>) -> Self {
        slot.requests.fetch_add(1, Ordering::SeqCst);
        Self(slot.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.mark_idle();
        self.0.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
struct Slots {
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Slot>>>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        match self.open.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn open(self: &Arc<Self>) -> SlotGuard {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let slot = Arc::new(Slot {
            opened: Instant::now(),
            requests: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        self.lock().insert(id, slot.clone());
        SlotGuard {
            slots: self.clone(),
            id,
            slot,
        }
    }

    /// Ask the oldest connection without a request in flight (a handshake in progress counts)
    /// to close; false when every connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.lock();
        let victim = open.values().find(|slot| {
            slot.requests.load(Ordering::SeqCst) == 0 && !slot.evicted.swap(true, Ordering::SeqCst)
        });
        match victim {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in [`Slots`], given up when its task ends.
struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
    slot: Arc<Slot>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

/// Completes when the server starts draining (or is gone).
async fn stopping(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopping| *stopping).await;
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
    let builder = Arc::new(builder);
    let app = router(state.clone());
    let max_connections = limits.max_connections.max(1);
    let connections = Arc::new(Semaphore::new(max_connections));
    let slots = Arc::new(Slots::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let health = state.health.clone();
    let metrics = state.metrics.clone();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let draining = async {
        shutdown.await;
        health.begin_shutdown();
        tracing::info!(
            ?drain_delay,
            "shutdown requested: reporting unready, then draining"
        );
        tokio::time::sleep(drain_delay).await;
    };
    tokio::pin!(draining);
    'accept: loop {
        let (stream, peer) = loop {
            tokio::select! {
                _ = &mut draining => break 'accept,
                _ = heartbeat.tick() => health.tick(),
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => break accepted,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        };
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Every slot is taken: the oldest idle connection makes room for this client.
                metrics.reject(RejectReason::connection_limit);
                slots.evict_oldest_idle();
                loop {
                    tokio::select! {
                        _ = &mut draining => break 'accept,
                        _ = heartbeat.tick() => {
                            health.tick();
                            // Still full: a connection may have gone idle since.
                            slots.evict_oldest_idle();
                        }
                        permit = connections.clone().acquire_owned() => match permit {
                            Ok(permit) => break permit,
                            Err(_) => break 'accept,
                        },
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.current());
        let builder = builder.clone();
        let app = app.clone();
        let metrics = metrics.clone();
        let limits = limits.clone();
        let slot = slots.open();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake =
                tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream));
            let tls_stream = tokio::select! {
                _ = stopping(&mut stop_rx) => return,
                _ = slot.slot.evicted() => {
                    tracing::debug!(%peer, "handshake in progress closed to make room");
                    return;
                }
                handshake = handshake => match handshake {
                    Ok(Ok(tls_stream)) => tls_stream,
                    Ok(Err(error)) => {
                        metrics.reject(RejectReason::tls_handshake);
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics.reject(RejectReason::tls_handshake);
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            metrics.connections().inc();
            slot.slot.mark_idle();
            let on_slot = slot.slot.clone();
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let busy = Busy::start(&on_slot);
                    let app = app.clone();
                    async move {
                        let _busy = busy;
                        app.oneshot(request).await
                    }
                });
            let connection = builder
                .serve_connection(TokioIo::new(tls_stream), service)
                .into_owned();
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                _ = stopping(&mut stop_rx) => None,
                _ = slot.slot.evicted() => None,
                _ = slot.slot.idle_expired(limits.idle_timeout) => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    // Finish what is in flight, then close; drop the connection if it lingers.
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(limits.drain_timeout, connection)
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            metrics.connections().dec();
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection task holds a permit: all of them back means every connection is closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within {:?}; exiting anyway",
            limits.drain_timeout
        );
    }
    Ok(())
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
