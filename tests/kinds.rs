//! Golden reviews of every training-operator kind under `policies/training-operator.yaml`.
//!
//! The reviews under `tests/fixtures/kinds/<kind>/` are built by `tests/fixtures/kinds/build.py`
//! from one real example job of each kind. Each case states its verdict and exact forbidden
//! paths here; the response of [`admission::review`] (the function behind `/validate` and
//! `review`) is checked against those facts, read from its JSON, and against its golden file
//! byte for byte. `PYTORCHJOB_GUARD_BLESS=1 cargo test --test kinds` rewrites the goldens (the
//! fact checks still run). One review also goes through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod golden;

use golden::Goldens;
use pytorchjob_guard::admission;
use pytorchjob_guard::policy::{Policy, file};
use serde_json::{Value, json};

const PRESET: &str = "policies/training-operator.yaml";

/// A kind's fixture directory, its replica-specs key, its replica types (as in its example)
/// and whether its CRD has a scale subresource.
const KINDS: &[(&str, &str, &[&str], bool)] = &[
    ("tfjob", "tfReplicaSpecs", &["Worker"], false),
    ("mpijob", "mpiReplicaSpecs", &["Launcher", "Worker"], false),
    ("paddlejob", "paddleReplicaSpecs", &["Worker"], true),
    (
        "xgboostjob",
        "xgbReplicaSpecs",
        &["Master", "Worker"],
        false,
    ),
    ("jaxjob", "jaxReplicaSpecs", &["Worker"], true),
    (
        "pytorchjob",
        "pytorchReplicaSpecs",
        &["Master", "Worker"],
        true,
    ),
    ("mxjob", "mxReplicaSpecs", &["Worker"], false),
];

/// One fixture and its answer: `None` allowed, `Some(paths)` denied naming exactly `paths`.
struct Case {
    file: String,
    forbidden: Option<Vec<String>>,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (dir, key, replica_types, scales) in KINDS {
        let case = |name: &str, forbidden: Option<Vec<String>>| Case {
            file: format!("{dir}/{name}"),
            forbidden,
        };
        let worker_replicas = vec![format!("spec.{key}.Worker.replicas")];
        let images = replica_types
            .iter()
            .map(|t| format!("spec.{key}.{t}.template.spec.containers[0].image"))
            .collect();
        cases.push(case("label", None));
        cases.push(case("worker-replicas", Some(worker_replicas.clone())));
        cases.push(case("image", Some(images)));
        cases.push(case("run-policy-ttl", None));
        if *scales {
            cases.push(case("scale", Some(worker_replicas)));
        }
    }
    cases
}

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn fixture(case: &str, suffix: &str) -> PathBuf {
    repo(&format!("tests/fixtures/kinds/{case}.{suffix}.json"))
}

fn preset() -> Policy {
    let text = std::fs::read_to_string(repo(PRESET)).unwrap();
    file::parse(&text).unwrap_or_else(|e| panic!("{PRESET}: {e}"))
}

/// The review's bytes, and the response as `pytorchjob-guard review` prints it (with newline).
fn run(policy: &Policy, case: &Case) -> (Value, Vec<u8>) {
    let body = std::fs::read(fixture(&case.file, "review")).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    let mut printed = admission::review(policy, &body)
        .unwrap_or_else(|e| panic!("{}: {e}", case.file))
        .body;
    printed.push(b'\n');
    (request, printed)
}

#[test]
fn every_fixture_has_a_case() {
    let mut on_disk = BTreeSet::new();
    for (dir, ..) in KINDS {
        for entry in std::fs::read_dir(repo(&format!("tests/fixtures/kinds/{dir}"))).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.strip_suffix(".review.json") {
                on_disk.insert(format!("{dir}/{stem}"));
            }
        }
    }
    let named: BTreeSet<String> = cases().into_iter().map(|c| c.file).collect();
    assert_eq!(
        on_disk, named,
        "fixtures on disk and cases in tests/kinds.rs differ"
    );
}

#[test]
fn responses_match_the_golden_files() {
    let policy = preset();
    let mut goldens = Goldens::default();
    for case in cases() {
        let (_, printed) = run(&policy, &case);
        goldens.check(&case.file, &fixture(&case.file, "response"), &printed);
    }
    goldens.finish();
}

#[test]
fn responses_state_the_expected_facts() {
    let policy = preset();
    for case in cases() {
        let (request, printed) = run(&policy, &case);
        let review: Value = serde_json::from_slice(&printed).unwrap();
        let response = &review["response"];
        let name = &case.file;
        assert_eq!(response["uid"], request["request"]["uid"], "{name}");
        assert_eq!(review["apiVersion"], request["apiVersion"], "{name}");
        match &case.forbidden {
            None => {
                assert_eq!(response["allowed"], true, "{name}: {response}");
                assert_ne!(response["status"]["code"], 400, "{name}");
            }
            Some(paths) => {
                assert_eq!(response["allowed"], false, "{name}: {response}");
                let status = &response["status"];
                assert_eq!(status["code"], 400, "{name}");
                assert_eq!(status["reason"], "BadRequest", "{name}");
                let fields: Vec<&str> = status["details"]["causes"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name}: no causes in {status}"))
                    .iter()
                    .map(|cause| cause["field"].as_str().unwrap())
                    .collect();
                assert_eq!(fields, *paths, "{name}");
                // Judged as the kind of the resource the request is for (also for /scale).
                let kind = status["details"]["kind"].as_str().unwrap().to_lowercase();
                assert_eq!(
                    format!("{kind}s"),
                    request["request"]["resource"]["resource"],
                    "{name}"
                );
                let message = status["message"].as_str().unwrap();
                for path in paths {
                    assert!(message.contains(path.as_str()), "{name}: {message}");
                }
            }
        }
    }
}

/// The same reviews without the preset: the built-in rule governs PyTorchJob only, so every
/// other kind's change — even a forbidden one — is waved through. The preset is what guards them.
#[test]
fn without_the_preset_only_pytorchjobs_are_judged() {
    let builtin = Policy::default();
    for case in cases().into_iter().filter(|c| c.forbidden.is_some()) {
        let (_, printed) = run(&builtin, &case);
        let review: Value = serde_json::from_slice(&printed).unwrap();
        let waved_through = !case.file.starts_with("pytorchjob/");
        assert_eq!(
            review["response"]["allowed"], waved_through,
            "{}: {}",
            case.file, review["response"]
        );
    }
}

/// `pytorchjob-guard review --policy policies/training-operator.yaml FILE` prints the golden.
#[test]
fn the_binary_judges_other_kinds_with_the_preset() {
    for case in ["mxjob/worker-replicas", "paddlejob/scale", "tfjob/label"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_pytorchjob-guard"))
            .arg("review")
            .arg("--policy")
            .arg(repo(PRESET))
            .arg(fixture(case, "review"))
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{case}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            output.stdout,
            std::fs::read(fixture(case, "response")).unwrap(),
            "{case}"
        );
    }
}

/// The run-policy case of a job created without `spec.runPolicy` adds one, and the API server
/// defaults `suspend: false` into it: the preset's default keeps that from counting as a change.
#[test]
fn a_new_run_policy_brings_its_suspend_default_and_is_still_allowed() {
    let case = "jaxjob/run-policy-ttl";
    let review: Value =
        serde_json::from_slice(&std::fs::read(fixture(case, "review")).unwrap()).unwrap();
    let request = &review["request"];
    assert!(request["oldObject"]["spec"].get("runPolicy").is_none());
    assert_eq!(request["object"]["spec"]["runPolicy"]["suspend"], false);
    let answer = |policy: &Policy| -> Value {
        let body = admission::review(policy, &serde_json::to_vec(&review).unwrap())
            .unwrap()
            .body;
        serde_json::from_slice(&body).unwrap()
    };
    assert_eq!(answer(&preset())["response"]["allowed"], true);
    let text = std::fs::read_to_string(repo(PRESET)).unwrap();
    let without_default = text.replace(
        "defaults:\n  - path: spec.runPolicy.suspend\n    value: false\n",
        "defaults: []\n",
    );
    assert_ne!(text, without_default);
    let denied = answer(&file::parse(&without_default).unwrap());
    assert_eq!(
        denied["response"]["status"]["details"]["causes"][0]["field"],
        "spec.runPolicy.suspend"
    );
}

/// Presence: an empty object where the operator tests a pointer against nil, or a map entry
/// that creates a replica type, is a change; the `{}` typed clients write where the Go type is a
/// value struct is not. Each case edits the `label` review of a kind with an elastic policy
/// (whose own change, a label, is allowed) and is judged as `/validate` judges it.
#[test]
fn an_empty_object_is_a_change_unless_a_value_struct_makes_it_noise() {
    let policy = preset();
    type Edit = fn(&mut Value, &str);
    let cases: [(&str, Edit, Option<&str>); 5] = [
        (
            "elasticPolicy: {} added",
            |review, _| review["request"]["object"]["spec"]["elasticPolicy"] = json!({}),
            Some("spec.elasticPolicy"),
        ),
        (
            "elasticPolicy: {} removed",
            |review, _| review["request"]["oldObject"]["spec"]["elasticPolicy"] = json!({}),
            Some("spec.elasticPolicy"),
        ),
        (
            "a replica type added as {}",
            |review, key| review["request"]["object"]["spec"][key]["Chief"] = json!({}),
            Some("spec.{key}.Chief"),
        ),
        (
            "resources: {} written beside the label",
            |review, key| {
                review["request"]["object"]["spec"][key]["Worker"]["template"]["spec"]["containers"]
                    [0]["resources"] = json!({});
            },
            None,
        ),
        (
            "template metadata: {creationTimestamp: null} written beside the label",
            |review, key| {
                review["request"]["object"]["spec"][key]["Worker"]["template"]["metadata"] =
                    json!({"creationTimestamp": null});
            },
            None,
        ),
    ];
    for (dir, key) in [
        ("pytorchjob", "pytorchReplicaSpecs"),
        ("paddlejob", "paddleReplicaSpecs"),
    ] {
        let body = std::fs::read(fixture(&format!("{dir}/label"), "review")).unwrap();
        let original: Value = serde_json::from_slice(&body).unwrap();
        for (what, edit, denied) in cases {
            let mut review = original.clone();
            for side in ["object", "oldObject"] {
                let spec = &mut review["request"][side]["spec"];
                spec.as_object_mut().unwrap().remove("elasticPolicy");
                spec[key]["Worker"]["template"]["spec"]["containers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("resources");
            }
            edit(&mut review, key);
            let answer = admission::review(&policy, &serde_json::to_vec(&review).unwrap())
                .unwrap()
                .body;
            let response = serde_json::from_slice::<Value>(&answer).unwrap()["response"].clone();
            match denied {
                None => assert_eq!(response["allowed"], true, "{dir}: {what}: {response}"),
                Some(field) => {
                    assert_eq!(response["allowed"], false, "{dir}: {what}: {response}");
                    let causes: Vec<&str> = response["status"]["details"]["causes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|cause| cause["field"].as_str().unwrap())
                        .collect();
                    assert_eq!(causes, [field.replace("{key}", key)], "{dir}: {what}");
                }
            }
        }
    }
}
