//! Rendering a [`Decision`] into the response AdmissionReview: the one place its wire form is
//! made.
//!
//! The document is serialized directly, in a fixed key order (every object's keys sorted, as the
//! golden files hold them), so the bytes are deterministic: allowed; or denied as the API server
//! passes it to users — `code: 400`, `reason: BadRequest`, `status: Failure`, a message naming
//! every offending field and one `details.causes` entry per field. Audit annotations say why
//! for every request about a governed kind (the API server prefixes each key with the
//! webhook's name); a warning names the fields an exemption let through.

use serde::{Serialize, Serializer};

use super::decision::{Decision, Outcome, Verdict};
use crate::policy::{FieldPath, MAX_CAUSES, Mode, Policy, list_paths};

/// Paths listed in a warning (kubectl prints warnings whole; the API asks for ≤ 120 chars).
const MAX_PATHS_IN_WARNING: usize = 4;
/// Warnings over 256 characters may be truncated by the API server.
const MAX_WARNING_CHARS: usize = 256;
/// Paths listed in one audit annotation.
const MAX_PATHS_IN_AUDIT: usize = 64;
/// An audit annotation value's bound: audit events are stored, keep them small.
const MAX_AUDIT_VALUE_CHARS: usize = 2048;

/// The response AdmissionReview (keys in sorted order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
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
fn serialize_causes<S: Serializer>(paths: &&[FieldPath], serializer: S) -> Result<S::Ok, S::Error> {
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

/// The response AdmissionReview for `decision`, as `/validate` sends it.
pub fn render(decision: &Decision, policy: &Policy) -> Result<Vec<u8>, serde_json::Error> {
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

/// The warnings kubectl prints (`Warning: …`), each within [`MAX_WARNING_CHARS`], at most two:
/// in `warn` mode, what `enforce` would deny; and which frozen fields an exemption let change.
fn warnings(decision: &Decision) -> Vec<String> {
    let outcome = &decision.outcome;
    let mut warnings = Vec::new();
    if decision.mode == Mode::Warn && decision.verdict() == Verdict::WouldDeny {
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
    if decision.mode != Mode::Enforce {
        put("mode", decision.mode.as_str().to_owned());
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
