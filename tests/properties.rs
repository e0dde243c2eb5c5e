//! Property tests of the rule, on whole review bodies sent through production
//! ([`admission::review`]: the body-wide index, the decode, the raw diff) and held to the
//! oracle ([`admission::oracle::check`]: the body read by serde_json alone, the objects compared
//! by `policy::oracle`, a walk written from the rule that shares no code with the diff):
//!
//! - any change confined to the updatable or not-compared fields is allowed;
//! - any change to other leaves is denied, and exactly those leaves are named;
//! - the decision does not depend on how the body is spelled: key order, keys and strings
//!   escaped (`"\u0073pec"`, `"\u003c"`, any character as `\uXXXX`), numbers written as `2`,
//!   `2.0`, `20e-1` or `0.2e1`;
//! - production agrees with the oracle on every recorded review under every policy, and on
//!   recorded reviews whose objects are mutated anywhere (values replaced by any JSON, members
//!   added and removed), spelled every way.
//!
//! The expected paths of the first two come from the README's lists (`DEFAULT_UPDATABLE`,
//! `DEFAULT_NOT_COMPARED`, `DEFAULT_SCHEMA_DEFAULTS`), not from either diff. Case counts are
//! modest so `cargo test` stays fast; `PROPTEST_CASES=5000 cargo test --release --test
//! properties` runs a longer search.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::LazyLock;

use proptest::prelude::*;
use pytorchjob_guard::admission::oracle::{Checked, check};
use pytorchjob_guard::admission::{self, Verdict};
use pytorchjob_guard::policy::{
    DEFAULT_NOT_COMPARED, DEFAULT_SCHEMA_DEFAULTS, DEFAULT_UPDATABLE, FieldPath, Policy, Segment,
    file,
};
use serde_json::{Map, Value};

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

/// Every value below the root of `value` (containers and scalars) by path, in document order.
fn nodes(value: &Value, at: &FieldPath, out: &mut Vec<FieldPath>) {
    let children: Vec<(FieldPath, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (at.key(k), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (at.index(i), v))
            .collect(),
        _ => Vec::new(),
    };
    for (path, child) in children {
        out.push(path.clone());
        nodes(child, &path, out);
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

/// Remove the member or element at `path` (an existing one).
fn remove(root: &mut Value, path: &FieldPath) {
    let (last, parent) = path.segments().split_last().expect("not the root");
    let mut here = root;
    for segment in parent {
        here = match segment {
            Segment::Key(key) => &mut here[key.as_str()],
            Segment::Index(i) => &mut here[*i],
        };
    }
    match (here, last) {
        (Value::Object(map), Segment::Key(key)) => {
            map.remove(key);
        }
        (Value::Array(items), Segment::Index(i)) => {
            items.remove(*i);
        }
        _ => panic!("no {path} to remove"),
    }
}

/// A small JSON value: scalars, or a shallow object or list of them.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        "[ -~<>&é\u{1F600}\u{7f}\u{0}-\u{1f}]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z./-]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The values the rule treats specially where they stand: empty containers, a template's
/// `metadata` as typed clients write it, the defaulted `suspend`.
fn special_json() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        Value::Null,
        Value::Object(Map::new()),
        Value::Array(Vec::new()),
        Value::Bool(false),
        serde_json::json!({"creationTimestamp": null}),
        serde_json::json!({"suspend": false}),
        serde_json::json!([{}]),
    ])
}

/// A key that may need quoting in a path: dots, slashes, quotes, spaces, `<`, non-ASCII.
fn any_key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9./\"_ <é\u{1F600}-]{1,16}"
}

/// A change where the rule lets anything change: under one of the updatable or not-compared
/// fields (replacing, adding or removing whole subtrees there).
fn free_change() -> impl Strategy<Value = (FieldPath, Value)> {
    // A deletionTimestamp in the *new* object is not compared; in the old one it would allow
    // everything, which is another rule (tested in the unit tests).
    let free_roots: Vec<FieldPath> = UPDATABLE
        .iter()
        .chain(NOT_COMPARED.iter())
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

/// How [`spelled`] writes a value.
#[derive(Clone, Copy)]
struct Spelling<'a> {
    /// Drives every choice: key order, which characters are escaped, how numbers are written.
    seed: u64,
    /// Where (by the keys above it) integers may be written in another form.
    numbers: &'a dyn Fn(&[String]) -> bool,
    /// Whether keys and strings may have any character escaped.
    escapes: bool,
}

/// No number respelled.
fn nowhere(_: &[String]) -> bool {
    false
}

/// Numbers inside the objects may be written in any form; the envelope's stay as the API
/// server writes them.
fn in_objects(path: &[String]) -> bool {
    matches!(path, [r, o, ..] if r == "request" && (o == "object" || o == "oldObject"))
}

/// xorshift64*: deterministic, no dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A JSON string: `"` and `\` escaped as `\"` and `\\` or as `\u0022` and `\u005C`, control
/// characters as `\u00XX`; with `escapes`, any character (one in four) as `\uXXXX` in either
/// case (a surrogate pair beyond the BMP), and `/` sometimes as `\/`.
fn write_string(text: &str, state: &mut u64, escapes: bool, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        let roll = if escapes { next(state) % 8 } else { 7 };
        match c {
            '"' | '\\' if roll >= 2 => {
                out.push('\\');
                out.push(c);
            }
            '/' if roll == 1 => out.push_str("\\/"),
            c if (c as u32) < 0x20 || roll < 2 => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    if next(state).is_multiple_of(2) {
                        let _ = write!(out, "\\u{unit:04x}");
                    } else {
                        let _ = write!(out, "\\u{unit:04X}");
                    }
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An integer in one of the forms JSON allows for it: `2`, `2.0`, `2e0`, `2E+0`, `20e-1`,
/// `0.2e1`. Only below 2^31, where every form reads back as the same number (the decimal
/// forms are exact in f64).
fn write_integer(n: i64, state: &mut u64, out: &mut String) {
    if n.unsigned_abs() >= 1 << 31 {
        let _ = write!(out, "{n}");
        return;
    }
    let (sign, digits) = (if n < 0 { "-" } else { "" }, n.unsigned_abs().to_string());
    let _ = match next(state) % 6 {
        0 => write!(out, "{n}.0"),
        1 => write!(out, "{n}e0"),
        2 => write!(out, "{n}E+0"),
        // `00e-1` is no JSON: a leading zero stands alone.
        3 if n == 0 => write!(out, "0e-1"),
        3 => write!(out, "{n}0e-1"),
        4 => write!(out, "{sign}0.{digits}e{}", digits.len()),
        _ => write!(out, "{n}"),
    };
}

/// JSON text of `value` spelled as `spelling` says: object keys in a pseudo-random order,
/// keys and strings escaped, integers respelled where it allows.
fn spelled(value: &Value, spelling: Spelling<'_>) -> String {
    fn write(
        value: &Value,
        state: &mut u64,
        path: &mut Vec<String>,
        spelling: Spelling<'_>,
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
                    write_string(key, state, spelling.escapes, out);
                    out.push(':');
                    path.push(key.clone());
                    write(child, state, path, spelling, out);
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
                    write(child, state, path, spelling, out);
                }
                out.push(']');
            }
            Value::String(text) => write_string(text, state, spelling.escapes, out),
            Value::Number(number) if (spelling.numbers)(path) && number.is_i64() => {
                write_integer(number.as_i64().unwrap(), state, out);
            }
            other => out.push_str(&serde_json::to_string(other).unwrap()),
        }
    }
    let mut state = spelling.seed | 1;
    let mut out = String::new();
    write(value, &mut state, &mut Vec::new(), spelling, &mut out);
    out
}

/// Production's answer to a body: the response's bytes, the verdict, the forbidden paths.
fn decide(review_text: &[u8]) -> (Vec<u8>, Verdict, Vec<FieldPath>) {
    let reviewed = admission::review(&Policy::default(), review_text).expect("a review");
    let decision = &reviewed.decision;
    let forbidden = decision.outcome.forbidden().to_vec();
    (reviewed.body, decision.verdict(), forbidden)
}

/// Hold production to the oracle on `body` under `policy`: what they agree on, or a failure
/// naming both answers and the body.
fn agreed(policy: &Policy, body: &[u8]) -> Result<Checked, TestCaseError> {
    check(policy, body).map_err(|disagreement| {
        TestCaseError::fail(format!(
            "{disagreement}\nbody: {}",
            String::from_utf8_lossy(body)
        ))
    })
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

/// A spelling strategy: a seed, and whether keys and strings are escaped and numbers respelled.
fn any_spelling() -> impl Strategy<Value = (u64, bool, bool)> {
    (any::<u64>(), any::<bool>(), any::<bool>())
}

fn spelling(seed: u64, escapes: bool, numbers: bool) -> Spelling<'static> {
    Spelling {
        seed,
        numbers: if numbers {
            &in_objects as &dyn Fn(&[String]) -> bool
        } else {
            &nowhere
        },
        escapes,
    }
}

/// `PROPTEST_CASES` when set (for a longer search), else `modest`: an explicit `cases` would
/// otherwise ignore the variable.
fn cases(modest: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(modest)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(64),
        // Failures are reported with their minimal case; no persistence files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn changes_confined_to_free_fields_are_allowed(
        changes in prop::collection::vec(free_change(), 1..6),
        (seed, escapes, numbers) in any_spelling(),
    ) {
        let old = old_job();
        let new = apply(&old, &changes);
        let body = spelled(&review_of(&old, &new), spelling(seed, escapes, numbers));
        prop_assert_eq!(agreed(&Policy::default(), body.as_bytes())?, Checked::Judged(Verdict::Allowed));
        let (_, verdict, forbidden) = decide(body.as_bytes());
        prop_assert_eq!(verdict, Verdict::Allowed);
        prop_assert!(forbidden.is_empty());
    }

    #[test]
    fn changes_to_frozen_leaves_are_denied_and_named_exactly(
        frozen in prop::collection::vec(frozen_change(), 1..5),
        added in prop::collection::vec(frozen_addition(), 0..2),
        free in prop::collection::vec(free_change(), 0..3),
        (seed, escapes, numbers) in any_spelling(),
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
        let body = spelled(&review_of(&old, &new), spelling(seed, escapes, numbers));
        prop_assert_eq!(agreed(&Policy::default(), body.as_bytes())?, Checked::Judged(Verdict::Denied));
        let (response, verdict, named) = decide(body.as_bytes());
        prop_assert_eq!(verdict, Verdict::Denied);
        let named_set: BTreeSet<FieldPath> = named.iter().cloned().collect();
        prop_assert_eq!(&named_set, &expected);
        prop_assert_eq!(named.len(), named_set.len(), "named once each");
        // The same fields as `details.causes`.
        let response: Value = serde_json::from_slice(&response).unwrap();
        let causes: Vec<String> = response["response"]["status"]["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_owned())
            .collect();
        let expected_text: Vec<String> = expected.iter().map(ToString::to_string).collect();
        prop_assert_eq!(causes, expected_text);
    }

    #[test]
    fn the_decision_does_not_depend_on_spelling(
        frozen in prop::collection::vec(frozen_change(), 0..3),
        free in prop::collection::vec(free_change(), 0..3),
        seeds in prop::array::uniform3(any::<u64>()),
    ) {
        let old = old_job();
        let mut changes = free;
        changes.extend(frozen);
        let new = apply(&old, &changes);
        let review = review_of(&old, &new);
        let canonical_text = serde_json::to_vec(&review).unwrap();
        let canonical = decide(&canonical_text);
        agreed(&Policy::default(), &canonical_text)?;
        // What the server reads from the canonical text (serde_json's float parsing may differ
        // from the in-memory f64 in the last bit; every text below is compared to this).
        let read: Value = serde_json::from_slice(&canonical_text).unwrap();
        for spelling in [
            Spelling { seed: seeds[0], numbers: &nowhere, escapes: false },
            Spelling { seed: seeds[1], numbers: &nowhere, escapes: true },
            Spelling { seed: seeds[2], numbers: &in_objects, escapes: true },
        ] {
            let text = spelled(&review, spelling);
            let reparsed: Value = serde_json::from_str(&text).unwrap();
            prop_assert!(same_tree(&reparsed, &read), "the text holds the same review");
            agreed(&Policy::default(), text.as_bytes())?;
            let decided = decide(text.as_bytes());
            prop_assert_eq!(&decided.1, &canonical.1);
            prop_assert_eq!(&decided.2, &canonical.2);
            prop_assert_eq!(
                String::from_utf8(decided.0).unwrap(),
                String::from_utf8(canonical.0.clone()).unwrap(),
                "the same response, byte for byte"
            );
        }
    }
}

/// The policies under test: the built-in one and every preset.
static POLICIES: LazyLock<Vec<(&'static str, Policy)>> = LazyLock::new(|| {
    let preset = |text: &str| file::parse(text).unwrap();
    vec![
        ("default", Policy::default()),
        (
            "training-operator",
            preset(include_str!("../policies/training-operator.yaml")),
        ),
        ("kueue", preset(include_str!("../policies/kueue.yaml"))),
        ("hpa", preset(include_str!("../policies/hpa.yaml"))),
    ]
});

/// Every recorded review and request body, by its path under `tests/fixtures`: the bytes as
/// recorded, and what serde_json reads from them.
static FIXTURES: LazyLock<Vec<(String, Vec<u8>, Value)>> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs = vec![root.join("pytorchjob"), root.join("reviews")];
    for entry in std::fs::read_dir(root.join("kinds")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with("source") {
            dirs.push(path);
        }
    }
    let mut fixtures = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".review.json") || name.ends_with(".request.json") {
                let bytes = std::fs::read(&path).unwrap();
                let value = serde_json::from_slice(&bytes).unwrap();
                fixtures.push((name, bytes, value));
            }
        }
    }
    fixtures.sort_by(|a, b| a.0.cmp(&b.0));
    fixtures
});

/// The recorded UPDATEs a policy judges, each with that policy: the bodies the mutation
/// properties start from.
static JUDGED: LazyLock<Vec<(String, Value, usize)>> = LazyLock::new(|| {
    let mut judged = Vec::new();
    for (name, _, review) in FIXTURES.iter() {
        for (at, (_, policy)) in POLICIES.iter().enumerate() {
            let body = serde_json::to_vec(review).unwrap();
            if let Ok(Checked::Judged(_)) = check(policy, &body) {
                judged.push((name.clone(), review.clone(), at));
            }
        }
    }
    judged
});

/// Every recorded review under every policy, as recorded and spelled other ways: production
/// and the oracle agree, and most are judged (so the agreement is about verdicts and paths).
#[test]
fn production_agrees_with_the_oracle_on_every_fixture() {
    let mut judged = 0;
    for (name, recorded, review) in FIXTURES.iter() {
        for (policy_name, policy) in POLICIES.iter() {
            let mut bodies = vec![recorded.clone(), serde_json::to_vec(review).unwrap()];
            for seed in 1..4 {
                bodies.push(spelled(review, spelling(seed, true, true)).into_bytes());
            }
            let answers: Vec<Checked> = bodies
                .iter()
                .map(|body| {
                    check(policy, body).unwrap_or_else(|disagreement| {
                        panic!("{name} under {policy_name}: {disagreement}")
                    })
                })
                .collect();
            assert!(
                answers.iter().all(|a| *a == answers[0]),
                "{name} under {policy_name}: every spelling alike: {answers:?}"
            );
            judged += usize::from(matches!(answers[0], Checked::Judged(_)));
        }
    }
    assert!(
        judged >= 80,
        "only {judged} fixture and policy pairs judged"
    );
}

/// One change to a recorded object: a value replaced, a member or element removed, a member
/// added, anywhere (the node picked by index among the object's nodes).
#[derive(Clone, Debug)]
enum Mutation {
    Set(prop::sample::Index, Value),
    Remove(prop::sample::Index),
    Add(prop::sample::Index, String, Value),
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![3 => any_json(), 1 => special_json()];
    let key = prop_oneof![
        prop::sample::select(vec![
            "suspend",
            "metadata",
            "resources",
            "status",
            "x",
            "a.b"
        ])
        .prop_map(str::to_owned),
        any_key(),
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), value.clone()).prop_map(|(at, v)| Mutation::Set(at, v)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        (any::<prop::sample::Index>(), key, value).prop_map(|(at, k, v)| Mutation::Add(at, k, v)),
    ]
}

/// `object` with `mutations` applied in turn.
fn mutated(object: &Value, mutations: &[Mutation]) -> Value {
    let mut object = object.clone();
    for mutation in mutations {
        let mut all = Vec::new();
        nodes(&object, &FieldPath::root(), &mut all);
        if all.is_empty() {
            continue;
        }
        match mutation {
            Mutation::Set(at, value) => set(&mut object, at.get(&all), value.clone()),
            Mutation::Remove(at) => remove(&mut object, at.get(&all)),
            Mutation::Add(at, key, value) => {
                // Into the picked node if it is an object, else into its parent.
                let mut path = at.get(&all).clone();
                let is_object =
                    |path: &FieldPath| object.pointer(&pointer(path)).is_some_and(Value::is_object);
                while !path.is_root() && !is_object(&path) {
                    path.pop();
                }
                set(&mut object, &path.key(key), value.clone());
            }
        }
    }
    object
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Recorded reviews with either object changed anywhere, in any way, spelled any way:
    /// production judges each exactly as the oracle does.
    #[test]
    fn production_agrees_with_the_oracle_on_mutated_fixtures(
        fixture in any::<prop::sample::Index>(),
        old_mutations in prop::collection::vec(any_mutation(), 0..3),
        new_mutations in prop::collection::vec(any_mutation(), 0..5),
        (seed, escapes, numbers) in any_spelling(),
    ) {
        let (name, review, policy) = fixture.get(&JUDGED);
        let mut review = review.clone();
        let request = &mut review["request"];
        request["oldObject"] = mutated(&request["oldObject"], &old_mutations);
        request["object"] = mutated(&request["object"], &new_mutations);
        let body = spelled(&review, spelling(seed, escapes, numbers));
        let checked = agreed(&POLICIES[*policy].1, body.as_bytes())?;
        prop_assert!(
            matches!(checked, Checked::Judged(_) | Checked::Undecidable),
            "{name}: {checked:?}"
        );
    }

    /// Arbitrary JSON as a job's spec (lists, scalars, empty containers, odd keys), the old and
    /// the new one independent, as whole bodies.
    #[test]
    fn production_agrees_with_the_oracle_on_arbitrary_specs(
        old_spec in any_json(),
        new_spec in any_json(),
        (seed, escapes, numbers) in any_spelling(),
    ) {
        let (mut old, mut new) = (old_job(), old_job());
        old["spec"] = old_spec;
        new["spec"] = new_spec;
        let body = spelled(&review_of(&old, &new), spelling(seed, escapes, numbers));
        let checked = agreed(&Policy::default(), body.as_bytes())?;
        prop_assert!(matches!(checked, Checked::Judged(_)), "{checked:?}");
    }
}
