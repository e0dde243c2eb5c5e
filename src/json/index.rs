//! A structural index of JSON text, built in the one pass that validates it: where every value
//! (and every object key) starts and ends, and where its subtree ends, so the members of any
//! object and the elements of any array are found without reading the text again.
//!
//! A review's body is indexed once, whole; decoding it takes `object` and `oldObject` from the
//! index instead of having serde_json validate them a second time, and the diff descends into
//! changed levels through it instead of re-scanning each one. [`Index::of`] accepts exactly the
//! texts `serde_json` reads as one JSON value within its recursion limit (RFC 8259, escapes
//! checked but not decoded, at most [`MAX_DEPTH`] containers deep); the property tests and the
//! `index` fuzz target hold it to that. It holds 12 bytes a value or key and at most
//! [`MAX_DEPTH`] open containers; a deeper container is refused before anything is allocated
//! for it ([`Refusal::TooDeep`]). Pure: text in, positions out, no allocation beyond the index
//! and the member lists asked for.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::special;

/// One value or object key in the text: its byte range, and the position in `Index::nodes`
/// right after its subtree (the next sibling, or where its parent's next sibling starts), with
/// [`OPAQUE`] set on a container whose children were not indexed (see [`Index::of_twins`]) and
/// [`ESCAPED`] on a key that holds an escape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    start: u32,
    end: u32,
    after: u32,
}

/// The bit of [`Node::after`] that marks a value validated by comparison, without children.
const OPAQUE: u32 = 1 << 31;

/// The bit of [`Node::after`] that marks a key with a backslash in it: only those are
/// unescaped, the rest are borrowed without looking at their bytes again.
const ESCAPED: u32 = 1 << 30;

/// The longest text indexed: node positions (at most one per byte) fit beside both bits.
const MAX_TEXT: usize = 1 << 30;

impl Node {
    fn after(self) -> usize {
        (self.after & !(OPAQUE | ESCAPED)) as usize
    }

    fn len(self) -> usize {
        (self.end - self.start) as usize
    }
}

/// How deep below a twin the scan follows the earlier twin's structure: deeper than any real
/// object's fields (a PyTorchJob's deepest are about 20 levels down), so hostile nesting costs
/// no more than that many comparisons of a byte.
const MAX_TWIN_DEPTH: usize = 32;

/// The deepest nesting read: serde_json's recursion limit, so the index refuses exactly the
/// containers serde_json's own reader would refuse (the 128th container open around a value),
/// and refuses it where its byte is first read, before anything is allocated for that level.
/// Kubernetes objects nest about 20 deep; a text of `[` alone once took 587 MiB for 6 MiB
/// without this bound.
pub const MAX_DEPTH: usize = 128;

/// Why a text has no index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not one JSON value as serde_json reads it.
    Invalid,
    /// A container opened [`MAX_DEPTH`] containers deep: serde_json's recursion limit. What
    /// comes before it may be valid or not; nothing after it was read.
    TooDeep,
    /// 1 GiB or longer: node positions would not fit.
    TooLong,
}

/// How many members of the earlier twin's object are tried, from where the last match was, for
/// a member of the later twin: keys in another order cost at most this many comparisons each.
const TWIN_LOOKAHEAD: usize = 8;

/// A validated JSON text and the positions of everything in it, in document order: a
/// container's node is followed by its children's (an object's as key, value, key, value …).
#[derive(Debug)]
pub struct Index<'a> {
    text: &'a str,
    nodes: Vec<Node>,
}

impl<'a> Index<'a> {
    /// Index `text`, or why not: it is not one JSON value (with optional surrounding
    /// whitespace) as serde_json reads it, it nests deeper than [`MAX_DEPTH`], or it is 1 GiB
    /// or longer.
    pub fn of(text: &'a str) -> Result<Self, Refusal> {
        Self::scan(text, None)
    }

    /// [`Index::of`], for a text where an object member named `second` mostly repeats its
    /// earlier sibling `first` byte for byte (a review's `oldObject` and `object`): inside
    /// `second`, a string or container whose bytes equal those of the same member (or element)
    /// of `first` is validated by that comparison alone and indexed without children, as a
    /// value whose members the diff never asks for (it skips byte-equal texts). The texts
    /// accepted are exactly those [`Index::of`] accepts; [`Index::members`] and
    /// [`Index::elements`] of such a value are `None`.
    pub fn of_twins(text: &'a str, first: &str, second: &str) -> Result<Self, Refusal> {
        Self::scan(text, Some((first, second)))
    }

    fn scan(text: &'a str, twins: Option<(&str, &str)>) -> Result<Self, Refusal> {
        if text.len() >= MAX_TEXT {
            return Err(Refusal::TooLong);
        }
        let mut scanner = Scanner {
            bytes: text.as_bytes(),
            // Kubernetes objects hold about one node per ten bytes, a review's later twin far
            // fewer (what it repeats is one node): a review indexed with twins holds one node
            // per 14 (small) to 31 (large) bytes. Rarely a reallocation, little unused.
            nodes: Vec::with_capacity(text.len() / 12 + 16),
            open: Vec::with_capacity(32),
            twins: twins.map(|(first, second)| (first.as_bytes(), second.as_bytes())),
            hint: None,
            too_deep: false,
        };
        match scanner.scan() {
            Some(()) => Ok(Self {
                text,
                nodes: scanner.nodes,
            }),
            None if scanner.too_deep => Err(Refusal::TooDeep),
            None => Err(Refusal::Invalid),
        }
    }

    /// Whether `value` is one of the values of this index (a slice of its text where a value
    /// starts and ends), and where.
    fn find(&self, value: &str) -> Option<usize> {
        let base = self.text.as_ptr() as usize;
        let start = (value.as_ptr() as usize).checked_sub(base)?;
        if start + value.len() > self.text.len() {
            return None;
        }
        let at = self
            .nodes
            .binary_search_by_key(&start, |node| node.start as usize)
            .ok()?;
        (self.nodes[at].end as usize == start + value.len()).then_some(at)
    }

    fn slice(&self, at: usize) -> &'a str {
        let node = self.nodes[at];
        &self.text[node.start as usize..node.end as usize]
    }

    /// The value the index was built from: the root.
    pub fn root(&self) -> &'a str {
        self.slice(0)
    }

    /// The members of the object `value` (a value of this index), keys unescaped (borrowed
    /// unless they hold escapes), values as their texts, in document order. `None` when
    /// `value` is not an object of this index, or a key holds an escape that is no character
    /// (a lone surrogate).
    pub fn members(&self, value: &str) -> Option<Vec<(Cow<'a, str>, &'a str)>> {
        let at = self.find(value)?;
        if !value.starts_with('{') {
            return None;
        }
        let end = self.after_children(at)?;
        let mut members = Vec::with_capacity(self.children(at + 1, end) / 2);
        let mut child = at + 1;
        while child < end {
            let key = self.key(child)?;
            members.push((key, self.slice(child + 1)));
            child = self.nodes[child + 1].after();
        }
        Some(members)
    }

    /// The elements of the array `value` (a value of this index), as their texts. `None` when
    /// `value` is not an array of this index.
    pub fn elements(&self, value: &str) -> Option<Vec<&'a str>> {
        let at = self.find(value)?;
        if !value.starts_with('[') {
            return None;
        }
        let end = self.after_children(at)?;
        let mut elements = Vec::with_capacity(self.children(at + 1, end));
        let mut child = at + 1;
        while child < end {
            elements.push(self.slice(child));
            child = self.nodes[child].after();
        }
        Some(elements)
    }

    /// How many nodes follow each other from `from` up to `end` (an object's keys and values, an
    /// array's elements): the size of the list to build.
    fn children(&self, from: usize, end: usize) -> usize {
        let (mut count, mut child) = (0, from);
        while child < end {
            count += 1;
            child = self.nodes[child].after();
        }
        count
    }

    /// Where the children of the container at `at` end; `None` when they were not indexed.
    fn after_children(&self, at: usize) -> Option<usize> {
        let node = self.nodes[at];
        (node.after & OPAQUE == 0).then(|| node.after())
    }

    /// Whether `value` is a value of this index validated by comparison (its children not
    /// indexed: [`Index::of_twins`]).
    pub fn is_opaque(&self, value: &str) -> bool {
        self.find(value)
            .is_some_and(|at| self.nodes[at].after & OPAQUE != 0)
    }

    /// The value of the last `key` member of the object `value` (a value of this index), as
    /// serde_json keeps the last of a repeated key. For the tests: production reads members
    /// through [`Index::members`].
    #[cfg(test)]
    pub fn member(&self, value: &str, key: &str) -> Option<&'a str> {
        let members = self.members(value)?;
        members
            .into_iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The key at node `at`, unescaped: borrowed when it has no escapes.
    fn key(&self, at: usize) -> Option<Cow<'a, str>> {
        let node = self.nodes[at];
        if node.after & ESCAPED != 0 {
            return serde_json::from_str::<String>(self.slice(at))
                .ok()
                .map(Cow::Owned);
        }
        // Its quotes are ASCII: the text between them is whole characters.
        Some(Cow::Borrowed(
            &self.text[node.start as usize + 1..node.end as usize - 1],
        ))
    }
}

/// serde_json's own error for a text the index refused as [`Refusal::TooDeep`]: its reading of
/// the text through every container, which stops at the same container (its recursion limit)
/// or at an error before it. Nothing read is kept, so nothing is allocated per level.
pub fn nesting_error(text: &[u8]) -> serde_json::Error {
    match serde_json::from_slice::<Nested>(text) {
        Err(error) => error,
        // Not reached: the index refuses exactly where serde_json's limit does.
        Ok(Nested) => {
            serde_json::Error::custom(format_args!("nesting deeper than {MAX_DEPTH} containers"))
        }
    }
}

/// Any JSON value, read through serde_json's `deserialize_any` (which counts nesting against its
/// recursion limit) and kept as nothing.
struct Nested;

impl<'de> Deserialize<'de> for Nested {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Nested)
    }
}

impl<'de> Visitor<'de> for Nested {
    type Value = Nested;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Nested, E> {
        Ok(Nested)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Nested, E> {
        Ok(Nested)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Nested, E> {
        Ok(Nested)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Nested, E> {
        Ok(Nested)
    }
    fn visit_str<E>(self, _: &str) -> Result<Nested, E> {
        Ok(Nested)
    }
    fn visit_unit<E>(self) -> Result<Nested, E> {
        Ok(Nested)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Nested, S::Error> {
        while seq.next_element::<Nested>()?.is_some() {}
        Ok(Nested)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Nested, M::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value::<Nested>()?;
        }
        Ok(Nested)
    }
}

struct Scanner<'t> {
    bytes: &'t [u8],
    nodes: Vec<Node>,
    /// The containers open around the current position.
    open: Vec<Open>,
    /// The keys of [`Index::of_twins`], as they appear in the text between their quotes.
    twins: Option<(&'t [u8], &'t [u8])>,
    /// The node of the earlier twin the next value is expected to repeat, and whether a repeat
    /// may stand for it (not for the later twin itself, whose members are always indexed).
    hint: Option<(usize, bool)>,
    /// Whether the scan stopped at a container opened [`MAX_DEPTH`] deep.
    too_deep: bool,
}

/// A container being scanned.
struct Open {
    node: usize,
    object: bool,
    /// The value of its last member named as the earlier twin, if any.
    first: Option<usize>,
    /// The same container in the earlier twin, as far as this one follows it.
    twin: Option<Twin>,
}

/// Where a container of the later twin stands in the earlier twin's same container.
#[derive(Clone, Copy)]
struct Twin {
    /// The earlier twin's container.
    node: usize,
    /// Its next child to expect (a key node for objects, an element for arrays).
    next: usize,
    /// How far below the twins' root this is.
    depth: usize,
}

// The scanner's steps are `#[inline(always)]`: called once per key and value, their calls
// (saving and restoring the scanner's registers) cost as much as their work.
impl Scanner<'_> {
    fn scan(&mut self) -> Option<()> {
        let mut at = self.space(0);
        'value: loop {
            // A value starts at `at`.
            let start = at;
            let (hint, skip) = match self.hint.take() {
                Some((hint, skip)) => (Some(hint), skip),
                None => (None, false),
            };
            if let Some(end) = hint
                .filter(|_| skip)
                .and_then(|hint| self.repeats(hint, at))
            {
                // The earlier twin's bytes again: as valid as they were there.
                self.nodes.push(Node {
                    start: start as u32,
                    end: end as u32,
                    after: (self.nodes.len() as u32 + 1) | OPAQUE,
                });
                at = end;
            } else {
                match *self.bytes.get(at)? {
                    open @ (b'{' | b'[') => {
                        if self.open.len() + 1 >= MAX_DEPTH {
                            self.too_deep = true;
                            return None;
                        }
                        let object = open == b'{';
                        let twin = hint.and_then(|hint| self.follow(hint, open));
                        let node = self.nodes.len();
                        self.open.push(Open {
                            node,
                            object,
                            first: None,
                            twin,
                        });
                        self.push(start, 0);
                        at = self.space(at + 1);
                        let close = if object { b'}' } else { b']' };
                        if self.bytes.get(at) == Some(&close) {
                            at += 1;
                            self.close(at);
                        } else {
                            at = self.member(at, object)?;
                            continue 'value;
                        }
                    }
                    b'"' => {
                        at = self.string(at)?.0;
                        self.push(start, at);
                    }
                    b't' => at = self.literal(at, b"true")?,
                    b'f' => at = self.literal(at, b"false")?,
                    b'n' => at = self.literal(at, b"null")?,
                    b'-' | b'0'..=b'9' => {
                        at = self.number(at)?;
                        self.push(start, at);
                    }
                    _ => return None,
                }
            }
            // After a value: the next member or element, or the end of its container.
            loop {
                at = self.space(at);
                let Some(object) = self.open.last().map(|open| open.object) else {
                    return (at == self.bytes.len()).then_some(());
                };
                match *self.bytes.get(at)? {
                    b',' => {
                        at = self.space(at + 1);
                        at = self.member(at, object)?;
                        continue 'value;
                    }
                    b'}' if object => {
                        at += 1;
                        self.close(at);
                    }
                    b']' if !object => {
                        at += 1;
                        self.close(at);
                    }
                    _ => return None,
                }
            }
        }
    }

    /// The start of the next member (its key, read here) or element at `at`: where its value
    /// starts, with the twin hint for it set.
    #[inline(always)]
    fn member(&mut self, at: usize, object: bool) -> Option<usize> {
        if !object {
            self.hint = self.element_hint().map(|hint| (hint, true));
            return Some(at);
        }
        let key = self.nodes.len();
        let value = self.key(at)?;
        self.hint = self.member_hint(key);
        Some(value)
    }

    /// The earlier twin's element at the position of the next element.
    #[inline(always)]
    fn element_hint(&mut self) -> Option<usize> {
        let twin = self.open.last_mut()?.twin.as_mut()?;
        let node = self.nodes[twin.node];
        if twin.next >= node.after() {
            return None;
        }
        let hint = twin.next;
        twin.next = self.nodes[hint].after();
        Some(hint)
    }

    /// The value the member whose key is node `key` is expected to repeat: the earlier twin's
    /// member of the same key text (searched from where the last one matched), or, for the
    /// later twin itself, the earlier twin (followed, never skipped).
    #[inline(always)]
    fn member_hint(&mut self, key: usize) -> Option<(usize, bool)> {
        let bytes = self.bytes;
        let text = |node: Node| &bytes[node.start as usize..node.end as usize];
        let key_text = text(self.nodes[key]);
        let open = self.open.last_mut()?;
        if let Some(twin) = open.twin.as_mut() {
            // The API server writes both objects' keys in the same order: the next member of
            // the earlier twin is the one, or one of the few after it (a member added). Never
            // more: keys out of order cost no more than that per key.
            let end = self.nodes[twin.node].after();
            let mut child = twin.next;
            for _ in 0..TWIN_LOOKAHEAD {
                if child >= end {
                    break;
                }
                let value = child + 1;
                if text(self.nodes[child]) == key_text {
                    twin.next = self.nodes[value].after();
                    return Some((value, true));
                }
                child = self.nodes[value].after();
            }
            return None;
        }
        let (first, second) = self.twins?;
        // `key_text` is the key with its quotes.
        let is = |key: &[u8]| key_text.len() == key.len() + 2 && &key_text[1..=key.len()] == key;
        if is(first) {
            // Its value is the next node; remembered for a later `second` in this object.
            open.first = Some(key + 1);
            None
        } else if is(second) {
            open.first.map(|value| (value, false))
        } else {
            None
        }
    }

    fn text_of(&self, at: usize) -> &'_ [u8] {
        let node = self.nodes[at];
        &self.bytes[node.start as usize..node.end as usize]
    }

    /// Where the value at `at` ends if it is the bytes of the earlier twin's value `hint` again
    /// (a string or a container: values that end where their bytes do).
    #[inline(always)]
    fn repeats(&self, hint: usize, at: usize) -> Option<usize> {
        let node = self.nodes[hint];
        let earlier = self.text_of(hint);
        let end = at + node.len();
        let repeated = matches!(earlier.first(), Some(b'"' | b'{' | b'['))
            && self.bytes.get(at..end) == Some(earlier);
        repeated.then_some(end)
    }

    /// The twin state of a container opened with `open` where the earlier twin's value `hint`
    /// was expected: followed when that is a container of the same kind, not too deep.
    fn follow(&self, hint: usize, open: u8) -> Option<Twin> {
        let depth = match self.open.last().and_then(|open| open.twin) {
            Some(parent) => parent.depth + 1,
            None => 0,
        };
        let node = self.nodes[hint];
        let same = self.bytes[node.start as usize] == open && node.after & OPAQUE == 0;
        (same && depth < MAX_TWIN_DEPTH).then_some(Twin {
            node: hint,
            next: hint + 1,
            depth,
        })
    }

    /// Record a value (or key) from `start` to `end` with no children.
    #[inline(always)]
    fn push(&mut self, start: usize, end: usize) {
        let after = self.nodes.len() as u32 + 1;
        self.nodes.push(Node {
            start: start as u32,
            end: end as u32,
            after,
        });
    }

    /// Close the innermost container, which ends at `end`.
    #[inline(always)]
    fn close(&mut self, end: usize) {
        if let Some(Open { node: at, .. }) = self.open.pop() {
            let after = self.nodes.len() as u32;
            let node = &mut self.nodes[at];
            node.end = end as u32;
            node.after = after;
        }
    }

    /// A key at `at` (recorded as a node), then its colon: where the value starts.
    #[inline(always)]
    fn key(&mut self, at: usize) -> Option<usize> {
        if self.bytes.get(at) != Some(&b'"') {
            return None;
        }
        let (end, escaped) = self.string(at)?;
        self.push(at, end);
        if escaped && let Some(node) = self.nodes.last_mut() {
            node.after |= ESCAPED;
        }
        let colon = self.space(end);
        if self.bytes.get(colon) != Some(&b':') {
            return None;
        }
        Some(self.space(colon + 1))
    }

    #[inline(always)]
    fn space(&self, mut at: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(at) {
            at += 1;
        }
        at
    }

    #[inline(always)]
    fn literal(&mut self, at: usize, word: &[u8]) -> Option<usize> {
        let end = at + word.len();
        if self.bytes.get(at..end)? != word {
            return None;
        }
        self.push(at, end);
        Some(end)
    }

    /// The number at `at` (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`): where
    /// it ends.
    #[inline(always)]
    fn number(&self, mut at: usize) -> Option<usize> {
        let digit = |at: usize| self.bytes.get(at).is_some_and(u8::is_ascii_digit);
        let digits = |mut at: usize| {
            while digit(at) {
                at += 1;
            }
            at
        };
        if self.bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        match self.bytes.get(at)? {
            b'0' => at += 1,
            b'1'..=b'9' => at = digits(at + 1),
            _ => return None,
        }
        if self.bytes.get(at) == Some(&b'.') {
            if !digit(at + 1) {
                return None;
            }
            at = digits(at + 1);
        }
        if let Some(b'e' | b'E') = self.bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(at) {
                at += 1;
            }
            if !digit(at) {
                return None;
            }
            at = digits(at);
        }
        Some(at)
    }

    /// The string whose opening quote is at `at`: one past its closing quote, and whether it
    /// holds an escape. No control character inside; every escape one of
    /// `\" \\ \/ \b \f \n \r \t \uXXXX`.
    #[inline(always)]
    fn string(&self, at: usize) -> Option<(usize, bool)> {
        let bytes = self.bytes;
        let mut at = at + 1;
        let mut escaped = false;
        loop {
            at += special(bytes.get(at..)?)?;
            match bytes[at] {
                b'"' => return Some((at + 1, escaped)),
                b'\\' => match *bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                        at += 2;
                        escaped = true;
                    }
                    b'u' => {
                        let hex = bytes.get(at + 2..at + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        at += 6;
                        escaped = true;
                    }
                    _ => return None,
                },
                _ => return None, // a control character
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IgnoredAny;
    use serde_json::Value;
    use serde_json::value::RawValue;

    /// Whether serde_json reads `text` as one JSON value within its recursion limit: the
    /// reference. (`IgnoredAny` checks the grammar but skips without a depth limit; the depth
    /// is counted apart.)
    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(text).is_ok() && depth(text) < MAX_DEPTH
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

    /// `depth` containers, alternating arrays and objects, around `1`.
    fn nested(depth: usize) -> String {
        let mut text = "1".to_owned();
        for level in 0..depth {
            text = if level % 2 == 0 {
                format!("[{text}]")
            } else {
                format!("{{\"k\":{text}}}")
            };
        }
        text
    }

    #[test]
    fn nesting_is_refused_exactly_where_serde_json_refuses_it() {
        for depth in [
            1,
            MAX_DEPTH - 2,
            MAX_DEPTH - 1,
            MAX_DEPTH,
            MAX_DEPTH + 1,
            4096,
        ] {
            let text = nested(depth);
            let serde = serde_json::from_str::<Value>(&text);
            assert_eq!(Index::of(&text).is_ok(), serde.is_ok(), "{depth}");
            if let Err(error) = serde {
                assert!(error.to_string().starts_with("recursion limit exceeded"));
                assert_eq!(Index::of(&text).err(), Some(Refusal::TooDeep), "{depth}");
                // And serde_json's words for it, without building a value.
                assert_eq!(
                    nesting_error(text.as_bytes()).to_string(),
                    error.to_string()
                );
            }
        }
        // Refused at the first container past the limit, whatever follows: an unterminated run
        // of brackets (the first bytes of a hostile body) is refused all the same.
        let open = "[".repeat(MAX_DEPTH);
        assert_eq!(Index::of(&open).err(), Some(Refusal::TooDeep));
        assert_eq!(Index::of(&open[1..]).err(), Some(Refusal::Invalid));
    }

    #[test]
    fn a_body_of_brackets_holds_no_more_than_the_limit() {
        // The hostile input of the bound: 6 MiB of `[`, refused after MAX_DEPTH of them, with
        // the index's nodes and open containers never past the limit.
        let text = "[".repeat(6 << 20);
        let mut scanner = Scanner {
            bytes: text.as_bytes(),
            nodes: Vec::new(),
            open: Vec::new(),
            twins: None,
            hint: None,
            too_deep: false,
        };
        assert!(scanner.scan().is_none());
        assert!(scanner.too_deep);
        assert!(scanner.nodes.len() < MAX_DEPTH && scanner.open.len() < MAX_DEPTH);
        assert!(scanner.open.capacity() <= MAX_DEPTH);
        assert_eq!(Index::of(&text).err(), Some(Refusal::TooDeep));
    }

    /// Every object and array in the index, checked against what serde_json finds in it
    /// (those validated by comparison have no members to check).
    fn agrees_with_serde(index: &Index<'_>) {
        for at in 0..index.nodes.len() {
            let value = index.slice(at);
            if index.is_opaque(value) {
                continue;
            }
            if let Some(members) = index.members(value) {
                let ours: Vec<(String, &str)> =
                    members.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                assert_eq!(ours, raw_members(value), "{value}");
            }
            if let Some(elements) = index.elements(value) {
                let theirs: Vec<&RawValue> = serde_json::from_str(value).unwrap();
                let theirs: Vec<&str> = theirs.iter().map(|v| v.get()).collect();
                assert_eq!(elements, theirs, "{value}");
            }
        }
    }

    /// An object's members as serde_json reads them, in document order (repeats kept).
    fn raw_members(text: &str) -> Vec<(String, &str)> {
        struct Members<'a>(Vec<(String, &'a str)>);
        impl<'de> serde::Deserialize<'de> for Members<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Members<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<M: serde::de::MapAccess<'de>>(
                        self,
                        mut map: M,
                    ) -> Result<Self::Value, M::Error> {
                        let mut members = Vec::new();
                        while let Some(key) = map.next_key::<String>()? {
                            members.push((key, map.next_value::<&RawValue>()?.get()));
                        }
                        Ok(Members(members))
                    }
                }
                d.deserialize_map(V)
            }
        }
        serde_json::from_str::<Members<'_>>(text).unwrap().0
    }

    #[test]
    fn valid_texts_are_indexed_as_serde_reads_them() {
        for text in [
            r#"{}"#,
            r#" { } "#,
            "[]",
            "0",
            "-0.5e+10",
            "\"s\"",
            "true",
            " null ",
            r#"{"a":1}"#,
            r#"{"a" : [1, {"b": "}"}] , "c":"x\"y\\", "d":true,"e":null,"f":-1.5e3}"#,
            "{\n\t\"k\\u00e9y\": {\"nested\": [[], {}, \"]\"]},\r\n \"z\": \"\\\\\"\n}",
            r#"{"dup":1,"dup":2}"#,
            r#"{"a.b":{"c":[1,2,{"d":"{[\"x"}]}}"#,
            r#"[ 1 , "a,b" , [ ] , { "x" : [ "]" ] } , null ] "#,
            "\"\u{e9}\u{1F600} \\ud800 \\/\\b\\f\\n\\r\\t\"",
            "[1e400, -0, 0.0, 1E-2]",
        ] {
            assert!(serde_accepts(text), "{text}");
            let index = Index::of(text).unwrap_or_else(|_| panic!("{text}"));
            assert_eq!(index.root(), text.trim(), "{text}");
            agrees_with_serde(&index);
        }
    }

    #[test]
    fn invalid_texts_are_refused_as_serde_refuses_them() {
        for text in [
            "",
            " ",
            "{",
            "}",
            "[",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{\"a\":}",
            "{1:2}",
            "[1 2]",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "--1",
            "0x1",
            "tru",
            "nul",
            "truex",
            "nan",
            "\"abc",
            "\"a\u{1}b\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "[1]]",
            "{}{}",
            "[1] x",
            "\"a\"\"b\"",
            "[\"\\\"]",
            "{\"a\" 1}",
            "[,1]",
            "\u{feff}1",
        ] {
            assert!(!serde_accepts(text), "{text:?}");
            assert_eq!(Index::of(text).err(), Some(Refusal::Invalid), "{text:?}");
        }
    }

    #[test]
    fn only_values_of_the_index_are_found() {
        let text = r#"{"a":{"b":[1,2]},"c":"{}"}"#;
        let index = Index::of(text).unwrap();
        let members = index.members(text).unwrap();
        assert_eq!(members[0].1, r#"{"b":[1,2]}"#);
        assert_eq!(index.member(members[0].1, "b"), Some("[1,2]"));
        // A string that looks like an object is no object; a copy is not in the index.
        assert!(index.members(members[1].1).is_none());
        let copy = text.to_owned();
        assert!(index.members(&copy).is_none());
        assert!(index.members(&text[1..4]).is_none());
    }

    #[test]
    fn a_later_twin_is_validated_by_comparison_where_it_repeats_the_earlier() {
        let text = r#"{"object":{"a":{"x":[1,{"y":"z"}]},"b":"s","c":[1,2]},"n":1,"oldObject":{"a":{"x":[1,{"y":"w"}]},"b":"s","c":[1,2],"d":{}}}"#;
        let index = Index::of_twins(text, "object", "oldObject").unwrap();
        let old = index.member(text, "oldObject").unwrap();
        let new = index.member(text, "object").unwrap();
        // The later twin itself is indexed, whatever it repeats.
        assert!(!index.is_opaque(old));
        let member = |of, key| index.member(of, key).unwrap();
        // Repeated: "b" and "c"; not repeated: "a" (down to the changed string), "d".
        assert!(index.is_opaque(member(old, "b")));
        assert!(index.is_opaque(member(old, "c")));
        assert!(index.elements(member(old, "c")).is_none());
        let x = member(member(old, "a"), "x");
        assert!(!index.is_opaque(x));
        let elements = index.elements(x).unwrap();
        assert_eq!(elements, ["1", r#"{"y":"w"}"#]);
        // A number is never skipped: its bytes alone do not say where it ends.
        assert!(!index.is_opaque(elements[0]));
        assert_eq!(index.member(elements[1], "y"), Some(r#""w""#));
        assert!(!index.is_opaque(member(old, "d")));
        // Nothing in the earlier twin is opaque.
        assert!(
            index
                .members(new)
                .unwrap()
                .iter()
                .all(|(_, v)| !index.is_opaque(v))
        );
        // An identical later twin is still an object with members.
        let same = r#"{"object":{"a":[1]},"oldObject":{"a":[1]}}"#;
        let index = Index::of_twins(same, "object", "oldObject").unwrap();
        let old = index.member(same, "oldObject").unwrap();
        assert_eq!(index.members(old).unwrap().len(), 1);
        assert!(index.is_opaque(index.member(old, "a").unwrap()));
    }

    #[test]
    fn twins_with_keys_in_another_order_are_indexed_all_the_same() {
        let keys: Vec<String> = (0..200).map(|i| format!("\"k{i}\":[{i}]")).collect();
        let mut reversed = keys.clone();
        reversed.reverse();
        let text = format!(
            "{{\"object\":{{{}}},\"oldObject\":{{{}}},\"oldObject\":{{{}}}}}",
            keys.join(","),
            reversed.join(","),
            keys.join(",")
        );
        let twins = Index::of_twins(&text, "object", "oldObject").unwrap();
        let plain = Index::of(&text).unwrap();
        for index in [&twins, &plain] {
            let members = index.members(&text).unwrap();
            assert_eq!(members.len(), 3);
            for (_, object) in members {
                assert_eq!(index.members(object).unwrap().len(), 200);
            }
        }
        // The second `oldObject` repeats `object` member by member: each is validated by the
        // comparison; the reversed one found the few members its lookahead reached.
        let last = twins.members(&text).unwrap()[2].1;
        let members = twins.members(last).unwrap();
        assert!(members.iter().all(|(_, v)| twins.is_opaque(v)));
    }

    #[test]
    fn a_repeat_is_no_repeat_when_the_value_goes_on() {
        // `[1]` repeats the start of `[1,2]`'s bytes only as a prefix: the value is scanned.
        for text in [
            r#"{"object":{"a":"s"},"oldObject":{"a":"s"x}}"#,
            r#"{"object":{"a":[1]},"oldObject":{"a":[1]]}}"#,
            r#"{"object":{"a":12},"oldObject":{"a":123}}"#,
        ] {
            let twins = Index::of_twins(text, "object", "oldObject");
            assert_eq!(twins.is_ok(), serde_accepts(text), "{text}");
            assert_eq!(twins.is_ok(), Index::of(text).is_ok(), "{text}");
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
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any JSON, compact or pretty, is indexed, and every level agrees with serde_json.
        #[test]
        fn any_json_is_indexed_as_serde_reads_it(value in any_json(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) }.unwrap();
            let index = Index::of(&text).unwrap();
            agrees_with_serde(&index);
        }

        /// A JSON text with one byte changed, cut or inserted is indexed exactly when serde_json
        /// accepts it, plain and with twins, and agrees with serde_json wherever it has members.
        /// Half the texts are review-shaped, their later twin repeating the earlier one.
        #[test]
        fn mutated_json_is_accepted_exactly_as_serde_accepts_it(
            value in any_json(),
            review in any::<bool>(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]\":,\\ 0123456789.eE+-tfnrlsua\x01\x1f\n".to_vec()),
            how in 0..3u8,
        ) {
            let value = if review { serde_json::json!({"object": value, "oldObject": value}) } else { value };
            let mut bytes = serde_json::to_vec(&value).unwrap();
            let at = at.index(bytes.len() + 1);
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 if at < bytes.len() => { bytes.remove(at); }
                _ => bytes.insert(at, byte),
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                for index in [Index::of(text), Index::of_twins(text, "object", "oldObject")] {
                    prop_assert_eq!(index.is_ok(), serde_accepts(text), "{:?}", text);
                    if let Ok(index) = index {
                        agrees_with_serde(&index);
                    }
                }
            }
        }
    }
}
