//! The deployment manifests (`manifests/`), the `Dockerfile` and the binary, checked against each
//! other.
//!
//! Every resource document parses into its real Kubernetes type (k8s-openapi) *and serializes
//! back to the same document*: k8s-openapi ignores unknown fields, so a misspelled field
//! (`readinesProbe`) would otherwise pass silently. The webhook configuration, Service,
//! Deployment and the binary's defaults, flags and routes must agree. The kustomize layout is
//! resolved file by file without kubectl; when `kubectl` is on PATH the overlays are also
//! rendered (skipped with a note otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingWebhook, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Probe, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pytorchjob_guard::certs;
use pytorchjob_guard::cli::{self, Cli, Command as GuardCommand, ServeArgs};
use pytorchjob_guard::metrics::Metrics;
use pytorchjob_guard::policy::Policy;
use pytorchjob_guard::server::{self, AppState, Health};
use pytorchjob_guard::tls::{self, MinTlsVersion, TlsSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned};
use serde_json::Value;
use tower::ServiceExt;

/// The webhook's name, as users see it in denials.
const WEBHOOK_NAME: &str = "pytorchjob-guard.kubeflow.org";
/// The Secret holding the serving certificate, written by either overlay.
const TLS_SECRET: &str = "pytorchjob-guard-tls";
/// The patch `pytorchjob-guard certs` writes next to the certificates.
const CA_BUNDLE_PATCH: &str = "ca-bundle.yaml";
/// Where the self-managed overlay expects `pytorchjob-guard certs --out` to write.
const SELF_MANAGED_CERTS: &str = "overlays/self-managed/certs";
/// What `pytorchjob-guard certs` writes there (the only files allowed to be missing).
const GENERATED_FILES: &[&str] = &[
    certs::CA_FILE,
    certs::CERT_FILE,
    certs::KEY_FILE,
    CA_BUNDLE_PATCH,
];

// ---------------------------------------------------------------------------------------------
// Reading the files

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> PathBuf {
    repo().join("manifests")
}

/// One YAML document of one file.
#[derive(Clone, Debug)]
struct Doc {
    origin: String,
    value: Value,
}

impl Doc {
    fn str_at(&self, pointer: &str) -> &str {
        self.value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn api_version(&self) -> &str {
        self.str_at("/apiVersion")
    }

    fn kind(&self) -> &str {
        self.str_at("/kind")
    }

    fn name(&self) -> &str {
        self.str_at("/metadata/name")
    }

    fn namespace(&self) -> &str {
        self.str_at("/metadata/namespace")
    }

    /// `kind namespace/name`, unique within a rendering.
    fn id(&self) -> String {
        format!("{} {}/{}", self.kind(), self.namespace(), self.name())
    }
}

fn parse_yaml_docs(origin: &str, text: &str) -> Vec<Doc> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .filter_map(|(index, document)| {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{origin} document {index}: not YAML: {e}"));
            (!value.is_null()).then(|| Doc {
                origin: format!("{origin}#{index}"),
                value,
            })
        })
        .collect()
}

fn read_docs(path: &Path) -> Vec<Doc> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let origin = path
        .strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string();
    parse_yaml_docs(&origin, &text)
}

/// Parse a document into its Kubernetes type and require it to serialize back to the same
/// JSON: a field the type does not know (a typo, a wrong indentation level) is an error.
fn typed<T: DeserializeOwned + Serialize>(doc: &Doc) -> T {
    let object: T = serde_json::from_value(doc.value.clone())
        .unwrap_or_else(|e| panic!("{}: not a valid {}: {e}", doc.origin, doc.kind()));
    let back = serde_json::to_value(&object).unwrap();
    let mut differences = Vec::new();
    json_differences("", &doc.value, &back, &mut differences);
    assert!(
        differences.is_empty(),
        "{}: these fields do not survive parsing into the {} type (misspelled or misplaced?):\n  {}",
        doc.origin,
        doc.kind(),
        differences.join("\n  ")
    );
    object
}

fn json_differences(at: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
                let path = format!("{at}/{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => json_differences(&path, x, y, out),
                    (Some(x), None) => out.push(format!("{path}: {x} is dropped")),
                    (None, Some(y)) => out.push(format!("{path}: {y} appears")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                json_differences(&format!("{at}/{i}"), x, y, out);
            }
        }
        _ if a != b => out.push(format!("{at}: {a} becomes {b}")),
        _ => {}
    }
}

/// The objects of a rendering (raw files or `kubectl kustomize` output), typed.
#[derive(Debug)]
struct Objects {
    docs: Vec<Doc>,
    namespace: Namespace,
    service_account: ServiceAccount,
    deployment: Deployment,
    service: Service,
    pdb: PodDisruptionBudget,
    webhook_configuration: ValidatingWebhookConfiguration,
    secrets: Vec<Secret>,
    /// Generated by kustomize: only in renderings.
    config_maps: Vec<ConfigMap>,
    /// cert-manager.io objects, untyped.
    cert_manager: Vec<Doc>,
}

fn exactly_one<T: DeserializeOwned + Serialize>(docs: &[Doc], api_version: &str, kind: &str) -> T {
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.api_version() == api_version && d.kind() == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {api_version} {kind}, found {:?}",
        found.iter().map(|d| &d.origin).collect::<Vec<_>>()
    );
    typed(found[0])
}

impl Objects {
    fn from_docs(docs: Vec<Doc>) -> Self {
        let mut ids = BTreeSet::new();
        let mut secrets = Vec::new();
        let mut config_maps = Vec::new();
        let mut cert_manager = Vec::new();
        for doc in &docs {
            assert!(ids.insert(doc.id()), "{}: {} twice", doc.origin, doc.id());
            match (doc.api_version(), doc.kind()) {
                ("v1", "Namespace" | "ServiceAccount" | "Service")
                | ("apps/v1", "Deployment")
                | ("policy/v1", "PodDisruptionBudget")
                | ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {}
                ("v1", "Secret") => secrets.push(typed::<Secret>(doc)),
                ("v1", "ConfigMap") => config_maps.push(typed::<ConfigMap>(doc)),
                ("cert-manager.io/v1", "Issuer" | "Certificate") => {
                    assert!(!doc.name().is_empty(), "{}: no metadata.name", doc.origin);
                    assert!(doc.value.get("spec").is_some(), "{}: no spec", doc.origin);
                    cert_manager.push(doc.clone());
                }
                (api_version, kind) => panic!(
                    "{}: {api_version} {kind} is not a kind these tests know; add its checks",
                    doc.origin
                ),
            }
        }
        Self {
            namespace: exactly_one(&docs, "v1", "Namespace"),
            service_account: exactly_one(&docs, "v1", "ServiceAccount"),
            deployment: exactly_one(&docs, "apps/v1", "Deployment"),
            service: exactly_one(&docs, "v1", "Service"),
            pdb: exactly_one(&docs, "policy/v1", "PodDisruptionBudget"),
            webhook_configuration: exactly_one(
                &docs,
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
            ),
            secrets,
            config_maps,
            cert_manager,
            docs,
        }
    }

    fn guard_namespace(&self) -> &str {
        self.namespace.metadata.name.as_deref().unwrap()
    }

    fn pod_spec(&self) -> &PodSpec {
        self.deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("the Deployment has a pod template spec")
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        self.deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }

    fn container(&self) -> &Container {
        let containers = &self.pod_spec().containers;
        assert_eq!(containers.len(), 1, "one container: the webhook server");
        &containers[0]
    }

    fn webhook(&self) -> &ValidatingWebhook {
        let webhooks = self
            .webhook_configuration
            .webhooks
            .as_deref()
            .unwrap_or_default();
        assert_eq!(webhooks.len(), 1, "one webhook in the configuration");
        assert_eq!(webhooks[0].name, WEBHOOK_NAME);
        &webhooks[0]
    }

    fn cert_manager_object(&self, kind: &str, name: &str) -> &Doc {
        self.cert_manager
            .iter()
            .find(|d| d.kind() == kind && d.name() == name)
            .unwrap_or_else(|| panic!("no cert-manager {kind} {name}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Kustomize layout, resolved without kubectl

/// The references of one `kustomization.yaml`.
#[derive(Debug, Default)]
struct Kustomization {
    resources: Vec<PathBuf>,
    components: Vec<PathBuf>,
    patches: Vec<PathBuf>,
    generator_files: Vec<PathBuf>,
    raw: Value,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|v| v.as_str().expect("a list of strings").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

fn load_kustomization(dir: &Path) -> Kustomization {
    let file = kustomization_file(dir)
        .unwrap_or_else(|| panic!("{} has no kustomization.yaml", dir.display()));
    let docs = read_docs(&file);
    assert_eq!(docs.len(), 1, "{}: one document", file.display());
    let raw = docs[0].value.clone();
    for deprecated in [
        "patchesStrategicMerge",
        "patchesJson6902",
        "bases",
        "commonLabels",
    ] {
        assert!(
            raw.get(deprecated).is_none(),
            "{}: `{deprecated}` is deprecated in kustomize v5; use resources/patches/labels",
            file.display()
        );
    }
    let local = |entry: String| {
        assert!(
            !entry.contains("://") && !entry.starts_with("github.com/"),
            "{}: remote reference {entry}: the manifests must stand on the repository alone",
            file.display()
        );
        dir.join(entry)
    };
    let mut k = Kustomization {
        resources: strings(raw.get("resources"))
            .into_iter()
            .map(local)
            .collect(),
        components: strings(raw.get("components"))
            .into_iter()
            .map(local)
            .collect(),
        ..Kustomization::default()
    };
    for patch in raw
        .get("patches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match (
            patch.get("path").and_then(Value::as_str),
            patch.get("patch"),
        ) {
            (Some(path), None) => k.patches.push(local(path.to_owned())),
            (None, Some(_)) => {}
            _ => panic!(
                "{}: a patch needs exactly one of path and patch",
                file.display()
            ),
        }
    }
    for generator in ["secretGenerator", "configMapGenerator"] {
        for item in raw
            .get(generator)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for entry in strings(item.get("files")) {
                // `key=path` or `path`.
                let path = entry.split_once('=').map_or(entry.as_str(), |(_, p)| p);
                k.generator_files.push(local(path.to_owned()));
            }
            for entry in strings(item.get("envs")) {
                k.generator_files.push(local(entry));
            }
        }
    }
    k.raw = raw;
    k
}

/// `a/b/../c` → `a/c`, without touching the file system (the path may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A file `pytorchjob-guard certs` writes into the self-managed overlay (ignored by git).
fn is_generated(path: &Path) -> bool {
    let path = normalize(path);
    path.parent() == Some(&manifests().join(SELF_MANAGED_CERTS))
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| GENERATED_FILES.contains(&n))
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn kustomization_dirs() -> Vec<PathBuf> {
    let mut files = Vec::new();
    all_files(&manifests(), &mut files);
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .map(|p| p.parent().unwrap().to_owned())
        .collect();
    dirs.sort();
    dirs
}

/// The resource documents a kustomization directory contributes (recursively through
/// directories it references), without patches or generators.
fn resource_docs(dir: &Path) -> Vec<Doc> {
    let k = load_kustomization(dir);
    let mut docs = Vec::new();
    for resource in k.resources.iter().chain(&k.components) {
        if resource.is_dir() {
            docs.extend(resource_docs(resource));
        } else {
            docs.extend(read_docs(resource));
        }
    }
    docs
}

fn base_objects() -> Objects {
    Objects::from_docs(resource_docs(&manifests().join("base")))
}

#[test]
fn the_kustomize_layout_resolves() {
    let dirs = kustomization_dirs();
    let expected: BTreeSet<PathBuf> = ["base", "overlays/cert-manager", "overlays/self-managed"]
        .iter()
        .map(|d| manifests().join(d))
        .collect();
    assert_eq!(dirs.iter().cloned().collect::<BTreeSet<_>>(), expected);

    let root = manifests();
    let mut referenced = BTreeSet::new();
    for dir in &dirs {
        let k = load_kustomization(dir);
        for (what, paths) in [
            ("resource", &k.resources),
            ("component", &k.components),
            ("patch", &k.patches),
            ("generator file", &k.generator_files),
        ] {
            for path in paths {
                let normalized = normalize(path);
                assert!(
                    normalized.starts_with(&root),
                    "{}: {what} {} is outside manifests/",
                    dir.display(),
                    path.display()
                );
                if (what == "resource" || what == "component") && path.is_dir() {
                    assert!(
                        kustomization_file(path).is_some(),
                        "{}: {what} directory {} has no kustomization.yaml",
                        dir.display(),
                        path.display()
                    );
                    continue;
                }
                if path.is_file() {
                    referenced.insert(normalized);
                } else {
                    assert!(
                        is_generated(path),
                        "{}: {what} {} does not exist",
                        dir.display(),
                        path.display()
                    );
                }
            }
        }
    }

    // Every YAML file is a kustomization or used by one: nothing is silently left out.
    let mut files = Vec::new();
    all_files(&root, &mut files);
    for file in files {
        let is_yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml || is_generated(&file) {
            continue;
        }
        let is_kustomization = file.file_name().is_some_and(|n| n == "kustomization.yaml");
        assert!(
            is_kustomization || referenced.contains(&file),
            "{} is not referenced by any kustomization.yaml",
            file.display()
        );
    }
}

#[test]
fn the_generated_certificates_are_ignored_by_git() {
    let gitignore = manifests().join("overlays/self-managed/.gitignore");
    let text = std::fs::read_to_string(&gitignore).expect("overlays/self-managed/.gitignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        patterns
            .iter()
            .any(|p| ["/certs/", "certs/", "/certs", "/certs/*", "certs/*"].contains(p)),
        "{} must ignore certs/ (it holds a private key): {patterns:?}",
        gitignore.display()
    );
    assert!(
        !patterns.iter().any(|p| p.starts_with('!')),
        "no exceptions in {}",
        gitignore.display()
    );
}

#[test]
fn every_manifest_parses_into_the_kubernetes_types() {
    // Objects::from_docs round-trips every known kind and refuses unknown ones.
    let base = base_objects();
    assert_eq!(
        base.docs.len(),
        6,
        "{:?}",
        base.docs.iter().map(Doc::id).collect::<Vec<_>>()
    );
    assert!(base.cert_manager.is_empty() && base.secrets.is_empty());

    let cert_manager_docs = resource_docs(&manifests().join("overlays/cert-manager"));
    let cert_manager = Objects::from_docs(cert_manager_docs);
    assert_eq!(cert_manager.cert_manager.len(), 4);

    // Patches are partial objects: they must name an object the overlay has, and a webhook
    // list in a strategic-merge patch must only name existing webhooks (webhooks merge by
    // name, so a typo would add a second, incomplete webhook).
    for dir in kustomization_dirs() {
        let k = load_kustomization(&dir);
        let own = resource_docs(&dir);
        for patch in k.patches.iter().filter(|p| p.is_file()) {
            for doc in read_docs(patch) {
                check_strategic_merge_patch(&doc, &own);
            }
        }
    }
}

fn check_strategic_merge_patch(patch: &Doc, targets: &[Doc]) {
    let target = targets
        .iter()
        .find(|t| {
            t.api_version() == patch.api_version()
                && t.kind() == patch.kind()
                && t.name() == patch.name()
                && t.namespace() == patch.namespace()
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: patches {}, which does not exist",
                patch.origin,
                patch.id()
            )
        });
    if let Some(webhooks) = patch.value.get("webhooks").and_then(Value::as_array) {
        let names: BTreeSet<&str> = target.value["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        for webhook in webhooks {
            let name = webhook["name"].as_str().unwrap_or_default();
            assert!(
                names.contains(name),
                "{}: patches webhook {name:?}, but {} only has {names:?}",
                patch.origin,
                target.id()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The base against the binary

/// The binary's command line with no arguments: its defaults.
fn default_serve_args() -> ServeArgs {
    Cli::try_parse_from(["pytorchjob-guard"]).unwrap().serve
}

fn dockerfile() -> String {
    std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile")
}

/// The instructions of the Dockerfile's last stage: `(INSTRUCTION, rest)`, continuation lines
/// joined.
fn runtime_stage() -> Vec<(String, String)> {
    let text = dockerfile().replace("\\\n", " ");
    let instructions: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (word, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (word.to_ascii_uppercase(), rest.trim().to_owned())
        })
        .collect();
    let last_from = instructions.iter().rposition(|(w, _)| w == "FROM").unwrap();
    instructions[last_from..].to_vec()
}

fn docker_instruction(word: &str) -> String {
    let found: Vec<String> = runtime_stage()
        .into_iter()
        .filter(|(w, _)| w == word)
        .map(|(_, rest)| rest)
        .collect();
    assert_eq!(found.len(), 1, "one {word} in the runtime stage: {found:?}");
    found[0].clone()
}

fn image_entrypoint() -> Vec<String> {
    serde_json::from_str(&docker_instruction("ENTRYPOINT"))
        .expect("ENTRYPOINT in exec (JSON array) form")
}

/// How the container's command line parses: the image's ENTRYPOINT, then the Deployment's args.
fn container_serve_args(objects: &Objects) -> ServeArgs {
    let container = objects.container();
    assert!(
        container.command.is_none(),
        "the Deployment keeps the image's entrypoint"
    );
    let mut argv = image_entrypoint();
    argv.extend(container.args.clone().unwrap_or_default());
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| {
        panic!("the binary refuses the container's command line {argv:?}:\n{e}")
    });
    match cli.command {
        Some(GuardCommand::Serve(args)) => *args,
        other => panic!("the container must run `serve`, not {other:?}"),
    }
}

fn container_port(container: &Container, port: &IntOrString) -> i32 {
    let ports = container.ports.as_deref().unwrap_or_default();
    match port {
        IntOrString::Int(number) => {
            assert!(
                ports.iter().any(|p| p.container_port == *number),
                "port {number} is not a container port"
            );
            *number
        }
        IntOrString::String(name) => {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name:?}"))
                .container_port
        }
    }
}

#[test]
fn the_webhook_reaches_the_service_and_the_container_port_the_binary_listens_on() {
    let objects = base_objects();
    let webhook = objects.webhook();
    assert!(
        webhook.client_config.url.is_none(),
        "a service webhook, not a URL"
    );
    let target = webhook
        .client_config
        .service
        .as_ref()
        .expect("clientConfig.service");
    let service_meta = &objects.service.metadata;
    assert_eq!(Some(&target.name), service_meta.name.as_ref());
    assert_eq!(Some(&target.namespace), service_meta.namespace.as_ref());
    assert_eq!(target.namespace, objects.guard_namespace());
    assert_eq!(target.path.as_deref(), Some("/validate"));
    // The names certificates are made for by default are this Service's.
    assert_eq!(target.name, certs::DEFAULT_SERVICE);
    assert_eq!(target.namespace, certs::DEFAULT_NAMESPACE);

    let service_spec = objects.service.spec.as_ref().unwrap();
    let port_number = target.port.unwrap_or(443);
    let service_port = service_spec
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.port == port_number)
        .unwrap_or_else(|| panic!("the Service has no port {port_number}"));
    assert_eq!(port_number, 443);
    assert_eq!(service_port.protocol.as_deref().unwrap_or("TCP"), "TCP");
    let target_port = service_port
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(service_port.port));
    assert!(
        matches!(target_port, IntOrString::String(_)),
        "targetPort names the container port: {target_port:?}"
    );
    let container_port = container_port(objects.container(), &target_port);

    // The binary listens there, by default and with the container's arguments.
    assert_eq!(
        i32::from(default_serve_args().listen.port()),
        container_port,
        "the binary's default listen port"
    );
    assert_eq!(
        i32::from(container_serve_args(&objects).listen.port()),
        container_port,
        "the container's listen port"
    );

    // The Service selects the Deployment's pods, and only through labels the Deployment's own
    // selector also fixes.
    let pod_labels = objects.pod_labels();
    let selector = service_spec.selector.clone().unwrap_or_default();
    assert!(!selector.is_empty(), "the Service has a selector");
    assert!(
        selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "Service selector {selector:?} vs pod labels {pod_labels:?}"
    );
    let deployment_selector = &objects.deployment.spec.as_ref().unwrap().selector;
    assert!(selects(deployment_selector, &pod_labels));
    assert_eq!(
        service_spec.type_.as_deref().unwrap_or("ClusterIP"),
        "ClusterIP"
    );
}

fn state() -> AppState {
    AppState::new(
        Arc::new(Policy::default()),
        Arc::new(Health::default()),
        Arc::new(Metrics::new()),
    )
}

async fn status_of(app: axum::Router, method: &str, uri: &str, body: &str) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    app.oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn the_webhook_path_and_the_probe_paths_are_routes_of_the_server() {
    let objects = base_objects();
    let path = objects
        .webhook()
        .client_config
        .service
        .as_ref()
        .and_then(|s| s.path.clone())
        .unwrap();
    // The API server POSTs with `?timeout=5s` appended. An empty review is a client mistake,
    // but the route exists: not 404, not 405.
    for uri in [path.clone(), format!("{path}?timeout=5s")] {
        let status = status_of(server::router(state()), "POST", &uri, "{}").await;
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "POST {uri}: {status}"
        );
        assert!(
            status.is_client_error(),
            "POST {uri} with no review: {status}"
        );
    }
    // The negative control: the router does answer 404 for paths it does not serve.
    assert_eq!(
        status_of(
            server::router(state()),
            "POST",
            "/validate-kubeflow-org-v1-pytorchjob",
            "{}"
        )
        .await,
        StatusCode::NOT_FOUND
    );

    let container = objects.container();
    let probes: [(&str, &Option<Probe>); 2] = [
        ("readiness", &container.readiness_probe),
        ("liveness", &container.liveness_probe),
    ];
    let mut paths = BTreeSet::new();
    for (what, probe) in probes {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("a {what} probe with httpGet"));
        assert_eq!(
            get.scheme.as_deref(),
            Some("HTTPS"),
            "{what}: the server only speaks TLS"
        );
        let probe_port = container_port(container, &get.port);
        assert_eq!(
            i32::from(container_serve_args(&objects).listen.port()),
            probe_port,
            "{what} probe port"
        );
        let probe_path = get.path.clone().unwrap();
        assert_eq!(
            status_of(server::router(state()), "GET", &probe_path, "").await,
            StatusCode::OK,
            "{what} probe GET {probe_path}"
        );
        paths.insert(probe_path);
    }
    assert_eq!(
        paths,
        BTreeSet::from(["/healthz".to_owned(), "/readyz".to_owned()]),
        "readiness on /readyz (turns 503 on shutdown), liveness on /healthz"
    );
}

#[tokio::test]
async fn the_metrics_port_is_where_the_binary_serves_metrics() {
    let objects = base_objects();
    let port = container_port(
        objects.container(),
        &IntOrString::String("metrics".to_owned()),
    );
    assert_eq!(i32::from(default_serve_args().metrics_listen.port()), port);
    assert_eq!(
        i32::from(container_serve_args(&objects).metrics_listen.port()),
        port
    );
    let annotations = objects
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    assert_eq!(
        annotations.get("prometheus.io/port"),
        Some(&port.to_string())
    );
    let path = annotations
        .get("prometheus.io/path")
        .expect("prometheus.io/path");
    assert_eq!(
        status_of(server::metrics_router(state()), "GET", path, "").await,
        StatusCode::OK
    );
    // Metrics are not on the webhook's port, and the webhook is not on the metrics port.
    assert_eq!(
        status_of(server::router(state()), "GET", path, "").await,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn the_certificates_are_mounted_where_the_binary_reads_them() {
    let objects = base_objects();
    let pod = objects.pod_spec();
    let container = objects.container();
    let args = container_serve_args(&objects);
    assert!(
        args.client_ca.is_none(),
        "no client CA is configured in the base"
    );

    let volume = pod
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|v| {
            v.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some(TLS_SECRET))
        })
        .unwrap_or_else(|| panic!("a volume from Secret {TLS_SECRET}"));
    let secret = volume.secret.as_ref().unwrap();
    assert!(
        secret.items.is_none(),
        "all keys of the Secret, under their own names"
    );
    assert_ne!(
        secret.optional,
        Some(true),
        "without the Secret the pod must not start"
    );
    let mount = container
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|m| m.name == volume.name)
        .expect("the certificate volume is mounted");
    assert_eq!(mount.read_only, Some(true));
    assert!(
        mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
        "a subPath mount never sees Secret updates, so certificates would not rotate"
    );
    let dir = Path::new(&mount.mount_path);
    assert_eq!(args.tls_cert, dir.join(certs::CERT_FILE));
    assert_eq!(args.tls_key, dir.join(certs::KEY_FILE));

    // The key is readable by the server's group (fsGroup) only.
    let mode = secret.default_mode.expect("an explicit defaultMode");
    assert_eq!(mode & 0o007, 0, "not world-readable: {mode:o}");
    assert_eq!(mode & 0o040, 0o040, "group-readable: {mode:o}");
    let security = pod.security_context.as_ref().unwrap();
    assert!(
        security.fs_group.is_some(),
        "fsGroup owns the Secret's files"
    );
    assert_eq!(security.fs_group, security.run_as_group);
}

const POLICY_CONFIG_MAP: &str = "pytorchjob-guard-policy";

/// The ConfigMap kustomize generates from manifests/base/policy.yaml.
fn policy_config_map() -> Doc {
    let text = std::fs::read_to_string(manifests().join("base/policy.yaml")).unwrap();
    Doc {
        origin: "configMapGenerator".to_owned(),
        value: serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": POLICY_CONFIG_MAP,
                "namespace": certs::DEFAULT_NAMESPACE,
                "labels": {"app.kubernetes.io/name": "pytorchjob-guard"}
            },
            "data": {"policy.yaml": text}
        }),
    }
}

#[test]
fn the_policy_config_map_is_the_default_policy_mounted_where_the_binary_reads_it() {
    // The generator's input is the shipped default policy, byte for byte, and it parses.
    let generated = std::fs::read_to_string(manifests().join("base/policy.yaml")).unwrap();
    let shipped = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    assert_eq!(
        generated, shipped,
        "manifests/base/policy.yaml is policies/default.yaml"
    );
    pytorchjob_guard::policy::file::parse(&generated).expect("the mounted policy is valid");
    let kustomization: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(manifests().join("base/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let generator = &kustomization["configMapGenerator"][0];
    assert_eq!(generator["name"], POLICY_CONFIG_MAP);
    assert_eq!(generator["namespace"], certs::DEFAULT_NAMESPACE);
    assert_eq!(generator["files"][0], "policy.yaml");
    assert_eq!(
        generator["options"]["disableNameSuffixHash"], true,
        "a stable name: an edited policy reaches running pods without a rollout"
    );

    let objects = base_objects();
    let args = container_serve_args(&objects);
    let policy = args.policy.expect("the Deployment passes --policy");
    let volume = objects
        .pod_spec()
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|c| c.name == POLICY_CONFIG_MAP)
        })
        .expect("a volume from the policy ConfigMap");
    let mount = objects
        .container()
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|m| m.name == volume.name)
        .expect("the policy volume is mounted");
    assert_eq!(mount.read_only, Some(true));
    assert!(
        mount.sub_path.is_none(),
        "a subPath mount never sees ConfigMap updates, so the policy would not reload"
    );
    assert_eq!(policy, Path::new(&mount.mount_path).join("policy.yaml"));
}

#[test]
fn shutdown_fits_in_the_grace_period() {
    let objects = base_objects();
    let args = container_serve_args(&objects);
    let needed = args.shutdown_delay + server::DRAIN_TIMEOUT;
    let grace = objects
        .pod_spec()
        .termination_grace_period_seconds
        .expect("an explicit terminationGracePeriodSeconds");
    assert!(
        u128::from(grace.unsigned_abs()) * 1000 > needed.as_millis(),
        "terminationGracePeriodSeconds {grace} must exceed shutdown delay + drain = {needed:?}"
    );
    // Readiness notices the 503 of a draining server before the listener closes.
    let readiness = objects.container().readiness_probe.as_ref().unwrap();
    let noticed = readiness.period_seconds.unwrap_or(10) * readiness.failure_threshold.unwrap_or(3);
    assert!(
        u128::from(noticed.unsigned_abs()) * 1000 <= args.shutdown_delay.as_millis(),
        "readiness needs {noticed}s to see the 503, longer than the {:?} shutdown delay",
        args.shutdown_delay
    );
}

#[test]
fn the_pod_passes_the_restricted_pod_security_standard() {
    let objects = base_objects();
    let labels = objects
        .namespace
        .metadata
        .labels
        .clone()
        .unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    for (kind, namespace) in [
        ("Deployment", &objects.deployment.metadata.namespace),
        ("Service", &objects.service.metadata.namespace),
        (
            "ServiceAccount",
            &objects.service_account.metadata.namespace,
        ),
        ("PodDisruptionBudget", &objects.pdb.metadata.namespace),
    ] {
        assert_eq!(
            namespace.as_deref(),
            Some(objects.guard_namespace()),
            "{kind}"
        );
    }

    let pod = objects.pod_spec();
    let pod_security = pod.security_context.clone().unwrap_or_default();
    // Baseline.
    assert_ne!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
    assert!(pod_security.sysctls.is_none());
    assert!(pod_security.se_linux_options.is_none());
    // Restricted: only these volume types.
    for volume in pod.volumes.as_deref().unwrap_or_default() {
        let allowed = volume.config_map.is_some()
            || volume.csi.is_some()
            || volume.downward_api.is_some()
            || volume.empty_dir.is_some()
            || volume.ephemeral.is_some()
            || volume.persistent_volume_claim.is_some()
            || volume.projected.is_some()
            || volume.secret.is_some();
        assert!(
            allowed,
            "volume {} has a type restricted forbids",
            volume.name
        );
    }
    let pod_seccomp = pod_security
        .seccomp_profile
        .as_ref()
        .map(|s| s.type_.as_str());

    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.as_deref().unwrap_or_default());
    for container in containers {
        let name = &container.name;
        let security = container.security_context.clone().unwrap_or_default();
        assert_ne!(security.privileged, Some(true), "{name}: privileged");
        assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
        let run_as_non_root = security.run_as_non_root.or(pod_security.run_as_non_root);
        assert_eq!(run_as_non_root, Some(true), "{name}: runAsNonRoot");
        let user = security.run_as_user.or(pod_security.run_as_user);
        assert!(
            user.is_some_and(|u| u != 0),
            "{name}: a numeric non-root runAsUser"
        );
        let seccomp = security
            .seccomp_profile
            .as_ref()
            .map(|s| s.type_.as_str())
            .or(pod_seccomp);
        assert!(
            matches!(seccomp, Some("RuntimeDefault" | "Localhost")),
            "{name}: seccompProfile {seccomp:?}"
        );
        let capabilities = security.capabilities.clone().unwrap_or_default();
        assert!(
            capabilities
                .drop
                .unwrap_or_default()
                .iter()
                .any(|c| c == "ALL"),
            "{name}: capabilities.drop ALL"
        );
        assert!(
            capabilities
                .add
                .unwrap_or_default()
                .iter()
                .all(|c| c == "NET_BIND_SERVICE"),
            "{name}: only NET_BIND_SERVICE may be added"
        );
        assert!(security.se_linux_options.is_none(), "{name}");
        assert!(
            matches!(security.proc_mount.as_deref(), None | Some("Default")),
            "{name}"
        );
        for port in container.ports.as_deref().unwrap_or_default() {
            assert!(port.host_port.is_none_or(|p| p == 0), "{name}: hostPort");
            assert!(
                port.container_port > 1024,
                "{name}: a non-root process cannot bind {}",
                port.container_port
            );
        }
        // Ours, beyond the standard.
        assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
    }

    // The user the pod runs as is the image's.
    let image_user = docker_instruction("USER");
    let image_uid: i64 = image_user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    let user = objects
        .container()
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user);
    assert_eq!(user.or(pod_security.run_as_user), Some(image_uid));
    assert_eq!(pod_security.fs_group, Some(image_uid));

    // Nothing in the pod talks to the Kubernetes API.
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        objects.service_account.automount_service_account_token,
        Some(false)
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        objects.service_account.metadata.name.as_deref()
    );
    // Service links would inject PYTORCHJOB_GUARD_* variables, the binary's own env prefix.
    assert_eq!(pod.enable_service_links, Some(false));
}

#[test]
fn two_replicas_stay_available_through_drains_and_upgrades() {
    let objects = base_objects();
    let spec = objects.deployment.spec.as_ref().unwrap();
    let replicas = spec.replicas.unwrap_or(1);
    assert!(replicas >= 2, "replicas {replicas}");
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .expect("a RollingUpdate strategy");
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));

    let pod_labels = objects.pod_labels();
    let pod = objects.pod_spec();
    let spread = pod
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    assert!(
        spread
            .iter()
            .any(|c| c.topology_key == "kubernetes.io/hostname"
                && c.label_selector
                    .as_ref()
                    .is_some_and(|s| selects(s, &pod_labels))),
        "a topology spread over nodes that selects the guard's pods"
    );
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("preferred pod anti-affinity");
    assert!(anti.iter().any(|t| {
        t.pod_affinity_term.topology_key == "kubernetes.io/hostname"
            && t.pod_affinity_term
                .label_selector
                .as_ref()
                .is_some_and(|s| selects(s, &pod_labels))
    }));

    let pdb = objects.pdb.spec.as_ref().unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert!(1 < replicas, "the PDB must leave room for one eviction");
    assert!(
        selects(pdb.selector.as_ref().unwrap(), &pod_labels),
        "the PDB covers the pods"
    );

    let resources = objects.container().resources.as_ref().expect("resources");
    let requests = resources.requests.as_ref().expect("requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    assert!(
        resources
            .limits
            .as_ref()
            .is_some_and(|l| l.contains_key("memory"))
    );
}

/// Whether a label selector matches these labels (matchLabels and matchExpressions).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector.match_labels.clone().unwrap_or_default();
    let expressions = selector.match_expressions.clone().unwrap_or_default();
    assert!(
        !match_labels.is_empty() || !expressions.is_empty(),
        "an empty selector matches everything"
    );
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && expressions.iter().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("unknown selector operator {other}"),
            }
        })
}

#[test]
fn the_webhook_only_judges_pytorchjob_updates_and_fails_closed() {
    let objects = base_objects();
    let webhook = objects.webhook();
    let rules = webhook.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(rule.operations.as_deref(), Some(&["UPDATE".to_owned()][..]));
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&["kubeflow.org".to_owned()][..])
    );
    assert_eq!(rule.api_versions.as_deref(), Some(&["v1".to_owned()][..]));
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["pytorchjobs".to_owned(), "pytorchjobs/scale".to_owned()][..]),
        "the main resource and its scale subresource, whose writes the guard judges as Worker \
         replicas: not pytorchjobs/status"
    );
    let scale = Policy::default()
        .governed_resource("kubeflow.org", "pytorchjobs")
        .and_then(|kind| kind.scale_replicas.clone())
        .expect("the binary judges pytorchjobs/scale");
    assert_eq!(
        scale.to_string(),
        "spec.pytorchReplicaSpecs.Worker.replicas"
    );
    assert_eq!(rule.scope.as_deref(), Some("Namespaced"));
    // The binary governs exactly what the rule sends it.
    assert!(Policy::default().governs("kubeflow.org", "PyTorchJob"));

    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(webhook.side_effects, "None");
    assert_eq!(webhook.match_policy.as_deref(), Some("Equivalent"));
    assert_eq!(webhook.admission_review_versions, ["v1", "v1beta1"]);
    let timeout = webhook.timeout_seconds.expect("an explicit timeoutSeconds");
    assert!(
        (1..10).contains(&timeout),
        "timeoutSeconds {timeout}: below the default 10"
    );
    assert!(webhook.object_selector.is_none());
    assert!(webhook.match_conditions.is_none());

    // kube-system and the guard's own namespace are never judged; other namespaces are. The
    // API server labels every namespace with kubernetes.io/metadata.name.
    let selector = webhook
        .namespace_selector
        .as_ref()
        .expect("a namespaceSelector");
    let namespace =
        |name: &str| BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), name.to_owned())]);
    assert!(!selects(selector, &namespace("kube-system")));
    assert!(!selects(selector, &namespace(objects.guard_namespace())));
    assert!(selects(selector, &namespace("default")));
    assert!(selects(selector, &namespace("team-a")));
}

#[test]
fn the_image_matches_the_crate_and_the_dockerfile() {
    let objects = base_objects();
    let image = objects.container().image.clone().unwrap();
    let (repository, tag) = image.rsplit_once(':').expect("a tagged image");
    assert_eq!(repository, "ghcr.io/pytorchjob-guard/pytorchjob-guard");
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "bump the image with the crate version"
    );

    let entrypoint = image_entrypoint();
    assert_eq!(entrypoint.last().map(String::as_str), Some("serve"));
    assert!(entrypoint[0].ends_with("/pytorchjob-guard"));
    let exposed: BTreeSet<String> = docker_instruction("EXPOSE")
        .split_whitespace()
        .map(|p| p.trim_end_matches("/tcp").to_owned())
        .collect();
    let defaults = default_serve_args();
    let listening: BTreeSet<String> = [defaults.listen.port(), defaults.metrics_listen.port()]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(exposed, listening, "EXPOSE the binary's default ports");
    let from = docker_instruction("FROM");
    assert!(
        from.starts_with("gcr.io/distroless/cc-debian12:nonroot"),
        "{from}"
    );

    // The image's environment points serve where the Deployment mounts the Secret.
    let env = docker_instruction("ENV");
    let args = container_serve_args(&objects);
    assert!(
        env.contains(&format!(
            "PYTORCHJOB_GUARD_TLS_CERT={}",
            args.tls_cert.display()
        )),
        "{env}"
    );
    assert!(
        env.contains(&format!(
            "PYTORCHJOB_GUARD_TLS_KEY={}",
            args.tls_key.display()
        )),
        "{env}"
    );

    let dockerignore =
        std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for must in [
        "target/",
        "certs/*.key",
        "manifests/overlays/self-managed/certs/",
    ] {
        assert!(
            dockerignore.lines().any(|l| l.trim() == must),
            ".dockerignore lacks {must}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The overlays

#[test]
fn the_cert_manager_overlay_issues_the_mounted_secret_for_the_service_name() {
    let objects = Objects::from_docs(resource_docs(&manifests().join("overlays/cert-manager")));
    let namespace = objects.guard_namespace().to_owned();
    for doc in &objects.cert_manager {
        assert_eq!(
            doc.namespace(),
            namespace,
            "{}: in the guard's namespace",
            doc.origin
        );
    }
    let issuer_ref = |doc: &Doc| {
        let r = &doc.value["spec"]["issuerRef"];
        assert_eq!(r["kind"], "Issuer", "{}: a namespaced Issuer", doc.origin);
        r["name"].as_str().unwrap().to_owned()
    };

    // The serving certificate: the Secret the Deployment mounts, for the name the API server dials.
    let serving: Vec<&Doc> = objects
        .cert_manager
        .iter()
        .filter(|d| d.kind() == "Certificate" && d.value["spec"]["secretName"] == TLS_SECRET)
        .collect();
    assert_eq!(serving.len(), 1, "one Certificate writes {TLS_SECRET}");
    let serving = serving[0];
    assert_ne!(serving.value["spec"]["isCA"], true);
    let dns: Vec<&str> = serving.value["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let target = objects.webhook().client_config.service.clone().unwrap();
    let dialed = format!("{}.{}.svc", target.name, target.namespace);
    assert!(dns.contains(&dialed.as_str()), "{dns:?} lacks {dialed}");
    assert!(dns.contains(&format!("{dialed}.cluster.local").as_str()));
    let default_names = certs::default_names(&target.name, &target.namespace);
    assert!(
        dns.iter().all(|n| default_names.iter().any(|d| d == n)),
        "{dns:?}"
    );
    let usages = serving.value["spec"]["usages"].as_array().unwrap();
    assert!(usages.contains(&Value::from("server auth")));

    // Serving ← CA Issuer ← CA Certificate (isCA) ← self-signed Issuer.
    let ca_issuer = objects.cert_manager_object("Issuer", &issuer_ref(serving));
    let ca_secret = ca_issuer.value["spec"]["ca"]["secretName"]
        .as_str()
        .expect("the serving certificate's Issuer is a CA issuer");
    let ca_certificate = objects
        .cert_manager
        .iter()
        .find(|d| d.kind() == "Certificate" && d.value["spec"]["secretName"] == ca_secret)
        .unwrap_or_else(|| panic!("no Certificate writes the CA Secret {ca_secret}"));
    assert_eq!(ca_certificate.value["spec"]["isCA"], true);
    assert_ne!(ca_secret, TLS_SECRET);
    let root = objects.cert_manager_object("Issuer", &issuer_ref(ca_certificate));
    assert!(
        root.value["spec"]["selfSigned"].is_object(),
        "{}",
        root.origin
    );

    // The cainjector annotation names the serving certificate.
    let k = load_kustomization(&manifests().join("overlays/cert-manager"));
    let patches: Vec<Doc> = k.patches.iter().flat_map(|p| read_docs(p)).collect();
    let annotation = patches
        .iter()
        .filter(|p| p.kind() == "ValidatingWebhookConfiguration")
        .find_map(|p| {
            p.value
                .pointer("/metadata/annotations/cert-manager.io~1inject-ca-from")
                .and_then(Value::as_str)
        })
        .expect("a patch with cert-manager.io/inject-ca-from on the webhook configuration");
    assert_eq!(annotation, format!("{namespace}/{}", serving.name()));
}

#[test]
fn the_self_managed_overlay_generates_the_mounted_secret_from_the_certs_output() {
    let dir = manifests().join("overlays/self-managed");
    let k = load_kustomization(&dir);
    let generators = k.raw["secretGenerator"]
        .as_array()
        .expect("a secretGenerator");
    assert_eq!(generators.len(), 1);
    let generator = &generators[0];
    assert_eq!(generator["name"], TLS_SECRET);
    assert_eq!(generator["namespace"], certs::DEFAULT_NAMESPACE);
    assert_eq!(generator["type"], "kubernetes.io/tls");
    assert_eq!(
        generator["options"]["disableNameSuffixHash"], true,
        "a fixed name: the Deployment mounts {TLS_SECRET}"
    );
    let files: BTreeMap<String, PathBuf> = strings(generator.get("files"))
        .into_iter()
        .map(|entry| {
            let (key, path) = entry.split_once('=').expect("key=path entries");
            (key.to_owned(), normalize(&dir.join(path)))
        })
        .collect();
    let certs_dir = manifests().join(SELF_MANAGED_CERTS);
    for name in [certs::CA_FILE, certs::CERT_FILE, certs::KEY_FILE] {
        assert_eq!(
            files.get(name),
            Some(&certs_dir.join(name)),
            "Secret key {name}"
        );
    }
    assert_eq!(files.len(), 3);
    assert!(
        k.patches
            .iter()
            .any(|p| normalize(p) == certs_dir.join(CA_BUNDLE_PATCH)),
        "the overlay applies certs/{CA_BUNDLE_PATCH}"
    );
}

/// The caBundle patch as `pytorchjob-guard certs` is to write it (`certs/ca-bundle.yaml`).
fn expected_ca_bundle_patch(ca_pem: &str) -> String {
    let ca_bundle = serde_json::to_value(ByteString(ca_pem.as_bytes().to_vec())).unwrap();
    format!(
        "# Generated by `pytorchjob-guard certs` with ca.crt, tls.crt and tls.key: the webhook's\n\
         # caBundle is the CA that signed tls.crt. Regenerate, do not edit.\n\
         apiVersion: admissionregistration.k8s.io/v1\n\
         kind: ValidatingWebhookConfiguration\n\
         metadata:\n  name: pytorchjob-guard\n\
         webhooks:\n  - name: {WEBHOOK_NAME}\n    clientConfig:\n      caBundle: {}\n",
        ca_bundle.as_str().unwrap()
    )
}

/// A copy of manifests/ (without generated files) with `pytorchjob-guard certs` run into the
/// self-managed overlay, as a user would.
fn self_managed_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                if normalize(&path) != manifests().join(SELF_MANAGED_CERTS) {
                    copy(&path, &target);
                }
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }
    let temp = tempfile::tempdir().unwrap();
    let copied = temp.path().join("manifests");
    copy(&manifests(), &copied);
    let out = copied.join(SELF_MANAGED_CERTS);
    let cli = Cli::try_parse_from([
        "pytorchjob-guard",
        "certs",
        "--namespace",
        certs::DEFAULT_NAMESPACE,
        "--service",
        certs::DEFAULT_SERVICE,
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(cli::run(cli), ExitCode::from(cli::EXIT_OK));
    let patch = out.join(CA_BUNDLE_PATCH);
    assert!(
        patch.exists(),
        "`pytorchjob-guard certs` writes {CA_BUNDLE_PATCH}"
    );
    let ca = std::fs::read_to_string(out.join(certs::CA_FILE)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&patch).unwrap(),
        expected_ca_bundle_patch(&ca)
    );
    temp
}

/// Complete a TLS handshake in memory between a server using `cert`/`key` (through the
/// binary's own TLS loading) and a client that trusts `ca_bundle` and dials `name`, offering
/// only HTTP/1.1 like the API server.
fn handshake(cert: &Path, key: &Path, ca_bundle: &[u8], name: &str) -> Result<(), rustls::Error> {
    let server_config = tls::load(&TlsSettings {
        cert: cert.to_owned(),
        key: key.to_owned(),
        client_ca: None,
        client_name: None,
        min_version: MinTlsVersion::Tls12,
    })
    .expect("the binary loads the certificate and key");
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_bundle) {
        roots.add(ca.unwrap()).unwrap();
    }
    assert!(!roots.is_empty(), "the caBundle holds a certificate");
    let mut client_config = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(client_config), server_name)?;
    let mut server = rustls::ServerConnection::new(Arc::new(server_config))?;
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut reader = wire.as_slice();
        while !reader.is_empty() {
            server.read_tls(&mut reader).unwrap();
        }
        server.process_new_packets()?;
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        let mut reader = wire.as_slice();
        while !reader.is_empty() {
            client.read_tls(&mut reader).unwrap();
        }
        client.process_new_packets()?;
    }
    Err(rustls::Error::General(
        "the handshake did not finish".to_owned(),
    ))
}

fn ca_bundle_of(patch: &Doc) -> Vec<u8> {
    let value = patch
        .value
        .pointer("/webhooks/0/clientConfig/caBundle")
        .cloned()
        .expect("webhooks[0].clientConfig.caBundle");
    serde_json::from_value::<ByteString>(value)
        .expect("caBundle is base64")
        .0
}

#[test]
fn the_certs_output_makes_a_ca_bundle_patch_the_api_server_can_use() {
    let temp = self_managed_copy();
    let out = temp.path().join("manifests").join(SELF_MANAGED_CERTS);
    let ca = std::fs::read(out.join(certs::CA_FILE)).unwrap();
    let patch_path = out.join(CA_BUNDLE_PATCH);
    let text = std::fs::read_to_string(&patch_path).unwrap();
    let docs = parse_yaml_docs(CA_BUNDLE_PATCH, &text);
    assert_eq!(docs.len(), 1);
    let patch = &docs[0];
    check_strategic_merge_patch(patch, &base_objects().docs);
    let webhooks = patch.value["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    assert_eq!(webhooks[0]["name"], WEBHOOK_NAME);
    assert_eq!(
        webhooks[0]["clientConfig"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["caBundle"],
        "the patch only sets the caBundle"
    );
    assert_eq!(ca_bundle_of(patch), ca, "caBundle is base64 of ca.crt");

    // The API server, trusting that caBundle, accepts the serving certificate for the name it
    // dials, and only for that service.
    let target = base_objects()
        .webhook()
        .client_config
        .service
        .clone()
        .unwrap();
    let dialed = format!("{}.{}.svc", target.name, target.namespace);
    let (cert, key) = (out.join(certs::CERT_FILE), out.join(certs::KEY_FILE));
    handshake(&cert, &key, &ca, &dialed).expect("the API server's handshake succeeds");
    let wrong = format!("other.{}.svc", target.namespace);
    assert!(
        handshake(&cert, &key, &ca, &wrong).is_err(),
        "a different name is refused"
    );
    let other_ca = certs::generate(&certs::default_names(&target.name, &target.namespace)).unwrap();
    assert!(
        handshake(&cert, &key, other_ca.ca_pem.as_bytes(), &dialed).is_err(),
        "a different CA is refused"
    );
}

// ---------------------------------------------------------------------------------------------
// Rendering with kubectl, when it is installed

fn kubectl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file())
}

/// `kubectl kustomize DIR`, parsed; `None` (with a note) when kubectl is not installed.
fn render(dir: &Path) -> Option<Objects> {
    let Some(kubectl) = kubectl() else {
        eprintln!(
            "note: kubectl is not on PATH; not rendering {}",
            dir.display()
        );
        return None;
    };
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut docs = parse_yaml_docs(&format!("kubectl kustomize {}", dir.display()), &text);
    for doc in &mut docs {
        // kustomize wraps a generated Secret's base64 at 76 columns; the API server's decoder
        // skips the line breaks, k8s-openapi's does not.
        if doc.kind() == "Secret" {
            for value in doc
                .value
                .get_mut("data")
                .and_then(Value::as_object_mut)
                .into_iter()
                .flat_map(|data| data.values_mut())
            {
                let joined: String = value.as_str().unwrap().split_whitespace().collect();
                *value = Value::String(joined);
            }
        }
    }
    Some(Objects::from_docs(docs))
}

/// The rendered objects are the base's objects, unchanged except for the listed ids, plus
/// `extra`.
fn assert_rendered_as_base_plus(rendered: &Objects, extra: &[Doc], changed: &[&str]) {
    let base = base_objects();
    let mut expected: BTreeMap<String, &Value> =
        base.docs.iter().map(|d| (d.id(), &d.value)).collect();
    // The base's generated ConfigMap: the policy file under its own name.
    let policy = policy_config_map();
    expected.insert(policy.id(), &policy.value);
    for doc in extra {
        expected.insert(doc.id(), &doc.value);
    }
    let actual: BTreeMap<String, &Value> =
        rendered.docs.iter().map(|d| (d.id(), &d.value)).collect();
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the rendered objects"
    );
    for (id, value) in &expected {
        if !changed.contains(&id.as_str()) {
            assert_eq!(&actual[id], value, "{id} is rendered as written");
        }
    }
}

const WEBHOOK_ID: &str = "ValidatingWebhookConfiguration /pytorchjob-guard";

#[test]
fn the_base_renders() {
    let Some(rendered) = render(&manifests().join("base")) else {
        return;
    };
    assert_rendered_as_base_plus(&rendered, &[], &[]);
    // The rendered policy ConfigMap holds a policy the binary accepts.
    let [config_map] = rendered.config_maps.as_slice() else {
        panic!("one ConfigMap: {:?}", rendered.config_maps);
    };
    let text = &config_map.data.as_ref().expect("data")["policy.yaml"];
    pytorchjob_guard::policy::file::parse(text).expect("the rendered policy is valid");
}

#[test]
fn the_cert_manager_overlay_renders_with_the_ca_injection() {
    let dir = manifests().join("overlays/cert-manager");
    let Some(rendered) = render(&dir) else {
        return;
    };
    let own: Vec<Doc> = resource_docs(&dir)
        .into_iter()
        .filter(|d| d.api_version() == "cert-manager.io/v1")
        .collect();
    assert_eq!(own.len(), 4);
    assert_rendered_as_base_plus(&rendered, &own, &[WEBHOOK_ID]);
    let annotations = rendered
        .webhook_configuration
        .metadata
        .annotations
        .clone()
        .unwrap_or_default();
    assert_eq!(
        annotations
            .get("cert-manager.io/inject-ca-from")
            .map(String::as_str),
        Some("pytorchjob-guard/pytorchjob-guard-serving")
    );
    // The patch only added the annotation.
    let mut webhook = rendered.webhook_configuration.clone();
    webhook.metadata.annotations = None;
    assert_eq!(webhook, base_objects().webhook_configuration);
}

#[test]
fn the_self_managed_overlay_renders_a_secret_and_ca_bundle_that_work_together() {
    let temp = self_managed_copy();
    let copied = temp.path().join("manifests");
    let Some(rendered) = render(&copied.join("overlays/self-managed")) else {
        return;
    };
    assert_eq!(rendered.secrets.len(), 1);
    let secret = &rendered.secrets[0];
    let secret_doc = rendered
        .docs
        .iter()
        .find(|d| d.kind() == "Secret")
        .unwrap()
        .clone();
    assert_rendered_as_base_plus(&rendered, &[secret_doc], &[WEBHOOK_ID]);
    assert_eq!(secret.metadata.name.as_deref(), Some(TLS_SECRET));
    assert_eq!(
        secret.metadata.namespace.as_deref(),
        Some(certs::DEFAULT_NAMESPACE)
    );
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));

    // The Secret holds exactly the files `certs` wrote.
    let out = copied.join(SELF_MANAGED_CERTS);
    let data = secret.data.clone().unwrap_or_default();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [certs::CA_FILE, certs::CERT_FILE, certs::KEY_FILE]
    );
    for (key, bytes) in &data {
        assert_eq!(
            &bytes.0,
            &std::fs::read(out.join(key)).unwrap(),
            "Secret key {key}"
        );
    }

    // The rendered webhook is the base's plus the caBundle of that CA.
    let mut webhook = rendered.webhook_configuration.clone();
    let hook = &mut webhook.webhooks.as_mut().unwrap()[0];
    let ca_bundle = hook.client_config.ca_bundle.take().expect("a caBundle");
    assert_eq!(ca_bundle.0, data[certs::CA_FILE].0);
    assert_eq!(webhook, base_objects().webhook_configuration);

    // What the pods mount and what the API server trusts fit, for the name it dials.
    let mounted = tempfile::tempdir().unwrap();
    for (key, bytes) in &data {
        std::fs::write(mounted.path().join(key), &bytes.0).unwrap();
    }
    let target = rendered.webhook().client_config.service.clone().unwrap();
    handshake(
        &mounted.path().join(certs::CERT_FILE),
        &mounted.path().join(certs::KEY_FILE),
        &ca_bundle.0,
        &format!("{}.{}.svc", target.name, target.namespace),
    )
    .expect("the API server trusts the mounted certificate");
}
