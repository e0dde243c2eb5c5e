//! The structural index against serde_json, on arbitrary bytes.
//!
//! Checks: no panic; a UTF-8 text is indexed exactly when serde_json reads it as one JSON value
//! (`IgnoredAny`, the same grammar its `RawValue` reading checks) within serde_json's recursion
//! limit (`json::MAX_DEPTH` containers, counted here outside strings), both by `Index::of` and by
//! `Index::of_twins` (as reviews are: `oldObject` checked against `object` where it repeats it;
//! the fixtures seed it with real reviews); and in an indexed text, every object's members (keys
//! unescaped, values as texts, in document order, repeats kept) and every array's elements are
//! exactly what serde_json reads there, except inside values validated by comparison.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pytorchjob_guard::json::{Index, MAX_DEPTH};
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// What serde_json reads in a container: the members or the elements, in document order.
enum Read<'a> {
    Members(Vec<(String, &'a str)>),
    Elements(Vec<&'a str>),
    Scalar,
}

impl<'de> Deserialize<'de> for Read<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Read<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    members.push((key, map.next_value::<&RawValue>()?.get()));
                }
                Ok(Read::Members(members))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let mut elements = Vec::new();
                while let Some(element) = seq.next_element::<&RawValue>()? {
                    elements.push(element.get());
                }
                Ok(Read::Elements(elements))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Read::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Read::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Read::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Read::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Read::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Read::Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

/// Compare the index with serde_json at `value` and, recursively, everything inside it.
fn agrees(index: &Index<'_>, value: &str) {
    if index.is_opaque(value) {
        return;
    }
    match serde_json::from_str::<Read<'_>>(value) {
        Ok(Read::Members(theirs)) => {
            let ours = index.members(value).expect("an object of the index");
            assert_eq!(ours.len(), theirs.len(), "{value}");
            for ((key, text), (their_key, their_text)) in ours.iter().zip(&theirs) {
                assert_eq!((key.as_ref(), *text), (their_key.as_str(), *their_text));
                agrees(index, text);
            }
        }
        Ok(Read::Elements(theirs)) => {
            let ours = index.elements(value).expect("an array of the index");
            assert_eq!(ours, theirs, "{value}");
            for text in ours {
                agrees(index, text);
            }
        }
        // A key that is no string (a lone surrogate escape): serde_json cannot read the object's
        // keys, and neither can the index.
        Err(_) if value.starts_with('{') => {
            assert!(index.members(value).is_none(), "{value}");
        }
        // A scalar, or a number beyond f64.
        Ok(Read::Scalar) | Err(_) => {}
    }
}

/// How many containers deep a valid JSON text nests (brackets counted outside strings).
fn depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for byte in text.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') | (false, _, b'"') => in_string = !in_string,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let serde = serde_json::from_str::<IgnoredAny>(text).is_ok() && depth(text) < MAX_DEPTH;
    for index in [
        Index::of(text),
        Index::of_twins(text, "object", "oldObject"),
    ] {
        assert_eq!(
            index.is_ok(),
            serde,
            "indexed exactly when serde_json reads it: {text:?}"
        );
        if let Ok(index) = index {
            assert_eq!(index.root(), text.trim_matches([' ', '\t', '\n', '\r']));
            agrees(&index, index.root());
        }
    }
});
