//! Splitting JSON text that is already known to be valid into its members or elements, without
//! parsing or validating it again.
//!
//! A review's objects are validated once, whole, when the review is decoded (serde_json reads
//! every byte of them into borrowed raw values). Below that, the diff only needs to know where
//! each member of a changed object starts and ends; this module finds that with one forward
//! scan per level, skipping string contents with `memchr` and building nothing. Text that is
//! not valid JSON gives `None`, never a panic, but it is not checked in depth: callers only pass
//! text that was validated. Pure: text in, slices of it out.

use std::borrow::Cow;

/// The members of a JSON object text, keys unescaped (borrowed unless they hold escapes),
/// values as their texts, in document order. `None` when `text` is not an object.
pub fn object(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    items(text, b'{', b'}', |bytes, at| {
        let key_end = string_end(bytes, at)?;
        let key = key(text.get(at..key_end)?)?;
        let colon = skip_space(bytes, key_end);
        if bytes.get(colon) != Some(&b':') {
            return None;
        }
        let start = skip_space(bytes, colon + 1);
        let end = value_end(bytes, start)?;
        Some(((key, text.get(start..end)?), end))
    })
}

/// The elements of a JSON array text, as their texts. `None` when `text` is not an array.
pub fn array(text: &str) -> Option<Vec<&str>> {
    items(text, b'[', b']', |bytes, at| {
        let end = value_end(bytes, at)?;
        Some((text.get(at..end)?, end))
    })
}

/// The comma-separated items between `open` and `close`, each read by `item` from where it
/// starts to (the item, where it ends).
fn items<'t, T>(
    text: &'t str,
    open: u8,
    close: u8,
    mut item: impl FnMut(&'t [u8], usize) -> Option<(T, usize)>,
) -> Option<Vec<T>> {
    let bytes = text.as_bytes();
    let mut at = skip_space(bytes, 0);
    if bytes.get(at) != Some(&open) {
        return None;
    }
    let mut items = Vec::new();
    at = skip_space(bytes, at + 1);
    if bytes.get(at) == Some(&close) {
        return Some(items);
    }
    loop {
        let (read, end) = item(bytes, at)?;
        items.push(read);
        at = skip_space(bytes, end);
        match bytes.get(at)? {
            b',' => at = skip_space(bytes, at + 1),
            found if *found == close => return Some(items),
            _ => return None,
        }
    }
}

/// A key's text (with its quotes) unescaped: borrowed when it has no escapes.
fn key(quoted: &str) -> Option<Cow<'_, str>> {
    let inner = quoted.get(1..quoted.len().checked_sub(1)?)?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(quoted).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Where the string starting at `at` (its opening quote) ends: one past its closing quote.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut at = at + 1;
    loop {
        at += quote_or_backslash(bytes.get(at..)?)?;
        match bytes[at] {
            b'"' => return Some(at + 1),
            // An escape: skip the backslash and the character it escapes (`\"`, `\\`, `\u…`).
            _ => at += 2,
        }
    }
}

/// The first `"` or `\` in `bytes`. Most strings (keys, names, the runs between escapes) are
/// short: the first [`SHORT`] bytes are searched eight at a time in a word, and only a longer
/// string pays for a vectorised search.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_le_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_le_bytes([b'\\'; 8]);
    let mut at = 0;
    while at < SHORT {
        let Some(chunk) = bytes.get(at..at + 8) else {
            let rest = bytes.get(at..)?;
            return rest
                .iter()
                .position(|b| matches!(b, b'"' | b'\\'))
                .map(|found| at + found);
        };
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // A byte of `x` is zero where `word` holds the byte searched for; the lowest flagged
        // byte of `(x - ONES) & !x & HIGHS` is the first zero byte (higher ones may be false).
        let (q, b) = (word ^ QUOTES, word ^ BACKSLASHES);
        let found = ((q.wrapping_sub(ONES) & !q) | (b.wrapping_sub(ONES) & !b)) & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr::memchr2(b'"', b'\\', bytes.get(at..)?).map(|found| at + found)
}

/// How many bytes [`quote_or_backslash`] searches word by word before a vectorised search.
const SHORT: usize = 32;

/// Where the value starting at `at` ends: one past its last byte.
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => container_end(bytes, at),
        _ => {
            // A number or a literal: up to the next delimiter.
            let rest = bytes.get(at..)?;
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(rest.len());
            (len > 0).then_some(at + len)
        }
    }
}

/// Where the object or array starting at `at` ends: one past its closing bracket.
fn container_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = at;
    loop {
        match bytes.get(at)? {
            b'"' => {
                at = string_end(bytes, at)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            _ => {}
        }
        at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;
    use serde_json::value::RawValue;

    /// What serde_json finds in the same text: the reference.
    fn serde_members(text: &str) -> Vec<(String, String)> {
        // A map keeps the last of a repeated key, sorted by key.
        let map: std::collections::BTreeMap<String, &RawValue> =
            serde_json::from_str(text).unwrap();
        map.into_iter()
            .map(|(k, v)| (k, v.get().to_owned()))
            .collect()
    }

    fn ours(text: &str) -> Vec<(String, String)> {
        let mut members: Vec<(String, String)> = object(text)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.to_owned()))
            .collect();
        // serde's map keeps the last of a repeated key and sorts; do the same to compare.
        members.reverse();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|later, kept| later.0 == kept.0);
        members
    }

    #[test]
    fn objects_split_as_serde_reads_them() {
        for text in [
            r#"{}"#,
            r#" { } "#,
            r#"{"a":1}"#,
            r#"{"a" : [1, {"b": "}"}] , "c":"x\"y\\", "d":true,"e":null,"f":-1.5e3}"#,
            "{\n\t\"k\\u00e9y\": {\"nested\": [[], {}, \"]\"]},\r\n \"z\": \"\\\\\"\n}",
            r#"{"dup":1,"dup":2}"#,
            r#"{"a.b":{"c":[1,2,{"d":"{[\"x"}]}}"#,
        ] {
            assert_eq!(ours(text), serde_members(text), "{text}");
        }
    }

    #[test]
    fn quotes_and_backslashes_are_found_at_every_offset() {
        for len in 0..80 {
            for at in 0..len {
                for needle in [b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = needle;
                    // A later needle never hides the first one.
                    if at + 1 < len {
                        bytes[len - 1] = b'"';
                    }
                    assert_eq!(quote_or_backslash(&bytes), Some(at), "{len} {at}");
                }
            }
            assert_eq!(quote_or_backslash(&vec![0xff; len]), None, "{len}");
        }
    }

    #[test]
    fn arrays_split_as_serde_reads_them() {
        for text in [
            r#"[]"#,
            r#" [ 1 , "a,b" , [ ] , { "x" : [ "]" ] } , null ] "#,
        ] {
            let serde: Vec<&RawValue> = serde_json::from_str(text).unwrap();
            let serde: Vec<&str> = serde.iter().map(|v| v.get()).collect();
            assert_eq!(array(text).unwrap(), serde, "{text}");
        }
    }

    #[test]
    fn what_is_not_a_container_or_is_cut_short_is_none() {
        for text in [
            "", "1", "\"s\"", "{", "{\"a\"", "{\"a\":", "{\"a\":1", "[1,", "[\"x]",
        ] {
            assert!(object(text).is_none(), "{text:?}");
            assert!(array(text).is_none(), "{text:?}");
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[ -~\\\\\"\\n\\t\u{e9}\u{1F600}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[ -~\\\\\"]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// On any valid JSON, compact or pretty-printed, the split equals serde_json's.
        #[test]
        fn the_split_agrees_with_serde_on_any_json(members in prop::collection::btree_map("[ -~\\\\\"]{0,6}", any_json(), 0..6), pretty in any::<bool>()) {
            let value = Value::Object(members.into_iter().collect());
            let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) }.unwrap();
            prop_assert_eq!(ours(&text), serde_members(&text));
            for (_, member) in object(&text).unwrap() {
                if member.starts_with('[') {
                    let serde: Vec<&RawValue> = serde_json::from_str(member).unwrap();
                    let serde: Vec<&str> = serde.iter().map(|v| v.get()).collect();
                    prop_assert_eq!(array(member).unwrap(), serde);
                }
            }
        }
    }
}
