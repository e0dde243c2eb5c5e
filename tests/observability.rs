//! Metrics, decision logs, health and configuration, as an operator meets them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use pytorchjob_guard::metrics::Metrics;
use pytorchjob_guard::policy::Policy;
use pytorchjob_guard::server::{self, AppState, Health};
use serde_json::Value;
use support::*;
use tower::ServiceExt;

/// One sample of the exposition: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse the OpenMetrics/Prometheus text format (the subset prometheus-client writes).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let mut labels = BTreeMap::new();
                let mut remaining = body;
                while !remaining.is_empty() {
                    let (key, after) = remaining.split_once("=\"").expect("label =\"");
                    let end = after.find('"').expect("label value closes");
                    labels.insert(key.to_owned(), after[..end].to_owned());
                    remaining = after[end + 1..].trim_start_matches(',');
                }
                (name.to_owned(), labels)
            }
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "exposition ends with # EOF"
    );
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn series(samples: &[Sample], name: &str) -> usize {
    samples.iter().filter(|s| s.name == name).count()
}

/// Start the metrics listener on 127.0.0.1:0 and GET a path over plain HTTP/1.1.
async fn get_plain(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "metrics")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(STEP, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn metrics_move_after_allowed_denied_malformed_and_oversize_requests() {
    let server = TestServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let state = AppState::new(
        Arc::new(Policy::default()),
        server.health.clone(),
        server.metrics.clone(),
    );
    tokio::spawn(server::serve_metrics(
        listener,
        state,
        std::future::pending(),
    ));

    let mut h1 = server.http1().await;
    let json = Some("application/json");
    send1(
        &mut h1,
        post(
            "/validate",
            json,
            pytorchjob_update("a", "admission.k8s.io/v1", |j| {
                j["metadata"]["labels"]["x"] = "y".into();
            }),
        ),
    )
    .await;
    for uid in ["d1", "d2"] {
        send1(
            &mut h1,
            post(
                "/validate",
                json,
                pytorchjob_update(uid, "admission.k8s.io/v1", |j| {
                    j["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 7.into();
                    j["spec"]["runPolicy"]["backoffLimit"] = 1.into();
                }),
            ),
        )
        .await;
    }
    send1(&mut h1, post("/validate", json, "not json")).await;
    send1(&mut h1, post("/validate", Some("text/yaml"), "a: b")).await;
    let mut fresh = server.http1().await;
    send1(
        &mut fresh,
        post("/validate", json, vec![b' '; 8 * 1024 * 1024]),
    )
    .await;

    let (status, content_type, text) = get_plain(metrics_addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let samples = parse_exposition(&text);
    let reviews = "pytorchjob_guard_reviews_total";
    let update = [
        ("operation", "UPDATE"),
        ("kind", "PyTorchJob"),
        ("dry_run", "false"),
    ];
    assert_eq!(
        value(
            &samples,
            reviews,
            &[update[0], update[1], update[2], ("verdict", "allowed")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            reviews,
            &[update[0], update[1], update[2], ("verdict", "denied")]
        ),
        2.0
    );
    assert_eq!(
        value(&samples, reviews, &[("verdict", "error")]),
        1.0,
        "the malformed body"
    );
    let rejected = "pytorchjob_guard_rejected_requests_total";
    assert_eq!(
        value(&samples, rejected, &[("reason", "malformed_review")]),
        1.0
    );
    assert_eq!(
        value(&samples, rejected, &[("reason", "bad_content_type")]),
        1.0
    );
    assert_eq!(
        value(&samples, rejected, &[("reason", "body_too_large")]),
        1.0
    );
    let denied_fields = "pytorchjob_guard_denied_fields_total";
    assert_eq!(
        value(
            &samples,
            denied_fields,
            &[("group", "spec.pytorchReplicaSpecs")]
        ),
        2.0
    );
    assert_eq!(
        value(&samples, denied_fields, &[("group", "spec.runPolicy")]),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "pytorchjob_guard_review_duration_seconds_count",
            &[]
        ),
        3.0
    );
    let http_count = "pytorchjob_guard_http_request_duration_seconds_count";
    assert_eq!(
        value(
            &samples,
            http_count,
            &[("route", "/validate"), ("code", "200")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            http_count,
            &[("route", "/validate"), ("code", "413")]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "pytorchjob_guard_requests_in_flight", &[]),
        0.0
    );
    // The keep-alive connection is open; the one that got the 413 may already be closed.
    let open = value(&samples, "pytorchjob_guard_open_connections", &[]);
    assert!((1.0..=2.0).contains(&open), "open connections: {open}");
    assert_eq!(
        value(
            &samples,
            "pytorchjob_guard_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    let (status, _, _) = get_plain(metrics_addr, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get_plain(metrics_addr, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn label_sets_stay_bounded_under_many_objects_users_and_kinds() {
    let server = TestServer::start().await;
    let h2 = server.http2().await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let mut sender = h2.clone();
        tasks.push(tokio::spawn(async move {
            let mut review: Value = serde_json::from_slice(&pytorchjob_update(
                &format!("u{i}"),
                "admission.k8s.io/v1",
                |j| {
                    j["spec"][format!("userKey{i}")] = i.into();
                },
            ))
            .unwrap();
            review["request"]["name"] = format!("job-{i}").into();
            review["request"]["namespace"] = format!("team-{i}").into();
            review["request"]["userInfo"]["username"] = format!("user-{i}").into();
            if i % 3 == 0 {
                review["request"]["kind"]["kind"] = format!("Kind{i}").into();
            }
            send2(
                &mut sender,
                post(
                    "/validate",
                    Some("application/json"),
                    serde_json::to_vec(&review).unwrap(),
                ),
            )
            .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    let samples = parse_exposition(&server.metrics.encode());
    // Governed denials and other kinds' allowances: two series, whatever the names and users.
    assert_eq!(
        series(&samples, "pytorchjob_guard_reviews_total"),
        2,
        "{samples:?}"
    );
    assert_eq!(
        value(
            &samples,
            "pytorchjob_guard_reviews_total",
            &[("kind", "other")]
        ),
        20.0
    );
    // 40 distinct user-made spec keys collapse into one group.
    assert_eq!(series(&samples, "pytorchjob_guard_denied_fields_total"), 1);
    assert_eq!(
        value(
            &samples,
            "pytorchjob_guard_denied_fields_total",
            &[("group", "spec.other")]
        ),
        40.0
    );
    for sample in &samples {
        for value in sample.labels.values() {
            assert!(
                !value.contains("team-") && !value.contains("user-") && !value.contains("job-"),
                "{sample:?}"
            );
        }
    }
    server.stop().await.unwrap();
}

/// A `MakeWriter` that keeps everything written.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// What the subscriber `--log-format json` installs writes while the router answers `body`
/// (with 200). Run it on a current-thread runtime: the subscriber is this thread's.
async fn logged_while_reviewing(body: Vec<u8>) -> String {
    let capture = Capture::default();
    let subscriber = pytorchjob_guard::telemetry::json_subscriber(
        capture.clone(),
        tracing_subscriber::EnvFilter::new("info"),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = server::router(AppState::new(
        Arc::new(Policy::default()),
        Arc::new(Health::default()),
        Arc::new(Metrics::new()),
    ));
    let request = Request::post("/validate?timeout=10s")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn each_decision_logs_one_json_event_with_its_fields_and_no_object_contents() {
    let body = pytorchjob_update("uid-log", "admission.k8s.io/v1", |j| {
        j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"] =
            serde_json::json!([{"name": "TOKEN", "value": "s3cr3t-value"}]);
    });
    let logged = logged_while_reviewing(body).await;
    let events: Vec<Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "admission review")
        .collect();
    assert_eq!(decisions.len(), 1, "{logged}");
    let event = decisions[0];
    assert_eq!(event["uid"], "uid-log");
    assert_eq!(event["kind"], "kubeflow.org/v1/PyTorchJob");
    assert_eq!(event["namespace"], "kubeflow");
    assert_eq!(event["name"], "pytorch-simple");
    assert_eq!(event["operation"], "UPDATE");
    assert_eq!(event["user"], "alice@example.com");
    assert_eq!(event["dry_run"], false);
    assert_eq!(event["verdict"], "denied");
    assert!(
        event["denied"]
            .as_str()
            .unwrap()
            .contains("containers[0].env[0].value"),
        "{event}"
    );
    assert_eq!(event["denied_more"], 0, "{event}");
    assert!(
        !logged.contains("s3cr3t-value"),
        "object contents must not be logged: {logged}"
    );
    assert!(
        !logged.contains("pytorch-mnist"),
        "object contents must not be logged: {logged}"
    );
}

/// A refused lowering is a field of the decision log: the mode the label asked for beside the
/// mode kept; absent when nothing was refused.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_lowering_is_a_field_of_the_decision_log() {
    let capture = Capture::default();
    let subscriber = pytorchjob_guard::telemetry::json_subscriber(
        capture.clone(),
        tracing_subscriber::EnvFilter::new("info"),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = server::router(AppState::new(
        Arc::new(Policy::default()),
        Arc::new(Health::default()),
        Arc::new(Metrics::new()),
    ));
    for (path, uid) in [
        ("/validate/audit", "refused"),
        ("/validate/enforce", "kept"),
    ] {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(pytorchjob_update(
                uid,
                "admission.k8s.io/v1",
                |_| {},
            )))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let logged = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let event = |uid: &str| -> Value {
        logged
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["message"] == "admission review" && e["uid"] == uid)
            .unwrap_or_else(|| panic!("no decision for {uid}: {logged}"))
    };
    let refused = event("refused");
    assert_eq!(refused["mode"], "enforce", "{refused}");
    assert_eq!(refused["mode_lowering_refused"], "audit", "{refused}");
    let kept = event("kept");
    assert_eq!(kept["mode"], "enforce");
    assert!(kept.get("mode_lowering_refused").is_none(), "{kept}");
}

/// A denial at hundreds of paths logs a short line: like the denial's message, the first
/// `policy::MAX_PATHS_IN_MESSAGE` paths in `denied` and the count of the rest in `denied_more`.
#[tokio::test(flavor = "current_thread")]
async fn a_deny_heavy_decision_logs_the_first_paths_and_counts_the_rest() {
    const PATHS: usize = 600;
    let body = pytorchjob_update("uid-many", "admission.k8s.io/v1", |j| {
        j["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"] =
            serde_json::json!(vec!["changed"; PATHS]);
    });
    let logged = logged_while_reviewing(body).await;
    let line = logged
        .lines()
        .find(|l| l.contains("\"message\":\"admission review\""))
        .expect("a decision line");
    assert!(line.len() < 4096, "a short line: {} bytes", line.len());
    let event: Value = serde_json::from_str(line).unwrap();
    let listed: Vec<String> =
        serde_json::from_str(event["denied"].as_str().unwrap()).expect("a list of paths");
    let max = pytorchjob_guard::policy::MAX_PATHS_IN_MESSAGE;
    let expected: Vec<String> = (0..max)
        .map(|i| format!("spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].args[{i}]"))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(event["denied_more"], PATHS - max);
}

#[tokio::test]
async fn readiness_flips_at_shutdown_while_a_slow_review_still_completes() {
    let mut server = TestServer::start_with(Options {
        drain_delay: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let slow = server.start_slow_review("uid-slow").await;
    let mut probe = server.http1().await;
    assert_eq!(
        send1(&mut probe, bare("GET", "/readyz")).await.status,
        StatusCode::OK
    );
    let serve = server.begin_stop();
    // During the drain delay the server still answers, and says it is not ready.
    let answer = send1(&mut probe, bare("GET", "/readyz")).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );

    let answer = slow.finish().await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["response"]["uid"], "uid-slow");
    tokio::time::timeout(STEP, serve)
        .await
        .expect("exits within bounded time")
        .unwrap()
        .unwrap();
}

/// The real binary with the shipped log flags, its stderr a pipe nobody reads (a log pipeline
/// that stalled): the pipe fills, the log writer blocks, its queue fills — and every review is
/// still answered, while the lines that could not be queued are counted, not silently lost.
#[tokio::test]
async fn a_stalled_log_reader_never_holds_up_a_review_and_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let names = pytorchjob_guard::certs::default_names(
        pytorchjob_guard::certs::DEFAULT_SERVICE,
        pytorchjob_guard::certs::DEFAULT_NAMESPACE,
    );
    let generated = pytorchjob_guard::certs::generate(&names).unwrap();
    pytorchjob_guard::certs::write(dir.path(), &generated).unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pytorchjob-guard"))
        .arg("serve")
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--metrics-listen=127.0.0.1:{metrics_port}"))
        .arg(format!(
            "--tls-cert={}",
            dir.path()
                .join(pytorchjob_guard::certs::CERT_FILE)
                .display()
        ))
        .arg(format!(
            "--tls-key={}",
            dir.path().join(pytorchjob_guard::certs::KEY_FILE).display()
        ))
        .arg("--log-format=json")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _server = KillOnDrop(child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let mut tcp = None;
    for _ in 0..100 {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            tcp = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tcp = tcp.expect("the server listens within 5 s");
    let config = client_config(&generated.ca_pem, &[b"http/1.1"], None);
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
    // A decision line is ~400 bytes: the pipe (64 KiB) and the queue
    // (`telemetry::LOG_QUEUE_LINES`) hold fewer than this many.
    let sent = pytorchjob_guard::telemetry::LOG_QUEUE_LINES + 2000;
    let body = pytorchjob_update("stalled-log", "admission.k8s.io/v1", |job| {
        job["metadata"]["labels"]["team"] = "vision".into();
    });
    for i in 0..sent {
        let answer = send1(
            &mut h1,
            post("/validate", Some("application/json"), body.clone()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "review {i}");
    }
    let (_, _, text) = get_plain(metrics_addr, "/metrics").await;
    let samples = parse_exposition(&text);
    let dropped = value(&samples, "pytorchjob_guard_log_lines_dropped_total", &[]);
    assert!(dropped > 0.0, "drops are counted: {dropped}");
    let answered = value(
        &samples,
        "pytorchjob_guard_reviews_total",
        &[("verdict", "allowed")],
    );
    assert_eq!(answered, sent as f64);
}
