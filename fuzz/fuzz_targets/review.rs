//! Decode and decide arbitrary bytes, exactly as `/validate` does after reading the body.
//!
//! Never panics, and when an answer comes out it is a well-formed response review that echoes
//! the request's uid, states the verdict the decision holds, and is the same every time. And
//! wherever the body's index reads the request, it reads what serde_json reads from the whole
//! body.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pytorchjob_guard::admission::{self, Verdict};
use pytorchjob_guard::policy::Policy;
use serde_json::Value;

static POLICY: LazyLock<Policy> = LazyLock::new(Policy::default);

fuzz_target!(|data: &[u8]| {
    admission::request::indexed_reading_agrees(data);
    let Ok(reviewed) = admission::review(&POLICY, data) else {
        return;
    };
    let response: Value = serde_json::from_slice(&reviewed.body).expect("the answer is JSON");
    assert_eq!(response["kind"], "AdmissionReview");
    let (summary, outcome) = (&reviewed.decision.summary, &reviewed.decision.outcome);
    assert_eq!(
        response["apiVersion"],
        summary.version.as_str(),
        "the answer echoes the review's apiVersion: {response}"
    );
    assert!(!summary.uid.is_empty());
    assert_eq!(response["response"]["uid"], summary.uid.as_str());
    assert_eq!(
        response["response"]["allowed"],
        outcome.verdict() == Verdict::Allowed
    );
    assert!(
        outcome
            .forbidden()
            .iter()
            .all(|path| outcome.changed().contains(path))
    );
    let again = admission::review(&POLICY, data).expect("the same body gets an answer again");
    assert_eq!(again.body, reviewed.body, "the answer is deterministic");
});
