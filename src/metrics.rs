//! Prometheus metrics, exposed in the OpenMetrics text format by `prometheus-client`.
//!
//! One [`Metrics`] value owns its registry and is passed to whoever records (no globals), so
//! tests can read exactly what a server recorded. Every label set is bounded: operations, kinds
//! (the governed kinds, else `other`), verdicts, reject reasons, rollout modes, and denied-field
//! *groups* from a fixed list — never a namespace, name, user or raw field path.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission::{Decision, Outcome, Verdict};
use crate::policy::{FieldPath, GovernedKind, Segment};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label: how a review ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum VerdictLabel {
    /// Answered allowed.
    allowed,
    /// Answered denied by the policy.
    denied,
    /// Allowed because the mode (`warn`, `audit`) only reports: `enforce` would deny it.
    would_deny,
    /// Could not be judged: a malformed body (HTTP 4xx) or an undecidable review (denied in
    /// `enforce`, allowed in `warn` and `audit`, counted here in every mode).
    error,
}

/// Label: the kind a review was about — one of the policy's governed kinds, so the set is
/// bounded by the policy — without allocating per review.
#[derive(Clone, Debug)]
pub enum KindLabel {
    /// A governed kind (`PyTorchJob`).
    Governed(Arc<GovernedKind>),
    /// A kind the policy does not govern.
    Other,
    /// The body could not be read as a review.
    Unknown,
}

impl KindLabel {
    fn as_str(&self) -> &str {
        match self {
            KindLabel::Governed(kind) => &kind.kind,
            KindLabel::Other => "other",
            KindLabel::Unknown => "unknown",
        }
    }
}

impl PartialEq for KindLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for KindLabel {}

impl Hash for KindLabel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for KindLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Labels of `pytorchjob_guard_reviews_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// CREATE, UPDATE, DELETE, CONNECT or unknown.
    pub operation: &'static str,
    /// A governed kind (`PyTorchJob`), `other`, or `unknown`.
    pub kind: KindLabel,
    /// allowed, denied or error.
    pub verdict: VerdictLabel,
    /// `true` or `false`.
    pub dry_run: bool,
}

/// Labels of `pytorchjob_guard_mode_lowering_refused_total`: two rollout modes, so at most
/// nine series (three are possible).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoweringLabels {
    /// The mode the namespace label asked for (`warn`, `audit`).
    pub requested: &'static str,
    /// The mode the policy kept (`enforce`, `warn`).
    pub kept: &'static str,
}

/// Labels of `pytorchjob_guard_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `/validate`, `/healthz`, `/readyz` or `other`.
    pub route: &'static str,
    /// The HTTP status code.
    pub code: u16,
}

/// Why a request or connection was turned away.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RejectReason {
    /// Body over the limit (413).
    body_too_large,
    /// Content-Type not application/json (415).
    bad_content_type,
    /// Not an answerable AdmissionReview (400).
    malformed_review,
    /// The body did not arrive in time (408).
    timeout,
    /// The connection failed while the body was read.
    body_read_error,
    /// The TLS handshake failed or timed out.
    tls_handshake,
    /// The connection limit was reached; the client waited in the backlog.
    connection_limit,
    /// The body did not fit in the in-flight byte budget (`--max-in-flight-bytes`): 503.
    in_flight_bytes,
    /// A handler panicked (500 for that request only).
    panic,
    /// The webhook failed to answer a readable request (500): its own fault, never the client's.
    internal,
}

/// Why a review was not recorded (`serve --record`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RecordDropReason {
    /// The review is larger than `--record-max-file-bytes`.
    too_large,
    /// The writer is behind: the queue of records to write is full.
    queue_full,
    /// The record could not be written (disk full, permissions, not JSON).
    write_failed,
}

/// Labels of `pytorchjob_guard_record_drops_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordDropLabels {
    /// Why.
    pub reason: RecordDropReason,
}

/// Labels of `pytorchjob_guard_rejected_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Why.
    pub reason: RejectReason,
}

/// Labels of `pytorchjob_guard_denied_fields_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldGroupLabels {
    /// A top-level field group such as `spec.pytorchReplicaSpecs`, from a fixed list.
    pub group: &'static str,
}

/// Labels of `pytorchjob_guard_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `certificate` (and `policy` once a policy file exists).
    pub what: String,
    /// `success` or `error`.
    pub result: String,
}

/// Labels of `pytorchjob_guard_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: String,
    /// The git commit the binary was built from (`unknown` outside a release build).
    pub git_commit: String,
}

/// Field groups that get their own label value; anything else is `<parent>.other`.
const KNOWN_FIELD_GROUPS: &[&str] = &[
    "spec.pytorchReplicaSpecs",
    "spec.tfReplicaSpecs",
    "spec.mpiReplicaSpecs",
    "spec.paddleReplicaSpecs",
    "spec.xgbReplicaSpecs",
    "spec.jaxReplicaSpecs",
    "spec.mxReplicaSpecs",
    "spec.successPolicy",
    "spec.enableDynamicWorker",
    "spec.slotsPerWorker",
    "spec.mainContainer",
    "spec.jobMode",
    "spec.runPolicy",
    "spec.elasticPolicy",
    "spec.nprocPerNode",
    "spec.activeDeadlineSeconds",
    "spec.backoffLimit",
    "spec.cleanPodPolicy",
    "spec.ttlSecondsAfterFinished",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
    "metadata.generateName",
    "metadata.creationTimestamp",
    "apiVersion",
    "kind",
];

/// The bounded group a denied path is counted under: one of the known groups (the replica specs of every training-operator kind, the run policy, …), or
/// `spec.other`, `metadata.other`, `other`.
pub fn field_group(path: &FieldPath) -> &'static str {
    let key = |i: usize| match path.segments().get(i) {
        Some(Segment::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    let (first, second) = (key(0), key(1));
    let known = |name: &str| KNOWN_FIELD_GROUPS.iter().copied().find(|g| *g == name);
    if let (Some(first), Some(second)) = (first, second)
        && let Some(group) = KNOWN_FIELD_GROUPS
            .iter()
            .copied()
            .find(|g| g.split_once('.') == Some((first, second)))
    {
        return group;
    }
    match first {
        Some(first) => known(first).unwrap_or(match first {
            "spec" => "spec.other",
            "metadata" => "metadata.other",
            _ => "other",
        }),
        None => "other",
    }
}

/// The longest `timeoutSeconds` the API server accepts for a webhook: the latency buckets reach
/// past it, so a p99 computed from them can approach any configured timeout (alerts compare it
/// with the manifests' `timeoutSeconds`) instead of stopping at the last finite bucket.
pub const MAX_WEBHOOK_TIMEOUT_SECONDS: f64 = 30.0;

/// Latency buckets from 50 µs doubling to ~52 s: small decisions take microseconds, a review of
/// a job near etcd's size limit milliseconds, and the API server gives up after the webhook's
/// `timeoutSeconds` (at most [`MAX_WEBHOOK_TIMEOUT_SECONDS`]).
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 21)
}

/// Register `metric` under `name` and keep a handle to it.
fn register<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Every metric of the webhook and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    review_duration: Histogram,
    http_duration: Family<HttpLabels, Histogram>,
    in_flight: Gauge,
    rejected: Family<RejectLabels, Counter>,
    denied_fields: Family<FieldGroupLabels, Counter>,
    lowering_refused: Family<LoweringLabels, Counter>,
    cert_expiry: Gauge<i64, std::sync::atomic::AtomicI64>,
    reloads: Family<ReloadLabels, Counter>,
    connections: Gauge,
    record_drops: Family<RecordDropLabels, Counter>,
    log_drops: Counter,
    log_drop_source: LogDropSource,
}

/// Where the dropped-log-line count comes from (the log writer's own counter), read at scrape.
#[derive(Default)]
struct LogDropSource(std::sync::Mutex<Option<Box<dyn Fn() -> u64 + Send + Sync>>>);

impl std::fmt::Debug for LogDropSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogDropSource")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered under the `pytorchjob_guard_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pytorchjob_guard");
        let reviews = register(
            &mut registry,
            "reviews",
            "Admission reviews answered, by operation, kind, verdict and dry run",
            Family::<ReviewLabels, Counter>::default(),
        );
        let review_duration = register(
            &mut registry,
            "review_duration_seconds",
            "Time to decode, decide and encode one review (no network)",
            Histogram::new(latency_buckets()),
        );
        let http_duration = register(
            &mut registry,
            "http_request_duration_seconds",
            "Time from request headers to response, by route and status code",
            Family::<HttpLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(latency_buckets())
            }),
        );
        let in_flight = register(
            &mut registry,
            "requests_in_flight",
            "HTTP requests being handled",
            Gauge::default(),
        );
        let rejected = register(
            &mut registry,
            "rejected_requests",
            "Requests or connections turned away, by reason",
            Family::<RejectLabels, Counter>::default(),
        );
        let denied_fields = register(
            &mut registry,
            "denied_fields",
            "Fields named in denials, by top-level field group",
            Family::<FieldGroupLabels, Counter>::default(),
        );
        let lowering_refused = register(
            &mut registry,
            "mode_lowering_refused",
            "Reviews whose namespace label asked for a weaker mode than the policy lets it select, by the mode asked for and the mode kept",
            Family::<LoweringLabels, Counter>::default(),
        );
        let cert_expiry = register(
            &mut registry,
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix seconds)",
            Gauge::<i64, std::sync::atomic::AtomicI64>::default(),
        );
        let reloads = register(
            &mut registry,
            "reloads",
            "Reloads of changed certificate or policy files, by what and result",
            Family::<ReloadLabels, Counter>::default(),
        );
        let connections = register(
            &mut registry,
            "open_connections",
            "Open TLS connections",
            Gauge::default(),
        );
        let record_drops = register(
            &mut registry,
            "record_drops",
            "Governed reviews not recorded by --record, by reason",
            Family::<RecordDropLabels, Counter>::default(),
        );
        let log_drops = register(
            &mut registry,
            "log_lines_dropped",
            "Log lines dropped because the log writer was too far behind (never blocks a review)",
            Counter::default(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                git_commit: option_env!("PYTORCHJOB_GUARD_GIT_COMMIT")
                    .unwrap_or("unknown")
                    .to_owned(),
            })
            .set(1);
        registry.register("build_info", "Build information (always 1)", build_info);
        Self {
            registry,
            reviews,
            review_duration,
            http_duration,
            in_flight,
            rejected,
            denied_fields,
            lowering_refused,
            cert_expiry,
            reloads,
            connections,
            record_drops,
            log_drops,
            log_drop_source: LogDropSource::default(),
        }
    }

    /// Count the log writer's dropped lines, as `source` reports them, at every scrape.
    pub fn count_log_drops_from(&self, source: impl Fn() -> u64 + Send + Sync + 'static) {
        *self.lock_log_drop_source() = Some(Box::new(source));
    }

    fn lock_log_drop_source(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<Box<dyn Fn() -> u64 + Send + Sync>>> {
        match self.log_drop_source.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        // Bring the dropped-log-line counter up to the writer's count (under the lock, so two
        // scrapes cannot add the same drops twice).
        if let Some(source) = self.lock_log_drop_source().as_ref() {
            let (now, seen) = (source(), self.log_drops.get());
            if now > seen {
                self.log_drops.inc_by(now - seen);
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Record one answered review and how long deciding it took.
    pub fn observe_review(&self, decision: &Decision, seconds: f64) {
        let summary = &decision.summary;
        let kind = match &summary.governed {
            Some(governed) => KindLabel::Governed(governed.clone()),
            None => KindLabel::Other,
        };
        let verdict = match (&decision.outcome, decision.verdict()) {
            (Outcome::Undecidable(_), _) => VerdictLabel::error,
            (_, Verdict::Allowed) => VerdictLabel::allowed,
            (_, Verdict::Denied) => VerdictLabel::denied,
            (_, Verdict::WouldDeny) => VerdictLabel::would_deny,
        };
        self.reviews
            .get_or_create(&ReviewLabels {
                operation: summary.operation_name(),
                kind,
                verdict,
                dry_run: summary.dry_run,
            })
            .inc();
        self.review_duration.observe(seconds);
        if let Some(refused) = decision.refused_lowering() {
            self.lowering_refused
                .get_or_create(&LoweringLabels {
                    requested: refused.requested.as_str(),
                    kept: refused.kept.as_str(),
                })
                .inc();
        }
        for path in decision.outcome.forbidden() {
            self.denied_fields
                .get_or_create(&FieldGroupLabels {
                    group: field_group(path),
                })
                .inc();
        }
    }

    /// Record a body that could not be reviewed at all.
    pub fn observe_unreviewable(&self, reason: RejectReason) {
        self.reject(reason);
        if reason == RejectReason::malformed_review {
            self.reviews
                .get_or_create(&ReviewLabels {
                    operation: "unknown",
                    kind: KindLabel::Unknown,
                    verdict: VerdictLabel::error,
                    dry_run: false,
                })
                .inc();
        }
    }

    /// Count a review that was not recorded.
    pub fn record_dropped(&self, reason: RecordDropReason) {
        self.record_drops
            .get_or_create(&RecordDropLabels { reason })
            .inc();
    }

    /// Count a rejected request or connection.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// Record one HTTP request's duration (`route`: one of the server's routes, or `other`).
    pub fn observe_http(&self, route: &'static str, code: u16, seconds: f64) {
        self.http_duration
            .get_or_create(&HttpLabels { route, code })
            .observe(seconds);
    }

    /// The requests-in-flight gauge.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The open-connections gauge.
    pub fn connections(&self) -> &Gauge {
        &self.connections
    }

    /// Record a certificate reload attempt; `not_after` is the served certificate's expiry.
    pub fn observe_certificate(&self, success: bool, not_after: Option<i64>) {
        self.reloads
            .get_or_create(&ReloadLabels {
                what: "certificate".to_owned(),
                result: if success { "success" } else { "error" }.to_owned(),
            })
            .inc();
        if let Some(not_after) = not_after {
            self.cert_expiry.set(not_after);
        }
    }

    /// Record a policy reload attempt.
    pub fn observe_policy(&self, success: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                what: "policy".to_owned(),
                result: if success { "success" } else { "error" }.to_owned(),
            })
            .inc();
    }

    /// Set the serving certificate's expiry without counting a reload (at start).
    pub fn set_certificate_expiry(&self, not_after: i64) {
        self.cert_expiry.set(not_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_log_lines_are_counted_once_each_at_scrape() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let metrics = Metrics::new();
        let line = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("pytorchjob_guard_log_lines_dropped_total "))
                .map(|n| n.parse::<u64>().unwrap())
        };
        assert_eq!(line(&metrics.encode()), Some(0), "exported before any drop");
        let dropped = Arc::new(AtomicU64::new(0));
        let source = dropped.clone();
        metrics.count_log_drops_from(move || source.load(Ordering::SeqCst));
        dropped.store(3, Ordering::SeqCst);
        assert_eq!(line(&metrics.encode()), Some(3));
        assert_eq!(
            line(&metrics.encode()),
            Some(3),
            "a second scrape adds nothing"
        );
        dropped.store(5, Ordering::SeqCst);
        assert_eq!(line(&metrics.encode()), Some(5));
    }

    #[test]
    fn latency_buckets_reach_past_the_longest_webhook_timeout() {
        let finite: Vec<f64> = latency_buckets().collect();
        assert!(
            finite[0] <= 0.000_1,
            "small reviews stay visible: {finite:?}"
        );
        let last = finite[finite.len() - 1];
        let before = finite[finite.len() - 2];
        assert!(last > MAX_WEBHOOK_TIMEOUT_SECONDS, "{last}");
        assert!(
            before < MAX_WEBHOOK_TIMEOUT_SECONDS,
            "no bucket wasted past it: {before}"
        );
        let text = Metrics::new().encode();
        let le = |b: f64| format!("pytorchjob_guard_review_duration_seconds_bucket{{le=\"{b}\"}}");
        assert!(text.contains(&le(last)), "exported: {text}");
    }

    #[test]
    fn field_groups_are_bounded() {
        let group = |s: &str| field_group(&s.parse().unwrap());
        assert_eq!(
            group("spec.pytorchReplicaSpecs.Worker.replicas"),
            "spec.pytorchReplicaSpecs"
        );
        assert_eq!(group("spec.runPolicy.backoffLimit"), "spec.runPolicy");
        assert_eq!(group("metadata.name"), "metadata.name");
        assert_eq!(group("spec.someUserKey12345.x"), "spec.other");
        assert_eq!(group("metadata.weird"), "metadata.other");
        assert_eq!(group("kind"), "kind");
        assert_eq!(group("surprise.x"), "other");
    }
}
