//! The policy file (`--policy PATH`, YAML or JSON): the rule as cluster configuration.
//!
//! ```yaml
//! apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1
//! kind: Policy
//! kinds:                       # at least one; TFJob/MXJob are one entry each
//!   - group: kubeflow.org
//!     kind: PyTorchJob
//!     scaleReplicasPath: spec.pytorchReplicaSpecs.Worker.replicas   # judge pytorchjobs/scale
//! updatable:                   # `*` stands for one key or index
//!   - metadata.labels
//! notCompared: [status]        # optional: the built-in list when absent
//! defaults:                    # optional: the built-in list when absent
//!   - {path: spec.runPolicy.suspend, value: false}
//! exemptions:
//!   - name: kueue
//!     serviceAccounts: ["kueue-system:kueue-controller-manager"]
//!     paths: [spec.runPolicy.suspend]   # optional: any field when absent
//! ```
//!
//! Parsing is strict: unknown keys, malformed paths, empty lists where something is required,
//! or identities in the wrong form are errors that name the line, so a server never runs a
//! policy it misread. Pure: text in, [`Policy`] out.

use serde::Deserialize;
use serde_json::Value;

use super::{
    DEFAULT_NOT_COMPARED, DEFAULT_SCHEMA_DEFAULTS, Exemption, FieldPath, FieldPattern,
    GovernedKind, Policy,
};

/// The `apiVersion` a policy file declares.
pub const API_VERSION: &str = "pytorchjob-guard.kubeflow.org/v1alpha1";
/// The `kind` a policy file declares.
pub const KIND: &str = "Policy";

/// A policy file that cannot be used, with the line it went wrong on where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {0}")]
pub struct PolicyFileError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyDocument {
    api_version: String,
    kind: String,
    kinds: Vec<KindEntry>,
    updatable: Vec<FieldPattern>,
    not_compared: Option<Vec<FieldPattern>>,
    defaults: Option<Vec<DefaultEntry>>,
    #[serde(default)]
    exemptions: Vec<ExemptionEntry>,
}

/// A list that must hold at least one item.
#[derive(Deserialize)]
#[serde(try_from = "Vec<T>")]
struct NonEmpty<T>(Vec<T>);

impl<T> TryFrom<Vec<T>> for NonEmpty<T> {
    type Error = String;
    fn try_from(items: Vec<T>) -> Result<Self, String> {
        if items.is_empty() {
            Err("the list must not be empty".to_owned())
        } else {
            Ok(Self(items))
        }
    }
}

/// A string that must not be empty.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct Name(String);

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        if text.trim().is_empty() {
            Err("an empty name".to_owned())
        } else {
            Ok(Self(text))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KindEntry {
    group: Name,
    kind: Name,
    resource: Option<Name>,
    scale_replicas_path: Option<FieldPath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultEntry {
    path: FieldPattern,
    value: Value,
}

/// A service account written `namespace:name`.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct ServiceAccount(String);

impl TryFrom<String> for ServiceAccount {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.split_once(':') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains(':') =>
            {
                Ok(Self(text))
            }
            _ => Err(format!(
                "service account {text:?} is not written `namespace:name`"
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(try_from = "RawExemption")]
struct ExemptionEntry(Exemption);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawExemption {
    name: Name,
    #[serde(default)]
    users: Vec<Name>,
    #[serde(default)]
    groups: Vec<Name>,
    #[serde(default)]
    service_accounts: Vec<ServiceAccount>,
    paths: Option<NonEmpty<FieldPattern>>,
}

impl TryFrom<RawExemption> for ExemptionEntry {
    type Error = String;
    fn try_from(raw: RawExemption) -> Result<Self, String> {
        if raw.users.is_empty() && raw.groups.is_empty() && raw.service_accounts.is_empty() {
            return Err(format!(
                "exemption {:?} names no users, groups or serviceAccounts",
                raw.name.0
            ));
        }
        Ok(Self(Exemption {
            name: raw.name.0,
            users: raw.users.into_iter().map(|n| n.0).collect(),
            groups: raw.groups.into_iter().map(|n| n.0).collect(),
            service_accounts: raw.service_accounts.into_iter().map(|s| s.0).collect(),
            paths: raw.paths.map(|p| p.0),
        }))
    }
}

fn builtin_patterns(paths: &[&str]) -> Vec<FieldPattern> {
    paths
        .iter()
        .map(|p| p.parse().expect("built-in paths are valid"))
        .collect()
}

/// ` at line N` for the top-level `key` (YAML `key:` at the start of a line, or JSON `"key"`),
/// for errors found after parsing, when the parser's own location is gone.
fn at_line(text: &str, key: &str) -> String {
    let yaml = format!("{key}:");
    let json = format!("\"{key}\"");
    text.lines()
        .position(|line| line.starts_with(&yaml) || line.contains(&json))
        .map(|index| format!(" at line {}", index + 1))
        .unwrap_or_default()
}

/// The parser's message, with the line of the offending value when the parser only knows where
/// the enclosing list starts: a bad path or identity is found in the text by its quoted value.
fn relocate(text: &str, error: &serde_yaml_ng::Error) -> String {
    let message = error.to_string();
    let quoted = ["invalid field path \"", "service account \""]
        .iter()
        .find_map(|prefix| message.split_once(prefix))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(value, _)| value);
    let (Some(value), Some(location)) = (quoted, error.location()) else {
        return message;
    };
    let Some(index) = text.lines().position(|line| line.contains(value)) else {
        return message;
    };
    let reported = format!("at line {} column {}", location.line(), location.column());
    let column = text
        .lines()
        .nth(index)
        .and_then(|line| line.find(value))
        .map_or(1, |c| c + 1);
    message.replace(&reported, &format!("at line {} column {column}", index + 1))
}

/// Parse a policy file (YAML, or JSON, which is YAML too).
pub fn parse(text: &str) -> Result<Policy, PolicyFileError> {
    let document: PolicyDocument =
        serde_yaml_ng::from_str(text).map_err(|e| PolicyFileError(relocate(text, &e)))?;
    if document.api_version != API_VERSION || document.kind != KIND {
        return Err(PolicyFileError(format!(
            "expected apiVersion {API_VERSION:?} and kind {KIND:?}, found {:?} and {:?}{}",
            document.api_version,
            document.kind,
            at_line(text, "kind")
        )));
    }
    if document.kinds.is_empty() {
        return Err(PolicyFileError(format!(
            "kinds: the list must not be empty: name at least one kind to govern{}",
            at_line(text, "kinds")
        )));
    }
    let mut kinds: Vec<GovernedKind> = Vec::new();
    for entry in document.kinds {
        let mut kind = GovernedKind::new(&entry.group.0, &entry.kind.0);
        if let Some(resource) = entry.resource {
            kind.resource = resource.0;
        }
        kind.scale_replicas = entry.scale_replicas_path;
        if kinds
            .iter()
            .any(|k| k.group == kind.group && k.kind == kind.kind)
        {
            return Err(PolicyFileError(format!(
                "kinds: {}/{} is listed twice{}",
                kind.group,
                kind.kind,
                at_line(text, "kinds")
            )));
        }
        kinds.push(kind);
    }
    let not_compared = document
        .not_compared
        .unwrap_or_else(|| builtin_patterns(DEFAULT_NOT_COMPARED));
    let defaults = match document.defaults {
        Some(entries) => entries.into_iter().map(|d| (d.path, d.value)).collect(),
        None => DEFAULT_SCHEMA_DEFAULTS
            .iter()
            .map(|(path, value)| {
                (
                    path.parse().expect("built-in paths are valid"),
                    Value::Bool(*value),
                )
            })
            .collect(),
    };
    let mut names: Vec<&str> = Vec::new();
    for exemption in &document.exemptions {
        if names.contains(&exemption.0.name.as_str()) {
            return Err(PolicyFileError(format!(
                "exemptions: the name {:?} is used twice{}",
                exemption.0.name,
                at_line(text, "exemptions")
            )));
        }
        names.push(&exemption.0.name);
    }
    Ok(Policy::new(
        kinds,
        document.updatable,
        not_compared,
        defaults,
        document.exemptions.into_iter().map(|e| e.0).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1
kind: Policy
kinds:
  - group: kubeflow.org
    kind: PyTorchJob
updatable:
  - metadata.labels
";

    fn error_of(text: &str) -> String {
        parse(text).expect_err("must be rejected").to_string()
    }

    #[test]
    fn a_minimal_policy_takes_builtin_not_compared_and_defaults() {
        let policy = parse(MINIMAL).unwrap();
        assert!(policy.governs("kubeflow.org", "PyTorchJob"));
        assert_eq!(policy.kinds()[0].resource, "pytorchjobs");
        assert_eq!(policy.not_compared().len(), DEFAULT_NOT_COMPARED.len());
        assert_eq!(policy.defaults().len(), DEFAULT_SCHEMA_DEFAULTS.len());
        assert_eq!(
            policy.updatable_summary(),
            "only metadata.labels may change"
        );
    }

    #[test]
    fn json_is_accepted() {
        let json = r#"{"apiVersion": "pytorchjob-guard.kubeflow.org/v1alpha1", "kind": "Policy",
            "kinds": [{"group": "kubeflow.org", "kind": "TFJob"}], "updatable": ["metadata.labels"]}"#;
        assert!(parse(json).unwrap().governs("kubeflow.org", "TFJob"));
    }

    #[test]
    fn every_error_names_what_and_where() {
        let cases: &[(&str, &str)] = &[
            (
                &MINIMAL.replace("updatable:", "updateable:"),
                "unknown field `updateable`",
            ),
            (
                &MINIMAL.replace(
                    "    kind: PyTorchJob\n",
                    "    kind: PyTorchJob\n    scale: x\n",
                ),
                "unknown field `scale`",
            ),
            (
                &MINIMAL.replace("  - metadata.labels", "  - metadata..labels"),
                "invalid field path",
            ),
            (
                &MINIMAL.replace("  - metadata.labels", "  - spec.a-b"),
                "expected an identifier",
            ),
            (
                "apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1\nkind: Policy\nkinds: []\nupdatable: []\n",
                "the list must not be empty",
            ),
            (
                &MINIMAL.replace("kind: PyTorchJob", "kind: \"\""),
                "an empty name",
            ),
            (
                &format!("{MINIMAL}exemptions:\n  - name: kueue\n"),
                "names no users, groups or serviceAccounts",
            ),
            (
                &format!(
                    "{MINIMAL}exemptions:\n  - name: kueue\n    serviceAccounts: [kueue-controller-manager]\n"
                ),
                "is not written `namespace:name`",
            ),
            (
                &format!("{MINIMAL}exemptions:\n  - name: kueue\n    users: [a]\n    paths: []\n"),
                "the list must not be empty",
            ),
            (
                &MINIMAL.replace("kind: Policy", "kind: Polcy"),
                "expected apiVersion",
            ),
            (
                &MINIMAL.replace("updatable:\n  - metadata.labels\n", ""),
                "missing field `updatable`",
            ),
            ("kinds: [", "did not find expected node content at line 2"),
        ];
        for (text, expected) in cases {
            let error = error_of(text);
            assert!(
                error.contains(expected),
                "{error:?} lacks {expected:?} for:\n{text}"
            );
            if !expected.starts_with("missing field") {
                assert!(
                    error.contains("line "),
                    "{error:?} names no line for:\n{text}"
                );
            }
        }
        let twice = MINIMAL.replace(
            "kinds:\n",
            "kinds:\n  - group: kubeflow.org\n    kind: PyTorchJob\n",
        );
        assert!(error_of(&twice).contains("listed twice"));
    }

    #[test]
    fn errors_name_the_offending_line() {
        let error = error_of(&MINIMAL.replace("  - metadata.labels", "  - metadata..labels"));
        assert!(error.contains("line 7 column 5"), "{error}");
        // Not the line where the list starts: the line of the bad item.
        let third = MINIMAL.replace(
            "  - metadata.labels\n",
            "  - metadata.labels\n  - metadata.annotations\n  - spec.a-b\n",
        );
        assert!(
            error_of(&third).contains("line 9 column 5"),
            "{}",
            error_of(&third)
        );
        let account = format!(
            "{MINIMAL}exemptions:\n  - name: kueue\n    serviceAccounts:\n      - a:b\n      - nocolon\n"
        );
        assert!(
            error_of(&account).contains("line 12 column 9"),
            "{}",
            error_of(&account)
        );
    }
}
