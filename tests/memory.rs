//! The memory bound, not speed: the real binary, run as the Deployment runs it, stays below the
//! Deployment's memory limit under each attack of issue 19, and answers a valid review
//! correctly afterwards.
//!
//! Each attack gets a fresh process, so its peak RSS (`VmHWM` in `/proc/<pid>/status`) is that
//! attack's alone. The process gets the container's command line (the image's `ENTRYPOINT`, then
//! the Deployment's `args`, read from `manifests/base/deployment.yaml`), with only the mounted
//! paths moved into a temporary directory (generated certificates for the Secret, the base's
//! `policy.yaml` for the ConfigMap) and its listeners on loopback ports. No environment
//! (the Deployment sets none). Its stderr is a pipe that nobody reads: a log pipeline that
//! stalled. The limit is the container's `resources.limits.memory` from the same file.
//!
//! Every client speaks real TLS, verified against the generated CA for the Service name.
//! `MEMORY_TEST_BINARY=<path>` runs another build of the binary instead (a release build, or
//! the one before a change) to measure it; each test prints its peak RSS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};
use support::{SERVICE_NAME, client_config, post, pytorchjob_update};

/// Bound on each attack and on each answer: every test ends in bounded time, pass or fail.
/// Generous, because it is not a test of speed: 12,000 deny-heavy reviews take a debug build
/// about a minute on 2 idle cores, and five times that on a loaded machine.
const ATTACK_BOUND: Duration = Duration::from_secs(600);

/// How long the binary may take to start listening.
const START_BOUND: Duration = Duration::from_secs(30);

const MIB: usize = 1024 * 1024;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Deployment's container as the test runs it: its command line and its memory limit.
struct Container {
    /// The image's entrypoint without the binary (`serve`), then the Deployment's args.
    args: Vec<String>,
    /// `resources.limits.memory`, in bytes.
    memory_limit: u64,
    /// `(mountPath, volume)`: where the pod mounts each volume.
    mounts: Vec<(String, Volume)>,
}

enum Volume {
    /// The serving certificate's Secret (`tls.crt`, `tls.key`).
    Secret,
    /// The policy's ConfigMap (`policy.yaml`).
    ConfigMap,
}

/// A Kubernetes memory quantity (`128Mi`, `1Gi`, `500M`, `1048576`) in bytes.
fn quantity_bytes(quantity: &str) -> u64 {
    let suffixes: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, unit) in suffixes {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<u64>().expect("a whole quantity") * unit;
        }
    }
    quantity.parse().expect("a quantity in bytes")
}

fn deployment_container() -> Container {
    let path = repo().join("manifests/base/deployment.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let deployment: Deployment = serde_yaml_ng::from_str(&text).unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    assert!(container.command.is_none(), "the image's entrypoint runs");
    let limit = &container
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap()["memory"];
    let volumes = pod.volumes.unwrap_or_default();
    let mounts = container
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|mount| {
            let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
            let kind = match (&volume.secret, &volume.config_map) {
                (Some(_), None) => Volume::Secret,
                (None, Some(_)) => Volume::ConfigMap,
                _ => panic!("volume {} is neither a Secret nor a ConfigMap", volume.name),
            };
            (mount.mount_path, kind)
        })
        .collect();
    let mut args = entrypoint_args();
    args.extend(container.args.clone().unwrap_or_default());
    Container {
        args,
        memory_limit: quantity_bytes(&limit.0),
        mounts,
    }
}

/// The Dockerfile's `ENTRYPOINT` (exec form) after the binary's path.
fn entrypoint_args() -> Vec<String> {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let line = dockerfile
        .lines()
        .rfind(|l| l.starts_with("ENTRYPOINT"))
        .expect("an ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(line["ENTRYPOINT".len()..].trim()).unwrap();
    argv[1..].to_vec()
}

/// A free loopback port (bound, then released for the binary to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The binary under test: this build's, or `MEMORY_TEST_BINARY`.
fn binary() -> PathBuf {
    std::env::var_os("MEMORY_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pytorchjob-guard")))
}

/// One running server process; killed when dropped, pass or fail.
struct Guard {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    ca_pem: String,
    memory_limit: u64,
    _dir: tempfile::TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guard {
    /// Start the binary as the Deployment runs it and wait until it accepts connections.
    async fn start() -> Self {
        let container = deployment_container();
        let dir = tempfile::tempdir().unwrap();
        let names = pytorchjob_guard::certs::default_names(
            pytorchjob_guard::certs::DEFAULT_SERVICE,
            pytorchjob_guard::certs::DEFAULT_NAMESPACE,
        );
        let generated = pytorchjob_guard::certs::generate(&names).unwrap();
        let mut args = container.args.clone();
        for (i, (mount_path, volume)) in container.mounts.iter().enumerate() {
            let local = dir.path().join(format!("volume-{i}"));
            std::fs::create_dir(&local).unwrap();
            match volume {
                Volume::Secret => {
                    pytorchjob_guard::certs::write(&local, &generated).unwrap();
                }
                Volume::ConfigMap => {
                    let policy = repo().join("manifests/base/policy.yaml");
                    std::fs::copy(policy, local.join("policy.yaml")).unwrap();
                }
            }
            for arg in &mut args {
                *arg = moved(arg, mount_path, &local);
            }
        }
        for flag in ["--listen", "--metrics-listen"] {
            assert!(
                !args.iter().any(|a| a.starts_with(flag)),
                "the Deployment sets {flag}: the test cannot move it to loopback"
            );
        }
        let (port, metrics_port) = (free_port(), free_port());
        args.push(format!("--listen=127.0.0.1:{port}"));
        args.push(format!("--metrics-listen=127.0.0.1:{metrics_port}"));
        let child = Command::new(binary())
            .args(&args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A pipe nobody reads: it fills, and the log writer stalls behind it.
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let guard = Self {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            metrics: format!("127.0.0.1:{metrics_port}").parse().unwrap(),
            ca_pem: generated.ca_pem.clone(),
            memory_limit: container.memory_limit,
            _dir: dir,
        };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(guard.addr).await.is_err() {
            assert!(
                started.elapsed() < START_BOUND,
                "the binary listens in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        guard
    }

    /// Peak resident memory so far (`VmHWM`), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM in /proc/<pid>/status");
        let kib: u64 = line["VmHWM:".len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib * 1024
    }

    /// A new verified HTTP/1.1 connection, as the API server opens.
    async fn http1(&self) -> SendRequest<Full<Bytes>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        // As the API server's client: no Nagle delay between a request's headers and body.
        tcp.set_nodelay(true).unwrap();
        let config = client_config(&self.ca_pem, &[b"http/1.1"], None);
        let name = rustls::pki_types::ServerName::try_from(SERVICE_NAME).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    /// POST `body` to `/validate` on a new connection: the status and the body of the answer,
    /// or the error that ended the exchange.
    async fn review(&self, body: Bytes) -> Result<(StatusCode, Bytes), hyper::Error> {
        let mut sender = self.http1().await;
        send(&mut sender, body).await
    }

    /// The counter `name{labels}` from `/metrics` (0 when absent).
    async fn counter(&self, series: &str) -> f64 {
        let tcp = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::get("/metrics")
            .header("host", "metrics")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let text = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(text.to_vec()).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The peak so far is below the Deployment's memory limit; printed for the record.
    fn assert_below_limit(&self, attack: &str) {
        let peak = self.peak_rss();
        eprintln!(
            "{attack}: peak RSS (VmHWM) {:.1} MiB, limit {} MiB ({})",
            peak as f64 / MIB as f64,
            self.memory_limit / MIB as u64,
            binary().display()
        );
        assert!(
            peak < self.memory_limit,
            "{attack}: peak RSS {peak} bytes reaches the Deployment's memory limit {} bytes",
            self.memory_limit
        );
    }

    /// After an attack: below the limit, and a valid review on a new connection still gets
    /// the right verdict.
    async fn assert_survived(&self, attack: &str) {
        self.assert_below_limit(attack);
        let uid = "after-the-attack";
        let body = pytorchjob_update(uid, "admission.k8s.io/v1", |job| {
            job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 9.into();
        });
        let (status, answer) = bounded(self.review(body.into())).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{attack}: {answer:?}");
        let review: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(review["response"]["uid"], uid, "{attack}");
        assert_eq!(review["response"]["allowed"], false, "{attack}: {review}");
        let causes = &review["response"]["status"]["details"]["causes"];
        assert_eq!(
            causes[0]["field"], "spec.pytorchReplicaSpecs.Worker.replicas",
            "{attack}: {review}"
        );
    }
}

/// `arg` with a path under `mount_path` moved under `local`.
fn moved(arg: &str, mount_path: &str, local: &Path) -> String {
    let prefix = format!("{}/", mount_path.trim_end_matches('/'));
    match arg.split_once('=') {
        Some((flag, value)) if value.starts_with(&prefix) => {
            format!("{flag}={}", local.join(&value[prefix.len()..]).display())
        }
        _ => arg.to_owned(),
    }
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(ATTACK_BOUND, future)
        .await
        .expect("answered within the attack bound")
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    let response = sender
        .send_request(post("/validate", Some("application/json"), body))
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// `unit` repeated to `bytes` bytes, sent as one review body: the answer is a 400 saying the
/// body is not a readable review, never a 5xx.
async fn attack_with_repeated(unit: &str, bytes: usize) {
    let guard = Guard::start().await;
    let body = Bytes::from(unit.repeat(bytes / unit.len()));
    let attack = format!("{} MiB of `{unit}`", bytes / MIB);
    let (status, answer) = bounded(guard.review(body)).await.unwrap();
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{attack}: {}",
        String::from_utf8_lossy(&answer)
    );
    guard.assert_survived(&attack).await;
}

#[tokio::test]
async fn six_mib_of_open_brackets() {
    attack_with_repeated("[", 6 * MIB).await;
}

#[tokio::test]
async fn two_mib_of_open_brackets() {
    attack_with_repeated("[", 2 * MIB).await;
}

#[tokio::test]
async fn six_mib_of_arrays_of_objects() {
    attack_with_repeated("[{\"a\":", 6 * MIB).await;
}

#[tokio::test]
async fn six_mib_of_objects() {
    attack_with_repeated("{\"a\":", 6 * MIB).await;
}

/// A legitimate review of about `bytes`: both objects carry the same long `env` list (what a
/// large job looks like: many small values, not one long string), and a label changes, which
/// the policy allows.
fn large_allowed_review(uid: &str, bytes: usize) -> Vec<u8> {
    let container = "/spec/pytorchReplicaSpecs/Worker/template/spec/containers/0";
    // `{"name":"VAR_0000000","value":"…"}` is 64 bytes, twice per review.
    let entries = bytes / 128;
    let env: Vec<Value> = (0..entries)
        .map(|i| json!({"name": format!("VAR_{i:07}"), "value": "x".repeat(30)}))
        .collect();
    let small = pytorchjob_update(uid, "admission.k8s.io/v1", |job| {
        job["metadata"]["labels"]["team"] = "vision".into();
    });
    let mut review: Value = serde_json::from_slice(&small).unwrap();
    for object in ["object", "oldObject"] {
        let at = format!("/request/{object}{container}");
        review.pointer_mut(&at).unwrap()["env"] = Value::Array(env.clone());
    }
    serde_json::to_vec(&review).unwrap()
}

/// What one of many concurrent large reviews got.
#[derive(Debug, PartialEq, Eq)]
enum Concurrent {
    /// Judged and allowed.
    Allowed,
    /// Refused for the in-flight budget: a 503 with its one-line reason.
    Refused,
    /// Refused, but the connection was closed by the server before the client had sent the
    /// whole body and read the 503 (HTTP/1.1 cannot take the rest of a body it refused).
    Closed,
}

/// `rejected_requests_total` for requests that did not fit the in-flight byte budget.
const REFUSED_SERIES: &str = "pytorchjob_guard_rejected_requests_total{reason=\"in_flight_bytes\"}";

/// Run `client` on `connections` new connections at once, each given `body`: their results,
/// within the attack bound.
async fn on_connections<T, F>(
    guard: &Guard,
    connections: usize,
    body: &Bytes,
    client: fn(SendRequest<Full<Bytes>>, Bytes) -> F,
) -> Vec<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(guard.http1().await);
    }
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|sender| tokio::spawn(client(sender, body.clone())))
        .collect();
    bounded(async {
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    })
    .await
}

/// One large review, sent while others are: allowed, or refused for the budget.
async fn large_review(mut sender: SendRequest<Full<Bytes>>, body: Bytes) -> Concurrent {
    match send(&mut sender, body).await {
        Ok((StatusCode::OK, answer)) => {
            let review: Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(review["response"]["allowed"], true, "{review}");
            Concurrent::Allowed
        }
        Ok((StatusCode::SERVICE_UNAVAILABLE, answer)) => {
            let text = String::from_utf8(answer.to_vec()).unwrap();
            assert_eq!(text.lines().count(), 1, "one line: {text:?}");
            assert!(text.contains("in flight"), "{text}");
            Concurrent::Refused
        }
        Ok((status, answer)) => panic!("{status}: {answer:?}"),
        Err(error) => {
            assert!(
                error.is_incomplete_message()
                    || error.is_closed()
                    || error.is_canceled()
                    || std::error::Error::source(&error).is_some(),
                "{error:?}"
            );
            Concurrent::Closed
        }
    }
}

#[tokio::test]
async fn forty_eight_concurrent_six_mib_reviews() {
    const CONCURRENT: usize = 48;
    let guard = Guard::start().await;
    let body = Bytes::from(large_allowed_review("large", 6 * MIB));
    assert!(body.len() <= pytorchjob_guard::server::MAX_BODY_BYTES);
    let outcomes = on_connections(&guard, CONCURRENT, &body, large_review).await;
    let count = |outcome| outcomes.iter().filter(|o| **o == outcome).count();
    let (allowed, closed) = (count(Concurrent::Allowed), count(Concurrent::Closed));
    let refused = outcomes.len() - allowed;
    eprintln!(
        "{CONCURRENT} concurrent 6 MiB reviews: {allowed} allowed, {refused} refused \
         ({closed} of them closed before the 503 was read)"
    );
    assert!(allowed > 0, "the budget takes at least one maximal review");
    assert_eq!(
        guard.counter(REFUSED_SERIES).await,
        refused as f64,
        "every refusal is counted as in_flight_bytes, and nothing else is refused"
    );
    guard
        .assert_survived(&format!("{CONCURRENT} concurrent 6 MiB reviews"))
        .await;
}

/// A denial at `paths` forbidden paths: `args` of the Worker's container replaced element by
/// element.
fn deny_heavy_review(uid: &str, paths: usize) -> Vec<u8> {
    let small = pytorchjob_update(uid, "admission.k8s.io/v1", |_| {});
    let mut review: Value = serde_json::from_slice(&small).unwrap();
    let container = "/spec/pytorchReplicaSpecs/Worker/template/spec/containers/0";
    for (object, arg) in [("oldObject", "a"), ("object", "b")] {
        let at = format!("/request/{object}{container}");
        review.pointer_mut(&at).unwrap()["args"] = Value::Array(vec![arg.into(); paths]);
    }
    serde_json::to_vec(&review).unwrap()
}

const DENY_HEAVY_REVIEWS: usize = 12_000;
const DENY_HEAVY_CONNECTIONS: usize = 8;

/// This connection's share of the deny-heavy reviews, each denied.
async fn deny_heavy_reviews(mut sender: SendRequest<Full<Bytes>>, body: Bytes) {
    for _ in 0..DENY_HEAVY_REVIEWS / DENY_HEAVY_CONNECTIONS {
        let (status, answer) = send(&mut sender, body.clone()).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer:?}");
        // `"allowed":false` without parsing 256 causes 12,000 times.
        let head = &answer[..answer.len().min(256)];
        let denied = b"\"allowed\":false";
        assert!(
            head.windows(denied.len()).any(|w| w == denied),
            "{}",
            String::from_utf8_lossy(head)
        );
    }
}

#[tokio::test]
async fn twelve_thousand_deny_heavy_reviews_while_stderr_is_not_read() {
    const PATHS: usize = 600;
    let guard = Guard::start().await;
    let body = Bytes::from(deny_heavy_review("deny-heavy", PATHS));
    on_connections(&guard, DENY_HEAVY_CONNECTIONS, &body, deny_heavy_reviews).await;
    let denied = "pytorchjob_guard_reviews_total{operation=\"UPDATE\",kind=\"PyTorchJob\",verdict=\"denied\",dry_run=\"false\"}";
    assert_eq!(guard.counter(denied).await, DENY_HEAVY_REVIEWS as f64);
    guard
        .assert_survived(&format!(
            "{DENY_HEAVY_REVIEWS} deny-heavy reviews ({PATHS} paths each), stderr not read"
        ))
        .await;
}

/// One review of about 6 MiB whose old and new `args` differ at every element (`"a"` against
/// `"b"`, about a million changed fields): it once took 1.3 GiB collecting every path. The diff
/// keeps at most `policy::diff::MAX_CHANGED_FIELDS` and denies the rest as unjudgeable.
#[tokio::test]
async fn one_review_changing_a_million_fields() {
    let guard = Guard::start().await;
    // `"a",` is four bytes, in each object: 6 MiB in all.
    let body = Bytes::from(deny_heavy_review("million", 6 * MIB / 8));
    let attack = "one 6 MiB review changing a million fields";
    let (status, answer) = bounded(guard.review(body)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, StatusCode::OK, "{attack}: {answer}");
    assert!(answer.contains("\"allowed\":false"), "{attack}: {answer}");
    assert!(
        answer.contains("compared fields changed, too many to judge one by one"),
        "{attack}: {answer}"
    );
    guard.assert_survived(attack).await;
}
