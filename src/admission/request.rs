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
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

use std::borrow::Cow;
use std::sync::Arc;

use super::ReviewError;
use crate::json::index::{self, Refusal};
use crate::json::{Index, RawObject};

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
        Ok(request) => Ok(request),
        // serde_json would stop at the same container: its words, read without building
        // anything for the levels above it.
        Err(Unindexed::TooDeep) => Err(ReviewError::Malformed(index::nesting_error(body))),
        Err(Unindexed::Other) => decode_whole(body),
    }
}

/// Why [`decode_indexed`] did not answer.
#[derive(Debug)]
enum Unindexed {
    /// The body nests deeper than [`crate::json::MAX_DEPTH`]: refused where that container's byte was read.
    TooDeep,
    /// Anything else unusual, for serde_json's reading of the whole body to answer.
    Other,
}

/// [`decode`] through the index: `None` whenever anything is unusual, for [`decode_whole`]
/// to answer. What it returns is what `decode_whole` returns for the same body, with the
/// objects indexed: each member the envelope's types name is read by its own type from its
/// text, the way `Envelope`'s and `Request`'s derived readers read it in place, and the rest
/// is not read again (the index validated it; serde_json skips unknown members without a
/// depth limit, so there is nothing more to check). Whatever those readers would do
/// differently falls back: a repeated field (an error for them), a member that does not read,
/// an object that is not an object.
fn decode_indexed(body: &[u8]) -> Result<Request<'_>, Unindexed> {
    let text = std::str::from_utf8(body).map_err(|_| Unindexed::Other)?;
    // `oldObject` repeats most of `object`: where it does, a comparison validates it.
    let index = match Index::of_twins(text, "object", "oldObject") {
        Ok(index) => Arc::new(index),
        Err(Refusal::TooDeep) => return Err(Unindexed::TooDeep),
        Err(Refusal::Invalid | Refusal::TooLong) => return Err(Unindexed::Other),
    };
    read_indexed(&index).ok_or(Unindexed::Other)
}

/// The request of the indexed body, read as [`decode_whole`] reads it; `None` whenever anything
/// is unusual.
fn read_indexed<'t>(index: &Arc<Index<'t>>) -> Option<Request<'t>> {
    let [api_version, kind, request] = fields(index, index.root(), ENVELOPE_FIELDS)?;
    let version = ReviewVersion::of(
        &api_version.map_or(Some(String::new()), text_member)?,
        &kind.map_or(Some(String::new()), text_member)?,
    )
    .ok()?;
    let [
        uid,
        kind,
        resource,
        sub_resource,
        name,
        namespace,
        operation,
        user_info,
        object,
        old_object,
        dry_run,
    ] = fields(index, request?, REQUEST_FIELDS)?;
    let uid = text_member(uid?)?;
    if uid.is_empty() {
        return None;
    }
    let raw = |text: Option<&str>| match text {
        None | Some("null") => Some(None),
        Some(text) if text.starts_with('{') => RawObject::indexed(index, text).map(Some),
        Some(_) => None,
    };
    Some(Request {
        uid,
        kind: kind_member(index, kind?)?,
        resource: member_as(resource?)?,
        sub_resource: optional_text_member(sub_resource)?,
        name: name.map_or(Some(String::new()), text_member)?,
        namespace: optional_text_member(namespace)?,
        operation: match operation? {
            "\"CREATE\"" => Operation::Create,
            "\"UPDATE\"" => Operation::Update,
            "\"DELETE\"" => Operation::Delete,
            "\"CONNECT\"" => Operation::Connect,
            other => member_as(other)?,
        },
        user_info: member_as(user_info?)?,
        object: raw(object)?,
        old_object: raw(old_object)?,
        dry_run: match dry_run {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => member_as(other)?,
        },
        version,
    })
}

/// The members [`Envelope`] reads, in the order [`fields`] returns them.
const ENVELOPE_FIELDS: [&str; 3] = ["apiVersion", "kind", "request"];

/// The members [`Request`] reads, in the order [`fields`] returns them.
const REQUEST_FIELDS: [&str; 11] = [
    "uid",
    "kind",
    "resource",
    "subResource",
    "name",
    "namespace",
    "operation",
    "userInfo",
    "object",
    "oldObject",
    "dryRun",
];

/// The texts of the members `names` of the object `value`, in that order (`None` where
/// absent); `None` when `value` is no object of the index or a name is repeated.
fn fields<'t, const N: usize>(
    index: &Index<'t>,
    value: &str,
    names: [&str; N],
) -> Option<[Option<&'t str>; N]> {
    let mut found = [None; N];
    for (key, text) in index.members(value)? {
        match names.iter().position(|name| *name == key) {
            Some(at) if found[at].is_none() => found[at] = Some(text),
            Some(_) => return None,
            None => {}
        }
    }
    Some(found)
}

/// A member read by its type, as its derived reader reads it in place (the types the envelope
/// names bound their own nesting, far below serde_json's depth limit); `None` when it does not
/// read.
fn member_as<'t, T: Deserialize<'t>>(text: &'t str) -> Option<T> {
    serde_json::from_str(text).ok()
}

/// A string member: the text between its quotes when it holds no escape (exactly what
/// serde_json reads from such a string of a validated text), else [`member_as`].
fn text_member(text: &str) -> Option<String> {
    match text
        .strip_prefix('"')
        .and_then(|text| text.strip_suffix('"'))
    {
        Some(inner) if !inner.contains('\\') => Some(inner.to_owned()),
        _ => member_as(text),
    }
}

/// An optional string member (`#[serde(default)] Option<String>`): absent or `null` is `None`.
fn optional_text_member(text: Option<&str>) -> Option<Option<String>> {
    match text {
        None | Some("null") => Some(None),
        Some(text) => text_member(text).map(Some),
    }
}

/// A `GroupVersionKind` member read as its derived reader reads an object: the three strings
/// once each, other members ignored. Anything else (its array form, say) is left to
/// [`member_as`].
fn kind_member(index: &Index<'_>, text: &str) -> Option<GroupVersionKind> {
    if !text.starts_with('{') {
        return member_as(text);
    }
    let [group, version, kind] = fields(index, text, ["group", "version", "kind"])?;
    Some(GroupVersionKind {
        group: text_member(group?)?,
        version: text_member(version?)?,
        kind: text_member(kind?)?,
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
    if loose.api_version.is_other() || loose.kind.is_other() {
        return Err(ReviewError::Malformed(typed_error));
    }
    let version = ReviewVersion::of(loose.api_version.text(), loose.kind.text())?;
    let mut request = loose.request.ok_or(ReviewError::MissingRequest)?;
    // Without a uid there is no one to answer; without a kind or a resource there is no telling
    // whether the rule applies: the client's mistake, not a request to wave through.
    let unidentified = [&request.kind.kind, &request.resource.resource]
        .iter()
        .chain([&request.request_resource.resource].iter())
        .all(|name| name.text().is_empty());
    if request.uid.text().is_empty() || unidentified {
        return Err(ReviewError::Malformed(typed_error));
    }
    request.version = version;
    Ok(Read::Loose(request, typed_error))
}

/// The parts of a review that can still be read when kube's typed decode fails. Only strings
/// (and `dryRun`'s boolean) are kept; every other value is skipped unread, so a loose reading
/// holds no more than the strings it names, whatever the body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseReview {
    #[serde(default)]
    api_version: Loose,
    #[serde(default)]
    kind: Loose,
    request: Option<LooseRequest>,
}

/// A request read loosely: strings where strings were sent, empty otherwise.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LooseRequest {
    #[serde(default)]
    uid: Loose,
    #[serde(default)]
    operation: Loose,
    #[serde(default)]
    kind: LooseNames,
    #[serde(default)]
    resource: LooseNames,
    #[serde(default)]
    request_resource: LooseNames,
    #[serde(default)]
    sub_resource: Loose,
    #[serde(default)]
    name: Loose,
    #[serde(default)]
    namespace: Loose,
    #[serde(default)]
    user_info: LooseNames,
    #[serde(default)]
    dry_run: Loose,
    #[serde(skip, default = "v1")]
    version: ReviewVersion,
}

/// One member read loosely: its string or boolean; anything else is skipped unread
/// (`IgnoredAny`: no tree is built and no depth limit applies, as serde_json skips unknown
/// fields).
#[derive(Debug, Default)]
enum Loose {
    /// Absent, or `null`.
    #[default]
    Absent,
    /// A string.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A number, an array or an object.
    Other,
}

impl Loose {
    /// The string, empty when it is none.
    fn text(&self) -> &str {
        match self {
            Loose::Text(text) => text,
            _ => "",
        }
    }

    /// The string, if it is one.
    fn string(&self) -> Option<String> {
        match self {
            Loose::Text(text) => Some(text.clone()),
            _ => None,
        }
    }

    /// Sent, and neither a string nor `null`.
    fn is_other(&self) -> bool {
        matches!(self, Loose::Bool(_) | Loose::Other)
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Loose;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, text: &str) -> Result<Loose, E> {
                Ok(Loose::Text(text.to_owned()))
            }
            fn visit_bool<E>(self, value: bool) -> Result<Loose, E> {
                Ok(Loose::Bool(value))
            }
            fn visit_unit<E>(self) -> Result<Loose, E> {
                Ok(Loose::Absent)
            }
            fn visit_none<E>(self) -> Result<Loose, E> {
                Ok(Loose::Absent)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Loose, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Loose, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// The names the loose reading takes from `kind`, `resource`, `requestResource` and `userInfo`
/// (each reads the ones it has): their strings, the last of a repeated key as serde_json keeps
/// it; anything else, and any other member, skipped unread.
#[derive(Debug, Default)]
struct LooseNames {
    group: Loose,
    version: Loose,
    kind: Loose,
    resource: Loose,
    username: Loose,
}

impl<'de> Deserialize<'de> for LooseNames {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = LooseNames;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<LooseNames, M::Error> {
                let mut names = LooseNames::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "group" => &mut names.group,
                        "version" => &mut names.version,
                        "kind" => &mut names.kind,
                        "resource" => &mut names.resource,
                        "username" => &mut names.username,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value()?;
                }
                Ok(names)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<LooseNames, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LooseNames::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<LooseNames, E> {
                Ok(LooseNames::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<LooseNames, E> {
                Ok(LooseNames::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<LooseNames, E> {
                Ok(LooseNames::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<LooseNames, E> {
                Ok(LooseNames::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<LooseNames, E> {
                Ok(LooseNames::default())
            }
            fn visit_unit<E>(self) -> Result<LooseNames, E> {
                Ok(LooseNames::default())
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

impl LooseNames {
    fn resource(&self) -> GroupVersionResource {
        GroupVersionResource::gvr(self.group.text(), self.version.text(), self.resource.text())
    }
}

impl LooseRequest {
    /// The request uid (never empty: [`read`] checks).
    pub fn uid(&self) -> &str {
        self.uid.text()
    }

    /// The review's version.
    pub fn version(&self) -> ReviewVersion {
        self.version
    }

    /// The operation, when it is one of the four the API server sends.
    pub fn operation(&self) -> Option<Operation> {
        match self.operation.text() {
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
            group: self.kind.group.text().to_owned(),
            version: self.kind.version.text().to_owned(),
            kind: self.kind.kind.text().to_owned(),
        }
    }

    /// The resource, with empty strings for what cannot be read.
    pub fn resource(&self) -> GroupVersionResource {
        self.resource.resource()
    }

    /// The resource as the client asked for it (`requestResource`, before `matchPolicy`
    /// conversion), with empty strings for what cannot be read.
    pub fn request_resource(&self) -> GroupVersionResource {
        self.request_resource.resource()
    }

    /// The subresource, if one was readable.
    pub fn sub_resource(&self) -> Option<String> {
        self.sub_resource.string()
    }

    /// The object's name.
    pub fn name(&self) -> String {
        self.name.text().to_owned()
    }

    /// The object's namespace.
    pub fn namespace(&self) -> Option<String> {
        self.namespace.string()
    }

    /// `userInfo.username`, if it is a string.
    pub fn username(&self) -> String {
        self.user_info.username.text().to_owned()
    }

    /// `dryRun`, if it is a boolean.
    pub fn dry_run(&self) -> bool {
        matches!(self.dry_run, Loose::Bool(true))
    }
}

/// Whether two readings of a body are the same request (objects by their members).
#[cfg(any(test, feature = "oracle"))]
fn same(a: &Request<'_>, b: &Request<'_>) -> bool {
    let object = |raw: &Option<RawObject<'_>>| match raw {
        Some(RawObject::Other(value)) => format!("other {value}"),
        Some(raw) => format!("{:?}", raw.members()),
        None => "none".to_owned(),
    };
    let rest = |r: &Request<'_>| {
        format!(
            "{:?}",
            (
                &r.uid,
                &r.kind,
                &r.resource,
                &r.sub_resource,
                &r.name,
                &r.namespace,
                &r.operation,
                &r.user_info,
                r.dry_run,
                r.version,
            )
        )
    };
    rest(a) == rest(b)
        && object(&a.object) == object(&b.object)
        && object(&a.old_object) == object(&b.old_object)
}

/// The index's reading of a body checked against serde_json's reading of the whole of it (the
/// tests and the `review` fuzz target, feature `oracle`): panics where they disagree, and says
/// whether the index answered.
#[cfg(any(test, feature = "oracle"))]
pub fn indexed_reading_agrees(body: &[u8]) -> bool {
    let Ok(indexed) = decode_indexed(body) else {
        return false;
    };
    let whole = decode_whole(body).expect("the index reads only what serde_json reads");
    assert!(same(&indexed, &whole), "{}", String::from_utf8_lossy(body));
    true
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn fixtures() -> Vec<Vec<u8>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut bodies = Vec::new();
        for dir in ["pytorchjob", "reviews"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.to_string_lossy().into_owned();
                if name.ends_with(".review.json") || name.ends_with(".request.json") {
                    bodies.push(std::fs::read(path).unwrap());
                }
            }
        }
        bodies
    }

    #[test]
    fn recorded_reviews_are_read_through_the_index_as_serde_json_reads_them() {
        let bodies = fixtures();
        let indexed = bodies
            .iter()
            .filter(|body| indexed_reading_agrees(body))
            .count();
        // Every one with an UPDATE, CREATE or DELETE of an object; not the malformed ones.
        assert!(
            indexed >= 15,
            "only {indexed} of {} read through the index",
            bodies.len()
        );
    }

    #[test]
    fn what_the_derived_readers_refuse_is_left_to_them() {
        let base: Value = serde_json::from_slice(&fixtures()[0]).unwrap();
        let deep = (0..200).fold(json!(1), |inner, _| json!([inner]));
        let with = |at: &str, value: Value| {
            let mut review = base.clone();
            review
                .pointer_mut(at)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert("x".into(), value);
            serde_json::to_vec(&review).unwrap()
        };
        for body in [
            // A member nested beyond serde_json's depth limit, even one nobody reads: refused
            // where its bytes are first read, in serde_json's words for its limit.
            with("/request", deep.clone()),
            with("", deep.clone()),
            with("/request/userInfo", deep),
        ] {
            assert!(matches!(decode_indexed(&body), Err(Unindexed::TooDeep)));
            let Err(ReviewError::Malformed(error)) = decode(&body) else {
                panic!("a body nested too deep is no request");
            };
            assert!(
                error
                    .to_string()
                    .starts_with("recursion limit exceeded at line 1 column")
            );
        }
        // Escaped strings, in every string the index's reading takes without serde_json.
        let mut escaped = base.clone();
        for at in [
            "/request/uid",
            "/request/name",
            "/request/namespace",
            "/request/kind/group",
        ] {
            *escaped.pointer_mut(at).unwrap() = json!("a\"b\\c/\u{1}é");
        }
        let body = serde_json::to_vec(&escaped).unwrap();
        assert!(String::from_utf8_lossy(&body).contains(r#""a\"b\\c/\u0001é""#));
        assert!(indexed_reading_agrees(&body));
        // A repeated field, which the derived reader refuses.
        let text = serde_json::to_string(&base).unwrap();
        let repeated = text.replacen("\"request\":{", "\"request\":{\"uid\":\"a\",", 1);
        assert_ne!(repeated, text);
        assert!(decode_whole(repeated.as_bytes()).is_err());
        assert!(decode_indexed(repeated.as_bytes()).is_err());
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z\"\\\\/é\u{1}]{0,8}".prop_map(Value::from),
            prop_oneof![Just("UPDATE"), Just("admission.k8s.io/v1"), Just("")]
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("group".to_owned()),
                        Just("version".to_owned()),
                        Just("kind".to_owned()),
                        Just("username".to_owned()),
                        Just("groups".to_owned()),
                        "[a-z]{1,3}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    /// The members both readers care about, at both levels, and some they do not.
    fn any_member() -> impl Strategy<Value = (bool, String)> {
        // Some members neither reads, beside those each reads.
        let unread = ["options", "version", "requestKind"];
        let names: Vec<String> = ENVELOPE_FIELDS
            .iter()
            .chain(&REQUEST_FIELDS)
            .chain(&unread)
            .map(|name| (*name).to_owned())
            .collect();
        (any::<bool>(), prop::sample::select(names))
    }

    proptest! {
        /// Whatever a review's envelope holds (wrong types, nulls, missing or extra members),
        /// the index's reading is serde_json's whenever the index answers.
        #[test]
        fn any_envelope_is_read_through_the_index_as_serde_json_reads_it(
            fixture in 0..15usize,
            changes in prop::collection::vec((any_member(), prop::option::of(any_json())), 1..4),
        ) {
            let bodies = fixtures();
            let mut review: Value = serde_json::from_slice(&bodies[fixture % bodies.len()]).unwrap();
            for ((in_request, name), value) in changes {
                let at = if in_request { review.get_mut("request") } else { Some(&mut review) };
                if let Some(Value::Object(members)) = at {
                    match value {
                        Some(value) => members.insert(name, value),
                        None => members.remove(&name),
                    };
                }
            }
            indexed_reading_agrees(&serde_json::to_vec(&review).unwrap());
        }
    }
}
