//! Deterministic AdmissionReviews for the benchmarks, built from the golden fixtures.
//!
//! Shared by `benches/decision.rs` and the load benchmark's `bench/` crate (each includes this
//! file with `#[path]`), so the micro-benchmarks and the load test measure the same bytes.
//! Every review is written the way the API server writes one: compact JSON, the envelope in the
//! Go structs' field order, and the objects with sorted keys (they are `map[string]interface{}`
//! in the API server, which `encoding/json` writes sorted). Unchanged subtrees of `object` and
//! `oldObject` are therefore byte-identical, as in real reviews.
//!
//! | review | built from | size | verdict |
//! | --- | --- | --- | --- |
//! | `small-allow` | `label-api-page` as recorded | ~3.4 KB | allowed (a label added) |
//! | `small-deny` | `label-api-page`, Worker replicas 1 → 2 in `object` | ~3.4 KB | denied, 1 path |
//! | `large` | `annotation-dotted-key`, both objects inflated alike (below) | ~460 KB | allowed (one annotation added) |
//! | `deny-heavy` | `large`, every literal env value changed in `object` | ~460 KB | denied, hundreds of paths |
//!
//! The large job is what a production job looks like: Master and Worker with
//! [`CONTAINERS_PER_REPLICA`] containers of [`ENV_PER_CONTAINER`] env vars each, volume mounts,
//! probes, resources; the `kubectl.kubernetes.io/last-applied-configuration` annotation holding
//! the whole spec again as a string; and the `kubectl-client-side-apply` managedFields entry
//! naming every field of the spec (FieldsV1, lists keyed by `name`).

use serde_json::{Map, Value, json};

const LABEL_API_PAGE: &str =
    include_str!("../../tests/fixtures/pytorchjob/label-api-page.review.json");
const ANNOTATION_DOTTED_KEY: &str =
    include_str!("../../tests/fixtures/pytorchjob/annotation-dotted-key.review.json");

/// Containers in each replica spec of the large job (the original one plus sidecars).
pub const CONTAINERS_PER_REPLICA: usize = 5;
/// Env vars of each container of the large job (every tenth from a `valueFrom`).
pub const ENV_PER_CONTAINER: usize = 67;
/// Volumes of each pod template (each container mounts all of them).
const VOLUMES: usize = 8;

/// Every benchmark review, by name, in a fixed order.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("small-allow", small_allow()),
        ("small-deny", small_deny()),
        ("large", large()),
        ("deny-heavy", deny_heavy()),
    ]
}

/// `label-api-page` as the API server would send it: allowed, one label added.
pub fn small_allow() -> Vec<u8> {
    encode(&fixture(LABEL_API_PAGE))
}

/// `label-api-page` with the Worker's replicas also changed: denied at one path.
pub fn small_deny() -> Vec<u8> {
    let mut review = fixture(LABEL_API_PAGE);
    let replicas = review
        .pointer_mut("/request/object/spec/pytorchReplicaSpecs/Worker/replicas")
        .expect("label-api-page has Worker replicas");
    *replicas = json!(2);
    encode(&review)
}

/// The inflated `annotation-dotted-key`: allowed, one annotation added.
pub fn large() -> Vec<u8> {
    encode(&inflated(false))
}

/// The large review with every literal env value changed in `object` (and so its
/// last-applied annotation): denied at hundreds of paths.
pub fn deny_heavy() -> Vec<u8> {
    encode(&inflated(true))
}

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("the fixture is JSON")
}

fn inflated(change_env_in_object: bool) -> Value {
    let mut review = fixture(ANNOTATION_DOTTED_KEY);
    for side in ["oldObject", "object"] {
        let object = review
            .pointer_mut(&format!("/request/{side}"))
            .expect("annotation-dotted-key has both objects");
        inflate(object, change_env_in_object && side == "object");
    }
    review
}

/// Grow a PyTorchJob in place: big pod templates, the last-applied annotation and the
/// managedFields that go with them. The same for both objects except `changed_env`.
fn inflate(object: &mut Value, changed_env: bool) {
    let job = object["metadata"]["name"]
        .as_str()
        .expect("the job has a name")
        .to_owned();
    let specs = object
        .pointer_mut("/spec/pytorchReplicaSpecs")
        .and_then(Value::as_object_mut)
        .expect("the job has replica specs");
    for (replica, spec) in specs.iter_mut() {
        let original = spec["template"]["spec"]["containers"][0].clone();
        spec["template"]["metadata"] = json!({
            "labels": {
                "app.kubernetes.io/name": job,
                "app.kubernetes.io/component": replica.to_lowercase(),
                "team": "ml-platform",
            },
            "annotations": {
                "sidecar.istio.io/inject": "false",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9100",
            },
        });
        spec["template"]["spec"] = pod_spec(&job, replica, &original, changed_env);
    }
    let last_applied = json!({
        "apiVersion": object["apiVersion"],
        "kind": object["kind"],
        "metadata": {
            "annotations": {},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
        },
        "spec": object["spec"],
    });
    object["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        Value::String(format!("{last_applied}\n"));
    let spec_fields = fields_v1(&object["spec"]);
    let entries = object["metadata"]["managedFields"]
        .as_array_mut()
        .expect("the job has managedFields");
    for entry in entries {
        if entry["manager"] == "kubectl-client-side-apply" {
            entry["fieldsV1"]["f:spec"] = spec_fields.clone();
        }
    }
}

fn pod_spec(job: &str, replica: &str, original: &Value, changed_env: bool) -> Value {
    let containers: Vec<Value> = (0..CONTAINERS_PER_REPLICA)
        .map(|c| container(replica, c, original, changed_env))
        .collect();
    let volumes: Vec<Value> = (0..VOLUMES)
        .map(|v| {
            json!({
                "name": format!("data-{v}"),
                "persistentVolumeClaim": {"claimName": format!("{job}-{}-data-{v}", replica.to_lowercase())},
            })
        })
        .collect();
    json!({
        "containers": containers,
        "volumes": volumes,
        "nodeSelector": {
            "node.kubernetes.io/instance-type": "p4d.24xlarge",
            "topology.kubernetes.io/zone": "eu-west-1a",
        },
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"},
        ],
        "serviceAccountName": "training",
        "priorityClassName": "ml-training-high",
        "terminationGracePeriodSeconds": 120,
    })
}

fn container(replica: &str, index: usize, original: &Value, changed_env: bool) -> Value {
    let mut container = if index == 0 {
        original.clone()
    } else {
        json!({
            "name": format!("sidecar-{index}"),
            "image": format!("registry.example.com/ml-platform/sidecar-{index}:v1.{index}.0"),
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sidecar", "--config=/etc/sidecar/config.yaml", format!("--port={}", 9100 + index)],
        })
    };
    let env: Vec<Value> = (0..ENV_PER_CONTAINER)
        .map(|e| env_var(replica, index, e, changed_env))
        .collect();
    let mounts: Vec<Value> = (0..VOLUMES)
        .map(|v| {
            json!({
                "name": format!("data-{v}"),
                "mountPath": format!("/mnt/data-{v}"),
                "readOnly": v % 2 == 0,
            })
        })
        .collect();
    container["env"] = Value::Array(env);
    container["volumeMounts"] = Value::Array(mounts);
    container["ports"] = json!([
        {"containerPort": 23456 + index, "name": format!("dist-{index}"), "protocol": "TCP"},
        {"containerPort": 9100 + index, "name": format!("metrics-{index}"), "protocol": "TCP"},
    ]);
    container["resources"] = json!({
        "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": if index == 0 { 8 } else { 0 }},
        "requests": {"cpu": "4", "memory": "48Gi", "nvidia.com/gpu": if index == 0 { 8 } else { 0 }},
    });
    container["readinessProbe"] = json!({
        "httpGet": {"path": "/healthz", "port": 9100 + index, "scheme": "HTTP"},
        "initialDelaySeconds": 30,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    });
    container["securityContext"] = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": true,
        "runAsUser": 1000,
    });
    container
}

fn env_var(replica: &str, container: usize, index: usize, changed: bool) -> Value {
    let name = format!("TRAINING_SETTING_{container:02}_{index:03}");
    match index % 10 {
        3 => json!({
            "name": name,
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
        }),
        7 => json!({
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": "training-credentials", "key": format!("key-{index}")}},
        }),
        _ => {
            let suffix = if changed { "-v2" } else { "" };
            json!({
                "name": name,
                "value": format!("/data/{}/shard-{container}-{index}/config{suffix}", replica.to_lowercase()),
            })
        }
    }
}

/// The FieldsV1 set naming every field of `value`: maps as `f:key`, lists of named objects as
/// `k:{"name":…}`, other lists and scalars as leaves.
fn fields_v1(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut fields = Map::new();
            fields.insert(".".to_owned(), json!({}));
            for (key, child) in map {
                fields.insert(format!("f:{key}"), fields_v1(child));
            }
            Value::Object(fields)
        }
        Value::Array(items) if items.iter().all(|item| item.get("name").is_some()) => {
            let mut fields = Map::new();
            fields.insert(".".to_owned(), json!({}));
            for item in items {
                let key = json!({"name": item["name"]});
                fields.insert(format!("k:{key}"), fields_v1(item));
            }
            Value::Object(fields)
        }
        _ => json!({}),
    }
}

/// The envelope in the order of `k8s.io/api/admission/v1`'s Go structs.
const REVIEW_ORDER: &[&str] = &["kind", "apiVersion", "request", "response"];
const REQUEST_ORDER: &[&str] = &[
    "uid",
    "kind",
    "resource",
    "subResource",
    "requestKind",
    "requestResource",
    "requestSubResource",
    "name",
    "namespace",
    "operation",
    "userInfo",
    "object",
    "oldObject",
    "dryRun",
    "options",
];

/// Compact JSON as the API server writes a review.
fn encode(review: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let map = review.as_object().expect("a review is an object");
    write_ordered(
        &mut out,
        map,
        REVIEW_ORDER,
        Some(("request", REQUEST_ORDER)),
    );
    out
}

fn write_ordered(
    out: &mut Vec<u8>,
    map: &Map<String, Value>,
    order: &[&str],
    inner: Option<(&str, &[&str])>,
) {
    out.push(b'{');
    let known = order.iter().copied().filter(|key| map.contains_key(*key));
    let rest = map
        .keys()
        .map(String::as_str)
        .filter(|key| !order.contains(key));
    for (i, key) in known.chain(rest).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).expect("a string serializes");
        out.push(b':');
        match (inner, &map[key]) {
            (Some((name, order)), Value::Object(child)) if name == key => {
                write_ordered(out, child, order, None);
            }
            (_, value) => serde_json::to_writer(&mut *out, value).expect("a Value serializes"),
        }
    }
    out.push(b'}');
}
