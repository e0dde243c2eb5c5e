//! An exact structural diff of two JSON values, reported as the leaf fields that differ.
//!
//! The diff compares the *leaves* of the two trees — every non-null scalar, at its path — so:
//! - a container added or removed as a whole is examined inside: a new `spec.runPolicy` holding
//!   `cleanPodPolicy` reports `spec.runPolicy.cleanPodPolicy`, not `spec.runPolicy`;
//! - lists compare position by position, and every removed element is named at its own index
//!   (unlike RFC 6902 patches such as `json_patch::diff`, which shift removal indices);
//! - `null`, an absent key and an empty list carry no leaves, so they are the same (a merge
//!   patch's `null` deletes a field; Go reads a nil and an empty slice alike);
//! - a present object is a leaf of its own where it holds no leaf: `elasticPolicy: {}` differs
//!   from no `elasticPolicy` (the training-operator tests it against nil), except where
//!   [`DiffRules::empty_is_absent`] says the Go type is a value struct that typed clients write
//!   as `{}` (a container's `resources`, a pod template's `metadata`);
//! - numbers compare by value (`1` and `1.0` are the same number), key order never matters;
//! - a scalar replaced by a container (or the reverse) reports the scalar's path and the
//!   container's leaves.
//!
//! [`DiffRules`] prune subtrees that are not compared at all (`status`, server-owned metadata),
//! so they cost nothing, and name schema defaults: where the API server fills in a default
//! (`spec.runPolicy.suspend: false` when a `runPolicy` appears), an absent field and its default
//! value are the same. The levels of a review's objects are found through the body's
//! [`Index`](crate::json::Index); texts read without one are indexed level by level. Pure: no I/O, no allocation
//! beyond the member lists of changed levels, the reported paths and one working path.

use std::borrow::Cow;

use serde::de::Error as _;
use serde_json::{Number, Value};

use super::path::FieldPath;
use crate::json::raw::{RawObject, Structure, plain_scalar, shape, sorted};

/// What the diff needs to know about the schema.
pub trait DiffRules {
    /// Whether the subtree at `path` is left out of the comparison.
    fn skip(&self, path: &FieldPath) -> bool;

    /// The value the API server defaults an absent field at `path` to, if any.
    fn default_at(&self, _path: &FieldPath) -> Option<&Value> {
        None
    }

    /// Whether an empty object at `path` is the same as an absent field (a Go value struct, which
    /// typed clients write as `{}`). Elsewhere, and by default, a present object differs.
    fn empty_is_absent(&self, _path: &FieldPath) -> bool {
        false
    }
}

/// A bare predicate: skip where it returns true, no defaults.
impl<F: Fn(&FieldPath) -> bool> DiffRules for F {
    fn skip(&self, path: &FieldPath) -> bool {
        self(path)
    }
}

/// The sorted, de-duplicated leaf paths at which two objects differ under `rules`: the one
/// diff the decision runs.
///
/// Both objects are read one level deep ([`RawObject`]); `Other` has no members and compares
/// as an empty object, so callers check for it first. The API server encodes `object` and
/// `oldObject` with the same encoder, so unchanged subtrees are byte-identical: the walk
/// descends both texts level by level, skips every pair of subtrees whose bytes are equal
/// without building them, and parses into [`Value`]s only where bytes differ and structure
/// does not continue (scalars, type changes, a side that is absent). Texts that differ only in
/// form (key order, number spelling) descend to the scalars and compare equal there. Fails only
/// on JSON it has to read and cannot (numbers beyond f64, nesting beyond serde_json's limit).
pub fn changed_leaves<'t>(
    old: &RawObject<'t>,
    new: &RawObject<'t>,
    rules: &dyn DiffRules,
) -> Result<Vec<FieldPath>, DiffError> {
    let mut walk = Walk::new(rules);
    walk.structure = [Structure(old.index()), Structure(new.index())];
    walk.compare_members(old.members(), new.members())?;
    if walk.overflow {
        return Err(DiffError::TooManyChanges);
    }
    Ok(walk.finish())
}

/// The most changed fields one diff keeps. A response shows at most [`super::MAX_CAUSES`] of
/// them and no real update changes this many compared fields at once; each kept path costs a few
/// hundred bytes, and a body of a few MiB could otherwise name millions (`[0,0,…]` against
/// `[1,1,…]` took 1.3 GiB). Past it the diff stops keeping paths and fails closed
/// ([`DiffError::TooManyChanges`]): a review that cannot be judged path by path is denied.
pub const MAX_CHANGED_FIELDS: usize = 4096;

/// Why two objects could not be diffed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// JSON the diff has to read and cannot (a number beyond f64, nesting beyond serde_json's
    /// limit), in serde_json's words.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// More than [`MAX_CHANGED_FIELDS`] compared fields changed.
    #[error("more than {MAX_CHANGED_FIELDS} compared fields changed, too many to judge one by one")]
    TooManyChanges,
}

/// Whether two raw values (`None`: absent) differ as leaves, with no rules: the scale
/// subresource's `spec.replicas`, compared the way the diff compares a field.
pub fn raw_values_differ(old: Option<&str>, new: Option<&str>) -> Result<bool, serde_json::Error> {
    let never = |_: &FieldPath| false;
    let mut walk = Walk::new(&never);
    walk.compare_raw(old, new)?;
    Ok(!walk.changed.is_empty())
}

/// How deep the raw walk descends before it parses the rest: far below any real object's depth
/// (a PyTorchJob's deepest fields are about 20 levels down).
pub const MAX_RAW_DEPTH: usize = 32;

/// How many containers deep [`Walk::raw_leaves`] reads before it leaves a subtree to the
/// parsed walk: far below serde_json's nesting limit (128), so what that limit refuses is still
/// refused in its words.
const MAX_RAW_NESTING: usize = 64;

struct Walk<'a, 'i, 't> {
    rules: &'a dyn DiffRules,
    path: FieldPath,
    changed: Vec<FieldPath>,
    /// Whether a changed field was not kept: more than [`MAX_CHANGED_FIELDS`].
    overflow: bool,
    /// Where the old and the new side's texts lie.
    structure: [Structure<'i, 't>; 2],
}

impl<'a, 'i, 't> Walk<'a, 'i, 't> {
    fn new(rules: &'a dyn DiffRules) -> Self {
        Self {
            rules,
            path: FieldPath::root(),
            changed: Vec::new(),
            overflow: false,
            structure: [Structure(None); 2],
        }
    }

    /// The current path changed: kept, up to [`MAX_CHANGED_FIELDS`]. Both sides of a change at
    /// one path (two scalars, a scalar and an empty object) name it once.
    fn record(&mut self) {
        if self.changed.last() == Some(&self.path) {
            return;
        }
        if self.changed.len() < MAX_CHANGED_FIELDS {
            self.changed.push(self.path.clone());
        } else {
            self.overflow = true;
        }
    }

    /// The changed leaves, sorted and de-duplicated.
    fn finish(mut self) -> Vec<FieldPath> {
        self.changed.sort();
        self.changed.dedup();
        self.changed
    }

    /// Compare two objects' members, each sorted by key with unique keys.
    fn compare_members(
        &mut self,
        a: &[(Cow<'t, str>, &'t str)],
        b: &[(Cow<'t, str>, &'t str)],
    ) -> Result<(), serde_json::Error> {
        // Both sorted by key: walk them together.
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
            // Byte-equal texts have no changed leaf (what `compare_raw` finds first): most
            // members of a level, spared the path they would be pushed at.
            if old.is_none() || old != new {
                self.path.push_key(key);
                self.compare_raw(old, new)?;
                self.path.pop();
            }
            if order.is_le() {
                i += 1;
            }
            if order.is_ge() {
                j += 1;
            }
        }
        Ok(())
    }

    /// [`Walk::compare`] over raw texts (`None`: absent), parsing only where bytes differ.
    fn compare_raw(
        &mut self,
        old: Option<&'t str>,
        new: Option<&'t str>,
    ) -> Result<(), serde_json::Error> {
        if !self.path.is_root() && self.rules.skip(&self.path) {
            return Ok(());
        }
        if let (Some(a), Some(b)) = (old, new) {
            if a == b {
                return Ok(());
            }
            // Each level's members come from the index (or, for a text read without one, a
            // scan of that level); below MAX_RAW_DEPTH the parsed walk takes over (with
            // serde_json's own nesting limit), as it always has.
            let deep = self.path.segments().len() >= MAX_RAW_DEPTH;
            match (shape(a), shape(b)) {
                // Two strings without escapes are their bytes: unequal bytes, another string.
                (b'"', b'"') if !a.contains('\\') && !b.contains('\\') => {
                    self.record();
                    return Ok(());
                }
                _ if deep => {}
                (b'{', b'{') => {
                    let [old, new] = self.structure;
                    let cut = || serde_json::Error::custom("an object that cannot be split");
                    let a = old.members(a).ok_or_else(cut)?;
                    let b = new.members(b).ok_or_else(cut)?;
                    return self.compare_members(&sorted(a), &sorted(b));
                }
                (b'[', b'[') => {
                    let [old, new] = self.structure;
                    let cut = || serde_json::Error::custom("an array that cannot be split");
                    let a = old.elements(a).ok_or_else(cut)?;
                    let b = new.elements(b).ok_or_else(cut)?;
                    for index in 0..a.len().max(b.len()) {
                        self.path.push_index(index);
                        self.compare_raw(a.get(index).copied(), b.get(index).copied())?;
                        self.path.pop();
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        // A container added, removed or replaced by a value of another type, with no default
        // standing in: the leaves of each side (containers never equal anything but a container
        // of their kind), read through the index, so no tree is built for them. Whatever that
        // reading cannot settle exactly as the parsed walk would (a scalar serde_json refuses,
        // deep nesting) is undone and left to it.
        let container = |text: Option<&str>| text.is_some_and(|t| matches!(shape(t), b'{' | b'['));
        let same_kind = matches!((old, new), (Some(a), Some(b)) if shape(a) == shape(b));
        if (container(old) || container(new))
            && !same_kind
            && self.rules.default_at(&self.path).is_none()
        {
            let mark = self.changed.len();
            let mut side_leaves = |text: Option<&'t str>, side| match text {
                Some(text) => self.raw_leaves(text, side, 0),
                None => Some(()),
            };
            if side_leaves(old, 0).is_some() && side_leaves(new, 1).is_some() {
                return Ok(());
            }
            self.changed.truncate(mark);
        }
        // Scalars, a type change, or one side absent: parse what is there and compare values.
        let parse = |raw: Option<&str>| match raw {
            Some(raw) => match plain_scalar(raw) {
                Some(value) => Ok(value),
                None => serde_json::from_str::<Value>(raw),
            },
            None => Ok(Value::Null),
        };
        let (old, new) = (parse(old)?, parse(new)?);
        self.compare(&old, &new);
        Ok(())
    }

    fn compare<'v>(&mut self, mut old: &'v Value, mut new: &'v Value)
    where
        'a: 'v,
    {
        if !self.path.is_root() && self.rules.skip(&self.path) {
            return;
        }
        if old.is_null() || new.is_null() {
            let rules: &'a dyn DiffRules = self.rules;
            if let Some(default) = rules.default_at(&self.path) {
                if old.is_null() {
                    old = default;
                }
                if new.is_null() {
                    new = default;
                }
            }
        }
        match (old, new) {
            (Value::Object(a), Value::Object(b)) => {
                for (key, value) in a {
                    self.path.push_key(key);
                    self.compare(value, b.get(key).unwrap_or(&Value::Null));
                    self.path.pop();
                }
                for (key, value) in b {
                    if !a.contains_key(key) {
                        self.path.push_key(key);
                        self.compare(&Value::Null, value);
                        self.path.pop();
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for index in 0..a.len().max(b.len()) {
                    self.path.push_index(index);
                    self.compare(
                        a.get(index).unwrap_or(&Value::Null),
                        b.get(index).unwrap_or(&Value::Null),
                    );
                    self.path.pop();
                }
            }
            (a, b) if scalars_equal(a, b) => {}
            (a, b) => {
                self.leaves(a);
                self.leaves(b);
            }
        }
    }

    /// [`Walk::leaves`] of the raw text `text` of side `side` (0 old, 1 new), `nesting`
    /// containers below where it began: the same leaves, or `None` (with the working path as it
    /// was) where the parsed walk must decide: a container the index cannot split, a scalar
    /// serde_json refuses (a number beyond f64, a lone surrogate: an error there, in its
    /// words), or nesting deeper than [`MAX_RAW_NESTING`].
    fn raw_leaves(&mut self, text: &'t str, side: usize, nesting: usize) -> Option<()> {
        if !self.path.is_root() && self.rules.skip(&self.path) {
            return Some(());
        }
        match shape(text) {
            b'{' | b'[' if nesting >= MAX_RAW_NESTING => None,
            b'{' => {
                let members = sorted(self.structure[side].members(text)?);
                let mark = self.changed.len();
                for (key, child) in &members {
                    self.path.push_key(key);
                    let read = self.raw_leaves(child, side, nesting + 1);
                    self.path.pop();
                    read?;
                }
                self.presence(mark);
                Some(())
            }
            b'[' => {
                let elements = self.structure[side].elements(text)?;
                for (index, child) in elements.into_iter().enumerate() {
                    self.path.push_index(index);
                    let read = self.raw_leaves(child, side, nesting + 1);
                    self.path.pop();
                    read?;
                }
                Some(())
            }
            b'n' => Some(()),
            _ => {
                let scalar = plain_scalar(text).or_else(|| serde_json::from_str(text).ok())?;
                self.leaves(&scalar);
                Some(())
            }
        }
    }

    /// An object at the current path whose members added no leaf since `mark` is a leaf itself
    /// (present, unlike an absent field), unless the rules say an empty object there is absent.
    fn presence(&mut self, mark: usize) {
        if self.changed.len() == mark
            && !self.overflow
            && !self.path.is_root()
            && !self.rules.empty_is_absent(&self.path)
        {
            self.record();
        }
    }

    /// Record every leaf of `value` (one side of a change) under the current path.
    fn leaves(&mut self, value: &Value) {
        if !self.path.is_root() && self.rules.skip(&self.path) {
            return;
        }
        match value {
            Value::Null => {}
            Value::Object(map) => {
                let mark = self.changed.len();
                for (key, child) in map {
                    self.path.push_key(key);
                    self.leaves(child);
                    self.path.pop();
                }
                self.presence(mark);
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    self.path.push_index(index);
                    self.leaves(child);
                    self.path.pop();
                }
            }
            scalar => {
                // The other side is absent: a default value there is no change.
                let is_default = self
                    .rules
                    .default_at(&self.path)
                    .is_some_and(|default| scalars_equal(default, scalar));
                if !is_default {
                    self.record();
                }
            }
        }
    }
}

/// Equality of two values of which at most one is a container: containers never equal scalars.
fn scalars_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        // A container against null (absent) is compared by its leaves (`Walk::leaves`).
        _ => false,
    }
}

/// `1`, `1.0` and `1e0` are the same number; integers compare exactly, others as f64.
fn numbers_equal(x: &Number, y: &Number) -> bool {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return a == b;
    }
    match (x.as_f64(), y.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The parsed walk alone, on two whole trees: what the raw walk falls back to where bytes
    /// differ, and what it must agree with where they do not. (The independent oracle, written
    /// from the rule, is `policy::oracle`.)
    fn changed_leaves_of_values(old: &Value, new: &Value, rules: &dyn DiffRules) -> Vec<FieldPath> {
        let mut walk = Walk::new(rules);
        walk.compare(old, new);
        walk.finish()
    }

    fn diff(old: Value, new: Value) -> Vec<String> {
        changed_leaves_of_values(&old, &new, &|_: &FieldPath| false)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn plain_scalars_read_as_serde_json_reads_them() {
        for text in [
            "true",
            "false",
            "null",
            "0",
            "7",
            "123456789012345678",
            "\"\"",
            "\"abc\"",
            "\"caf\u{e9} \u{1f600}\"",
        ] {
            let expected: Value = serde_json::from_str(text).unwrap();
            assert_eq!(plain_scalar(text), Some(expected), "{text}");
        }
        // Left to serde_json: signs, fractions, exponents, long numbers, escapes, containers.
        for text in [
            "-1",
            "-0",
            "1.5",
            "1e3",
            "1234567890123456789",
            "\"a\\nb\"",
            "[]",
            "{}",
        ] {
            assert_eq!(plain_scalar(text), None, "{text}");
        }
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn plain_scalars_agree_with_serde_json(value in prop_oneof![
            proptest::num::u64::ANY.prop_map(Value::from),
            proptest::num::i64::ANY.prop_map(Value::from),
            proptest::num::f64::NORMAL.prop_map(Value::from),
            ".*".prop_map(Value::from),
            proptest::bool::ANY.prop_map(Value::from),
        ]) {
            let text = value.to_string();
            if let Some(read) = plain_scalar(&text) {
                prop_assert_eq!(read, serde_json::from_str::<Value>(&text).unwrap());
            }
        }
    }

    #[test]
    fn equal_values_have_no_changes() {
        let job = json!({"a": {"b": [1, {"c": "x"}]}, "d": true});
        assert!(diff(job.clone(), job).is_empty());
    }

    #[test]
    fn key_order_and_number_form_do_not_matter() {
        let old: Value = serde_json::from_str(r#"{"a": 1, "b": {"x": 2.0, "y": 3}}"#).unwrap();
        let new: Value = serde_json::from_str(r#"{"b": {"y": 3e0, "x": 2}, "a": 1.0}"#).unwrap();
        assert!(diff(old, new).is_empty());
    }

    #[test]
    fn null_absent_and_empty_lists_are_the_same() {
        assert!(diff(json!({"a": null, "c": []}), json!({})).is_empty());
        assert!(diff(json!({}), json!({"a": [null, []]})).is_empty());
        assert!(diff(json!({"a": {}}), json!({"a": {"b": null}})).is_empty());
    }

    #[test]
    fn a_present_object_differs_from_an_absent_one() {
        assert_eq!(diff(json!({"b": {}}), json!({})), ["b"]);
        assert_eq!(
            diff(json!({}), json!({"a": {"b": null, "c": [{}]}})),
            ["a.c[0]"]
        );
        assert_eq!(diff(json!({"a": null}), json!({"a": {}})), ["a"]);
        assert_eq!(diff(json!({"a": []}), json!({"a": {}})), ["a"]);
        assert_eq!(diff(json!({"a": 1}), json!({"a": {}})), ["a"]);
        // Both present: compared inside, with no presence of their own.
        assert_eq!(diff(json!({"a": {}}), json!({"a": {"x": 1}})), ["a.x"]);
    }

    /// Empty objects under `a` are absent, as a Go value struct there.
    struct ValueStructAtA;
    impl DiffRules for ValueStructAtA {
        fn skip(&self, _: &FieldPath) -> bool {
            false
        }
        fn empty_is_absent(&self, path: &FieldPath) -> bool {
            path.to_string() == "x.a"
        }
    }

    #[test]
    fn where_the_rules_say_so_an_empty_object_is_absent() {
        let rules = ValueStructAtA;
        for (old, new, changed) in [
            (r#"{}"#, r#"{"a":{}}"#, &[][..]),
            (r#"{"a":{"c":null}}"#, r#"{}"#, &[]),
            (r#"{"a":[]}"#, r#"{"a":{}}"#, &[]),
            (r#"{}"#, r#"{"a":{"b":{}}}"#, &["x.a.b"]),
            (r#"{"b":{}}"#, r#"{}"#, &["x.b"]),
        ] {
            let (full, raw) = both_under(old, new, &rules);
            let shown: Vec<String> = raw.iter().map(ToString::to_string).collect();
            assert_eq!(shown, changed, "{old} -> {new}");
            assert_eq!(raw, full, "{old} -> {new}");
        }
    }

    #[test]
    fn an_added_container_reports_its_leaves() {
        let changes = diff(
            json!({"spec": {}}),
            json!({"spec": {"runPolicy": {"cleanPodPolicy": "All", "backoffLimit": 3}}}),
        );
        assert_eq!(
            changes,
            [
                "spec.runPolicy.backoffLimit",
                "spec.runPolicy.cleanPodPolicy"
            ]
        );
    }

    #[test]
    fn removed_list_elements_are_named_at_their_own_index() {
        let changes = diff(json!({"l": [1, 2, 3, 4]}), json!({"l": [1, 2]}));
        assert_eq!(changes, ["l[2]", "l[3]"]);
        let nested = diff(
            json!({"l": [{"n": "a"}, {"n": "b", "i": "x"}]}),
            json!({"l": [{"n": "a"}]}),
        );
        assert_eq!(nested, ["l[1].i", "l[1].n"]);
    }

    #[test]
    fn scalar_replaced_by_container_reports_both_sides() {
        assert_eq!(
            diff(json!({"a": "x"}), json!({"a": {"b": 1}})),
            ["a", "a.b"]
        );
        assert_eq!(diff(json!({"a": [1]}), json!({"a": 1})), ["a", "a[0]"]);
    }

    #[test]
    fn type_changes_between_scalars_are_changes() {
        assert_eq!(diff(json!({"a": 1}), json!({"a": "1"})), ["a"]);
        assert_eq!(diff(json!({"a": false}), json!({"a": null})), ["a"]);
    }

    #[test]
    fn skipped_subtrees_are_not_compared() {
        let skip_status = |p: &FieldPath| p.to_string() == "status";
        let changes = changed_leaves_of_values(
            &json!({"status": {"x": 1}, "spec": 1}),
            &json!({"status": {"x": 2, "y": [1]}, "spec": 2}),
            &skip_status,
        );
        assert_eq!(changes, ["spec".parse::<FieldPath>().unwrap()]);
    }

    struct SuspendDefaultsFalse;
    impl DiffRules for SuspendDefaultsFalse {
        fn skip(&self, _: &FieldPath) -> bool {
            false
        }
        fn default_at(&self, path: &FieldPath) -> Option<&Value> {
            static FALSE: Value = Value::Bool(false);
            (path.to_string() == "runPolicy.suspend").then_some(&FALSE)
        }
        // A value struct, as the training-operator's RunPolicy is.
        fn empty_is_absent(&self, path: &FieldPath) -> bool {
            path.to_string() == "runPolicy"
        }
    }

    #[test]
    fn an_absent_field_equals_its_schema_default() {
        let rules = SuspendDefaultsFalse;
        let diff = |old: Value, new: Value| -> Vec<String> {
            changed_leaves_of_values(&old, &new, &rules)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        // runPolicy appears with the defaulted suspend: no change to suspend.
        assert_eq!(
            diff(
                json!({}),
                json!({"runPolicy": {"ttl": 1, "suspend": false}})
            ),
            ["runPolicy.ttl"]
        );
        assert!(
            diff(
                json!({"runPolicy": {}}),
                json!({"runPolicy": {"suspend": false}})
            )
            .is_empty()
        );
        assert!(diff(json!({"runPolicy": {"suspend": false}}), json!({})).is_empty());
        // A non-default value is a change, from absent or from the default.
        assert_eq!(
            diff(json!({}), json!({"runPolicy": {"suspend": true}})),
            ["runPolicy.suspend"]
        );
        assert_eq!(
            diff(
                json!({"runPolicy": {"suspend": false}}),
                json!({"runPolicy": {"suspend": true}})
            ),
            ["runPolicy.suspend"]
        );
        assert_eq!(
            diff(
                json!({"runPolicy": {"suspend": true}}),
                json!({"runPolicy": {}})
            ),
            ["runPolicy.suspend"]
        );
    }

    /// Both diffs on the same texts, each wrapped as the member `x` of an object (the raw
    /// diff starts from objects read one level deep, as a review carries them).
    fn both(old: &str, new: &str) -> (Vec<FieldPath>, Vec<FieldPath>) {
        both_under(old, new, &|p: &FieldPath| p.to_string() == "x.status")
    }

    fn both_under(old: &str, new: &str, rules: &dyn DiffRules) -> (Vec<FieldPath>, Vec<FieldPath>) {
        let (old, new) = (format!("{{\"x\":{old}}}"), format!("{{\"x\":{new}}}"));
        let full = changed_leaves_of_values(
            &serde_json::from_str(&old).unwrap(),
            &serde_json::from_str(&new).unwrap(),
            rules,
        );
        let raw = changed_leaves(
            &serde_json::from_str::<RawObject<'_>>(&old).unwrap(),
            &serde_json::from_str::<RawObject<'_>>(&new).unwrap(),
            rules,
        )
        .unwrap();
        (full, raw)
    }

    #[test]
    fn the_raw_diff_agrees_with_the_full_diff() {
        let cases = [
            (
                r#"{"a":1,"b":{"c":[1,2,3]}}"#,
                r#"{"a":1,"b":{"c":[1,2,3]}}"#,
            ),
            (r#"{"a":1,"b":{"c":[1,2,3]}}"#, r#"{"b":{"c":[1,2]},"a":1}"#),
            (
                r#"{"a":1.0,"b":{"x":"y","z":null}}"#,
                r#"{"b": {"x": "y"}, "a": 1}"#,
            ),
            (r#"{"a":{"b":1}}"#, r#"{"a":"s"}"#),
            (
                r#"{"a":[{"n":"x","v":"1"},{"n":"y"}]}"#,
                r#"{"a":[{"v":"2","n":"x"}]}"#,
            ),
            (
                r#"{"status":{"a":1},"k":{}}"#,
                r#"{"status":{"a":2},"k":[]}"#,
            ),
            (r#"{"d":1,"d":2}"#, r#"{"d":2}"#),
            (r#"{"d":2}"#, r#"{"d":1,"d":3}"#),
            (r#"{"a.b":1}"#, r#"{"a.b":2}"#),
            (r#"[1,{"a":2}]"#, r#"{"a":2}"#),
            (r#"{}"#, r#"{"new":{"deep":[true,{"x":null}]}}"#),
            // Strings holding quotes, backslashes and brackets; pretty-printed text.
            (
                r#"{"s":"a\"b","t":"c\\","u":"{[","v":[1,"]",{"w":"}"}]}"#,
                "{ \"s\" : \"a\\\"b\" ,\n \"t\":\"c\\\\\",\t\"u\":\"{[x\", \"v\" : [ 1 , \"]\" , { \"w\" : \"}\" } ] }",
            ),
            (
                r#"{"n":[1e3,-0.5,2E-2],"e":{},"a":[]}"#,
                r#"{"n":[1000,-0.5,0.02],"e":{ },"a":[ ]}"#,
            ),
        ];
        for (old, new) in cases {
            let (full, raw) = both(old, new);
            assert_eq!(raw, full, "{old} -> {new}");
        }
    }

    #[test]
    fn containers_added_or_removed_whole_agree_with_the_full_diff() {
        let added = [
            r#"{"l":{"app":"x","team":"y"}}"#,
            r#"{"l":{"d":1,"d":{"e":[2,"z"]}}}"#,
            r#"{"l":[1,-2,3.5,1e2,12345678901234567890,"s",true,false,null,{}]}"#,
            r#"{"l":{"k\"ey":"v","e":"\u00e9\n","n":{"status":1}}}"#,
            r#"{"l":[[[[{"a":[{"b":{"c":"deep"}}]}]]]]}"#,
            r#"{"status":{"a":1},"l":{"status":{"b":2}}}"#,
        ];
        for text in added {
            for (old, new) in [("{}", text), (text, "{}")] {
                let (full, raw) = both(old, new);
                assert_eq!(raw, full, "{old} -> {new}");
            }
        }
        // Defaults hold inside an added container as in the parsed walk.
        let rules = SuspendDefaultsFalse;
        for (old, new) in [
            ("{}", r#"{"runPolicy":{"ttl":1,"suspend":false}}"#),
            ("{}", r#"{"runPolicy":{"suspend":true}}"#),
            (r#"{"runPolicy":{"suspend":false,"x":[1]}}"#, "{}"),
        ] {
            let full = changed_leaves_of_values(
                &serde_json::from_str(old).unwrap(),
                &serde_json::from_str(new).unwrap(),
                &rules,
            );
            let raw = changed_leaves(
                &serde_json::from_str::<RawObject<'_>>(old).unwrap(),
                &serde_json::from_str::<RawObject<'_>>(new).unwrap(),
                &rules,
            )
            .unwrap();
            assert_eq!(raw, full, "{old} -> {new}");
        }
    }

    #[test]
    fn an_added_container_serde_json_refuses_is_refused_in_its_words() {
        let never = |_: &FieldPath| false;
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for added in [r#"{"n":1e400}"#, r#"["\ud800"]"#, deep.as_str()] {
            let parsed = serde_json::from_str::<Value>(added)
                .unwrap_err()
                .to_string();
            let new = format!(r#"{{"a":{added}}}"#);
            let error = changed_leaves(
                &serde_json::from_str::<RawObject<'_>>("{}").unwrap(),
                &serde_json::from_str::<RawObject<'_>>(&new).unwrap(),
                &never,
            )
            .unwrap_err();
            assert_eq!(error.to_string(), parsed, "{added}");
        }
    }

    #[test]
    fn the_raw_diff_reports_a_scalar_becoming_a_list_at_every_leaf() {
        let (full, raw) = both(r#"{"a":1}"#, r#"{"a":[1,2]}"#);
        let shown: Vec<String> = raw.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["x.a", "x.a[0]", "x.a[1]"]);
        assert_eq!(raw, full);
    }

    #[test]
    fn at_most_max_changed_fields_are_kept_and_more_is_refused() {
        let never = |_: &FieldPath| false;
        let lists = |n: usize| {
            let list = |v: &str| format!("{{\"l\":[{}]}}", vec![v; n].join(","));
            (list("0"), list("1"))
        };
        let (old, new) = lists(MAX_CHANGED_FIELDS);
        let read = |text| RawObject::parse(text).unwrap();
        let changed = changed_leaves(&read(&old), &read(&new), &never).unwrap();
        assert_eq!(changed.len(), MAX_CHANGED_FIELDS);
        let (old, new) = lists(MAX_CHANGED_FIELDS + 1);
        let error = changed_leaves(&read(&old), &read(&new), &never).unwrap_err();
        assert!(matches!(error, DiffError::TooManyChanges), "{error}");
        // Added whole, the same bound.
        let error = changed_leaves(&read("{}"), &read(&new), &never).unwrap_err();
        assert!(matches!(error, DiffError::TooManyChanges), "{error}");
    }

    #[test]
    fn leaves_are_sorted_and_unique() {
        let changes = diff(
            json!({"b": 1, "a": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}),
            json!({"b": 2, "a": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]}),
        );
        assert_eq!(changes, ["a[2]", "a[10]", "b"]);
    }
}
