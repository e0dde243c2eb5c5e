//! The HTTP status of every client mistake, at the router (`oneshot`, no TLS, no sockets): the
//! status, the text that names the cause, and the `rejected_requests_total` reason it counts.
//! A few of these cases also run over real TLS in `https.rs` and `hostile.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use http_body_util::channel::{Channel, Sender};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use pytorchjob_guard::metrics::Metrics;
use pytorchjob_guard::policy::Policy;
use pytorchjob_guard::server::{self, AppState, Health, MAX_BODY_BYTES};
use serde_json::Value;
use support::{bare, post, pytorchjob_update};
use tower::ServiceExt;

const JSON: Option<&str> = Some("application/json");
const MIB: usize = 1024 * 1024;

/// What the router answered, and what it counted.
#[derive(Debug)]
struct Routed {
    status: StatusCode,
    allow: Option<String>,
    content_type: String,
    body: String,
    /// `rejected_requests_total` by reason, the samples that are not zero.
    rejected: BTreeMap<String, f64>,
}

/// The `rejected_requests_total` samples of an exposition that are not zero, by reason.
fn rejected(metrics: &Metrics) -> BTreeMap<String, f64> {
    let prefix = "pytorchjob_guard_rejected_requests_total{reason=\"";
    metrics
        .encode()
        .lines()
        .filter_map(|line| {
            let (reason, value) = line.strip_prefix(prefix)?.split_once("\"} ")?;
            let value: f64 = value.trim().parse().unwrap();
            (value != 0.0).then(|| (reason.to_owned(), value))
        })
        .collect()
}

/// Send one request to a fresh router with the production limits.
async fn route(request: Request<Body>) -> Routed {
    let metrics = Arc::new(Metrics::new());
    let state = AppState::new(
        Arc::new(Policy::default()),
        Arc::new(Health::default()),
        metrics.clone(),
    );
    let response = server::router(state).oneshot(request).await.unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &hyper::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let (status, allow, content_type) = (
        response.status(),
        header(ALLOW),
        header(CONTENT_TYPE).unwrap_or_default(),
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Routed {
        status,
        allow,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
        rejected: rejected(&metrics),
    }
}

/// The answer is `status` with a text naming the cause, and it counted one `reason` (or none).
fn assert_rejected(name: &str, routed: &Routed, status: StatusCode, cause: &str, reason: &str) {
    assert_eq!(routed.status, status, "{name}: {}", routed.body);
    assert_eq!(
        routed.content_type, "text/plain; charset=utf-8",
        "{name}: the cause is text"
    );
    assert!(
        routed.body.contains(cause),
        "{name}: {:?} lacks {cause:?}",
        routed.body
    );
    let expected: BTreeMap<String, f64> = match reason {
        "" => BTreeMap::new(),
        reason => [(reason.to_owned(), 1.0)].into(),
    };
    assert_eq!(routed.rejected, expected, "{name}: counted reasons");
}

fn to_body(request: Request<http_body_util::Full<Bytes>>) -> Request<Body> {
    request.map(Body::new)
}

/// The test review (uid `u`), edited as JSON.
fn review(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review: Value =
        serde_json::from_slice(&pytorchjob_update("u", "admission.k8s.io/v1", |_| {})).unwrap();
    edit(&mut review);
    serde_json::to_vec(&review).unwrap()
}

/// A POST to /validate whose body the test streams, without Content-Length.
fn streamed() -> (Sender<Bytes, std::io::Error>, Request<Body>) {
    let (tx, body) = Channel::<Bytes, std::io::Error>::new(4);
    let request = Request::post("/validate")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::new(body))
        .unwrap();
    (tx, request)
}

#[tokio::test]
async fn a_valid_review_is_answered_200_with_the_review_json() {
    let routed = route(to_body(post(
        "/validate?timeout=10s",
        JSON,
        pytorchjob_update("uid-ok", "admission.k8s.io/v1", |_| {}),
    )))
    .await;
    assert_eq!(routed.status, StatusCode::OK, "{}", routed.body);
    assert_eq!(routed.content_type, "application/json");
    let review: Value = serde_json::from_str(&routed.body).unwrap();
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["uid"], "uid-ok");
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert!(routed.rejected.is_empty(), "{:?}", routed.rejected);
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_415() {
    for (name, content_type) in [
        ("text/plain", Some("text/plain")),
        ("no Content-Type", None),
        ("application/json-seq", Some("application/json-seq")),
    ] {
        let routed = route(to_body(post("/validate", content_type, "{}"))).await;
        assert_rejected(
            name,
            &routed,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported Content-Type",
            "bad_content_type",
        );
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_declared_or_streamed() {
    let limit = format!("request body too large: the limit is {MAX_BODY_BYTES} bytes");

    // Declared: refused on its Content-Length, whatever follows.
    let mut request = to_body(post("/validate", JSON, "{}"));
    request
        .headers_mut()
        .insert("content-length", (20 * MIB).into());
    let routed = route(request).await;
    assert_rejected(
        "declared",
        &routed,
        StatusCode::PAYLOAD_TOO_LARGE,
        &limit,
        "body_too_large",
    );

    // A whole body over the limit, its length known.
    let routed = route(to_body(post(
        "/validate",
        JSON,
        vec![b' '; MAX_BODY_BYTES + 1],
    )))
    .await;
    assert_rejected(
        "whole",
        &routed,
        StatusCode::PAYLOAD_TOO_LARGE,
        &limit,
        "body_too_large",
    );

    // Streamed without a length: cut off once the limit is read.
    let (mut tx, request) = streamed();
    let feeder = tokio::spawn(async move {
        let chunk = Bytes::from(vec![b' '; 64 * 1024]);
        let mut sent = 0;
        while sent < 20 * MIB && tx.send_data(chunk.clone()).await.is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let routed = route(request).await;
    assert_rejected(
        "streamed",
        &routed,
        StatusCode::PAYLOAD_TOO_LARGE,
        &limit,
        "body_too_large",
    );
    let sent = feeder.await.unwrap();
    assert!(sent < 20 * MIB, "read all {sent} bytes");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_gets_408_and_a_broken_one_400() {
    let (tx, request) = streamed();
    let routed = route(request).await;
    assert_rejected(
        "stalled",
        &routed,
        StatusCode::REQUEST_TIMEOUT,
        &format!(
            "request body not received within {:?}",
            server::BODY_READ_TIMEOUT
        ),
        "timeout",
    );
    drop(tx);

    let (tx, request) = streamed();
    tx.abort(std::io::Error::other("connection reset"));
    let routed = route(request).await;
    assert_rejected(
        "aborted",
        &routed,
        StatusCode::BAD_REQUEST,
        "cannot read the request body",
        "body_read_error",
    );
}

#[tokio::test]
async fn a_body_that_is_not_an_answerable_review_gets_400() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty body", Vec::new(), "empty request body"),
        ("not JSON", b"hello".to_vec(), "not an AdmissionReview"),
        ("a JSON array", b"[1,2]".to_vec(), "not an AdmissionReview"),
        (
            "invalid UTF-8",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'],
            "not an AdmissionReview",
        ),
        (
            "a Pod, not a review",
            br#"{"apiVersion":"v1","kind":"Pod","request":{"uid":"x"}}"#.to_vec(),
            "unsupported review type \"v1\"/\"Pod\"",
        ),
        (
            "apiVersion admission.k8s.io/v2",
            review(|r| r["apiVersion"] = "admission.k8s.io/v2".into()),
            "unsupported review type \"admission.k8s.io/v2\"/\"AdmissionReview\"",
        ),
        (
            "kind AdmissionResponse",
            review(|r| r["kind"] = "AdmissionResponse".into()),
            "unsupported review type \"admission.k8s.io/v1\"/\"AdmissionResponse\"",
        ),
        (
            "no apiVersion and kind",
            review(|r| {
                let r = r.as_object_mut().unwrap();
                r.remove("apiVersion");
                r.remove("kind");
            }),
            "unsupported review type \"\"/\"\": expected kind AdmissionReview",
        ),
        (
            "wrong apiVersion with an odd object",
            review(|r| {
                r["apiVersion"] = "v1".into();
                r["request"]["object"] = "odd".into();
            }),
            "unsupported review type \"v1\"",
        ),
        (
            "a review without request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            "has no request",
        ),
        (
            "empty uid",
            review(|r| r["request"]["uid"] = "".into()),
            "empty uid",
        ),
        (
            "missing uid",
            review(|r| {
                r["request"].as_object_mut().unwrap().remove("uid");
            }),
            "uid",
        ),
    ];
    for (name, body, cause) in cases {
        let routed = route(to_body(post("/validate", JSON, body))).await;
        assert_rejected(
            name,
            &routed,
            StatusCode::BAD_REQUEST,
            cause,
            "malformed_review",
        );
    }
}

#[tokio::test]
async fn a_wrong_method_gets_405_with_allow_and_an_unknown_path_404() {
    for (method, path, allow) in [
        ("GET", "/validate", "POST"),
        ("PUT", "/validate", "POST"),
        ("DELETE", "/validate", "POST"),
        ("POST", "/healthz", "GET"),
        ("POST", "/readyz", "GET"),
    ] {
        let name = format!("{method} {path}");
        let routed = route(to_body(bare(method, path))).await;
        assert_rejected(
            &name,
            &routed,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {method} not allowed on {path}: use {allow}"),
            "",
        );
        assert_eq!(routed.allow.as_deref(), Some(allow), "{name}");
    }
    for path in ["/mutate", "/"] {
        let routed = route(to_body(bare("POST", path))).await;
        assert_rejected(
            path,
            &routed,
            StatusCode::NOT_FOUND,
            &format!("no route for {path}: the webhook serves POST /validate"),
            "",
        );
        assert_eq!(routed.allow, None, "{path}");
    }
}
