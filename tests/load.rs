//! A bounded load test over real TLS: 20,000 reviews over 64 keep-alive connections, HTTP/1.1 and
//! HTTP/2 at once, a mix of allowed and denied updates. Every answer is checked: status, verdict,
//! the denied field, and the uid — so a lost or misrouted response fails the test. Zero errors.
//!
//! On the 2-core development machine it takes about 8 s in a debug build (`cargo test`) and about
//! 4 s with `cargo test --release --test load`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hyper::StatusCode;
use serde_json::Value;
use support::*;

/// Reviews in the run.
const REVIEWS: usize = 20_000;
/// Keep-alive connections: the first `H2_CONNECTIONS` speak HTTP/2, the rest HTTP/1.1.
const CONNECTIONS: usize = 64;
const H2_CONNECTIONS: usize = 16;
/// Concurrent streams on each HTTP/2 connection.
const H2_STREAMS: usize = 4;
/// The whole run must finish within this, or the test fails instead of hanging.
const RUN_BOUND: Duration = Duration::from_secs(120);

const UID: &str = "UID-PLACEHOLDER";

/// Review bodies with a placeholder uid: an allowed relabel and a denied scale.
struct Templates {
    allow: String,
    deny: String,
}

impl Templates {
    fn new() -> Self {
        let text = |edit: fn(&mut Value)| {
            String::from_utf8(pytorchjob_update(UID, "admission.k8s.io/v1", edit)).unwrap()
        };
        Self {
            allow: text(|job| job["metadata"]["labels"]["load"] = "yes".into()),
            deny: text(|job| job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 7.into()),
        }
    }

    /// The `n`th review of connection `conn`: its uid, whether it must be allowed, its body.
    fn review(&self, conn: usize, n: usize) -> (String, bool, Bytes) {
        let uid = format!("load-{conn}-{n}");
        let allowed = !(conn + n).is_multiple_of(3);
        let template = if allowed { &self.allow } else { &self.deny };
        (
            uid.clone(),
            allowed,
            Bytes::from(template.replace(UID, &uid)),
        )
    }
}

/// Check one answer; returns an error message instead of panicking so every failure is counted.
fn verify(answer: &Answer, uid: &str, allowed: bool) -> Result<(), String> {
    if answer.status != StatusCode::OK {
        return Err(format!("{uid}: status {} {}", answer.status, answer.text()));
    }
    let review: Value =
        serde_json::from_slice(&answer.body).map_err(|e| format!("{uid}: not JSON: {e}"))?;
    let response = &review["response"];
    if response["uid"] != uid {
        return Err(format!("{uid}: answered with uid {}", response["uid"]));
    }
    if response["allowed"] != allowed {
        return Err(format!("{uid}: allowed is {}", response["allowed"]));
    }
    if !allowed
        && response["status"]["details"]["causes"][0]["field"]
            != "spec.pytorchReplicaSpecs.Worker.replicas"
    {
        return Err(format!("{uid}: wrong denial {response}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_over_64_keep_alive_connections_are_all_answered_right() {
    let total = REVIEWS;
    // Connection `c` sends `total / CONNECTIONS` reviews, one more while `c < total % CONNECTIONS`.
    let share = |conn: usize| total / CONNECTIONS + usize::from(conn < total % CONNECTIONS);
    let server = TestServer::start().await;
    let templates = Arc::new(Templates::new());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for conn in 0..CONNECTIONS {
        let templates = templates.clone();
        let per_connection = share(conn);
        if conn < H2_CONNECTIONS {
            let h2 = server.http2().await;
            // A few streams at once on each HTTP/2 connection, each taking every H2_STREAMS-th
            // review of the connection.
            for lane in 0..H2_STREAMS {
                let (mut h2, templates) = (h2.clone(), templates.clone());
                tasks.push(tokio::spawn(async move {
                    let mut errors = Vec::new();
                    for n in (lane..per_connection).step_by(H2_STREAMS) {
                        let (uid, allowed, body) = templates.review(conn, n);
                        let answer =
                            send2(&mut h2, post("/validate", Some("application/json"), body)).await;
                        errors.extend(verify(&answer, &uid, allowed).err());
                    }
                    errors
                }));
            }
        } else {
            let mut h1 = server.http1().await;
            tasks.push(tokio::spawn(async move {
                let mut errors = Vec::new();
                for n in 0..per_connection {
                    let (uid, allowed, body) = templates.review(conn, n);
                    let answer =
                        send1(&mut h1, post("/validate", Some("application/json"), body)).await;
                    errors.extend(verify(&answer, &uid, allowed).err());
                }
                errors
            }));
        }
    }
    let mut errors = Vec::new();
    for task in tasks {
        let task_errors = tokio::time::timeout(RUN_BOUND, task)
            .await
            .expect("the load run finishes in time")
            .expect("a client task did not panic");
        errors.extend(task_errors);
    }
    let took = started.elapsed();
    assert!(
        errors.is_empty(),
        "{} of {} reviews went wrong, first: {:?}",
        errors.len(),
        total,
        errors.first()
    );
    // The server counted exactly these reviews, and rejected nothing.
    let exposition = server.metrics.encode();
    let reviews: f64 = exposition
        .lines()
        .filter(|l| l.starts_with("pytorchjob_guard_reviews_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(reviews as usize, total);
    assert!(
        !exposition.lines().any(
            |l| l.starts_with("pytorchjob_guard_rejected_requests_total{") && !l.ends_with(" 0")
        ),
        "no request was rejected"
    );
    eprintln!(
        "{total} reviews over {CONNECTIONS} connections ({H2_CONNECTIONS} HTTP/2) in {took:?}"
    );
    server.stop().await.unwrap();
}
