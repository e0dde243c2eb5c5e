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
//! A `skip` predicate prunes subtrees that are not compared at all (`status`, server-owned
//! metadata), so they cost nothing. Pure: no I/O, no allocation beyond the reported paths and
//! one working path.

use serde_json::{Number, Value};

use super::path::FieldPath;

/// The sorted, de-duplicated leaf paths at which `old` and `new` differ, ignoring every subtree
/// whose path `skip` returns true for.
pub fn changed_leaves(
    old: &Value,
    new: &Value,
    skip: &dyn Fn(&FieldPath) -> bool,
) -> Vec<FieldPath> {
    let mut walk = Walk {
        skip,
        path: FieldPath::root(),
        changed: Vec::new(),
    };
    walk.compare(old, new);
    walk.changed.sort();
    walk.changed.dedup();
    walk.changed
}

struct Walk<'a> {
    skip: &'a dyn Fn(&FieldPath) -> bool,
    path: FieldPath,
    changed: Vec<FieldPath>,
}

impl Walk<'_> {
    fn compare(&mut self, old: &Value, new: &Value) {
        if !self.path.is_root() && (self.skip)(&self.path) {
            return;
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
        if !self.path.is_root() && (self.skip)(&self.path) {
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
            _ => self.changed.push(self.path.clone()),
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
        changed_leaves(&old, &new, &|_| false)
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

    #[test]
    fn leaves_are_sorted_and_unique() {
        let changes = diff(
            json!({"b": 1, "a": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}),
            json!({"b": 2, "a": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]}),
        );
        assert_eq!(changes, ["a[2]", "a[10]", "b"]);
    }
}
