//! Hostile and odd request bodies over real TLS, beyond the status of each client mistake
//! (tested at the router in `router.rs`, a few of them over TLS in `https.rs`).
//!
//! Each case gets the right answer quickly (well under [`BOUND`]) and never a 5xx: an HTTP 4xx
//! with a message that says what is wrong when the body is not an answerable review, or — where
//! the API server could have sent it (a review with a uid whose object is odd) — an
//! AdmissionReview that denies the request with the cause, so it reaches kubectl. After each, a
//! valid review on a new connection still gets the right verdict.
//!
//! Decisions recorded here:
//! - numbers JSON cannot hold as f64 (`1e400`) make the object unreadable: denied with the cause;
//!   integers beyond 64 bits (`2^70`) are read as f64 and compared by value, as the API server's
//!   own decoder reads them;
//! - duplicate keys: in the review's own fields (`uid`, `operation`, …) they are an error
//!   (`duplicate field`), a 400: the review cannot be answered; inside the objects the last one
//!   wins, as in Go's `encoding/json` and kube's `ObjectMeta`, and the result is judged like any
//!   object (the API server never sends duplicates: it writes the JSON itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use axum::body::Bytes;
use hyper::{Request, StatusCode};
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every hostile request is answered within this (debug build, 2 cores, tests in parallel).
const BOUND: Duration = Duration::from_secs(2);

const JSON: Option<&str> = Some("application/json");

/// What a hostile request must get.
#[derive(Debug)]
enum Expect {
    /// An HTTP error with this status whose text contains this message.
    Rejected(StatusCode, &'static str),
    /// A response review (HTTP 200) denying the request, its message containing this text.
    Denied(&'static str),
    /// A response review denying the request at exactly these fields.
    DeniedAt(&'static [&'static str]),
    /// A response review allowing the request.
    Allowed,
}

/// A PyTorchJob UPDATE review with `uid` as a JSON value, edited.
fn review(uid: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut review: Value =
        serde_json::from_slice(&pytorchjob_update(uid, "admission.k8s.io/v1", |_| {})).unwrap();
    edit(&mut review);
    review
}

fn bytes(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).unwrap()
}

/// The serialized review with each `(from, to)` replaced once, for JSON that serde_json cannot
/// build: duplicate keys, numbers out of range.
fn text_edit(review: &Value, edits: &[(&str, &str)]) -> Vec<u8> {
    let mut text = serde_json::to_string(review).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in the review");
        text = text.replacen(from, to, 1);
    }
    text.into_bytes()
}

fn worker_replicas(review: &mut Value, value: Value) {
    review["request"]["object"]["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = value;
}

fn check(name: &str, answer: &Answer, uid: &str, expect: &Expect) {
    assert!(
        !answer.status.is_server_error(),
        "{name}: never a 5xx: {} {}",
        answer.status,
        answer.text()
    );
    let review_of = |answer: &Answer| -> Value {
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text());
        assert_eq!(answer.content_type, "application/json", "{name}");
        let review = answer.json();
        assert_eq!(review["kind"], "AdmissionReview", "{name}");
        assert_eq!(review["response"]["uid"], uid, "{name}");
        review
    };
    match expect {
        Expect::Rejected(status, message) => {
            assert_eq!(answer.status, *status, "{name}: {}", answer.text());
            assert!(
                answer.text().contains(message),
                "{name}: {:?} lacks {message:?}",
                answer.text()
            );
        }
        Expect::Denied(message) => {
            let review = review_of(answer);
            assert_eq!(review["response"]["allowed"], false, "{name}: {review}");
            let status = &review["response"]["status"];
            assert_eq!(status["code"], 400, "{name}");
            assert_eq!(status["reason"], "BadRequest", "{name}");
            let text = status["message"].as_str().unwrap();
            assert!(
                text.starts_with("PyTorchJob kubeflow/pytorch-simple: "),
                "{name}: the message names the object: {text}"
            );
            assert!(text.contains(message), "{name}: {text:?} lacks {message:?}");
        }
        Expect::DeniedAt(fields) => {
            let review = review_of(answer);
            assert_eq!(review["response"]["allowed"], false, "{name}: {review}");
            let causes: Vec<&str> = review["response"]["status"]["details"]["causes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["field"].as_str().unwrap())
                .collect();
            assert_eq!(causes, *fields, "{name}");
        }
        Expect::Allowed => {
            let review = review_of(answer);
            assert_eq!(review["response"]["allowed"], true, "{name}: {review}");
        }
    }
}

/// A valid review on a new connection still gets the right verdict.
async fn still_serving(server: &TestServer, after: &str) {
    let uid = format!("uid-after-{after}");
    let mut h1 = server.http1().await;
    let answer = send1(
        &mut h1,
        post(
            "/validate",
            JSON,
            pytorchjob_update(&uid, "admission.k8s.io/v1", |job| {
                job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 9.into()
            }),
        ),
    )
    .await;
    check(
        &format!("after {after}"),
        &answer,
        &uid,
        &Expect::DeniedAt(&["spec.pytorchReplicaSpecs.Worker.replicas"]),
    );
}

#[tokio::test]
async fn odd_bodies_get_the_right_answer_quickly_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let two_to_the_70 = "1180591620717411303424";
    let two_to_the_71 = "2361183241434822606848";
    let deep = 100_000;
    let deep_arrays = format!("{}{}", "[".repeat(deep), "]".repeat(deep));

    let cases: Vec<(&str, &str, Vec<u8>, Expect)> = vec![
        (
            "UPDATE without oldObject",
            "u1",
            bytes(&review("u1", |r| {
                r["request"].as_object_mut().unwrap().remove("oldObject");
            })),
            Expect::Denied("the UPDATE review has no oldObject, so the change cannot be checked"),
        ),
        (
            "UPDATE with a null oldObject",
            "u2",
            bytes(&review("u2", |r| r["request"]["oldObject"] = Value::Null)),
            Expect::Denied("the UPDATE review has no oldObject"),
        ),
        (
            "UPDATE with a null object",
            "u3",
            bytes(&review("u3", |r| r["request"]["object"] = Value::Null)),
            Expect::Denied("the UPDATE review has no object"),
        ),
        (
            "object is an array",
            "u4",
            bytes(&review("u4", |r| {
                r["request"]["object"] = serde_json::json!([1, 2])
            })),
            Expect::Denied("the admission request cannot be read: object: invalid type: sequence"),
        ),
        (
            "object is a number",
            "u5",
            bytes(&review("u5", |r| r["request"]["object"] = 42.into())),
            Expect::Denied(
                "the admission request cannot be read: object: invalid type: integer `42`",
            ),
        ),
        (
            "oldObject is a boolean",
            "u6",
            bytes(&review("u6", |r| r["request"]["oldObject"] = true.into())),
            Expect::Denied(
                "the admission request cannot be read: oldObject: invalid type: boolean `true`",
            ),
        ),
        (
            "100,000-deep nested arrays as the body",
            "",
            deep_arrays.clone().into_bytes(),
            // Refused at the 128th `[`, where its byte is first read (json::MAX_DEPTH), in
            // serde_json's words for its limit: nothing is built for the levels before it.
            Expect::Rejected(
                StatusCode::BAD_REQUEST,
                "not an AdmissionReview: recursion limit exceeded at line 1 column 128",
            ),
        ),
        (
            "100,000-deep nested arrays under an unknown key of the review",
            "u10b",
            text_edit(
                &review("u10b", |r| r["deep"] = "DEEP".into()),
                &[("\"DEEP\"", deep_arrays.as_str())],
            ),
            // Nesting past json::MAX_DEPTH is refused where it is read, wherever it is: the
            // review is still a governed UPDATE, so it is denied with the cause.
            Expect::Denied("the admission request cannot be read: recursion limit exceeded"),
        ),
        (
            "100,000-deep nested arrays in both objects, differing at the bottom",
            "u10c",
            text_edit(
                &review("u10c", |r| {
                    r["request"]["oldObject"]["spec"]["deep"] = "OLD".into();
                    r["request"]["object"]["spec"]["deep"] = "NEW".into();
                }),
                &[
                    ("\"OLD\"", deep_arrays.as_str()),
                    (
                        "\"NEW\"",
                        &format!("{}1{}", "[".repeat(deep), "]".repeat(deep)),
                    ),
                ],
            ),
            // Refused where the body is first read (json::MAX_DEPTH, serde_json's limit): no
            // level past it is indexed, walked or parsed.
            Expect::Denied("the admission request cannot be read: recursion limit exceeded"),
        ),
        (
            "100,000-deep nested arrays inside the object",
            "u11",
            text_edit(
                &review("u11", |r| worker_replicas(r, "DEEP".into())),
                &[("\"DEEP\"", deep_arrays.as_str())],
            ),
            Expect::Denied("the admission request cannot be read: recursion limit exceeded"),
        ),
        (
            "a number beyond f64 (1e400) in the object",
            "u12",
            text_edit(
                &review("u12", |r| worker_replicas(r, "HUGE".into())),
                &[("\"HUGE\"", "1e400")],
            ),
            Expect::Denied("the admission request cannot be read: number out of range"),
        ),
        (
            "a negative number beyond f64 (-1e400) in the old object",
            "u13",
            text_edit(
                &review("u13", |r| {
                    r["request"]["oldObject"]["spec"]["runPolicy"]["backoffLimit"] = "HUGE".into()
                }),
                &[("\"HUGE\"", "-1e400")],
            ),
            Expect::Denied("number out of range"),
        ),
        (
            "2^64 in a typed int64 field (metadata.generation)",
            "u14",
            text_edit(
                &review("u14", |r| {
                    r["request"]["object"]["metadata"]["generation"] = "BIG".into()
                }),
                &[("\"BIG\"", "18446744073709551616")],
            ),
            // Server-owned metadata is not compared, so the guard never reads it: the rule does
            // not apply to it (the API server itself never sends such a number).
            Expect::Allowed,
        ),
        (
            "2^70 unchanged on both sides",
            "u15",
            text_edit(
                &review("u15", |r| {
                    r["request"]["oldObject"]["spec"]["nprocPerNode"] = "OLD".into();
                    r["request"]["object"]["spec"]["nprocPerNode"] = "NEW".into();
                }),
                &[("\"OLD\"", two_to_the_70), ("\"NEW\"", two_to_the_70)],
            ),
            Expect::Allowed,
        ),
        (
            "2^70 changed to 2^71",
            "u16",
            text_edit(
                &review("u16", |r| {
                    r["request"]["oldObject"]["spec"]["nprocPerNode"] = "OLD".into();
                    r["request"]["object"]["spec"]["nprocPerNode"] = "NEW".into();
                }),
                &[("\"OLD\"", two_to_the_70), ("\"NEW\"", two_to_the_71)],
            ),
            Expect::DeniedAt(&["spec.nprocPerNode"]),
        ),
        (
            "duplicate uid",
            "u17",
            text_edit(
                &review("u17", |_| {}),
                &[("\"uid\":\"u17\"", "\"uid\":\"u17\",\"uid\":\"u17-again\"")],
            ),
            Expect::Rejected(
                StatusCode::BAD_REQUEST,
                "not an AdmissionReview: duplicate field `uid`",
            ),
        ),
        (
            "duplicate free-form key in the object: the last wins (a change)",
            "u18",
            text_edit(
                &review("u18", |r| worker_replicas(r, "DUP".into())),
                &[("\"replicas\":\"DUP\"", "\"replicas\":1,\"replicas\":3")],
            ),
            Expect::DeniedAt(&["spec.pytorchReplicaSpecs.Worker.replicas"]),
        ),
        (
            "duplicate free-form key in the object: the last wins (no change)",
            "u19",
            text_edit(
                &review("u19", |r| worker_replicas(r, "DUP".into())),
                &[("\"replicas\":\"DUP\"", "\"replicas\":3,\"replicas\":1")],
            ),
            Expect::Allowed,
        ),
        (
            "duplicate metadata.name in the object: the last wins",
            "u20",
            text_edit(
                &review("u20", |r| {
                    r["request"]["object"]["metadata"]["name"] = "DUP".into()
                }),
                &[(
                    "\"name\":\"DUP\"",
                    "\"name\":\"pytorch-simple\",\"name\":\"other\"",
                )],
            ),
            Expect::DeniedAt(&["metadata.name"]),
        ),
    ];
    for (name, uid, body, expect) in cases {
        let mut h1 = server.http1().await;
        let started = Instant::now();
        let answer = send1(&mut h1, post("/validate", JSON, body)).await;
        let took = started.elapsed();
        check(name, &answer, uid, &expect);
        assert!(took < BOUND, "{name}: answered in {took:?}");
        still_serving(&server, name).await;
    }
    server.stop().await.unwrap();
}

const MIB: usize = 1024 * 1024;

/// A POST whose body the test streams: `content_length` declared or none (chunked on HTTP/1.1).
fn streamed_post(
    content_length: Option<usize>,
) -> (
    http_body_util::channel::Sender<Bytes>,
    Request<http_body_util::channel::Channel<Bytes>>,
) {
    let (tx, body) = http_body_util::channel::Channel::<Bytes>::new(4);
    let mut request = Request::post("/validate")
        .header("host", SERVICE_NAME)
        .header("content-type", "application/json");
    if let Some(length) = content_length {
        request = request.header("content-length", length);
    }
    (tx, request.body(body).unwrap())
}

/// Send up to `total` bytes of JSON-ish filler in 64 KiB chunks; stops when the server stops
/// reading (the 413 closes the stream), so it never blocks the test.
async fn feed(mut tx: http_body_util::channel::Sender<Bytes>, total: usize) -> usize {
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let mut sent = 0;
    while sent < total {
        if tx.send_data(chunk.clone()).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    sent
}

/// An HTTP/2 connection for bodies the test streams.
async fn h2_streaming(
    server: &TestServer,
) -> hyper::client::conn::http2::SendRequest<http_body_util::channel::Channel<Bytes>> {
    let stream = server
        .tls_connect(server.client_config(&[b"h2"]))
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

fn assert_too_large(name: &str, answer: &Answer) {
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{name}: {}",
        answer.text()
    );
    assert!(
        answer
            .text()
            .contains("request body too large: the limit is 7340032 bytes"),
        "{name}: {}",
        answer.text()
    );
}

/// A 20 MiB body that declares its length is refused at once, before it is read.
#[tokio::test]
async fn a_20_mib_body_with_content_length_gets_413_before_it_is_sent() {
    let server = TestServer::start().await;
    let stream = server
        .tls_connect(server.client_config(&[b"http/1.1"]))
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (mut tx, request) = streamed_post(Some(20 * MIB));
    // Only the first 64 KiB are ever sent: the answer cannot depend on reading the rest.
    tx.send_data(Bytes::from(vec![b' '; 64 * 1024]))
        .await
        .unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(STEP, sender.send_request(request))
        .await
        .expect("answered without the body");
    let answer = read(response.expect("a response, not a broken connection")).await;
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert_too_large("Content-Length 20 MiB", &answer);
    drop(tx);
    still_serving(&server, "Content-Length 20 MiB").await;
    server.stop().await.unwrap();
}

/// A 20 MiB body without Content-Length (HTTP/1.1 chunked, HTTP/2 DATA frames) is cut off once
/// the limit is read: 413, the rest is never buffered.
#[tokio::test]
async fn a_20_mib_streamed_body_without_length_gets_413_at_the_limit() {
    let server = TestServer::start().await;

    // HTTP/1.1 chunked, written by hand so the 413 can be read while the body is still going.
    let stream = server
        .tls_connect(server.client_config(&[b"http/1.1"]))
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let started = Instant::now();
    let writing = tokio::spawn(async move {
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: {SERVICE_NAME}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await.unwrap();
        let mut chunk = b"10000\r\n".to_vec();
        chunk.extend_from_slice(&[b' '; 0x10000]);
        chunk.extend_from_slice(b"\r\n");
        let mut sent = 0;
        while sent < 20 * MIB {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
            sent += 0x10000;
        }
        sent
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(STEP, reader.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes");
    let took = started.elapsed();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 413 "), "{raw}");
    let answer = Answer {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        content_type: String::new(),
        body: Bytes::from(raw.split_once("\r\n\r\n").unwrap().1.to_owned()),
    };
    assert_too_large("HTTP/1.1 chunked", &answer);
    let sent = tokio::time::timeout(STEP, writing).await.unwrap().unwrap();
    assert!(
        sent < 20 * MIB,
        "the server stopped reading after {sent} bytes"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    still_serving(&server, "HTTP/1.1 chunked").await;

    // HTTP/2: DATA frames without content-length.
    let mut sender = h2_streaming(&server).await;
    let (tx, request) = streamed_post(None);
    let feeder = tokio::spawn(feed(tx, 20 * MIB));
    let started = Instant::now();
    let response = tokio::time::timeout(STEP, sender.send_request(request))
        .await
        .expect("answered in time");
    let answer = read(response.expect("a response, not a broken connection")).await;
    let took = started.elapsed();
    assert_too_large("HTTP/2", &answer);
    let sent = tokio::time::timeout(STEP, feeder)
        .await
        .expect("the feeder stops")
        .unwrap();
    assert!(
        sent < 20 * MIB,
        "the server stopped reading after {sent} bytes"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    still_serving(&server, "HTTP/2").await;
    server.stop().await.unwrap();
}

/// `rejected_requests_total{reason}` as the server counted it.
fn rejected(server: &TestServer, reason: &str) -> f64 {
    let sample = format!("pytorchjob_guard_rejected_requests_total{{reason=\"{reason}\"}} ");
    server
        .metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A fast 503 for the in-flight byte budget: one line saying why, `Retry-After`, counted.
fn assert_refused_for_budget(name: &str, answer: &Answer, took: Duration) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{name}: {}",
        answer.text()
    );
    let text = answer.text();
    assert_eq!(text.lines().count(), 1, "{name}: one line: {text:?}");
    assert!(
        text.starts_with("too many request bytes in flight"),
        "{name}: {text}"
    );
    assert!(took < BOUND, "{name}: refused in {took:?}");
}

/// The in-flight budget of these tests: room for one 1 MiB body beside small reviews.
fn small_budget() -> Options {
    Options {
        limits: pytorchjob_guard::server::Limits {
            max_in_flight_bytes: 2 * MIB,
            ..Default::default()
        },
        ..Options::default()
    }
}

/// An HTTP/1.1 connection of its own.
async fn h1_connection(
    server: &TestServer,
) -> hyper::client::conn::http1::SendRequest<http_body_util::channel::Channel<Bytes>> {
    let stream = server
        .tls_connect(server.client_config(&[b"http/1.1"]))
        .await
        .unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// While a large body holds the budget (declared, half sent), another large one is refused at
/// once with 503 from its Content-Length, before it is sent; small reviews are still judged;
/// once the first is answered, its bytes are free again.
#[tokio::test]
async fn a_body_that_does_not_fit_the_in_flight_budget_gets_a_fast_503_and_small_reviews_go_on() {
    let server = TestServer::start_with(small_budget()).await;
    // 1.5 MiB declared, half of it sent: the server holds 1.5 MiB of its 2 MiB budget.
    let large = review("large", |r| {
        r["request"]["object"]["metadata"]["annotations"] =
            serde_json::json!({"pad": "x".repeat(3 * MIB / 2 - 4096)});
    });
    let large = bytes(&large);
    let mut holding = h1_connection(&server).await;
    let (mut tx, request) = streamed_post(Some(large.len()));
    let (first, rest) = large.split_at(large.len() / 2);
    tx.send_data(Bytes::copy_from_slice(first)).await.unwrap();
    let held = tokio::spawn(async move { holding.send_request(request).await });
    let health = server.health.clone();
    tokio::time::timeout(STEP, async {
        while health.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the large review is in flight");

    // A second 1 MiB body: 0.5 MiB left, refused from its Content-Length, nothing sent.
    let mut second = h1_connection(&server).await;
    let (_tx, request) = streamed_post(Some(MIB));
    let started = Instant::now();
    let response = tokio::time::timeout(STEP, second.send_request(request))
        .await
        .expect("answered without the body")
        .expect("a response, not a broken connection");
    let retry_after = response.headers().get("retry-after").cloned();
    let answer = read(response).await;
    assert_refused_for_budget("a second large body", &answer, started.elapsed());
    assert_eq!(retry_after.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!(rejected(&server, "in_flight_bytes"), 1.0);

    // Small reviews are judged meanwhile, over HTTP/1.1 and HTTP/2.
    still_serving(&server, "a large body holding the budget").await;
    let mut h2 = server.http2().await;
    let body = pytorchjob_update("small-h2", "admission.k8s.io/v1", |_| {});
    let answer = send2(&mut h2, post("/validate", JSON, body)).await;
    check(
        "a small review over HTTP/2",
        &answer,
        "small-h2",
        &Expect::Allowed,
    );

    // The holder finishes and is judged; its bytes are given back.
    tx.send_data(Bytes::copy_from_slice(rest)).await.unwrap();
    drop(tx);
    let response = tokio::time::timeout(STEP, held).await.unwrap().unwrap();
    let answer = read(response.unwrap()).await;
    check("the large review", &answer, "large", &Expect::Allowed);
    let again = review("again", |r| {
        r["request"]["object"]["metadata"]["annotations"] =
            serde_json::json!({"pad": "x".repeat(3 * MIB / 2 - 4096)});
    });
    let answer = send1(
        &mut server.http1().await,
        post("/validate", JSON, bytes(&again)),
    )
    .await;
    check(
        "a large review after it",
        &answer,
        "again",
        &Expect::Allowed,
    );
    assert_eq!(rejected(&server, "in_flight_bytes"), 1.0);
    server.stop().await.unwrap();
}

/// HTTP/2 without content-length: the reservation grows with the DATA frames, and the stream
/// that outgrows the budget gets the 503 as soon as it does, not at its end; the connection
/// keeps serving its other streams.
#[tokio::test]
async fn an_http2_body_without_length_is_refused_once_it_outgrows_the_budget() {
    let server = TestServer::start_with(small_budget()).await;
    let mut h2 = h2_streaming(&server).await;
    let (tx, request) = streamed_post(None);
    // 5 MiB would be accepted by the body limit (7 MiB) but not by the 2 MiB budget.
    let feeder = tokio::spawn(feed(tx, 5 * MIB));
    let started = Instant::now();
    let response = tokio::time::timeout(STEP, h2.send_request(request))
        .await
        .expect("answered in time")
        .expect("a response, not a broken connection");
    let answer = read(response).await;
    assert_refused_for_budget("HTTP/2 without length", &answer, started.elapsed());
    let sent = tokio::time::timeout(STEP, feeder)
        .await
        .expect("the feeder stops")
        .unwrap();
    assert!(
        sent < 5 * MIB,
        "the server stopped reading after {sent} bytes"
    );
    assert_eq!(rejected(&server, "in_flight_bytes"), 1.0);
    let body = pytorchjob_update("same-connection", "admission.k8s.io/v1", |_| {});
    let (mut tx, request) = streamed_post(None);
    tx.send_data(Bytes::from(body)).await.unwrap();
    drop(tx);
    let answer = answer_of(h2.send_request(request)).await;
    check(
        "the same connection",
        &answer,
        "same-connection",
        &Expect::Allowed,
    );
    server.stop().await.unwrap();
}
