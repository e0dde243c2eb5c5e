//! The oracle: the rule applied to two whole parsed trees, with no fast path.
//!
//! Production runs [`Policy::evaluate`] on objects read one level deep ([`super::RawObject`]),
//! through the raw walk of [`super::diff::changed_leaves`]. This module computes the same answer
//! the slow, obvious way — parse both objects into [`Value`]s and walk them whole — so tests and
//! the fuzz target can check that speed never changes a verdict. Compiled for the crate's own
//! tests and with the `oracle` feature (which the integration tests and the fuzz crate enable);
//! it is not part of the production API.

use serde_json::Value;

use super::diff::{self, DiffRules};
use super::{Evaluation, FieldPath, Policy, Requester};

/// The sorted, de-duplicated leaf paths at which two whole trees differ under `rules`.
pub fn changed_leaves(old: &Value, new: &Value, rules: &dyn DiffRules) -> Vec<FieldPath> {
    diff::changed_leaves_of_values(old, new, rules)
}

/// [`Policy::evaluate`] on two whole trees.
pub fn evaluate(
    policy: &Policy,
    old: &Value,
    new: &Value,
    requester: &Requester<'_>,
) -> Evaluation {
    let being_deleted = !old
        .pointer("/metadata/deletionTimestamp")
        .unwrap_or(&Value::Null)
        .is_null();
    policy.judge(changed_leaves(old, new, policy), requester, being_deleted)
}
