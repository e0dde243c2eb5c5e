//! An exact structural diff of two JSON values, reported as the leaf fields that differ.
//!
//! The diff compares the *leaves* of the two trees — every non-null scalar, at its path — so:
//! - a container added or removed as a whole is examined inside: a new `spec.runPolicy` holding
//!   `cleanPodPolicy` reports `spec.runPolicy.cleanPodPolicy`, not `spec.runPolicy`;
//! - lists compare position by position, and every removed element is named at its own index
//!   (unlike RFC 6902 patches such as `json_patch::diff`, which shift removal indices);
//! - `null`, an absent key and an empty object or list carry no leaves, so they are the same
//!   (a merge patch's `null` deletes a field; `{}` and a missing map mean the same to Kubernetes);
//! - numbers compare by value (`1` and `1.0` are the same number), key order never matters;
//! - a scalar replaced by a container (or the reverse) reports the scalar's path and the
//!   container's leaves.
//!
//! [`DiffRules`] prune subtrees that are not compared at all (`status`, server-owned metadata),
//! so they cost nothing, and name schema defaults: where the API server fills in a default
//! (`spec.runPolicy.suspend: false` when a `runPolicy` appears), an absent field and its default
//! value are the same. Pure: no I/O, no allocation beyond the reported paths and one working path.

use serde_json::{Number, Value};

use super::path::FieldPath;

/// What the diff needs to know about the schema.
pub trait DiffRules {
    /// Whether the subtree at `path` is left out of the comparison.
    fn skip(&self, path: &FieldPath) -> bool;

    /// The value the API server defaults an absent field at `path` to, if any.
    fn default_at(&self, _path: &FieldPath) -> Option<&Value> {
        None
    }
}

/// A bare predicate: skip where it returns true, no defaults.
impl<F: Fn(&FieldPath) -> bool> DiffRules for F {
    fn skip(&self, path: &FieldPath) -> bool {
        self(path)
    }
}

/// The sorted, de-duplicated leaf paths at which `old` and `new` differ under `rules`.
pub fn changed_leaves(old: &Value, new: &Value, rules: &dyn DiffRules) -> Vec<FieldPath> {
    let mut walk = Walk {
        rules,
        path: FieldPath::root(),
        changed: Vec::new(),
    };
    walk.compare(old, new);
    walk.changed.sort();
    walk.changed.dedup();
    walk.changed
}

struct Walk<'a> {
    rules: &'a dyn DiffRules,
    path: FieldPath,
    changed: Vec<FieldPath>,
}

impl<'a> Walk<'a> {
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

    /// Record every leaf of `value` (one side of a change) under the current path.
    fn leaves(&mut self, value: &Value) {
        if !self.path.is_root() && self.rules.skip(&self.path) {
            return;
        }
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (key, child) in map {
                    self.path.push_key(key);
                    self.leaves(child);
                    self.path.pop();
                }
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
                    self.changed.push(self.path.clone());
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
        // A container without leaves is the same as null / absent.
        (Value::Null, other) | (other, Value::Null) => !has_leaves(other),
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

fn has_leaves(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Object(map) => map.values().any(has_leaves),
        Value::Array(items) => items.iter().any(has_leaves),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(old: Value, new: Value) -> Vec<String> {
        changed_leaves(&old, &new, &|_: &FieldPath| false)
            .iter()
            .map(ToString::to_string)
            .collect()
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
    fn null_absent_and_empty_containers_are_the_same() {
        assert!(diff(json!({"a": null, "b": {}, "c": []}), json!({})).is_empty());
        assert!(diff(json!({}), json!({"a": {"b": null, "c": [null, {}]}})).is_empty());
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
        let changes = changed_leaves(
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
    }

    #[test]
    fn an_absent_field_equals_its_schema_default() {
        let rules = SuspendDefaultsFalse;
        let diff = |old: Value, new: Value| -> Vec<String> {
            changed_leaves(&old, &new, &rules)
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

    #[test]
    fn leaves_are_sorted_and_unique() {
        let changes = diff(
            json!({"b": 1, "a": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}),
            json!({"b": 2, "a": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]}),
        );
        assert_eq!(changes, ["a[2]", "a[10]", "b"]);
    }
}
