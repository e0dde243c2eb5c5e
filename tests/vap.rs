//! `pytorchjob-guard vap`: the policy compiled to a ValidatingAdmissionPolicy, checked three ways.
//!
//! - **Golden and deployable.** For the built-in policy and every file in `policies/`, what the
//!   real binary prints equals the committed `manifests/components/vap/<name>/vap.yaml` (the
//!   golden file; `PYTORCHJOB_GUARD_BLESS=1` rewrites it), is deterministic, parses into
//!   k8s-openapi's `admissionregistration.k8s.io/v1` types and back to the same documents, and
//!   its kustomization applies nothing else.
//! - **Equivalent.** Every CEL expression of the generated policy is evaluated with the `cel`
//!   crate, as the API server would (match rules, variables in order, the validation, the
//!   message and the audit annotation), against every golden review in `tests/fixtures` and
//!   every real example job of every kind mutated as `tests/properties.rs` does (every leaf
//!   changed and removed, every container emptied and extended, updatable, not-compared,
//!   defaulted, exempt and deletion cases, numbers rewritten, scale requests), under every
//!   policy and several requesters. The verdict must equal the webhook's
//!   (`admission::review_in`, enforce mode); the denied fields must name exactly the webhook's
//!   forbidden paths, coarsened to the levels the CEL names. A difference is accepted only when
//!   one of the [`EXCEPTIONS`] explains it (the README lists the same), and every exception must
//!   be exercised, so the list cannot go stale silently.
//! - **Refusals** are unit tests in `src/vap.rs`.
//!
//! What the `cel` crate shares with the API server's cel-go, and what the generated CEL keeps to:
//! dynamic (`dyn`) objects as VAP sees them (no schema types), heterogeneous equality (`1 == 1.0`
//! for values), `all`/`filter`/`map` over map keys, `in`, `type(x) == map`, and the strings
//! extension's `join`. Nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cel::{Context, Env, Program};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use pytorchjob_guard::admission::{self, Verdict};
use pytorchjob_guard::policy::{FieldPath, Mode, Policy, Segment, file};
use pytorchjob_guard::vap;
use serde_json::{Map, Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The policies `vap` is generated for: the built-in one and every file in `policies/`, named
/// as their component directories.
fn policies() -> Vec<(String, Option<PathBuf>, Policy)> {
    let mut all = vec![("builtin".to_owned(), None, Policy::default())];
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "default, kueue and training-operator at least"
    );
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let policy = file::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        all.push((name, Some(path), policy));
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Golden files and the kustomize component

/// The component of a policy; the built-in policy is policies/default.yaml written out, so both
/// must print the same `default` component.
fn component_dir(name: &str) -> PathBuf {
    let name = if name == "builtin" { "default" } else { name };
    root().join("manifests/components/vap").join(name)
}

fn run_vap(policy: Option<&Path>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pytorchjob-guard"));
    command
        .arg("vap")
        .env_remove("PYTORCHJOB_GUARD_POLICY")
        .env_remove("PYTORCHJOB_GUARD_MODE");
    if let Some(path) = policy {
        command.arg("--policy").arg(path);
    }
    let output = command.output().expect("the binary runs");
    assert!(
        output.status.success(),
        "vap failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn vap_output_is_the_committed_component_for_every_policy() {
    let bless = std::env::var_os("PYTORCHJOB_GUARD_BLESS").is_some();
    for (name, path, policy) in policies() {
        let printed = run_vap(path.as_deref());
        assert_eq!(printed, run_vap(path.as_deref()), "{name}: deterministic");
        let generated = vap::to_yaml(&vap::generate(&policy).unwrap()).unwrap();
        assert_eq!(
            printed, generated,
            "{name}: the command prints what the library generates"
        );
        let golden = component_dir(&name).join("vap.yaml");
        if bless {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &printed).unwrap();
        }
        let committed = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        assert!(
            committed == printed,
            "{} differs from `pytorchjob-guard vap{}`; re-bless with PYTORCHJOB_GUARD_BLESS=1",
            golden.display(),
            path.map(|p| format!(" --policy {}", p.display()))
                .unwrap_or_default()
        );
    }
}

#[test]
fn each_component_applies_only_its_policy_and_bindings() {
    for (name, _, policy) in policies() {
        let dir = component_dir(&name);
        let kustomization: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(kustomization["resources"], json!(["vap.yaml"]), "{name}");
        for key in [
            "components",
            "patches",
            "configMapGenerator",
            "secretGenerator",
            "images",
        ] {
            assert!(kustomization.get(key).is_none(), "{name}: {key}");
        }
        let text = std::fs::read_to_string(dir.join("vap.yaml")).unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"
            ],
            "{name}: no Deployment, Service, certificate or webhook configuration, and one \
             binding: the presets enforce everywhere and no label may lower them"
        );
        for doc in &docs {
            assert_eq!(
                doc["apiVersion"], "admissionregistration.k8s.io/v1",
                "{name}"
            );
        }
        // Typed and back: a misspelled field would be dropped by k8s-openapi and differ.
        let typed: ValidatingAdmissionPolicy = serde_json::from_value(docs[0].clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), docs[0], "{name}");
        let mut actions = Vec::new();
        for doc in &docs[1..] {
            let binding: ValidatingAdmissionPolicyBinding =
                serde_json::from_value(doc.clone()).unwrap();
            assert_eq!(&serde_json::to_value(&binding).unwrap(), doc, "{name}");
            let spec = binding.spec.unwrap();
            assert_eq!(spec.policy_name.as_deref(), Some(vap::POLICY_NAME));
            actions.push(spec.validation_actions.unwrap().join(","));
        }
        assert_eq!(actions, ["Deny"], "{name}");
        // Every expression is CEL the interpreter parses.
        let compiled = Compiled::new(&vap::generate(&policy).unwrap());
        assert!(!compiled.variables.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// The generated policy, evaluated

/// The generated policy's match rules and compiled expressions.
struct Compiled {
    env: Arc<Env>,
    /// (group, resources with subresources) the policy matches, UPDATE only.
    rules: Vec<(String, Vec<String>)>,
    variables: Vec<(String, Program)>,
    validation: Program,
    message: Program,
    annotation: Program,
}

impl Compiled {
    fn new(generated: &vap::Generated) -> Self {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings).unwrap();
        let env = Arc::new(env);
        let compile = |text: &str| {
            env.compile(text)
                .unwrap_or_else(|e| panic!("the generated CEL parses: {e:?}\n{text}"))
        };
        let spec = generated.policy.spec.as_ref().unwrap();
        let constraints = spec.match_constraints.as_ref().unwrap();
        assert_eq!(constraints.match_policy.as_deref(), Some("Equivalent"));
        assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
        let rules = constraints
            .resource_rules
            .as_ref()
            .unwrap()
            .iter()
            .map(|rule| {
                assert_eq!(rule.operations.as_deref(), Some(&["UPDATE".to_owned()][..]));
                assert_eq!(rule.api_versions.as_deref(), Some(&["*".to_owned()][..]));
                let groups = rule.api_groups.as_ref().unwrap();
                assert_eq!(groups.len(), 1);
                (groups[0].clone(), rule.resources.clone().unwrap())
            })
            .collect();
        let variables = spec
            .variables
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| (v.name.clone(), compile(&v.expression)))
            .collect();
        let validations = spec.validations.as_ref().unwrap();
        assert_eq!(validations.len(), 1);
        let annotations = spec.audit_annotations.as_ref().unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations[0].key, vap::DENIED_FIELDS_ANNOTATION);
        Self {
            rules,
            variables,
            validation: compile(&validations[0].expression),
            message: compile(validations[0].message_expression.as_deref().unwrap()),
            annotation: compile(&annotations[0].value_expression),
            env,
        }
    }

    /// What the API server does with `request` (an AdmissionRequest as JSON).
    fn decide(&self, request: &Value) -> VapOutcome {
        let operation = request["operation"].as_str().unwrap_or_default();
        let group = request["resource"]["group"].as_str().unwrap_or_default();
        let resource = request["resource"]["resource"].as_str().unwrap_or_default();
        let sub = request["subResource"].as_str().unwrap_or_default();
        let full = if sub.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{sub}")
        };
        let matched = operation == "UPDATE"
            && self
                .rules
                .iter()
                .any(|(g, resources)| g == group && resources.contains(&full));
        if !matched {
            return VapOutcome::NotMatched;
        }
        let mut context = Context::with_env(self.env.clone());
        context.add_variable_from_value("object", cel_value(&request["object"]));
        context.add_variable_from_value("oldObject", cel_value(&request["oldObject"]));
        context.add_variable_from_value("request", cel_value(&api_server_request(request)));
        let mut variables: std::collections::HashMap<String, cel::Value> = Default::default();
        for (name, program) in &self.variables {
            context.add_variable_from_value("variables", variables.clone());
            match program.execute(&context) {
                Ok(value) => {
                    variables.insert(name.clone(), value);
                }
                Err(error) => return VapOutcome::Error(format!("variables.{name}: {error:?}")),
            }
        }
        context.add_variable_from_value("variables", variables.clone());
        let fields = match variables.get("deniedFields") {
            Some(cel::Value::List(list)) => list
                .iter()
                .map(|v| match v {
                    cel::Value::String(s) => s.to_string(),
                    other => panic!("a field name: {other:?}"),
                })
                .collect::<Vec<_>>(),
            other => panic!("deniedFields is a list: {other:?}"),
        };
        match self.validation.execute(&context) {
            Ok(cel::Value::Bool(true)) => {
                assert!(fields.is_empty());
                assert_eq!(self.annotation.execute(&context), Ok(cel::Value::Null));
                VapOutcome::Allowed
            }
            Ok(cel::Value::Bool(false)) => {
                let message = match self.message.execute(&context) {
                    Ok(cel::Value::String(s)) => s.to_string(),
                    other => panic!("the message is a string: {other:?}"),
                };
                let annotation = match self.annotation.execute(&context) {
                    Ok(cel::Value::String(s)) => s.to_string(),
                    other => panic!("the annotation is a string: {other:?}"),
                };
                assert_eq!(annotation, fields.join(", "));
                assert!(message.contains(&annotation), "{message}");
                VapOutcome::Denied(fields)
            }
            other => VapOutcome::Error(format!("validation: {other:?}")),
        }
    }
}

#[derive(Debug, PartialEq)]
enum VapOutcome {
    /// The policy's match rules do not select the request.
    NotMatched,
    Allowed,
    /// Denied, naming these fields.
    Denied(Vec<String>),
    /// An evaluation error: with failurePolicy Fail, a denial.
    Error(String),
}

/// The `request` variable as the API server fills it: `subResource` is `""` and
/// `userInfo.groups` `[]` when absent.
fn api_server_request(request: &Value) -> Value {
    let mut request = request.clone();
    let map = request.as_object_mut().unwrap();
    map.remove("object");
    map.remove("oldObject");
    map.entry("subResource").or_insert(json!(""));
    if map.get("subResource") == Some(&Value::Null) {
        map.insert("subResource".to_owned(), json!(""));
    }
    let user = map.entry("userInfo").or_insert(json!({}));
    let user = user.as_object_mut().unwrap();
    user.entry("username").or_insert(json!(""));
    user.entry("groups").or_insert(json!([]));
    request
}

/// A JSON value as the API server hands an unstructured object to CEL: integers as `int`,
/// other numbers as `double`.
fn cel_value(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap()),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(map) => {
            let map: std::collections::HashMap<String, cel::Value> =
                map.iter().map(|(k, v)| (k.clone(), cel_value(v))).collect();
            map.into()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The webhook's verdict, and the comparison

#[derive(Debug)]
enum WebhookOutcome {
    Allowed,
    Denied(Vec<FieldPath>),
}

fn webhook(policy: &Policy, review: &Value) -> WebhookOutcome {
    let body = serde_json::to_vec(review).unwrap();
    let reviewed = admission::review_with_label(policy, Some(Mode::Enforce), &body).unwrap();
    match reviewed.decision.outcome.verdict() {
        Verdict::Allowed => WebhookOutcome::Allowed,
        _ => WebhookOutcome::Denied(reviewed.decision.outcome.forbidden().to_vec()),
    }
}

/// A documented difference between the webhook and the generated policy: README.md, "With or
/// without the webhook", lists the same.
struct Exception {
    name: &'static str,
    /// Whether it explains the difference of this case.
    explains: fn(&Case, &WebhookOutcome, &VapOutcome) -> bool,
}

/// The listed exceptions. Data, so issue 19 (`{}` differs from absent except at
/// `emptyIsAbsent` paths) changes [`ABSENT_INSIDE`] and this list, not the test.
const EXCEPTIONS: &[Exception] = &[Exception {
    // Inside a subtree CEL compares whole, `==` sees `{}`, `[]` and `null` members as
    // different from absent ones; the webhook's leaf diff does not.
    name: "empty-inside-a-subtree",
    explains: |case, webhook, vap| {
        matches!(webhook, WebhookOutcome::Allowed)
            && match vap {
                VapOutcome::Denied(fields) => fields.iter().all(|field| {
                    let (old, new) = (at(&case.old, field), at(&case.new, field));
                    normalized(&old) == normalized(&new)
                }),
                _ => false,
            }
    },
}];

/// What the webhook's diff may treat as absent deep inside a value: `null`, `[]`, and `{}` (at
/// the policy's `emptyIsAbsent` paths; counted here wherever it stands, so the exception covers
/// only differences where the VAP is the stricter).
const ABSENT_INSIDE: fn(&Value) -> bool = |v| match v {
    Value::Null => true,
    Value::Object(map) => map.is_empty(),
    Value::Array(items) => items.is_empty(),
    _ => false,
};

/// `value` with every member the webhook's diff treats as absent removed, and numbers as f64:
/// two values the webhook sees as the same normalize equal.
fn normalized(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !ABSENT_INSIDE(v))
                .collect(),
        ),
        Value::Array(items) => {
            let mut items: Vec<Value> = items
                .iter()
                .map(|v| {
                    let v = normalized(v);
                    if ABSENT_INSIDE(&v) { Value::Null } else { v }
                })
                .collect();
            while items.last().is_some_and(Value::is_null) {
                items.pop();
            }
            if items.is_empty() {
                Value::Null
            } else {
                Value::Array(items)
            }
        }
        Value::Number(n) => json!(n.as_f64()),
        other => other.clone(),
    }
}

/// The value at a denied field (`spec.pytorchReplicaSpecs.Worker`), `null` when absent.
fn at(object: &Value, field: &str) -> Value {
    field
        .split('.')
        .try_fold(object, |here, key| here.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Whether the VAP's denied fields name exactly the webhook's forbidden paths, coarsened: every
/// field is a prefix of a forbidden path, and every forbidden path lies under a field.
fn same_fields(fields: &[String], forbidden: &[FieldPath]) -> bool {
    let forbidden: Vec<String> = forbidden.iter().map(ToString::to_string).collect();
    let under = |path: &str, field: &str| {
        path == field
            || path
                .strip_prefix(field)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    fields.iter().all(|f| forbidden.iter().any(|p| under(p, f)))
        && forbidden.iter().all(|p| fields.iter().any(|f| under(p, f)))
}

/// One update to judge both ways.
struct Case {
    what: String,
    review: Value,
    old: Value,
    new: Value,
}

impl Case {
    fn of(what: String, review: Value) -> Self {
        let old = review["request"]["oldObject"].clone();
        let new = review["request"]["object"].clone();
        Self {
            what,
            review,
            old,
            new,
        }
    }
}

/// Tallies of a run.
#[derive(Default)]
struct Tally {
    cases: usize,
    denied: usize,
    allowed: usize,
    not_judged: usize,
    exceptions: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, policy_name: &str, compiled: &Compiled, policy: &Policy, case: &Case) {
        self.cases += 1;
        let hook = webhook(policy, &case.review);
        let cel = compiled.decide(&case.review["request"]);
        let agree = match (&hook, &cel) {
            (WebhookOutcome::Allowed, VapOutcome::NotMatched | VapOutcome::Allowed) => {
                if cel == VapOutcome::NotMatched {
                    self.not_judged += 1;
                } else {
                    self.allowed += 1;
                }
                true
            }
            (WebhookOutcome::Denied(forbidden), VapOutcome::Denied(fields)) => {
                self.denied += 1;
                same_fields(fields, forbidden)
            }
            _ => false,
        };
        if agree {
            return;
        }
        match EXCEPTIONS.iter().find(|e| (e.explains)(case, &hook, &cel)) {
            Some(exception) => *self.exceptions.entry(exception.name).or_default() += 1,
            None => self.failures.push(format!(
                "{policy_name}: {}: webhook {hook:?}, VAP {cel:?}",
                case.what
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cases

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every golden review in tests/fixtures (bare requests wrapped as tests/review.rs does).
fn golden_reviews() -> Vec<(String, Value)> {
    let fixtures = root().join("tests/fixtures");
    let mut dirs = vec![fixtures.join("pytorchjob"), fixtures.join("reviews")];
    for entry in std::fs::read_dir(fixtures.join("kinds")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && path.file_name().unwrap() != "source" {
            dirs.push(path);
        }
    }
    let mut reviews = Vec::new();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let review = if name.ends_with(".review.json") {
                read_json(&path)
            } else if name.ends_with(".request.json") {
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": read_json(&path)})
            } else {
                continue;
            };
            reviews.push((
                path.strip_prefix(root()).unwrap().display().to_string(),
                review,
            ));
        }
    }
    assert!(reviews.len() >= 50, "{} golden reviews", reviews.len());
    reviews
}

/// Every real example job with the review envelope of its kind: each kind's recorded-shape
/// label review (its oldObject is the kind's example job), and every PyTorchJob example in
/// tests/fixtures/pytorchjob/source in the PyTorchJob envelope.
fn example_jobs() -> Vec<(String, Value, Value)> {
    let fixtures = root().join("tests/fixtures");
    let mut jobs = Vec::new();
    let mut kinds: Vec<PathBuf> = std::fs::read_dir(fixtures.join("kinds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && p.file_name().unwrap() != "source")
        .collect();
    kinds.sort();
    for dir in kinds {
        let envelope = read_json(&dir.join("label.review.json"));
        let job = envelope["request"]["oldObject"].clone();
        jobs.push((dir.display().to_string(), envelope, job));
    }
    let envelope = read_json(&fixtures.join("kinds/pytorchjob/label.review.json"));
    let mut sources: Vec<PathBuf> = std::fs::read_dir(fixtures.join("pytorchjob/source"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    sources.sort();
    for path in sources {
        let job: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        jobs.push((path.display().to_string(), envelope.clone(), job));
    }
    assert_eq!(jobs.len(), 7 + 6, "seven kinds and six PyTorchJob examples");
    jobs
}

const USERS: &[(&str, &[&str])] = &[
    ("alice@example.com", &["system:authenticated"]),
    (
        "system:serviceaccount:kueue-system:kueue-controller-manager",
        &["system:serviceaccounts", "system:authenticated"],
    ),
    (
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        &["system:serviceaccounts"],
    ),
];

fn review_of(envelope: &Value, old: &Value, new: &Value, user: usize) -> Value {
    let mut review = envelope.clone();
    let request = &mut review["request"];
    request["oldObject"] = old.clone();
    request["object"] = new.clone();
    let (name, groups) = USERS[user];
    request["userInfo"] = json!({"username": name, "groups": groups});
    review
}

/// Set `value` at `path` (keys only: lists are indexed where they exist), creating objects.
fn set(root: &mut Value, path: &FieldPath, value: Value) {
    let mut here = root;
    for segment in path.segments() {
        here = match segment {
            Segment::Key(key) => {
                if !here.is_object() {
                    *here = Value::Object(Map::new());
                }
                here.as_object_mut()
                    .unwrap()
                    .entry(key.clone())
                    .or_insert(Value::Null)
            }
            Segment::Index(i) => &mut here.as_array_mut().unwrap()[*i],
        };
    }
    *here = value;
}

/// Remove the member at `path` (a key) if there.
fn remove(root: &mut Value, path: &FieldPath) {
    let (last, parent) = path.segments().split_last().unwrap();
    let mut here = root;
    for segment in parent {
        here = match segment {
            Segment::Key(key) => match here.get_mut(key) {
                Some(v) => v,
                None => return,
            },
            Segment::Index(i) => &mut here[*i],
        };
    }
    match last {
        Segment::Key(key) => {
            if let Some(map) = here.as_object_mut() {
                map.remove(key);
            }
        }
        Segment::Index(i) => here[*i] = Value::Null,
    }
}

/// Every path in `value`: (path, value, is a container).
fn all_paths(value: &Value, at: &FieldPath, out: &mut Vec<(FieldPath, Value)>) {
    if !at.is_root() {
        out.push((at.clone(), value.clone()));
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                all_paths(v, &at.key(k), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                all_paths(v, &at.index(i), out);
            }
        }
        _ => {}
    }
}

/// The mutations of one job, as the property tests make them and more: (what, new job,
/// requester, old job override).
fn mutations(job: &Value) -> Vec<(String, Value, Value, usize)> {
    let mut out = Vec::new();
    let mut push = |what: String, old: &Value, new: Value, user: usize| {
        out.push((what, old.clone(), new, user));
    };
    // A stored job: with server metadata and a status, as the API server holds it.
    let mut old = job.clone();
    set(
        &mut old,
        &"metadata.resourceVersion".parse().unwrap(),
        json!("1000"),
    );
    set(&mut old, &"metadata.generation".parse().unwrap(), json!(1));
    set(
        &mut old,
        &"status.conditions".parse().unwrap(),
        json!([{"type": "Created", "status": "True"}]),
    );
    push("unchanged".into(), &old, old.clone(), 0);
    // Typed-client noise: `resources: {}` written into a container, where the Go type is a value
    // struct (the webhook's `emptyIsAbsent`). Inside a list CEL compares whole, it is a change.
    if let Some(specs) = old["spec"].as_object() {
        let mut new = old.clone();
        for (key, replica_specs) in specs.iter().filter(|(k, _)| k.ends_with("ReplicaSpecs")) {
            for (kind, _) in replica_specs.as_object().into_iter().flatten() {
                let containers = &mut new["spec"][key][kind]["template"]["spec"]["containers"];
                if let Some(first) = containers.get_mut(0).and_then(Value::as_object_mut) {
                    first.entry("resources").or_insert(json!({}));
                }
            }
        }
        if new != old {
            push("resources: {} written into containers".into(), &old, new, 0);
        }
    }
    let mut paths = Vec::new();
    all_paths(&old, &FieldPath::root(), &mut paths);
    // Every path gets one of the mutations in turn (all of them for every path would repeat
    // the same comparisons many times over and take minutes).
    for (i, (path, value)) in paths.iter().enumerate() {
        let user = i % USERS.len();
        let has_key = matches!(path.segments().last(), Some(Segment::Key(_)));
        let mut new = old.clone();
        let what = match (i / USERS.len() % 3, value) {
            (0, Value::Object(_)) => {
                set(&mut new, &path.key("newField"), json!("added"));
                "a key added"
            }
            (0, Value::Array(_)) => {
                set(&mut new, path, json!([]));
                "emptied"
            }
            (0, _) => {
                set(&mut new, path, json!("changed-value"));
                "changed"
            }
            (1, Value::Number(n)) if n.is_i64() => {
                // The same number in another form: no change for either.
                set(&mut new, path, json!(n.as_i64().unwrap() as f64));
                "as a double"
            }
            (1, Value::Object(_)) => {
                set(&mut new, path, json!({}));
                "emptied"
            }
            (1, _) if has_key => {
                set(&mut new, path, Value::Null);
                "set to null"
            }
            _ if has_key => {
                remove(&mut new, path);
                "removed"
            }
            _ => {
                set(&mut new, path, json!(12345));
                "changed"
            }
        };
        push(format!("{path}: {what}"), &old, new, user);
    }
    // The updatable fields, the defaulted run policy, the not-compared ones, exempt paths.
    let spec_replicas = old["spec"]
        .as_object()
        .and_then(|spec| spec.keys().find(|k| k.ends_with("ReplicaSpecs")).cloned())
        .unwrap_or_default();
    let edits: &[(&str, Value)] = &[
        ("metadata.labels.team", json!("a")),
        ("metadata.annotations[\"example.com/note\"]", json!("b")),
        ("spec.runPolicy.ttlSecondsAfterFinished", json!(60)),
        ("spec.runPolicy.activeDeadlineSeconds", json!(3600)),
        ("spec.runPolicy.cleanPodPolicy", json!("All")),
        ("spec.runPolicy.suspend", json!(false)),
        ("spec.runPolicy.suspend", json!(true)),
        ("spec.ttlSecondsAfterFinished", json!(60)),
        ("spec.cleanPodPolicy", json!("None")),
        ("status.replicaStatuses", json!({"Worker": {"active": 1}})),
        ("metadata.finalizers", json!(["example.com/keep"])),
        ("metadata.managedFields", json!([{"manager": "kubectl"}])),
        ("spec.elasticPolicy.maxReplicas", json!(8)),
    ];
    for (path, value) in edits {
        for user in 0..USERS.len() {
            let mut new = old.clone();
            set(&mut new, &path.parse().unwrap(), value.clone());
            push(format!("{path} = {value}"), &old, new, user);
        }
    }
    // Adding spec.runPolicy with a ttl as the API server stores it: with its default suspend.
    let mut bare = old.clone();
    remove(&mut bare, &"spec.runPolicy".parse().unwrap());
    let mut new = bare.clone();
    set(
        &mut new,
        &"spec.runPolicy".parse().unwrap(),
        json!({"ttlSecondsAfterFinished": 60, "suspend": false}),
    );
    push(
        "spec.runPolicy added with its default".into(),
        &bare,
        new,
        0,
    );
    let mut new = bare.clone();
    set(
        &mut new,
        &"spec.runPolicy".parse().unwrap(),
        json!({"ttlSecondsAfterFinished": 60, "suspend": true}),
    );
    push("spec.runPolicy added, suspended".into(), &bare, new, 0);
    if !spec_replicas.is_empty() {
        let replicas = format!("spec.{spec_replicas}");
        let kueue_edits: &[(&str, Value)] = &[
            ("template.spec.nodeSelector", json!({"flavor": "a100"})),
            (
                "template.spec.tolerations",
                json!([{"key": "gpu", "operator": "Exists"}]),
            ),
            ("template.spec.schedulingGates", json!([{"name": "kueue"}])),
            ("template.metadata.labels.kueue", json!("x")),
            ("template.spec.priorityClassName", json!("high")),
            ("replicas", json!(7)),
        ];
        for replica in old["spec"][&spec_replicas].as_object().unwrap().keys() {
            for (suffix, value) in kueue_edits {
                for user in 0..USERS.len() {
                    let path = format!("{replicas}.{replica}.{suffix}");
                    let mut new = old.clone();
                    set(&mut new, &path.parse().unwrap(), value.clone());
                    push(format!("{path} = {value}"), &old, new, user);
                }
            }
        }
        // A replica type added and one removed.
        let mut new = old.clone();
        set(
            &mut new,
            &format!("{replicas}.Extra").parse().unwrap(),
            json!({"replicas": 1}),
        );
        push(format!("{replicas}.Extra added"), &old, new, 1);
        // `{}` deep inside a replica spec: the webhook sees no change.
        let first = old["spec"][&spec_replicas]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        let mut new = old.clone();
        set(
            &mut new,
            &format!("{replicas}.{first}.template.spec.extraEmpty")
                .parse()
                .unwrap(),
            json!({}),
        );
        push(
            format!("{replicas}.{first}: an empty object added deep"),
            &old,
            new,
            0,
        );
    }
    // Being deleted: anything goes, for anyone.
    let mut deleting = old.clone();
    set(
        &mut deleting,
        &"metadata.deletionTimestamp".parse().unwrap(),
        json!("2026-01-01T00:00:00Z"),
    );
    let mut new = deleting.clone();
    set(&mut new, &"spec.newField".parse().unwrap(), json!(1));
    remove(&mut new, &"metadata.finalizers".parse().unwrap());
    push("being deleted, spec changed".into(), &deleting, new, 0);
    // The deletionTimestamp only in the new object: not the deletion rule.
    let mut new = deleting.clone();
    set(&mut new, &"spec.newField".parse().unwrap(), json!(1));
    push(
        "deletionTimestamp set by the update, spec changed".into(),
        &old,
        new,
        0,
    );
    out
}

/// Scale requests of every kind that has a scale subresource: replicas kept, changed, removed.
fn scale_cases() -> Vec<(String, Value)> {
    let mut cases = Vec::new();
    for path in glob_reviews("scale.review.json") {
        let envelope = read_json(&path);
        let old = envelope["request"]["oldObject"].clone();
        for (what, replicas) in [
            ("kept", old["spec"]["replicas"].clone()),
            ("changed", json!(9)),
            ("as a double", json!(old["spec"]["replicas"].as_f64())),
        ] {
            for user in 0..USERS.len() {
                let mut new = old.clone();
                new["spec"]["replicas"] = replicas.clone();
                cases.push((
                    format!("{}: replicas {what}", path.display()),
                    review_of(&envelope, &old, &new, user),
                ));
            }
        }
    }
    assert!(cases.len() >= 3 * 3 * 3);
    cases
}

fn glob_reviews(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root().join("tests/fixtures/kinds")).unwrap() {
        let path = entry.unwrap().path().join(name);
        if path.exists() {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The `cel` crate evaluates recursively; the generated expressions nest a few dozen calls
/// deep, more than a test thread's default stack holds in a debug build.
const EVALUATION_STACK: usize = 256 << 20;

#[test]
fn the_generated_policy_judges_as_the_webhook_does() {
    std::thread::Builder::new()
        .stack_size(EVALUATION_STACK)
        .spawn(judge_alike)
        .unwrap()
        .join()
        .unwrap();
}

fn judge_alike() {
    let reviews = golden_reviews();
    let jobs = example_jobs();
    let scale = scale_cases();
    let mut report = Vec::new();
    let mut exercised: BTreeMap<&str, usize> = BTreeMap::new();
    // policies/default.yaml prints the same component as the built-in policy (the golden test
    // proves it), so it is judged once.
    for (name, _, policy) in policies()
        .into_iter()
        .filter(|(name, _, _)| name != "default")
    {
        let started = std::time::Instant::now();
        let compiled = Compiled::new(&vap::generate(&policy).unwrap());
        let mut tally = Tally::default();
        for (what, review) in &reviews {
            tally.check(
                &name,
                &compiled,
                &policy,
                &Case::of(what.clone(), review.clone()),
            );
        }
        for (what, review) in &scale {
            tally.check(
                &name,
                &compiled,
                &policy,
                &Case::of(what.clone(), review.clone()),
            );
        }
        for (source, envelope, job) in &jobs {
            // The job's kind in the envelope (the PyTorchJob envelope for its examples).
            for (what, old, new, user) in mutations(job) {
                let review = review_of(envelope, &old, &new, user);
                tally.check(
                    &name,
                    &compiled,
                    &policy,
                    &Case::of(format!("{source}: {what}"), review),
                );
            }
        }
        assert!(
            tally.failures.is_empty(),
            "{name}: {} of {} cases differ without a listed exception:\n{}",
            tally.failures.len(),
            tally.cases,
            tally
                .failures
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            tally.denied > 100 && tally.allowed > 100,
            "{name}: both verdicts are exercised"
        );
        for (exception, n) in &tally.exceptions {
            *exercised.entry(exception).or_default() += n;
        }
        report.push(format!(
            "{name} ({:.1?}): {} cases, {} denied alike, {} allowed alike, {} not judged by either, exceptions {:?}",
            started.elapsed(), tally.cases, tally.denied, tally.allowed, tally.not_judged, tally.exceptions
        ));
        eprintln!("{}", report.last().unwrap());
    }
    for exception in EXCEPTIONS {
        assert!(
            exercised.contains_key(exception.name),
            "exception {} is listed but never needed: remove it (and from README.md)",
            exception.name
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn a_policy_cel_cannot_express_is_refused_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        "apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1\nkind: Policy\n\
         kinds: [{group: kubeflow.org, kind: PyTorchJob}]\n\
         updatable: ['spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].image']\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pytorchjob-guard"))
        .args(["vap", "--policy"])
        .arg(&path)
        .env_remove("PYTORCHJOB_GUARD_POLICY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "nothing is printed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("containers[0].image") && stderr.contains("list index"),
        "{stderr}"
    );
}

#[test]
fn the_bindings_follow_the_policy_floor_and_a_glob_or_mode_flag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, rollout: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1\nkind: Policy\n\
                 kinds: [{{group: kubeflow.org, kind: PyTorchJob}}]\n\
                 updatable: [metadata.labels]\n{rollout}"
            ),
        )
        .unwrap();
        path
    };
    let vap = |args: &[&str], policy: &Path| {
        Command::new(env!("CARGO_BIN_EXE_pytorchjob-guard"))
            .arg("vap")
            .args(args)
            .arg("--policy")
            .arg(policy)
            .env_remove("PYTORCHJOB_GUARD_POLICY")
            .output()
            .unwrap()
    };
    // Exact names: team-sandbox is audited, every other namespace enforced unless its label
    // asks for warn, which the policy allows.
    let names = write(
        "names.yaml",
        "modeOverrides: [{mode: audit, namespaces: [team-sandbox]}]\n\
         namespaceLabel: {mayLowerTo: [warn]}\n",
    );
    let output = vap(&[], &names);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let docs: Vec<Value> =
        serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&output.stdout).unwrap())
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .collect();
    let bindings: Vec<(String, String)> = docs
        .iter()
        .filter(|doc| doc["kind"] == "ValidatingAdmissionPolicyBinding")
        .map(|doc| {
            (
                doc["spec"]["validationActions"][0]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                doc["spec"]["matchResources"]["namespaceSelector"].to_string(),
            )
        })
        .collect();
    let actions: Vec<&str> = bindings.iter().map(|(a, _)| a.as_str()).collect();
    // Deny: team-sandbox labelled enforce (stricter than its audit), the rest unless labelled
    // warn; Warn: team-sandbox labelled warn, the rest labelled warn; Audit: team-sandbox
    // otherwise. Strictest first, the override's set before the rest.
    assert_eq!(
        actions,
        ["Deny", "Deny", "Warn", "Warn", "Audit"],
        "{bindings:#?}"
    );
    assert!(
        bindings
            .iter()
            .any(|(action, selector)| action == "Audit" && selector.contains("team-sandbox"))
    );
    // A glob: exit 2, nothing printed, the glob named.
    let glob = write(
        "glob.yaml",
        "modeOverrides: [{mode: audit, namespaces: [\"exp-*\"]}]\n",
    );
    let output = vap(&[], &glob);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("exp-*") && stderr.contains("glob"),
        "{stderr}"
    );
    // `--mode` is the webhook commands' label; the bindings already cover every label value.
    let output = vap(&["--mode", "warn"], &names);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--mode"));
}
