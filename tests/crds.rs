//! The presets, proved against the CRDs of the kinds they govern (`tests/fixtures/crds/`,
//! verbatim public data).
//!
//! [`check`] returns every way a policy disagrees with a set of CRDs; a preset passes when it
//! returns nothing. What it checks, for the policy's governed kinds and their CRDs:
//!
//! 1. **Kinds.** Every governed kind has a CRD of its group and kind, and its resource is the
//!    CRD's plural (what `<plural>/scale` requests are matched by).
//! 2. **Scale.** A `scaleReplicasPath` equals the `specReplicasPath` of every CRD of the kind
//!    that has a scale subresource (leading `.` dropped), and is absent when none has one.
//! 3. **Paths.** Every updatable, not-compared, default, exempted and empty-is-absent path
//!    exists (a `*` over an object's named properties exists when the rest does below one):
//!    - `metadata.<field>…` must name a field of ObjectMeta (the API server's own type: a CRD
//!      schema says only `metadata: {type: object}`); below `labels`/`annotations` any key;
//!    - `spec.<x>ReplicaSpecs…` (one kind's replica specs, e.g. Kueue's per-kind template paths)
//!      must exist in every CRD that declares `spec.<x>ReplicaSpecs`, and at least one does;
//!    - any other path must exist in every governed kind, except the paths the caller declares
//!      kind-specific (for the training-operator presets, [`TRAINING_OPERATOR_KIND_SPECIFIC`]),
//!      which must exist in exactly the kinds declared.
//!
//!    A kind with several CRDs (PyTorchJob of the archived pytorch-operator and of the
//!    training-operator, for `policies/default.yaml`) has the path when one of them has it.
//!    In a schema, a key segment follows `properties`, then a schema-valued
//!    `additionalProperties`; `*` and `[n]` follow `additionalProperties` (maps such as the
//!    replica specs keyed Master/Worker) or list `items`. Below
//!    `x-kubernetes-preserve-unknown-fields` (and everywhere in a v1beta1 CRD, whose unpruned,
//!    non-structural schema stores any field) every path exists.
//! 4. **Defaults given.** Each of the policy's defaults is the schema `default` at its path in
//!    every CRD that has the path, with the same value.
//! 5. **Defaults missed.** A CRD default the API server writes when its parent object appears,
//!    where an allowed change (an updatable or exempted path strictly inside that parent) can
//!    make the parent appear, must be covered: by a policy default with that value, or by an
//!    updatable, not-compared or (for that exemption) exempted path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pytorchjob_guard::policy::{FieldPattern, PatternSegment, Policy, Segment, file};
use serde_json::Value;

/// Paths outside any replica specs that only some kinds have, and exactly which kinds.
type KindSpecific = [(&'static str, &'static [&'static str])];

/// The training-operator presets' kind-specific paths.
const TRAINING_OPERATOR_KIND_SPECIFIC: &KindSpecific = &[
    // MPIJobSpec's own cleanPodPolicy, beside runPolicy.cleanPodPolicy.
    ("spec.cleanPodPolicy", &["MPIJob"]),
];

/// One CRD, reduced to what the checks need.
struct Crd {
    file: String,
    group: String,
    kind: String,
    plural: String,
    /// Each served version's schema and scale `specReplicasPath`.
    versions: Vec<(JSONSchemaProps, Option<String>)>,
    /// A v1beta1 CRD without a structural schema: nothing is pruned.
    keeps_unknown_fields: bool,
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if name.ends_with(".gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        text
    } else {
        String::from_utf8(bytes).unwrap()
    }
}

fn load(file: &str) -> Crd {
    let text = fixture(&format!("tests/fixtures/crds/{file}"));
    let raw: Value = serde_yaml_ng::from_str(&text).unwrap();
    if raw["apiVersion"] == "apiextensions.k8s.io/v1beta1" {
        // k8s-openapi has no v1beta1 CRD (removed in Kubernetes 1.22); its schema is the same
        // JSONSchemaProps, under spec.validation, with spec.subresources for all versions.
        let spec = &raw["spec"];
        let schema = serde_json::from_value(spec["validation"]["openAPIV3Schema"].clone()).unwrap();
        let scale = spec["subresources"]["scale"]["specReplicasPath"]
            .as_str()
            .map(str::to_owned);
        return Crd {
            file: file.to_owned(),
            group: spec["group"].as_str().unwrap().to_owned(),
            kind: spec["names"]["kind"].as_str().unwrap().to_owned(),
            plural: spec["names"]["plural"].as_str().unwrap().to_owned(),
            versions: vec![(schema, scale)],
            keeps_unknown_fields: spec["preserveUnknownFields"] != false,
        };
    }
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).unwrap();
    let versions = crd
        .spec
        .versions
        .into_iter()
        .filter(|v| v.served)
        .map(|v| {
            let scale = v
                .subresources
                .and_then(|s| s.scale)
                .map(|s| s.spec_replicas_path);
            (v.schema.unwrap().open_api_v3_schema.unwrap(), scale)
        })
        .collect();
    Crd {
        file: file.to_owned(),
        group: crd.spec.group,
        kind: crd.spec.names.kind,
        plural: crd.spec.names.plural,
        versions,
        keeps_unknown_fields: false,
    }
}

const TRAINING_OPERATOR_CRDS: &[&str] = &[
    "training-operator-v1.9.4-kubeflow.org_tfjobs.yaml.gz",
    "training-operator-v1.9.4-kubeflow.org_mpijobs.yaml.gz",
    "training-operator-v1.9.4-kubeflow.org_paddlejobs.yaml.gz",
    "training-operator-v1.9.4-kubeflow.org_xgboostjobs.yaml.gz",
    "training-operator-v1.9.4-kubeflow.org_jaxjobs.yaml.gz",
    "training-operator-v1.9.4-kubeflow.org_pytorchjobs.yaml.gz",
    "training-operator-v1.8.1-kubeflow.org_mxjobs.yaml.gz",
];
const PYTORCH_OPERATOR_CRD: &str = "pytorch-operator-master-crd.yaml";

/// Every shipped CRD, parsed once.
fn crds() -> &'static [Crd] {
    static CRDS: OnceLock<Vec<Crd>> = OnceLock::new();
    CRDS.get_or_init(|| {
        TRAINING_OPERATOR_CRDS
            .iter()
            .chain([&PYTORCH_OPERATOR_CRD])
            .map(|file| load(file))
            .collect()
    })
}

fn training_operator_crds() -> Vec<&'static Crd> {
    crds()
        .iter()
        .filter(|c| TRAINING_OPERATOR_CRDS.contains(&c.file.as_str()))
        .collect()
}

fn preset(name: &str) -> Policy {
    let text = fixture(&format!("policies/{name}.yaml"));
    file::parse(&text).unwrap_or_else(|e| panic!("policies/{name}.yaml: {e}"))
}

/// Where a path leads in a schema.
enum Found<'a> {
    Schema(&'a JSONSchemaProps),
    /// Inside preserved unknown fields (or a map of any values): every path below exists.
    Anything,
}

fn child_of_map(node: &JSONSchemaProps) -> Option<Found<'_>> {
    match &node.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(schema)) => Some(Found::Schema(schema)),
        Some(JSONSchemaPropsOrBool::Bool(true)) => Some(Found::Anything),
        _ => None,
    }
}

fn item_of_list(node: &JSONSchemaProps) -> Option<Found<'_>> {
    match &node.items {
        Some(JSONSchemaPropsOrArray::Schema(schema)) => Some(Found::Schema(schema)),
        _ => None,
    }
}

/// The schema node at `segments` below `node`, if the path exists.
fn walk<'a>(
    node: &'a JSONSchemaProps,
    segments: &[PatternSegment],
    keeps_unknown: bool,
) -> Option<Found<'a>> {
    let Some((first, rest)) = segments.split_first() else {
        return Some(Found::Schema(node));
    };
    let next = match first {
        PatternSegment::Exact(Segment::Key(key)) => node
            .properties
            .as_ref()
            .and_then(|p| p.get(key))
            .map(Found::Schema)
            .or_else(|| child_of_map(node)),
        PatternSegment::Exact(Segment::Index(_)) => item_of_list(node),
        // `*` over an object's named properties (`spec.*.*.template`: every kind's replica
        // specs): the path exists when it exists below one of them.
        PatternSegment::Any => match child_of_map(node).or_else(|| item_of_list(node)) {
            None => {
                let found = node
                    .properties
                    .iter()
                    .flatten()
                    .find_map(|(_, child)| walk(child, rest, keeps_unknown));
                if found.is_some() {
                    return found;
                }
                None
            }
            next => next,
        },
    };
    let preserves = keeps_unknown || node.x_kubernetes_preserve_unknown_fields == Some(true);
    match next {
        Some(Found::Schema(child)) => walk(child, rest, keeps_unknown),
        Some(Found::Anything) => Some(Found::Anything),
        None if preserves => Some(Found::Anything),
        None => None,
    }
}

/// The ObjectMeta field names, from k8s-openapi's own type: a key is a field when a value
/// of some JSON type for it survives a round trip.
fn object_meta_has(field: &str) -> bool {
    let samples = [
        serde_json::json!({}),
        serde_json::json!([]),
        serde_json::json!("2025-01-01T00:00:00Z"),
        serde_json::json!(1),
    ];
    samples.into_iter().any(|sample| {
        let object = serde_json::json!({ field: sample });
        serde_json::from_value::<ObjectMeta>(object)
            .ok()
            .and_then(|meta| serde_json::to_value(meta).ok())
            .is_some_and(|back| back.get(field).is_some())
    })
}

fn key(segments: &[PatternSegment], index: usize) -> Option<&str> {
    match segments.get(index) {
        Some(PatternSegment::Exact(Segment::Key(key))) => Some(key),
        _ => None,
    }
}

/// The `spec.<x>ReplicaSpecs` key a path lies under, if any.
fn replica_specs_key(pattern: &FieldPattern) -> Option<&str> {
    let segments = pattern.segments();
    (key(segments, 0) == Some("spec"))
        .then(|| key(segments, 1))
        .flatten()
        .filter(|k| k.ends_with("ReplicaSpecs"))
}

fn exists_in(crd: &Crd, pattern: &FieldPattern) -> bool {
    crd.versions
        .iter()
        .all(|(schema, _)| walk(schema, pattern.segments(), crd.keeps_unknown_fields).is_some())
}

/// Problems with one path (rule 3).
fn check_path(
    pattern: &FieldPattern,
    kinds: &[(&str, Vec<&Crd>)],
    kind_specific: &KindSpecific,
    problems: &mut Vec<String>,
) {
    let segments = pattern.segments();
    if key(segments, 0) == Some("metadata") {
        match key(segments, 1) {
            None if segments.len() == 1 => {}
            Some(field)
                if object_meta_has(field)
                    && (segments.len() == 2 || matches!(field, "labels" | "annotations")) => {}
            _ => problems.push(format!("{pattern}: not a field of ObjectMeta")),
        }
        return;
    }
    let has = |crds: &Vec<&Crd>| crds.iter().any(|crd| exists_in(crd, pattern));
    let with: BTreeSet<&str> = kinds
        .iter()
        .filter(|(_, crds)| has(crds))
        .map(|(kind, _)| *kind)
        .collect();
    if let Some(replica_specs) = replica_specs_key(pattern) {
        let prefix: FieldPattern = format!("spec.{replica_specs}").parse().unwrap();
        let declaring: BTreeSet<&str> = kinds
            .iter()
            .filter(|(_, crds)| {
                has(&crds
                    .iter()
                    .copied()
                    .filter(|c| exists_in(c, &prefix))
                    .collect())
            })
            .map(|(kind, _)| *kind)
            .collect();
        let declared: BTreeSet<&str> = kinds
            .iter()
            .filter(|(_, crds)| crds.iter().any(|c| exists_in(c, &prefix)))
            .map(|(kind, _)| *kind)
            .collect();
        if declared.is_empty() {
            problems.push(format!(
                "{pattern}: no governed kind has spec.{replica_specs}"
            ));
        } else if declaring != declared {
            let missing: Vec<_> = declared.difference(&declaring).collect();
            problems.push(format!("{pattern}: not in the schema of {missing:?}"));
        }
        return;
    }
    let expected: BTreeSet<&str> = match kind_specific
        .iter()
        .find(|(p, _)| *p == pattern.to_string())
    {
        Some((_, only)) => kinds
            .iter()
            .map(|(kind, _)| *kind)
            .filter(|kind| only.contains(kind))
            .collect(),
        None => kinds.iter().map(|(kind, _)| *kind).collect(),
    };
    if with.is_empty() {
        problems.push(format!("{pattern}: in no governed kind's schema"));
    } else if with != expected {
        problems.push(format!(
            "{pattern}: in the schema of {with:?}, expected exactly {expected:?}"
        ));
    }
}

/// Every `default` in a schema, with its path's segments (`*` for map values and list items).
fn schema_defaults(
    node: &JSONSchemaProps,
    at: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Value)>,
) {
    if let Some(default) = &node.default {
        out.push((at.clone(), default.0.clone()));
    }
    for (name, child) in node.properties.iter().flatten() {
        at.push(name.clone());
        schema_defaults(child, at, out);
        at.pop();
    }
    for child in [child_of_map(node), item_of_list(node)]
        .into_iter()
        .flatten()
    {
        if let Found::Schema(child) = child {
            at.push("*".to_owned());
            schema_defaults(child, at, out);
            at.pop();
        }
    }
}

/// Whether `pattern` covers every path `target` (itself a pattern) stands for.
fn covers(pattern: &FieldPattern, target: &FieldPattern) -> bool {
    pattern.segments().len() <= target.segments().len()
        && pattern
            .segments()
            .iter()
            .zip(target.segments())
            .all(|(p, t)| *p == PatternSegment::Any || p == t)
}

/// Whether some path both patterns stand for lies strictly inside `parent`.
fn reaches_inside(allowed: &FieldPattern, parent: &FieldPattern) -> bool {
    allowed.segments().len() > parent.segments().len()
        && parent
            .segments()
            .iter()
            .zip(allowed.segments())
            .all(|(p, a)| *p == PatternSegment::Any || *a == PatternSegment::Any || p == a)
}

/// Rules 4 and 5 for one CRD schema.
fn check_defaults(
    policy: &Policy,
    crd: &Crd,
    schema: &JSONSchemaProps,
    problems: &mut Vec<String>,
) {
    let mut raw = Vec::new();
    schema_defaults(schema, &mut Vec::new(), &mut raw);
    // (path, its parent object, the default)
    let found: Vec<(FieldPattern, FieldPattern, Value)> = raw
        .into_iter()
        .filter(|(segments, _)| segments.len() > 1)
        .map(|(segments, value)| {
            let parent = segments[..segments.len() - 1].join(".");
            (
                segments.join(".").parse().unwrap(),
                parent.parse().unwrap(),
                value,
            )
        })
        .collect();
    for (path, value) in policy.defaults() {
        // Only where the schema declares the field; rule 3 reports a path no kind has.
        if !matches!(walk(schema, path.segments(), false), Some(Found::Schema(_))) {
            continue;
        }
        match found.iter().find(|(at, _, _)| at == path) {
            Some((_, _, real)) if real == value => {}
            Some((_, _, real)) => problems.push(format!(
                "default {path} = {value}: {} defaults it to {real}",
                crd.file
            )),
            None => problems.push(format!(
                "default {path} = {value}: not a default in {}",
                crd.file
            )),
        }
    }
    let always: Vec<&FieldPattern> = policy
        .updatable()
        .iter()
        .chain(policy.not_compared())
        .collect();
    let writers = std::iter::once(("", policy.updatable())).chain(
        policy
            .exemptions()
            .iter()
            .filter_map(|e| e.paths.as_deref().map(|paths| (e.name.as_str(), paths))),
    );
    for (exemption, allowed) in writers {
        for (path, parent, value) in &found {
            if !allowed.iter().any(|a| reaches_inside(a, parent)) {
                continue;
            }
            let covered = always
                .iter()
                .copied()
                .chain(allowed)
                .any(|p| covers(p, path))
                || policy
                    .defaults()
                    .iter()
                    .any(|(p, v)| covers(p, path) && v == value);
            if !covered {
                let by = if exemption.is_empty() {
                    String::new()
                } else {
                    format!(" (exemption {exemption})")
                };
                problems.push(format!(
                    "{} writes {path} = {value} when an allowed change{by} adds {parent}: \
                     not in the policy's defaults",
                    crd.file
                ));
            }
        }
    }
}

/// Every way `policy` disagrees with `crds` (empty: it agrees). See the module doc.
fn check(policy: &Policy, crds: &[&Crd], kind_specific: &KindSpecific) -> Vec<String> {
    let mut problems = Vec::new();
    let mut kinds: Vec<(&str, Vec<&Crd>)> = Vec::new();
    for governed in policy.kinds() {
        let of_kind: Vec<&Crd> = crds
            .iter()
            .copied()
            .filter(|c| c.group == governed.group && c.kind == governed.kind)
            .collect();
        if of_kind.is_empty() {
            problems.push(format!("{}/{}: no CRD", governed.group, governed.kind));
            continue;
        }
        for crd in &of_kind {
            if crd.plural != governed.resource {
                problems.push(format!(
                    "{}: resource {} but the CRD's plural is {}",
                    governed.kind, governed.resource, crd.plural
                ));
            }
        }
        let scale: BTreeSet<String> = of_kind
            .iter()
            .flat_map(|c| c.versions.iter().filter_map(|(_, s)| s.clone()))
            .map(|s| s.trim_start_matches('.').to_owned())
            .collect();
        let ours = governed.scale_replicas.as_ref().map(ToString::to_string);
        match (&ours, scale.len()) {
            (None, 0) => {}
            (Some(ours), 1) if scale.contains(ours) => {}
            (None, _) => problems.push(format!(
                "{}: no scaleReplicasPath, but the CRD's scale writes {scale:?}",
                governed.kind
            )),
            (Some(ours), _) => problems.push(format!(
                "{}: scaleReplicasPath {ours}, but the CRD's specReplicasPath is {scale:?}",
                governed.kind
            )),
        }
        kinds.push((governed.kind.as_str(), of_kind));
    }
    let exempted = policy
        .exemptions()
        .iter()
        .flat_map(|e| e.paths.iter().flatten());
    let defaults = policy.defaults().iter().map(|(p, _)| p);
    let paths: Vec<&FieldPattern> = policy
        .updatable()
        .iter()
        .chain(policy.not_compared())
        .chain(exempted)
        .chain(defaults)
        .chain(policy.empty_is_absent())
        .collect();
    for pattern in paths {
        check_path(pattern, &kinds, kind_specific, &mut problems);
    }
    for (_, of_kind) in &kinds {
        for crd in of_kind {
            for (schema, _) in &crd.versions {
                check_defaults(policy, crd, schema, &mut problems);
            }
        }
    }
    problems
}

fn problems_of(policy_text: &str, crds: &[&Crd]) -> Vec<String> {
    let policy = file::parse(policy_text).unwrap_or_else(|e| panic!("{e}\n{policy_text}"));
    check(&policy, crds, TRAINING_OPERATOR_KIND_SPECIFIC)
}

fn assert_agrees(name: &str, crds: &[&Crd], kind_specific: &KindSpecific) {
    let problems = check(&preset(name), crds, kind_specific);
    assert!(
        problems.is_empty(),
        "policies/{name}.yaml:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_training_operator_preset_governs_every_crd_and_agrees_with_each() {
    let crds = training_operator_crds();
    assert_eq!(crds.len(), 7);
    let policy = preset("training-operator");
    let governed: BTreeSet<(&str, &str)> = policy
        .kinds()
        .iter()
        .map(|k| (k.group.as_str(), k.kind.as_str()))
        .collect();
    let shipped: BTreeSet<(&str, &str)> = crds
        .iter()
        .map(|c| (c.group.as_str(), c.kind.as_str()))
        .collect();
    assert_eq!(governed, shipped);
    assert_agrees("training-operator", &crds, TRAINING_OPERATOR_KIND_SPECIFIC);
}

#[test]
fn the_kueue_preset_agrees_with_every_crd() {
    assert_agrees(
        "kueue",
        &training_operator_crds(),
        TRAINING_OPERATOR_KIND_SPECIFIC,
    );
}

/// The default and HPA presets govern PyTorchJob in both layouts, so they are checked against
/// the union of the archived pytorch-operator's CRD (v1beta1, no structural schema: it prunes
/// nothing, so its flat spec fields exist) and the training-operator's (v1.9.4).
#[test]
fn the_pytorchjob_presets_agree_with_both_pytorchjob_crds() {
    let pytorch: Vec<&Crd> = crds().iter().filter(|c| c.kind == "PyTorchJob").collect();
    assert_eq!(pytorch.len(), 2);
    assert_agrees("default", &pytorch, &[]);
    assert_agrees("hpa", &pytorch, &[]);
    // The flat fields exist only through the old CRD: the training-operator prunes them.
    let current: Vec<&Crd> = pytorch
        .iter()
        .copied()
        .filter(|c| !c.keeps_unknown_fields)
        .collect();
    for flat in [
        "spec.activeDeadlineSeconds",
        "spec.ttlSecondsAfterFinished",
        "spec.cleanPodPolicy",
    ] {
        let pattern: FieldPattern = flat.parse().unwrap();
        assert!(preset("default").updatable().contains(&pattern), "{flat}");
        assert!(
            !exists_in(current[0], &pattern),
            "{flat} is in the v1.9.4 schema"
        );
    }
}

/// kueue.yaml is training-operator.yaml plus its exemption: the text from `apiVersion:` up to
/// `exemptions:` is the same, and the exemption names Kueue's template paths for every kind's
/// replica specs.
#[test]
fn the_kueue_preset_is_the_training_operator_preset_plus_an_exemption_for_every_kind() {
    let body = |name: &str| {
        let text = fixture(&format!("policies/{name}.yaml"));
        let start = text.find("\napiVersion:").unwrap();
        let end = text.find("\nexemptions:").unwrap();
        text[start..end].to_owned()
    };
    assert_eq!(body("kueue"), body("training-operator"));
    let kueue = preset("kueue");
    assert!(preset("training-operator").exemptions().is_empty());
    let [exemption] = kueue.exemptions() else {
        panic!("one exemption")
    };
    let paths: BTreeSet<String> = exemption
        .paths
        .iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    let mut expected = BTreeSet::from(["spec.runPolicy.suspend".to_owned()]);
    for crd in training_operator_crds() {
        let spec = crd.versions[0].0.properties.as_ref().unwrap()["spec"]
            .properties
            .clone()
            .unwrap();
        let replica_specs: Vec<&String> = spec
            .keys()
            .filter(|k| k.ends_with("ReplicaSpecs"))
            .collect();
        assert_eq!(replica_specs.len(), 1, "{}", crd.file);
        for field in [
            "metadata.labels",
            "metadata.annotations",
            "spec.nodeSelector",
            "spec.tolerations",
            "spec.schedulingGates",
        ] {
            expected.insert(format!("spec.{}.*.template.{field}", replica_specs[0]));
        }
    }
    assert_eq!(paths, expected);
}

/// The checker is not a rubber stamp: each edit of the preset below breaks one rule.
#[test]
fn the_checker_rejects_a_preset_that_disagrees_with_the_crds() {
    let preset = fixture("policies/training-operator.yaml");
    let kueue = fixture("policies/kueue.yaml");
    let crds = training_operator_crds();
    let cases: &[(&str, String, &str)] = &[
        (
            "a field no CRD has",
            preset.replace(
                "  - spec.runPolicy.cleanPodPolicy\n",
                "  - spec.runPolicy.cleanPodPolicy\n  - spec.runPolicy.cleanupPolicy\n",
            ),
            "spec.runPolicy.cleanupPolicy: in no governed kind's schema",
        ),
        (
            "a flat field the CRDs prune",
            preset.replace(
                "  - spec.cleanPodPolicy\n",
                "  - spec.cleanPodPolicy\n  - spec.ttlSecondsAfterFinished\n",
            ),
            "spec.ttlSecondsAfterFinished: in no governed kind's schema",
        ),
        (
            "a field only some kinds have, not declared so",
            preset.replace("  - spec.cleanPodPolicy\n", "  - spec.slotsPerWorker\n"),
            "spec.slotsPerWorker: in the schema of {\"MPIJob\"}, expected exactly",
        ),
        (
            "a metadata field that does not exist",
            preset.replace("  - metadata.labels\n", "  - metadata.label\n"),
            "metadata.label: not a field of ObjectMeta",
        ),
        (
            "a scale path that differs from specReplicasPath",
            preset.replace(
                "scaleReplicasPath: spec.paddleReplicaSpecs.Worker.replicas",
                "scaleReplicasPath: spec.paddleReplicaSpecs.Master.replicas",
            ),
            "PaddleJob: scaleReplicasPath spec.paddleReplicaSpecs.Master.replicas, but the CRD's specReplicasPath is {\"spec.paddleReplicaSpecs.Worker.replicas\"}",
        ),
        (
            "a scale path for a kind without a scale subresource",
            preset.replace(
                "    kind: TFJob\n",
                "    kind: TFJob\n    scaleReplicasPath: spec.tfReplicaSpecs.Worker.replicas\n",
            ),
            "TFJob: scaleReplicasPath spec.tfReplicaSpecs.Worker.replicas, but the CRD's specReplicasPath is {}",
        ),
        (
            "a missing scale path",
            preset.replace("    scaleReplicasPath: spec.jaxReplicaSpecs.Worker.replicas\n", ""),
            "JAXJob: no scaleReplicasPath, but the CRD's scale writes",
        ),
        (
            "a resource that is not the plural",
            preset.replace("    kind: XGBoostJob\n", "    kind: XGBoostJob\n    resource: xgbjobs\n"),
            "XGBoostJob: resource xgbjobs but the CRD's plural is xgboostjobs",
        ),
        (
            "a kind without a CRD",
            preset.replace("    kind: MXJob\n", "    kind: MXNetJob\n"),
            "kubeflow.org/MXNetJob: no CRD",
        ),
        (
            "a default that is not a CRD default",
            preset.replace(
                "defaults:\n",
                "defaults:\n  - path: spec.runPolicy.backoffLimit\n    value: 6\n",
            ),
            "default spec.runPolicy.backoffLimit = 6: not a default in",
        ),
        (
            "a default with the wrong value",
            preset.replace("    value: false\n", "    value: true\n"),
            "default spec.runPolicy.suspend = true: training-operator-v1.9.4-kubeflow.org_tfjobs.yaml.gz defaults it to false",
        ),
        (
            "a default the API server writes, missed",
            preset.replace("defaults:\n  - path: spec.runPolicy.suspend\n    value: false\n", "defaults: []\n"),
            "writes spec.runPolicy.suspend = false when an allowed change adds spec.runPolicy: not in the policy's defaults",
        ),
        (
            "an empty-is-absent path in no kind's schema",
            preset.replace(
                "  - spec.*.*.template.spec\n",
                "  - spec.*.*.template.spec\n  - spec.*.*.template.spec.resourcez\n",
            ),
            "spec.*.*.template.spec.resourcez: in no governed kind's schema",
        ),
        (
            "an exempted path under replica specs no kind has",
            kueue.replace(
                "      - spec.runPolicy.suspend\n",
                "      - spec.runPolicy.suspend\n      - spec.mxnetReplicaSpecs.*.template.spec.nodeSelector\n",
            ),
            "spec.mxnetReplicaSpecs.*.template.spec.nodeSelector: no governed kind has spec.mxnetReplicaSpecs",
        ),
        (
            "an exempted path that is not in its kind's template",
            kueue.replace(
                "      - spec.tfReplicaSpecs.*.template.spec.tolerations\n",
                "      - spec.tfReplicaSpecs.*.template.spec.toleration\n",
            ),
            "spec.tfReplicaSpecs.*.template.spec.toleration: not in the schema of [\"TFJob\"]",
        ),
        (
            "a CRD default an exemption's change would add, missed",
            kueue.replace(
                "      - spec.tfReplicaSpecs.*.template.spec.tolerations\n",
                "      - spec.tfReplicaSpecs.*.template.spec.tolerations\n      - spec.tfReplicaSpecs.*.template.spec.containers.*.ports.*.containerPort\n",
            ),
            "writes spec.tfReplicaSpecs.*.template.spec.containers.*.ports.*.protocol = \"TCP\" when an allowed change (exemption kueue) adds",
        ),
    ];
    for (what, text, expected) in cases {
        assert_ne!(text, &preset, "{what}: the edit did not apply");
        let problems = problems_of(text, &crds);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{what}: expected a problem containing {expected:?}, got {problems:#?}"
        );
    }
}
