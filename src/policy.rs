//! The decision core: which changes to a running job are allowed.
//!
//! [`Policy`] holds the rule — which kinds it governs, which fields may change, which fields are
//! not compared at all — and [`Policy::evaluate`] applies it to the old and new object of an
//! UPDATE. [`Policy::default`] is the rule of the PyTorchJob update API: only
//! `metadata.labels`, `metadata.annotations`, `spec.activeDeadlineSeconds`,
//! `spec.ttlSecondsAfterFinished` and `spec.cleanPodPolicy` (and their `spec.runPolicy`
//! equivalents, the layout of the current training-operator) may change.
//!
//! Pure and synchronous: no I/O, no async, no Kubernetes client. Everything else in the crate
//! wraps this module; it depends on nothing else in the crate.

pub mod diff;
pub mod path;

use serde_json::Value;

pub use path::{FieldPath, ParsePathError, Segment};

/// The most offending paths a denial message lists; the rest are counted. kubectl prints the
/// message on one line, so it has to stay readable when a whole replica spec was replaced.
pub const MAX_PATHS_IN_MESSAGE: usize = 12;

/// The most `details.causes` a denial carries (one per path); a bound on the response size.
pub const MAX_CAUSES: usize = 256;

/// An API group and kind, e.g. `kubeflow.org` / `PyTorchJob` (any version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupKind {
    /// The API group (`kubeflow.org`).
    pub group: String,
    /// The kind (`PyTorchJob`).
    pub kind: String,
}

impl GroupKind {
    /// A group and kind.
    pub fn new(group: &str, kind: &str) -> Self {
        Self {
            group: group.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

/// The rule: the kinds it governs and, for an UPDATE of one of them, which fields may change.
#[derive(Clone, Debug)]
pub struct Policy {
    kinds: Vec<GroupKind>,
    updatable: Vec<FieldPath>,
    not_compared: Vec<FieldPath>,
    defaults: Vec<(FieldPath, Value)>,
    updatable_summary: String,
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

const DEFAULT_SUMMARY: &str = "only metadata.labels, metadata.annotations, spec.activeDeadlineSeconds, \
     spec.ttlSecondsAfterFinished and spec.cleanPodPolicy (or their spec.runPolicy equivalents) may change";

impl Default for Policy {
    fn default() -> Self {
        let parse_all = |paths: &[&str]| -> Vec<FieldPath> {
            paths
                .iter()
                .map(|p| p.parse().expect("built-in paths are valid"))
                .collect()
        };
        Self {
            kinds: vec![GroupKind::new("kubeflow.org", "PyTorchJob")],
            updatable: parse_all(DEFAULT_UPDATABLE),
            not_compared: parse_all(DEFAULT_NOT_COMPARED),
            defaults: DEFAULT_SCHEMA_DEFAULTS
                .iter()
                .map(|(path, value)| {
                    (
                        path.parse().expect("built-in paths are valid"),
                        Value::Bool(*value),
                    )
                })
                .collect(),
            updatable_summary: DEFAULT_SUMMARY.to_owned(),
        }
    }
}

/// The outcome of [`Policy::evaluate`] for one UPDATE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// Every compared leaf that changed, sorted (updatable ones included).
    pub changed: Vec<FieldPath>,
    /// The changed leaves that may not change, sorted; empty when the update is allowed.
    pub forbidden: Vec<FieldPath>,
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
    /// Whether UPDATEs of this group and kind are judged (any version).
    pub fn governs(&self, group: &str, kind: &str) -> bool {
        self.kinds
            .iter()
            .any(|k| k.group == group && k.kind == kind)
    }

    /// The kinds this policy governs.
    pub fn kinds(&self) -> &[GroupKind] {
        &self.kinds
    }

    /// The paths that may change, and everything under them.
    pub fn updatable(&self) -> &[FieldPath] {
        &self.updatable
    }

    /// The paths that are never compared, and everything under them.
    pub fn not_compared(&self) -> &[FieldPath] {
        &self.not_compared
    }

    /// A sentence for users saying what may change.
    pub fn updatable_summary(&self) -> &str {
        &self.updatable_summary
    }

    fn is_updatable(&self, path: &FieldPath) -> bool {
        self.updatable.iter().any(|u| path.is_under(u))
    }

    fn is_not_compared(&self, path: &FieldPath) -> bool {
        self.not_compared.iter().any(|n| path.is_under(n))
    }

    /// Judge an UPDATE from `old` to `new` (whole objects, as JSON).
    pub fn evaluate(&self, old: &Value, new: &Value) -> Evaluation {
        let being_deleted = !old
            .pointer("/metadata/deletionTimestamp")
            .unwrap_or(&Value::Null)
            .is_null();
        let changed = diff::changed_leaves(old, new, self);
        let forbidden = if being_deleted {
            Vec::new()
        } else {
            changed
                .iter()
                .filter(|path| !self.is_updatable(path))
                .cloned()
                .collect()
        };
        Evaluation {
            changed,
            forbidden,
            being_deleted,
        }
    }

    /// The message of a denial, as kubectl shows it after `denied the request: `.
    ///
    /// `PyTorchJob kube-test/pytorch-test: these fields cannot be updated: a, b and 3 more; only …`
    pub fn denial_message(&self, object: &str, forbidden: &[FieldPath]) -> String {
        let mut listed: Vec<String> = forbidden
            .iter()
            .take(MAX_PATHS_IN_MESSAGE)
            .map(ToString::to_string)
            .collect();
        let more = forbidden.len().saturating_sub(MAX_PATHS_IN_MESSAGE);
        if more > 0 {
            listed.push(format!("and {more} more"));
        }
        let noun = if forbidden.len() == 1 {
            "this field cannot be updated"
        } else {
            "these fields cannot be updated"
        };
        format!(
            "{object}: {noun}: {}; {}",
            listed.join(", "),
            self.updatable_summary
        )
    }
}

impl diff::DiffRules for Policy {
    fn skip(&self, path: &FieldPath) -> bool {
        self.is_not_compared(path)
    }

    fn default_at(&self, path: &FieldPath) -> Option<&Value> {
        self.defaults
            .iter()
            .find(|(at, _)| at == path)
            .map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests;
