//! The HTTPS server: axum routes over rustls, HTTP/1.1 and HTTP/2 on one listener.
//!
//! Routes: `POST /validate` (the API server appends `?timeout=10s`; the query is ignored),
//! `GET /healthz`, `GET /readyz`. Handlers are short: reserve the body's bytes in the in-flight
//! budget (the `budget` module), read a bounded body, hand it to [`admission::review`], log the
//! decision, answer, give the bytes back. Every client mistake is one [`ServeError`]
//! variant with its 4xx status and a message; a panic in a handler is a 500 for that request only.
//!
//! [`serve`] (in `listener`) takes a bound listener and a shutdown future from its caller
//! (tests bind port 0), bounds every connection (handshake, header and idle timeouts, a
//! connection limit at which the oldest idle connection makes room for a new client), and on
//! shutdown reports unready, keeps serving for the drain delay, stops accepting and lets
//! in-flight requests finish. Every bound is a field of [`Limits`], whose defaults are the
//! constants below; the state carries them. [`serve_metrics`] serves `/metrics`, `/healthz` and
//! `/readyz` in plain HTTP on a second listener, off the TLS port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tower_http::catch_panic::CatchPanicLayer;

mod budget;
mod connections;
mod listener;

use budget::{Budget, Refused, Reservation};
pub use budget::{SMALL_BODY_BYTES, SMALL_SHARE};

pub use listener::{serve, serve_metrics, shutdown_signal};

use crate::admission::{self, Decision, Outcome, ReviewError, Verdict};
use crate::metrics::{self, Metrics, RejectReason};
use crate::policy::{FieldPath, MAX_PATHS_IN_MESSAGE, Mode, Policy};
use crate::record::Recorder;
use crate::reload::PolicyStore;

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
/// How long a connection may stay open without a request in flight (after its handshake, or
/// since its last request) before it is closed gracefully. It frees the slot of a client that
/// vanished or never spoke; HTTP/1.1 connections are already closed by [`HEADER_READ_TIMEOUT`]
/// when no next request arrives, so this bounds HTTP/2 and the protocol-detection phase.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Open connections at once. When all are taken, a new client makes the oldest idle connection
/// (no request in flight, including handshakes in progress) close, so idle connections cannot
/// lock new clients out; otherwise it waits in the listen backlog. The API server keeps a few
/// keep-alive connections per replica, so this is far above normal use. Each connection that
/// has served a request holds about 30 KiB (TLS and HTTP buffers, measured over HTTP/1.1), so
/// 256 of them fit in [`BASELINE_MEMORY_BYTES`]; 1024 would take 30 MiB of the Deployment's
/// memory limit outside the in-flight budget.
pub const MAX_CONNECTIONS: usize = 256;
/// Concurrent HTTP/2 streams per connection.
pub const MAX_H2_STREAMS: u32 = 128;
/// Bytes of request bodies held at once by the requests being read or judged, over every
/// connection and stream (`serve --max-in-flight-bytes`). A request that does not fit is
/// refused at once with 503 and `Retry-After`; see the `budget` module for how requests share
/// it ([`SMALL_SHARE`] of it is kept for bodies up to [`SMALL_BODY_BYTES`]).
/// [`MAX_CONNECTIONS`] × [`MAX_H2_STREAMS`] × [`MAX_BODY_BYTES`] is far beyond any pod's
/// memory; this is what bounds it. The default fits the Deployment's 256 MiB memory limit:
/// [`BASELINE_MEMORY_BYTES`] + 18 MiB × [`PEAK_MEMORY_PER_BODY_BYTE`] = 248 MiB. It takes two
/// bodies of [`MAX_BODY_BYTES`] at a time beside the small reviews, or 32 connections each
/// sending a large job's review of half a MiB (the load benchmark's large row).
pub const MAX_IN_FLIGHT_BYTES: usize = 18 * 1024 * 1024;
/// Peak resident memory per byte of request body in flight, measured on the release and debug
/// binaries (one 6 MiB body to a fresh process, its `VmHWM` before and after): 1.2 for a review
/// padded with one long string, 1.6 for one with a long `env` list in both objects (the body
/// once, the index, the decoded envelope), 6.2 for one whose objects hold the same dense array
/// of numbers, and 10.2 for 6 MiB of `[0,0,…]` (the index takes 12 bytes per JSON value, in a
/// vector that grows by doubling). No separate charge for judging: the budget counts the body's
/// bytes and this factor covers what judging them allocates, so the worst shape sets it, with
/// a margin. A memory limit must be at least [`BASELINE_MEMORY_BYTES`] plus this many times the
/// budget (`tests/manifests.rs` holds the Deployment to it).
pub const PEAK_MEMORY_PER_BODY_BYTE: usize = 12;
/// Resident memory of the server beyond its requests' bodies, for the release binary: 9 MiB
/// idle (measured; 21 MiB for a debug build), 8 MiB for [`MAX_CONNECTIONS`] connections that
/// each served a request (measured: 1000 took 30 MiB), 8 MiB for the log queue at its byte
/// bound beside the batch being written (`telemetry::LOG_QUEUE_BYTES` twice, in vectors that
/// grow by doubling), and 7 MiB to spare.
pub const BASELINE_MEMORY_BYTES: usize = 32 * 1024 * 1024;
/// How long in-flight requests get to finish after shutdown starts (and how long an idle or
/// evicted connection gets to close gracefully before it is dropped).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Every bound the server enforces. [`Limits::default`] is the production set (the constants
/// above, each with its reason); tests shorten the timeouts to prove them quickly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// [`MAX_BODY_BYTES`]: larger bodies get 413.
    pub max_body_bytes: usize,
    /// [`BODY_READ_TIMEOUT`]: a body not received in time gets 408.
    pub body_read_timeout: Duration,
    /// [`TLS_HANDSHAKE_TIMEOUT`]: a handshake not completed in time is dropped.
    pub tls_handshake_timeout: Duration,
    /// [`HEADER_READ_TIMEOUT`]: HTTP/1.1 headers not received in time close the connection.
    pub header_read_timeout: Duration,
    /// [`IDLE_TIMEOUT`]: a connection without a request for this long is closed.
    pub idle_timeout: Duration,
    /// [`MAX_CONNECTIONS`]: open connections at once (at least 1).
    pub max_connections: usize,
    /// [`MAX_H2_STREAMS`]: concurrent HTTP/2 streams per connection.
    pub max_h2_streams: u32,
    /// [`MAX_IN_FLIGHT_BYTES`]: request body bytes held at once; a request that does not fit
    /// gets 503.
    pub max_in_flight_bytes: usize,
    /// [`DRAIN_TIMEOUT`]: how long in-flight requests get after shutdown starts.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: MAX_BODY_BYTES,
            body_read_timeout: BODY_READ_TIMEOUT,
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_h2_streams: MAX_H2_STREAMS,
            max_in_flight_bytes: MAX_IN_FLIGHT_BYTES,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    policy: Arc<PolicyStore>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    limits: Arc<Limits>,
    budget: Budget,
    recorder: Option<Arc<Recorder>>,
}

/// `/healthz` fails when the accept loop has not ticked for this long: it is wedged or gone.
pub const LIVENESS_STALE_AFTER: Duration = Duration::from_secs(10);
/// How often the accept loop proves it is alive.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Health as the routes report it: ready until shutdown begins, live while the accept loop
/// ticks; and the requests in flight.
#[derive(Debug)]
pub struct Health {
    shutting_down: AtomicBool,
    in_flight: AtomicUsize,
    started: Instant,
    /// Milliseconds after `started` of the accept loop's last tick.
    last_tick_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            shutting_down: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// Mark the server as draining: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200: not shutting down (a certificate is always loaded: the
    /// server does not start without one, and a bad new one never replaces it).
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst)
    }

    /// Whether the accept loop ticked recently.
    pub fn is_live(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_tick_ms.load(Ordering::SeqCst))
            < LIVENESS_STALE_AFTER.as_millis() as u64
    }

    fn tick(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_tick_ms.store(now, Ordering::SeqCst);
    }

    /// Requests received and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

impl AppState {
    /// State for the routers, with a fixed policy.
    pub fn new(policy: Arc<Policy>, health: Arc<Health>, metrics: Arc<Metrics>) -> Self {
        let store = Arc::new(PolicyStore::fixed(Policy::clone(&policy)));
        Self::with_policy_store(store, health, metrics)
    }

    /// State for the routers, with the policy from a (reloading) store.
    pub fn with_policy_store(
        policy: Arc<PolicyStore>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limits = Limits::default();
        Self {
            policy,
            health,
            metrics,
            budget: Budget::new(limits.max_in_flight_bytes),
            limits: Arc::new(limits),
            recorder: None,
        }
    }

    /// The same state, recording every governed review and its answer.
    pub fn with_recorder(mut self, recorder: Arc<Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// The same state with other bounds (the default is [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.budget = Budget::new(limits.max_in_flight_bytes);
        self.limits = Arc::new(limits);
        self
    }

    /// The bounds the routes and [`serve`] enforce.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The shared health.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// Counts a request in flight until dropped (also when the handler panics or is cancelled).
struct InFlight(AppState);

impl InFlight {
    fn start(state: &AppState) -> Self {
        state.health.in_flight.fetch_add(1, Ordering::SeqCst);
        state.metrics.in_flight().inc();
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.health.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.in_flight().dec();
    }
}

/// Middleware: requests in flight and the HTTP latency histogram.
async fn observe_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let _in_flight = InFlight::start(&state);
    let started = Instant::now();
    let route = route_label(request.uri().path());
    let response = next.run(request).await;
    state.metrics.observe_http(
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The review paths and the mode each asks for: `/validate` none (the policy's mode for the
/// namespace), and `/validate/<mode>` that mode, which applies when it is stricter than the
/// namespace's and, when weaker, only if the policy's `namespaceLabel.mayLowerTo` lists it
/// ([`Policy::effective_mode`]). The manifests register one webhook entry per path, each
/// selecting namespaces by their `pytorchjob-guard.kubeflow.org/mode` label, so the label picks
/// the path and the policy keeps the floor.
pub const REVIEW_ROUTES: [(&str, Option<Mode>); 4] = [
    ("/validate", None),
    ("/validate/enforce", Some(Mode::Enforce)),
    ("/validate/warn", Some(Mode::Warn)),
    ("/validate/audit", Some(Mode::Audit)),
];

/// The route label of a request path, for metrics: one of the routes, or `other` (bounded).
fn route_label(path: &str) -> &'static str {
    let review = REVIEW_ROUTES.iter().map(|(route, _)| *route);
    review
        .chain(["/healthz", "/readyz"])
        .find(|route| *route == path)
        .unwrap_or("other")
}

/// The webhook's routes, with panic catching and metrics. Usable without TLS (`oneshot` tests).
pub fn router(state: AppState) -> Router {
    let mut routes = Router::new();
    for (path, mode) in REVIEW_ROUTES {
        routes = routes.route(
            path,
            post(
                // The whole request, split here: the header map moves, it is not cloned.
                move |State(state): State<AppState>, request: Request| {
                    let (parts, body) = request.into_parts();
                    validate(state, mode, parts.headers, body)
                },
            ),
        );
    }
    let routes = routes
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found);
    with_safety_layers(routes, state)
}

/// Wrap routes the way [`router`] wraps the webhook's: a panic in a handler becomes a 500 for
/// that request only (counted as `rejected_requests_total{reason="panic"}`, the connection and
/// the process live on), and every request is counted in flight and timed.
pub fn with_safety_layers(routes: Router<AppState>, state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let on_panic = move |_: Box<dyn std::any::Any + Send + 'static>| {
        metrics.reject(RejectReason::panic);
        tracing::error!("a request handler panicked; answered 500 for that request only");
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while handling the request\n".to_owned(),
        )
    };
    routes
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe_request,
        ))
        .with_state(state)
}

/// The metrics listener's routes: `/metrics`, `/healthz`, `/readyz`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// A client mistake, answered with its status code and a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Content-Type is not `application/json`.
    #[error("unsupported Content-Type {0:?}: send the AdmissionReview as application/json")]
    UnsupportedMediaType(String),
    /// The body is larger than [`Limits::max_body_bytes`] (the limit).
    #[error("request body too large: the limit is {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive within [`Limits::body_read_timeout`] (the timeout).
    #[error("request body not received within {0:?}")]
    BodyTimeout(Duration),
    /// The connection failed while the body was read.
    #[error("cannot read the request body")]
    BodyRead(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No body at all.
    #[error("empty request body: send an AdmissionReview")]
    EmptyBody,
    /// The body does not fit in what is left of [`Limits::max_in_flight_bytes`] (the body's
    /// bytes so far, the budget).
    #[error(
        "too many request bytes in flight: {0} more do not fit in the server's budget of {1}; retry shortly"
    )]
    InFlightBudget(usize, usize),
    /// The body is not an answerable AdmissionReview.
    #[error(transparent)]
    Review(#[from] ReviewError),
}

impl ServeError {
    /// The HTTP status for this mistake.
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServeError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ServeError::InFlightBudget(..) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Review(error) if error.is_internal() => StatusCode::INTERNAL_SERVER_ERROR,
            ServeError::BodyRead(_) | ServeError::EmptyBody | ServeError::Review(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

impl ServeError {
    /// The reject reason counted in metrics.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            ServeError::UnsupportedMediaType(_) => RejectReason::bad_content_type,
            ServeError::PayloadTooLarge(_) => RejectReason::body_too_large,
            ServeError::BodyTimeout(_) => RejectReason::timeout,
            ServeError::InFlightBudget(..) => RejectReason::in_flight_bytes,
            ServeError::BodyRead(_) => RejectReason::body_read_error,
            ServeError::Review(error) if error.is_internal() => RejectReason::internal,
            ServeError::EmptyBody | ServeError::Review(_) => RejectReason::malformed_review,
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = admission::error_chain(&self);
        if matches!(self, ServeError::InFlightBudget(..)) {
            // The server's load, not its fault: no error line per refusal (a flood of them
            // would be the load's second cost); the metric counts them.
            tracing::debug!(status = status.as_u16(), error = %message, "request refused");
            let mut response = text(status, format!("{message}\n"));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return response;
        }
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %message, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %message, "request rejected");
        }
        text(status, format!("{message}\n"))
    }
}

impl From<Refused> for ServeError {
    fn from(refused: Refused) -> Self {
        ServeError::InFlightBudget(refused.wanted, refused.budget)
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

/// Read the body within [`Limits::max_body_bytes`] and [`Limits::body_read_timeout`], holding
/// its bytes in `reservation`: the declared `Content-Length` up front, else as chunks arrive.
async fn read_body(
    limits: &Limits,
    headers: &HeaderMap,
    body: Body,
    reservation: &mut Reservation,
) -> Result<Bytes, ServeError> {
    let max = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let declared = match declared {
        Some(len) if len > max as u64 => return Err(ServeError::PayloadTooLarge(max)),
        Some(len) => usize::try_from(len).ok(),
        None => None,
    };
    if let Some(len) = declared {
        reservation.grow_to(len)?;
    }
    tokio::time::timeout(
        limits.body_read_timeout,
        collect(body, max, declared, reservation),
    )
    .await
    .map_err(|_| ServeError::BodyTimeout(limits.body_read_timeout))?
}

/// The body's chunks in one buffer, at most `max` bytes, each chunk reserved before it is
/// kept. A body that arrives in one chunk is kept as it is; otherwise one buffer of the
/// declared length (when there is one) takes the chunks, so a body is held once.
async fn collect(
    mut body: Body,
    max: usize,
    declared: Option<usize>,
    reservation: &mut Reservation,
) -> Result<Bytes, ServeError> {
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| ServeError::BodyRead(Box::new(error)))?;
        // Trailers carry no body.
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(chunk.len());
        if len > max {
            return Err(ServeError::PayloadTooLarge(max));
        }
        reservation.grow_to(len)?;
        if let Some(earlier) = first.take() {
            // A second chunk: from now on the chunks are joined (`joined` is still empty).
            joined.reserve(declared.unwrap_or(len).max(len));
            joined.extend_from_slice(&earlier);
            joined.extend_from_slice(&chunk);
        } else if len == chunk.len() {
            // The first bytes (`joined` is empty: every earlier chunk was).
            first = Some(chunk);
        } else {
            joined.extend_from_slice(&chunk);
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

async fn validate(state: AppState, mode: Option<Mode>, headers: HeaderMap, body: Body) -> Response {
    match review_request(&state, mode, &headers, body).await {
        Ok(response) => response,
        Err(error) => {
            state.metrics.observe_unreviewable(error.reject_reason());
            error.into_response()
        }
    }
}

async fn review_request(
    state: &AppState,
    mode: Option<Mode>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ServeError> {
    is_json(headers)?;
    // Held until the answer is built: the body, and what judging it allocates, are in flight
    // until then.
    let mut reservation = state.budget.reservation();
    let bytes = read_body(&state.limits, headers, body, &mut reservation).await?;
    if bytes.is_empty() {
        return Err(ServeError::EmptyBody);
    }
    let started = Instant::now();
    let policy = state.policy.current();
    let reviewed = admission::review_with_label(&policy, mode, &bytes)?;
    let decision = &reviewed.decision;
    state
        .metrics
        .observe_review(decision, started.elapsed().as_secs_f64());
    log_decision(decision);
    if let Some(recorder) = &state.recorder
        && decision.summary.governed.is_some()
    {
        recorder.submit(bytes, reviewed.body.clone());
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        reviewed.body,
    )
        .into_response())
}

/// One event per decision: who asked what, the mode and the verdict (and, when the namespace
/// label's lowering was refused, the mode it asked for in `mode_lowering_refused`). Never object
/// contents. The paths denied are listed like the denial's message: the first
/// [`MAX_PATHS_IN_MESSAGE`] in `denied`, how many more in `denied_more`, so a line stays short
/// however much changed. A review that could not be judged and was let through (`warn`,
/// `audit`) is also logged as an error.
pub fn log_decision(decision: &Decision) {
    let s = &decision.summary;
    let forbidden = decision.outcome.forbidden();
    let listed = forbidden.len().min(MAX_PATHS_IN_MESSAGE);
    // Strings as `&str`, not `%`: written as they are, without a round through `fmt`. The kind
    // path is pushed together here, which costs less than formatting it inside the event.
    let mut kind = String::with_capacity(64);
    s.kind_path().write_to(&mut kind);
    tracing::info!(
        uid = s.uid.as_str(),
        operation = s.operation_name(),
        kind = kind.as_str(),
        namespace = s.namespace.as_deref().unwrap_or_default(),
        name = s.name.as_str(),
        user = s.user.as_str(),
        dry_run = s.dry_run,
        mode = decision.mode().as_str(),
        mode_lowering_refused = decision.refused_lowering().map(|r| r.requested.as_str()),
        verdict = decision.verdict().as_str(),
        reason = decision.reason().as_str(),
        denied = ?AsStrings(&forbidden[..listed]),
        denied_more = forbidden.len() - listed,
        "admission review"
    );
    if let (Outcome::Undecidable(cause), Verdict::WouldDeny) =
        (&decision.outcome, decision.verdict())
    {
        tracing::error!(
            uid = %s.uid,
            mode = decision.mode().as_str(),
            error = %admission::error_chain(cause),
            "admission review could not be judged; allowed only because of the mode"
        );
    }
}

/// Paths written as the `Debug` of their `Vec<String>` would be (`["a.b", "c[0]"]`), without
/// building it.
struct AsStrings<'a>(&'a [FieldPath]);

impl std::fmt::Debug for AsStrings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(AsString)).finish()
    }
}

/// A path written as the `Debug` of its `String`: quoted, escaped as `str` escapes.
struct AsString<'a>(&'a FieldPath);

impl std::fmt::Debug for AsString<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(64);
        self.0.write_to(&mut text);
        f.write_char('"')?;
        EscapeDebug(f).write_str(&text)?;
        f.write_char('"')
    }
}

/// What `str`'s `Debug` writes between its quotes.
struct EscapeDebug<'a, 'f>(&'a mut std::fmt::Formatter<'f>);

impl std::fmt::Write for EscapeDebug<'_, '_> {
    fn write_str(&mut self, piece: &str) -> std::fmt::Result {
        if piece
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return self.0.write_str(piece);
        }
        let quoted = format!("{piece:?}");
        self.0.write_str(&quoted[1..quoted.len() - 1])
    }
}

/// A probe's answer: 200 `ok`, or 503 with why not.
fn probe(ok: bool, why_not: &str) -> Response {
    if ok {
        text(StatusCode::OK, "ok\n".to_owned())
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, format!("{why_not}\n"))
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    probe(state.health.is_live(), "the accept loop is not running")
}

async fn readyz(State(state): State<AppState>) -> Response {
    probe(state.health.is_ready(), "shutting down")
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let allowed = match route_label(uri.path()) {
        "/healthz" | "/readyz" => "GET",
        _ => "POST",
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
            "no route for {}: the webhook serves POST /validate (and /validate/enforce, /validate/warn, /validate/audit), GET /healthz and GET /readyz\n",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Keys full of what escaping is about, and any string at all.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z\"\\\\\n\t'\u{7f}é\u{301}\u{200b}.\\[\\]]{0,6}",
            any::<String>()
        ]
    }

    proptest! {
        /// The decision log's `denied` field is what the `Debug` of the paths' strings says, for
        /// any keys: quotes, backslashes, control characters, non-ASCII.
        #[test]
        fn denied_paths_are_written_as_their_strings_debug(
            keys in prop::collection::vec(prop::collection::vec(key(), 0..4), 0..4),
            plain in prop::collection::vec("[a-zA-Z_][a-zA-Z0-9_]{0,8}", 1..4),
        ) {
            let mut paths: Vec<FieldPath> = keys
                .iter()
                .map(|path| path.iter().fold(FieldPath::root(), |at, key| at.key(key).index(1)))
                .collect();
            paths.push(plain.iter().fold(FieldPath::root(), |at, key| at.key(key)));
            let strings: Vec<String> = paths.iter().map(ToString::to_string).collect();
            prop_assert_eq!(format!("{:?}", AsStrings(&paths)), format!("{strings:?}"));
        }
    }
}
