//! The leaf diff over pairs of arbitrary JSON values, under the default policy's rules.
//!
//! The input is either JSON text — a two-element array `[old, new]`, or an AdmissionReview whose
//! `request.oldObject` and `request.object` are the pair (so the fixtures seed it) — or, when it
//! is not JSON, raw bytes that `arbitrary` turns into a value and a mutation of it. Checks: no
//! panic; a value never differs from itself; the diff is symmetric, sorted and unique; every path
//! but the root prints and parses back to itself; forbidden paths are changed paths; the raw
//! production diff (the raw walk over the values' JSON texts) names exactly the same leaves, and
//! the production evaluation equals the oracle's.
#![no_main]

#[path = "json_values.rs"]
mod json_values;

use std::sync::LazyLock;

use arbitrary::{Result, Unstructured};
use json_values::Values;
use libfuzzer_sys::fuzz_target;
use pytorchjob_guard::policy::oracle::{self, changed_leaves};
use pytorchjob_guard::policy::{FieldPath, Policy, RawObject, Requester, diff};
use serde_json::{Map, Value, json};

static POLICY: LazyLock<Policy> = LazyLock::new(Policy::default);

/// Keys that make the policy's paths (updatable, not compared, schema defaults) likely.
const KEYS: &[&str] = &[
    "spec",
    "metadata",
    "status",
    "runPolicy",
    "suspend",
    "cleanPodPolicy",
    "ttlSecondsAfterFinished",
    "labels",
    "annotations",
    "deletionTimestamp",
    "pytorchReplicaSpecs",
    "Worker",
    "replicas",
    "a.b",
    "\"",
    "",
];

/// This target's values.
const VALUES: Values = Values {
    keys: KEYS,
    max_depth: 8,
    max_len: 4,
};
const MAX_DEPTH: u32 = VALUES.max_depth;

fn key(u: &mut Unstructured) -> Result<String> {
    VALUES.key(u)
}

fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    VALUES.value(u, depth)
}

/// A copy of `v` with a few subtrees replaced, added or removed.
fn mutate(u: &mut Unstructured, v: &Value, depth: u32) -> Result<Value> {
    if u.ratio(1, 6)? {
        return value(u, depth);
    }
    Ok(match v {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, child) in map {
                match u.int_in_range(0..=5)? {
                    0 => {}
                    1 => {
                        out.insert(k.clone(), mutate(u, child, depth + 1)?);
                    }
                    _ => {
                        out.insert(k.clone(), child.clone());
                    }
                }
            }
            if depth < MAX_DEPTH && u.ratio(1, 4)? {
                out.insert(key(u)?, value(u, depth + 1)?);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for child in items {
                if u.ratio(1, 4)? {
                    out.push(mutate(u, child, depth + 1)?);
                } else {
                    out.push(child.clone());
                }
            }
            if u.ratio(1, 4)? {
                out.pop();
            }
            Value::Array(out)
        }
        other => other.clone(),
    })
}

fn pair(data: &[u8]) -> Option<(Value, Value)> {
    if let Ok(json) = serde_json::from_slice::<Value>(data) {
        return match json {
            Value::Array(mut two) if two.len() == 2 => {
                let new = two.pop()?;
                Some((two.pop()?, new))
            }
            review => {
                let request = review.get("request")?;
                Some((
                    request.get("oldObject")?.clone(),
                    request.get("object")?.clone(),
                ))
            }
        };
    }
    let mut u = Unstructured::new(data);
    let old = value(&mut u, 0).ok()?;
    let new = mutate(&mut u, &old, 0).ok()?;
    Some((old, new))
}

/// An object's text, indexed and read one level deep as a review's objects are.
fn read(text: &str) -> RawObject<'_> {
    RawObject::parse(text).expect("valid JSON")
}

fn check(old: &Value, new: &Value) {
    assert!(
        changed_leaves(old, old, &POLICY).is_empty(),
        "{old} differs from itself"
    );
    let forward = changed_leaves(old, new, &POLICY);
    let backward = changed_leaves(new, old, &POLICY);
    assert_eq!(forward, backward, "the diff is symmetric: {old} vs {new}");
    assert!(forward.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    // The root prints as `<root>`, which is not a field path: it is reported only when a whole
    // value is a scalar, which never happens to an object kube decoded.
    for path in forward.iter().filter(|p| !p.is_root()) {
        let text = path.to_string();
        let parsed: FieldPath = text
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} does not parse back: {e}"));
        assert_eq!(&parsed, path, "{text:?} parses back to the same path");
    }
    // The production diff names exactly the same leaves, on texts that are byte-identical where
    // the values are equal (as the API server writes them). It starts from objects, as a review
    // carries them: a pair that is not two objects is compared as the member `spec` of two.
    let (old, new) = match (old, new) {
        (Value::Object(_), Value::Object(_)) => (old.clone(), new.clone()),
        _ => (json!({ "spec": old }), json!({ "spec": new })),
    };
    let text = |v: &Value| serde_json::to_string(v).expect("a Value serializes");
    let (old_text, new_text) = (text(&old), text(&new));
    let (old_raw, new_raw) = (read(&old_text), read(&new_text));
    let forward = changed_leaves(&old, &new, &POLICY);
    let fast = diff::changed_leaves(&old_raw, &new_raw, &*POLICY)
        .expect("serde_json reads back what it wrote");
    assert_eq!(fast, forward, "the production diff agrees: {old} vs {new}");
    // Objects read by serde_json alone (no index: each level is indexed on its own) agree too.
    let serde_read = |text| serde_json::from_str::<RawObject<'_>>(text).expect("valid JSON");
    let unindexed = diff::changed_leaves(&serde_read(&old_text), &serde_read(&new_text), &*POLICY)
        .expect("serde_json reads back what it wrote");
    assert_eq!(
        unindexed, forward,
        "the unindexed diff agrees: {old} vs {new}"
    );
    let requester = Requester::default();
    let evaluation = oracle::evaluate(&POLICY, &old, &new, &requester);
    let production = POLICY
        .evaluate(&old_raw, &new_raw, &requester)
        .expect("serde_json reads back what it wrote");
    assert_eq!(production, evaluation, "the production evaluation agrees");
    assert_eq!(evaluation.changed, forward);
    assert!(evaluation.forbidden.iter().all(|p| forward.contains(p)));
    if evaluation.being_deleted {
        assert!(evaluation.forbidden.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some((old, new)) = pair(data) {
        check(&old, &new);
    }
});
