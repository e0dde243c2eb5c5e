//! The oracle: the rule applied to two whole parsed trees, written from the rule alone.
//!
//! Production judges an UPDATE through [`super::diff::changed_leaves`]: a walk over the
//! review's raw text that skips byte-equal subtrees and parses only where bytes differ. This
//! module states the same rule the plain way and shares no code with it: each object is read
//! whole into a [`Value`] (by serde_json), reduced to the facts the rule compares, and the two
//! sets of facts are compared path by path. Of the policy it reads only the rule's data
//! ([`Policy::not_compared`], [`Policy::defaults`], [`Policy::empty_is_absent`]; patterns are
//! matched here, segment by segment) and, to turn changed paths into a verdict,
//! [`Policy::judge`]. Tests and the fuzz targets hold production to it, on whole review bodies
//! through `admission::oracle` (`tests/properties.rs`, `fuzz/fuzz_targets/oracle.rs`) and on
//! pairs of objects (`fuzz/fuzz_targets/diff.rs`). Compiled for the crate's own tests and with
//! the `oracle` feature (which the integration tests and the fuzz crate enable); it is not part
//! of the production API, and it is slow on purpose: every leaf of both trees, every time.
//!
//! # The rule
//!
//! What one object says, at each path below its root (the root is the object itself):
//! - nothing inside a not-compared field (`status`, server-owned metadata);
//! - nothing for `null`: null and an absent field are the same (a merge patch's `null` deletes);
//! - a string, boolean or number is a leaf at its path, except a scalar equal to the schema
//!   default of its path, which is the same as absent (the API server fills it in);
//! - a list is its elements at their indices, so an empty list is nothing (Go reads a nil and an
//!   empty slice alike);
//! - an object is its members, and is there: where it says nothing else (no member is a leaf)
//!   it is an *empty object*, a leaf of its own, unless its path is one of the policy's
//!   emptyIsAbsent paths (a Go value struct, which typed clients write as `{}`).
//!
//! A path changed when a leaf is at it on one side only, or on both with different values.
//! Numbers compare by value: `2`, `2.0` and `20e-1` are one number; two integers (as serde_json
//! reads them, up to 64 bits) compare exactly, anything else as the f64 serde_json reads. An
//! empty object is a change only where the other side has no object at its path: two objects at
//! one path are compared by what they hold. So a scalar replaced by an object or a list reports
//! the scalar's path and the container's leaves, and a container added or removed whole reports
//! the leaves inside it, not its own path.
//!
//! Schema defaults are scalars in every built-in policy and preset; [`changed_leaves`] refuses
//! (panics on) a policy with a container default, which the rule above does not cover.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Number, Value};

use super::{Evaluation, FieldPath, FieldPattern, PatternSegment, Policy, Requester};

/// The sorted, de-duplicated paths at which two whole trees differ under `policy`'s rule.
///
/// # Panics
///
/// When a schema default of `policy` is an object or a list (see the module docs).
pub fn changed_leaves(old: &Value, new: &Value, policy: &Policy) -> Vec<FieldPath> {
    assert!(
        policy
            .defaults()
            .iter()
            .all(|(_, value)| !value.is_object() && !value.is_array()),
        "the oracle compares scalar schema defaults only"
    );
    let rules = Rules {
        not_compared: policy.not_compared(),
        defaults: policy.defaults(),
        empty_is_absent: policy.empty_is_absent(),
    };
    changed(old, new, &rules)
}

/// Whether two values differ by the rule with no policy at all (nothing skipped, no defaults,
/// every empty object present): how the `scale` subresource's `spec.replicas` is compared.
pub fn values_differ(old: &Value, new: &Value) -> bool {
    let rules = Rules {
        not_compared: &[],
        defaults: &[],
        empty_is_absent: &[],
    };
    !changed(old, new, &rules).is_empty()
}

/// [`Policy::evaluate`] on two whole trees: [`changed_leaves`], then [`Policy::judge`]. The old
/// object is being deleted when its `metadata.deletionTimestamp` is there and not null.
pub fn evaluate(
    policy: &Policy,
    old: &Value,
    new: &Value,
    requester: &Requester<'_>,
) -> Evaluation {
    let being_deleted = old
        .get("metadata")
        .and_then(|metadata| metadata.get("deletionTimestamp"))
        .is_some_and(|at| !at.is_null());
    policy.judge(changed_leaves(old, new, policy), requester, being_deleted)
}

/// The rule's data, as the policy states it.
struct Rules<'p> {
    not_compared: &'p [FieldPattern],
    defaults: &'p [(FieldPattern, Value)],
    empty_is_absent: &'p [FieldPattern],
}

impl Rules<'_> {
    fn not_compared(&self, path: &FieldPath) -> bool {
        self.not_compared.iter().any(|p| names(p, path, false))
    }

    fn is_default(&self, path: &FieldPath, scalar: &Value) -> bool {
        // The first default whose path is this one, as a policy lists them.
        self.defaults
            .iter()
            .find(|(at, _)| names(at, path, true))
            .is_some_and(|(_, default)| same_scalar(default, scalar))
    }

    fn empty_is_absent(&self, path: &FieldPath) -> bool {
        self.empty_is_absent.iter().any(|p| names(p, path, true))
    }
}

/// Whether `pattern` names `path` (`exact`), or a field `path` lies in (`exact` false): `*`
/// stands for any one key or index.
fn names(pattern: &FieldPattern, path: &FieldPath, exact: bool) -> bool {
    let (pattern, path) = (pattern.segments(), path.segments());
    let long_enough = if exact {
        path.len() == pattern.len()
    } else {
        path.len() >= pattern.len()
    };
    long_enough
        && pattern.iter().zip(path).all(|(p, s)| match p {
            PatternSegment::Any => true,
            PatternSegment::Exact(segment) => segment == s,
        })
}

/// What one tree says, by path.
#[derive(Default)]
struct Facts<'v> {
    /// Scalars, at their paths.
    leaves: BTreeMap<FieldPath, &'v Value>,
    /// Objects that hold no leaf and stand as leaves of their own.
    empty_objects: BTreeSet<FieldPath>,
    /// Where the tree has an object at all (below the root).
    objects: BTreeSet<FieldPath>,
}

/// Record what `value` at `path` says into `facts`; whether it said anything (a leaf or an
/// empty object) at or below `path`.
fn read<'v>(value: &'v Value, path: &FieldPath, rules: &Rules<'_>, facts: &mut Facts<'v>) -> bool {
    if !path.is_root() && rules.not_compared(path) {
        return false;
    }
    match value {
        Value::Null => false,
        Value::Array(items) => {
            let mut said = false;
            for (index, item) in items.iter().enumerate() {
                said |= read(item, &path.index(index), rules, facts);
            }
            said
        }
        Value::Object(members) => {
            let mut said = false;
            for (key, member) in members {
                said |= read(member, &path.key(key), rules, facts);
            }
            if path.is_root() {
                return said;
            }
            facts.objects.insert(path.clone());
            if !said && !rules.empty_is_absent(path) {
                facts.empty_objects.insert(path.clone());
                said = true;
            }
            said
        }
        scalar if rules.is_default(path, scalar) => false,
        scalar => {
            facts.leaves.insert(path.clone(), scalar);
            true
        }
    }
}

/// The paths at which two trees differ under `rules`, sorted.
fn changed(old: &Value, new: &Value, rules: &Rules<'_>) -> Vec<FieldPath> {
    let (mut a, mut b) = (Facts::default(), Facts::default());
    read(old, &FieldPath::root(), rules, &mut a);
    read(new, &FieldPath::root(), rules, &mut b);
    let mut changed = BTreeSet::new();
    for (path, leaf) in &a.leaves {
        if !b
            .leaves
            .get(path)
            .is_some_and(|other| same_scalar(leaf, other))
        {
            changed.insert(path.clone());
        }
    }
    for path in b.leaves.keys() {
        if !a.leaves.contains_key(path) {
            changed.insert(path.clone());
        }
    }
    for (one, other) in [(&a, &b), (&b, &a)] {
        for path in &one.empty_objects {
            if !other.objects.contains(path) {
                changed.insert(path.clone());
            }
        }
    }
    changed.into_iter().collect()
}

/// Two scalars (or a scalar and anything) are the same value: numbers by value, anything else
/// by equality; a container is never the same as a scalar.
fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => false,
        (a, b) => a == b,
    }
}

/// Two integers exactly (i64 and u64 alike), anything else as f64.
fn same_number(x: &Number, y: &Number) -> bool {
    let integer = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (integer(x), integer(y)) {
        (Some(a), Some(b)) => a == b,
        _ => x.as_f64() == y.as_f64(),
    }
}

#[cfg(test)]
mod tests {
    //! The oracle's own answers, stated case by case: what it says must be the rule before it
    //! can judge production.

    use super::*;
    use serde_json::json;

    fn shown(old: Value, new: Value) -> Vec<String> {
        changed_leaves(&old, &new, &Policy::default())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn equal_trees_and_other_spellings_have_no_change() {
        let job = json!({"spec": {"a": [1, {"b": "x"}], "c": true}});
        assert!(shown(job.clone(), job).is_empty());
        for (old, new) in [
            (r#"{"spec":{"n":2}}"#, r#"{"spec":{"n":2.0}}"#),
            (r#"{"spec":{"n":2}}"#, r#"{"spec":{"n":20e-1}}"#),
            (r#"{"spec":{"n":2}}"#, r#"{"spec":{"n":0.2e1}}"#),
            (r#"{"spec":{"n":-0}}"#, r#"{"spec":{"n":0}}"#),
            (r#"{"spec":{"a":1,"b":2}}"#, r#"{"spec":{"b":2,"a":1}}"#),
            (r#"{"\u0073pec":{"s":"\u003c"}}"#, r#"{"spec":{"s":"<"}}"#),
        ] {
            assert!(shown(parsed(old), parsed(new)).is_empty(), "{old} {new}");
        }
    }

    #[test]
    fn integers_compare_exactly_and_others_as_f64() {
        let big = |n: &str| parsed(&format!(r#"{{"spec":{{"n":{n}}}}}"#));
        // Two integers of 64 bits: exact, though they are one f64.
        assert_eq!(
            shown(big("9007199254740993"), big("9007199254740992")),
            ["spec.n"]
        );
        assert_eq!(
            shown(big("18446744073709551615"), big("18446744073709551614")),
            ["spec.n"]
        );
        assert_eq!(shown(big("-1"), big("18446744073709551615")), ["spec.n"]);
        // An integer against a float, or beyond 64 bits: as f64.
        assert!(shown(big("9007199254740993"), big("9007199254740992.0")).is_empty());
        assert!(shown(big("18446744073709551616"), big("18446744073709551617")).is_empty());
        assert_eq!(shown(big("1"), big("1.5")), ["spec.n"]);
    }

    #[test]
    fn null_absent_and_empty_lists_are_the_same() {
        assert!(shown(json!({"spec": {"a": null, "b": []}}), json!({"spec": {}})).is_empty());
        assert!(shown(json!({"spec": {"l": [null, []]}}), json!({"spec": {}})).is_empty());
        assert!(
            shown(
                json!({"spec": {"l": [1]}}),
                json!({"spec": {"l": [1, null]}})
            )
            .is_empty()
        );
    }

    #[test]
    fn an_object_is_there_unless_its_path_says_empty_is_absent() {
        assert_eq!(
            shown(json!({"spec": {}}), json!({"spec": {"elasticPolicy": {}}})),
            ["spec.elasticPolicy"]
        );
        assert_eq!(
            shown(
                json!({"spec": {"e": []}}),
                json!({"spec": {"e": {"x": null}}})
            ),
            ["spec.e"]
        );
        // Two objects at one path: compared by what they hold.
        assert_eq!(
            shown(json!({"spec": {"e": {}}}), json!({"spec": {"e": {"x": 1}}})),
            ["spec.e.x"]
        );
        assert!(
            shown(
                json!({"spec": {"e": {}}}),
                json!({"spec": {"e": {"x": null}}})
            )
            .is_empty()
        );
        // emptyIsAbsent paths of the default policy: runPolicy, a template's metadata.
        assert!(shown(json!({"spec": {}}), json!({"spec": {"runPolicy": {}}})).is_empty());
        let template = |metadata: Value| json!({"spec": {"pytorchReplicaSpecs": {"Worker": {"template": {"metadata": metadata}}}}});
        assert!(
            shown(
                template(json!({"creationTimestamp": null})),
                template(json!(null))
            )
            .is_empty()
        );
        // Only at the path itself: an empty object inside one is there.
        assert_eq!(
            shown(
                json!({"spec": {}}),
                json!({"spec": {"runPolicy": {"schedulingPolicy": {}}}})
            ),
            ["spec.runPolicy.schedulingPolicy"]
        );
    }

    #[test]
    fn a_container_added_or_removed_whole_reports_its_leaves() {
        assert_eq!(
            shown(
                json!({"spec": {}}),
                json!({"spec": {"runPolicy": {"cleanPodPolicy": "All", "backoffLimit": 3}}})
            ),
            [
                "spec.runPolicy.backoffLimit",
                "spec.runPolicy.cleanPodPolicy"
            ]
        );
        assert_eq!(
            shown(
                json!({"spec": {"l": [1, 2, 3]}}),
                json!({"spec": {"l": [1]}})
            ),
            ["spec.l[1]", "spec.l[2]"]
        );
        assert_eq!(
            shown(json!({}), json!({"spec": {"a": {"b": null, "c": [{}]}}})),
            ["spec.a.c[0]"]
        );
    }

    #[test]
    fn type_changes_report_both_sides() {
        assert_eq!(
            shown(
                json!({"spec": {"a": "x"}}),
                json!({"spec": {"a": {"b": 1}}})
            ),
            ["spec.a", "spec.a.b"]
        );
        assert_eq!(
            shown(json!({"spec": {"a": [1]}}), json!({"spec": {"a": 1}})),
            ["spec.a", "spec.a[0]"]
        );
        assert_eq!(
            shown(json!({"spec": {"a": [1]}}), json!({"spec": {"a": {}}})),
            ["spec.a", "spec.a[0]"]
        );
        assert_eq!(
            shown(json!({"spec": {"a": 1}}), json!({"spec": {"a": "1"}})),
            ["spec.a"]
        );
        assert_eq!(
            shown(json!({"spec": {"a": 1}}), json!({"spec": {"a": {}}})),
            ["spec.a"]
        );
        assert_eq!(
            shown(json!({"spec": {"a": false}}), json!({"spec": {"a": null}})),
            ["spec.a"]
        );
    }

    #[test]
    fn not_compared_fields_are_pruned() {
        assert!(
            shown(
                json!({"status": {"x": 1}, "metadata": {"resourceVersion": "1"}}),
                json!({"status": {"y": [2]}, "metadata": {"resourceVersion": "2"}})
            )
            .is_empty()
        );
        // Only at the top: a `status` inside the spec is compared.
        assert_eq!(
            shown(json!({"spec": {}}), json!({"spec": {"x": {"status": 1}}})),
            ["spec.x.status"]
        );
        // An object whose only members are not compared holds no leaf: it is an empty object,
        // unless empty is absent there (as it is for `metadata`).
        assert!(shown(json!({}), json!({"metadata": {"generation": 2}})).is_empty());
        let policy = Policy::new(
            Vec::new(),
            Vec::new(),
            vec!["spec.x.hidden".parse().unwrap()],
            Vec::new(),
            Vec::new(),
        );
        let changed = changed_leaves(
            &json!({"spec": {}}),
            &json!({"spec": {"x": {"hidden": 1}}}),
            &policy,
        );
        assert_eq!(changed, ["spec.x".parse::<FieldPath>().unwrap()]);
    }

    #[test]
    fn an_absent_field_is_its_schema_default() {
        let run_policy = |run_policy: Value| json!({"spec": {"runPolicy": run_policy}});
        assert!(shown(json!({"spec": {}}), run_policy(json!({"suspend": false}))).is_empty());
        assert!(shown(run_policy(json!({"suspend": false})), run_policy(json!({}))).is_empty());
        assert!(shown(run_policy(json!({"suspend": false})), run_policy(json!([]))).is_empty());
        assert_eq!(
            shown(
                json!({"spec": {}}),
                run_policy(json!({"suspend": true, "ttl": 1}))
            ),
            ["spec.runPolicy.suspend", "spec.runPolicy.ttl"]
        );
        assert_eq!(
            shown(run_policy(json!({"suspend": true})), run_policy(json!({}))),
            ["spec.runPolicy.suspend"]
        );
        // Only a scalar equal to it: not the string, not an object there.
        assert_eq!(
            shown(
                run_policy(json!({})),
                run_policy(json!({"suspend": "false"}))
            ),
            ["spec.runPolicy.suspend"]
        );
        assert_eq!(
            shown(
                run_policy(json!({"suspend": false})),
                run_policy(json!({"suspend": {}}))
            ),
            ["spec.runPolicy.suspend"]
        );
    }

    #[test]
    fn scale_replicas_compare_with_no_policy() {
        assert!(!values_differ(&json!(2), &json!(2.0)));
        assert!(!values_differ(&Value::Null, &json!([])));
        // At the root an empty object is the value itself, not a leaf below it.
        assert!(!values_differ(&Value::Null, &json!({})));
        assert!(values_differ(&json!(2), &json!(3)));
        assert!(values_differ(&Value::Null, &json!(0)));
        assert!(values_differ(&json!({}), &json!({"status": 1})));
    }

    #[test]
    fn a_job_being_deleted_allows_everything() {
        let old =
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"a": 1}});
        let new =
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"a": 2}});
        let evaluation = evaluate(&Policy::default(), &old, &new, &Requester::default());
        assert!(evaluation.being_deleted && evaluation.allowed());
        assert_eq!(evaluation.changed, ["spec.a".parse::<FieldPath>().unwrap()]);
        let old = json!({"metadata": {"deletionTimestamp": null}, "spec": {"a": 1}});
        let evaluation = evaluate(&Policy::default(), &old, &new, &Requester::default());
        assert!(!evaluation.being_deleted && !evaluation.allowed());
    }

    #[test]
    #[should_panic(expected = "scalar schema defaults only")]
    fn a_container_default_is_refused() {
        let policy = Policy::new(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            vec![("spec.x".parse().unwrap(), json!({}))],
            Vec::new(),
        );
        changed_leaves(&json!({}), &json!({}), &policy);
    }
}
