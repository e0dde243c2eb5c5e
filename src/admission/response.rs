//! Rendering a [`Decision`] into the response AdmissionReview: the one place its wire form is
//! made.
//!
//! The document is written directly into one string, strings escaped as serde_json escapes them
//! ([`crate::json`]), in a fixed key order (every object's keys sorted, as the golden files hold
//! them), so the bytes are deterministic; the serde_json structs it replaced stay, under
//! `cfg(test)`, as the oracle it is checked against. The answer is allowed, or denied as the API
//! server passes it to users — `code: 400`, `reason: BadRequest`, `status: Failure`, a message naming
//! every offending field and one `details.causes` entry per field. Audit annotations say why
//! for every request about a governed kind (the API server prefixes each key with the
//! webhook's name); a warning names the fields an exemption let through, and one the mode a
//! namespace label asked for when the policy kept a stricter one.

use std::fmt;

use super::decision::{Decision, Outcome, Verdict};
use crate::json::write_string;
use crate::policy::mode::MODE_LABEL;
use crate::policy::{FieldPath, MAX_CAUSES, Mode, Policy, RefusedLowering, list_paths};

/// Paths listed in a warning (kubectl prints warnings whole; the API asks for ≤ 120 chars).
const MAX_PATHS_IN_WARNING: usize = 4;
/// Warnings over 256 characters may be truncated by the API server.
const MAX_WARNING_CHARS: usize = 256;
/// Paths listed in one audit annotation.
const MAX_PATHS_IN_AUDIT: usize = 64;
/// An audit annotation value's bound: audit events are stored, keep them small.
const MAX_AUDIT_VALUE_CHARS: usize = 2048;

/// The response AdmissionReview for `decision`, as `/validate` sends it: written straight into
/// one buffer, keys in sorted order. Fails only if a value's `Display` does.
pub fn render(decision: &Decision, policy: &Policy) -> Result<Vec<u8>, fmt::Error> {
    let summary = &decision.summary;
    let outcome = &decision.outcome;
    let verdict = decision.verdict();
    // An allowance is about 200 bytes, a denial with a few causes about 1 KB: written once.
    let mut out = String::with_capacity(1024);
    out.push_str("{\"apiVersion\":");
    write_string(&mut out, summary.version.as_str())?;
    out.push_str(",\"kind\":\"AdmissionReview\",\"response\":{\"allowed\":");
    out.push_str(if verdict.allows() { "true" } else { "false" });
    let annotations = audit_annotations(decision);
    if !annotations.is_empty() {
        out.push_str(",\"auditAnnotations\":{");
        for (i, (key, value)) in annotations.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_string(&mut out, key)?;
            out.push(':');
            write_string(&mut out, value)?;
        }
        out.push('}');
    }
    out.push_str(",\"status\":{");
    match outcome {
        _ if verdict.allows() => {}
        Outcome::Skipped(_) => {}
        Outcome::Judged { object_uid, .. } => {
            let details = Details {
                causes: outcome.forbidden(),
                group: &summary.resource.group,
                kind: summary.governed.as_ref().map_or("", |g| &g.kind),
                name: &summary.name,
                uid: object_uid,
            };
            write_failure(&mut out, &details, &message(decision, policy))?;
        }
        Outcome::Undecidable(_) => {
            write_failure(&mut out, &Details::default(), &message(decision, policy))?;
        }
    }
    out.push_str("},\"uid\":");
    write_string(&mut out, &summary.uid)?;
    let warnings = warnings(decision);
    if !warnings.is_empty() {
        out.push_str(",\"warnings\":[");
        for (i, warning) in warnings.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_string(&mut out, warning)?;
        }
        out.push(']');
    }
    out.push_str("}}");
    Ok(out.into_bytes())
}

/// What a denial's `status.details` says: the forbidden fields (at most [`MAX_CAUSES`]) and the
/// object; empty parts are left out.
#[derive(Default)]
struct Details<'a> {
    causes: &'a [FieldPath],
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    uid: &'a str,
}

/// The members of a denial's `status` as the API server passes it to users: code 400, the
/// details, the message, reason BadRequest, status Failure.
fn write_failure(out: &mut String, details: &Details<'_>, message: &str) -> fmt::Result {
    out.push_str("\"code\":400,\"details\":{");
    let mut first = true;
    let mut key = |out: &mut String, key: &str| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
    };
    if !details.causes.is_empty() {
        key(out, "causes");
        out.push('[');
        let mut text = String::with_capacity(64);
        for (i, field) in details.causes.iter().take(MAX_CAUSES).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"field\":");
            text.clear();
            field.write_to(&mut text);
            write_string(out, &text)?;
            out.push_str(
                ",\"message\":\"field cannot be updated\",\"reason\":\"FieldValueForbidden\"}",
            );
        }
        out.push(']');
    }
    for (name, value) in [
        ("group", details.group),
        ("kind", details.kind),
        ("name", details.name),
        ("uid", details.uid),
    ] {
        if !value.is_empty() {
            key(out, name);
            write_string(out, value)?;
        }
    }
    out.push('}');
    if !message.is_empty() {
        out.push_str(",\"message\":");
        write_string(out, message)?;
    }
    out.push_str(",\"reason\":\"BadRequest\",\"status\":\"Failure\"");
    Ok(())
}

/// The message of a denial, as kubectl shows it after `denied the request: ` (empty when the
/// rule allows the request; in `warn` and `audit`, what `enforce` would have said):
/// `PyTorchJob kube-test/pytorch-test: these fields cannot be updated: a, b and 3 more; only …`.
pub fn message(decision: &Decision, policy: &Policy) -> String {
    let subject = decision.summary.subject();
    match &decision.outcome {
        Outcome::Judged { evaluation, .. } if !evaluation.allowed() => {
            policy.denial_message(subject, &evaluation.forbidden)
        }
        Outcome::Undecidable(cause) => format!("{subject}: {}", super::error_chain(cause)),
        _ => String::new(),
    }
}

/// The warning kubectl prints when the namespace label asked for a weaker mode than the policy
/// lets it select:
/// `pytorchjob-guard: the namespace label pytorchjob-guard.kubeflow.org/mode asked for audit mode; the policy kept enforce mode (namespaceLabel.mayLowerTo does not list audit)`.
pub fn refused_lowering_warning(refused: RefusedLowering) -> String {
    let RefusedLowering { requested, kept } = refused;
    format!(
        "pytorchjob-guard: the namespace label {MODE_LABEL} asked for {requested} mode; the policy kept {kept} mode (namespaceLabel.mayLowerTo does not list {requested})"
    )
}

/// The warnings kubectl prints (`Warning: …`), each within [`MAX_WARNING_CHARS`], at most three:
/// that the namespace label's lowering was refused; in `warn` mode, what `enforce` would deny;
/// and which frozen fields an exemption let change.
fn warnings(decision: &Decision) -> Vec<String> {
    let outcome = &decision.outcome;
    let mut warnings = Vec::new();
    if let Some(refused) = decision.refused_lowering() {
        warnings.push(truncate(
            refused_lowering_warning(refused),
            MAX_WARNING_CHARS,
        ));
    }
    if decision.mode() == Mode::Warn && decision.verdict() == Verdict::WouldDeny {
        let why = match outcome {
            Outcome::Undecidable(cause) => super::error_chain(cause),
            _ => {
                let forbidden = outcome.forbidden();
                let noun = if forbidden.len() == 1 {
                    "this field cannot be updated"
                } else {
                    "these fields cannot be updated"
                };
                format!("{noun}: {}", list_paths(forbidden, MAX_PATHS_IN_WARNING))
            }
        };
        let warning = format!("pytorchjob-guard warn mode: enforce would deny this update: {why}");
        warnings.push(truncate(warning, MAX_WARNING_CHARS));
    }
    if !outcome.exempted().is_empty() {
        let warning = format!(
            "pytorchjob-guard: exemption {} allowed frozen fields to change: {}",
            outcome.exemptions().join(", "),
            list_paths(outcome.exempted(), MAX_PATHS_IN_WARNING)
        );
        warnings.push(truncate(warning, MAX_WARNING_CHARS));
    }
    warnings
}

/// The audit annotation of a refused lowering: `requested audit, kept enforce`.
pub const MODE_LOWERING_REFUSED: &str = "mode-lowering-refused";

/// Audit annotations for every decision about a governed kind, so the cluster's audit log
/// says why; none for other kinds. Sorted by key, as a JSON object's keys are written here.
fn audit_annotations(decision: &Decision) -> Vec<(&'static str, String)> {
    let mut annotations = Vec::new();
    if decision.summary.governed.is_none() {
        return annotations;
    }
    let outcome = &decision.outcome;
    let mut put = |key: &'static str, value: String| {
        annotations.push((key, truncate(value, MAX_AUDIT_VALUE_CHARS)));
    };
    if !outcome.changed().is_empty() {
        put(
            "changed-fields",
            list_paths(outcome.changed(), MAX_PATHS_IN_AUDIT),
        );
    }
    if !outcome.forbidden().is_empty() {
        put(
            "denied-fields",
            list_paths(outcome.forbidden(), MAX_PATHS_IN_AUDIT),
        );
    }
    if !outcome.exemptions().is_empty() {
        put(
            "exempted-fields",
            list_paths(outcome.exempted(), MAX_PATHS_IN_AUDIT),
        );
        put("exemptions", outcome.exemptions().join(", "));
    }
    if decision.mode() != Mode::Enforce {
        put("mode", decision.mode().as_str().to_owned());
    }
    if let Some(RefusedLowering { requested, kept }) = decision.refused_lowering() {
        put(
            MODE_LOWERING_REFUSED,
            format!("requested {requested}, kept {kept}"),
        );
    }
    put("reason", outcome.reason().as_str().to_owned());
    put("verdict", decision.verdict().as_str().to_owned());
    debug_assert!(annotations.is_sorted_by_key(|(key, _)| *key));
    annotations
}

/// `text`, cut to at most `max` characters with an ellipsis.
fn truncate(text: String, max: usize) -> String {
    // No more bytes than `max` is no more characters either.
    if text.len() <= max || text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The response as serde_json serializes it from typed structs: what [`render`] writes by hand,
/// kept as the oracle its bytes are checked against.
#[cfg(test)]
mod oracle {
    use serde::{Serialize, Serializer};

    use super::{audit_annotations, message, warnings};
    use crate::admission::decision::{Decision, Outcome};
    use crate::policy::{FieldPath, MAX_CAUSES, Policy};

    /// The response AdmissionReview (keys in sorted order).
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Review<'a> {
        api_version: &'static str,
        kind: &'static str,
        response: Response<'a>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Response<'a> {
        allowed: bool,
        #[serde(
            serialize_with = "serialize_annotations",
            skip_serializing_if = "Vec::is_empty"
        )]
        audit_annotations: Vec<(&'static str, String)>,
        status: Status<'a>,
        uid: &'a str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    }

    /// A `metav1.Status`, empty when allowed.
    #[derive(Default, Serialize)]
    struct Status<'a> {
        #[serde(skip_serializing_if = "is_zero")]
        code: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        details: Option<Details<'a>>,
        #[serde(skip_serializing_if = "String::is_empty")]
        message: String,
        #[serde(skip_serializing_if = "str::is_empty")]
        reason: &'static str,
        #[serde(skip_serializing_if = "str::is_empty")]
        status: &'static str,
    }

    #[derive(Default, Serialize)]
    struct Details<'a> {
        #[serde(
            serialize_with = "serialize_causes",
            skip_serializing_if = "<[_]>::is_empty"
        )]
        causes: &'a [FieldPath],
        #[serde(skip_serializing_if = "str::is_empty")]
        group: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        kind: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        name: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        uid: &'a str,
    }

    /// The annotations as a JSON object, in the (sorted) order [`audit_annotations`] made them.
    fn serialize_annotations<S: Serializer>(
        annotations: &[(&'static str, String)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(annotations.iter().map(|(key, value)| (key, value)))
    }

    fn is_zero(code: &u16) -> bool {
        *code == 0
    }

    /// One `details.causes` entry per forbidden field (at most [`MAX_CAUSES`]), written without
    /// building them.
    fn serialize_causes<S: Serializer>(
        paths: &&[FieldPath],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Cause<'p> {
            #[serde(serialize_with = "display")]
            field: &'p FieldPath,
            message: &'static str,
            reason: &'static str,
        }
        fn display<S: Serializer>(path: &&FieldPath, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(path)
        }
        serializer.collect_seq(paths.iter().take(MAX_CAUSES).map(|field| Cause {
            field,
            message: "field cannot be updated",
            reason: "FieldValueForbidden",
        }))
    }

    /// The response AdmissionReview for `decision`.
    pub(super) fn render(
        decision: &Decision,
        policy: &Policy,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let summary = &decision.summary;
        let outcome = &decision.outcome;
        let verdict = decision.verdict();
        let status = match outcome {
            _ if verdict.allows() => Status::default(),
            Outcome::Skipped(_) => Status::default(),
            Outcome::Judged { object_uid, .. } => failure(
                message(decision, policy),
                Details {
                    causes: outcome.forbidden(),
                    group: &summary.resource.group,
                    kind: summary.governed.as_ref().map_or("", |g| &g.kind),
                    name: &summary.name,
                    uid: object_uid,
                },
            ),
            Outcome::Undecidable(_) => failure(message(decision, policy), Details::default()),
        };
        let review = Review {
            api_version: summary.version.as_str(),
            kind: "AdmissionReview",
            response: Response {
                allowed: verdict.allows(),
                audit_annotations: audit_annotations(decision),
                status,
                uid: &summary.uid,
                warnings: warnings(decision),
            },
        };
        // An allowance is about 200 bytes, a denial with a few causes about 1 KB: written once.
        let mut body = Vec::with_capacity(1024);
        serde_json::to_writer(&mut body, &review)?;
        Ok(body)
    }

    /// A denial as the API server passes it to users: code 400, reason BadRequest, status Failure.
    fn failure<'a>(message: String, details: Details<'a>) -> Status<'a> {
        Status {
            code: 400,
            details: Some(details),
            message,
            reason: "BadRequest",
            status: "Failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use serde_json::json;

    use crate::admission::review_with_label;
    use crate::policy::{Mode, Policy, file};

    /// Every policy shape a response depends on: the built-in one, a preset with an exemption
    /// (exempted fields, warnings), and a policy file.
    fn policies() -> Vec<Policy> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |path: &str| file::parse(&std::fs::read_to_string(root.join(path)).unwrap());
        vec![
            Policy::default(),
            read("policies/kueue.yaml").unwrap(),
            read("manifests/base/policy.yaml").unwrap(),
        ]
    }

    /// The response written by hand and the one serde_json serializes for the same decision,
    /// under `policy` in `mode` with the namespace label asking for `label`.
    fn both(policy: &Policy, (mode, label): Case, body: &[u8]) -> Option<(String, String)> {
        let policy = policy.clone().with_mode(mode);
        let reviewed = review_with_label(&policy, label, body).ok()?;
        let oracle = super::oracle::render(&reviewed.decision, &policy).unwrap();
        Some((
            String::from_utf8(reviewed.body).unwrap(),
            String::from_utf8(oracle).unwrap(),
        ))
    }

    /// A policy mode and the mode the namespace label asks for.
    type Case = (Mode, Option<Mode>);

    /// Each mode, and a lowering the policy refuses (its warning and annotation).
    const CASES: [Case; 4] = [
        (Mode::Enforce, None),
        (Mode::Warn, None),
        (Mode::Audit, None),
        (Mode::Enforce, Some(Mode::Audit)),
    ];

    #[test]
    fn every_recorded_review_is_rendered_as_serde_json_serializes_it() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut reviews = 0;
        let kinds = std::fs::read_dir(root.join("kinds")).unwrap();
        let kinds = kinds
            .map(|kind| kind.unwrap().path())
            .filter(|kind| kind.is_dir());
        for dir in [root.join("pytorchjob"), root.join("reviews")]
            .into_iter()
            .chain(kinds)
        {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !(name.ends_with(".review.json") || name.ends_with(".request.json")) {
                    continue;
                }
                let body = std::fs::read(&path).unwrap();
                for policy in policies() {
                    for case in CASES {
                        // A body that is no answerable review has no response to compare.
                        if let Some((written, serialized)) = both(&policy, case, &body) {
                            assert_eq!(written, serialized, "{name} in {case:?}");
                            reviews += 1;
                        }
                    }
                }
            }
        }
        // 17 PyTorchJob and recorded reviews, and 4 of every other kind, in 4 cases, under 3 policies.
        assert!(
            reviews >= (17 + 4 * 7) * CASES.len() * 3,
            "only {reviews} responses compared"
        );
    }

    /// Both warnings at once: `warn` mode's would-deny and an exemption's, on Kueue's suspend
    /// with a forbidden change beside it.
    #[test]
    fn two_warnings_are_rendered_as_serde_json_serializes_them() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fixture = root.join("tests/fixtures/pytorchjob/kueue-suspend.review.json");
        let mut review: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
        let replicas = "/request/object/spec/pytorchReplicaSpecs/Worker/replicas";
        *review.pointer_mut(replicas).unwrap() = json!(64);
        let body = serde_json::to_vec(&review).unwrap();
        let kueue = &policies()[1];
        let (written, serialized) = both(kueue, (Mode::Warn, None), &body).unwrap();
        let response: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(
            response["response"]["warnings"].as_array().unwrap().len(),
            2
        );
        assert_eq!(written, serialized);
    }

    /// Texts that need escaping wherever the response echoes the request.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a\"\\\\\u{0}-\u{1f}\u{7f}é./\\[\\]]{0,12}"
        ]
    }

    proptest! {
        /// Any uid, name, namespace, user and changed keys (labels allowed, spec keys
        /// forbidden, a scalar turned object) are written as serde_json writes them.
        #[test]
        fn any_decision_is_rendered_as_serde_json_serializes_it(
            uid in text(), name in text(), namespace in text(), user in text(),
            keys in prop::collection::vec(text(), 0..6), mode in 0..CASES.len(), undecidable: bool,
        ) {
            let object = |version: &str| {
                let changed: serde_json::Map<String, serde_json::Value> =
                    keys.iter().map(|key| (key.clone(), json!(version))).collect();
                json!({
                    "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                    "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": changed},
                    "spec": {"pytorchReplicaSpecs": changed, "runPolicy": {"cleanPodPolicy": version}},
                })
            };
            let review = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": uid,
                    "kind": {"group": "kubeflow.org", "version": "v1", "kind": "PyTorchJob"},
                    "resource": {"group": "kubeflow.org", "version": "v1", "resource": "pytorchjobs"},
                    "name": name, "namespace": namespace, "operation": "UPDATE",
                    "userInfo": {"username": user, "groups": [user]},
                    "object": if undecidable { json!([1]) } else { object("new") },
                    "oldObject": object("old"),
                },
            });
            let body = serde_json::to_vec(&review).unwrap();
            for policy in policies() {
                if let Some((written, serialized)) = both(&policy, CASES[mode], &body) {
                    prop_assert_eq!(written, serialized);
                }
            }
        }
    }
}
