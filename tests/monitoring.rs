//! The monitoring component (`manifests/components/monitoring`) against real parts: `promtool`
//! checks its rules and runs their unit tests, and a real Prometheus scraping the real binary
//! on loopback evaluates every alert and recording rule, every dashboard query and every
//! `promql` block of the READMEs after allowed, denied, warn-mode and malformed reviews.
//!
//! They need `prometheus` and `promtool` on the PATH (Debian package `prometheus`), so a plain
//! `cargo test` reports them as ignored; `.ci/run` installs the package and runs them with
//! `cargo test --test monitoring -- --include-ignored`. How the manifests render is checked by
//! tests/manifests.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use serde_json::Value;
use support::*;

/// The job the PodMonitor gives the guard's series (tests/manifests.rs checks it against the
/// rules); the Prometheus below scrapes the guard under the same job.
const JOB: &str = "pytorchjob-guard";
/// How often the Prometheus below scrapes and evaluates: short, so data shows up quickly.
const SCRAPE_INTERVAL: &str = "1s";
/// What `$__rate_interval` becomes: Grafana makes it at least four scrape intervals, and a
/// minute holds both rounds of reviews the test sends.
const RATE_INTERVAL: &str = "1m";
/// How long Prometheus gets to start, scrape, and show what was sent.
const DEADLINE: Duration = Duration::from_secs(60);
/// Dashboard panels that must show data after the reviews the test sends: decisions, latency,
/// rejections (and the health stats).
const PANELS_WITH_DATA: &[&str] = &[
    "Reviews by verdict",
    "Denied and would-deny by kind",
    "Answer time of /validate",
    "Decision time",
    "Rejected requests by reason",
    "HTTP answers by route and code",
    "Replicas up",
    "Certificate expires in",
];
/// The alerts whose condition that traffic meets: a malformed review (`verdict="error"`), a
/// wrong content type (rejected), a warn-mode would-deny. Every other alert's expression must
/// evaluate to nothing on a healthy guard.
const ALERTS_WITH_DATA: &[&str] = &[
    "PytorchjobGuardReviewErrors",
    "PytorchjobGuardRequestsRejected",
    "PytorchjobGuardWouldDeny",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn component() -> PathBuf {
    repo().join("manifests/components/monitoring")
}

/// The PrometheusRule's `spec`: a plain Prometheus rule file.
fn rule_file() -> String {
    let path = component().join("prometheusrule.yaml");
    let rule: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(rule["kind"], "PrometheusRule", "{}", path.display());
    serde_yaml_ng::to_string(&rule["spec"]).unwrap()
}

/// Every rule: `(alert or record name, expression, whether it is an alert)`.
fn rules() -> Vec<(String, String, bool)> {
    let spec: Value = serde_yaml_ng::from_str(&rule_file()).unwrap();
    spec["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            let alert = r["alert"].as_str();
            let name = alert.or(r["record"].as_str()).unwrap().to_owned();
            (
                name,
                r["expr"].as_str().unwrap().to_owned(),
                alert.is_some(),
            )
        })
        .collect()
}

/// A rule file and its unit tests side by side, as `promtool test rules` reads them.
fn promtool_dir(rule_file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rule_file).unwrap();
    std::fs::copy(
        component().join("alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    dir
}

fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (Debian package prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
#[ignore = "needs prometheus and promtool (Debian package prometheus); .ci/run installs and runs it"]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let dir = promtool_dir(&rule_file());
    let (ok, text) = promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    assert!(ok, "promtool check rules:\n{text}");
    let (ok, text) = promtool(dir.path(), &["test", "rules", "alerts.test.yaml"]);
    assert!(ok, "promtool test rules:\n{text}");

    // Every alert has a case where it fires and one where it does not.
    let tests: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(component().join("alerts.test.yaml")).unwrap(),
    )
    .unwrap();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for check in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = check["alertname"].as_str().unwrap().to_owned();
            let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    for (name, _, alert) in rules() {
        if alert {
            assert!(firing.contains(&name), "{name}: no case where it fires");
            assert!(
                quiet.contains(&name),
                "{name}: no case where it stays quiet"
            );
        }
    }

    // The unit tests have teeth: with an alert's threshold moved, they fail.
    let moved = rule_file().replace("> 0.05", "> 0.9");
    assert_ne!(moved, rule_file());
    let dir = promtool_dir(&moved);
    let (ok, text) = promtool(dir.path(), &["test", "rules", "alerts.test.yaml"]);
    assert!(
        !ok && text.contains("PytorchjobGuardWebhookCallsFailing"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Real parts

/// One plain HTTP/1.1 request; `None` when nothing answers (yet).
async fn http(addr: SocketAddr, request: Request<Full<Bytes>>) -> Option<(StatusCode, String)> {
    let tcp = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .ok()?;
    tokio::spawn(connection);
    let response = tokio::time::timeout(STEP, sender.send_request(request))
        .await
        .expect("an answer in time")
        .ok()?;
    let status = response.status();
    let body = tokio::time::timeout(STEP, response.into_body().collect())
        .await
        .expect("a body in time")
        .ok()?
        .to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Poll `probe` until it returns `Some`, at most [`DEADLINE`].
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Prometheus on loopback with its own storage, scraping the guard's metrics port.
struct Prometheus {
    addr: SocketAddr,
    _process: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rule_file()).unwrap();
        let config = format!(
            "global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\n  \
             evaluation_interval: {SCRAPE_INTERVAL}\nrule_files:\n  - rules.yaml\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      \
             - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (Debian package prometheus)");
        let prometheus = Self {
            addr,
            _process: KillOnDrop(process),
            _dir: dir,
        };
        let log = prometheus._dir.path().join("prometheus.log");
        // It answers 503 until its storage is open and the rules are loaded.
        eventually(
            &format!("Prometheus ready (log: {})", log.display()),
            || async {
                let (status, _) = http(addr, get("/-/ready")).await?;
                (status == StatusCode::OK).then_some(())
            },
        )
        .await;
        prometheus
    }

    /// `GET path` of the HTTP API, as JSON (`data`), with Prometheus' error if it refuses.
    async fn api(&self, request: Request<Full<Bytes>>) -> Result<Value, String> {
        let (status, body) = http(self.addr, request).await.expect("Prometheus answers");
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("Prometheus answered {status} without JSON ({e}): {body}"));
        if json["status"] == "success" {
            Ok(json["data"].clone())
        } else {
            Err(format!("{status} {}: {}", json["errorType"], json["error"]))
        }
    }

    /// Evaluate `expr` now: its samples, or why Prometheus refused it (it does not parse).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .finish();
        let request = Request::post("/api/v1/query")
            .header("host", "prometheus")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        let data = self.api(request).await?;
        assert_eq!(data["resultType"], "vector", "{expr}");
        Ok(data["result"].as_array().unwrap().clone())
    }

    /// Evaluate `expr` until it returns a sample with a finite value.
    async fn data(&self, what: &str, expr: &str) -> Vec<Value> {
        eventually(&format!("{what} returns data: {expr}"), || async {
            let samples = self
                .query(expr)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let finite = samples.iter().any(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            });
            finite.then_some(samples)
        })
        .await
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The real binary on loopback with fresh certificates and the built-in policy set up for a
/// rollout (the label may lower a namespace to warn, so `/validate/warn` gives would-deny
/// decisions); returns it, its CA, its webhook and metrics addresses.
fn start_guard(dir: &Path) -> (KillOnDrop, String, SocketAddr, SocketAddr) {
    use pytorchjob_guard::certs;
    let names = certs::default_names(certs::DEFAULT_SERVICE, certs::DEFAULT_NAMESPACE);
    let generated = certs::generate(&names).unwrap();
    certs::write(dir, &generated).unwrap();
    let policy = dir.join("policy.yaml");
    let mut text = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    text.push_str("namespaceLabel:\n  mayLowerTo: [warn]\n");
    std::fs::write(&policy, text).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pytorchjob-guard"))
        .arg("serve")
        .arg(format!("--listen={addr}"))
        .arg(format!("--metrics-listen={metrics}"))
        .arg(format!(
            "--tls-cert={}",
            dir.join(certs::CERT_FILE).display()
        ))
        .arg(format!("--tls-key={}", dir.join(certs::KEY_FILE).display()))
        .arg("--log-format=json")
        .arg(format!("--policy={}", policy.display()))
        .env_remove("RUST_LOG")
        .env_remove("PYTORCHJOB_GUARD_POLICY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop(child), generated.ca_pem, addr, metrics)
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/fixtures").join(path)).unwrap()
}

/// One round of what the API server (and a stray client) sends, each answer checked: an
/// allowed and a denied update, the denied one again in warn mode, a malformed review and a
/// wrong content type.
async fn send_reviews(ca_pem: &str, addr: SocketAddr) {
    let tcp = eventually("the guard listens", || async {
        tokio::net::TcpStream::connect(addr).await.ok()
    })
    .await;
    let config = client_config(ca_pem, &[b"http/1.1"], None);
    let name = rustls::pki_types::ServerName::try_from(SERVICE_NAME).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut h1, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let json = Some("application/json");
    let allowed = fixture("pytorchjob/label-api-page.review.json");
    let denied = fixture("pytorchjob/worker-replicas.review.json");
    for (path, body, verdict) in [
        ("/validate", allowed.clone(), Some(true)),
        ("/validate", denied.clone(), Some(false)),
        ("/validate/warn", denied.clone(), Some(true)),
        ("/validate", allowed[..allowed.len() / 2].to_vec(), None),
    ] {
        let answer = send1(&mut h1, post(path, json, body)).await;
        match verdict {
            Some(allowed) => {
                assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
                assert_eq!(answer.json()["response"]["allowed"], allowed, "{path}");
            }
            None => assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text()),
        }
    }
    let answer = send1(&mut h1, post("/validate", Some("text/plain"), denied)).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// A dashboard query with Grafana's variables replaced as Grafana would for this job, every
/// instance, and a short range.
fn substitute(expr: &str) -> String {
    let done = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$job", JOB)
        .replace("$instance", ".+");
    assert!(!done.contains('$'), "a variable left in {done}");
    done
}

/// Every query of the ```promql blocks of a markdown file: comment lines separate queries, a
/// query may span lines.
fn promql_blocks(markdown: &str) -> Vec<String> {
    let mut queries = Vec::new();
    let mut inside = false;
    let mut current = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        if !inside {
            inside = trimmed == "```promql";
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with('#') {
            if !current.trim().is_empty() {
                queries.push(std::mem::take(&mut current));
            }
            current.clear();
            inside = !trimmed.starts_with("```");
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    queries
}

#[tokio::test]
#[ignore = "needs prometheus and promtool (Debian package prometheus); .ci/run installs and runs it"]
async fn a_real_prometheus_scraping_the_guard_evaluates_every_rule_panel_and_readme_query() {
    let dir = tempfile::tempdir().unwrap();
    let (_guard, ca_pem, addr, metrics) = start_guard(dir.path());
    let prometheus = Prometheus::start(metrics).await;
    prometheus
        .data("the guard's target", &format!("up{{job=\"{JOB}\"}} == 1"))
        .await;

    // Counters and histogram series appear with their first event, which rate() cannot see:
    // send a round, wait until Prometheus has scraped every verdict, then send another.
    send_reviews(&ca_pem, addr).await;
    let verdicts =
        format!("count(count by (verdict) (pytorchjob_guard_reviews_total{{job=\"{JOB}\"}})) == 4");
    prometheus
        .data("allowed, denied, would_deny and error scraped", &verdicts)
        .await;
    send_reviews(&ca_pem, addr).await;

    // The dashboard: every query parses; decisions, latency and rejections show data.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(component().join("dashboard.json")).unwrap())
            .unwrap();
    let mut titles = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        titles.insert(title);
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = substitute(target["expr"].as_str().unwrap());
            if PANELS_WITH_DATA.contains(&title) {
                prometheus.data(title, &expr).await;
            } else if let Err(error) = prometheus.query(&expr).await {
                panic!("panel {title}: {error}\n{expr}");
            }
        }
    }
    for title in PANELS_WITH_DATA {
        assert!(titles.contains(title), "no panel {title:?}");
    }
    // The variables' queries: Grafana's label_values(SELECTOR, LABEL) needs SELECTOR's series.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| substitute(selector))
            .unwrap_or_else(|| panic!("a label_values query: {query}"));
        prometheus
            .data(&format!("variable {}", variable["name"]), &inner)
            .await;
    }

    // Every rule: parses and evaluates; exactly the alerts this traffic meets have data.
    let mut with_data = BTreeSet::new();
    for (name, expr, alert) in rules() {
        if !alert || ALERTS_WITH_DATA.contains(&name.as_str()) {
            prometheus.data(&name, &expr).await;
            with_data.insert(name);
        } else {
            let samples = prometheus
                .query(&expr)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}\n{expr}"));
            assert!(samples.is_empty(), "{name} on a healthy guard: {samples:?}");
        }
    }
    for name in ALERTS_WITH_DATA {
        assert!(with_data.contains(*name), "no alert {name}");
    }
    // Prometheus itself evaluates them without error, and raises what has no `for`.
    let alerts = eventually(
        "Prometheus evaluated every rule and fired the would-deny",
        || async {
            let data = prometheus.api(get("/api/v1/rules")).await.unwrap();
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap().clone())
                .collect();
            let evaluated = rules.iter().all(|r| {
                r["health"] == "ok"
                    && r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
            });
            let states: BTreeMap<String, String> = rules
                .iter()
                .filter(|r| r["type"] == "alerting")
                .map(|r| {
                    (
                        r["name"].as_str().unwrap().to_owned(),
                        r["state"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (evaluated && states["PytorchjobGuardWouldDeny"] == "firing").then_some((rules, states))
        },
    )
    .await;
    let (evaluated, states) = alerts;
    assert_eq!(evaluated.len(), rules().len());
    assert_eq!(
        states["PytorchjobGuardReviewErrors"], "pending",
        "{states:?}"
    );
    assert_eq!(states["PytorchjobGuardDown"], "inactive", "{states:?}");

    // The READMEs' examples parse and evaluate.
    for readme in ["README.md", "manifests/README.md"] {
        let text = std::fs::read_to_string(repo().join(readme)).unwrap();
        for query in promql_blocks(&text) {
            if let Err(error) = prometheus.query(&query).await {
                panic!("{readme}: {error}\n{query}");
            }
        }
    }
    assert!(
        promql_blocks(&std::fs::read_to_string(repo().join("README.md")).unwrap()).len() >= 3,
        "README.md's examples were found"
    );
}
