//! Glue between the API server's `AdmissionReview` and the decision core.
//!
//! [`review`] is the one code path behind every front door — the `/validate` route, the
//! `review` command and the `check` command — so they cannot disagree. It decodes the body with
//! kube's admission types (through `AdmissionReview::try_into`, so the response echoes the
//! request's `admission.k8s.io/v1` or `v1beta1`), asks [`Policy`] about governed UPDATEs, and
//! builds the response review: allowed, or denied with `code: 400`, `reason: BadRequest`, a
//! message that names every offending field, and one `details.causes` entry per field.
//!
//! No I/O and no async: bytes in, bytes out, plus a [`Summary`] for logs and metrics.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use kube::core::{DynamicObject, TypeMeta};
use serde::Deserialize;
use serde_json::Value;

use crate::policy::{FieldPath, MAX_CAUSES, Policy};

/// The AdmissionReview API versions the API server sends (v1beta1 from clusters before 1.22 or
/// webhooks that list it first in `admissionReviewVersions`).
pub const SUPPORTED_API_VERSIONS: &[&str] = &["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// Why a body could not be answered with an AdmissionReview. Each is the client's mistake (a 400
/// over HTTP, exit code 2 from the command line): the API server never sends such a body.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not JSON, or not shaped like an AdmissionReview, and has no request uid to
    /// answer to.
    #[error("the body is not an AdmissionReview: {0}")]
    Malformed(String),
    /// A well-formed document of another type or version.
    #[error(
        "unsupported review type {api_version:?}/{kind:?}: expected kind AdmissionReview of admission.k8s.io/v1 or admission.k8s.io/v1beta1"
    )]
    UnsupportedType {
        /// The `apiVersion` that was sent.
        api_version: String,
        /// The `kind` that was sent.
        kind: String,
    },
    /// An AdmissionReview without a `request` (a response, or an empty review).
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    /// A request with an empty `uid`: the API server could not match the answer.
    #[error("the AdmissionReview request has an empty uid")]
    EmptyUid,
}

/// The verdict of one review, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request may proceed.
    Allowed,
    /// The request is denied.
    Denied,
}

impl Verdict {
    /// `allowed` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        }
    }
}

/// Why a review got its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not an UPDATE (CREATE, DELETE, CONNECT): the rule is about updates.
    NotAnUpdate,
    /// A kind the policy does not govern.
    NotGoverned,
    /// A subresource (`status`, `scale`) of a governed kind.
    Subresource,
    /// Judged by the policy: see the forbidden paths.
    Evaluated,
    /// The old object is being deleted: allowed so deletion can finish.
    BeingDeleted,
    /// The request for a governed kind could not be judged (no old object, or an object that is
    /// not an object): denied with the cause in the message.
    Undecidable,
}

impl Reason {
    /// A short snake_case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAnUpdate => "not_an_update",
            Reason::NotGoverned => "not_governed",
            Reason::Subresource => "subresource",
            Reason::Evaluated => "evaluated",
            Reason::BeingDeleted => "being_deleted",
            Reason::Undecidable => "undecidable",
        }
    }
}

/// What happened in one review, without object contents (they may hold secrets).
#[derive(Clone, Debug)]
pub struct Summary {
    /// The request uid, echoed in the response.
    pub uid: String,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` (empty when the request was undecodable).
    pub operation: &'static str,
    /// `group/version/Kind` of the object.
    pub kind: String,
    /// Namespace of the object (empty for cluster-scoped objects).
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// The requesting user.
    pub user: String,
    /// Whether the request is a dry run (it gets the same decision).
    pub dry_run: bool,
    /// Allowed or denied.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// Compared leaves that changed (governed UPDATEs only).
    pub changed: Vec<FieldPath>,
    /// Leaves that may not change (non-empty only for denials by the policy).
    pub forbidden: Vec<FieldPath>,
}

/// The answer to one review: the response document (serialized) and its summary.
#[derive(Debug)]
pub struct Reviewed {
    /// The response AdmissionReview as JSON, exactly what `/validate` sends.
    pub body: Vec<u8>,
    /// What was decided, for logs and metrics.
    pub summary: Summary,
}

/// Decode an AdmissionReview, decide it under `policy`, and serialize the response review.
pub fn review(policy: &Policy, body: &[u8]) -> Result<Reviewed, ReviewError> {
    let (response, summary) = match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
        Ok(review) => {
            check_type(&review.types)?;
            let request: AdmissionRequest<DynamicObject> =
                review.try_into().map_err(|_| ReviewError::MissingRequest)?;
            if request.uid.is_empty() {
                return Err(ReviewError::EmptyUid);
            }
            decide(policy, &request)
        }
        Err(typed_error) => answer_undecodable(policy, body, &typed_error)?,
    };
    let body = serde_json::to_vec(&response.into_review())
        .map_err(|e| ReviewError::Malformed(format!("cannot serialize the response: {e}")))?;
    Ok(Reviewed { body, summary })
}

fn check_type(types: &TypeMeta) -> Result<(), ReviewError> {
    if types.kind == "AdmissionReview"
        && SUPPORTED_API_VERSIONS.contains(&types.api_version.as_str())
    {
        Ok(())
    } else {
        Err(ReviewError::UnsupportedType {
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
        })
    }
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Decide a decoded request: the heart of [`review`].
pub fn decide(
    policy: &Policy,
    request: &AdmissionRequest<DynamicObject>,
) -> (AdmissionResponse, Summary) {
    let kind = &request.kind;
    let mut summary = Summary {
        uid: request.uid.clone(),
        operation: operation_name(&request.operation),
        kind: format!("{}/{}/{}", kind.group, kind.version, kind.kind),
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone(),
        user: request.user_info.username.clone().unwrap_or_default(),
        dry_run: request.dry_run,
        verdict: Verdict::Allowed,
        reason: Reason::Evaluated,
        changed: Vec::new(),
        forbidden: Vec::new(),
    };
    let response = AdmissionResponse::from(request);
    if !policy.governs(&kind.group, &kind.kind) {
        summary.reason = Reason::NotGoverned;
        return (response, summary);
    }
    if !matches!(request.operation, Operation::Update) {
        summary.reason = Reason::NotAnUpdate;
        return (response, summary);
    }
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        summary.reason = Reason::Subresource;
        return (response, summary);
    }
    let subject = subject(&kind.kind, request);
    let (Some(old), Some(new)) = (&request.old_object, &request.object) else {
        let missing = if request.old_object.is_none() {
            "oldObject"
        } else {
            "object"
        };
        let message = format!(
            "{subject}: the UPDATE review has no {missing}, so the change cannot be checked"
        );
        summary.verdict = Verdict::Denied;
        summary.reason = Reason::Undecidable;
        return (bad_request(response, message, Vec::new()), summary);
    };
    let (old, new) = match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(e), _) | (_, Err(e)) => {
            summary.verdict = Verdict::Denied;
            summary.reason = Reason::Undecidable;
            let message = format!("{subject}: the object cannot be read: {e}");
            return (bad_request(response, message, Vec::new()), summary);
        }
    };
    let evaluation = policy.evaluate(&old, &new);
    summary.changed = evaluation.changed;
    if evaluation.being_deleted {
        summary.reason = Reason::BeingDeleted;
    }
    if evaluation.forbidden.is_empty() {
        return (response, summary);
    }
    let message = policy.denial_message(&subject, &evaluation.forbidden);
    let causes = evaluation
        .forbidden
        .iter()
        .take(MAX_CAUSES)
        .map(|path| StatusCause {
            reason: "FieldValueForbidden".to_owned(),
            message: "field cannot be updated".to_owned(),
            field: path.to_string(),
        })
        .collect();
    let mut response = bad_request(response, message, causes);
    if let Some(details) = response.result.details.as_mut() {
        details.name = request.name.clone();
        details.group = kind.group.clone();
        details.kind = kind.kind.clone();
        details.uid = new
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
    }
    summary.verdict = Verdict::Denied;
    summary.forbidden = evaluation.forbidden;
    (response, summary)
}

/// `PyTorchJob kube-test/pytorch-test`, as the message names the object.
fn subject(kind: &str, request: &AdmissionRequest<DynamicObject>) -> String {
    match request.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{}", request.name),
        _ => format!("{kind} {}", request.name),
    }
}

/// A denial as the API server passes it to users: code 400, reason BadRequest, status Failure.
/// kube's `deny()` only sets the message.
fn bad_request(
    response: AdmissionResponse,
    message: String,
    causes: Vec<StatusCause>,
) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.status = Some(StatusSummary::Failure);
    response.result.code = 400;
    response.result.reason = "BadRequest".to_owned();
    response.result.details = Some(StatusDetails {
        name: String::new(),
        group: String::new(),
        kind: String::new(),
        uid: String::new(),
        causes,
        retry_after_seconds: 0,
    });
    response
}

/// The parts of a review that can still be read when kube's typed decode fails: enough to
/// answer the API server with an AdmissionReview that explains the problem.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseReview {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<LooseRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseRequest {
    uid: Option<String>,
    operation: Option<String>,
    sub_resource: Option<String>,
    kind: Option<LooseKind>,
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct LooseKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

/// A body that kube's types reject. If it is still a recognisable review with a uid (the API
/// server sent it, with an object of an odd shape), answer with an AdmissionReview so the cause
/// reaches kubectl: denied where the rule applies (an UPDATE — or an unreadable operation — of a
/// governed kind), allowed elsewhere.
/// Otherwise it is the client's mistake: [`ReviewError::Malformed`].
fn answer_undecodable(
    policy: &Policy,
    body: &[u8],
    typed_error: &serde_json::Error,
) -> Result<(AdmissionResponse, Summary), ReviewError> {
    let malformed = || ReviewError::Malformed(typed_error.to_string());
    let loose: LooseReview = serde_json::from_slice(body).map_err(|_| malformed())?;
    check_type(&TypeMeta {
        api_version: loose.api_version.clone(),
        kind: loose.kind.clone(),
    })?;
    let request = loose.request.ok_or(ReviewError::MissingRequest)?;
    let uid = request
        .uid
        .filter(|u| !u.is_empty())
        .ok_or_else(malformed)?;
    let kind = request.kind.unwrap_or(LooseKind {
        group: String::new(),
        kind: String::new(),
    });
    let mut response = AdmissionResponse::invalid("");
    response.types = TypeMeta {
        api_version: loose.api_version,
        kind: loose.kind,
    };
    response.uid = uid.clone();
    response.allowed = true;
    response.result = Default::default();
    let name = request.name.unwrap_or_default();
    let namespace = request.namespace.unwrap_or_default();
    let operation = match request.operation.as_deref() {
        Some("CREATE") => "CREATE",
        Some("UPDATE") => "UPDATE",
        Some("DELETE") => "DELETE",
        Some("CONNECT") => "CONNECT",
        _ => "",
    };
    let judged = policy.governs(&kind.group, &kind.kind)
        && operation != "CREATE"
        && operation != "DELETE"
        && operation != "CONNECT"
        && request
            .sub_resource
            .as_deref()
            .unwrap_or_default()
            .is_empty();
    let mut summary = Summary {
        uid,
        operation,
        kind: format!("{}/{}", kind.group, kind.kind),
        namespace: namespace.clone(),
        name: name.clone(),
        user: String::new(),
        dry_run: false,
        verdict: Verdict::Allowed,
        reason: Reason::NotGoverned,
        changed: Vec::new(),
        forbidden: Vec::new(),
    };
    if judged {
        let subject = if namespace.is_empty() {
            format!("{} {name}", kind.kind)
        } else {
            format!("{} {namespace}/{name}", kind.kind)
        };
        let message = format!("{subject}: the admission request cannot be read: {typed_error}");
        response = bad_request(response, message, Vec::new());
        summary.verdict = Verdict::Denied;
        summary.reason = Reason::Undecidable;
    }
    Ok((response, summary))
}
