//! The real server over real TLS on 127.0.0.1:0, called the way the API server calls it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use axum::body::Bytes;
use hyper::{Request, StatusCode};
use serde_json::Value;
use support::*;

fn replicas(n: u64) -> impl FnOnce(&mut Value) {
    move |job| job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = n.into()
}

fn relabel(job: &mut Value) {
    job["metadata"]["labels"]["app.kubernetes.io/name"] = "mnist".into();
}

/// Assert the response review answers `uid` with `allowed` and the request's apiVersion.
fn assert_review(answer: &Answer, uid: &str, api_version: &str, allowed: bool) -> Value {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.content_type, "application/json");
    let review = answer.json();
    assert_eq!(review["apiVersion"], api_version);
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["uid"], uid);
    assert_eq!(review["response"]["allowed"], allowed, "{review}");
    assert!(
        review["response"].get("patch").is_none() && review["response"].get("patchType").is_none()
    );
    review
}

#[tokio::test]
async fn http1_with_ca_verification_answers_like_the_api_server_expects() {
    let server = TestServer::start().await;
    let mut h1 = server.http1().await;

    let allowed = send1(
        &mut h1,
        post(
            "/validate?timeout=10s",
            Some("application/json"),
            pytorchjob_update("uid-allow", "admission.k8s.io/v1", relabel),
        ),
    )
    .await;
    assert_review(&allowed, "uid-allow", "admission.k8s.io/v1", true);

    // Same keep-alive connection, a frozen change.
    let denied = send1(
        &mut h1,
        post(
            "/validate?timeout=10s",
            Some("application/json"),
            pytorchjob_update("uid-deny", "admission.k8s.io/v1", replicas(3)),
        ),
    )
    .await;
    let review = assert_review(&denied, "uid-deny", "admission.k8s.io/v1", false);
    let status = &review["response"]["status"];
    assert_eq!(status["code"], 400);
    assert_eq!(status["reason"], "BadRequest");
    assert_eq!(status["status"], "Failure");
    assert_eq!(
        status["message"],
        "PyTorchJob kubeflow/pytorch-simple: this field cannot be updated: \
         spec.pytorchReplicaSpecs.Worker.replicas; only metadata.labels, metadata.annotations, \
         spec.activeDeadlineSeconds, spec.ttlSecondsAfterFinished and spec.cleanPodPolicy \
         (or their spec.runPolicy equivalents) may change"
    );
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.pytorchReplicaSpecs.Worker.replicas"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueForbidden"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn v1beta1_reviews_are_answered_in_v1beta1() {
    let server = TestServer::start().await;
    let mut h1 = server.http1().await;
    let answer = send1(
        &mut h1,
        post(
            "/validate",
            Some("application/json; charset=utf-8"),
            pytorchjob_update("uid-beta", "admission.k8s.io/v1beta1", replicas(2)),
        ),
    )
    .await;
    assert_review(&answer, "uid-beta", "admission.k8s.io/v1beta1", false);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http2_serves_concurrent_reviews_on_one_connection() {
    let server = TestServer::start().await;
    let h2 = server.http2().await;
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let mut sender = h2.clone();
        tasks.push(tokio::spawn(async move {
            let uid = format!("uid-h2-{i}");
            // Even requests change only a label (allowed), odd ones scale (denied).
            let body = if i % 2 == 0 {
                pytorchjob_update(&uid, "admission.k8s.io/v1", relabel)
            } else {
                pytorchjob_update(&uid, "admission.k8s.io/v1", replicas(100 + i))
            };
            let answer = send2(
                &mut sender,
                post("/validate", Some("application/json"), body),
            )
            .await;
            (i, uid, answer)
        }));
    }
    for task in tasks {
        let (i, uid, answer) = task.await.unwrap();
        assert_review(&answer, &uid, "admission.k8s.io/v1", i % 2 == 0);
    }
    let mut h2 = h2;
    let health = send2(&mut h2, bare("GET", "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_or_uses_another_name_is_refused() {
    let server = TestServer::start().await;
    let other =
        pytorchjob_guard::certs::generate(&["pytorchjob-guard.pytorchjob-guard.svc".to_owned()])
            .unwrap();
    let untrusting = client_config(&other.ca_pem, &[b"http/1.1"], None);
    let error = server
        .tls_connect(untrusting)
        .await
        .expect_err("unknown CA must fail");
    // Its issuer name matches, its signature does not: rejected like any foreign certificate.
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );

    // The right CA, but a name the certificate was not issued for.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(server.client_config(&[b"http/1.1"])));
    let name = rustls::pki_types::ServerName::try_from("evil.example.com").unwrap();
    let error = connector
        .connect(name, tcp)
        .await
        .expect_err("wrong name must fail");
    assert!(error.to_string().contains("not valid for name"), "{error}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_routes_answer() {
    let server = TestServer::start().await;
    let mut h1 = server.http1().await;
    assert_eq!(
        send1(&mut h1, bare("GET", "/healthz")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send1(&mut h1, bare("GET", "/readyz")).await.status,
        StatusCode::OK
    );
    server.health.begin_shutdown();
    assert_eq!(
        send1(&mut h1, bare("GET", "/readyz")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    server.stop().await.unwrap();
}

/// A few client mistakes over real TLS, one per status, get their 4xx with a message — and the
/// server answers a valid review right after. Every mistake's status, message and metric is
/// tested at the router, in `router.rs`.
#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let json = Some("application/json");
    let cases: Vec<(&str, Request<http_body_util::Full<Bytes>>, StatusCode, &str)> = vec![
        (
            "not JSON",
            post("/validate", json, "hello"),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "wrong Content-Type",
            post("/validate", Some("text/plain"), "{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            "too large",
            post("/validate", json, vec![b' '; 8 * 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
        (
            "GET /validate",
            bare("GET", "/validate"),
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST",
        ),
        (
            "unknown path",
            bare("GET", "/mutate"),
            StatusCode::NOT_FOUND,
            "no route for /mutate",
        ),
    ];
    for (name, request, status, message) in cases {
        // A fresh connection per case: a 413 may close the connection before the body is read.
        let mut h1 = server.http1().await;
        let answer = send1(&mut h1, request).await;
        assert_eq!(answer.status, status, "{name}: {}", answer.text());
        assert!(
            answer.text().contains(message),
            "{name}: {:?} lacks {message:?}",
            answer.text()
        );
        let mut h1 = server.http1().await;
        let after = send1(
            &mut h1,
            post(
                "/validate",
                json,
                pytorchjob_update("uid-after", "admission.k8s.io/v1", replicas(5)),
            ),
        )
        .await;
        assert_review(&after, "uid-after", "admission.k8s.io/v1", false);
    }
    server.stop().await.unwrap();
}

/// A review the API server could send but kube's types cannot decode (an `object` that is not an
/// object) is answered with an AdmissionReview, so the cause reaches kubectl.
#[tokio::test]
async fn an_undecodable_object_in_a_real_review_is_denied_with_the_cause() {
    let server = TestServer::start().await;
    let mut h1 = server.http1().await;
    let mut review: Value = serde_json::from_slice(&pytorchjob_update(
        "uid-odd",
        "admission.k8s.io/v1",
        relabel,
    ))
    .unwrap();
    review["request"]["object"] = "not an object".into();
    let answer = send1(
        &mut h1,
        post(
            "/validate",
            Some("application/json"),
            serde_json::to_vec(&review).unwrap(),
        ),
    )
    .await;
    let review = assert_review(&answer, "uid-odd", "admission.k8s.io/v1", false);
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "PyTorchJob kubeflow/pytorch-simple: the admission request cannot be read"
        ),
        "{message}"
    );
    server.stop().await.unwrap();
}

/// Shutdown stops accepting but lets a request whose body is still arriving finish.
#[tokio::test]
async fn shutdown_lets_in_flight_reviews_finish() {
    let mut server = TestServer::start().await;
    let slow = server.start_slow_review("uid-inflight").await;
    let serve = server.begin_stop();
    // New connections are refused once the listener is closed.
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(server.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(STEP, refused)
        .await
        .expect("listener closes after shutdown");
    assert!(
        !serve.is_finished(),
        "serve must wait for the in-flight request"
    );

    let answer = slow.finish().await;
    assert_review(&answer, "uid-inflight", "admission.k8s.io/v1", true);
    tokio::time::timeout(STEP, serve)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
}
