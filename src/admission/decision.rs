//! The decision: which governed kind a request is about, whether the rule applies, and the
//! policy's judgement, as one typed [`Decision`].
//!
//! Governance is looked up once, the same way for a request kube's types read and for one
//! they reject ([`decide_loose`]): the main resource by its kind, a subresource by the resource
//! it belongs to (`pytorchjobs/scale` carries `kind: autoscaling/v1 Scale`). So a governed
//! request that cannot be read is denied with its cause whichever door it came through.
//!
//! Pure: the request and the [`Policy`] in, a [`Decision`] out.

use std::fmt;
use std::sync::Arc;

use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::de::{Error as _, Unexpected};
use serde_json::Value;

use super::request::{LooseRequest, Request, ReviewVersion};
use crate::policy::{
    EffectiveMode, Evaluation, FieldPath, GovernedKind, Mode, Policy, RawObject, RefusedLowering,
    Requester, diff,
};

/// The verdict of one review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request may proceed.
    Allowed,
    /// The request is denied.
    Denied,
    /// The request may proceed only because the mode (`warn`, `audit`) reports instead of
    /// denying: `enforce` would deny it.
    WouldDeny,
}

impl Verdict {
    /// `allowed`, `denied` or `would-deny` (as the audit annotation says it).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::WouldDeny => "would-deny",
        }
    }

    /// Whether the response lets the request proceed.
    pub fn allows(self) -> bool {
        self != Verdict::Denied
    }
}

/// Why a review got its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not an UPDATE (CREATE, DELETE, CONNECT): the rule is about updates.
    NotAnUpdate,
    /// A kind the policy does not govern.
    NotGoverned,
    /// A subresource (`status`, or `scale` of a kind without a scale path) of a governed kind.
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
    /// A short snake_case name for logs and audit annotations.
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

/// Who asked what, without object contents (they may hold secrets).
#[derive(Clone, Debug)]
pub struct Summary {
    /// The request uid, echoed in the response.
    pub uid: String,
    /// The review's version, echoed in the response.
    pub version: ReviewVersion,
    /// CREATE, UPDATE, DELETE or CONNECT; `None` when it could not be read.
    pub operation: Option<Operation>,
    /// The kind of the object (`autoscaling/v1 Scale` for a scale subresource request).
    pub kind: GroupVersionKind,
    /// The resource requested (`kubeflow.org/v1 pytorchjobs`).
    pub resource: GroupVersionResource,
    /// The subresource (`scale`, `status`), `None` for the main resource.
    pub subresource: Option<String>,
    /// Namespace of the object (`None` for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Name of the object.
    pub name: String,
    /// The requesting user.
    pub user: String,
    /// Whether the request is a dry run (it gets the same decision).
    pub dry_run: bool,
    /// The governed kind the request is about (for a subresource, the kind it belongs to);
    /// `None` when the policy does not govern it.
    pub governed: Option<Arc<GovernedKind>>,
}

impl Summary {
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`, or `unknown`.
    pub fn operation_name(&self) -> &'static str {
        match &self.operation {
            Some(Operation::Create) => "CREATE",
            Some(Operation::Update) => "UPDATE",
            Some(Operation::Delete) => "DELETE",
            Some(Operation::Connect) => "CONNECT",
            None => "unknown",
        }
    }

    /// The object as messages name it: `PyTorchJob kube-test/pytorch-test`.
    pub fn subject(&self) -> Subject<'_> {
        Subject(self)
    }

    /// `group/version/Kind` of the object, for logs: the governed kind (in the version of the
    /// resource requested) when there is one, else the request's kind.
    pub fn kind_path(&self) -> KindPath<'_> {
        KindPath(self)
    }

    fn kind_name(&self) -> &str {
        self.governed.as_ref().map_or(&self.kind.kind, |g| &g.kind)
    }
}

/// See [`Summary::subject`].
#[derive(Debug)]
pub struct Subject<'a>(&'a Summary);

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = self.0;
        match summary.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => {
                write!(f, "{} {ns}/{}", summary.kind_name(), summary.name)
            }
            _ => write!(f, "{} {}", summary.kind_name(), summary.name),
        }
    }
}

/// See [`Summary::kind_path`].
#[derive(Debug)]
pub struct KindPath<'a>(&'a Summary);

impl KindPath<'_> {
    /// Append the path to `out`, piece by piece (it goes into every decision line).
    pub fn write_to(&self, out: &mut String) {
        let summary = self.0;
        let (group, version, kind) = match &summary.governed {
            Some(governed) => (&governed.group, &summary.resource.version, &governed.kind),
            None => (
                &summary.kind.group,
                &summary.kind.version,
                &summary.kind.kind,
            ),
        };
        for (i, part) in [group, version, kind].into_iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(part);
        }
    }
}

/// Why a request was allowed without being judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A kind the policy does not govern.
    NotGoverned,
    /// Not an UPDATE.
    NotAnUpdate,
    /// A subresource the rule does not judge (`status`, or `scale` without a scale path).
    Subresource,
}

/// Which write of a governed kind was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// An UPDATE of the main resource: the objects were diffed.
    Update,
    /// An UPDATE through the `scale` subresource: judged as a change of the replicas field.
    Scale,
}

/// Why a governed request cannot be judged. It is denied, with this in the message.
#[derive(Debug, thiserror::Error)]
pub enum Undecidable {
    /// An UPDATE without `oldObject` or `object`.
    #[error("the UPDATE review has no {0}, so the change cannot be checked")]
    MissingObject(&'static str),
    /// A scale UPDATE without both Scales.
    #[error("the scale review has no old and new Scale, so it cannot be checked")]
    MissingScale,
    /// `oldObject` or `object` is not a JSON object.
    #[error("the admission request cannot be read: {side}")]
    NotAnObject {
        /// `oldObject` or `object`.
        side: &'static str,
        /// What it is instead.
        #[source]
        source: serde_json::Error,
    },
    /// kube's types reject the request, or the objects hold JSON the diff cannot read.
    #[error("the admission request cannot be read")]
    Unreadable(#[source] serde_json::Error),
    /// More compared fields changed than the diff keeps ([`diff::MAX_CHANGED_FIELDS`]).
    #[error("the change cannot be judged field by field")]
    TooManyChanges(#[source] diff::DiffError),
}

/// What was decided about one request.
#[derive(Debug)]
pub enum Outcome {
    /// Allowed without judging: the rule does not apply.
    Skipped(Skip),
    /// Judged by the policy: allowed unless a forbidden field changed.
    Judged {
        /// What was judged.
        judged: Judged,
        /// The policy's answer.
        evaluation: Evaluation,
        /// `metadata.uid` of the object, for a denial's `details.uid` (empty when allowed).
        object_uid: String,
    },
    /// A governed request that cannot be judged: denied.
    Undecidable(Undecidable),
}

const NO_PATHS: &[FieldPath] = &[];

impl Outcome {
    /// What `enforce` answers: allowed or denied.
    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Skipped(_) => Verdict::Allowed,
            Outcome::Judged { evaluation, .. } if evaluation.allowed() => Verdict::Allowed,
            Outcome::Judged { .. } | Outcome::Undecidable(_) => Verdict::Denied,
        }
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        match self {
            Outcome::Skipped(Skip::NotGoverned) => Reason::NotGoverned,
            Outcome::Skipped(Skip::NotAnUpdate) => Reason::NotAnUpdate,
            Outcome::Skipped(Skip::Subresource) => Reason::Subresource,
            Outcome::Judged { evaluation, .. } if evaluation.being_deleted => Reason::BeingDeleted,
            Outcome::Judged {
                judged: Judged::Scale,
                ..
            } => Reason::Scale,
            Outcome::Judged { .. } => Reason::Evaluated,
            Outcome::Undecidable(_) => Reason::Undecidable,
        }
    }

    /// The policy's evaluation, when the request was judged.
    pub fn evaluation(&self) -> Option<&Evaluation> {
        match self {
            Outcome::Judged { evaluation, .. } => Some(evaluation),
            _ => None,
        }
    }

    /// Compared leaves that changed (judged requests only).
    pub fn changed(&self) -> &[FieldPath] {
        self.evaluation().map_or(NO_PATHS, |e| &e.changed)
    }

    /// Changed leaves that may not change (non-empty only for denials by the policy).
    pub fn forbidden(&self) -> &[FieldPath] {
        self.evaluation().map_or(NO_PATHS, |e| &e.forbidden)
    }

    /// Frozen leaves allowed because the requester is exempt.
    pub fn exempted(&self) -> &[FieldPath] {
        self.evaluation().map_or(NO_PATHS, |e| &e.exempted)
    }

    /// The exemptions that allowed them.
    pub fn exemptions(&self) -> &[String] {
        self.evaluation().map_or(&[], |e| &e.exemptions_used)
    }
}

/// Who asked what, and what was decided: everything logs, metrics, records and the response
/// are made from.
#[derive(Debug)]
pub struct Decision {
    /// The request.
    pub summary: Summary,
    /// The outcome, as the rule judges it in every mode.
    pub outcome: Outcome,
    /// The mode it is judged in, and how it was chosen from the policy, the namespace and the
    /// mode its label asked for ([`Policy::effective_mode`]).
    pub effective_mode: EffectiveMode,
}

impl Decision {
    /// What is done with a denial: `enforce` sends it; `warn` and `audit` allow the request and
    /// report what enforce would have denied.
    pub fn mode(&self) -> Mode {
        self.effective_mode.mode()
    }

    /// The namespace label asked for a weaker mode than the policy lets it select, on a review
    /// about a governed kind (the only ones it could change): the response warns about it and
    /// annotates it, metrics count it, the decision log names it.
    pub fn refused_lowering(&self) -> Option<RefusedLowering> {
        self.summary.governed.as_ref()?;
        self.effective_mode.refused_lowering()
    }

    /// What the response says: the outcome's verdict in `enforce`; in `warn` and `audit`, a
    /// denial becomes [`Verdict::WouldDeny`] (allowed).
    pub fn verdict(&self) -> Verdict {
        match (self.outcome.verdict(), self.mode()) {
            (Verdict::Denied, Mode::Warn | Mode::Audit) => Verdict::WouldDeny,
            (verdict, _) => verdict,
        }
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        self.outcome.reason()
    }
}

/// What the rule does with a request about a (possibly) governed kind.
enum Route<'p> {
    Skip(Skip),
    Update,
    Scale(&'p FieldPath),
}

/// The one governance lookup: the main resource is named by its kind (or, should the kind be
/// unreadable, by its resource); a subresource request carries another kind
/// (`autoscaling/v1 Scale`) and is matched by the resource it belongs to.
fn governing<'p>(
    policy: &'p Policy,
    kind: &GroupVersionKind,
    resource: &GroupVersionResource,
    subresource: Option<&str>,
) -> Option<&'p Arc<GovernedKind>> {
    let by_resource = || policy.governed_resource(&resource.group, &resource.resource);
    match subresource {
        None | Some("") if kind.kind.is_empty() => by_resource(),
        None | Some("") => policy.governed_kind(&kind.group, &kind.kind),
        Some(_) => by_resource(),
    }
}

/// For a request whose envelope did not read, governance from whatever else names the resource,
/// so that nothing governed is waved through for a field it lacks: `requestResource` (the
/// resource as the client asked for it), or, for a `scale` subresource whose resource names only
/// its group, the first governed kind of that group with a scale path.
fn governing_unread<'p>(
    policy: &'p Policy,
    request: &LooseRequest,
    resource: &GroupVersionResource,
    subresource: Option<&str>,
) -> Option<&'p Arc<GovernedKind>> {
    let asked = request.request_resource();
    policy
        .governed_resource(&asked.group, &asked.resource)
        .or_else(|| match subresource {
            Some("scale") => policy
                .kinds()
                .iter()
                .find(|k| k.group == resource.group && k.scale_replicas.is_some()),
            _ => None,
        })
}

/// Where a request goes. An operation that could not be read counts as an UPDATE: the rule
/// may apply, so it is not waved through.
fn route(summary: &Summary) -> Route<'_> {
    let Some(governed) = &summary.governed else {
        return Route::Skip(Skip::NotGoverned);
    };
    if !matches!(summary.operation, Some(Operation::Update) | None) {
        return Route::Skip(Skip::NotAnUpdate);
    }
    match (summary.subresource.as_deref(), &governed.scale_replicas) {
        (None | Some(""), _) => Route::Update,
        (Some("scale"), Some(replicas)) => Route::Scale(replicas),
        _ => Route::Skip(Skip::Subresource),
    }
}

/// Decide a request kube's types read, in the mode of its namespace and the mode its label asked
/// for (`label`: the path `/validate/<mode>`, or `--mode`; `None` for `/validate`).
pub fn decide(policy: &Policy, label: Option<Mode>, request: &Request<'_>) -> Decision {
    let sub_resource = request.sub_resource.as_deref();
    let summary = Summary {
        uid: request.uid.clone(),
        version: request.version,
        operation: Some(request.operation.clone()),
        kind: request.kind.clone(),
        resource: request.resource.clone(),
        subresource: request.sub_resource.clone(),
        namespace: request.namespace.clone(),
        name: request.name.clone(),
        user: request.user_info.username.clone().unwrap_or_default(),
        dry_run: request.dry_run,
        governed: governing(policy, &request.kind, &request.resource, sub_resource).cloned(),
    };
    let outcome = match route(&summary) {
        Route::Skip(skip) => Outcome::Skipped(skip),
        Route::Update => judge_update(policy, request),
        Route::Scale(replicas) => judge_scale(policy, request, replicas),
    };
    let effective_mode = policy.effective_mode(summary.namespace.as_deref(), label);
    Decision {
        summary,
        outcome,
        effective_mode,
    }
}

/// Decide a request kube's types reject (`error`): denied with the cause where the rule
/// applies, allowed where it does not — the same lookup and routing as [`decide`].
pub fn decide_loose(
    policy: &Policy,
    label: Option<Mode>,
    request: &LooseRequest,
    error: serde_json::Error,
) -> Decision {
    let (kind, resource, subresource) =
        (request.kind(), request.resource(), request.sub_resource());
    let governed = governing(policy, &kind, &resource, subresource.as_deref())
        .or_else(|| governing_unread(policy, request, &resource, subresource.as_deref()))
        .cloned();
    let summary = Summary {
        uid: request.uid().to_owned(),
        version: request.version(),
        operation: request.operation(),
        kind,
        resource,
        subresource,
        namespace: request.namespace(),
        name: request.name(),
        user: request.username(),
        dry_run: request.dry_run(),
        governed,
    };
    let outcome = match route(&summary) {
        Route::Skip(skip) => Outcome::Skipped(skip),
        Route::Update | Route::Scale(_) => Outcome::Undecidable(Undecidable::Unreadable(error)),
    };
    let effective_mode = policy.effective_mode(summary.namespace.as_deref(), label);
    Decision {
        summary,
        outcome,
        effective_mode,
    }
}

/// Who sent the request, for exemptions.
fn requester<'r>(request: &'r Request<'_>) -> Requester<'r> {
    Requester {
        username: request.user_info.username.as_deref().unwrap_or_default(),
        groups: request.user_info.groups.as_deref().unwrap_or_default(),
    }
}

/// Both objects, each a JSON object.
fn objects<'r, 'a>(
    request: &'r Request<'a>,
    missing: impl FnOnce(&'static str) -> Undecidable,
) -> Result<(&'r RawObject<'a>, &'r RawObject<'a>), Undecidable> {
    let (old, new) = match (&request.old_object, &request.object) {
        (Some(old), Some(new)) => (old, new),
        (None, _) => return Err(missing("oldObject")),
        (_, None) => return Err(missing("object")),
    };
    for (side, object) in [("oldObject", old), ("object", new)] {
        if let RawObject::Other(value) = object {
            let source = serde_json::Error::invalid_type(unexpected(value), &"a JSON object");
            return Err(Undecidable::NotAnObject { side, source });
        }
    }
    Ok((old, new))
}

/// `metadata.uid` of an object, empty when absent.
fn object_uid(object: &RawObject<'_>) -> String {
    object
        .pointer(&["metadata", "uid"])
        .and_then(|uid| serde_json::from_str::<String>(uid).ok())
        .unwrap_or_default()
}

/// A governed UPDATE of the main resource: diff the objects.
fn judge_update(policy: &Policy, request: &Request<'_>) -> Outcome {
    let (old, new) = match objects(request, Undecidable::MissingObject) {
        Ok(objects) => objects,
        Err(undecidable) => return Outcome::Undecidable(undecidable),
    };
    match policy.evaluate(old, new, &requester(request)) {
        Ok(evaluation) => judged(Judged::Update, evaluation, new),
        Err(diff::DiffError::Json(error)) => Outcome::Undecidable(Undecidable::Unreadable(error)),
        Err(error) => Outcome::Undecidable(Undecidable::TooManyChanges(error)),
    }
}

/// A judged outcome; a denial names `object`'s uid in its details.
fn judged(judged: Judged, evaluation: Evaluation, object: &RawObject<'_>) -> Outcome {
    let object_uid = if evaluation.allowed() {
        String::new()
    } else {
        object_uid(object)
    };
    Outcome::Judged {
        judged,
        evaluation,
        object_uid,
    }
}

/// A governed UPDATE through the `scale` subresource: judged as a change of the field the
/// CRD maps `Scale.spec.replicas` to, under the same policy and exemptions.
fn judge_scale(policy: &Policy, request: &Request<'_>, replicas_path: &FieldPath) -> Outcome {
    let (old, new) = match objects(request, |_| Undecidable::MissingScale) {
        Ok(objects) => objects,
        Err(undecidable) => return Outcome::Undecidable(undecidable),
    };
    let replicas = ["spec", "replicas"];
    let changed = match diff::raw_values_differ(old.pointer(&replicas), new.pointer(&replicas)) {
        Ok(true) => vec![replicas_path.clone()],
        Ok(false) => Vec::new(),
        Err(error) => return Outcome::Undecidable(Undecidable::Unreadable(error)),
    };
    let evaluation = policy.judge(changed, &requester(request), false);
    judged(Judged::Scale, evaluation, old)
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
