//! The deployment manifests (`manifests/`), the `Dockerfile` and the binary, checked against each
//! other.
//!
//! Every test reads what `kubectl kustomize` renders (the base, both certificate overlays, each
//! with the training-operator component, the monitoring component, and both), never the files
//! one by one: kustomize resolves
//! the layout, and a reference that does not resolve fails the rendering. Every rendered
//! document parses into its real Kubernetes type (k8s-openapi) *and serializes back to the same
//! document*: k8s-openapi ignores unknown fields, so a misspelled field (`readinesProbe`) would
//! otherwise pass silently. The webhook configuration, Service, Deployment and the binary's
//! defaults, flags, routes and policy must agree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, OnceLock};

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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pytorchjob_guard::certs;
use pytorchjob_guard::cli::{self, Cli, Command as GuardCommand, ServeArgs};
use pytorchjob_guard::metrics::Metrics;
use pytorchjob_guard::policy::{Policy, file};
use pytorchjob_guard::server::{self, AppState, Health};
use pytorchjob_guard::tls::{self, MinTlsVersion, TlsSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned};
use serde_json::Value;
use tower::ServiceExt;

/// The default entry's name, as users see it in denials.
const WEBHOOK_NAME: &str = "pytorchjob-guard.kubeflow.org";
/// The namespace label that picks a rollout mode.
const MODE_LABEL: &str = "pytorchjob-guard.kubeflow.org/mode";
/// Each webhook entry: its name, its path, and the mode label value that selects it (`None`:
/// the default entry, for namespaces without a valid mode label).
const ENTRIES: &[(&str, &str, Option<&str>)] = &[
    (WEBHOOK_NAME, "/validate", None),
    (
        "enforce.pytorchjob-guard.kubeflow.org",
        "/validate/enforce",
        Some("enforce"),
    ),
    (
        "warn.pytorchjob-guard.kubeflow.org",
        "/validate/warn",
        Some("warn"),
    ),
    (
        "audit.pytorchjob-guard.kubeflow.org",
        "/validate/audit",
        Some("audit"),
    ),
];
/// The Secret holding the serving certificate, written by either overlay.
const TLS_SECRET: &str = "pytorchjob-guard-tls";
/// The patch `pytorchjob-guard certs` writes next to the certificates.
const CA_BUNDLE_PATCH: &str = "ca-bundle.yaml";
/// Where the self-managed overlay expects `pytorchjob-guard certs --out` to write.
const SELF_MANAGED_CERTS: &str = "overlays/self-managed/certs";
/// The component that widens the guard to every training-operator kind.
const ALL_KINDS_COMPONENT: &str = "components/training-operator";
/// The component that adds the PodMonitor, the PrometheusRule and the Grafana dashboard.
const MONITORING_COMPONENT: &str = "components/monitoring";
/// The ConfigMap holding the Grafana dashboard, and the label Grafana's sidecar looks for.
const DASHBOARD_CONFIG_MAP: &str = "pytorchjob-guard-dashboard";
const GRAFANA_DASHBOARD_LABEL: (&str, &str) = ("grafana_dashboard", "1");
/// Where every alert's runbook lives: a section of manifests/README.md.
const RUNBOOKS: &str =
    "https://github.com/pytorchjob-guard/pytorchjob-guard/blob/main/manifests/README.md#";

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
    /// monitoring.coreos.com objects (the monitoring component), untyped.
    monitoring: Vec<Doc>,
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
        let mut monitoring = Vec::new();
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
                ("monitoring.coreos.com/v1", "PodMonitor" | "PrometheusRule") => {
                    assert!(!doc.name().is_empty(), "{}: no metadata.name", doc.origin);
                    assert!(doc.value.get("spec").is_some(), "{}: no spec", doc.origin);
                    monitoring.push(doc.clone());
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
            monitoring,
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

    /// The entries, in the order of [`ENTRIES`].
    fn webhooks(&self) -> &[ValidatingWebhook] {
        let webhooks = self
            .webhook_configuration
            .webhooks
            .as_deref()
            .unwrap_or_default();
        let names: Vec<&str> = webhooks.iter().map(|w| w.name.as_str()).collect();
        let expected: Vec<&str> = ENTRIES.iter().map(|(name, ..)| *name).collect();
        assert_eq!(names, expected, "one webhook entry per rollout mode");
        webhooks
    }

    /// The default mode's entry.
    fn webhook(&self) -> &ValidatingWebhook {
        &self.webhooks()[0]
    }

    /// The rendered ConfigMap named `name`.
    fn config_map(&self, name: &str) -> &ConfigMap {
        let found: Vec<&ConfigMap> = self
            .config_maps
            .iter()
            .filter(|c| c.metadata.name.as_deref() == Some(name))
            .collect();
        let [config_map] = found.as_slice() else {
            panic!("one ConfigMap {name}: {:?}", self.config_maps);
        };
        config_map
    }

    /// The policy file the rendered ConfigMap mounts.
    fn policy_text(&self) -> &str {
        &self
            .config_map(POLICY_CONFIG_MAP)
            .data
            .as_ref()
            .expect("data")["policy.yaml"]
    }

    fn monitoring_object(&self, kind: &str) -> &Doc {
        let found: Vec<&Doc> = self
            .monitoring
            .iter()
            .filter(|d| d.kind() == kind)
            .collect();
        let [doc] = found.as_slice() else {
            panic!("one {kind}: {found:?}");
        };
        doc
    }

    fn cert_manager_object(&self, kind: &str, name: &str) -> &Doc {
        self.cert_manager
            .iter()
            .find(|d| d.kind() == kind && d.name() == name)
            .unwrap_or_else(|| panic!("no cert-manager {kind} {name}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Parse a document into its Kubernetes type and require it to serialize back to the same
/// JSON: a field the type does not know (a typo, a wrong indentation level) is an error.
fn typed<T: DeserializeOwned + Serialize>(doc: &Doc) -> T {
    let object: T = serde_json::from_value(doc.value.clone())
        .unwrap_or_else(|e| panic!("{}: not a valid {}: {e}", doc.origin, doc.kind()));
    let back = serde_json::to_value(&object).unwrap();
    assert!(
        back == doc.value,
        "{}: fields do not survive parsing into the {} type (misspelled or misplaced?):\n\
         written {:#}\nparsed  {:#}",
        doc.origin,
        doc.kind(),
        doc.value,
        back
    );
    object
}

/// `kubectl kustomize DIR`, parsed into typed objects.
fn render(dir: &Path) -> Objects {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl (the manifests are rendered with `kubectl kustomize`) runs");
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
    Objects::from_docs(docs)
}

/// The rendered base, once.
fn base() -> &'static Objects {
    static BASE: OnceLock<Objects> = OnceLock::new();
    BASE.get_or_init(|| render(&manifests().join("base")))
}

/// A copy of manifests/ with `pytorchjob-guard certs` run into the self-managed overlay, as a
/// user would, and per certificate overlay one overlay that adds the training-operator
/// component (`overlays/all-kinds-<overlay>`), one that adds the monitoring component
/// (`overlays/monitoring-<overlay>`) and one that adds both (`overlays/monitoring-all-kinds-<overlay>`).
fn user_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path == manifests().join(SELF_MANAGED_CERTS) {
                continue; // a developer's own certificates: `certs` writes fresh ones below
            } else if path.is_dir() {
                copy(&path, &target);
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
    for overlay in ["cert-manager", "self-managed"] {
        for (name, components) in [
            (format!("all-kinds-{overlay}"), vec![ALL_KINDS_COMPONENT]),
            (format!("monitoring-{overlay}"), vec![MONITORING_COMPONENT]),
            (
                format!("monitoring-all-kinds-{overlay}"),
                vec![ALL_KINDS_COMPONENT, MONITORING_COMPONENT],
            ),
        ] {
            let dir = copied.join("overlays").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let components: String = components
                .iter()
                .map(|c| format!("  - ../../{c}\n"))
                .collect();
            std::fs::write(
                dir.join("kustomization.yaml"),
                format!(
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                     resources:\n  - ../{overlay}\ncomponents:\n{components}"
                ),
            )
            .unwrap();
        }
    }
    temp
}

/// Every rendering a user can deploy, by name, from one [`user_copy`].
fn renderings(copy: &Path) -> Vec<(&'static str, Objects)> {
    [
        "cert-manager",
        "self-managed",
        "all-kinds-cert-manager",
        "all-kinds-self-managed",
        "monitoring-cert-manager",
        "monitoring-self-managed",
        "monitoring-all-kinds-cert-manager",
        "monitoring-all-kinds-self-managed",
    ]
    .into_iter()
    .map(|overlay| {
        (
            overlay,
            render(&copy.join("manifests/overlays").join(overlay)),
        )
    })
    .collect()
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
    let objects = base();
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
    // Every mode's entry goes to the same Service port.
    for webhook in objects.webhooks() {
        let service = webhook.client_config.service.as_ref().unwrap();
        assert_eq!(
            (&service.name, &service.namespace),
            (&target.name, &target.namespace)
        );
        assert_eq!(service.port, target.port, "{}", webhook.name);
        assert!(webhook.client_config.url.is_none(), "{}", webhook.name);
    }

    // The binary listens there, by default and with the container's arguments.
    assert_eq!(
        i32::from(default_serve_args().listen.port()),
        container_port,
        "the binary's default listen port"
    );
    assert_eq!(
        i32::from(container_serve_args(objects).listen.port()),
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

fn entry_path(webhook: &ValidatingWebhook) -> &str {
    let service = webhook.client_config.service.as_ref();
    service.and_then(|s| s.path.as_deref()).unwrap()
}

/// The API server POSTs reviews with `?timeout=5s` appended. An empty review is a client
/// mistake, but the route exists: not 404, not 405.
async fn assert_is_a_webhook_route(path: &str) {
    for uri in [path.to_owned(), format!("{path}?timeout=5s")] {
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
}

/// Every mode entry's path is a review route of the server.
#[tokio::test]
async fn every_mode_entry_path_is_a_route_of_the_server() {
    for webhook in base().webhooks() {
        assert_is_a_webhook_route(entry_path(webhook)).await;
    }
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
    let objects = base();
    assert_eq!(entry_path(objects.webhook()), "/validate");
    assert_is_a_webhook_route("/validate").await;
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
            i32::from(container_serve_args(objects).listen.port()),
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
    let objects = base();
    let port = container_port(
        objects.container(),
        &IntOrString::String("metrics".to_owned()),
    );
    assert_eq!(i32::from(default_serve_args().metrics_listen.port()), port);
    assert_eq!(
        i32::from(container_serve_args(objects).metrics_listen.port()),
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
    let objects = base();
    let pod = objects.pod_spec();
    let container = objects.container();
    let args = container_serve_args(objects);
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

#[test]
fn the_policy_config_map_is_the_default_policy_mounted_where_the_binary_reads_it() {
    // The generator's input is the shipped default policy, byte for byte, and it parses.
    let generated = std::fs::read_to_string(manifests().join("base/policy.yaml")).unwrap();
    let shipped = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    assert_eq!(
        generated, shipped,
        "manifests/base/policy.yaml is policies/default.yaml"
    );
    // kustomize's configMapGenerator made it a ConfigMap with a stable name (an edited policy
    // reaches running pods without a rollout) holding exactly that file.
    assert_eq!(
        base().config_maps.len(),
        1,
        "the base generates the policy only"
    );
    let rendered = base().config_map(POLICY_CONFIG_MAP);
    assert_eq!(
        rendered.metadata.namespace.as_deref(),
        Some(certs::DEFAULT_NAMESPACE)
    );
    assert_eq!(base().policy_text(), shipped);
    pytorchjob_guard::policy::file::parse(&shipped).expect("the mounted policy is valid");

    let objects = base();
    let args = container_serve_args(objects);
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
    let objects = base();
    let args = container_serve_args(objects);
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

/// A Kubernetes memory quantity with a binary suffix (`128Mi`, `1Gi`, `512Ki`) or none, in bytes.
fn binary_quantity(quantity: &str) -> usize {
    let (number, unit) = [("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .into_iter()
        .find_map(|(suffix, unit)| Some((quantity.strip_suffix(suffix)?, unit)))
        .unwrap_or((quantity, 1));
    let number: usize = number
        .parse()
        .unwrap_or_else(|_| panic!("write the memory limit as a whole Ki, Mi or Gi: {quantity}"));
    number * unit
}

/// The in-flight byte budget is set beside the memory limit and fits it: peak memory is at most
/// the server's baseline plus the measured peak per body byte times the budget
/// (`server::PEAK_MEMORY_PER_BODY_BYTE`; tests/memory.rs holds the binary to the limit).
#[test]
fn the_in_flight_byte_budget_fits_the_memory_limit() {
    let objects = base();
    let container = objects.container();
    assert!(
        container
            .args
            .iter()
            .flatten()
            .any(|a| a.starts_with("--max-in-flight-bytes=")),
        "the Deployment sets --max-in-flight-bytes explicitly, together with its memory limit"
    );
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let limit = binary_quantity(&limits.expect("resource limits")["memory"].0);
    let fits = |budget: usize| {
        server::BASELINE_MEMORY_BYTES + server::PEAK_MEMORY_PER_BODY_BYTE * budget <= limit
    };
    let budget = container_serve_args(objects).max_in_flight_bytes;
    assert!(
        fits(budget),
        "--max-in-flight-bytes={budget} needs {} + {} x {budget} bytes, more than the {limit}-byte memory limit",
        server::BASELINE_MEMORY_BYTES,
        server::PEAK_MEMORY_PER_BODY_BYTE
    );
    assert!(
        budget - budget / server::SMALL_SHARE >= server::MAX_BODY_BYTES,
        "the largest body fits beside the small bodies' share"
    );
    // Without the flag the image's default fits the same limit.
    assert!(fits(default_serve_args().max_in_flight_bytes));
}

/// The namespace enforces the restricted Pod Security Standard, so the API server itself refuses
/// a pod that breaks it (the standard is not re-checked here). What is checked is where the
/// manifests meet the image: the pod runs as the Dockerfile's non-root USER, owns the mounted
/// Secret through that group, writes no root filesystem, and never talks to the Kubernetes API.
#[test]
fn the_pod_runs_restricted_as_the_images_user() {
    let objects = base();
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
    let security = objects
        .container()
        .security_context
        .clone()
        .unwrap_or_default();
    let image_uid: i64 = docker_instruction("USER")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(image_uid, 0);
    assert_eq!(
        security.run_as_user.or(pod_security.run_as_user),
        Some(image_uid)
    );
    assert_eq!(pod_security.fs_group, Some(image_uid));
    assert_eq!(security.read_only_root_filesystem, Some(true));
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
    let objects = base();
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
fn the_image_matches_the_crate_and_the_dockerfile() {
    let objects = base();
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
    let args = container_serve_args(objects);
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
    let objects = render(&manifests().join("overlays/cert-manager"));
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

    // The cainjector annotation names the serving certificate. cainjector fills the caBundle
    // of every webhook entry of the configuration it annotates, so all four are covered.
    let annotations = objects
        .webhook_configuration
        .metadata
        .annotations
        .clone()
        .unwrap_or_default();
    let annotation = annotations
        .get("cert-manager.io/inject-ca-from")
        .expect("cert-manager.io/inject-ca-from on the webhook configuration");
    assert_eq!(*annotation, format!("{namespace}/{}", serving.name()));
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

// ---------------------------------------------------------------------------------------------
// The webhook entries: rules, modes, caBundle

#[test]
fn every_overlay_renders_into_the_kubernetes_types() {
    // Objects::from_docs (in render) round-trips every known kind and refuses unknown ones.
    assert_eq!(
        base().docs.len(),
        7,
        "{:?}",
        base().docs.iter().map(Doc::id).collect::<Vec<_>>()
    );
    assert!(base().cert_manager.is_empty() && base().secrets.is_empty());
    let copy = user_copy();
    for (overlay, objects) in renderings(copy.path()) {
        let (cert_manager, secrets) = if overlay.ends_with("cert-manager") {
            (4, 0)
        } else {
            (0, 1)
        };
        assert_eq!(objects.cert_manager.len(), cert_manager, "{overlay}");
        assert_eq!(objects.secrets.len(), secrets, "{overlay}");
        // PodMonitor, PrometheusRule, the dashboard's ConfigMap.
        let monitoring = if overlay.starts_with("monitoring") {
            3
        } else {
            0
        };
        assert_eq!(objects.monitoring.len(), monitoring.min(2), "{overlay}");
        assert_eq!(
            objects.docs.len(),
            7 + cert_manager + secrets + monitoring,
            "{overlay}"
        );
    }
}

/// The resources a policy must be sent: each kind's plural, and `<plural>/scale` for the kinds
/// it judges scale writes of.
fn resources_of(policy: &Policy) -> BTreeSet<String> {
    policy
        .kinds()
        .iter()
        .flat_map(|kind| {
            let scale = kind
                .scale_replicas
                .as_ref()
                .map(|_| format!("{}/scale", kind.resource));
            std::iter::once(kind.resource.clone()).chain(scale)
        })
        .collect()
}

/// Every entry of a rendering sends the API server's UPDATEs of exactly the mounted policy's
/// kinds (and the scale subresources it judges), and fails closed.
fn assert_rules_match_the_mounted_policy(what: &str, objects: &Objects) {
    let policy = file::parse(objects.policy_text()).unwrap();
    for webhook in objects.webhooks() {
        let at = format!("{what} {}", webhook.name);
        let [rule] = webhook.rules.as_deref().unwrap_or_default() else {
            panic!("{at}: one rule");
        };
        assert_eq!(
            rule.operations.as_deref(),
            Some(&["UPDATE".to_owned()][..]),
            "{at}"
        );
        let groups: BTreeSet<&str> = policy.kinds().iter().map(|k| k.group.as_str()).collect();
        let rule_groups: BTreeSet<&str> = rule
            .api_groups
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(rule_groups, groups, "{at}");
        assert_eq!(
            rule.api_versions.as_deref(),
            Some(&["v1".to_owned()][..]),
            "{at}"
        );
        assert_eq!(rule.scope.as_deref(), Some("Namespaced"), "{at}");
        let resources: BTreeSet<String> = rule.resources.iter().flatten().cloned().collect();
        assert_eq!(
            resources,
            resources_of(&policy),
            "{at}: the rule's resources are the policy's kinds and scale subresources \
             (never <plural>/status)"
        );
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"), "{at}");
        assert_eq!(webhook.side_effects, "None", "{at}");
        assert_eq!(webhook.match_policy.as_deref(), Some("Equivalent"), "{at}");
        assert_eq!(webhook.admission_review_versions, ["v1", "v1beta1"], "{at}");
        let timeout = webhook.timeout_seconds.expect("an explicit timeoutSeconds");
        assert!(
            (1..10).contains(&timeout),
            "{at}: timeoutSeconds {timeout}, below the default 10"
        );
        assert!(
            webhook.object_selector.is_none() && webhook.match_conditions.is_none(),
            "{at}"
        );
    }
}

#[test]
fn the_webhooks_judge_exactly_the_mounted_policys_kinds_and_fail_closed() {
    // The base mounts the default policy, the built-in rule: PyTorchJob and pytorchjobs/scale.
    assert_eq!(
        resources_of(&file::parse(base().policy_text()).unwrap()),
        resources_of(&Policy::default())
    );
    assert_rules_match_the_mounted_policy("base", base());
    let copy = user_copy();
    for (overlay, objects) in renderings(copy.path()) {
        assert_rules_match_the_mounted_policy(overlay, &objects);
        let kinds = file::parse(objects.policy_text()).unwrap().kinds().len();
        assert_eq!(
            kinds,
            if overlay.contains("all-kinds") { 7 } else { 1 },
            "{overlay}"
        );
    }
}

#[test]
fn the_component_mounts_the_training_operator_preset() {
    let preset = std::fs::read_to_string(repo().join("policies/training-operator.yaml")).unwrap();
    let copy =
        std::fs::read_to_string(manifests().join(ALL_KINDS_COMPONENT).join("policy.yaml")).unwrap();
    assert_eq!(
        copy, preset,
        "{ALL_KINDS_COMPONENT}/policy.yaml is policies/training-operator.yaml"
    );
    let temp = user_copy();
    for (overlay, objects) in renderings(temp.path()) {
        if overlay.contains("all-kinds") {
            assert_eq!(objects.policy_text(), preset, "{overlay}");
        }
    }
}

/// The four entries are one webhook registered four times: equal except name, path and the
/// mode term of the namespaceSelector.
fn assert_entries_differ_only_by_mode(what: &str, objects: &Objects) {
    let neutral = |webhook: &ValidatingWebhook| {
        let mut webhook = webhook.clone();
        webhook.name = String::new();
        webhook.client_config.service.as_mut().unwrap().path = None;
        let selector = webhook.namespace_selector.as_mut().unwrap();
        let expressions = selector.match_expressions.as_mut().unwrap();
        expressions.retain(|e| e.key != MODE_LABEL);
        webhook
    };
    let webhooks = objects.webhooks();
    for (webhook, (name, path, _)) in webhooks.iter().zip(ENTRIES) {
        assert_eq!(entry_path(webhook), *path, "{what} {name}");
        assert_eq!(neutral(webhook), neutral(&webhooks[0]), "{what} {name}");
    }
}

/// Which entries would judge a namespace with these labels. The API server sets
/// `kubernetes.io/metadata.name` on every namespace.
fn matching_entries<'a>(objects: &'a Objects, name: &str, mode: Option<&str>) -> Vec<&'a str> {
    let mut labels = BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), name.to_owned())]);
    if let Some(mode) = mode {
        labels.insert(MODE_LABEL.to_owned(), mode.to_owned());
    }
    objects
        .webhooks()
        .iter()
        .filter(|w| {
            selects(
                w.namespace_selector.as_ref().expect("a namespaceSelector"),
                &labels,
            )
        })
        .map(|w| w.name.as_str())
        .collect()
}

fn assert_every_namespace_is_judged_once(what: &str, objects: &Objects) {
    assert_entries_differ_only_by_mode(what, objects);
    let guard = objects.guard_namespace().to_owned();
    // Unlabelled, each mode, and values that name no mode (case matters; empty is a value).
    let labels = [
        None,
        Some("enforce"),
        Some("warn"),
        Some("audit"),
        Some("Warn"),
        Some("bogus"),
        Some(""),
    ];
    for mode in labels {
        for namespace in ["default", "team-a"] {
            let expected = ENTRIES
                .iter()
                .find(|(.., selected_by)| *selected_by == mode)
                .unwrap_or(&ENTRIES[0]);
            assert_eq!(
                matching_entries(objects, namespace, mode),
                [expected.0],
                "{what}: namespace {namespace} labelled {mode:?} must be judged by exactly {} ({})",
                expected.0,
                expected.1
            );
        }
        for excluded in ["kube-system", guard.as_str()] {
            assert_eq!(
                matching_entries(objects, excluded, mode),
                Vec::<&str>::new(),
                "{what}: {excluded} labelled {mode:?} is never judged"
            );
        }
    }
}

#[test]
fn every_namespace_is_judged_by_exactly_one_entry() {
    assert_every_namespace_is_judged_once("base", base());
    let copy = user_copy();
    for (overlay, objects) in renderings(copy.path()) {
        assert_every_namespace_is_judged_once(overlay, &objects);
    }
}

#[test]
fn the_label_selector_evaluation_follows_kubernetes() {
    let expression = |operator: &str, values: &[&str]| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "k".to_owned(),
            operator: operator.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }]),
        match_labels: None,
    };
    let absent = BTreeMap::new();
    let set = |v: &str| BTreeMap::from([("k".to_owned(), v.to_owned())]);
    assert!(
        selects(&expression("NotIn", &["a"]), &absent),
        "NotIn matches an absent key"
    );
    assert!(!selects(&expression("In", &["a"]), &absent));
    assert!(selects(&expression("In", &["a"]), &set("a")));
    assert!(!selects(&expression("NotIn", &["a"]), &set("a")));
    assert!(selects(&expression("Exists", &[]), &set("")));
    assert!(!selects(&expression("DoesNotExist", &[]), &set("")));
    assert!(selects(&expression("DoesNotExist", &[]), &absent));
    let labels = LabelSelector {
        match_labels: Some(BTreeMap::from([("k".to_owned(), "a".to_owned())])),
        match_expressions: None,
    };
    assert!(
        selects(&labels, &set("a")) && !selects(&labels, &set("b")) && !selects(&labels, &absent)
    );
}

/// What `pytorchjob-guard certs` writes as `certs/ca-bundle.yaml`: a caBundle for the default
/// entry (merged by its name).
#[test]
fn the_certs_output_makes_a_ca_bundle_patch_for_the_default_entry() {
    let temp = user_copy();
    let out = temp.path().join("manifests").join(SELF_MANAGED_CERTS);
    let ca = std::fs::read_to_string(out.join(certs::CA_FILE)).unwrap();
    let text = std::fs::read_to_string(out.join(CA_BUNDLE_PATCH)).unwrap();
    assert_eq!(text, expected_ca_bundle_patch(&ca));
    let docs = parse_yaml_docs(CA_BUNDLE_PATCH, &text);
    let [patch] = docs.as_slice() else {
        panic!("one document")
    };
    assert_eq!(
        patch.name(),
        base()
            .webhook_configuration
            .metadata
            .name
            .as_deref()
            .unwrap()
    );
    assert_eq!(patch.value["webhooks"][0]["name"], base().webhook().name);
    assert_eq!(
        ca_bundle_of(patch),
        ca.as_bytes(),
        "caBundle is base64 of ca.crt"
    );
}

#[test]
fn the_self_managed_overlay_gives_every_entry_the_ca_of_the_mounted_certificate() {
    let temp = user_copy();
    let copied = temp.path().join("manifests");
    let out = copied.join(SELF_MANAGED_CERTS);
    for (overlay, rendered) in renderings(temp.path()) {
        if !overlay.ends_with("self-managed") {
            continue;
        }
        let [secret] = rendered.secrets.as_slice() else {
            panic!("{overlay}: one Secret")
        };
        assert_eq!(secret.metadata.name.as_deref(), Some(TLS_SECRET));
        assert_eq!(
            secret.metadata.namespace.as_deref(),
            Some(certs::DEFAULT_NAMESPACE)
        );
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        // The Secret holds exactly the files `certs` wrote.
        let data = secret.data.clone().unwrap_or_default();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            [certs::CA_FILE, certs::CERT_FILE, certs::KEY_FILE]
        );
        for (key, bytes) in &data {
            assert_eq!(
                &bytes.0,
                &std::fs::read(out.join(key)).unwrap(),
                "{overlay}: {key}"
            );
        }
        // Every entry trusts that CA, and the pods' certificate passes the API server's
        // handshake for the name it dials.
        let mounted = tempfile::tempdir().unwrap();
        for (key, bytes) in &data {
            std::fs::write(mounted.path().join(key), &bytes.0).unwrap();
        }
        for webhook in rendered.webhooks() {
            let ca_bundle = webhook.client_config.ca_bundle.as_ref();
            let ca_bundle =
                ca_bundle.unwrap_or_else(|| panic!("{overlay} {}: a caBundle", webhook.name));
            assert_eq!(
                ca_bundle.0,
                data[certs::CA_FILE].0,
                "{overlay} {}",
                webhook.name
            );
            let target = webhook.client_config.service.clone().unwrap();
            handshake(
                &mounted.path().join(certs::CERT_FILE),
                &mounted.path().join(certs::KEY_FILE),
                &ca_bundle.0,
                &format!("{}.{}.svc", target.name, target.namespace),
            )
            .expect("the API server trusts the mounted certificate");
        }
    }
    // The handshake check can fail: another name or another CA is refused.
    let (cert, key) = (out.join(certs::CERT_FILE), out.join(certs::KEY_FILE));
    let ca = std::fs::read(out.join(certs::CA_FILE)).unwrap();
    let dialed = format!(
        "{}.{}.svc",
        certs::DEFAULT_SERVICE,
        certs::DEFAULT_NAMESPACE
    );
    handshake(&cert, &key, &ca, &dialed).expect("the right name and CA");
    assert!(
        handshake(
            &cert,
            &key,
            &ca,
            &format!("other.{}.svc", certs::DEFAULT_NAMESPACE)
        )
        .is_err()
    );
    let names = certs::default_names(certs::DEFAULT_SERVICE, certs::DEFAULT_NAMESPACE);
    let other_ca = certs::generate(&names).unwrap();
    assert!(handshake(&cert, &key, other_ca.ca_pem.as_bytes(), &dialed).is_err());
}

#[test]
fn the_cert_manager_overlay_changes_only_the_ca_injection() {
    let rendered = render(&manifests().join("overlays/cert-manager"));
    let mut webhook = rendered.webhook_configuration.clone();
    let annotations = webhook.metadata.annotations.take().unwrap_or_default();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        ["cert-manager.io/inject-ca-from"]
    );
    assert_eq!(webhook, base().webhook_configuration);
}

// ---------------------------------------------------------------------------------------------
// The monitoring component (its rules and queries run against a real Prometheus in
// tests/monitoring.rs)

/// The rule groups of the rendered PrometheusRule: `(alert or record name, rule)`.
fn rules_of(objects: &Objects) -> Vec<(String, Value)> {
    let rule = objects.monitoring_object("PrometheusRule");
    let groups = rule.value["spec"]["groups"]
        .as_array()
        .expect("spec.groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .expect("alert or record");
            (name.to_owned(), r.clone())
        })
        .collect()
}

/// GitHub's anchor for a markdown heading: lower case, spaces to `-`, punctuation dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn the_monitoring_component_adds_its_three_objects_and_changes_nothing_else() {
    let copy = user_copy();
    let overlays = copy.path().join("manifests/overlays");
    for overlay in [
        "cert-manager",
        "self-managed",
        "all-kinds-cert-manager",
        "all-kinds-self-managed",
    ] {
        let without = render(&overlays.join(overlay));
        let with = render(&overlays.join(format!("monitoring-{overlay}")));
        let values = |objects: &Objects| -> BTreeMap<String, Value> {
            objects
                .docs
                .iter()
                .map(|d| (d.id(), d.value.clone()))
                .collect()
        };
        let (without, mut with) = (values(&without), values(&with));
        for (id, value) in &without {
            assert_eq!(with.remove(id).as_ref(), Some(value), "{overlay}: {id}");
        }
        let namespace = certs::DEFAULT_NAMESPACE;
        assert_eq!(
            with.keys().collect::<Vec<_>>(),
            [
                format!("ConfigMap {namespace}/{DASHBOARD_CONFIG_MAP}"),
                format!("PodMonitor {namespace}/pytorchjob-guard"),
                format!("PrometheusRule {namespace}/pytorchjob-guard"),
            ]
            .iter()
            .collect::<Vec<_>>(),
            "{overlay}"
        );
    }
}

#[tokio::test]
async fn the_pod_monitor_scrapes_the_metrics_port_of_the_guards_pods_as_the_rules_job() {
    let copy = user_copy();
    let objects = render(
        &copy
            .path()
            .join("manifests/overlays/monitoring-cert-manager"),
    );
    let monitor = objects.monitoring_object("PodMonitor");
    assert_eq!(monitor.namespace(), objects.guard_namespace());
    let selector: LabelSelector =
        serde_json::from_value(monitor.value["spec"]["selector"].clone()).unwrap();
    assert!(selects(&selector, &objects.pod_labels()), "{selector:?}");
    let [endpoint] = monitor.value["spec"]["podMetricsEndpoints"]
        .as_array()
        .expect("podMetricsEndpoints")
        .as_slice()
    else {
        panic!("one endpoint: the metrics port");
    };
    let port = endpoint["port"].as_str().expect("a named port");
    assert_eq!(
        i32::from(container_serve_args(&objects).metrics_listen.port()),
        container_port(objects.container(), &IntOrString::String(port.to_owned())),
        "the port the binary serves metrics on"
    );
    let path = endpoint["path"].as_str().unwrap_or("/metrics");
    assert_eq!(
        status_of(server::metrics_router(state()), "GET", path, "").await,
        StatusCode::OK
    );
    // The job label: the pods' value of jobLabel, the job every rule and the dashboard select.
    let job_label = monitor.value["spec"]["jobLabel"]
        .as_str()
        .expect("jobLabel");
    let job = objects.pod_labels()[job_label].clone();
    let mut selected = BTreeSet::new();
    for (name, rule) in rules_of(&objects) {
        let expr = rule["expr"].as_str().unwrap();
        for (at, _) in expr.match_indices("job=\"") {
            let rest = &expr[at + 5..];
            selected.insert((name.clone(), rest[..rest.find('"').unwrap()].to_owned()));
        }
    }
    assert!(!selected.is_empty());
    for (name, selected_job) in &selected {
        assert_eq!(selected_job, &job, "{name}");
    }
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section() {
    let readme = std::fs::read_to_string(manifests().join("README.md")).unwrap();
    // Headings, outside fenced code (where `#` starts a shell comment).
    let mut fenced = false;
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            !fenced
        })
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| github_anchor(l.trim_start_matches('#')))
        .collect();
    let copy = user_copy();
    let objects = render(
        &copy
            .path()
            .join("manifests/overlays/monitoring-self-managed"),
    );
    let mut alerts = BTreeSet::new();
    for (name, rule) in rules_of(&objects) {
        if rule.get("alert").is_none() {
            continue;
        }
        assert!(alerts.insert(name.clone()), "{name} twice");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        if severity == "info" {
            assert!(
                rule.get("for").is_none(),
                "{name}: information is not delayed"
            );
        }
        for key in ["summary", "description"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name}: {key} {text:?}");
        }
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = url
            .strip_prefix(RUNBOOKS)
            .unwrap_or_else(|| panic!("{name}: runbook {url:?} is not in {RUNBOOKS}"));
        assert!(
            anchors.contains(anchor),
            "{name}: manifests/README.md has no section #{anchor}"
        );
    }
    assert!(alerts.len() >= 10, "{alerts:?}");
}

/// `expr` ends with `> NUMBER`: the number.
fn threshold(expr: &str) -> f64 {
    let (_, number) = expr
        .trim()
        .rsplit_once("> ")
        .expect("ends with > threshold");
    number.trim().parse().expect("a number")
}

#[test]
fn the_latency_alerts_are_fractions_of_the_webhook_timeout_and_measurable() {
    let copy = user_copy();
    let objects = render(
        &copy
            .path()
            .join("manifests/overlays/monitoring-all-kinds-cert-manager"),
    );
    let timeouts: BTreeSet<i32> = objects
        .webhooks()
        .iter()
        .map(|w| w.timeout_seconds.expect("timeoutSeconds"))
        .collect();
    let [timeout] = timeouts.iter().copied().collect::<Vec<_>>()[..] else {
        panic!("one timeout for every entry: {timeouts:?}");
    };
    let timeout = f64::from(timeout);
    let rules: BTreeMap<String, Value> = rules_of(&objects).into_iter().collect();
    for (alert, fraction) in [
        ("PytorchjobGuardSlowReviews", 0.5),
        ("PytorchjobGuardReviewsNearTimeout", 0.8),
    ] {
        let rule = &rules[alert];
        assert_eq!(
            threshold(rule["expr"].as_str().unwrap()),
            fraction * timeout,
            "{alert}"
        );
        let description = rule["annotations"]["description"].as_str().unwrap();
        assert!(
            description.contains(&format!("timeoutSeconds ({timeout} s)")),
            "{alert}: {description}"
        );
    }
    // A p99 can only be measured up to the last finite bucket of the histogram.
    let metrics = Metrics::new();
    metrics.observe_http("/validate", 200, 0.001);
    let text = metrics.encode();
    let largest = text
        .lines()
        .filter_map(|l| l.strip_prefix("pytorchjob_guard_http_request_duration_seconds_bucket{"))
        .filter_map(|l| {
            l.split("le=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max);
    assert!(largest > timeout, "last finite bucket {largest} s");
}

#[test]
fn the_dashboard_is_a_config_map_for_grafanas_sidecar() {
    let copy = user_copy();
    let objects = render(
        &copy
            .path()
            .join("manifests/overlays/monitoring-self-managed"),
    );
    let config_map = objects.config_map(DASHBOARD_CONFIG_MAP);
    assert_eq!(
        config_map.metadata.namespace.as_deref(),
        Some(objects.guard_namespace())
    );
    let labels = config_map.metadata.labels.clone().unwrap_or_default();
    let (key, value) = GRAFANA_DASHBOARD_LABEL;
    assert_eq!(labels.get(key).map(String::as_str), Some(value));
    let data = config_map.data.clone().unwrap_or_default();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["dashboard.json"]);
    let dashboard: Value = serde_json::from_str(&data["dashboard.json"]).unwrap();
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains(&"datasource"), "{variables:?}");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "panel ids are unique"
        );
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}"
            );
        }
    }
}
