//! Decode + decide, without the network: `cargo bench --bench decision`.
//!
//! Groups, each over the reviews of `support/reviews.rs` (small allow and deny, a ~460 KB job
//! with one annotation added, and the same job with hundreds of forbidden changes):
//!
//! | group | what is timed |
//! | --- | --- |
//! | `review` | [`admission::review`]: bytes in, response bytes out — what `/validate` pays per request |
//! | `decode` | [`request::decode`] alone: the envelope, with the objects kept as raw JSON |
//! | `decide` | [`decision::decide`] on a decoded request: the raw diff and the policy's judgement |
//! | `render` | [`response::render`] of a decision: the response bytes |
//! | `diff` | [`diff::changed_leaves`] on the decoded objects (members as raw JSON): production's diff |
//! | `oracle_diff` | [`oracle::changed_leaves`] on pre-parsed `Value`s: the whole-tree diff it is checked against |
//! | `value_baseline` | `serde_json::from_slice::<Value>` of the same bytes: calibration, one full generic parse |
//!
//! Throughput is reported in review bytes per second for every group, so rows compare directly.
//! Criterion's flags still apply (`cargo bench --bench decision -- review/large`,
//! `--measurement-time 10`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pytorchjob_guard::admission::{self, Verdict, decision, request, response};
use pytorchjob_guard::policy::{Policy, diff, oracle};
use serde_json::Value;

#[path = "support/reviews.rs"]
mod reviews;

/// A benchmark review, checked to get the verdict its name promises.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    old: Value,
    new: Value,
}

fn cases(policy: &Policy) -> Vec<Case> {
    reviews::all()
        .into_iter()
        .map(|(name, bytes)| {
            let reviewed = admission::review(policy, &bytes).expect("the review is answerable");
            let (verdict, outcome) = (reviewed.decision.verdict(), &reviewed.decision.outcome);
            match name {
                "small-allow" | "large" => {
                    assert_eq!(verdict, Verdict::Allowed, "{name}");
                    assert!(!outcome.changed().is_empty(), "{name} changes something");
                }
                "small-deny" => {
                    assert_eq!(verdict, Verdict::Denied, "{name}");
                    assert_eq!(outcome.forbidden().len(), 1, "{name}");
                }
                _ => {
                    assert_eq!(verdict, Verdict::Denied, "{name}");
                    assert!(outcome.forbidden().len() >= 200, "{name} is deny-heavy");
                }
            }
            let review: Value = serde_json::from_slice(&bytes).expect("the review is JSON");
            eprintln!(
                "{name}: {} bytes, {} changed, {} forbidden",
                bytes.len(),
                outcome.changed().len(),
                outcome.forbidden().len()
            );
            Case {
                name,
                old: review["request"]["oldObject"].clone(),
                new: review["request"]["object"].clone(),
                bytes,
            }
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let policy = Policy::default();
    let cases = cases(&policy);

    let mut group = c.benchmark_group("review");
    for case in &cases {
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(case.name), case, |b, case| {
            b.iter(|| admission::review(&policy, black_box(&case.bytes)).expect("answerable"));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode");
    for case in &cases {
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(case.name), case, |b, case| {
            b.iter(|| request::decode(black_box(&case.bytes)).expect("decodes"));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decide");
    for case in &cases {
        let request = request::decode(&case.bytes).expect("decodes");
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(case.name), &request, |b, r| {
            b.iter(|| decision::decide(&policy, None, black_box(r)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("render");
    for case in &cases {
        let request = request::decode(&case.bytes).expect("decodes");
        let decided = decision::decide(&policy, None, &request);
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(case.name), &decided, |b, d| {
            b.iter(|| response::render(black_box(d), &policy).expect("encodes"));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("diff");
    for case in &cases {
        let request = request::decode(&case.bytes).expect("decodes");
        let (old, new) = (
            request.old_object.as_ref().expect("old"),
            request.object.as_ref().expect("new"),
        );
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(case.name),
            &(old, new),
            |b, (old, new)| {
                b.iter(|| {
                    diff::changed_leaves(black_box(old), black_box(new), &policy).expect("valid")
                });
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("oracle_diff");
    for case in &cases {
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(case.name), case, |b, case| {
            b.iter(|| oracle::changed_leaves(black_box(&case.old), black_box(&case.new), &policy));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("value_baseline");
    for case in &cases {
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(case.name), case, |b, case| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&case.bytes)).expect("JSON"));
        });
    }
    group.finish();
}

criterion_group! {
    name = decision;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = benches
}
criterion_main!(decision);
