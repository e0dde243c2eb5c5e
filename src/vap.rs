//! The policy compiled to a `ValidatingAdmissionPolicy`: the same rule, judged by the API
//! server's CEL instead of the webhook.
//!
//! [`generate`] takes a [`Policy`] and returns the `admissionregistration.k8s.io/v1` objects
//! (k8s-openapi's types) that enforce it: one `ValidatingAdmissionPolicy` and its bindings, one
//! per mode a namespace can be judged in and set of namespaces the policy names
//! ([`namespace_modes`]: the same floor, overrides and label as the webhook's). [`to_yaml`]
//! writes them as the YAML `pytorchjob-guard vap` prints. Deterministic: the same policy always
//! gives the same text.
//!
//! How the rule becomes CEL. The policy's patterns (updatable, not compared, defaults and
//! exemption paths) form a tree; each level of it is one `all()` loop over the keys of the old
//! and the new object at that level, and everything the tree does not reach is compared by deep
//! equality (`==`). An absent field, `null` and `[]` are the same at the levels the loops
//! visit, as in the webhook's diff ([`ABSENT_LITERALS`]); inside a subtree compared whole, CEL
//! equality sees them (and a `{}` the webhook's `emptyIsAbsent` list names) as different (the README lists this and the other exceptions). A schema
//! default stands in for an absent value at its path. Exemptions are conditions on
//! `request.userInfo`, attached to the subtrees they free. The `scale` subresource is judged as a
//! change of the kind's `scaleReplicasPath`. What CEL cannot express as the webhook judges it is
//! refused ([`VapError`]) rather than emitted loosely.
//!
//! Pure: policy in, objects and text out; no I/O. Uses only [`crate::policy`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::{
    AuditAnnotation, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use serde_json::Value;

use crate::policy::{FieldPath, Mode, PatternSegment, Policy, Segment};

/// The name of the generated `ValidatingAdmissionPolicy`; bindings are `<name>-<mode>`. The
/// same for every policy file, so applying another preset replaces the previous one.
pub const POLICY_NAME: &str = "pytorchjob-guard";

/// The namespace label that picks a rollout mode, as for the webhook's entries
/// (manifests/base/validatingwebhookconfiguration.yaml).
pub const MODE_LABEL: &str = "pytorchjob-guard.kubeflow.org/mode";

/// The label the API server sets on every namespace to its name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Namespaces never judged, as the webhook's entries exclude them: the control plane's, and the
/// webhook's own (so a cluster running both judges the same namespaces twice, never others).
pub const EXCLUDED_NAMESPACES: &[&str] = &["kube-system", "pytorchjob-guard"];

/// The lowest Kubernetes minor version that serves `admissionregistration.k8s.io/v1`
/// `ValidatingAdmissionPolicy` (GA in 1.30).
pub const MIN_KUBERNETES_VERSION: &str = "1.30";

/// What the webhook's diff treats as an absent field everywhere, as CEL literals: `null` and an
/// empty list. A present object, even `{}`, differs from an absent one, as in the webhook; at the
/// levels the loops visit, an object and an absent field are both looped over as maps, so a
/// policy's `emptyIsAbsent` path that the loops reach is judged alike. Below them CEL's `==`
/// decides (the README lists where that is stricter than the webhook).
pub const ABSENT_LITERALS: &[&str] = &["null", "[]"];

/// The `reason` of a denial: 422, as the API server's own "field is immutable" errors. A
/// `ValidatingAdmissionPolicy` cannot answer the webhook's 400 (`BadRequest`); `Forbidden` (403)
/// would tell clients their credentials are the problem.
pub const DENIAL_REASON: &str = "Invalid";

/// The audit annotation naming the denied fields (`<policy>/denied-fields` in the audit log),
/// as the webhook's `denied-fields`.
pub const DENIED_FIELDS_ANNOTATION: &str = "denied-fields";

/// A policy feature the generated CEL cannot express exactly as the webhook judges it.
#[derive(Debug, thiserror::Error)]
pub enum VapError {
    /// A pattern with a list index: CEL's standard macros iterate a list's elements, not its
    /// positions, so the element at an index cannot be singled out.
    #[error(
        "{role} pattern {pattern}: a list index cannot be expressed in CEL (its loops see list elements, not positions)"
    )]
    ListIndex {
        /// Where the pattern is (`updatable`, `notCompared`, `defaults`, `exemption kueue`).
        role: String,
        /// The pattern as written.
        pattern: String,
    },
    /// A schema default that is not a scalar: the webhook substitutes it leaf by leaf, which CEL
    /// equality does not.
    #[error(
        "default at {path}: only a scalar default (string, number, bool) can be expressed in CEL"
    )]
    ContainerDefault {
        /// The default's path.
        path: String,
    },
    /// A schema default with other patterns below it.
    #[error("default at {path}: other patterns below a default cannot be expressed in CEL")]
    PatternsBelowDefault {
        /// The default's path.
        path: String,
    },
    /// A `modeOverrides` glob: a binding's namespace selector matches exact names only.
    #[error(
        "modeOverrides namespace {pattern:?}: a binding's namespace selector matches exact names only, not globs; list the names"
    )]
    NamespaceGlob {
        /// The glob.
        pattern: String,
    },
    /// The objects could not be written as YAML.
    #[error("cannot write the objects as YAML")]
    Yaml(#[source] serde_yaml_ng::Error),
}

/// The generated objects: the policy and its bindings, one per rollout mode.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The `ValidatingAdmissionPolicy`.
    pub policy: ValidatingAdmissionPolicy,
    /// Its bindings, strictest mode first ([`namespace_modes`]).
    pub bindings: Vec<ValidatingAdmissionPolicyBinding>,
}

/// The `ValidatingAdmissionPolicy` and bindings that enforce `policy`.
pub fn generate(policy: &Policy) -> Result<Generated, VapError> {
    let tree = Tree::of(policy)?;
    let spec = Spec::new(policy, &tree).build();
    let vap = ValidatingAdmissionPolicy {
        metadata: object_meta(POLICY_NAME),
        spec: Some(spec),
        status: None,
    };
    let mut seen: Vec<Mode> = Vec::new();
    let bindings = namespace_modes(policy)?
        .into_iter()
        .map(|(mode, selector)| {
            // A mode with several selectors gets one binding each: `-enforce`, `-enforce-2`.
            seen.push(mode);
            let name = match seen.iter().filter(|m| **m == mode).count() {
                1 => format!("{POLICY_NAME}-{mode}"),
                n => format!("{POLICY_NAME}-{mode}-{n}"),
            };
            (mode, selector, name)
        })
        .map(|(mode, selector, name)| ValidatingAdmissionPolicyBinding {
            metadata: object_meta(&name),
            spec: Some(ValidatingAdmissionPolicyBindingSpec {
                policy_name: Some(POLICY_NAME.to_owned()),
                validation_actions: Some(vec![validation_action(mode).to_owned()]),
                match_resources: Some(MatchResources {
                    namespace_selector: Some(selector),
                    ..MatchResources::default()
                }),
                param_ref: None,
            }),
        })
        .collect();
    Ok(Generated {
        policy: vap,
        bindings,
    })
}

/// The objects as one YAML stream, the policy first, documents separated by `---`.
pub fn to_yaml(generated: &Generated) -> Result<String, VapError> {
    let mut text = String::from(
        "# Generated by `pytorchjob-guard vap`: the policy as a ValidatingAdmissionPolicy and its\n\
         # bindings, one per mode a namespace can be judged in (the policy's mode and modeOverrides,\n\
         # and the namespace label pytorchjob-guard.kubeflow.org/mode where it may move them). Do not edit.\n",
    );
    text.push_str(&serde_yaml_ng::to_string(&generated.policy).map_err(VapError::Yaml)?);
    for binding in &generated.bindings {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(binding).map_err(VapError::Yaml)?);
    }
    Ok(text)
}

/// The binding's `validationActions` for a mode.
pub fn validation_action(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "Deny",
        Mode::Warn => "Warn",
        Mode::Audit => "Audit",
    }
}

/// Which namespaces each mode judges: label selectors that give every namespace but
/// [`EXCLUDED_NAMESPACES`] exactly one mode, the one the webhook judges its reviews in
/// ([`Rollout::resolve`](crate::policy::Rollout::resolve)). The namespace label [`MODE_LABEL`]
/// asks for a mode (any other value, or none, asks for nothing, as on the webhook's plain
/// `/validate` entry); the policy keeps the floor: the namespace's mode is its first
/// `modeOverrides` entry naming it, else the policy's `mode`, and the label lowers it only to
/// the modes `namespaceLabel.mayLowerTo` lists.
///
/// Namespaces are split into sets the policy treats alike: the names each override adds (a
/// name an earlier override lists stays with that one, first match wins), then every other
/// namespace. Each set and mode gets one selector (`kubernetes.io/metadata.name` for the set,
/// [`MODE_LABEL`] for the label values that resolve to that mode), and none when no label value
/// does. Strictest mode first, then the sets in the policy's order. A glob cannot be written as
/// a label selector, so a policy with one is refused ([`VapError::NamespaceGlob`]).
pub fn namespace_modes(policy: &Policy) -> Result<Vec<(Mode, LabelSelector)>, VapError> {
    let rollout = policy.rollout();
    // The names of each override that needs a set of its own (first match wins, so a name an
    // earlier override lists stays there; an override to the policy's own mode needs none, its
    // names are judged as the rest), then None: every other namespace.
    let mut claimed: Vec<&str> = Vec::new();
    let mut sets: Vec<Option<Vec<&str>>> = Vec::new();
    for entry in &rollout.overrides {
        let mut names = Vec::new();
        for pattern in &entry.namespaces {
            let name = pattern.name().ok_or_else(|| VapError::NamespaceGlob {
                pattern: pattern.to_string(),
            })?;
            if !claimed.contains(&name) && !EXCLUDED_NAMESPACES.contains(&name) {
                claimed.push(name);
                names.push(name);
            }
        }
        if entry.mode != rollout.mode && !names.is_empty() {
            sets.push(Some(names));
        }
    }
    let rest_excludes: Vec<String> = EXCLUDED_NAMESPACES
        .iter()
        .copied()
        .chain(sets.iter().flatten().flatten().copied())
        .map(str::to_owned)
        .collect();
    sets.push(None);
    let requirement = |key: &str, operator: &str, values: Vec<String>| LabelSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: Some(values),
    };
    let label_values = |modes: Vec<Mode>| modes.iter().map(|m| m.as_str().to_owned()).collect();
    // What the label can ask for: nothing (no label, or a value that names no mode), or a mode.
    let asks = || std::iter::once(None).chain(Mode::ALL.map(Some));
    let mut selectors = Vec::new();
    for mode in Mode::ALL {
        for names in &sets {
            // Every name of a set resolves alike: its first stands for all.
            let one = names.as_ref().map(|names| names[0]);
            let asking: Vec<Option<Mode>> = asks()
                .filter(|label| rollout.resolve(one, *label).mode() == mode)
                .collect();
            if asking.is_empty() {
                continue;
            }
            let by_name = match names {
                Some(names) => requirement(
                    NAME_LABEL,
                    "In",
                    names.iter().map(|n| (*n).to_owned()).collect(),
                ),
                None => requirement(NAME_LABEL, "NotIn", rest_excludes.clone()),
            };
            // NotIn also matches a namespace without the label; In and NotIn need a value.
            let by_label = if asking.contains(&None) {
                let others: Vec<Mode> = Mode::ALL
                    .into_iter()
                    .filter(|m| !asking.contains(&Some(*m)))
                    .collect();
                (!others.is_empty()).then(|| requirement(MODE_LABEL, "NotIn", label_values(others)))
            } else {
                let wanted = asking.iter().flatten().copied().collect();
                Some(requirement(MODE_LABEL, "In", label_values(wanted)))
            };
            let selector = LabelSelector {
                match_expressions: Some(std::iter::once(by_name).chain(by_label).collect()),
                match_labels: None,
            };
            selectors.push((mode, selector));
        }
    }
    Ok(selectors)
}

fn object_meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(
            [
                ("app.kubernetes.io/name", "pytorchjob-guard"),
                ("app.kubernetes.io/part-of", "pytorchjob-guard"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ),
        ..ObjectMeta::default()
    }
}

/// One level of the policy's patterns: what is true of the subtree here, and the levels below.
#[derive(Clone, Debug, Default)]
struct Node {
    /// Updatable or not compared: anything below may change.
    free: bool,
    /// The exemptions (indices) whose paths cover this subtree.
    exempt: BTreeSet<usize>,
    /// The schema default of an absent value here.
    default: Option<Value>,
    /// Levels below, by exact key.
    exact: BTreeMap<String, Node>,
    /// The level below for any other key (`*`).
    any: Option<Box<Node>>,
}

impl Node {
    fn has_children(&self) -> bool {
        !self.exact.is_empty() || self.any.is_some()
    }

    /// The node at the end of `pattern`, created on the way.
    fn at(&mut self, role: &str, pattern: &[PatternSegment]) -> Result<&mut Node, VapError> {
        let mut here = self;
        for segment in pattern {
            here = match segment {
                PatternSegment::Exact(Segment::Key(key)) => {
                    here.exact.entry(key.clone()).or_default()
                }
                PatternSegment::Any => here.any.get_or_insert_with(Box::default),
                PatternSegment::Exact(Segment::Index(_)) => {
                    return Err(VapError::ListIndex {
                        role: role.to_owned(),
                        pattern: display(pattern),
                    });
                }
            };
        }
        Ok(here)
    }

    /// Everything `other` says, added to this node (a `*` sibling applies to exact keys too).
    fn merge(&mut self, other: &Node) {
        self.free |= other.free;
        self.exempt.extend(other.exempt.iter().copied());
        if self.default.is_none() {
            self.default.clone_from(&other.default);
        }
        for (key, child) in &other.exact {
            self.exact.entry(key.clone()).or_default().merge(child);
        }
        if let Some(any) = &other.any {
            self.any.get_or_insert_with(Box::default).merge(any);
        }
    }

    /// Apply each `*` level to its exact siblings, and drop what lies below a free level.
    fn normalize(&mut self) {
        if self.free {
            self.exact.clear();
            self.any = None;
            self.exempt.clear();
            self.default = None;
            return;
        }
        if let Some(any) = self.any.as_deref() {
            let any = any.clone();
            for child in self.exact.values_mut() {
                child.merge(&any);
            }
        }
        for child in self.exact.values_mut() {
            child.normalize();
        }
        if let Some(any) = self.any.as_deref_mut() {
            any.normalize();
        }
    }

    /// Refuse defaults CEL cannot apply as the webhook does.
    fn check_defaults(&self, path: &mut Vec<String>) -> Result<(), VapError> {
        if let Some(default) = &self.default {
            let at = || path.join(".");
            if !matches!(
                default,
                Value::Bool(_) | Value::Number(_) | Value::String(_)
            ) {
                return Err(VapError::ContainerDefault { path: at() });
            }
            if self.has_children() {
                return Err(VapError::PatternsBelowDefault { path: at() });
            }
        }
        for (key, child) in &self.exact {
            path.push(key.clone());
            child.check_defaults(path)?;
            path.pop();
        }
        if let Some(any) = &self.any {
            path.push("*".to_owned());
            any.check_defaults(path)?;
            path.pop();
        }
        Ok(())
    }
}

fn display(pattern: &[PatternSegment]) -> String {
    let mut text = String::new();
    for (i, segment) in pattern.iter().enumerate() {
        match segment {
            PatternSegment::Any => {
                if i > 0 {
                    text.push('.');
                }
                text.push('*');
            }
            PatternSegment::Exact(segment) => {
                let one = FieldPath::from(vec![segment.clone()]).to_string();
                if i > 0 && !one.starts_with('[') {
                    text.push('.');
                }
                text.push_str(&one);
            }
        }
    }
    text
}

/// The policy's patterns as a tree.
struct Tree {
    root: Node,
}

impl Tree {
    fn of(policy: &Policy) -> Result<Self, VapError> {
        let mut root = Node::default();
        for pattern in policy.updatable() {
            root.at("updatable", pattern.segments())?.free = true;
        }
        for pattern in policy.not_compared() {
            root.at("notCompared", pattern.segments())?.free = true;
        }
        for (pattern, value) in policy.defaults() {
            let node = root.at("defaults", pattern.segments())?;
            if node.default.is_none() {
                node.default = Some(value.clone());
            }
        }
        for (i, exemption) in policy.exemptions().iter().enumerate() {
            match &exemption.paths {
                None => {
                    root.exempt.insert(i);
                }
                Some(paths) => {
                    let role = format!("exemption {}", exemption.name);
                    for pattern in paths {
                        root.at(&role, pattern.segments())?.exempt.insert(i);
                    }
                }
            }
        }
        root.normalize();
        root.check_defaults(&mut Vec::new())?;
        Ok(Self { root })
    }
}

/// A CEL string literal.
fn cel_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A CEL literal of a scalar JSON value.
fn cel_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => cel_string(s),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 {
                format!("{f:.1}")
            } else {
                f.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// A CEL list literal of strings.
fn cel_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(cel_string).collect();
    format!("[{}]", items.join(", "))
}

/// `x` is absent by the webhook's presence rule.
fn absent(x: &str) -> String {
    let tests: Vec<String> = ABSENT_LITERALS
        .iter()
        .map(|literal| format!("{x} == {literal}"))
        .collect();
    format!("({})", tests.join(" || "))
}

/// `a` and `b` (values, `null` when absent) are the same subtree, compared whole.
fn deep(a: &str, b: &str) -> String {
    if a == "null" {
        absent(b)
    } else {
        format!("({a} == {b} || ({} && {}))", absent(a), absent(b))
    }
}

/// Whether a CEL expression is `null` or a (dotted) name, cheap to repeat.
fn is_name(x: &str) -> bool {
    x.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// `x` is a map or absent: the loops can look inside it.
fn map_or_null(x: &str) -> String {
    if x == "null" {
        return "true".to_owned();
    }
    format!("({x} == null || type({x}) == map)")
}

/// `x` as a map, `{}` when it is none.
fn as_map(x: &str) -> String {
    if x == "null" {
        return "{}".to_owned();
    }
    format!("({x} != null && type({x}) == map ? {x} : {{}})")
}

/// The keys of the maps `o` and `n`, each once (`o`'s first).
fn union_of_keys(o: &str, n: &str, k: &str) -> String {
    format!("({o}.map({k}, {k}) + {n}.filter({k}, !({k} in {o})))")
}

/// `map[key]`, `null` when absent.
fn member(map: &str, key: &str) -> String {
    format!("({key} in {map} ? {map}[{key}] : null)")
}

/// A CEL identifier from a field path, for variable names.
fn identifier(path: &FieldPath) -> String {
    let mut name = String::new();
    for segment in path.segments() {
        if !name.is_empty() {
            name.push('_');
        }
        match segment {
            Segment::Key(key) => name.extend(
                key.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
            ),
            Segment::Index(i) => name.push_str(&i.to_string()),
        }
    }
    name
}

/// The policy spec being written: its variables, in the order they may refer to each other.
struct Spec<'p> {
    policy: &'p Policy,
    tree: &'p Tree,
    variables: Vec<Variable>,
    /// The CEL condition of each exemption (`variables.exempt_…`), by index.
    exemptions: Vec<String>,
}

impl<'p> Spec<'p> {
    fn new(policy: &'p Policy, tree: &'p Tree) -> Self {
        let mut spec = Self {
            policy,
            tree,
            variables: Vec::new(),
            exemptions: Vec::new(),
        };
        spec.variable(
            "beingDeleted",
            "request.subResource != 'scale' && 'metadata' in oldObject && \
             type(oldObject.metadata) == map && 'deletionTimestamp' in oldObject.metadata && \
             oldObject.metadata.deletionTimestamp != null"
                .to_owned(),
        );
        for exemption in policy.exemptions() {
            let mut who = Vec::new();
            let usernames: Vec<String> = exemption
                .users
                .iter()
                .cloned()
                .chain(
                    exemption
                        .service_accounts
                        .iter()
                        .map(|sa| format!("system:serviceaccount:{sa}")),
                )
                .collect();
            if !usernames.is_empty() {
                who.push(format!(
                    "request.userInfo.username in {}",
                    cel_list(usernames.iter().map(String::as_str))
                ));
            }
            if !exemption.groups.is_empty() {
                who.push(format!(
                    "request.userInfo.groups.exists(g, g in {})",
                    cel_list(exemption.groups.iter().map(String::as_str))
                ));
            }
            let condition = if who.is_empty() {
                "false".to_owned()
            } else {
                who.join(" || ")
            };
            let name = format!(
                "exempt_{}",
                identifier(&FieldPath::root().key(&exemption.name))
            );
            let reference = spec.variable(&name, condition);
            spec.exemptions.push(reference);
        }
        spec
    }

    /// Add a variable (named uniquely) and return how expressions refer to it.
    fn variable(&mut self, name: &str, expression: String) -> String {
        let mut unique = name.to_owned();
        let mut n = 2;
        while self.variables.iter().any(|v| v.name == unique) {
            unique = format!("{name}_{n}");
            n += 1;
        }
        self.variables.push(Variable {
            name: unique.clone(),
            expression,
        });
        format!("variables.{unique}")
    }

    /// The condition under which the exemptions of `node` free it, if any.
    fn exempt(&self, node: &Node) -> Option<String> {
        if node.exempt.is_empty() {
            return None;
        }
        let parts: Vec<&str> = node
            .exempt
            .iter()
            .map(|i| self.exemptions[*i].as_str())
            .collect();
        Some(parts.join(" || "))
    }

    /// A CEL bool: the subtree of `node` with old value `a` and new value `b` (`null` when
    /// absent) has no forbidden change. Loop variables are numbered by `depth`.
    fn same(&self, node: &Node, a: &str, b: &str, depth: usize) -> String {
        if node.free {
            return "true".to_owned();
        }
        // Bind a computed value to a name once (`[x].all(v, p(v))` is `p(x)`), so the text does
        // not repeat it.
        if !is_name(a) {
            let name = format!("a{depth}");
            return format!("[{a}].all({name}, {})", self.same(node, &name, b, depth));
        }
        if !is_name(b) {
            let name = format!("b{depth}");
            return format!("[{b}].all({name}, {})", self.same(node, a, &name, depth));
        }
        let body = if let Some(default) = &node.default {
            let d = cel_scalar(default);
            if a == "null" {
                format!("({b} == null ? {d} : {b}) == {d}")
            } else {
                format!("({a} == null ? {d} : {a}) == ({b} == null ? {d} : {b})")
            }
        } else if !node.has_children() {
            deep(a, b)
        } else {
            let (o, n) = (format!("o{depth}"), format!("n{depth}"));
            let keys = self.keys_same(node, &o, &n, depth);
            let guard = [map_or_null(a), map_or_null(b)]
                .into_iter()
                .filter(|g| g != "true")
                .collect::<Vec<_>>()
                .join(" && ");
            let inside = format!("[{}].all({o}, [{}].all({n}, {keys}))", as_map(a), as_map(b));
            if guard.is_empty() {
                inside
            } else {
                format!("({guard} ? {inside} : {})", deep(a, b))
            }
        };
        match self.exempt(node) {
            Some(condition) => format!("({condition} || {body})"),
            None => body,
        }
    }

    /// A CEL bool: the maps `o` (old) and `n` (new) at `node` have no forbidden change.
    fn keys_same(&self, node: &Node, o: &str, n: &str, depth: usize) -> String {
        let k = format!("k{depth}");
        let mut parts = Vec::new();
        let other = |a: &str, b: &str| match &node.any {
            Some(any) => self.same(any, a, b, depth + 1),
            None => deep(a, b),
        };
        let probe = other("a", "b");
        if probe != "true" {
            let not_exact = if node.exact.is_empty() {
                String::new()
            } else {
                format!(
                    "{k} in {} || ",
                    cel_list(node.exact.keys().map(String::as_str))
                )
            };
            parts.push(format!(
                "{}.all({k}, {not_exact}{})",
                union_of_keys(o, n, &k),
                other(&member(o, &k), &member(n, &k))
            ));
        }
        for (key, child) in &node.exact {
            let key = cel_string(key);
            let same = self.same(child, &member(o, &key), &member(n, &key), depth + 1);
            if same != "true" {
                parts.push(same);
            }
        }
        if parts.is_empty() {
            "true".to_owned()
        } else {
            parts.join(" && ")
        }
    }

    /// A CEL list of strings: the fields under `node` (at `path`, old value `a`, new value `b`)
    /// with a forbidden change, named as deep as the fixed levels of the patterns go: a key
    /// below a `*` or a subtree compared whole is named, not its leaves.
    fn denied(&mut self, node: &Node, path: &FieldPath, a: &str, b: &str) -> String {
        if node.free {
            return "[]".to_owned();
        }
        let name = cel_string(&path.to_string());
        let body = if !node.has_children() {
            format!("({} ? [] : [{name}])", self.same(node, a, b, 1))
        } else {
            // The values here (null when absent) and the same as maps ({} when not one), each
            // computed once.
            let (a, b, o, n) = if path.is_root() {
                let (a, b) = ("oldObject".to_owned(), "object".to_owned());
                (a.clone(), b.clone(), a, b)
            } else {
                let id = identifier(path);
                let a = self.variable(&format!("old_{id}"), a.to_owned());
                let b = self.variable(&format!("new_{id}"), b.to_owned());
                let o = self.variable(&format!("old_{id}_map"), as_map(&a));
                let n = self.variable(&format!("new_{id}_map"), as_map(&b));
                (a, b, o, n)
            };
            let prefix = if path.is_root() {
                String::new()
            } else {
                format!("{path}.")
            };
            let mut lists = Vec::new();
            let other = |spec: &Self, a: &str, b: &str| match &node.any {
                Some(any) => spec.same(any, a, b, 1),
                None => deep(a, b),
            };
            if other(self, "a", "b") != "true" {
                let not_exact = if node.exact.is_empty() {
                    String::new()
                } else {
                    format!(
                        "!(k in {}) && ",
                        cel_list(node.exact.keys().map(String::as_str))
                    )
                };
                let named = if prefix.is_empty() {
                    "k".to_owned()
                } else {
                    format!("{} + k", cel_string(&prefix))
                };
                lists.push(format!(
                    "{}.filter(k, {not_exact}!{}).map(k, {named})",
                    union_of_keys(&o, &n, "k"),
                    other(self, &member(&o, "k"), &member(&n, "k"))
                ));
            }
            for (key, child) in &node.exact {
                let literal = cel_string(key);
                let list = self.denied(
                    child,
                    &path.key(key),
                    &member(&o, &literal),
                    &member(&n, &literal),
                );
                if list != "[]" {
                    lists.push(list);
                }
            }
            let inside = if lists.is_empty() {
                "[]".to_owned()
            } else {
                lists.join(" + ")
            };
            if path.is_root() {
                inside
            } else {
                format!(
                    "({} && {} ? {inside} : ({} ? [] : [{name}]))",
                    map_or_null(&a),
                    map_or_null(&b),
                    deep(&a, &b)
                )
            }
        };
        let body = match self.exempt(node) {
            Some(condition) => format!("({condition} ? [] : {body})"),
            None => body,
        };
        if node.has_children() {
            // One variable per level: the generated policy reads level by level.
            let id = if path.is_root() {
                "object".to_owned()
            } else {
                identifier(path)
            };
            self.variable(&format!("denied_{id}"), body)
        } else {
            body
        }
    }

    /// A CEL list of strings: the scale path, if a `scale` request changes it forbiddenly.
    fn denied_scale(&mut self) -> String {
        let replicas = |side: &str| {
            format!(
                "'spec' in {side} && type({side}.spec) == map && 'replicas' in {side}.spec ? {side}.spec.replicas : null"
            )
        };
        let old = self.variable("old_scale_replicas", replicas("oldObject"));
        let new = self.variable("new_scale_replicas", replicas("object"));
        let changed = format!("!{}", deep(&old, &new));
        let mut chain = String::new();
        for kind in self.policy.kinds() {
            let Some(path) = &kind.scale_replicas else {
                continue;
            };
            let free = self.policy.updatable().iter().any(|u| u.covers(path));
            let verdict = if free {
                "[]".to_owned()
            } else {
                let mut exempt: Vec<&str> = self
                    .policy
                    .exemptions()
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.covers(path))
                    .map(|(i, _)| self.exemptions[i].as_str())
                    .collect();
                exempt.dedup();
                let allowed = if exempt.is_empty() {
                    String::new()
                } else {
                    format!("!({}) && ", exempt.join(" || "))
                };
                format!(
                    "({allowed}{changed} ? [{}] : [])",
                    cel_string(&path.to_string())
                )
            };
            chain.push_str(&format!(
                "request.resource.group == {} && request.resource.resource == {} ? {verdict} : ",
                cel_string(&kind.group),
                cel_string(&kind.resource)
            ));
        }
        chain.push_str("[]");
        chain
    }

    fn build(mut self) -> ValidatingAdmissionPolicySpec {
        let tree = self.tree;
        let main = self.denied(&tree.root, &FieldPath::root(), "oldObject", "object");
        let scale = self.denied_scale();
        let denied = self.variable(
            "denied",
            format!("request.subResource == 'scale' ? ({scale}) : ({main})"),
        );
        let judged = self.variable(
            "deniedFields",
            format!("variables.beingDeleted ? [] : {denied}"),
        );
        let kinds: Vec<String> = self
            .policy
            .kinds()
            .iter()
            .map(|k| {
                format!(
                    "{}: {}",
                    cel_string(&format!("{}/{}", k.group, k.resource)),
                    cel_string(&k.kind)
                )
            })
            .collect();
        let message = format!(
            "{{{}}}[request.resource.group + '/' + request.resource.resource] + ' ' + request.namespace + '/' + request.name + ': ' + \
             (size({judged}) == 1 ? 'this field cannot be updated: ' : 'these fields cannot be updated: ') + \
             {judged}.join(', ') + '; ' + {}",
            kinds.join(", "),
            cel_string(self.policy.updatable_summary())
        );
        let mut resources: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for kind in self.policy.kinds() {
            let list = resources.entry(kind.group.as_str()).or_default();
            list.push(kind.resource.clone());
            if kind.scale_replicas.is_some() {
                list.push(format!("{}/scale", kind.resource));
            }
        }
        let rules = resources
            .into_iter()
            .map(|(group, resources)| NamedRuleWithOperations {
                api_groups: Some(vec![group.to_owned()]),
                api_versions: Some(vec!["*".to_owned()]),
                operations: Some(vec!["UPDATE".to_owned()]),
                resources: Some(resources),
                scope: Some("Namespaced".to_owned()),
                resource_names: None,
            })
            .collect();
        ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                match_policy: Some("Equivalent".to_owned()),
                resource_rules: Some(rules),
                ..MatchResources::default()
            }),
            validations: Some(vec![Validation {
                expression: format!("size({judged}) == 0"),
                message_expression: Some(message),
                reason: Some(DENIAL_REASON.to_owned()),
                message: Some("the update changes fields that cannot be updated".to_owned()),
            }]),
            audit_annotations: Some(vec![AuditAnnotation {
                key: DENIED_FIELDS_ANNOTATION.to_owned(),
                value_expression: format!("size({judged}) == 0 ? null : {judged}.join(', ')"),
            }]),
            variables: Some(self.variables),
            match_conditions: None,
            param_kind: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<Policy, VapError> {
        let policy = crate::policy::file::parse(yaml).expect("a valid policy file");
        generate(&policy).map(|_| policy)
    }

    const HEAD: &str = "apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1\nkind: Policy\n\
                        kinds: [{group: kubeflow.org, kind: PyTorchJob}]\n";

    #[test]
    fn a_list_index_is_refused_with_its_pattern() {
        let error = policy(&format!("{HEAD}updatable: ['spec.containers[0].image']\n"))
            .expect_err("refused");
        assert!(
            matches!(&error, VapError::ListIndex { role, pattern }
                if role == "updatable" && pattern == "spec.containers[0].image"),
            "{error}"
        );
        assert!(
            error.to_string().contains("spec.containers[0].image"),
            "{error}"
        );
    }

    #[test]
    fn a_container_default_is_refused() {
        let error = policy(&format!(
            "{HEAD}updatable: [metadata.labels]\ndefaults:\n  - path: spec.runPolicy\n    value: {{suspend: false}}\n"
        ))
        .expect_err("refused");
        assert!(
            matches!(error, VapError::ContainerDefault { ref path } if path == "spec.runPolicy"),
            "{error}"
        );
    }

    #[test]
    fn patterns_below_a_default_are_refused() {
        let error = policy(&format!(
            "{HEAD}updatable: [spec.x.y.z]\ndefaults:\n  - path: spec.x\n    value: 1\n"
        ))
        .expect_err("refused");
        assert!(
            matches!(error, VapError::PatternsBelowDefault { ref path } if path == "spec.x"),
            "{error}"
        );
    }

    /// Whether `selector` selects a namespace called `name` whose mode label is `label`, by the
    /// API server's rules: `In` needs the label with a listed value, `NotIn` matches a missing
    /// label or an unlisted value.
    fn selects(selector: &LabelSelector, name: &str, label: Option<&str>) -> bool {
        assert!(selector.match_labels.is_none());
        selector.match_expressions.iter().flatten().all(|r| {
            let value = match r.key.as_str() {
                NAME_LABEL => Some(name),
                MODE_LABEL => label,
                other => panic!("unexpected key {other}"),
            };
            let values = r.values.as_deref().unwrap_or_default();
            assert!(!values.is_empty(), "In and NotIn need values: {r:?}");
            let listed = value.is_some_and(|v| values.iter().any(|x| x == v));
            match r.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                other => panic!("unexpected operator {other}"),
            }
        })
    }

    #[test]
    fn every_namespace_gets_exactly_the_mode_the_webhook_judges_it_in() {
        let overrides = [
            "",
            "modeOverrides: [{mode: audit, namespaces: [team-a]}]\n",
            "modeOverrides: [{mode: warn, namespaces: [team-a, team-b]}, \
             {mode: audit, namespaces: [team-b, team-c, kube-system]}, \
             {mode: enforce, namespaces: [team-d]}]\n",
        ];
        let lowering = ["", "[warn]", "[audit]", "[warn, audit]"];
        let namespaces = ["team-a", "team-b", "team-c", "team-d", "other"];
        let labels = [
            None,
            Some("typo"),
            Some("enforce"),
            Some("warn"),
            Some("audit"),
        ];
        let mut seen = BTreeSet::new();
        for mode in Mode::ALL {
            for overrides in overrides {
                for may_lower_to in lowering {
                    let mut yaml =
                        format!("{HEAD}updatable: [metadata.labels]\nmode: {mode}\n{overrides}");
                    if !may_lower_to.is_empty() {
                        yaml.push_str(&format!("namespaceLabel: {{mayLowerTo: {may_lower_to}}}\n"));
                    }
                    let policy = policy(&yaml).expect("exact names can be selected");
                    let selectors = namespace_modes(&policy).unwrap();
                    let strictness = |m: &Mode| Mode::ALL.iter().position(|x| x == m);
                    assert!(
                        selectors.is_sorted_by_key(|(m, _)| strictness(m)),
                        "strictest first"
                    );
                    for namespace in namespaces {
                        for label in labels {
                            let chosen: Vec<Mode> = selectors
                                .iter()
                                .filter(|(_, s)| selects(s, namespace, label))
                                .map(|(m, _)| *m)
                                .collect();
                            let asked = label.and_then(|l| l.parse::<Mode>().ok());
                            let expected = policy.effective_mode(Some(namespace), asked).mode();
                            assert_eq!(chosen, [expected], "{yaml}{namespace} labelled {label:?}");
                            seen.insert((namespace, label, expected.as_str()));
                        }
                    }
                    for excluded in EXCLUDED_NAMESPACES {
                        for label in labels {
                            assert!(
                                !selectors.iter().any(|(_, s)| selects(s, excluded, label)),
                                "{yaml}{excluded}"
                            );
                        }
                    }
                }
            }
        }
        // The floor held and gave way where the policy lets it: without mayLowerTo the label
        // cannot lower enforce, with it it can.
        assert!(seen.contains(&("other", Some("audit"), "enforce")));
        assert!(seen.contains(&("other", Some("audit"), "audit")));
        assert!(seen.contains(&("team-a", Some("enforce"), "enforce")));
    }

    #[test]
    fn the_builtin_policy_gets_one_binding_that_no_label_lowers() {
        let generated = generate(&Policy::default()).unwrap();
        let actions: Vec<_> = generated
            .bindings
            .iter()
            .map(|b| b.spec.as_ref().unwrap().validation_actions.clone().unwrap())
            .collect();
        assert_eq!(actions, [vec!["Deny".to_owned()]]);
    }

    #[test]
    fn a_namespace_glob_is_refused_with_its_pattern() {
        let error = policy(&format!(
            "{HEAD}updatable: [metadata.labels]\nmodeOverrides: [{{mode: audit, namespaces: [team-a, \"exp-*\"]}}]\n"
        ))
        .unwrap_err();
        assert!(
            matches!(error, VapError::NamespaceGlob { ref pattern } if pattern == "exp-*"),
            "{error}"
        );
    }

    #[test]
    fn cel_strings_escape_quotes_and_backslashes() {
        assert_eq!(cel_string("a'b\\c"), "'a\\'b\\\\c'");
    }
}
