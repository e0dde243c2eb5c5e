//! Issue 19's comparison: what the webhook needs from its body index, done through each
//! candidate as well as its API allows, so the candidates can be timed and counted alike.
//!
//! The work is production's ([`pytorchjob_guard::admission::request`]'s `decode_indexed` and
//! the raw walk of [`pytorchjob_guard::policy::diff`]), without what every candidate would
//! share (kube's typed reading of the envelope's members, the policy's rules, parsing the
//! changed scalars):
//!
//! 1. validate the whole body, exactly as serde_json would;
//! 2. the envelope's members (`apiVersion`, `kind`, `request`) and `request`'s eleven members as
//!    borrowed raw texts;
//! 3. `object`'s and `oldObject`'s members as raw texts, sorted by key;
//! 4. the walk: byte-equal member texts are skipped, changed objects and arrays (and those added
//!    or removed whole) are descended level by level, members and elements as raw texts, and
//!    every other difference is a changed leaf, named by its path.
//!
//! | candidate | how |
//! | --- | --- |
//! | `index` | today's [`Index::of_twins`] once, every level's members from it |
//! | `serde_json` | one pass of serde_json's borrowed reading (`&RawValue` members, the objects' members read in the same pass); each changed level re-read from its text |
//! | `sonic_rs` | the same one pass through sonic-rs's serde `Deserializer` (`LazyValue` members); each level through `to_object_iter`/`to_array_iter` (checked: they validate what they skip) |
//! | `sonic_rs_unchecked` | as `sonic_rs`, the levels through the `_unchecked` iterators (`unsafe`: the text was validated once) |
//! | `simd_json` | a copy of the body parsed into a `BorrowedValue` (it unescapes in place, so it needs its own mutable bytes and gives no raw texts); the walk compares values instead of bytes |
//!
//! [`check`] holds every candidate to `index`'s reading, and each candidate's acceptance to
//! serde_json's on mutated reviews.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use pytorchjob_guard::policy::index::Index;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

#[path = "../../../benches/support/reviews.rs"]
pub mod reviews;

/// The members of the envelope that are read, in this order.
pub const ENVELOPE_FIELDS: [&str; 3] = ["apiVersion", "kind", "request"];
/// The members of `request` that are read, in this order (production's `REQUEST_FIELDS`).
pub const REQUEST_FIELDS: [&str; 11] = [
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

/// What a candidate read from a review: the envelope's and `request`'s members (raw texts;
/// `simd_json`, which has none, marks a present member with an empty text) and the changed
/// leaves' paths, sorted.
#[derive(Debug, PartialEq, Eq)]
pub struct Reading<'t> {
    pub fields: [Option<Cow<'t, str>>; 14],
    pub changed: Vec<String>,
}

/// Members as raw texts, keys unescaped (borrowed unless they hold escapes).
pub type Members<'t> = Vec<(Cow<'t, str>, &'t str)>;

/// One candidate's reading of a review body.
pub type Reader = for<'t> fn(&'t [u8]) -> Option<Reading<'t>>;

/// Every candidate, by name.
pub const CANDIDATES: [(&str, Reader); 5] = [
    ("index", index),
    ("serde_json", serde_json_borrowed),
    ("sonic_rs", sonic_rs_checked),
    ("sonic_rs_unchecked", sonic_rs_unchecked),
    ("simd_json", simd_json_borrowed),
];

/// The reader of a candidate named `name`.
pub fn candidate(name: &str) -> Option<Reader> {
    CANDIDATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, reader)| *reader)
}

// ---------------------------------------------------------------------------------------------
// The walk, shared by every candidate that reads raw texts.

/// Where a candidate finds the members and elements of a level's text.
trait Levels<'t> {
    fn members(&self, text: &'t str) -> Option<Members<'t>>;
    fn elements(&self, text: &'t str) -> Option<Vec<&'t str>>;
}

/// Members sorted by key, a repeated key keeping its last value (production's `sorted`).
fn sorted(mut members: Members<'_>) -> Members<'_> {
    if members.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        return members;
    }
    members.reverse();
    members.sort_by(|x, y| x.0.cmp(&y.0));
    members.dedup_by(|later, kept| later.0 == kept.0);
    members
}

struct Walk<'l, L> {
    levels: &'l L,
    path: String,
    changed: Vec<String>,
}

impl<'t, L: Levels<'t>> Walk<'_, L> {
    fn members(&mut self, a: &Members<'t>, b: &Members<'t>) -> Option<()> {
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (key, old, new) = match order {
                std::cmp::Ordering::Less => (&a[i].0, Some(a[i].1), None),
                std::cmp::Ordering::Greater => (&b[j].0, None, Some(b[j].1)),
                std::cmp::Ordering::Equal => (&a[i].0, Some(a[i].1), Some(b[j].1)),
            };
            if old != new {
                let len = self.path.len();
                self.path.push('.');
                self.path.push_str(key);
                self.raw(old, new)?;
                self.path.truncate(len);
            }
            if order.is_le() {
                i += 1;
            }
            if order.is_ge() {
                j += 1;
            }
        }
        Some(())
    }

    fn raw(&mut self, old: Option<&'t str>, new: Option<&'t str>) -> Option<()> {
        let shape = |text: Option<&str>| text.map(|t| t.as_bytes()[0]);
        match (shape(old), shape(new)) {
            (Some(b'{') | None, Some(b'{') | None) => {
                let read = |text: Option<&'t str>| match text {
                    Some(text) => self.levels.members(text).map(sorted),
                    None => Some(Vec::new()),
                };
                let (a, b) = (read(old)?, read(new)?);
                self.members(&a, &b)
            }
            (Some(b'[') | None, Some(b'[') | None) => {
                let read = |text: Option<&'t str>| match text {
                    Some(text) => self.levels.elements(text),
                    None => Some(Vec::new()),
                };
                let (a, b) = (read(old)?, read(new)?);
                for at in 0..a.len().max(b.len()) {
                    let (old, new) = (a.get(at).copied(), b.get(at).copied());
                    if old != new {
                        let len = self.path.len();
                        self.path.push('.');
                        self.path.push_str(itoa(at).as_str());
                        self.raw(old, new)?;
                        self.path.truncate(len);
                    }
                }
                Some(())
            }
            _ => {
                self.changed.push(self.path.clone());
                Some(())
            }
        }
    }
}

fn itoa(n: usize) -> String {
    n.to_string()
}

/// The envelope's and `request`'s fields from their members, and the walk of `object` and
/// `oldObject`'s members: what every raw-text candidate does once it has them.
fn finish<'t, L: Levels<'t>>(
    levels: &L,
    envelope: [Option<&'t str>; 3],
    request: [Option<&'t str>; 11],
    old: Members<'t>,
    new: Members<'t>,
) -> Option<Reading<'t>> {
    let mut walk = Walk {
        levels,
        path: String::new(),
        changed: Vec::new(),
    };
    walk.members(&sorted(old), &sorted(new))?;
    let mut changed = walk.changed;
    changed.sort();
    let mut fields: [Option<Cow<'t, str>>; 14] = Default::default();
    for (field, text) in fields.iter_mut().zip(envelope.into_iter().chain(request)) {
        *field = text.map(Cow::Borrowed);
    }
    Some(Reading { fields, changed })
}

/// The texts of the members `names` in `members` (`None` where absent; a repeat refused).
fn fields<'t, const N: usize>(
    members: &Members<'t>,
    names: [&str; N],
) -> Option<[Option<&'t str>; N]> {
    let mut found = [None; N];
    for (key, text) in members {
        match names.iter().position(|name| name == key) {
            Some(at) if found[at].is_none() => found[at] = Some(*text),
            Some(_) => return None,
            None => {}
        }
    }
    Some(found)
}

// ---------------------------------------------------------------------------------------------
// (a) today's index.

impl<'t> Levels<'t> for Index<'t> {
    fn members(&self, text: &'t str) -> Option<Members<'t>> {
        Index::members(self, text)
    }
    fn elements(&self, text: &'t str) -> Option<Vec<&'t str>> {
        Index::elements(self, text)
    }
}

/// Today's reading: the body indexed once ([`Index::of_twins`]), every level from the index.
pub fn index(body: &[u8]) -> Option<Reading<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    let index = Index::of_twins(text, "object", "oldObject")?;
    let envelope = fields(&index.members(index.root())?, ENVELOPE_FIELDS)?;
    let request = fields(&index.members(envelope[2]?)?, REQUEST_FIELDS)?;
    let (old, new) = (index.members(request[9]?)?, index.members(request[8]?)?);
    finish(&index, envelope, request, old, new)
}

// ---------------------------------------------------------------------------------------------
// One-pass borrowed reading through serde (serde_json's or sonic-rs's `Deserializer`).

/// A raw member of some deserializer: serde_json's `&RawValue`, sonic-rs's `LazyValue`.
trait Raw<'de>: Deserialize<'de> {
    fn text(self) -> Option<&'de str>;
}

impl<'de> Raw<'de> for &'de RawValue {
    fn text(self) -> Option<&'de str> {
        Some(self.get())
    }
}

impl<'de> Raw<'de> for sonic_rs::LazyValue<'de> {
    fn text(self) -> Option<&'de str> {
        match self.as_raw_cow() {
            Cow::Borrowed(text) => Some(text),
            Cow::Owned(_) => None,
        }
    }
}

/// An object key, borrowed unless it holds escapes (production's `BorrowedKey`).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// An object's members as raw texts, read by any serde deserializer.
struct RawMembers<'de, R>(Members<'de>, PhantomData<R>);

impl<'de, R: Raw<'de>> Deserialize<'de> for RawMembers<'de, R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<R>(PhantomData<R>);
        impl<'de, R: Raw<'de>> Visitor<'de> for V<R> {
            type Value = RawMembers<'de, R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let text = map.next_value::<R>()?.text();
                    let text = text.ok_or_else(|| serde::de::Error::custom("owned raw text"))?;
                    members.push((key.0, text));
                }
                Ok(RawMembers(members, PhantomData))
            }
        }
        deserializer.deserialize_map(V(PhantomData))
    }
}

/// An array's elements as raw texts, read by any serde deserializer.
struct RawElements<'de, R>(Vec<&'de str>, PhantomData<R>);

impl<'de, R: Raw<'de>> Deserialize<'de> for RawElements<'de, R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<R>(PhantomData<R>);
        impl<'de, R: Raw<'de>> Visitor<'de> for V<R> {
            type Value = RawElements<'de, R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let mut elements = Vec::new();
                while let Some(element) = seq.next_element::<R>()? {
                    let text = element.text();
                    elements.push(text.ok_or_else(|| serde::de::Error::custom("owned raw"))?);
                }
                Ok(RawElements(elements, PhantomData))
            }
        }
        deserializer.deserialize_seq(V(PhantomData))
    }
}

/// `request`, read in the envelope's pass: its fields as raw texts, and `object`'s and
/// `oldObject`'s members read in the same pass (their texts are not needed).
struct RawRequest<'de, R> {
    fields: [Option<&'de str>; 11],
    object: Option<Members<'de>>,
    old_object: Option<Members<'de>>,
    raw: PhantomData<R>,
}

impl<'de, R: Raw<'de>> Deserialize<'de> for RawRequest<'de, R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<R>(PhantomData<R>);
        impl<'de, R: Raw<'de>> Visitor<'de> for V<R> {
            type Value = RawRequest<'de, R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a request")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let repeated = || serde::de::Error::custom("a repeated field");
                let mut request = RawRequest {
                    fields: [None; 11],
                    object: None,
                    old_object: None,
                    raw: PhantomData,
                };
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match REQUEST_FIELDS.iter().position(|name| *name == key.0) {
                        Some(at) if request.fields[at].is_some() => return Err(repeated()),
                        // `object`, `oldObject`: their members, in this pass.
                        Some(at @ (8 | 9)) => {
                            let members = map.next_value::<RawMembers<'de, R>>()?.0;
                            request.fields[at] = Some("");
                            *if at == 8 {
                                &mut request.object
                            } else {
                                &mut request.old_object
                            } = Some(members);
                        }
                        Some(at) => {
                            let text = map.next_value::<R>()?.text();
                            request.fields[at] = Some(text.ok_or_else(repeated)?);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(request)
            }
        }
        deserializer.deserialize_map(V(PhantomData))
    }
}

/// The envelope, in one pass.
struct RawEnvelope<'de, R> {
    fields: [Option<&'de str>; 2],
    request: Option<RawRequest<'de, R>>,
}

impl<'de, R: Raw<'de>> Deserialize<'de> for RawEnvelope<'de, R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<R>(PhantomData<R>);
        impl<'de, R: Raw<'de>> Visitor<'de> for V<R> {
            type Value = RawEnvelope<'de, R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AdmissionReview")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let repeated = || serde::de::Error::custom("a repeated field");
                let mut envelope = RawEnvelope {
                    fields: [None; 2],
                    request: None,
                };
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match ENVELOPE_FIELDS.iter().position(|name| *name == key.0) {
                        Some(2) if envelope.request.is_some() => return Err(repeated()),
                        Some(2) => envelope.request = Some(map.next_value()?),
                        Some(at) if envelope.fields[at].is_some() => return Err(repeated()),
                        Some(at) => {
                            let text = map.next_value::<R>()?.text();
                            envelope.fields[at] = Some(text.ok_or_else(repeated)?);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(envelope)
            }
        }
        deserializer.deserialize_map(V(PhantomData))
    }
}

/// The envelope's reading done: its fields, and the walk through `levels`.
fn from_envelope<'t, R, L: Levels<'t>>(
    levels: &L,
    envelope: RawEnvelope<'t, R>,
) -> Option<Reading<'t>> {
    let request = envelope.request?;
    let [api_version, kind] = envelope.fields;
    // The request's own text is not kept by this reading: its presence is marked.
    let envelope_fields = [api_version, kind, Some("")];
    let (old, new) = (request.old_object?, request.object?);
    finish(levels, envelope_fields, request.fields, old, new)
}

/// serde_json's borrowed reading: every level's text re-read (and so re-validated) by it.
struct SerdeLevels;

impl<'t> Levels<'t> for SerdeLevels {
    fn members(&self, text: &'t str) -> Option<Members<'t>> {
        serde_json::from_str::<RawMembers<'t, &'t RawValue>>(text)
            .ok()
            .map(|m| m.0)
    }
    fn elements(&self, text: &'t str) -> Option<Vec<&'t str>> {
        serde_json::from_str::<RawElements<'t, &'t RawValue>>(text)
            .ok()
            .map(|e| e.0)
    }
}

/// (b) serde_json's borrowed reading: one pass for the envelope and both objects' members,
/// each changed level below re-read from its text.
pub fn serde_json_borrowed(body: &[u8]) -> Option<Reading<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    let envelope = serde_json::from_str::<RawEnvelope<'_, &RawValue>>(text).ok()?;
    from_envelope(&SerdeLevels, envelope)
}

/// sonic-rs's lazy iterators, checked (they validate what they skip).
struct SonicLevels;

impl<'t> Levels<'t> for SonicLevels {
    fn members(&self, text: &'t str) -> Option<Members<'t>> {
        let mut members = Vec::new();
        for member in sonic_rs::to_object_iter(text) {
            let (key, value) = member.ok()?;
            members.push((key, value.text()?));
        }
        Some(members)
    }
    fn elements(&self, text: &'t str) -> Option<Vec<&'t str>> {
        let mut elements = Vec::new();
        for element in sonic_rs::to_array_iter(text) {
            elements.push(element.ok()?.text()?);
        }
        Some(elements)
    }
}

/// sonic-rs's lazy iterators, unchecked: the text was validated in the envelope's pass.
struct SonicUncheckedLevels;

impl<'t> Levels<'t> for SonicUncheckedLevels {
    fn members(&self, text: &'t str) -> Option<Members<'t>> {
        let mut members = Vec::new();
        // SAFETY: every text walked is a member of a body sonic-rs validated whole.
        for member in unsafe { sonic_rs::to_object_iter_unchecked(text) } {
            let (key, value) = member.ok()?;
            members.push((key, value.text()?));
        }
        Some(members)
    }
    fn elements(&self, text: &'t str) -> Option<Vec<&'t str>> {
        let mut elements = Vec::new();
        // SAFETY: as above.
        for element in unsafe { sonic_rs::to_array_iter_unchecked(text) } {
            elements.push(element.ok()?.text()?);
        }
        Some(elements)
    }
}

/// (c) sonic-rs: the envelope's one pass through its serde `Deserializer` (`LazyValue`
/// members), the levels through its checked lazy iterators.
pub fn sonic_rs_checked(body: &[u8]) -> Option<Reading<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    match sonic_rs::from_str::<RawEnvelope<'_, sonic_rs::LazyValue<'_>>>(text) {
        Ok(envelope) => from_envelope(&SonicLevels, envelope),
        Err(_) => sonic_rs_iterated(text, &SonicLevels),
    }
}

/// sonic-rs's serde reading copies a string that holds an escape (its `LazyValue` is then no
/// slice of the body): such a body, and any it refuses, is read again level by level through
/// the checked iterators, which always borrow. Never taken by the benchmark's reviews.
/// The iterators stop at the root's closing brace and never look at what follows it (mutated
/// reviews with a `}` too many were read): the body is validated whole by sonic-rs first.
fn sonic_rs_iterated<'t, L: Levels<'t>>(text: &'t str, levels: &L) -> Option<Reading<'t>> {
    sonic_rs::from_str::<IgnoredAny>(text).ok()?;
    let envelope = fields(&SonicLevels.members(text)?, ENVELOPE_FIELDS)?;
    let request = fields(&SonicLevels.members(envelope[2]?)?, REQUEST_FIELDS)?;
    let (old, new) = (levels.members(request[9]?)?, levels.members(request[8]?)?);
    finish(levels, envelope, request, old, new)
}

/// (c') as [`sonic_rs_checked`], the levels through the unchecked iterators.
pub fn sonic_rs_unchecked(body: &[u8]) -> Option<Reading<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    match sonic_rs::from_str::<RawEnvelope<'_, sonic_rs::LazyValue<'_>>>(text) {
        Ok(envelope) => from_envelope(&SonicUncheckedLevels, envelope),
        Err(_) => sonic_rs_iterated(text, &SonicUncheckedLevels),
    }
}

// ---------------------------------------------------------------------------------------------
// (d) simd-json: a parsed tree, compared by value.

use simd_json::BorrowedValue;
use simd_json::prelude::*;

struct ValueWalk {
    path: String,
    changed: Vec<String>,
}

impl ValueWalk {
    fn values(&mut self, old: Option<&BorrowedValue<'_>>, new: Option<&BorrowedValue<'_>>) {
        let empty_object = None;
        match (old, new) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) if a.is_none_or(|a| a.is_object()) && b.is_none_or(|b| b.is_object()) => {
                let (a, b) = (
                    a.and_then(|a| a.as_object()).or(empty_object),
                    b.and_then(|b| b.as_object()).or(empty_object),
                );
                let mut keys: Vec<&str> = a
                    .into_iter()
                    .chain(b)
                    .flat_map(|object| object.keys().map(|k| k.as_ref()))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                for key in keys {
                    let len = self.path.len();
                    self.path.push('.');
                    self.path.push_str(key);
                    self.values(a.and_then(|a| a.get(key)), b.and_then(|b| b.get(key)));
                    self.path.truncate(len);
                }
            }
            (a, b) if a.is_none_or(|a| a.is_array()) && b.is_none_or(|b| b.is_array()) => {
                let none: &[BorrowedValue<'_>] = &[];
                let a = a.and_then(|a| a.as_array()).map_or(none, |a| a.as_slice());
                let b = b.and_then(|b| b.as_array()).map_or(none, |b| b.as_slice());
                for at in 0..a.len().max(b.len()) {
                    let len = self.path.len();
                    self.path.push('.');
                    self.path.push_str(itoa(at).as_str());
                    self.values(a.get(at), b.get(at));
                    self.path.truncate(len);
                }
            }
            _ => self.changed.push(self.path.clone()),
        }
    }
}

/// (d) simd-json: the body copied (it parses in place) into a `BorrowedValue`; members are
/// decoded values, so the walk compares values; fields are marked present.
pub fn simd_json_borrowed(body: &[u8]) -> Option<Reading<'static>> {
    let mut copy = body.to_vec();
    let root = simd_json::to_borrowed_value(&mut copy).ok()?;
    let mut fields: [Option<Cow<'static, str>>; 14] = Default::default();
    let root_object = root.as_object()?;
    for (at, name) in ENVELOPE_FIELDS.iter().enumerate() {
        fields[at] = root_object.get(*name).map(|_| Cow::Borrowed(""));
    }
    let request = root.get("request")?.as_object()?;
    for (at, name) in REQUEST_FIELDS.iter().enumerate() {
        fields[3 + at] = request.get(*name).map(|_| Cow::Borrowed(""));
    }
    let old = request.get("oldObject")?;
    let new = request.get("object")?;
    let mut walk = ValueWalk {
        path: String::new(),
        changed: Vec::new(),
    };
    walk.values(Some(old), Some(new));
    let mut changed = walk.changed;
    changed.sort();
    Some(Reading { fields, changed })
}

// ---------------------------------------------------------------------------------------------
// The check.

/// Whether serde_json reads `text` as one JSON value: the reference for acceptance.
pub fn serde_accepts(body: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(body).is_ok()
}

/// A deterministic xorshift, for the mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Per candidate: whether its reading of every review equals `index`'s (fields as raw texts,
/// or as present for `simd_json`, and the changed paths), and on how many of `mutations`
/// one-byte mutations of the small reviews it accepts differently from serde_json (a candidate
/// "accepts" a body when it reads it; `index` is held to the same).
pub fn check(mutations: usize) -> Vec<(&'static str, bool, usize, usize)> {
    let reviews = reviews::all();
    let mut report = Vec::new();
    for (name, reader) in CANDIDATES {
        let mut same = true;
        for (review, body) in &reviews {
            let ours = index(body).expect("the index reads the review");
            let theirs = reader(body);
            let Some(theirs) = theirs else {
                eprintln!("{name}: does not read {review}");
                same = false;
                continue;
            };
            let expected_fields: Vec<Option<Cow<'_, str>>> = if name == "index" {
                ours.fields.to_vec()
            } else if name == "simd_json" {
                ours.fields
                    .iter()
                    .map(|f| f.as_ref().map(|_| Cow::Borrowed("")))
                    .collect()
            } else {
                // The one-pass readings do not keep `request`'s, `object`'s and `oldObject`'s
                // own texts: compare those as present.
                ours.fields
                    .iter()
                    .enumerate()
                    .map(|(at, f)| {
                        f.as_ref().map(|f| match at {
                            2 | 11 | 12 => Cow::Borrowed(""),
                            _ => f.clone(),
                        })
                    })
                    .collect()
            };
            if theirs.fields.as_slice() != expected_fields.as_slice()
                || theirs.changed != ours.changed
            {
                eprintln!(
                    "{name}: reads {review} differently: {:?} changed, index {:?}",
                    theirs.changed.len(),
                    ours.changed.len()
                );
                same = false;
            }
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"{}[]\":,\\ 0123456789.eE+-tfnrlsua\x01\x1f\n";
        let (mut disagreements, mut tried) = (0, 0);
        for at in 0..mutations {
            let (_, body) = &reviews[at % 2];
            let mut body = body.clone();
            let position = (rng.next() % body.len() as u64) as usize;
            let byte = alphabet[(rng.next() % alphabet.len() as u64) as usize];
            match rng.next() % 3 {
                0 => body[position] = byte,
                1 => {
                    body.remove(position);
                }
                _ => body.insert(position, byte),
            }
            tried += 1;
            // A body any candidate refuses to read as a review (not only as JSON) is compared
            // by validity alone: valid JSON it reads, invalid it refuses.
            let accepts = serde_accepts(&body);
            let read = reader(&body).is_some();
            let read_by_index = index(&body).is_some();
            if read != read_by_index || (read && !accepts) {
                disagreements += 1;
                if disagreements <= 3 {
                    eprintln!(
                        "{name}: mutation {at} read {read}, index {read_by_index}, serde_json accepts {accepts}: {:?}",
                        String::from_utf8_lossy(
                            &body[position.saturating_sub(20)..(position + 20).min(body.len())]
                        )
                    );
                }
            }
        }
        report.push((name, same, disagreements, tried));
    }
    report
}

/// Texts on which the candidates' validators are known to part from serde_json or each other,
/// and whether each accepts them: (text, [serde_json, index, sonic-rs, simd-json]).
pub fn probes() -> Vec<(String, [bool; 4])> {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let texts = [
        r#""k\ubeflow""#.to_owned(),
        r#""\u12g4""#.to_owned(),
        r#""\ud800""#.to_owned(),
        "\"a\u{1}b\"".to_owned(),
        "{\"a\":1}}".to_owned(),
        "[1.]".to_owned(),
        "[01]".to_owned(),
        deep(200),
        deep(2000),
    ];
    texts
        .into_iter()
        .map(|text| {
            let accepts = [
                serde_accepts(text.as_bytes()),
                Index::of(&text).is_some(),
                sonic_rs::from_str::<IgnoredAny>(&text).is_ok(),
                simd_json::to_borrowed_value(&mut text.clone().into_bytes()).is_ok(),
            ];
            (text, accepts)
        })
        .collect()
}
