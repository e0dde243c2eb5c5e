//! The decision core: which changes to a running job are allowed, and for whom.
//!
//! [`Policy`] holds the rule — which kinds it governs, which fields may change, which fields are
//! not compared at all, which schema defaults are no change, and which identities are exempt
//! for which extra fields — and [`Policy::evaluate`] applies it to the old and new object of
//! an UPDATE. [`Policy::default`] is the rule of the PyTorchJob update API: only
//! `metadata.labels`, `metadata.annotations`, `spec.activeDeadlineSeconds`,
//! `spec.ttlSecondsAfterFinished` and `spec.cleanPodPolicy` (and their `spec.runPolicy`
//! equivalents, the layout of the current training-operator) may change, for everyone.
//! [`mod@file`] reads the same rule from a policy file. [`mode`] holds the rollout: the mode of
//! each namespace, and how far the namespace label may move it ([`Policy::effective_mode`]).
//! [`diff`] is the one diff production runs; it reads objects through [`crate::json`] (the
//! body's structural index, built in one validating pass), the only other module this one
//! uses. `oracle` (feature `oracle`, for tests and fuzzing) is what it is checked against: the
//! rule written again as a plain walk over two whole parsed trees, sharing no code with
//! [`diff`] (it reads the policy's rule data and calls [`Policy::judge`]).
//!
//! Pure and synchronous: no I/O, no async, no Kubernetes client. Everything else in the crate
//! wraps this module; it depends on nothing else in the crate.

pub mod diff;
pub mod file;
pub mod mode;
#[cfg(any(test, feature = "oracle"))]
pub mod oracle;
pub mod path;

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

pub use crate::json::RawObject;
pub use mode::{EffectiveMode, Mode, ModeOverride, NamespacePattern, RefusedLowering, Rollout};
pub use path::{FieldPath, FieldPattern, ParsePathError, PatternSegment, Segment};

/// The most offending paths a denial message lists; the rest are counted. kubectl prints the
/// message on one line, so it has to stay readable when a whole replica spec was replaced.
pub const MAX_PATHS_IN_MESSAGE: usize = 12;

/// The most `details.causes` a denial carries (one per path); a bound on the response size.
pub const MAX_CAUSES: usize = 256;

/// A kind the policy governs: UPDATEs of it (any version) are judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GovernedKind {
    /// The API group (`kubeflow.org`).
    pub group: String,
    /// The kind (`PyTorchJob`).
    pub kind: String,
    /// The resource (`pytorchjobs`): how subresource requests (`pytorchjobs/scale`) name it.
    pub resource: String,
    /// The field the `scale` subresource writes (the CRD's `specReplicasPath`); scale
    /// requests are judged as a change of it. `None`: scale requests are not judged.
    pub scale_replicas: Option<FieldPath>,
}

impl GovernedKind {
    /// A kind whose resource is its lowercase plural and which has no scale path.
    pub fn new(group: &str, kind: &str) -> Self {
        Self {
            group: group.to_owned(),
            kind: kind.to_owned(),
            resource: format!("{}s", kind.to_lowercase()),
            scale_replicas: None,
        }
    }
}

/// Who sent a request, as the API server reports it in `userInfo`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Requester<'a> {
    /// `userInfo.username` (`system:serviceaccount:NS:NAME` for service accounts).
    pub username: &'a str,
    /// `userInfo.groups`.
    pub groups: &'a [String],
}

/// Identities trusted to change more than the updatable fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exemption {
    /// A name for messages, warnings and audit annotations (`kueue`).
    pub name: String,
    /// Usernames.
    pub users: Vec<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Service accounts as `namespace:name`.
    pub service_accounts: Vec<String>,
    /// The fields they may change beyond the updatable ones; `None`: any field.
    pub paths: Option<Vec<FieldPattern>>,
}

impl Exemption {
    /// Whether the requester is one of the exempt identities.
    pub fn applies_to(&self, requester: &Requester<'_>) -> bool {
        self.users.iter().any(|u| u == requester.username)
            || self.groups.iter().any(|g| requester.groups.contains(g))
            || self.service_accounts.iter().any(|sa| {
                requester
                    .username
                    .strip_prefix("system:serviceaccount:")
                    .is_some_and(|rest| rest == sa)
            })
    }

    /// Whether this exemption lets `path` change.
    pub fn covers(&self, path: &FieldPath) -> bool {
        self.paths
            .as_ref()
            .is_none_or(|paths| paths.iter().any(|p| p.covers(path)))
    }
}

/// The rule: the kinds it governs and, for an UPDATE of one of them, which fields may change.
#[derive(Clone, Debug)]
pub struct Policy {
    kinds: Vec<Arc<GovernedKind>>,
    updatable: Vec<FieldPattern>,
    not_compared: Vec<FieldPattern>,
    defaults: Vec<(FieldPattern, Value)>,
    empty_is_absent: Vec<FieldPattern>,
    exemptions: Vec<Exemption>,
    updatable_summary: String,
    rollout: Rollout,
}

/// The fields the PyTorchJob update API lets change, in both the flat (pytorch-operator, CCI) and
/// the `runPolicy` (training-operator ≥ 1.3) layouts.
pub const DEFAULT_UPDATABLE: &[&str] = &[
    "metadata.labels",
    "metadata.annotations",
    "spec.activeDeadlineSeconds",
    "spec.ttlSecondsAfterFinished",
    "spec.cleanPodPolicy",
    "spec.runPolicy.activeDeadlineSeconds",
    "spec.runPolicy.ttlSecondsAfterFinished",
    "spec.runPolicy.cleanPodPolicy",
];

/// Fields owned by the API server or by controllers. Comparing them would deny the garbage
/// collector's finalizer and ownerReference patches and leave jobs stuck in deletion.
pub const DEFAULT_NOT_COMPARED: &[&str] = &[
    "status",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.managedFields",
    "metadata.finalizers",
    "metadata.ownerReferences",
    "metadata.deletionTimestamp",
    "metadata.deletionGracePeriodSeconds",
    "metadata.selfLink",
];

/// Schema defaults the API server fills in when a parent object appears, which are therefore
/// not changes: training-operator's CRD defaults `spec.runPolicy.suspend` to `false`, so adding
/// `spec.runPolicy.ttlSecondsAfterFinished` to a job without `runPolicy` stores
/// `runPolicy: {ttlSecondsAfterFinished: …, suspend: false}`.
pub const DEFAULT_SCHEMA_DEFAULTS: &[(&str, bool)] = &[("spec.runPolicy.suspend", false)];

/// Where an empty object is the same as an absent field: where the Go type behind the field is
/// a value struct, not a pointer, so a typed client (the training-operator, Kueue) reads an
/// absent field as its zero value and writes it back as `{}` (or `{creationTimestamp: null}`)
/// as noise. Everywhere else a present object differs from an absent one: the training-operator
/// tests `Spec.ElasticPolicy != nil`, and `pytorchReplicaSpecs.Worker: {}` creates a replica
/// type. The first `*` is the kind's replica-spec map (`pytorchReplicaSpecs`, `tfReplicaSpecs`,
/// …), the second a replica type, a `[*]` any list element. From training-operator v1.9.4
/// `pkg/apis/kubeflow.org/v1/common_types.go` (`ReplicaSpec.Template v1.PodTemplateSpec`, each
/// job's `RunPolicy RunPolicy`) and Kubernetes `staging/src/k8s.io/api/core/v1/types.go`
/// (`PodTemplateSpec.ObjectMeta`, `PodTemplateSpec.Spec`, `Container.Resources` and
/// `EphemeralContainerCommon.Resources`, all values); `tests/crds.rs` keeps each in every
/// kind's CRD.
pub const DEFAULT_EMPTY_IS_ABSENT: &[&str] = &[
    "metadata",
    "spec.runPolicy",
    "spec.*.*.template",
    "spec.*.*.template.metadata",
    "spec.*.*.template.spec",
    "spec.*.*.template.spec.containers[*].resources",
    "spec.*.*.template.spec.initContainers[*].resources",
    "spec.*.*.template.spec.ephemeralContainers[*].resources",
];

/// Where the `scale` subresource writes in a PyTorchJob (training-operator ≥ 1.6 CRD:
/// `specReplicasPath: .spec.pytorchReplicaSpecs.Worker.replicas`).
pub const PYTORCHJOB_SCALE_REPLICAS: &str = "spec.pytorchReplicaSpecs.Worker.replicas";

const DEFAULT_SUMMARY: &str = "only metadata.labels, metadata.annotations, spec.activeDeadlineSeconds, \
     spec.ttlSecondsAfterFinished and spec.cleanPodPolicy (or their spec.runPolicy equivalents) may change";

fn builtin<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().expect("built-in paths are valid")
}

impl Default for Policy {
    fn default() -> Self {
        let mut pytorchjob = GovernedKind::new("kubeflow.org", "PyTorchJob");
        pytorchjob.scale_replicas = Some(builtin(PYTORCHJOB_SCALE_REPLICAS));
        Self {
            kinds: vec![Arc::new(pytorchjob)],
            updatable: DEFAULT_UPDATABLE.iter().map(|p| builtin(p)).collect(),
            not_compared: DEFAULT_NOT_COMPARED.iter().map(|p| builtin(p)).collect(),
            defaults: DEFAULT_SCHEMA_DEFAULTS
                .iter()
                .map(|(path, value)| (builtin(path), Value::Bool(*value)))
                .collect(),
            empty_is_absent: DEFAULT_EMPTY_IS_ABSENT.iter().map(|p| builtin(p)).collect(),
            exemptions: Vec::new(),
            updatable_summary: DEFAULT_SUMMARY.to_owned(),
            rollout: Rollout::default(),
        }
    }
}

/// The outcome of [`Policy::evaluate`] (or [`Policy::judge`]) for one UPDATE.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Every compared leaf that changed, sorted (updatable ones included).
    pub changed: Vec<FieldPath>,
    /// The changed leaves that may not change, sorted; empty when the update is allowed.
    pub forbidden: Vec<FieldPath>,
    /// Frozen leaves allowed only because the requester is exempt, sorted.
    pub exempted: Vec<FieldPath>,
    /// The exemptions that allowed them.
    pub exemptions_used: Vec<String>,
    /// The old object is being deleted: everything is allowed so deletion can finish.
    pub being_deleted: bool,
}

impl Evaluation {
    /// Whether the update may proceed.
    pub fn allowed(&self) -> bool {
        self.forbidden.is_empty()
    }
}

impl Policy {
    /// A policy from its parts; `updatable_summary` is written from `updatable` unless the
    /// updatable fields are the built-in ones.
    pub fn new(
        kinds: Vec<GovernedKind>,
        updatable: Vec<FieldPattern>,
        not_compared: Vec<FieldPattern>,
        defaults: Vec<(FieldPattern, Value)>,
        exemptions: Vec<Exemption>,
    ) -> Self {
        let builtin_updatable: Vec<FieldPattern> =
            DEFAULT_UPDATABLE.iter().map(|p| builtin(p)).collect();
        let updatable_summary = if updatable == builtin_updatable {
            DEFAULT_SUMMARY.to_owned()
        } else {
            summarize(&updatable)
        };
        Self {
            kinds: kinds.into_iter().map(Arc::new).collect(),
            updatable,
            not_compared,
            defaults,
            empty_is_absent: DEFAULT_EMPTY_IS_ABSENT.iter().map(|p| builtin(p)).collect(),
            exemptions,
            updatable_summary,
            rollout: Rollout::default(),
        }
    }

    /// This policy with other paths where an empty object is the same as an absent field (a
    /// new policy takes [`DEFAULT_EMPTY_IS_ABSENT`]).
    pub fn with_empty_is_absent(self, empty_is_absent: Vec<FieldPattern>) -> Self {
        Self {
            empty_is_absent,
            ..self
        }
    }

    /// This policy with another rollout mode (a new policy enforces), its overrides and
    /// `mayLowerTo` unchanged.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.rollout.mode = mode;
        self
    }

    /// This policy with another rollout: mode, per-namespace overrides and what the namespace
    /// label may lower to.
    pub fn with_rollout(self, rollout: Rollout) -> Self {
        Self { rollout, ..self }
    }

    /// What is done with an update this policy would deny, in a namespace no override names.
    pub fn mode(&self) -> Mode {
        self.rollout.mode
    }

    /// The mode, the per-namespace overrides and what the namespace label may lower to.
    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    /// The mode a review about an object in `namespace` is judged in when the namespace label
    /// asked for `label` ([`Rollout::resolve`]).
    pub fn effective_mode(&self, namespace: Option<&str>, label: Option<Mode>) -> EffectiveMode {
        self.rollout.resolve(namespace, label)
    }

    /// The governed kind with this group and kind (any version).
    pub fn governed_kind(&self, group: &str, kind: &str) -> Option<&Arc<GovernedKind>> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.kind == kind)
    }

    /// The governed kind served as this group and resource (for subresource requests).
    pub fn governed_resource(&self, group: &str, resource: &str) -> Option<&Arc<GovernedKind>> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.resource == resource)
    }

    /// The kinds this policy governs.
    pub fn kinds(&self) -> &[Arc<GovernedKind>] {
        &self.kinds
    }

    /// The fields that may change, and everything under them.
    pub fn updatable(&self) -> &[FieldPattern] {
        &self.updatable
    }

    /// The fields that are never compared, and everything under them.
    pub fn not_compared(&self) -> &[FieldPattern] {
        &self.not_compared
    }

    /// The schema defaults that are no change.
    pub fn defaults(&self) -> &[(FieldPattern, Value)] {
        &self.defaults
    }

    /// Where an empty object is the same as an absent field; everywhere else a present object,
    /// even an empty one, differs from an absent one.
    pub fn empty_is_absent(&self) -> &[FieldPattern] {
        &self.empty_is_absent
    }

    /// The exemptions.
    pub fn exemptions(&self) -> &[Exemption] {
        &self.exemptions
    }

    /// A sentence for users saying what may change.
    pub fn updatable_summary(&self) -> &str {
        &self.updatable_summary
    }

    fn is_updatable(&self, path: &FieldPath) -> bool {
        self.updatable.iter().any(|u| u.covers(path))
    }

    fn is_not_compared(&self, path: &FieldPath) -> bool {
        self.not_compared.iter().any(|n| n.covers(path))
    }

    /// Judge an UPDATE from `old` to `new`, as a review carries them (read one level deep,
    /// members as raw JSON), sent by `requester`: the diff of [`diff::changed_leaves`], then
    /// [`Policy::judge`]. Fails only on JSON it has to read and cannot (numbers beyond f64,
    /// nesting beyond serde_json's limit).
    pub fn evaluate(
        &self,
        old: &RawObject<'_>,
        new: &RawObject<'_>,
        requester: &Requester<'_>,
    ) -> Result<Evaluation, diff::DiffError> {
        // Most old objects are not being deleted: a byte search spares reading their metadata's
        // members, unless a key there may be escaped (only a backslash can hide the name); the
        // member lookup reads keys decoded, as the diff does.
        let being_deleted = old.get("metadata").is_some_and(|metadata| {
            metadata.contains("\"deletionTimestamp\"") || metadata.contains('\\')
        }) && old
            .pointer(&["metadata", "deletionTimestamp"])
            .is_some_and(|at| at != "null");
        let changed = diff::changed_leaves(old, new, self)?;
        Ok(self.judge(changed, requester, being_deleted))
    }

    /// Judge a set of changed leaves (sorted) sent by `requester`.
    pub fn judge(
        &self,
        changed: Vec<FieldPath>,
        requester: &Requester<'_>,
        being_deleted: bool,
    ) -> Evaluation {
        let mut evaluation = Evaluation {
            being_deleted,
            ..Evaluation::default()
        };
        if !being_deleted {
            let exemptions: Vec<&Exemption> = self
                .exemptions
                .iter()
                .filter(|e| e.applies_to(requester))
                .collect();
            for path in changed.iter().filter(|p| !self.is_updatable(p)) {
                let by: Vec<&Exemption> = exemptions
                    .iter()
                    .copied()
                    .filter(|e| e.covers(path))
                    .collect();
                if by.is_empty() {
                    evaluation.forbidden.push(path.clone());
                } else {
                    evaluation.exempted.push(path.clone());
                    for exemption in by {
                        if !evaluation.exemptions_used.contains(&exemption.name) {
                            evaluation.exemptions_used.push(exemption.name.clone());
                        }
                    }
                }
            }
        }
        evaluation.changed = changed;
        evaluation
    }

    /// The message of a denial, as kubectl shows it after `denied the request: `.
    ///
    /// `PyTorchJob kube-test/pytorch-test: these fields cannot be updated: a, b and 3 more; only …`
    pub fn denial_message(
        &self,
        object: impl std::fmt::Display,
        forbidden: &[FieldPath],
    ) -> String {
        let noun = if forbidden.len() == 1 {
            "this field cannot be updated"
        } else {
            "these fields cannot be updated"
        };
        let listed = list_paths(forbidden, MAX_PATHS_IN_MESSAGE);
        let summary = &self.updatable_summary;
        let mut message = String::with_capacity(listed.len() + summary.len() + 96);
        let _ = write!(message, "{object}: {noun}: {listed}; {summary}");
        message
    }
}

/// `a, b, c, and 3 more`: at most `max` paths, then a count. Written into one string.
pub fn list_paths(paths: &[FieldPath], max: usize) -> String {
    let mut listed = String::with_capacity(64);
    for (i, path) in paths.iter().take(max).enumerate() {
        if i > 0 {
            listed.push_str(", ");
        }
        path.write_to(&mut listed);
    }
    let more = paths.len().saturating_sub(max);
    if more > 0 {
        if !listed.is_empty() {
            listed.push_str(", ");
        }
        let _ = write!(listed, "and {more} more");
    }
    listed
}

/// `only a, b and c may change`.
fn summarize(updatable: &[FieldPattern]) -> String {
    let names: Vec<String> = updatable.iter().map(ToString::to_string).collect();
    match names.as_slice() {
        [] => "no field may change".to_owned(),
        [one] => format!("only {one} may change"),
        [init @ .., last] => format!("only {} and {last} may change", init.join(", ")),
    }
}

impl diff::DiffRules for Policy {
    fn skip(&self, path: &FieldPath) -> bool {
        self.is_not_compared(path)
    }

    fn default_at(&self, path: &FieldPath) -> Option<&Value> {
        self.defaults
            .iter()
            .find(|(at, _)| at.matches(path))
            .map(|(_, value)| value)
    }

    fn empty_is_absent(&self, path: &FieldPath) -> bool {
        self.empty_is_absent.iter().any(|at| at.matches(path))
    }
}

#[cfg(test)]
mod tests;
