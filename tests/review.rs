//! Golden tests of the decision glue: every recorded or generated AdmissionReview under
//! `tests/fixtures/` goes through [`admission::review`] — the function behind `/validate`,
//! `review` and `check` — and the response must equal its golden file byte for byte.
//!
//! The goldens are not trusted on their own: every case also states its verdict, reason and the
//! exact forbidden (and changed) paths in code, and the response is checked against those facts
//! and against the request it answers (uid, apiVersion, code 400 / BadRequest / causes).
//!
//! `PYTORCHJOB_GUARD_BLESS=1 cargo test --test review` rewrites the goldens instead of comparing
//! (the fact checks still run). See `tests/fixtures/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod golden;

use golden::{Goldens, blessing};
use pytorchjob_guard::admission::{self, Reason, Reviewed, Verdict};
use pytorchjob_guard::policy::{FieldPath, MAX_PATHS_IN_MESSAGE, Policy};
use serde_json::Value;

/// The webhook name users see (manifests/base/validatingwebhookconfiguration.yaml).
const WEBHOOK_NAME: &str = "pytorchjob-guard.kubeflow.org";

const V1: &str = "admission.k8s.io/v1";
const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// One fixture and what its answer must say.
struct Case {
    /// The input under `tests/fixtures/`.
    input: &'static str,
    /// For a bare `request` object: the AdmissionReview apiVersion to wrap it in.
    wrap: Option<&'static str>,
    /// The golden response under `tests/fixtures/`.
    golden: &'static str,
    verdict: Verdict,
    reason: Reason,
    /// The exact forbidden paths, in order (empty when allowed).
    forbidden: &'static [&'static str],
    /// The updatable leaves that changed (governed UPDATEs only). With `forbidden`, they are
    /// every compared leaf that changed.
    updatable_changed: &'static [&'static str],
}

const NO_PATHS: &[&str] = &[];

const fn allowed(input: &'static str, golden: &'static str, reason: Reason) -> Case {
    Case {
        input,
        wrap: None,
        golden,
        verdict: Verdict::Allowed,
        reason,
        forbidden: NO_PATHS,
        updatable_changed: NO_PATHS,
    }
}

const fn denied(
    input: &'static str,
    golden: &'static str,
    forbidden: &'static [&'static str],
) -> Case {
    Case {
        input,
        wrap: None,
        golden,
        verdict: Verdict::Denied,
        reason: Reason::Evaluated,
        forbidden,
        updatable_changed: NO_PATHS,
    }
}

const fn wrapped(input: &'static str, api_version: &'static str, golden: &'static str) -> Case {
    Case {
        input,
        wrap: Some(api_version),
        golden,
        verdict: Verdict::Allowed,
        reason: Reason::NotGoverned,
        forbidden: NO_PATHS,
        updatable_changed: NO_PATHS,
    }
}

const MANY_PATHS: &[&str] = &[
    "spec.elasticPolicy.maxReplicas",
    "spec.elasticPolicy.maxRestarts",
    "spec.elasticPolicy.metrics[0].resource.name",
    "spec.elasticPolicy.metrics[0].resource.target.averageUtilization",
    "spec.elasticPolicy.metrics[0].resource.target.type",
    "spec.elasticPolicy.metrics[0].type",
    "spec.elasticPolicy.minReplicas",
    "spec.elasticPolicy.rdzvBackend",
    "spec.pytorchReplicaSpecs.Master.replicas",
    "spec.pytorchReplicaSpecs.Master.restartPolicy",
    "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].command[0]",
    "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].command[1]",
    "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].command[2]",
    "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].image",
    "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].imagePullPolicy",
    "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].name",
    "spec.pytorchReplicaSpecs.Worker.replicas",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[0]",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[1]",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[2]",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[3]",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[4]",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[5]",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[6]",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[7]",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[8]",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].env[0].name",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].env[0].value",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].image",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].imagePullPolicy",
    "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].resources.requests.cpu",
];

fn cases() -> Vec<Case> {
    vec![
        // Recorded reviews of other kinds (kubewarden): not governed, allowed, echoed.
        wrapped(
            "reviews/kubewarden-policies_echo_update_accept.request.json",
            V1,
            "reviews/kubewarden-policies_echo_update_accept.response.json",
        ),
        wrapped(
            "reviews/kubewarden-policies_echo_update_accept.request.json",
            V1BETA1,
            "reviews/kubewarden-policies_echo_update_accept.v1beta1.response.json",
        ),
        wrapped(
            "reviews/kubewarden-policies_echo_create_accept.request.json",
            V1,
            "reviews/kubewarden-policies_echo_create_accept.response.json",
        ),
        wrapped(
            "reviews/kubewarden-policies_echo_delete_accept.request.json",
            V1,
            "reviews/kubewarden-policies_echo_delete_accept.response.json",
        ),
        wrapped(
            "reviews/kubewarden-policies_capabilities_panic_replicaset-controller.request.json",
            V1,
            "reviews/kubewarden-policies_capabilities_panic_replicaset-controller.response.json",
        ),
        allowed(
            "reviews/kubewarden-policy-server_pod_with_privileged_containers.review.json",
            "reviews/kubewarden-policy-server_pod_with_privileged_containers.response.json",
            Reason::NotGoverned,
        ),
        // PyTorchJobs (tests/fixtures/pytorchjob/build.py).
        Case {
            updatable_changed: &["metadata.labels.app"],
            ..allowed(
                "pytorchjob/label-api-page.review.json",
                "pytorchjob/label-api-page.response.json",
                Reason::Evaluated,
            )
        },
        Case {
            updatable_changed: &[r#"metadata.annotations["training.example.com/owner"]"#],
            ..allowed(
                "pytorchjob/annotation-dotted-key.review.json",
                "pytorchjob/annotation-dotted-key.response.json",
                Reason::Evaluated,
            )
        },
        Case {
            updatable_changed: &[
                "spec.runPolicy.cleanPodPolicy",
                "spec.runPolicy.ttlSecondsAfterFinished",
            ],
            ..allowed(
                "pytorchjob/run-policy-update.review.json",
                "pytorchjob/run-policy-update.response.json",
                Reason::Evaluated,
            )
        },
        denied(
            "pytorchjob/worker-replicas.review.json",
            "pytorchjob/worker-replicas.response.json",
            &["spec.pytorchReplicaSpecs.Worker.replicas"],
        ),
        denied(
            "pytorchjob/image.review.json",
            "pytorchjob/image.response.json",
            &[
                "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].image",
                "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].image",
            ],
        ),
        denied(
            "pytorchjob/args-removed.review.json",
            "pytorchjob/args-removed.response.json",
            &[
                "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].args[0]",
                "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].args[1]",
            ],
        ),
        denied(
            "pytorchjob/kueue-suspend.review.json",
            "pytorchjob/kueue-suspend.response.json",
            &["spec.runPolicy.suspend"],
        ),
        allowed(
            "pytorchjob/metadata-status-only.review.json",
            "pytorchjob/metadata-status-only.response.json",
            Reason::Evaluated,
        ),
        allowed(
            "pytorchjob/finalizer-removed-while-deleting.review.json",
            "pytorchjob/finalizer-removed-while-deleting.response.json",
            Reason::BeingDeleted,
        ),
        allowed(
            "pytorchjob/create.review.json",
            "pytorchjob/create.response.json",
            Reason::NotAnUpdate,
        ),
        allowed(
            "pytorchjob/delete.review.json",
            "pytorchjob/delete.response.json",
            Reason::NotAnUpdate,
        ),
        allowed(
            "pytorchjob/status-subresource.review.json",
            "pytorchjob/status-subresource.response.json",
            Reason::Subresource,
        ),
        // HPA writes /scale as an autoscaling/v1 Scale of the pytorchjobs resource: judged as
        // a change of the Worker replicas it maps to, and denied without an exemption.
        Case {
            reason: Reason::Scale,
            ..denied(
                "pytorchjob/scale-subresource.review.json",
                "pytorchjob/scale-subresource.response.json",
                &["spec.pytorchReplicaSpecs.Worker.replicas"],
            )
        },
        denied(
            "pytorchjob/dry-run-denied.review.json",
            "pytorchjob/dry-run-denied.response.json",
            &["spec.nprocPerNode"],
        ),
        // spec.cleanPodPolicy (flat layout) changes too, and is allowed.
        Case {
            updatable_changed: &["spec.cleanPodPolicy"],
            ..denied(
                "pytorchjob/v1beta1-denied.review.json",
                "pytorchjob/v1beta1-denied.response.json",
                &["spec.backoffLimit"],
            )
        },
        // kubectl apply also rewrote its last-applied-configuration annotation.
        Case {
            updatable_changed: &[
                r#"metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]"#,
            ],
            ..denied(
                "pytorchjob/many-paths.review.json",
                "pytorchjob/many-paths.response.json",
                MANY_PATHS,
            )
        },
    ]
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(relative: &str) -> Vec<u8> {
    let path = fixtures().join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

impl Case {
    /// The AdmissionReview bytes the API server would send: the file itself, or the bare
    /// request wrapped without touching its bytes.
    fn body(&self) -> Vec<u8> {
        let file = read(self.input);
        match self.wrap {
            None => file,
            Some(api_version) => {
                let mut body = format!(
                    r#"{{"apiVersion":"{api_version}","kind":"AdmissionReview","request":"#
                )
                .into_bytes();
                body.extend_from_slice(&file);
                body.extend_from_slice(b"}");
                body
            }
        }
    }

    fn name(&self) -> String {
        match self.wrap {
            Some(api_version) => format!("{} as {api_version}", self.input),
            None => self.input.to_owned(),
        }
    }

    /// Every compared leaf that changed, in path order.
    fn changed(&self) -> Vec<String> {
        let mut paths: Vec<FieldPath> = self
            .forbidden
            .iter()
            .chain(self.updatable_changed)
            .map(|p| p.parse().unwrap())
            .collect();
        paths.sort();
        strings(&paths)
    }

    fn run(&self) -> (Value, Reviewed) {
        let body = self.body();
        let request: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", self.name()));
        let reviewed = admission::review(&Policy::default(), &body)
            .unwrap_or_else(|e| panic!("{}: no review: {e}", self.name()));
        (request, reviewed)
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

fn strings(paths: &[impl ToString]) -> Vec<String> {
    paths.iter().map(ToString::to_string).collect()
}

#[test]
fn every_fixture_has_a_case_and_every_case_a_fixture() {
    let mut on_disk = BTreeSet::new();
    for dir in ["reviews", "pytorchjob"] {
        for entry in std::fs::read_dir(fixtures().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let is_input = name.ends_with(".review.json") || name.ends_with(".request.json");
            let is_golden = name.ends_with(".response.json");
            if is_input || is_golden {
                on_disk.insert(format!("{dir}/{name}"));
            }
        }
    }
    let mut named = BTreeSet::new();
    for case in cases() {
        named.insert(case.input.to_owned());
        assert!(
            named.insert(case.golden.to_owned()),
            "{}: golden {} is shared with another case",
            case.name(),
            case.golden
        );
    }
    if blessing() {
        // Goldens may not exist yet; the comparison test writes them.
        on_disk.retain(|name| !name.ends_with(".response.json"));
        named.retain(|name| !name.ends_with(".response.json"));
    }
    assert_eq!(
        on_disk, named,
        "fixtures on disk and cases in tests/review.rs differ"
    );
    // At least the five recorded reviews and the fifteen PyTorchJob cases.
    assert!(on_disk.iter().filter(|n| n.starts_with("reviews/")).count() >= 5);
    assert!(
        on_disk
            .iter()
            .filter(|n| n.starts_with("pytorchjob/") && n.ends_with(".review.json"))
            .count()
            >= 15
    );
}

#[test]
fn responses_match_the_golden_files() {
    let mut goldens = Goldens::default();
    for case in cases() {
        let (_, reviewed) = case.run();
        // What `pytorchjob-guard review` prints: the body and a newline.
        let mut printed = reviewed.body.clone();
        printed.push(b'\n');
        goldens.check(&case.name(), &fixtures().join(case.golden), &printed);
    }
    goldens.finish();
}

#[test]
fn responses_state_the_expected_facts() {
    for case in cases() {
        let name = case.name();
        let (request, reviewed) = case.run();
        let response: Value = serde_json::from_slice(&reviewed.body).unwrap();

        // The envelope answers this request: same apiVersion and kind, same uid.
        let uid = str_at(&request, "/request/uid");
        assert_eq!(
            str_at(&response, "/apiVersion"),
            str_at(&request, "/apiVersion"),
            "{name}"
        );
        assert_eq!(str_at(&response, "/kind"), "AdmissionReview", "{name}");
        assert_eq!(str_at(&response, "/response/uid"), uid, "{name}");
        assert!(response.get("request").is_none(), "{name}: request echoed");
        assert!(
            response.pointer("/response/patch").is_none(),
            "{name}: a validating webhook must not patch"
        );
        assert_eq!(
            response.pointer("/response/allowed"),
            Some(&Value::Bool(case.verdict == Verdict::Allowed)),
            "{name}"
        );

        // The summary agrees with the case and with the request.
        let (summary, outcome) = (&reviewed.decision.summary, &reviewed.decision.outcome);
        assert_eq!(summary.uid, uid, "{name}");
        assert_eq!(outcome.verdict(), case.verdict, "{name}");
        assert_eq!(outcome.reason(), case.reason, "{name}");
        assert_eq!(strings(outcome.forbidden()), case.forbidden, "{name}");
        assert_eq!(strings(outcome.changed()), case.changed(), "{name}");
        assert_eq!(
            summary.operation_name(),
            str_at(&request, "/request/operation")
        );
        assert_eq!(
            summary.dry_run,
            request.pointer("/request/dryRun") == Some(&Value::Bool(true)),
            "{name}"
        );

        match case.verdict {
            Verdict::WouldDeny => panic!("{name}: the goldens here are in enforce mode"),
            Verdict::Allowed => {
                let status = response.pointer("/response/status");
                assert!(
                    status.is_none_or(|s| s.get("message").is_none() && s.get("code").is_none()),
                    "{name}: an allowed answer carries no failure: {status:?}"
                );
            }
            Verdict::Denied => {
                let status = response.pointer("/response/status").unwrap();
                assert_eq!(status["code"], 400, "{name}");
                assert_eq!(status["reason"], "BadRequest", "{name}");
                assert_eq!(status["status"], "Failure", "{name}");
                let subject = format!(
                    "PyTorchJob {}/{}: ",
                    str_at(&request, "/request/namespace"),
                    str_at(&request, "/request/name")
                );
                assert!(
                    str_at(status, "/message").starts_with(&subject),
                    "{name}: {}",
                    status["message"]
                );
                let details = &status["details"];
                assert_eq!(details["name"], request["request"]["name"], "{name}");
                assert_eq!(details["group"], "kubeflow.org", "{name}");
                assert_eq!(details["kind"], "PyTorchJob", "{name}");
                assert_eq!(
                    details["uid"], request["request"]["object"]["metadata"]["uid"],
                    "{name}"
                );
                let causes = details["causes"].as_array().unwrap();
                let fields: Vec<&str> = causes.iter().map(|c| str_at(c, "/field")).collect();
                assert_eq!(fields, case.forbidden, "{name}");
                for cause in causes {
                    assert_eq!(cause["reason"], "FieldValueForbidden", "{name}");
                    assert_eq!(cause["message"], "field cannot be updated", "{name}");
                }
            }
        }
    }
}

/// What kubectl prints for a denial: the API server wraps the message as
/// `admission webhook "<name>" denied the request: <message>` (k8s.io/apiserver
/// `webhookerrors.ToStatusErr`), and kubectl prefixes `Error from server (<reason>): `.
fn kubectl_line(response: &Value) -> String {
    format!(
        "Error from server ({}): admission webhook \"{WEBHOOK_NAME}\" denied the request: {}",
        str_at(response, "/response/status/reason"),
        str_at(response, "/response/status/message")
    )
}

#[test]
fn denials_read_well_in_kubectl() {
    let policy = Policy::default();
    let mut seen = 0;
    for case in cases().iter().filter(|c| c.verdict == Verdict::Denied) {
        seen += 1;
        let name = case.name();
        let (request, reviewed) = case.run();
        let response: Value = serde_json::from_slice(&reviewed.body).unwrap();
        let line = kubectl_line(&response);
        let prefix = format!(
            "Error from server (BadRequest): admission webhook \"{WEBHOOK_NAME}\" denied the request: PyTorchJob {}/{}: ",
            str_at(&request, "/request/namespace"),
            str_at(&request, "/request/name")
        );
        assert!(line.starts_with(&prefix), "{name}: {line}");
        let rest = &line[prefix.len()..];
        assert!(!line.contains('\n'), "{name}: not one line: {line}");
        assert!(
            !rest.contains(['{', '}', '"']),
            "{name}: JSON in the message: {line}"
        );
        let noun = if case.forbidden.len() == 1 {
            "this field cannot be updated: "
        } else {
            "these fields cannot be updated: "
        };
        assert!(rest.starts_with(noun), "{name}: {line}");
        assert!(
            line.ends_with(&format!("; {}", policy.updatable_summary())),
            "{name}: {line}"
        );
        let listed = case.forbidden.len().min(MAX_PATHS_IN_MESSAGE);
        let expected_list = case.forbidden[..listed].join(", ");
        assert!(
            rest[noun.len()..].starts_with(&expected_list),
            "{name}: paths not listed in order: {line}"
        );
        let more = case.forbidden.len() - listed;
        if more > 0 {
            assert!(
                rest.contains(&format!(", and {more} more; ")),
                "{name}: {line}"
            );
            assert!(
                !rest.contains(case.forbidden[MAX_PATHS_IN_MESSAGE]),
                "{name}: lists more than {MAX_PATHS_IN_MESSAGE} paths: {line}"
            );
        } else {
            assert!(!rest.contains(" more"), "{name}: {line}");
        }
    }
    assert!(seen >= 6, "expected denial cases, found {seen}");
}

#[test]
fn the_message_cap_leaves_every_path_in_the_causes() {
    let case = cases()
        .into_iter()
        .find(|c| c.input == "pytorchjob/many-paths.review.json")
        .unwrap();
    assert!(case.forbidden.len() > MAX_PATHS_IN_MESSAGE);
    let (_, reviewed) = case.run();
    let response: Value = serde_json::from_slice(&reviewed.body).unwrap();
    let message = str_at(&response, "/response/status/message");
    let shown = case
        .forbidden
        .iter()
        .filter(|path| message.contains(&format!("{path},")))
        .count();
    assert_eq!(shown, MAX_PATHS_IN_MESSAGE, "{message}");
    assert!(message.contains(&format!(
        "and {} more",
        case.forbidden.len() - MAX_PATHS_IN_MESSAGE
    )));
    let causes = response
        .pointer("/response/status/details/causes")
        .and_then(Value::as_array)
        .unwrap();
    assert_eq!(causes.len(), case.forbidden.len());
}

#[test]
fn the_request_version_is_echoed() {
    for (case, version) in cases()
        .iter()
        .filter_map(|c| c.wrap.map(|v| (c, v)))
        .filter(|(c, _)| c.input.contains("echo_update_accept"))
    {
        let (_, reviewed) = case.run();
        let response: Value = serde_json::from_slice(&reviewed.body).unwrap();
        assert_eq!(str_at(&response, "/apiVersion"), version);
    }
    let v1beta1 = cases()
        .into_iter()
        .find(|c| c.input == "pytorchjob/v1beta1-denied.review.json")
        .unwrap();
    let (request, reviewed) = v1beta1.run();
    assert_eq!(str_at(&request, "/apiVersion"), V1BETA1);
    let response: Value = serde_json::from_slice(&reviewed.body).unwrap();
    assert_eq!(str_at(&response, "/apiVersion"), V1BETA1);
    assert_eq!(response["response"]["allowed"], false);
}

#[test]
fn a_dry_run_gets_the_same_answer_as_a_real_update() {
    let case = cases()
        .into_iter()
        .find(|c| c.input == "pytorchjob/dry-run-denied.review.json")
        .unwrap();
    let (mut request, dry) = case.run();
    assert!(dry.decision.summary.dry_run);
    assert_eq!(dry.decision.verdict(), Verdict::Denied);
    request["request"]["dryRun"] = Value::Bool(false);
    request["request"]["options"]
        .as_object_mut()
        .unwrap()
        .remove("dryRun");
    let real =
        admission::review(&Policy::default(), &serde_json::to_vec(&request).unwrap()).unwrap();
    assert!(!real.decision.summary.dry_run);
    assert_eq!(real.body, dry.body);
}

/// A governed request that kube's types cannot read is denied with the cause, whether it is an
/// UPDATE of the main resource or of its `scale` subresource (which carries `autoscaling/v1
/// Scale`, so it is governed by its resource, not its kind): the four defects measured against
/// the earlier fail-open path.
#[test]
fn unreadable_governed_updates_are_denied_naming_the_cause_through_every_door() {
    /// What is wrong, how to break a review that way, and what the denial must say.
    type Defect = (&'static str, fn(&mut Value), &'static str);
    let defects: [Defect; 4] = [
        (
            "dryRun is not a boolean",
            |r| r["request"]["dryRun"] = "yes".into(),
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "userInfo.username is not a string",
            |r| r["request"]["userInfo"]["username"] = 5.into(),
            "invalid type: integer `5`, expected a string",
        ),
        (
            "resource has no version",
            |r| {
                r["request"]["resource"]
                    .as_object_mut()
                    .unwrap()
                    .remove("version");
            },
            "missing field `version`",
        ),
        (
            "operation PATCH",
            |r| r["request"]["operation"] = "PATCH".into(),
            "unknown variant `PATCH`",
        ),
    ];
    for fixture in [
        "pytorchjob/scale-subresource.review.json",
        "pytorchjob/worker-replicas.review.json",
    ] {
        let original: Value =
            serde_json::from_slice(&std::fs::read(fixtures().join(fixture)).unwrap()).unwrap();
        for (what, break_it, cause) in defects {
            let mut review = original.clone();
            break_it(&mut review);
            let reviewed =
                admission::review(&Policy::default(), &serde_json::to_vec(&review).unwrap())
                    .unwrap_or_else(|e| panic!("{fixture}, {what}: no answer: {e}"));
            let decision = &reviewed.decision;
            assert_eq!(decision.verdict(), Verdict::Denied, "{fixture}, {what}");
            assert_eq!(decision.reason(), Reason::Undecidable, "{fixture}, {what}");
            let response: Value = serde_json::from_slice(&reviewed.body).unwrap();
            let status = &response["response"]["status"];
            assert_eq!(status["code"], 400, "{fixture}, {what}");
            let message = status["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!(
                    "PyTorchJob {}/{}: the admission request cannot be read: ",
                    review["request"]["namespace"].as_str().unwrap(),
                    review["request"]["name"].as_str().unwrap()
                )),
                "{fixture}, {what}: {message}"
            );
            assert!(message.contains(cause), "{fixture}, {what}: {message}");
            assert_eq!(
                response["response"]["auditAnnotations"]["reason"], "undecidable",
                "{fixture}, {what}"
            );
        }
    }
}
