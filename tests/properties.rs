//! Property tests of the rule, on a real recorded PyTorchJob (`tests/fixtures/pytorchjob/
//! image.review.json`: managedFields, status, a last-applied annotation and two replica specs):
//!
//! - any change confined to the updatable or not-compared fields is allowed;
//! - any change to other leaves is denied, and exactly those leaves are named;
//! - the decision does not depend on the order of keys in the JSON text, nor on how a number is
//!   written (`1`, `1.0`, `1e0`).
//!
//! The expected paths come from the README's lists (`DEFAULT_UPDATABLE`, `DEFAULT_NOT_COMPARED`,
//! `DEFAULT_SCHEMA_DEFAULTS`), not from the diff. Case counts are modest so `cargo test` stays
//! fast; `PROPTEST_CASES=5000 cargo test --release --test properties` runs a longer search.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use proptest::prelude::*;
use pytorchjob_guard::admission::{self, Verdict};
use pytorchjob_guard::policy::{
    DEFAULT_NOT_COMPARED, DEFAULT_SCHEMA_DEFAULTS, DEFAULT_UPDATABLE, Evaluation, FieldPath,
    Policy, RawObject, Requester, Segment, diff, oracle,
};
use serde_json::{Map, Value};
use std::path::Path;

static REVIEW: LazyLock<Value> = LazyLock::new(|| {
    let text = include_str!("fixtures/pytorchjob/image.review.json");
    serde_json::from_str(text).unwrap()
});

/// The job before the update.
fn old_job() -> Value {
    REVIEW["request"]["oldObject"].clone()
}

fn paths(list: &[&str]) -> Vec<FieldPath> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

static UPDATABLE: LazyLock<Vec<FieldPath>> = LazyLock::new(|| paths(DEFAULT_UPDATABLE));
static NOT_COMPARED: LazyLock<Vec<FieldPath>> = LazyLock::new(|| paths(DEFAULT_NOT_COMPARED));
static DEFAULTED: LazyLock<Vec<FieldPath>> = LazyLock::new(|| {
    DEFAULT_SCHEMA_DEFAULTS
        .iter()
        .map(|(p, _)| p.parse().unwrap())
        .collect()
});

/// May this path change (it is under an updatable or a not-compared field)?
fn is_free(path: &FieldPath) -> bool {
    UPDATABLE
        .iter()
        .chain(NOT_COMPARED.iter())
        .any(|p| path.is_under(p))
}

/// Every scalar leaf of `value` with its path, in document order.
fn leaves(value: &Value, at: &FieldPath, out: &mut Vec<(FieldPath, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                leaves(v, &at.key(k), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, &at.index(i), out);
            }
        }
        Value::Null => {}
        scalar => out.push((at.clone(), scalar.clone())),
    }
}

/// The old job's leaves that are frozen (neither free nor a schema default).
static FROZEN_LEAVES: LazyLock<Vec<(FieldPath, Value)>> = LazyLock::new(|| {
    let mut all = Vec::new();
    leaves(&old_job(), &FieldPath::root(), &mut all);
    all.retain(|(path, _)| !is_free(path) && !DEFAULTED.contains(path));
    assert!(all.len() > 20, "the fixture has many frozen leaves");
    all
});

/// Set `value` at `path`, creating objects on the way (lists are only indexed where they exist).
fn set(root: &mut Value, path: &FieldPath, value: Value) {
    let mut here = root;
    for segment in path.segments() {
        here = match segment {
            Segment::Key(key) => {
                if !here.is_object() {
                    *here = Value::Object(Map::new());
                }
                here.as_object_mut()
                    .unwrap()
                    .entry(key.clone())
                    .or_insert(Value::Null)
            }
            Segment::Index(i) => &mut here.as_array_mut().expect("an existing list")[*i],
        };
    }
    *here = value;
}

/// A small JSON value: scalars, or a shallow object or list of them.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z./-]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A key that may need quoting in a path: dots, slashes, quotes, spaces.
fn any_key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9./\"_ -]{1,16}"
}

/// A change where the rule lets anything change: under one of the updatable or not-compared
/// fields (replacing, adding or removing whole subtrees there).
fn free_change() -> impl Strategy<Value = (FieldPath, Value)> {
    let free_roots: Vec<FieldPath> = UPDATABLE
        .iter()
        .chain(NOT_COMPARED.iter())
        // A deletionTimestamp in the *new* object is not compared; in the old one it would
        // allow everything, which is another rule (tested in the unit tests).
        .cloned()
        .collect();
    (
        prop::sample::select(free_roots),
        prop::collection::vec(any_key(), 0..3),
        any_json(),
    )
        .prop_map(|(root, suffix, value)| {
            let path = suffix.iter().fold(root, |p, k| p.key(k));
            (path, value)
        })
}

/// A free change that kube's typed `ObjectMeta` can always read: untyped spec and status
/// fields take any JSON, labels and annotations take strings.
fn readable_free_change() -> impl Strategy<Value = (FieldPath, Value)> {
    let untyped = free_change().prop_filter(
        "spec or status",
        |(path, _)| matches!(&path.segments()[0], Segment::Key(k) if k == "spec" || k == "status"),
    );
    let string_map = (
        prop::sample::select(&["metadata.labels", "metadata.annotations"][..]),
        any_key(),
        "[ -~]{0,12}",
    )
        .prop_map(|(root, key, value)| {
            (
                root.parse::<FieldPath>().unwrap().key(&key),
                Value::String(value),
            )
        });
    prop_oneof![untyped, string_map]
}

/// A value different from `old` by the rule's comparison (never the same number in another
/// form, never an empty container, which equals absent).
fn different_scalar(old: &Value) -> impl Strategy<Value = Value> + use<> {
    let old = old.clone();
    prop_oneof![
        "[a-z]{1,8}".prop_map(|s| Value::String(format!("changed-{s}"))),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
    .prop_filter("differs from the old value", move |new| match (&old, new) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() != b.as_f64(),
        (a, b) => a != b,
    })
}

/// One frozen leaf of the job changed to another value: (its path, the new value).
fn frozen_change() -> impl Strategy<Value = (FieldPath, Value)> {
    prop::sample::select(FROZEN_LEAVES.clone()).prop_flat_map(|(path, old)| {
        different_scalar(&old).prop_map(move |new| (path.clone(), new))
    })
}

/// A new leaf under a frozen container where the job has none: named exactly too.
fn frozen_addition() -> impl Strategy<Value = (FieldPath, Value)> {
    const CONTAINERS: &[&str] = &[
        "spec",
        "spec.pytorchReplicaSpecs.Worker",
        "spec.pytorchReplicaSpecs.Master.template.spec",
        "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0]",
        "spec.runPolicy",
        "metadata",
    ];
    (
        prop::sample::select(CONTAINERS),
        "new[A-Z][a-zA-Z]{0,8}",
        prop_oneof![
            "[a-z]{1,8}".prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            Just(Value::Bool(true)),
        ],
    )
        .prop_map(|(container, key, value)| {
            let path = container.parse::<FieldPath>().unwrap().key(&key);
            (path, value)
        })
}

fn apply(job: &Value, changes: &[(FieldPath, Value)]) -> Value {
    let mut new = job.clone();
    for (path, value) in changes {
        set(&mut new, path, value.clone());
    }
    new
}

/// The review of an update from `old` to `new`, as the fixture's API server sent it.
fn review_of(old: &Value, new: &Value) -> Value {
    let mut review = REVIEW.clone();
    review["request"]["oldObject"] = old.clone();
    review["request"]["object"] = new.clone();
    review
}

/// JSON text of `value` with object keys in a pseudo-random order from `seed`, and — where
/// `vary_numbers` holds for the path — integers written as `n.0` or `ne0`.
fn shuffled_text(value: &Value, seed: u64, vary_numbers: &dyn Fn(&[String]) -> bool) -> String {
    fn next(state: &mut u64) -> u64 {
        // xorshift64*: deterministic, no dependency.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn write(
        value: &Value,
        state: &mut u64,
        path: &mut Vec<String>,
        vary: &dyn Fn(&[String]) -> bool,
        out: &mut String,
    ) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                for i in (1..entries.len()).rev() {
                    let j = (next(state) % (i as u64 + 1)) as usize;
                    entries.swap(i, j);
                }
                out.push('{');
                for (n, (key, child)) in entries.into_iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    path.push(key.clone());
                    write(child, state, path, vary, out);
                    path.pop();
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (n, child) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    write(child, state, path, vary, out);
                }
                out.push(']');
            }
            Value::Number(number) if number.is_i64() && vary(path) => {
                let n = number.as_i64().unwrap();
                // Exact in f64 only up to 2^53.
                if n.unsigned_abs() < 1 << 53 {
                    match next(state) % 3 {
                        0 => out.push_str(&format!("{n}.0")),
                        1 => out.push_str(&format!("{n}e0")),
                        _ => out.push_str(&n.to_string()),
                    }
                } else {
                    out.push_str(&n.to_string());
                }
            }
            other => out.push_str(&serde_json::to_string(other).unwrap()),
        }
    }
    let mut state = seed | 1;
    let mut out = String::new();
    write(value, &mut state, &mut Vec::new(), vary_numbers, &mut out);
    out
}

/// Numbers in the objects' free-form parts (spec, status) may be written in any form; the
/// review's own typed integers (`metadata.generation`) stay integers, as the API server writes.
fn in_free_form(path: &[String]) -> bool {
    matches!(path, [r, o, top, ..]
        if r == "request" && (o == "object" || o == "oldObject") && (top == "spec" || top == "status"))
}

fn decide(review_text: &[u8]) -> (Vec<u8>, Verdict, Vec<FieldPath>) {
    let reviewed = admission::review(&Policy::default(), review_text).expect("a review");
    let decision = &reviewed.decision;
    let forbidden = decision.outcome.forbidden().to_vec();
    (reviewed.body, decision.verdict(), forbidden)
}

/// The default policy's evaluation of an update, the way production runs it (the objects as
/// JSON text, read one level deep, through the raw diff), checked against the oracle.
fn evaluate(old: &Value, new: &Value) -> Evaluation {
    let policy = Policy::default();
    let (old_text, new_text) = (old.to_string(), new.to_string());
    let old_raw = RawObject::parse(&old_text).unwrap();
    let new_raw = RawObject::parse(&new_text).unwrap();
    let requester = Requester::default();
    let evaluation = policy.evaluate(&old_raw, &new_raw, &requester).unwrap();
    assert_eq!(
        evaluation,
        oracle::evaluate(&policy, old, new, &requester),
        "production agrees with the oracle"
    );
    evaluation
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Failures are reported with their minimal case; no persistence files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn changes_confined_to_free_fields_are_allowed(
        changes in prop::collection::vec(free_change(), 1..6),
    ) {
        let old = old_job();
        let new = apply(&old, &changes);
        let evaluation = evaluate(&old, &new);
        prop_assert!(evaluation.forbidden.is_empty(), "{:?}", evaluation.forbidden);
        // The objects are diffed as raw JSON, never read into typed metadata, so any value of a
        // free field is allowed through the whole review path too.
        let text = serde_json::to_vec(&review_of(&old, &new)).unwrap();
        let (_, verdict, forbidden) = decide(&text);
        prop_assert_eq!(verdict, Verdict::Allowed);
        prop_assert!(forbidden.is_empty());
    }

    #[test]
    fn changes_to_frozen_leaves_are_denied_and_named_exactly(
        frozen in prop::collection::vec(frozen_change(), 1..5),
        added in prop::collection::vec(frozen_addition(), 0..2),
        free in prop::collection::vec(free_change(), 0..3),
    ) {
        let old = old_job();
        // Later changes to the same path win, as in `apply`.
        let mut expected = BTreeSet::new();
        let mut all: Vec<(FieldPath, Value)> = free.clone();
        for (path, value) in frozen.iter().chain(added.iter()) {
            all.push((path.clone(), value.clone()));
        }
        for (path, _) in frozen.iter().chain(added.iter()) {
            let last = all.iter().rev().find(|(p, _)| p == path).unwrap();
            let before = old.pointer(&pointer(path)).cloned().unwrap_or(Value::Null);
            if !same(&before, &last.1) {
                expected.insert(path.clone());
            }
        }
        prop_assume!(!expected.is_empty());
        let new = apply(&old, &all);
        let evaluation = evaluate(&old, &new);
        let forbidden: BTreeSet<FieldPath> = evaluation.forbidden.iter().cloned().collect();
        prop_assert_eq!(&forbidden, &expected);
        prop_assert_eq!(evaluation.forbidden.len(), forbidden.len(), "named once each");
        // Through the whole review path too, where kube can read the objects: the same fields,
        // as `details.causes`.
        let spec_only = all.iter().all(|(p, _)| p.segments()[0] == Segment::Key("spec".into()));
        if spec_only {
            let text = serde_json::to_vec(&review_of(&old, &new)).unwrap();
            let (body, verdict, named) = decide(&text);
            prop_assert_eq!(verdict, Verdict::Denied);
            prop_assert_eq!(named, evaluation.forbidden.clone());
            let response: Value = serde_json::from_slice(&body).unwrap();
            let causes: Vec<String> = response["response"]["status"]["details"]["causes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["field"].as_str().unwrap().to_owned())
                .collect();
            let expected_text: Vec<String> = expected.iter().map(ToString::to_string).collect();
            prop_assert_eq!(causes, expected_text);
        }
    }

    #[test]
    fn the_decision_does_not_depend_on_key_order_or_number_form(
        frozen in prop::collection::vec(frozen_change(), 0..3),
        free in prop::collection::vec(readable_free_change(), 0..3),
        seed_a in any::<u64>(),
        seed_b in any::<u64>(),
    ) {
        let old = old_job();
        let mut changes = free;
        // Only spec leaves, so kube can read every object whatever the values.
        changes.extend(frozen.into_iter().filter(|(p, _)| p.segments()[0] == Segment::Key("spec".into())));
        let new = apply(&old, &changes);
        let review = review_of(&old, &new);
        let canonical_text = serde_json::to_vec(&review).unwrap();
        let canonical = decide(&canonical_text);
        // What the server reads from the canonical text (serde_json's float parsing may differ
        // from the in-memory f64 in the last bit; every text below is compared to this).
        let read: Value = serde_json::from_slice(&canonical_text).unwrap();
        let expected = evaluate(&read["request"]["oldObject"], &read["request"]["object"]);
        let plain = |_: &[String]| false;
        for (seed, vary) in [
            (seed_a, &plain as &dyn Fn(&[String]) -> bool),
            (seed_b, &in_free_form),
        ] {
            let text = shuffled_text(&review, seed, vary);
            let reparsed: Value = serde_json::from_str(&text).unwrap();
            prop_assert!(same_tree(&reparsed, &read), "the text holds the same review");
            let decided = decide(text.as_bytes());
            prop_assert_eq!(&decided.1, &canonical.1);
            prop_assert_eq!(&decided.2, &canonical.2);
            prop_assert_eq!(
                String::from_utf8(decided.0).unwrap(),
                String::from_utf8(canonical.0.clone()).unwrap(),
                "the same response, byte for byte"
            );
            // And the policy alone, on the objects as parsed from the varied text.
            let (o, n) = (&reparsed["request"]["oldObject"], &reparsed["request"]["object"]);
            prop_assert_eq!(evaluate(o, n), expected.clone());
        }
    }
}

/// A JSON pointer for a path.
fn pointer(path: &FieldPath) -> String {
    path.segments()
        .iter()
        .map(|s| match s {
            Segment::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Segment::Index(i) => format!("/{i}"),
        })
        .collect()
}

/// Equal as the rule compares leaves: numbers by value; null the same as absent.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (a, b) => a == b,
    }
}

/// Equal trees, numbers compared by value (`1` and `1.0` are the same).
fn same_tree(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_tree(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_tree(v, w))
        }
        (a, b) => same(a, b),
    }
}

/// The production diff and the oracle's whole-tree diff, on two JSON texts of objects (a text
/// that is not an object is compared as the member `spec` of one).
fn raw_and_full(old_text: &str, new_text: &str) -> (Vec<FieldPath>, Vec<FieldPath>) {
    let policy = Policy::default();
    let object = |text: &str| -> String {
        if text.trim_start().starts_with('{') {
            text.to_owned()
        } else {
            format!("{{\"spec\":{text}}}")
        }
    };
    let (old_text, new_text) = (object(old_text), object(new_text));
    let old_raw = RawObject::parse(&old_text).unwrap();
    let new_raw = RawObject::parse(&new_text).unwrap();
    let raw = diff::changed_leaves(&old_raw, &new_raw, &policy).expect("valid JSON");
    let full = oracle::changed_leaves(
        &serde_json::from_str(&old_text).unwrap(),
        &serde_json::from_str(&new_text).unwrap(),
        &policy,
    );
    (raw, full)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Speed never changes a verdict: the raw walk (which skips byte-identical subtrees) names
    /// exactly the leaves the full-tree diff names, whatever the key order and number form of
    /// either text.
    #[test]
    fn the_raw_fast_path_agrees_with_the_full_tree_diff(
        frozen in prop::collection::vec(frozen_change(), 0..3),
        free in prop::collection::vec(free_change(), 0..3),
        added in prop::collection::vec(frozen_addition(), 0..2),
        seed_old in any::<u64>(),
        seed_new in any::<u64>(),
    ) {
        let old = old_job();
        let mut changes = frozen;
        changes.extend(free);
        changes.extend(added);
        let new = apply(&old, &changes);
        let any_path = |_: &[String]| true;
        // Byte-identical texts where unchanged (as the API server writes) ...
        let (raw, full) = raw_and_full(&serde_json::to_string(&old).unwrap(), &serde_json::to_string(&new).unwrap());
        prop_assert_eq!(raw, full);
        // ... and texts that differ in form everywhere.
        let (raw, full) = raw_and_full(&shuffled_text(&old, seed_old, &any_path), &shuffled_text(&new, seed_new, &any_path));
        prop_assert_eq!(raw, full);
    }

    #[test]
    fn the_raw_fast_path_agrees_on_arbitrary_json(old in any_json(), new in any_json(), seed in any::<u64>()) {
        let any_path = |_: &[String]| true;
        let (raw, full) = raw_and_full(&serde_json::to_string(&old).unwrap(), &shuffled_text(&new, seed, &any_path));
        prop_assert_eq!(raw, full);
    }
}

/// Every fixture review: the raw fast path and the full-tree diff name the same leaves.
#[test]
fn the_raw_fast_path_agrees_on_every_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorchjob");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".review.json") {
            continue;
        }
        let review: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let (old, new) = (
            &review["request"]["oldObject"],
            &review["request"]["object"],
        );
        if !old.is_object() || !new.is_object() {
            continue;
        }
        let (raw, full) = raw_and_full(&old.to_string(), &new.to_string());
        assert_eq!(raw, full, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} fixtures with two objects");
}
