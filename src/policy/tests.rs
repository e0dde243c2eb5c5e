//! The decision table: every rule of the default policy, each edge named.

use super::*;
use serde_json::{Value, json};

/// Judge an update the way production does — both objects as JSON text, read one level deep,
/// through the raw diff — and check the answer against the whole-tree oracle.
fn evaluate_with(
    policy: &Policy,
    old: &Value,
    new: &Value,
    requester: &Requester<'_>,
) -> Evaluation {
    let (old_text, new_text) = (old.to_string(), new.to_string());
    let old_raw = RawObject::parse(&old_text).unwrap();
    let new_raw = RawObject::parse(&new_text).unwrap();
    let evaluation = policy.evaluate(&old_raw, &new_raw, requester).unwrap();
    assert_eq!(
        evaluation,
        oracle::evaluate(policy, old, new, requester),
        "the oracle agrees"
    );
    evaluation
}

/// [`evaluate_with`] the default policy, by someone not exempt.
fn evaluate(old: &Value, new: &Value) -> Evaluation {
    evaluate_with(&Policy::default(), old, new, &Requester::default())
}

/// A PyTorchJob in the training-operator (runPolicy) layout.
fn job() -> Value {
    json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": "pytorch-simple",
            "namespace": "kubeflow",
            "uid": "5b6c2a4e-0000-4000-8000-000000000001",
            "resourceVersion": "100",
            "generation": 1,
            "labels": {"app": "train"},
            "annotations": {"team.example.com/owner": "ml"}
        },
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3},
            "pytorchReplicaSpecs": {
                "Master": {
                    "replicas": 1,
                    "restartPolicy": "OnFailure",
                    "template": {"spec": {"containers": [
                        {"name": "pytorch", "image": "docker.io/kubeflowkatib/pytorch-mnist:v1beta1-45c5727",
                         "command": ["python3", "/opt/pytorch-mnist/mnist.py", "--epochs=1"]}
                    ]}}
                },
                "Worker": {
                    "replicas": 2,
                    "restartPolicy": "OnFailure",
                    "template": {"spec": {"containers": [
                        {"name": "pytorch", "image": "docker.io/kubeflowkatib/pytorch-mnist:v1beta1-45c5727"},
                        {"name": "sidecar", "image": "busybox", "args": ["sleep", "inf"]}
                    ]}}
                }
            }
        },
        "status": {"conditions": [{"type": "Created", "status": "True"}]}
    })
}

/// Apply `edit` to a copy of the job.
fn edited(edit: impl FnOnce(&mut Value)) -> Value {
    let mut new = job();
    edit(&mut new);
    new
}

fn forbidden_of(old: &Value, new: &Value) -> Vec<String> {
    let evaluation = evaluate(old, new);
    assert_eq!(evaluation.allowed(), evaluation.forbidden.is_empty());
    evaluation
        .forbidden
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn ptr<'a>(v: &'a mut Value, pointer: &str) -> &'a mut Value {
    v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} exists in the test job"))
}

#[test]
fn decision_table() {
    type Edit = fn(&mut Value);
    let table: Vec<(&str, Edit, &[&str])> = vec![
        ("no change at all", |_| {}, &[]),
        (
            "label value changed",
            |j| *ptr(j, "/metadata/labels/app") = json!("eval"),
            &[],
        ),
        (
            "label added with a dotted, slashed key",
            |j| {
                ptr(j, "/metadata/labels")["app.kubernetes.io/name"] = json!("x");
            },
            &[],
        ),
        (
            "all labels removed (merge patch null)",
            |j| *ptr(j, "/metadata/labels") = Value::Null,
            &[],
        ),
        (
            "annotation removed",
            |j| {
                ptr(j, "/metadata/annotations")
                    .as_object_mut()
                    .unwrap()
                    .clear();
            },
            &[],
        ),
        (
            "flat spec.activeDeadlineSeconds added",
            |j| ptr(j, "/spec")["activeDeadlineSeconds"] = json!(600),
            &[],
        ),
        (
            "flat spec.ttlSecondsAfterFinished added",
            |j| ptr(j, "/spec")["ttlSecondsAfterFinished"] = json!(60),
            &[],
        ),
        (
            "flat spec.cleanPodPolicy added",
            |j| ptr(j, "/spec")["cleanPodPolicy"] = json!("All"),
            &[],
        ),
        (
            "runPolicy.cleanPodPolicy changed",
            |j| *ptr(j, "/spec/runPolicy/cleanPodPolicy") = json!("All"),
            &[],
        ),
        (
            "runPolicy.activeDeadlineSeconds and ttl added",
            |j| {
                ptr(j, "/spec/runPolicy")["activeDeadlineSeconds"] = json!(3600);
                ptr(j, "/spec/runPolicy")["ttlSecondsAfterFinished"] = json!(0);
            },
            &[],
        ),
        (
            "runPolicy.backoffLimit changed",
            |j| *ptr(j, "/spec/runPolicy/backoffLimit") = json!(5),
            &["spec.runPolicy.backoffLimit"],
        ),
        (
            "runPolicy.suspend added (what Kueue patches)",
            |j| ptr(j, "/spec/runPolicy")["suspend"] = json!(true),
            &["spec.runPolicy.suspend"],
        ),
        (
            "runPolicy removed as a whole: its frozen leaf is named",
            |j| {
                ptr(j, "/spec").as_object_mut().unwrap().remove("runPolicy");
            },
            &["spec.runPolicy.backoffLimit"],
        ),
        (
            "Worker replicas scaled",
            |j| *ptr(j, "/spec/pytorchReplicaSpecs/Worker/replicas") = json!(4),
            &["spec.pytorchReplicaSpecs.Worker.replicas"],
        ),
        (
            "image changed",
            |j| {
                *ptr(
                    j,
                    "/spec/pytorchReplicaSpecs/Master/template/spec/containers/0/image",
                ) = json!("evil:latest");
            },
            &["spec.pytorchReplicaSpecs.Master.template.spec.containers[0].image"],
        ),
        (
            "command element removed: named at its own index",
            |j| {
                ptr(
                    j,
                    "/spec/pytorchReplicaSpecs/Master/template/spec/containers/0/command",
                )
                .as_array_mut()
                .unwrap()
                .truncate(1);
            },
            &[
                "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].command[1]",
                "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].command[2]",
            ],
        ),
        (
            "sidecar container removed: every leaf at index 1",
            |j| {
                ptr(
                    j,
                    "/spec/pytorchReplicaSpecs/Worker/template/spec/containers",
                )
                .as_array_mut()
                .unwrap()
                .pop();
            },
            &[
                "spec.pytorchReplicaSpecs.Worker.template.spec.containers[1].args[0]",
                "spec.pytorchReplicaSpecs.Worker.template.spec.containers[1].args[1]",
                "spec.pytorchReplicaSpecs.Worker.template.spec.containers[1].image",
                "spec.pytorchReplicaSpecs.Worker.template.spec.containers[1].name",
            ],
        ),
        (
            "resources added to a container",
            |j| {
                ptr(
                    j,
                    "/spec/pytorchReplicaSpecs/Master/template/spec/containers/0",
                )["resources"] = json!({"limits": {"nvidia.com/gpu": 1}});
            },
            &[
                r#"spec.pytorchReplicaSpecs.Master.template.spec.containers[0].resources.limits["nvidia.com/gpu"]"#,
            ],
        ),
        (
            "new replica type added",
            |j| {
                ptr(j, "/spec/pytorchReplicaSpecs")["Extra"] = json!({"replicas": 1});
            },
            &["spec.pytorchReplicaSpecs.Extra.replicas"],
        ),
        (
            "status changed: not compared",
            |j| {
                *ptr(j, "/status") =
                    json!({"conditions": [], "replicaStatuses": {"Worker": {"active": 2}}})
            },
            &[],
        ),
        (
            "server-owned metadata changed: not compared",
            |j| {
                let meta = ptr(j, "/metadata");
                meta["resourceVersion"] = json!("101");
                meta["generation"] = json!(2);
                meta["managedFields"] =
                    json!([{"manager": "kubectl-patch", "operation": "Update"}]);
                meta["finalizers"] = json!(["foregroundDeletion"]);
                meta["ownerReferences"] =
                    json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u"}]);
                meta["selfLink"] =
                    json!("/apis/kubeflow.org/v1/namespaces/kubeflow/pytorchjobs/pytorch-simple");
                meta["deletionGracePeriodSeconds"] = json!(0);
            },
            &[],
        ),
        (
            "deletionTimestamp set by the new object, spec unchanged",
            |j| {
                ptr(j, "/metadata")["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
            },
            &[],
        ),
        (
            "deletionTimestamp set by the new object does not excuse a spec change",
            |j| {
                ptr(j, "/metadata")["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
                *ptr(j, "/spec/pytorchReplicaSpecs/Worker/replicas") = json!(3);
            },
            &["spec.pytorchReplicaSpecs.Worker.replicas"],
        ),
        (
            "field set to null where it was absent",
            |j| ptr(j, "/spec")["elasticPolicy"] = Value::Null,
            &[],
        ),
        (
            // A pointer-to-struct the operator tests against nil: present now, even empty.
            "empty elasticPolicy added where none was",
            |j| ptr(j, "/spec")["elasticPolicy"] = json!({}),
            &["spec.elasticPolicy"],
        ),
        (
            "a replica type added as an empty object",
            |j| ptr(j, "/spec/pytorchReplicaSpecs")["Launcher"] = json!({}),
            &["spec.pytorchReplicaSpecs.Launcher"],
        ),
        (
            "an empty probe added to a container",
            |j| {
                ptr(
                    j,
                    "/spec/pytorchReplicaSpecs/Worker/template/spec/containers/0",
                )["livenessProbe"] = json!({})
            },
            &["spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].livenessProbe"],
        ),
        (
            // Typed-client noise where the Go type is a value struct: no change.
            "empty resources and a template's null creationTimestamp written back",
            |j| {
                ptr(
                    j,
                    "/spec/pytorchReplicaSpecs/Worker/template/spec/containers/0",
                )["resources"] = json!({});
                ptr(j, "/spec/pytorchReplicaSpecs/Worker/template")["metadata"] =
                    json!({"creationTimestamp": null});
            },
            &[],
        ),
        (
            "an empty list added where none was",
            |j| ptr(j, "/spec/pytorchReplicaSpecs/Worker/template/spec")["tolerations"] = json!([]),
            &[],
        ),
        (
            "number reformatted: 2 -> 2.0",
            |j| *ptr(j, "/spec/pytorchReplicaSpecs/Worker/replicas") = json!(2.0),
            &[],
        ),
        (
            "metadata.name changed",
            |j| *ptr(j, "/metadata/name") = json!("other"),
            &["metadata.name"],
        ),
        (
            "label map replaced by a string",
            |j| *ptr(j, "/metadata/labels") = json!("x"),
            &[],
        ),
        (
            "spec replaced by a scalar",
            |j| *ptr(j, "/spec/runPolicy") = json!("x"),
            &["spec.runPolicy", "spec.runPolicy.backoffLimit"],
        ),
        (
            "allowed and frozen changes together: only frozen ones named, sorted",
            |j| {
                *ptr(j, "/metadata/labels/app") = json!("eval");
                *ptr(j, "/spec/pytorchReplicaSpecs/Worker/replicas") = json!(9);
                *ptr(j, "/spec/pytorchReplicaSpecs/Master/replicas") = json!(2);
                *ptr(j, "/spec/runPolicy/backoffLimit") = json!(0);
            },
            &[
                "spec.pytorchReplicaSpecs.Master.replicas",
                "spec.pytorchReplicaSpecs.Worker.replicas",
                "spec.runPolicy.backoffLimit",
            ],
        ),
        (
            "a key next to an updatable one is not updatable",
            |j| {
                ptr(j, "/metadata")["labelsExtra"] = json!({"a": "b"});
                ptr(j, "/spec")["cleanPodPolicyOverride"] = json!("All");
            },
            &["metadata.labelsExtra.a", "spec.cleanPodPolicyOverride"],
        ),
    ];
    for (name, edit, expected) in table {
        let old = job();
        let new = edited(edit);
        assert_eq!(forbidden_of(&old, &new), expected, "case: {name}");
    }
}

#[test]
fn a_new_run_policy_is_examined_inside() {
    let old = edited(|j| {
        ptr(j, "/spec").as_object_mut().unwrap().remove("runPolicy");
    });
    let only_clean = edited(|j| *ptr(j, "/spec/runPolicy") = json!({"cleanPodPolicy": "All"}));
    assert!(evaluate(&old, &only_clean).allowed());
    let with_backoff = edited(|j| {
        *ptr(j, "/spec/runPolicy") = json!({"cleanPodPolicy": "All", "backoffLimit": 1})
    });
    assert_eq!(
        forbidden_of(&old, &with_backoff),
        ["spec.runPolicy.backoffLimit"]
    );
}

#[test]
fn the_defaulted_suspend_of_a_new_run_policy_is_not_a_change() {
    // A job created without runPolicy; the user adds a TTL, the API server defaults suspend.
    let old = edited(|j| {
        ptr(j, "/spec").as_object_mut().unwrap().remove("runPolicy");
    });
    let new = edited(|j| {
        *ptr(j, "/spec/runPolicy") = json!({"ttlSecondsAfterFinished": 600, "suspend": false});
    });
    assert!(evaluate(&old, &new).allowed());
    // Suspending it is still a frozen change (what Kueue does).
    let suspended = edited(|j| {
        *ptr(j, "/spec/runPolicy") = json!({"ttlSecondsAfterFinished": 600, "suspend": true});
    });
    assert_eq!(forbidden_of(&old, &suspended), ["spec.runPolicy.suspend"]);
}

#[test]
fn a_job_being_deleted_is_never_stuck() {
    let old = edited(|j| ptr(j, "/metadata")["deletionTimestamp"] = json!("2024-01-01T00:00:00Z"));
    let mut new = old.clone();
    *ptr(&mut new, "/spec/pytorchReplicaSpecs/Worker/replicas") = json!(0);
    ptr(&mut new, "/metadata")["finalizers"] = json!([]);
    let evaluation = evaluate(&old, &new);
    assert!(evaluation.allowed());
    assert!(evaluation.being_deleted);
    assert_eq!(
        evaluation.changed.len(),
        1,
        "the change is still reported: {evaluation:?}"
    );
}

#[test]
fn a_job_being_deleted_is_seen_under_an_escaped_key() {
    // The key as written matters not; its decoded name does (the API server never escapes a
    // letter, but a client's body may).
    let old = edited(|j| ptr(j, "/metadata")["deletionTimestamp"] = json!("2024-01-01T00:00:00Z"));
    let mut new = old.clone();
    *ptr(&mut new, "/spec/pytorchReplicaSpecs/Worker/replicas") = json!(0);
    let old_text =
        old.to_string()
            .replacen("\"deletionTimestamp\"", "\"deletion\\u0054imestamp\"", 1);
    assert!(old_text.contains("deletion\\u0054imestamp"));
    let new_text = new.to_string();
    let (old_raw, new_raw) = (
        RawObject::parse(&old_text).unwrap(),
        RawObject::parse(&new_text).unwrap(),
    );
    let evaluation = Policy::default()
        .evaluate(&old_raw, &new_raw, &Requester::default())
        .unwrap();
    assert!(
        evaluation.being_deleted && evaluation.allowed(),
        "{evaluation:?}"
    );
}

#[test]
fn changed_lists_updatable_leaves_too() {
    let new = edited(|j| {
        *ptr(j, "/metadata/labels/app") = json!("eval");
        *ptr(j, "/spec/runPolicy/backoffLimit") = json!(0);
    });
    let evaluation = evaluate(&job(), &new);
    let changed: Vec<String> = evaluation.changed.iter().map(ToString::to_string).collect();
    assert_eq!(
        changed,
        ["metadata.labels.app", "spec.runPolicy.backoffLimit"]
    );
}

#[test]
fn governs_pytorchjobs_of_kubeflow_org_only() {
    let policy = Policy::default();
    assert!(policy.governed_kind("kubeflow.org", "PyTorchJob").is_some());
    assert!(policy.governed_kind("kubeflow.org", "TFJob").is_none());
    assert!(policy.governed_kind("example.com", "PyTorchJob").is_none());
    assert!(policy.governed_kind("apps", "Deployment").is_none());
}

#[test]
fn denial_message_names_paths_and_what_may_change() {
    let policy = Policy::default();
    let one: Vec<FieldPath> = vec!["spec.pytorchReplicaSpecs.Worker.replicas".parse().unwrap()];
    assert_eq!(
        policy.denial_message("PyTorchJob kube-test/pytorch-test", &one),
        "PyTorchJob kube-test/pytorch-test: this field cannot be updated: \
         spec.pytorchReplicaSpecs.Worker.replicas; only metadata.labels, metadata.annotations, \
         spec.activeDeadlineSeconds, spec.ttlSecondsAfterFinished and spec.cleanPodPolicy \
         (or their spec.runPolicy equivalents) may change"
    );
}

#[test]
fn denial_message_stays_short_with_hundreds_of_paths() {
    let policy = Policy::default();
    let many: Vec<FieldPath> = (0..500)
        .map(|i| FieldPath::root().key("spec").key("args").index(i))
        .collect();
    let message = policy.denial_message("PyTorchJob ns/job", &many);
    assert!(message.contains("spec.args[0], spec.args[1]"), "{message}");
    assert!(
        message.contains(&format!(
            "spec.args[{}], and 488 more;",
            MAX_PATHS_IN_MESSAGE - 1
        )),
        "{message}"
    );
    assert!(
        !message.contains(&format!("spec.args[{MAX_PATHS_IN_MESSAGE}]")),
        "{message}"
    );
    assert!(message.len() < 600, "{} chars", message.len());
}
