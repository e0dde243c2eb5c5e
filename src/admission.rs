//! Glue between the API server's `AdmissionReview` and the decision core.
//!
//! [`review`] is the one code path behind every front door — the `/validate` route, the
//! `review`, `check` and `replay` commands — so they cannot disagree. It decodes the body once
//! into [`Request`]: the envelope's fields in kube's and k8s-openapi's types (operation, kinds,
//! resource, `userInfo`), and `object` / `oldObject` as borrowed raw JSON that the decision
//! core diffs without building trees for what did not change. It asks [`Policy`] about
//! governed UPDATEs and builds the response with kube's `AdmissionResponse`, echoing the
//! request's `admission.k8s.io/v1` or `v1beta1`: allowed, or denied with `code: 400`,
//! `reason: BadRequest`, a message that names every offending field, and one `details.causes`
//! entry per field.
//!
//! No I/O and no async: bytes in, bytes out, plus a [`Summary`] for logs and metrics.

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use kube::core::{GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Deserialize;
use serde::de::{Error as _, Unexpected};
use serde_json::Value;

use crate::policy::{
    Evaluation, FieldPath, MAX_CAUSES, Policy, RawObject, Requester, diff, list_paths,
};

/// Paths listed in a warning (kubectl prints warnings whole; the API asks for ≤ 120 chars).
const MAX_PATHS_IN_WARNING: usize = 4;
/// Warnings over 256 characters may be truncated by the API server.
const MAX_WARNING_CHARS: usize = 256;
/// Paths listed in one audit annotation.
const MAX_PATHS_IN_AUDIT: usize = 64;
/// An audit annotation value's bound: audit events are stored, keep them small.
const MAX_AUDIT_VALUE_CHARS: usize = 2048;

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
    /// A `scale` subresource UPDATE, judged as a change of the replicas field it writes.
    Scale,
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
            Reason::Scale => "scale",
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
    /// `group/version/Kind` of the object (of the governed kind for its subresources).
    pub kind: String,
    /// The subresource (`scale`, `status`), empty for the main resource.
    pub subresource: String,
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
    /// Frozen leaves allowed because the requester is exempt.
    pub exempted: Vec<FieldPath>,
    /// The exemptions that allowed them.
    pub exemptions_used: Vec<String>,
}

/// The answer to one review: the response document (serialized) and its summary.
#[derive(Debug)]
pub struct Reviewed {
    /// The response AdmissionReview as JSON, exactly what `/validate` sends.
    pub body: Vec<u8>,
    /// What was decided, for logs and metrics.
    pub summary: Summary,
}

/// An AdmissionReview as the API server sends it, decoded in one pass.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow, default)]
    request: Option<Request<'a>>,
}

/// The request of an AdmissionReview: what is decided on. The objects stay raw JSON borrowed
/// from the body; everything else is read into kube's and k8s-openapi's types.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    /// The API server's id for this call, echoed in the response.
    pub uid: String,
    /// The kind of the object (after `matchPolicy: Equivalent` conversion).
    pub kind: GroupVersionKind,
    /// The resource being requested (`pytorchjobs`).
    pub resource: GroupVersionResource,
    /// The subresource (`status`, `scale`), if any.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The object's name.
    #[serde(default)]
    pub name: String,
    /// The object's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: Operation,
    /// Who sent the request.
    pub user_info: UserInfo,
    /// The object after the update, read one level deep (members as raw JSON).
    #[serde(borrow, default)]
    pub object: Option<RawObject<'a>>,
    /// The object before the update, read one level deep (members as raw JSON).
    #[serde(borrow, default)]
    pub old_object: Option<RawObject<'a>>,
    /// A dry run gets the same decision.
    #[serde(default)]
    pub dry_run: bool,
    /// The review's `apiVersion`, echoed in the response.
    #[serde(skip)]
    pub api_version: String,
}

/// Decode an AdmissionReview's request, borrowing its objects from `body`.
pub fn decode(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    check_type(&envelope.api_version, &envelope.kind)?;
    let mut request = envelope.request.ok_or(ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::EmptyUid);
    }
    request.api_version = envelope.api_version;
    Ok(request)
}

/// Decode an AdmissionReview, decide it under `policy`, and serialize the response review.
pub fn review(policy: &Policy, body: &[u8]) -> Result<Reviewed, ReviewError> {
    let (response, summary) = match decode(body) {
        Ok(request) => decide(policy, &request),
        Err(ReviewError::Malformed(error)) => answer_undecodable(policy, body, &error)?,
        Err(other) => return Err(other),
    };
    // Through a `Value` (whose maps are sorted) so the bytes are deterministic: kube keeps
    // auditAnnotations in a HashMap.
    let body = serde_json::to_value(response.into_review())
        .and_then(|review| serde_json::to_vec(&review))
        .map_err(|e| ReviewError::Malformed(format!("cannot serialize the response: {e}")))?;
    Ok(Reviewed { body, summary })
}

/// An allowing response to the request `uid` of a review of `api_version`.
fn response_to(api_version: &str, uid: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.types = TypeMeta {
        api_version: api_version.to_owned(),
        kind: "AdmissionReview".to_owned(),
    };
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Default::default();
    response
}

fn check_type(api_version: &str, kind: &str) -> Result<(), ReviewError> {
    if kind == "AdmissionReview" && SUPPORTED_API_VERSIONS.contains(&api_version) {
        Ok(())
    } else {
        Err(ReviewError::UnsupportedType {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
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
pub fn decide(policy: &Policy, request: &Request<'_>) -> (AdmissionResponse, Summary) {
    let kind = &request.kind;
    let subresource = request.sub_resource.clone().unwrap_or_default();
    let mut summary = Summary {
        uid: request.uid.clone(),
        operation: operation_name(&request.operation),
        kind: format!("{}/{}/{}", kind.group, kind.version, kind.kind),
        subresource: subresource.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone(),
        user: request.user_info.username.clone().unwrap_or_default(),
        dry_run: request.dry_run,
        verdict: Verdict::Allowed,
        reason: Reason::Evaluated,
        changed: Vec::new(),
        forbidden: Vec::new(),
        exempted: Vec::new(),
        exemptions_used: Vec::new(),
    };
    let response = response_to(&request.api_version, &request.uid);
    // The main resource is named by its kind; a subresource request carries another kind
    // (`autoscaling/v1 Scale`) and is matched by the resource it belongs to.
    let governed = if subresource.is_empty() {
        policy.governed_kind(&kind.group, &kind.kind)
    } else {
        policy.governed_resource(&request.resource.group, &request.resource.resource)
    };
    let Some(governed) = governed else {
        summary.reason = Reason::NotGoverned;
        return (response, summary);
    };
    summary.kind = format!(
        "{}/{}/{}",
        governed.group, request.resource.version, governed.kind
    );
    let subject = subject(&governed.kind, request);
    let (response, summary) = if !matches!(request.operation, Operation::Update) {
        summary.reason = Reason::NotAnUpdate;
        (response, summary)
    } else {
        match (subresource.as_str(), &governed.scale_replicas) {
            ("", _) => decide_update(policy, request, &subject, response, summary),
            ("scale", Some(replicas)) => {
                decide_scale(policy, request, replicas, &subject, response, summary)
            }
            _ => {
                summary.reason = Reason::Subresource;
                (response, summary)
            }
        }
    };
    (annotate(response, &summary), summary)
}

/// Who sent the request, for exemptions.
fn requester<'r>(request: &'r Request<'_>) -> Requester<'r> {
    Requester {
        username: request.user_info.username.as_deref().unwrap_or_default(),
        groups: request.user_info.groups.as_deref().unwrap_or_default(),
    }
}

/// A governed UPDATE of the main resource: diff the objects.
fn decide_update(
    policy: &Policy,
    request: &Request<'_>,
    subject: &str,
    response: AdmissionResponse,
    mut summary: Summary,
) -> (AdmissionResponse, Summary) {
    let (Some(old), Some(new)) = (&request.old_object, &request.object) else {
        let missing = if request.old_object.is_none() {
            "oldObject"
        } else {
            "object"
        };
        let message = format!(
            "{subject}: the UPDATE review has no {missing}, so the change cannot be checked"
        );
        return undecidable(response, summary, message);
    };
    for (side, object) in [("oldObject", old), ("object", new)] {
        if let RawObject::Other(value) = object {
            let error = serde_json::Error::invalid_type(unexpected(value), &"a JSON object");
            let message =
                format!("{subject}: the admission request cannot be read: {side}: {error}");
            return undecidable(response, summary, message);
        }
    }
    let evaluation = match policy.evaluate_objects(old, new, &requester(request)) {
        Ok(evaluation) => evaluation,
        Err(error) => {
            let message = format!("{subject}: the admission request cannot be read: {error}");
            return undecidable(response, summary, message);
        }
    };
    if evaluation.being_deleted {
        summary.reason = Reason::BeingDeleted;
    }
    let uid = if evaluation.forbidden.is_empty() {
        String::new()
    } else {
        new.pointer(&["metadata", "uid"])
            .and_then(|uid| serde_json::from_str::<String>(uid.get()).ok())
            .unwrap_or_default()
    };
    let uid = uid.as_str();
    conclude(policy, request, subject, uid, evaluation, response, summary)
}

/// A governed UPDATE through the `scale` subresource: judged as a change of the field the
/// CRD maps `Scale.spec.replicas` to, under the same policy and exemptions.
fn decide_scale(
    policy: &Policy,
    request: &Request<'_>,
    replicas_path: &FieldPath,
    subject: &str,
    response: AdmissionResponse,
    mut summary: Summary,
) -> (AdmissionResponse, Summary) {
    let (Some(old), Some(new)) = (&request.old_object, &request.object) else {
        let message = format!(
            "{subject}: the scale review has no old and new Scale, so it cannot be checked"
        );
        return undecidable(response, summary, message);
    };
    let replicas = |scale: &RawObject<'_>| -> Value {
        scale
            .pointer(&["spec", "replicas"])
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null)
    };
    let unchanged =
        diff::changed_leaves(&replicas(old), &replicas(new), &|_: &FieldPath| false).is_empty();
    let changed = if unchanged {
        Vec::new()
    } else {
        vec![replicas_path.clone()]
    };
    summary.reason = Reason::Scale;
    let evaluation = policy.judge(changed, &requester(request), false);
    let uid = old
        .pointer(&["metadata", "uid"])
        .and_then(|uid| serde_json::from_str::<String>(uid.get()).ok())
        .unwrap_or_default();
    conclude(
        policy, request, subject, &uid, evaluation, response, summary,
    )
}

/// A governed request that cannot be judged: denied, with the cause in the message.
fn undecidable(
    response: AdmissionResponse,
    mut summary: Summary,
    message: String,
) -> (AdmissionResponse, Summary) {
    summary.verdict = Verdict::Denied;
    summary.reason = Reason::Undecidable;
    (bad_request(response, message, Vec::new()), summary)
}

/// Turn an evaluation into the response: allowed (with a warning when an exemption was
/// needed), or denied with a message and one cause per forbidden field.
fn conclude(
    policy: &Policy,
    request: &Request<'_>,
    subject: &str,
    uid: &str,
    evaluation: Evaluation,
    mut response: AdmissionResponse,
    mut summary: Summary,
) -> (AdmissionResponse, Summary) {
    summary.changed = evaluation.changed;
    summary.exempted = evaluation.exempted;
    summary.exemptions_used = evaluation.exemptions_used;
    if !summary.exempted.is_empty() {
        let warning = format!(
            "pytorchjob-guard: exemption {} allowed frozen fields to change: {}",
            summary.exemptions_used.join(", "),
            list_paths(&summary.exempted, MAX_PATHS_IN_WARNING)
        );
        response.warnings = Some(vec![truncate(warning, MAX_WARNING_CHARS)]);
    }
    if evaluation.forbidden.is_empty() {
        return (response, summary);
    }
    let message = policy.denial_message(subject, &evaluation.forbidden);
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
        details.group = request.resource.group.clone();
        details.kind = subject.split(' ').next().unwrap_or_default().to_owned();
        details.uid = uid.to_owned();
    }
    summary.verdict = Verdict::Denied;
    summary.forbidden = evaluation.forbidden;
    (response, summary)
}

/// Audit annotations for every decision about a governed kind, so the cluster's audit log
/// says why (the API server prefixes each key with the webhook's name).
fn annotate(mut response: AdmissionResponse, summary: &Summary) -> AdmissionResponse {
    let mut put = |key: &str, value: String| {
        response
            .audit_annotations
            .insert(key.to_owned(), truncate(value, MAX_AUDIT_VALUE_CHARS));
    };
    put("verdict", summary.verdict.as_str().to_owned());
    put("reason", summary.reason.as_str().to_owned());
    if !summary.changed.is_empty() {
        put(
            "changed-fields",
            list_paths(&summary.changed, MAX_PATHS_IN_AUDIT),
        );
    }
    if !summary.forbidden.is_empty() {
        put(
            "denied-fields",
            list_paths(&summary.forbidden, MAX_PATHS_IN_AUDIT),
        );
    }
    if !summary.exemptions_used.is_empty() {
        put("exemptions", summary.exemptions_used.join(", "));
        put(
            "exempted-fields",
            list_paths(&summary.exempted, MAX_PATHS_IN_AUDIT),
        );
    }
    response
}

/// `text`, cut to at most `max` characters with an ellipsis.
fn truncate(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `PyTorchJob kube-test/pytorch-test`, as the message names the object.
fn subject(kind: &str, request: &Request<'_>) -> String {
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
    typed_error: &str,
) -> Result<(AdmissionResponse, Summary), ReviewError> {
    let malformed = || ReviewError::Malformed(typed_error.to_owned());
    let loose: LooseReview = serde_json::from_slice(body).map_err(|_| malformed())?;
    check_type(&loose.api_version, &loose.kind)?;
    let request = loose.request.ok_or(ReviewError::MissingRequest)?;
    let uid = request
        .uid
        .filter(|u| !u.is_empty())
        .ok_or_else(malformed)?;
    let kind = request.kind.unwrap_or(LooseKind {
        group: String::new(),
        kind: String::new(),
    });
    let mut response = response_to(&loose.api_version, &uid);
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
        subresource: request.sub_resource.clone().unwrap_or_default(),
        namespace: namespace.clone(),
        name: name.clone(),
        user: String::new(),
        dry_run: false,
        verdict: Verdict::Allowed,
        reason: Reason::NotGoverned,
        changed: Vec::new(),
        forbidden: Vec::new(),
        exempted: Vec::new(),
        exemptions_used: Vec::new(),
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
        response = annotate(response, &summary);
    }
    Ok((response, summary))
}

/// How serde names a value it did not expect.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (_, Some(i), _) => Unexpected::Signed(i),
            (_, _, Some(f)) => Unexpected::Float(f),
            _ => Unexpected::Other("number"),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}
