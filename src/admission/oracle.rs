//! The oracle for whole review bodies: [`check`] reads a body the plain way and holds
//! [`super::review`]'s answer to the rule.
//!
//! Production reads a body through the body-wide [`crate::json::Index`], takes the envelope's
//! fields from it, borrows `object` and `oldObject` as raw text and diffs them with the raw walk
//! of [`crate::policy::diff`]. The oracle reads the same bytes with serde_json alone: the whole
//! body into a [`Value`] (numbers, escaped keys and strings decoded by serde_json, repeated keys
//! keeping their last value), the objects taken from that tree and compared by
//! [`crate::policy::oracle`]. Compiled, like that module, for the crate's tests and with the
//! `oracle` feature (tests and the fuzz targets); production never runs it.
//!
//! What it shares with production, on purpose: the envelope's *types*. Whether a body is a
//! review the webhook judges is decided by kube's and k8s-openapi's types for the envelope
//! (`uid`, `kind`, `resource`, `operation`, `userInfo`, …); the oracle reads them with those types
//! too (its own struct, read by serde_json from the bytes, the objects skipped), so a repeated or
//! mistyped envelope field is refused by both. The routing — which kind is governed, which
//! operation and subresource are judged — is re-derived here from the policy's kinds.
//!
//! # The rule [`check`] holds production to
//!
//! Production answers with `admission::review_with_label(policy, Some(Mode::Enforce), body)`,
//! so a denial is a denial whatever the policy's mode. By what the oracle reads:
//! - **Not JSON to serde_json** (not JSON, nested beyond serde_json's limit, a number beyond
//!   f64, an escape that is no character): nothing is checked ([`Checked::Unreadable`]).
//!   Production reads such values only where bytes differ, so it may still judge a body whose
//!   unreadable number lies in an unchanged field.
//! - **An envelope kube's types do not read**: production must not judge it (it has no request
//!   to judge), and when the tree names a governed kind in `request.kind`, operation `UPDATE` and
//!   no subresource, production must refuse the body or deny it — fail closed
//!   ([`Checked::Unread`]).
//! - **No review** (another `apiVersion` or `kind`, no `request`, an empty `uid`): production must
//!   refuse it ([`Checked::Refused`]).
//! - **A review the rule does not apply to** (a kind the policy does not govern, not an UPDATE, a
//!   subresource it does not judge): production must allow it, for the same reason
//!   ([`Checked::Skipped`]).
//! - **A governed UPDATE without both objects, or with one that is not a JSON object** (or a
//!   scale UPDATE without both Scales): production must deny it unjudged
//!   ([`Checked::Undecidable`]).
//! - **A governed UPDATE with both objects**: production must judge it with exactly the
//!   oracle's evaluation — every changed path, every forbidden one, the exempted paths, the
//!   exemptions used, whether the job is being deleted — and answer `allowed` exactly when no path
//!   is forbidden ([`Checked::Judged`]); except that with more than
//!   [`MAX_CHANGED_FIELDS`] changed paths production must deny it unjudged, as too many to
//!   judge one by one. A scale UPDATE likewise, as a change of the kind's replicas path when the
//!   Scales' `spec.replicas` differ.

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::decision::Judged;
use super::{Outcome, ReviewError, Reviewed, Skip, Undecidable, Verdict, review_with_label};
use crate::policy::diff::MAX_CHANGED_FIELDS;
use crate::policy::{Evaluation, Mode, Policy, Requester, oracle};

/// What [`check`] found production and the oracle agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// serde_json cannot read the body as one JSON value: not checked.
    Unreadable,
    /// kube's types do not read the envelope; production did not judge it, and failed closed
    /// where the body names a governed UPDATE.
    Unread,
    /// No review: both refuse it.
    Refused,
    /// The rule does not apply, for this reason: both allow it.
    Skipped(Skip),
    /// A governed UPDATE both deny without judging it field by field.
    Undecidable,
    /// A governed UPDATE (or scale) both judge alike, with this verdict.
    Judged(Verdict),
}

/// Read `body` with the oracle, review it with production (in `enforce`), and say where they
/// disagree, as a sentence naming both answers.
pub fn check(policy: &Policy, body: &[u8]) -> Result<Checked, String> {
    let expected = expect(policy, body);
    let production = review_with_label(policy, Some(Mode::Enforce), body);
    compare(&expected, &production)
}

/// What the oracle expects of a body.
#[derive(Debug)]
enum Expected {
    Unreadable,
    Unread {
        governed_update: bool,
    },
    Refused,
    Skipped(Skip),
    Undecidable,
    Judged {
        judged: Judged,
        evaluation: Evaluation,
    },
}

/// An AdmissionReview's envelope as kube's types read it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<Request>,
}

/// The request's fields, each of the type kube's and k8s-openapi's readers give it; the objects
/// skipped here (the oracle reads them as values).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default, rename = "name")]
    _name: String,
    #[serde(default, rename = "namespace")]
    _namespace: Option<String>,
    operation: Operation,
    user_info: UserInfo,
    #[serde(default, rename = "object")]
    _object: Option<IgnoredAny>,
    #[serde(default, rename = "oldObject")]
    _old_object: Option<IgnoredAny>,
    #[serde(default, rename = "dryRun")]
    _dry_run: bool,
}

/// The oracle's reading of `body` under `policy`.
fn expect(policy: &Policy, body: &[u8]) -> Expected {
    let Ok(tree) = serde_json::from_slice::<Value>(body) else {
        return Expected::Unreadable;
    };
    let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
        let text = |at: &str| tree.pointer(at).and_then(Value::as_str);
        let governed_update = text("/request/operation") == Some("UPDATE")
            && text("/request/subResource").is_none_or(str::is_empty)
            && policy
                .governed_kind(
                    text("/request/kind/group").unwrap_or_default(),
                    text("/request/kind/kind").unwrap_or_default(),
                )
                .is_some();
        return Expected::Unread { governed_update };
    };
    let is_review = matches!(
        envelope.api_version.as_str(),
        "admission.k8s.io/v1" | "admission.k8s.io/v1beta1"
    ) && envelope.kind == "AdmissionReview";
    let request = match envelope.request {
        Some(request) if is_review && !request.uid.is_empty() => request,
        _ => return Expected::Refused,
    };
    // A subresource request carries another kind (`autoscaling/v1 Scale`): it is named by the
    // resource it belongs to, as is a request whose kind is empty.
    let subresource = request.sub_resource.as_deref().filter(|s| !s.is_empty());
    let governed = match subresource {
        None if !request.kind.kind.is_empty() => {
            policy.governed_kind(&request.kind.group, &request.kind.kind)
        }
        _ => policy.governed_resource(&request.resource.group, &request.resource.resource),
    };
    let Some(governed) = governed else {
        return Expected::Skipped(Skip::NotGoverned);
    };
    if !matches!(request.operation, Operation::Update) {
        return Expected::Skipped(Skip::NotAnUpdate);
    }
    let replicas = match (subresource, &governed.scale_replicas) {
        (None, _) => None,
        (Some("scale"), Some(replicas)) => Some(replicas),
        _ => return Expected::Skipped(Skip::Subresource),
    };
    let object = |key: &str| tree["request"].get(key).filter(|v| v.is_object());
    let (Some(old), Some(new)) = (object("oldObject"), object("object")) else {
        return Expected::Undecidable;
    };
    let requester = Requester {
        username: request.user_info.username.as_deref().unwrap_or_default(),
        groups: request.user_info.groups.as_deref().unwrap_or_default(),
    };
    match replicas {
        None => Expected::Judged {
            judged: Judged::Update,
            evaluation: oracle::evaluate(policy, old, new, &requester),
        },
        Some(replicas) => {
            let at = |scale: &Value| scale.pointer("/spec/replicas").cloned();
            let (old, new) = (at(old), at(new));
            let changed = oracle::values_differ(
                old.as_ref().unwrap_or(&Value::Null),
                new.as_ref().unwrap_or(&Value::Null),
            );
            let changed = if changed {
                vec![replicas.clone()]
            } else {
                Vec::new()
            };
            Expected::Judged {
                judged: Judged::Scale,
                evaluation: policy.judge(changed, &requester, false),
            }
        }
    }
}

/// Hold production's answer to what the oracle expects (the rule in the module docs).
fn compare(
    expected: &Expected,
    production: &Result<Reviewed, ReviewError>,
) -> Result<Checked, String> {
    let disagree = |what: &str| {
        let production = match production {
            Ok(reviewed) => format!("{:?}", reviewed.decision.outcome),
            Err(error) => format!("refused: {}", super::error_chain(error)),
        };
        Err(format!(
            "{what}: production {production}, oracle {expected:?}"
        ))
    };
    if let Err(error) = production
        && error.is_internal()
    {
        return disagree("production failed");
    }
    let reviewed = match (expected, production) {
        (Expected::Unreadable, _) => return Ok(Checked::Unreadable),
        (Expected::Refused, Err(_)) => return Ok(Checked::Refused),
        (Expected::Refused, Ok(_)) => return disagree("production answered no review"),
        (Expected::Unread { .. }, Err(_)) => return Ok(Checked::Unread),
        (_, Err(_)) => return disagree("production refused a review"),
        (_, Ok(reviewed)) => reviewed,
    };
    let outcome = &reviewed.decision.outcome;
    let verdict = reviewed.decision.verdict();
    let (checked, expected_verdict) = match (expected, outcome) {
        (Expected::Unreadable | Expected::Refused, _) => unreachable!("answered above"),
        (Expected::Unread { .. }, Outcome::Judged { .. }) => {
            return disagree("production judged a request kube's types do not read");
        }
        (Expected::Unread { governed_update }, _) => {
            if *governed_update && verdict.allows() {
                return disagree("production allowed an unread governed UPDATE");
            }
            (Checked::Unread, verdict)
        }
        (Expected::Skipped(skip), Outcome::Skipped(skipped)) if skip == skipped => {
            (Checked::Skipped(*skip), Verdict::Allowed)
        }
        (Expected::Undecidable, Outcome::Undecidable(_)) => (Checked::Undecidable, Verdict::Denied),
        (Expected::Judged { judged, evaluation }, _)
            if *judged == Judged::Update && evaluation.changed.len() > MAX_CHANGED_FIELDS =>
        {
            if !matches!(
                outcome,
                Outcome::Undecidable(Undecidable::TooManyChanges(_))
            ) {
                return disagree("more changed paths than production judges one by one");
            }
            (Checked::Undecidable, Verdict::Denied)
        }
        (
            Expected::Judged { judged, evaluation },
            Outcome::Judged {
                judged: production_judged,
                evaluation: production_evaluation,
                ..
            },
        ) if judged == production_judged => {
            if production_evaluation != evaluation {
                return disagree("another evaluation");
            }
            let verdict = if evaluation.allowed() {
                Verdict::Allowed
            } else {
                Verdict::Denied
            };
            (Checked::Judged(verdict), verdict)
        }
        _ => return disagree("another outcome"),
    };
    if verdict != expected_verdict {
        return disagree(&format!("verdict {verdict:?}, not {expected_verdict:?}"));
    }
    // The bytes sent say the same.
    let response: Value = match serde_json::from_slice(&reviewed.body) {
        Ok(response) => response,
        Err(_) => return disagree("the response is not JSON"),
    };
    if response["response"]["allowed"] != Value::Bool(verdict.allows()) {
        return disagree(&format!(
            "the response says allowed: {}",
            response["response"]["allowed"]
        ));
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::admission::review;
    use serde_json::json;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read(path).unwrap()
    }

    fn checked(body: &[u8]) -> Result<Checked, String> {
        check(&Policy::default(), body)
    }

    /// [`checked`] on a review written by serde_json.
    fn checked_value(review: &Value) -> Result<Checked, String> {
        checked(&serde_json::to_vec(review).unwrap())
    }

    #[test]
    fn recorded_reviews_agree() {
        for (name, expected) in [
            (
                "pytorchjob/image.review.json",
                Checked::Judged(Verdict::Denied),
            ),
            (
                "pytorchjob/args-removed.review.json",
                Checked::Judged(Verdict::Denied),
            ),
            (
                "pytorchjob/metadata-status-only.review.json",
                Checked::Judged(Verdict::Allowed),
            ),
            (
                "pytorchjob/create.review.json",
                Checked::Skipped(Skip::NotAnUpdate),
            ),
            (
                "pytorchjob/status-subresource.review.json",
                Checked::Skipped(Skip::Subresource),
            ),
            (
                "pytorchjob/scale-subresource.review.json",
                Checked::Judged(Verdict::Denied),
            ),
            (
                "reviews/kubewarden-policy-server_pod_with_privileged_containers.review.json",
                Checked::Skipped(Skip::NotGoverned),
            ),
            // A bare request, no AdmissionReview around it: its `kind` is no string.
            (
                "reviews/kubewarden-policies_echo_update_accept.request.json",
                Checked::Unread,
            ),
        ] {
            assert_eq!(checked(&fixture(name)), Ok(expected), "{name}");
        }
    }

    #[test]
    fn bodies_that_are_not_reviews() {
        assert_eq!(checked(b"not json"), Ok(Checked::Unreadable));
        assert_eq!(checked(br#"{"kind":"Pod"}"#), Ok(Checked::Refused));
        let mut review: Value =
            serde_json::from_slice(&fixture("pytorchjob/image.review.json")).unwrap();
        review["request"]["uid"] = json!("");
        assert_eq!(checked_value(&review), Ok(Checked::Refused));
        // A governed UPDATE whose userInfo kube's types refuse: denied unjudged.
        review["request"]["uid"] = json!("u");
        review["request"]["userInfo"] = json!({"username": 7});
        assert_eq!(checked_value(&review), Ok(Checked::Unread));
        // A governed UPDATE without its old object, or with one that is no object.
        review["request"]["userInfo"] = json!({"username": "u"});
        for old in [Value::Null, json!([1]), json!("x")] {
            review["request"]["oldObject"] = old;
            assert_eq!(checked_value(&review), Ok(Checked::Undecidable));
        }
    }

    #[test]
    fn a_number_serde_json_cannot_hold_is_not_checked() {
        let text = String::from_utf8(fixture("pytorchjob/image.review.json")).unwrap();
        let body = text.replacen("\"status\":", "\"status\":1e400,\"x\":", 1);
        assert_ne!(body, text);
        assert_eq!(checked(body.as_bytes()), Ok(Checked::Unreadable));
    }

    #[test]
    fn too_many_changes_are_denied_unjudged() {
        let mut review: Value =
            serde_json::from_slice(&fixture("pytorchjob/image.review.json")).unwrap();
        let list = |v: u8| Value::from(vec![v; MAX_CHANGED_FIELDS + 1]);
        review["request"]["oldObject"]["spec"]["l"] = list(0);
        review["request"]["object"]["spec"]["l"] = list(1);
        assert_eq!(checked_value(&review), Ok(Checked::Undecidable));
    }

    /// The check fails where production's answer differs from the oracle's: a doctored answer.
    #[test]
    fn a_disagreement_is_reported() {
        let policy = Policy::default();
        let body = fixture("pytorchjob/image.review.json");
        let expected = expect(&policy, &body);
        let mut production = review(&policy, &body);
        assert!(compare(&expected, &production).is_ok());
        if let Ok(Reviewed {
            decision:
                super::super::Decision {
                    outcome: Outcome::Judged { evaluation, .. },
                    ..
                },
            ..
        }) = &mut production
        {
            evaluation.forbidden.pop();
        }
        let error = compare(&expected, &production).unwrap_err();
        assert!(error.starts_with("another evaluation"), "{error}");
        let refused: Result<Reviewed, ReviewError> = Err(ReviewError::MissingRequest);
        let error = compare(&expected, &refused).unwrap_err();
        assert!(error.starts_with("production refused a review"), "{error}");
    }
}
