//! Glue between the API server's `AdmissionReview` and the decision core, in three steps, one
//! module each:
//!
//! | step | module | in → out |
//! | --- | --- | --- |
//! | read | [`request`] | body bytes → [`Request`] (kube's and k8s-openapi's types for the envelope, the objects as borrowed raw JSON), or what a loose reading still finds when kube's types reject it |
//! | decide | [`decision`] | request + [`Policy`] → [`Decision`]: who asked what ([`Summary`]) and the typed [`Outcome`] |
//! | render | [`response`] | decision → the response AdmissionReview's bytes, in exactly one place |
//!
//! [`review`] chains them: the one code path behind every front door — the `/validate` route,
//! the `review`, `check` and `replay` commands — so they cannot disagree. Metrics, the decision
//! log, `record` and `replay` read the [`Decision`]; nothing re-derives it from strings or
//! re-parses the response.
//!
//! With the feature `oracle` (tests and the fuzz targets), `oracle` holds [`review`] to the
//! rule on whole bodies: it reads a body with serde_json alone, judges it with
//! `policy::oracle`, and says where production's answer differs (`oracle::check`).
//!
//! Pure: no I/O and no async. It touches only the policy it is given.

pub mod decision;
#[cfg(any(test, feature = "oracle"))]
pub mod oracle;
pub mod request;
pub mod response;

pub use decision::{Decision, Outcome, Reason, Skip, Summary, Undecidable, Verdict};
pub use request::{Request, ReviewVersion};

use crate::policy::{Mode, Policy};

/// Why a body could not be answered with an AdmissionReview.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not JSON, or not shaped like an AdmissionReview, and has no request uid to
    /// answer to. The client's mistake (a 400 over HTTP, exit code 2 from the command line):
    /// the API server never sends such a body.
    #[error("the body is not an AdmissionReview")]
    Malformed(#[source] serde_json::Error),
    /// A well-formed document of another type or version. The client's mistake.
    #[error(
        "unsupported review type {api_version:?}/{kind:?}: expected kind AdmissionReview of admission.k8s.io/v1 or admission.k8s.io/v1beta1"
    )]
    UnsupportedType {
        /// The `apiVersion` that was sent.
        api_version: String,
        /// The `kind` that was sent.
        kind: String,
    },
    /// An AdmissionReview without a `request` (a response, or an empty review). The client's
    /// mistake.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    /// A request with an empty `uid`: the API server could not match the answer. The client's
    /// mistake.
    #[error("the AdmissionReview request has an empty uid")]
    EmptyUid,
    /// The response could not be encoded: our failure, never the client's (a 500 over HTTP).
    #[error("cannot encode the response")]
    Encode(#[source] std::fmt::Error),
}

impl ReviewError {
    /// Whether the failure is the webhook's own (not the client's mistake).
    pub fn is_internal(&self) -> bool {
        matches!(self, ReviewError::Encode(_))
    }
}

/// The answer to one review: the response document (serialized) and the decision it renders.
#[derive(Debug)]
pub struct Reviewed {
    /// The response AdmissionReview as JSON, exactly what `/validate` sends.
    pub body: Vec<u8>,
    /// What was decided, for logs, metrics and records.
    pub decision: Decision,
}

/// Decode an AdmissionReview, decide it under `policy` in the policy's mode for its namespace
/// (the plain `/validate` path), and serialize the response review.
pub fn review(policy: &Policy, body: &[u8]) -> Result<Reviewed, ReviewError> {
    review_with_label(policy, None, body)
}

/// [`review`] for a namespace whose label asked for `label` (the path `/validate/<mode>`, or
/// `--mode`): the label's mode applies when it is stricter than the namespace's, and when it is
/// weaker only if the policy's `namespaceLabel.mayLowerTo` lists it ([`Policy::effective_mode`]).
pub fn review_with_label(
    policy: &Policy,
    label: Option<Mode>,
    body: &[u8],
) -> Result<Reviewed, ReviewError> {
    let decision = match request::read(body)? {
        request::Read::Typed(request) => decision::decide(policy, label, &request),
        request::Read::Loose(loose, error) => decision::decide_loose(policy, label, &loose, error),
    };
    let body = response::render(&decision, policy).map_err(ReviewError::Encode)?;
    Ok(Reviewed { body, decision })
}

/// An error and its sources, joined with `: ` (what `anyhow`'s `{:#}` prints), for the one-line
/// messages users read: a denial's cause, an HTTP 400's body.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
