//! Cluster policy: policy files and presets, trusted controllers (Kueue, the HPA), the scale
//! subresource, other kinds, audit annotations and warnings, reload, record and replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use pytorchjob_guard::admission;
use pytorchjob_guard::policy::{Mode, Policy, file};
use pytorchjob_guard::record::{self, RecordDir, RecordSink};
use pytorchjob_guard::reload::{Causes, PolicyLoadError, PolicyStore, Reload};
use serde_json::{Value, json};

const KUEUE: &str = "system:serviceaccount:kueue-system:kueue-controller-manager";
const HPA: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
const ALICE: &str = "alice@example.com";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn preset(name: &str) -> Policy {
    let text = std::fs::read_to_string(repo(&format!("policies/{name}.yaml"))).unwrap();
    file::parse(&text).unwrap_or_else(|e| panic!("policies/{name}.yaml: {e}"))
}

/// Kueue's sample PyTorchJob as the API server stores it once created through Kueue: Kueue's
/// webhook suspended it (`spec.runPolicy.suspend: true`).
fn suspended_kueue_job() -> Value {
    let text = std::fs::read_to_string(repo(
        "tests/fixtures/pytorchjob/source/kueue_sample-pytorchjob.yaml",
    ))
    .unwrap();
    let mut job: Value = serde_yaml_ng::from_str(&text).unwrap();
    job["metadata"]["uid"] = "7c1e5f0a-3b5d-4e8f-9a6b-1c2d3e4f5a6b".into();
    job["metadata"]["resourceVersion"] = "1000".into();
    job["metadata"]["generation"] = 1.into();
    job["spec"]["runPolicy"] = json!({"suspend": true});
    job
}

/// What Kueue's `RunWithPodSetsInfo` does when it admits the job to a flavor: unsuspend and
/// merge the flavor's node selector, tolerations, labels and annotations into every replica's
/// pod template (kubernetes-sigs/kueue kubeflowjob controller).
fn kueue_admits(job: &Value) -> Value {
    let mut admitted = job.clone();
    admitted["spec"]["runPolicy"]["suspend"] = false.into();
    for replica in ["Master", "Worker"] {
        let template = &mut admitted["spec"]["pytorchReplicaSpecs"][replica]["template"];
        template["metadata"] = json!({
            "labels": {"kueue.x-k8s.io/podset": replica.to_lowercase()},
            "annotations": {"kueue.x-k8s.io/workload": "pytorchjob-pytorch-simple-3b4c5"}
        });
        template["spec"]["nodeSelector"] = json!({"cloud.provider.com/accelerator": "nvidia-t4"});
        template["spec"]["tolerations"] = json!([
            {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ]);
    }
    admitted["metadata"]["resourceVersion"] = "1001".into();
    admitted["metadata"]["generation"] = 2.into();
    admitted
}

/// What Kueue does on eviction (`Suspend` + `RestorePodSetsInfo`): suspend again and restore
/// the pod templates as they were before admission.
fn kueue_evicts() -> Value {
    let mut evicted = suspended_kueue_job();
    evicted["metadata"]["resourceVersion"] = "1002".into();
    evicted["metadata"]["generation"] = 3.into();
    evicted
}

fn update_review(uid: &str, user: &str, old: &Value, new: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "kubeflow.org", "version": "v1", "kind": new["kind"]},
            "resource": {"group": "kubeflow.org", "version": "v1", "resource": format!("{}s", new["kind"].as_str().unwrap().to_lowercase())},
            "name": new["metadata"]["name"],
            "namespace": new["metadata"]["namespace"],
            "operation": "UPDATE",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": false,
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .unwrap()
}

/// A `pytorchjobs/scale` UPDATE as the API server sends it (autoscaling/v1 Scale objects).
fn scale_review(uid: &str, user: &str, from: u64, to: u64) -> Vec<u8> {
    let scale = |replicas: u64| {
        json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "elastic", "namespace": "ml", "uid": "0f0e0d0c-0b0a-4909-8807-060504030201",
                         "resourceVersion": "77", "creationTimestamp": "2025-01-21T10:00:00Z"},
            "spec": {"replicas": replicas},
            "status": {"replicas": from, "selector": "training.kubeflow.org/job-name=elastic"}
        })
    };
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "resource": {"group": "kubeflow.org", "version": "v1", "resource": "pytorchjobs"},
            "subResource": "scale",
            "requestKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "requestResource": {"group": "kubeflow.org", "version": "v1", "resource": "pytorchjobs"},
            "requestSubResource": "scale",
            "name": "elastic",
            "namespace": "ml",
            "operation": "UPDATE",
            "userInfo": {"username": user},
            "object": scale(to),
            "oldObject": scale(from),
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .unwrap()
}

fn answer(policy: &Policy, review: &[u8]) -> Value {
    let reviewed = admission::review(policy, review).unwrap();
    serde_json::from_slice::<Value>(&reviewed.body).unwrap()["response"].clone()
}

fn denied_fields(response: &Value) -> Vec<String> {
    response["status"]["details"]["causes"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_default_preset_is_the_builtin_rule() {
    let file = preset("default");
    let builtin = Policy::default();
    assert_eq!(file.kinds(), builtin.kinds());
    assert_eq!(file.updatable(), builtin.updatable());
    assert_eq!(file.not_compared(), builtin.not_compared());
    assert_eq!(file.defaults(), builtin.defaults());
    assert!(file.exemptions().is_empty());
    assert_eq!(file.updatable_summary(), builtin.updatable_summary());
}

/// hpa.yaml is the built-in rule plus one exemption; kueue.yaml is training-operator.yaml (every
/// kind Kueue integrates with) plus one exemption. tests/crds.rs also keeps kueue.yaml's text
/// equal to training-operator.yaml's above `exemptions:`.
#[test]
fn presets_are_a_base_rule_plus_one_exemption() {
    for (name, base, identity) in [
        (
            "kueue",
            preset("training-operator"),
            "kueue-system:kueue-controller-manager",
        ),
        (
            "hpa",
            Policy::default(),
            "kube-system:horizontal-pod-autoscaler",
        ),
    ] {
        let policy = preset(name);
        assert!(base.exemptions().is_empty(), "{name}: its base has none");
        assert_eq!(policy.kinds(), base.kinds(), "{name}");
        assert_eq!(policy.updatable(), base.updatable(), "{name}");
        assert_eq!(policy.not_compared(), base.not_compared(), "{name}");
        assert_eq!(policy.defaults(), base.defaults(), "{name}");
        assert_eq!(policy.exemptions().len(), 1, "{name}");
        let exemption = &policy.exemptions()[0];
        assert_eq!(exemption.service_accounts, [identity], "{name}");
        assert!(
            exemption.paths.is_some(),
            "{name}: presets name exactly the paths"
        );
    }
}

#[test]
fn kueue_admit_and_evict_are_allowed_by_the_preset_and_denied_without_it() {
    let suspended = suspended_kueue_job();
    let admitted = kueue_admits(&suspended);
    let evicted = kueue_evicts();
    let kueue = preset("kueue");
    for (step, old, new) in [
        ("admit", &suspended, &admitted),
        ("evict", &admitted, &evicted),
    ] {
        let review = update_review(step, KUEUE, old, new);

        let with_preset = answer(&kueue, &review);
        assert_eq!(with_preset["allowed"], true, "{step}: {with_preset}");
        let warning = with_preset["warnings"][0].as_str().unwrap();
        assert!(
            warning
                .starts_with("pytorchjob-guard: exemption kueue allowed frozen fields to change: "),
            "{warning}"
        );
        assert!(warning.chars().count() <= 256);
        assert_eq!(with_preset["auditAnnotations"]["exemptions"], "kueue");
        assert!(
            with_preset["auditAnnotations"]["exempted-fields"]
                .as_str()
                .unwrap()
                .contains("spec.runPolicy.suspend")
        );

        let builtin = answer(&Policy::default(), &review);
        assert_eq!(builtin["allowed"], false, "{step}");
        let denied = denied_fields(&builtin);
        assert!(
            denied.contains(&"spec.runPolicy.suspend".to_owned()),
            "{step}: {denied:?}"
        );
        assert!(
            denied.contains(&r#"spec.pytorchReplicaSpecs.Worker.template.spec.nodeSelector["cloud.provider.com/accelerator"]"#.to_owned()),
            "{step}: {denied:?}"
        );

        // The same patch from a person is denied even under the preset.
        let by_alice = answer(&kueue, &update_review(step, ALICE, old, new));
        assert_eq!(by_alice["allowed"], false, "{step}");
        assert_eq!(denied_fields(&by_alice), denied, "{step}");
        assert!(by_alice.get("warnings").is_none());
    }
}

#[test]
fn kueue_may_not_change_anything_beyond_its_paths() {
    let suspended = suspended_kueue_job();
    let mut admitted = kueue_admits(&suspended);
    admitted["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 4.into();
    admitted["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["image"] =
        "evil:latest".into();
    let response = answer(
        &preset("kueue"),
        &update_review("more", KUEUE, &suspended, &admitted),
    );
    assert_eq!(response["allowed"], false);
    assert_eq!(
        denied_fields(&response),
        [
            "spec.pytorchReplicaSpecs.Worker.replicas",
            "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].image"
        ]
    );
}

#[test]
fn an_exemption_without_paths_trusts_the_identity_with_any_field() {
    let text = std::fs::read_to_string(repo("policies/default.yaml"))
        .unwrap()
        .replace(
            "exemptions: []",
            "exemptions:\n  - name: break-glass\n    groups: [platform-admins]\n",
        );
    let policy = file::parse(&text).unwrap();
    let old = suspended_kueue_job();
    let mut new = old.clone();
    new["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 8.into();
    let mut review: Value =
        serde_json::from_slice(&update_review("bg", ALICE, &old, &new)).unwrap();
    assert_eq!(
        answer(&policy, &serde_json::to_vec(&review).unwrap())["allowed"],
        false,
        "not in the group"
    );
    review["request"]["userInfo"]["groups"] = json!(["system:authenticated", "platform-admins"]);
    let response = answer(&policy, &serde_json::to_vec(&review).unwrap());
    assert_eq!(response["allowed"], true);
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("break-glass")
    );
}

#[test]
fn scale_writes_are_judged_as_worker_replicas() {
    // Without an exemption, kubectl scale (a person) and the HPA are both denied.
    let builtin = Policy::default();
    let by_alice = answer(&builtin, &scale_review("s1", ALICE, 2, 3));
    assert_eq!(by_alice["allowed"], false);
    assert_eq!(
        denied_fields(&by_alice),
        ["spec.pytorchReplicaSpecs.Worker.replicas"]
    );
    assert_eq!(by_alice["status"]["details"]["kind"], "PyTorchJob");
    let message = by_alice["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("PyTorchJob ml/elastic: this field cannot be updated: spec.pytorchReplicaSpecs.Worker.replicas"), "{message}");
    assert_eq!(by_alice["auditAnnotations"]["reason"], "scale");

    // The HPA preset lets the HPA, and only the HPA, scale.
    let hpa = preset("hpa");
    let by_hpa = answer(&hpa, &scale_review("s2", HPA, 2, 3));
    assert_eq!(by_hpa["allowed"], true);
    assert!(
        by_hpa["warnings"][0]
            .as_str()
            .unwrap()
            .contains("horizontal-pod-autoscaler")
    );
    assert_eq!(
        answer(&hpa, &scale_review("s3", ALICE, 2, 3))["allowed"],
        false
    );
    // A scale write that does not change replicas changes nothing.
    let same = answer(&builtin, &scale_review("s4", ALICE, 3, 3));
    assert_eq!(same["allowed"], true);
    assert!(same.get("warnings").is_none());
}

#[test]
fn an_unreadable_scale_envelope_is_governed_by_any_field_that_names_the_resource() {
    let builtin = Policy::default();
    let variant = |edit: &dyn Fn(&mut Value)| {
        let mut review: Value = serde_json::from_slice(&scale_review("v", ALICE, 2, 3)).unwrap();
        edit(&mut review["request"]);
        answer(&builtin, &serde_json::to_vec(&review).unwrap())
    };
    type Edit<'a> = &'a dyn Fn(&mut Value);
    let cases: [(&str, Edit<'_>); 3] = [
        // `resource` names only its group: `requestResource` still names pytorchjobs.
        ("resource is only its group", &|r| {
            r["resource"] = json!({"group": "kubeflow.org"})
        }),
        // Neither says pytorchjobs, but the group has a governed kind with a scale path.
        ("resource and requestResource are only their group", &|r| {
            r["resource"] = json!({"group": "kubeflow.org"});
            r["requestResource"] = json!({"group": "kubeflow.org"});
        }),
        // `resource` is unreadable; `requestResource` names the resource.
        ("resource is a string", &|r| {
            r["resource"] = json!("pytorchjobs")
        }),
    ];
    for (name, edit) in cases {
        let response = variant(edit);
        assert_eq!(response["allowed"], false, "{name}: {response}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("PyTorchJob ml/elastic: the admission request cannot be read: "),
            "{name}: {message}"
        );
        assert_eq!(response["auditAnnotations"]["verdict"], "denied", "{name}");
    }
    // A scale request of a group nothing governs is still none of the guard's business.
    let other = variant(&|r| {
        r["resource"] = json!({"group": "example.com"});
        r["requestResource"] = json!({"group": "example.com"});
    });
    assert_eq!(other["allowed"], true, "{other}");
}

#[test]
fn every_decision_about_a_governed_kind_carries_audit_annotations() {
    let old = suspended_kueue_job();
    let mut new = old.clone();
    new["metadata"]["labels"]["team"] = "vision".into();
    let allowed = answer(&Policy::default(), &update_review("a", ALICE, &old, &new));
    assert_eq!(allowed["auditAnnotations"]["verdict"], "allowed");
    assert_eq!(allowed["auditAnnotations"]["reason"], "evaluated");
    assert_eq!(
        allowed["auditAnnotations"]["changed-fields"],
        "metadata.labels.team"
    );
    assert!(allowed["auditAnnotations"].get("denied-fields").is_none());
    new["spec"]["runPolicy"]["backoffLimit"] = 2.into();
    let denied = answer(&Policy::default(), &update_review("d", ALICE, &old, &new));
    assert_eq!(denied["auditAnnotations"]["verdict"], "denied");
    assert_eq!(
        denied["auditAnnotations"]["denied-fields"],
        "spec.runPolicy.backoffLimit"
    );
    assert_eq!(
        denied["auditAnnotations"]["changed-fields"],
        "metadata.labels.team, spec.runPolicy.backoffLimit"
    );
    // Other kinds are none of the guard's business: no annotations.
    let mut pod: Value = serde_json::from_slice(&update_review("p", ALICE, &old, &new)).unwrap();
    pod["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    let other = answer(&Policy::default(), &serde_json::to_vec(&pod).unwrap());
    assert!(other.get("auditAnnotations").is_none(), "{other}");
}

#[test]
fn a_changed_policy_file_is_reloaded_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::copy(repo("policies/default.yaml"), &path).unwrap();
    let store = PolicyStore::from_file(&path).unwrap();
    assert!(store.current().exemptions().is_empty());
    assert!(matches!(store.reload(), Reload::Unchanged));

    std::fs::copy(repo("policies/kueue.yaml"), &path).unwrap();
    assert!(matches!(store.reload(), Reload::Reloaded));
    assert_eq!(store.current().exemptions()[0].name, "kueue");

    std::fs::write(&path, "apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1\nkind: Policy\nkinds: []\nupdatable: []\n").unwrap();
    match store.reload() {
        Reload::Rejected(error) => {
            let text = Causes(&error).to_string();
            assert!(matches!(error, PolicyLoadError::Invalid { .. }), "{text}");
            assert!(text.contains("must not be empty"), "{text}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        store.current().exemptions()[0].name,
        "kueue",
        "the last good policy stays"
    );
}

#[test]
fn a_changed_mode_takes_effect_on_reload_and_a_bad_one_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    let default = std::fs::read_to_string(repo("policies/default.yaml")).unwrap();
    std::fs::write(&path, &default).unwrap();
    let store = PolicyStore::from_file(&path).unwrap();
    assert_eq!(store.current().mode(), Mode::Enforce, "enforce by default");

    let with_mode =
        |mode: &str| default.replace("kind: Policy\n", &format!("kind: Policy\nmode: {mode}\n"));
    std::fs::write(&path, with_mode("warn")).unwrap();
    assert!(matches!(store.reload(), Reload::Reloaded));
    assert_eq!(store.current().mode(), Mode::Warn);

    std::fs::write(&path, with_mode("block")).unwrap();
    match store.reload() {
        Reload::Rejected(error) => {
            let text = Causes(&error).to_string();
            assert!(
                text.ends_with(
                    "mode at line 6 column 7: unknown mode \"block\": expected one of enforce, warn, audit"
                ),
                "{text}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        store.current().mode(),
        Mode::Warn,
        "the last good mode stays"
    );

    std::fs::write(&path, with_mode("audit")).unwrap();
    assert!(matches!(store.reload(), Reload::Reloaded));
    assert_eq!(store.current().mode(), Mode::Audit);
}

/// `modeOverrides` and `namespaceLabel` are reloaded with the rest of the policy; a broken edit
/// of them is rejected with its line and keeps the last good floor.
#[test]
fn mode_overrides_and_the_label_floor_take_effect_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    let default = std::fs::read_to_string(repo("policies/default.yaml")).unwrap();
    std::fs::write(&path, &default).unwrap();
    let store = PolicyStore::from_file(&path).unwrap();
    let effective = |namespace: &str, label: Option<Mode>| {
        store.current().effective_mode(Some(namespace), label)
    };
    assert_eq!(effective("team-a", Some(Mode::Audit)).mode(), Mode::Enforce);
    assert!(
        effective("team-a", Some(Mode::Audit))
            .refused_lowering()
            .is_some()
    );

    let rollout = "modeOverrides:\n  - mode: audit\n    namespaces: [\"team-*\"]\nnamespaceLabel:\n  mayLowerTo: [warn]\n";
    std::fs::write(&path, format!("{default}{rollout}")).unwrap();
    assert!(matches!(store.reload(), Reload::Reloaded));
    assert_eq!(effective("team-a", None).mode(), Mode::Audit);
    assert_eq!(effective("prod", Some(Mode::Warn)).mode(), Mode::Warn);
    assert_eq!(effective("prod", Some(Mode::Audit)).mode(), Mode::Enforce);

    let broken = rollout.replace("team-*", "Team-*");
    std::fs::write(&path, format!("{default}{broken}")).unwrap();
    match store.reload() {
        Reload::Rejected(error) => {
            let text = Causes(&error).to_string();
            assert!(
                text.contains("modeOverrides[0].namespaces[0] at line ")
                    && text.ends_with(
                        "invalid namespace name or glob \"Team-*\": namespace names are lowercase"
                    ),
                "{text}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        effective("team-a", None).mode(),
        Mode::Audit,
        "the last good floor stays"
    );
}

#[test]
fn the_server_refuses_to_start_with_a_policy_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        std::fs::read_to_string(repo("policies/default.yaml"))
            .unwrap()
            .replace(
                "  - spec.cleanPodPolicy\n",
                "  - spec.cleanPodPolicy\n  - spec..oops\n",
            ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pytorchjob-guard"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--policy")
        .arg(&path)
        .arg("--tls-cert")
        .arg(dir.path().join("none.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("none.key"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid field path \"spec..oops\""),
        "{stderr}"
    );
    assert!(stderr.contains("line 21 column 5"), "{stderr}");
}

#[test]
fn recorded_traffic_replays_under_a_new_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut recorder = RecordDir::new(dir.path(), 100, true).unwrap();
    let suspended = suspended_kueue_job();
    let admitted = kueue_admits(&suspended);
    let mut relabeled = suspended.clone();
    relabeled["metadata"]["labels"]["team"] = "vision".into();
    let mut with_secret = suspended.clone();
    with_secret["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "WANDB_API_KEY", "value": "hunter2-secret"}]);
    let builtin = Policy::default();
    for (uid, user, new) in [
        ("kueue-admit", KUEUE, &admitted),
        ("relabel", ALICE, &relabeled),
        ("secret", ALICE, &with_secret),
    ] {
        let review = update_review(uid, user, &suspended, new);
        let reviewed = admission::review(&builtin, &review).unwrap();
        recorder.write(&review, &reviewed.body).unwrap();
    }
    let files = record::record_files(dir.path()).unwrap();
    assert_eq!(files.len(), 3);
    let all: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(
        !all.contains("hunter2-secret"),
        "env values are redacted on disk"
    );

    // Replaying under the same policy changes nothing; under the Kueue preset, Kueue's admit.
    let same = record::replay(dir.path(), &builtin, None).unwrap();
    assert!(same.iter().all(|row| !row.changed()), "{same:?}");
    let rows = record::replay(dir.path(), &preset("kueue"), None).unwrap();
    let changed: Vec<_> = rows.iter().filter(|r| r.changed()).collect();
    assert_eq!(changed.len(), 1, "{rows:?}");
    assert_eq!(changed[0].object, "PyTorchJob default/pytorch-simple");
    assert_eq!((changed[0].before, changed[0].after), ("denied", "allowed"));
    assert!(
        changed[0]
            .no_longer_denied
            .contains(&"spec.runPolicy.suspend".to_owned())
    );
    // The redacted env change is still a change: the secret review stays denied in both.
    let secret = rows.iter().find(|r| !r.changed() && r.before == "denied");
    assert!(secret.is_some(), "{rows:?}");

    // The command: a table, exit 1 when a decision changes, 0 when none does.
    let binary = env!("CARGO_BIN_EXE_pytorchjob-guard");
    let run = |policy: Option<PathBuf>| {
        let mut command = std::process::Command::new(binary);
        command.arg("replay").arg(dir.path());
        if let Some(policy) = policy {
            command.arg("--policy").arg(policy);
        }
        command.output().unwrap()
    };
    let output = run(Some(repo("policies/kueue.yaml")));
    assert_eq!(output.status.code(), Some(1));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains("| PyTorchJob default/pytorch-simple | denied | allowed |"),
        "{table}"
    );
    assert!(
        table.contains("1 of 3 recorded decisions would change"),
        "{table}"
    );
    let output = run(None);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn record_files_are_bounded_in_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut recorder = RecordDir::new(dir.path(), 2, true).unwrap();
    let old = suspended_kueue_job();
    let mut new = old.clone();
    new["metadata"]["labels"]["x"] = "y".into();
    let small = update_review("small", ALICE, &old, &new);
    let response = admission::review(&Policy::default(), &small).unwrap().body;
    for _ in 0..5 {
        recorder.write(&small, &response).unwrap();
    }
    assert_eq!(
        record::record_files(dir.path()).unwrap().len(),
        2,
        "the oldest files go"
    );
    // A directory that already holds records counts them toward the bound.
    let mut again = RecordDir::new(dir.path(), 2, true).unwrap();
    again.write(&small, &response).unwrap();
    assert_eq!(record::record_files(dir.path()).unwrap().len(), 2);
}
