//! The HTTPS server: axum routes over rustls, HTTP/1.1 and HTTP/2 on one listener.
//!
//! Routes: `POST /validate` (the API server appends `?timeout=10s`; the query is ignored),
//! `GET /healthz`, `GET /readyz`. Handlers are short: read a bounded body, hand it to
//! [`admission::review`], log the decision, answer. Every client mistake is one [`ServeError`]
//! variant with its 4xx status and a message; a panic in a handler is a 500 for that request only.
//!
//! [`serve`] takes a bound listener and a shutdown future from its caller (tests bind port 0),
//! bounds every connection (handshake and header timeouts, a connection limit), and on shutdown
//! stops accepting and lets in-flight requests finish.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_http::catch_panic::CatchPanicLayer;

use crate::admission::{self, ReviewError};
use crate::policy::Policy;
use crate::tls::ReloadingConfig;

/// The largest request body accepted. An UPDATE review carries two objects of up to ~3 MiB
/// (etcd's default request limit is 1.5 MiB, CRs with managedFields can approach it twice);
/// 7 MiB is controller-runtime's `maxRequestSize` for the same reason.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;
/// How long a client may take to send the whole body. The API server's own webhook timeout is
/// at most 30 s (default 10 s), so a body still arriving after this is from nobody waiting.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (HTTP/1.1; slowloris bound).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections at once; further clients wait in the listen backlog. The API server keeps a
/// few keep-alive connections per replica, so this is far above normal use.
pub const MAX_CONNECTIONS: usize = 1024;
/// Concurrent HTTP/2 streams per connection.
pub const MAX_H2_STREAMS: u32 = 128;
/// How long in-flight requests get to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    policy: Arc<Policy>,
    health: Arc<Health>,
}

/// Readiness as the routes report it (ready until shutdown begins), and requests in flight.
#[derive(Debug, Default)]
pub struct Health {
    shutting_down: AtomicBool,
    in_flight: AtomicUsize,
}

impl Health {
    /// Mark the server as draining: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst)
    }

    /// Requests received and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a request in flight until dropped (also when the handler panics or is cancelled).
struct InFlight(Arc<Health>);

impl InFlight {
    fn start(health: &Arc<Health>) -> Self {
        health.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(health.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn track_in_flight(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let _in_flight = InFlight::start(&state.health);
    next.run(request).await
}

impl AppState {
    /// State for the router.
    pub fn new(policy: Arc<Policy>, health: Arc<Health>) -> Self {
        Self { policy, health }
    }
}

/// The routes, with panic catching. Usable without TLS (`oneshot` tests).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            track_in_flight,
        ))
        .with_state(state)
}

/// A client mistake, answered with its status code and a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Content-Type is not `application/json`.
    #[error("unsupported Content-Type {0:?}: send the AdmissionReview as application/json")]
    UnsupportedMediaType(String),
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("request body too large: the limit is {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// The body did not arrive within [`BODY_READ_TIMEOUT`].
    #[error("request body not received within {BODY_READ_TIMEOUT:?}")]
    BodyTimeout,
    /// The connection failed while the body was read.
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    /// No body at all.
    #[error("empty request body: send an AdmissionReview")]
    EmptyBody,
    /// The body is not an answerable AdmissionReview.
    #[error(transparent)]
    Review(#[from] ReviewError),
}

impl ServeError {
    /// The HTTP status for this mistake.
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServeError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ServeError::BodyRead(_) | ServeError::EmptyBody | ServeError::Review(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = self.status();
        tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        text(status, format!("{self}\n"))
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn is_json(headers: &HeaderMap) -> Result<(), ServeError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ServeError::UnsupportedMediaType(value))
    }
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, ServeError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ServeError::PayloadTooLarge);
    }
    let collected = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await
    .map_err(|_| ServeError::BodyTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ServeError::PayloadTooLarge)
        }
        Err(error) => Err(ServeError::BodyRead(error.to_string())),
    }
}

async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ServeError> {
    is_json(&headers)?;
    let bytes = read_body(&headers, body).await?;
    if bytes.is_empty() {
        return Err(ServeError::EmptyBody);
    }
    let reviewed = admission::review(&state.policy, &bytes)?;
    let s = &reviewed.summary;
    let denied: Vec<String> = s.forbidden.iter().map(ToString::to_string).collect();
    tracing::info!(
        uid = %s.uid,
        operation = s.operation,
        kind = %s.kind,
        namespace = %s.namespace,
        name = %s.name,
        user = %s.user,
        dry_run = s.dry_run,
        verdict = s.verdict.as_str(),
        reason = s.reason.as_str(),
        denied = ?denied,
        "admission review"
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        reviewed.body,
    )
        .into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.health.is_ready() {
        text(StatusCode::OK, "ok\n".to_owned())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        )
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let allowed = match uri.path() {
        "/validate" => "POST",
        _ => "GET",
    };
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} not allowed on {}: use {allowed}\n",
            uri.path()
        ),
    );
    if let Ok(value) = allowed.parse() {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

async fn not_found(uri: axum::http::Uri) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {}: the webhook serves POST /validate, GET /healthz and GET /readyz\n",
            uri.path()
        ),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500 for that request only");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error while handling the request\n".to_owned(),
    )
}

/// Serve `app` over TLS on `listener` until `shutdown` completes, then stop accepting and let
/// in-flight requests finish (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ReloadingConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.current());
        let builder = builder.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls_stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => tls_stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let service = TowerToHyperService::new(app);
            let connection = builder
                .serve_connection(TokioIo::new(tls_stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within {DRAIN_TIMEOUT:?}; exiting anyway"
        );
    }
    Ok(())
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
