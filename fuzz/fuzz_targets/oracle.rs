//! Whole review bodies through production (`admission::review`: the body's index, the decode, the
//! raw diff) held to the oracle (`admission::oracle::check`: the body read by serde_json alone,
//! the objects compared by `policy::oracle`, a walk written from the rule that shares no code
//! with the diff), under the built-in policy and the kueue preset (exemptions).
//!
//! The input is a body as it is when it starts like JSON (`{`, `[`, whitespace: the fixtures
//! seed the corpus), or else drives a structured mutation: a recorded review whose old and new
//! objects are changed anywhere (values replaced by any JSON, members removed and added), then
//! written with keys in any order, keys and strings escaped (`"\u0073pec"`, `"\u003c"`, any
//! character as `\uXXXX`) and integers respelled (`2.0`, `20e-1`, `0.2e1`). Checks: no panic,
//! and `check` finds no disagreement (the rule it holds production to is in its module docs:
//! the same verdict and the same changed, forbidden and exempted paths wherever the oracle
//! judges; a refusal or a denial wherever it cannot).
#![no_main]

#[path = "json_values.rs"]
mod json_values;

use std::fmt::Write as _;
use std::sync::LazyLock;

use arbitrary::{Result, Unstructured};
use json_values::Values;
use libfuzzer_sys::fuzz_target;
use pytorchjob_guard::admission::oracle;
use pytorchjob_guard::policy::{Policy, file};
use serde_json::Value;

static POLICIES: LazyLock<[Policy; 2]> = LazyLock::new(|| {
    let kueue = file::parse(include_str!("../../policies/kueue.yaml")).expect("the preset parses");
    [Policy::default(), kueue]
});

/// The recorded reviews the structured mode starts from: denied, allowed, exempted, being
/// deleted, scale.
const FIXTURES: &[&str] = &[
    include_str!("../../tests/fixtures/pytorchjob/image.review.json"),
    include_str!("../../tests/fixtures/pytorchjob/run-policy-update.review.json"),
    include_str!("../../tests/fixtures/pytorchjob/kueue-suspend.review.json"),
    include_str!("../../tests/fixtures/pytorchjob/finalizer-removed-while-deleting.review.json"),
    include_str!("../../tests/fixtures/pytorchjob/scale-subresource.review.json"),
    include_str!("../../tests/fixtures/pytorchjob/metadata-status-only.review.json"),
];

static REVIEWS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    FIXTURES
        .iter()
        .map(|text| serde_json::from_str(text).expect("a fixture is JSON"))
        .collect()
});

/// Keys the policy's paths name (updatable, not compared, defaults, emptyIsAbsent), and some
/// that need quoting or escaping.
const KEYS: &[&str] = &[
    "spec",
    "metadata",
    "status",
    "runPolicy",
    "suspend",
    "cleanPodPolicy",
    "labels",
    "annotations",
    "deletionTimestamp",
    "template",
    "resources",
    "creationTimestamp",
    "replicas",
    "a.b",
    "<é>",
    "\"",
    "",
];

/// This target's values.
const VALUES: Values = Values {
    keys: KEYS,
    max_depth: 4,
    max_len: 3,
};

fn key(u: &mut Unstructured) -> Result<String> {
    VALUES.key(u)
}

fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    VALUES.value(u, depth)
}

/// Every value below the root, as JSON pointers, in document order.
fn nodes(value: &Value, at: &str, out: &mut Vec<String>) {
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{at}/{}", escape(key));
                out.push(path.clone());
                nodes(child, &path, out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                let path = format!("{at}/{index}");
                out.push(path.clone());
                nodes(child, &path, out);
            }
        }
        _ => {}
    }
}

/// `object` with a few values replaced, removed or added anywhere.
fn mutate(u: &mut Unstructured, object: &mut Value) -> Result<()> {
    for _ in 0..u.int_in_range(0..=4)? {
        let mut all = Vec::new();
        nodes(object, "", &mut all);
        if all.is_empty() {
            return Ok(());
        }
        let at = all[u.choose_index(all.len())?].clone();
        let (parent, last) = at.rsplit_once('/').expect("a pointer below the root");
        match u.int_in_range(0..=2)? {
            0 => *object.pointer_mut(&at).expect("a node") = value(u, 0)?,
            1 => match object.pointer_mut(parent).expect("its parent") {
                Value::Object(map) => {
                    map.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(items) => {
                    items.remove(last.parse::<usize>().expect("an index"));
                }
                _ => {}
            },
            _ => {
                let (key, added) = (key(u)?, value(u, 0)?);
                match object.pointer_mut(&at).expect("a node") {
                    Value::Object(map) => map.insert(key, added),
                    _ => match object.pointer_mut(parent).expect("its parent") {
                        Value::Object(map) => map.insert(key, added),
                        _ => None,
                    },
                };
            }
        }
    }
    Ok(())
}

/// A JSON string, any character escaped as `\uXXXX` where `u` says so.
fn write_string(u: &mut Unstructured, text: &str, out: &mut String) -> Result<()> {
    out.push('"');
    for c in text.chars() {
        let escaped = u.ratio(1, 4)?;
        match c {
            '"' | '\\' if !escaped => {
                out.push('\\');
                out.push(c);
            }
            c if escaped || (c as u32) < 0x20 => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(())
}

/// `value` written with keys in an order `u` picks, keys and strings escaped where it says, and
/// small integers in the objects (`numbers`) in another form.
fn write(u: &mut Unstructured, value: &Value, numbers: bool, out: &mut String) -> Result<()> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, u.int_in_range(0..=i)?);
            }
            out.push('{');
            for (n, (key, child)) in entries.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_string(u, key, out)?;
                out.push(':');
                let numbers = numbers || key == "object" || key == "oldObject";
                write(u, child, numbers, out)?;
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, child) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write(u, child, numbers, out)?;
            }
            out.push(']');
        }
        Value::String(text) => write_string(u, text, out)?,
        Value::Number(number)
            if numbers && number.as_i64().is_some_and(|n| n.unsigned_abs() < 1 << 31) =>
        {
            let n = number.as_i64().expect("an integer");
            let (sign, digits) = (if n < 0 { "-" } else { "" }, n.unsigned_abs().to_string());
            let _ = match u.int_in_range(0..=4)? {
                0 => write!(out, "{n}.0"),
                // `00e-1` is no JSON: a leading zero stands alone.
                1 if n == 0 => write!(out, "0e-1"),
                1 => write!(out, "{n}0e-1"),
                2 => write!(out, "{sign}0.{digits}e{}", digits.len()),
                3 => write!(out, "{n}E+0"),
                _ => write!(out, "{n}"),
            };
        }
        other => out.push_str(&other.to_string()),
    }
    Ok(())
}

/// A recorded review, mutated and respelled as `u` says.
fn structured(u: &mut Unstructured) -> Result<String> {
    let mut review = u.choose(&REVIEWS)?.clone();
    for side in ["oldObject", "object"] {
        mutate(u, &mut review["request"][side])?;
    }
    let mut out = String::new();
    write(u, &review, false, &mut out)?;
    Ok(out)
}

fn checked(body: &[u8]) {
    for policy in POLICIES.iter() {
        if let Err(disagreement) = oracle::check(policy, body) {
            panic!("{disagreement}\nbody: {}", String::from_utf8_lossy(body));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match data.first() {
        None | Some(b'{' | b'[' | b' ' | b'\t' | b'\n' | b'\r') => checked(data),
        Some(_) => {
            if let Ok(body) = structured(&mut Unstructured::new(&data[1..])) {
                checked(body.as_bytes());
            }
        }
    }
});
