//! Reading an AdmissionReview: the body indexed in one validating pass, then read into
//! [`Request`]; and, when kube's types reject it, a loose reading that still finds enough
//! ([`LooseRequest`]) to answer with the cause.
//!
//! The envelope's fields are read into kube's and k8s-openapi's types (operation, kinds,
//! resource, `userInfo`); `object` and `oldObject` stay raw JSON borrowed from the body, read
//! one level deep through the body's [`Index`] ([`RawObject`]), so the decision diffs them
//! without building trees for what did not change or reading any level twice. Pure: bytes in,
//! values out.

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::Deserialize;
use serde_json::Value;

use std::sync::Arc;

use super::ReviewError;
use crate::policy::RawObject;
use crate::policy::index::Index;

/// The AdmissionReview API versions the API server sends (v1beta1 from clusters before 1.22 or
/// webhooks that list it first in `admissionReviewVersions`); the response echoes the request's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewVersion {
    /// `admission.k8s.io/v1`.
    V1,
    /// `admission.k8s.io/v1beta1`.
    V1beta1,
}

impl ReviewVersion {
    /// The `apiVersion` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewVersion::V1 => "admission.k8s.io/v1",
            ReviewVersion::V1beta1 => "admission.k8s.io/v1beta1",
        }
    }

    /// The version an AdmissionReview of this `apiVersion` and `kind` is answered in.
    fn of(api_version: &str, kind: &str) -> Result<Self, ReviewError> {
        match (api_version, kind) {
            ("admission.k8s.io/v1", "AdmissionReview") => Ok(ReviewVersion::V1),
            ("admission.k8s.io/v1beta1", "AdmissionReview") => Ok(ReviewVersion::V1beta1),
            _ => Err(ReviewError::UnsupportedType {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            }),
        }
    }
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
    /// The review's version, echoed in the response.
    #[serde(skip, default = "v1")]
    pub version: ReviewVersion,
}

fn v1() -> ReviewVersion {
    ReviewVersion::V1
}

/// What [`read`] found in a body.
#[derive(Debug)]
pub enum Read<'a> {
    /// A review kube's types read.
    Typed(Request<'a>),
    /// A review with a uid that kube's types reject (an odd object, a field of the wrong type),
    /// what could still be read of it, and why the typed decode failed.
    Loose(LooseRequest, serde_json::Error),
}

/// Decode an AdmissionReview's request, borrowing its objects from `body`.
///
/// The body is indexed first ([`Index`]: one pass that validates all of it and records where
/// every value lies); kube's types then read the envelope with `object` and `oldObject` left
/// out, and the objects come from the index, so their bytes are read once, not once by
/// serde_json and again by the diff. A body the index refuses, or whose shortened envelope does
/// not decode, takes serde_json's reading of the whole body, so every error (and the loose
/// reading after it) is exactly serde_json's.
pub fn decode(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    match decode_indexed(body) {
        Some(request) => Ok(request),
        None => decode_whole(body),
    }
}

/// [`decode`] through the index: `None` whenever anything is unusual, for [`decode_whole`]
/// to answer. What it returns is what `decode_whole` returns for the same body (the objects'
/// members are the same texts, sorted the same way; the envelope is the same JSON but for the
/// objects), with the objects indexed.
fn decode_indexed(body: &[u8]) -> Option<Request<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    // `oldObject` repeats most of `object`: where it does, a comparison validates it.
    let index = Arc::new(Index::of_twins(text, "object", "oldObject")?);
    let request = index.member(index.root(), "request")?;
    let members = index.members(request).unwrap_or_default();
    // The last of a repeated key, as serde_json would keep it (it refuses repeats in the
    // envelope anyway, and then the whole body is read again).
    let member = |key| {
        let (_, value) = members.iter().rev().find(|(k, _)| k == key)?;
        value.starts_with('{').then_some(*value)
    };
    let (object, old_object) = (member("object"), member("oldObject"));
    // The envelope with each object's text replaced by `{}`, in document order.
    let mut cuts: Vec<&str> = object.into_iter().chain(old_object).collect();
    cuts.sort_by_key(|cut| cut.as_ptr());
    let mut envelope = String::with_capacity(text.len().min(4096));
    let mut from = 0;
    for cut in cuts {
        let start = cut.as_ptr() as usize - text.as_ptr() as usize;
        envelope.push_str(text.get(from..start)?);
        envelope.push_str("{}");
        from = start + cut.len();
    }
    envelope.push_str(text.get(from..)?);
    let decoded = decode_whole(envelope.as_bytes()).ok()?;
    let raw = |text: Option<&'_ str>, decoded: Option<RawObject<'_>>| match (text, decoded) {
        (None, None) => Some(None),
        (None, Some(RawObject::Other(value))) => Some(Some(RawObject::Other(value))),
        (Some(text), Some(RawObject::Members(members, _))) if members.is_empty() => {
            RawObject::indexed(&index, text).map(Some)
        }
        _ => None,
    };
    Some(Request {
        object: raw(object, decoded.object)?,
        old_object: raw(old_object, decoded.old_object)?,
        uid: decoded.uid,
        kind: decoded.kind,
        resource: decoded.resource,
        sub_resource: decoded.sub_resource,
        name: decoded.name,
        namespace: decoded.namespace,
        operation: decoded.operation,
        user_info: decoded.user_info,
        dry_run: decoded.dry_run,
        version: decoded.version,
    })
}

/// serde_json's reading of the whole body into kube's types.
fn decode_whole(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(ReviewError::Malformed)?;
    let version = ReviewVersion::of(&envelope.api_version, &envelope.kind)?;
    let mut request = envelope.request.ok_or(ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::EmptyUid);
    }
    request.version = version;
    Ok(request)
}

/// [`decode`], falling back to a loose reading when the body is still a recognisable review
/// with a uid, so the cause can reach kubectl in an AdmissionReview. Anything else is the
/// client's mistake.
pub fn read(body: &[u8]) -> Result<Read<'_>, ReviewError> {
    let typed_error = match decode(body) {
        Ok(request) => return Ok(Read::Typed(request)),
        Err(ReviewError::Malformed(error)) => error,
        Err(other) => return Err(other),
    };
    let Ok(loose) = serde_json::from_slice::<LooseReview>(body) else {
        return Err(ReviewError::Malformed(typed_error));
    };
    // A type that is not a string (a bare `request`, whose `kind` is a map) is no review.
    let not_text = |value: &Option<Value>| value.as_ref().is_some_and(|v| !v.is_string());
    if not_text(&loose.api_version) || not_text(&loose.kind) {
        return Err(ReviewError::Malformed(typed_error));
    }
    let version = ReviewVersion::of(text(&loose.api_version), text(&loose.kind))?;
    let mut request = loose.request.ok_or(ReviewError::MissingRequest)?;
    // Without a uid there is no one to answer; without a kind or a resource there is no telling
    // whether the rule applies: the client's mistake, not a request to wave through.
    let (kind, resource) = (request.kind(), request.resource());
    let unidentified = kind.kind.is_empty() && resource.resource.is_empty();
    if request.uid.is_empty() || unidentified {
        return Err(ReviewError::Malformed(typed_error));
    }
    request.version = version;
    Ok(Read::Loose(request, typed_error))
}

/// The parts of a review that can still be read when kube's typed decode fails. Every member
/// is taken as any JSON value and used only where it has the expected type; the objects are
/// skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseReview {
    api_version: Option<Value>,
    kind: Option<Value>,
    request: Option<LooseRequest>,
}

/// A request read loosely: strings where strings were sent, empty otherwise.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LooseRequest {
    #[serde(default, deserialize_with = "loose_string")]
    uid: String,
    #[serde(default)]
    operation: Option<Value>,
    #[serde(default)]
    kind: Option<Value>,
    #[serde(default)]
    resource: Option<Value>,
    #[serde(default)]
    sub_resource: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    namespace: Option<Value>,
    #[serde(default)]
    user_info: Option<Value>,
    #[serde(default)]
    dry_run: Option<Value>,
    #[serde(skip, default = "v1")]
    version: ReviewVersion,
}

fn loose_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = Value::deserialize(deserializer)?;
    Ok(value.as_str().unwrap_or_default().to_owned())
}

/// `value[key]` as a string, empty when absent or not a string.
fn member(value: &Option<Value>, key: &str) -> String {
    value
        .as_ref()
        .and_then(|v| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A value as a string, empty when absent or not a string.
fn text(value: &Option<Value>) -> &str {
    value.as_ref().and_then(Value::as_str).unwrap_or_default()
}

fn string(value: &Option<Value>) -> Option<String> {
    value.as_ref().and_then(Value::as_str).map(str::to_owned)
}

impl LooseRequest {
    /// The request uid (never empty: [`read`] checks).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The review's version.
    pub fn version(&self) -> ReviewVersion {
        self.version
    }

    /// The operation, when it is one of the four the API server sends.
    pub fn operation(&self) -> Option<Operation> {
        match self.operation.as_ref().and_then(Value::as_str)? {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }

    /// The object's kind, with empty strings for what cannot be read.
    pub fn kind(&self) -> GroupVersionKind {
        GroupVersionKind {
            group: member(&self.kind, "group"),
            version: member(&self.kind, "version"),
            kind: member(&self.kind, "kind"),
        }
    }

    /// The resource, with empty strings for what cannot be read.
    pub fn resource(&self) -> GroupVersionResource {
        GroupVersionResource::gvr(
            &member(&self.resource, "group"),
            &member(&self.resource, "version"),
            &member(&self.resource, "resource"),
        )
    }

    /// The subresource, if one was readable.
    pub fn sub_resource(&self) -> Option<String> {
        string(&self.sub_resource)
    }

    /// The object's name.
    pub fn name(&self) -> String {
        string(&self.name).unwrap_or_default()
    }

    /// The object's namespace.
    pub fn namespace(&self) -> Option<String> {
        string(&self.namespace)
    }

    /// `userInfo.username`, if it is a string.
    pub fn username(&self) -> String {
        member(&self.user_info, "username")
    }

    /// `dryRun`, if it is a boolean.
    pub fn dry_run(&self) -> bool {
        self.dry_run
            .as_ref()
            .and_then(Value::as_bool)
            .unwrap_or_default()
    }
}
