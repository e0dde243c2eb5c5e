//! Raw member readers: a JSON object read one level deep ([`RawObject`]), the members and
//! elements of any level of a validated text ([`Structure`]), and the scalars Kubernetes
//! objects are mostly made of, read without serde_json ([`plain_scalar`]).
//!
//! Everything here borrows from the text it reads: keys are borrowed unless they hold escapes
//! (then decoded), values are their JSON texts. A level's member list is the only allocation:
//! 40 bytes a member (at least 5 bytes of text each), built only for the levels asked for.
//! Pure: no I/O.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{Error as _, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::index::Index;

/// A JSON object read one level deep: its members as raw texts, sorted by key (a repeated key
/// keeps its last value), and the [`Index`] they lie in when the object was indexed (a review's
/// objects are: [`RawObject::indexed`]), so the diff finds the members of any level below
/// without reading it again. What a review's `object` and `oldObject` are decoded into, so the
/// walk starts without scanning them again. Anything but an object is kept as its [`Value`],
/// for the message that says so.
#[derive(Debug)]
pub enum RawObject<'a> {
    /// A JSON object's members: keys, and values as their (validated) JSON texts; and the index
    /// of the text they are in, if any.
    Members(Vec<(Cow<'a, str>, &'a str)>, Option<Arc<Index<'a>>>),
    /// Not a JSON object.
    Other(Value),
}

impl<'a> RawObject<'a> {
    /// The object `value` of `index` (a value of its text), read through the index; `None`
    /// when `value` is not an object of it, or a key holds an escape that is no character.
    pub fn indexed(index: &Arc<Index<'a>>, value: &str) -> Option<Self> {
        let members = index.members(value)?;
        Some(RawObject::Members(sorted(members), Some(index.clone())))
    }

    /// Read a JSON text: indexed when it is an object, as a [`Value`] otherwise.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        match Index::of(text) {
            Ok(index) if index.root().starts_with('{') => {
                let index = Arc::new(index);
                Self::indexed(&index, index.root())
                    .ok_or_else(|| serde_json::Error::custom("an object key that is no string"))
            }
            _ => serde_json::from_str(text),
        }
    }

    /// The members (none when not an object).
    pub fn members(&self) -> &[(Cow<'a, str>, &'a str)] {
        match self {
            RawObject::Members(members, _) => members,
            RawObject::Other(_) => &[],
        }
    }

    /// The index the members lie in, if the object was indexed.
    pub fn index(&self) -> Option<&Index<'a>> {
        match self {
            RawObject::Members(_, index) => index.as_deref(),
            RawObject::Other(_) => None,
        }
    }

    /// The raw text of a top-level member.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        let members = self.members();
        members
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|at| members[at].1)
    }

    /// The raw text at `keys` (at least one) below the top level.
    pub fn pointer(&self, keys: &[&str]) -> Option<&'a str> {
        let (first, rest) = keys.split_first()?;
        let mut at = self.get(first)?;
        for key in rest {
            let members = Structure(self.index()).members(at)?;
            // The last of a repeated key, as everywhere else.
            at = members.into_iter().rev().find(|(k, _)| k == key)?.1;
        }
        Some(at)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                Ok(RawObject::Members(read_members(map)?, None))
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> Result<Self::Value, S::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Value>()? {
                    items.push(item);
                }
                Ok(RawObject::Other(Value::Array(items)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawObject::Other(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawObject::Other(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawObject::Other(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(RawObject::Other(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawObject::Other(Value::String(v.to_owned())))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(RawObject::Other(Value::Null))
            }
        }
        deserializer.deserialize_any(Object)
    }
}

/// Read a JSON object's members, keys borrowed where they can be, values as raw texts, sorted
/// by key; a repeated key keeps its last value, as [`Value`] does.
fn read_members<'de, M: MapAccess<'de>>(
    mut map: M,
) -> Result<Vec<(Cow<'de, str>, &'de str)>, M::Error> {
    let mut members = Vec::new();
    while let Some(key) = map.next_key::<BorrowedKey<'de>>()? {
        members.push((key.0, map.next_value::<&'de RawValue>()?.get()));
    }
    Ok(sorted(members))
}

/// Members sorted by key; a repeated key keeps its last value, as [`Value`] does.
pub fn sorted<'a>(mut members: Vec<(Cow<'a, str>, &'a str)>) -> Vec<(Cow<'a, str>, &'a str)> {
    // The API server writes keys sorted: then there is nothing to do.
    if members.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        return members;
    }
    members.reverse();
    // Stable: among equal keys the last occurrence now comes first, and dedup keeps it.
    members.sort_by(|x, y| x.0.cmp(&y.0));
    members.dedup_by(|later, kept| later.0 == kept.0);
    members
}

/// Where the members and elements of validated texts are found: in the index they lie in, or
/// (a text read without one, as serde_json's `RawValue`s are) in an index of the text alone.
#[derive(Clone, Copy, Debug)]
pub struct Structure<'i, 't>(pub Option<&'i Index<'t>>);

impl<'t> Structure<'_, 't> {
    /// The members of the object `text`, in document order.
    pub fn members(self, text: &'t str) -> Option<Vec<(Cow<'t, str>, &'t str)>> {
        match self.0.and_then(|index| index.members(text)) {
            Some(members) => Some(members),
            None => Index::of(text).ok()?.members(text),
        }
    }

    /// The elements of the array `text`.
    pub fn elements(self, text: &'t str) -> Option<Vec<&'t str>> {
        match self.0.and_then(|index| index.elements(text)) {
            Some(elements) => Some(elements),
            None => Index::of(text).ok()?.elements(text),
        }
    }
}

/// An object key, borrowed from the text unless it has escapes.
struct BorrowedKey<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl<'de> Visitor<'de> for Key {
            type Value = BorrowedKey<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Owned(key.to_owned())))
            }
            fn visit_string<E>(self, key: String) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(Key)
    }
}

/// What a raw text holds, from its first byte.
pub fn shape(raw: &str) -> u8 {
    raw.as_bytes().first().copied().unwrap_or(b'n')
}

/// The value of a validated JSON text that is one of the scalars Kubernetes objects are mostly
/// made of, read without serde_json: `true`, `false`, `null`, a string without escapes, or an
/// integer of up to 18 digits without sign, fraction or exponent (what serde_json reads as a
/// `u64`). `None` for anything else, which serde_json reads.
pub fn plain_scalar(raw: &str) -> Option<Value> {
    match raw.as_bytes() {
        b"true" => Some(Value::Bool(true)),
        b"false" => Some(Value::Bool(false)),
        b"null" => Some(Value::Null),
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
            // Validated text: between its quotes, whole characters.
            Some(Value::String(raw[1..raw.len() - 1].to_owned()))
        }
        digits @ [b'0'..=b'9', ..]
            if digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit) =>
        {
            raw.parse::<u64>().ok().map(|n| Value::Number(n.into()))
        }
        _ => None,
    }
}
