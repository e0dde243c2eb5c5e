//! Test support: the real server on an ephemeral loopback port, and a client that calls it the
//! way the API server does — TLS verified against the CA (its `caBundle`) for the Service name
//! `pytorchjob-guard.pytorchjob-guard.svc`, HTTP/1.1 (or HTTP/2 for loopback URL webhooks).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pytorchjob_guard::certs::{self, DevCertificates};
use pytorchjob_guard::metrics::Metrics;
use pytorchjob_guard::policy::Policy;
use pytorchjob_guard::record::{self, RecordSink, Recorder};
use pytorchjob_guard::server::{self, AppState, Health, Limits};
use pytorchjob_guard::tls::{self, MinTlsVersion, Reload, ReloadingConfig, TlsSettings};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The name the API server verifies: `<service>.<namespace>.svc`.
pub const SERVICE_NAME: &str = "pytorchjob-guard.pytorchjob-guard.svc";

/// Bound on every network wait in tests, so a regression fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

/// A server running on 127.0.0.1:0 with freshly generated certificates.
pub struct TestServer {
    pub addr: SocketAddr,
    pub certs: DevCertificates,
    pub dir: tempfile::TempDir,
    pub tls: Arc<ReloadingConfig>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// How to start a test server.
#[derive(Default)]
pub struct Options {
    /// Require client certificates signed by this CA (PEM).
    pub client_ca: Option<String>,
    /// With `client_ca`: the only client name accepted.
    pub client_name: Option<String>,
    /// Lowest TLS version.
    pub min_version: MinTlsVersion,
    /// Serve the certificate through a kubelet-style Secret volume (`..data` symlink swap).
    pub kubelet_volume: bool,
    /// Poll the certificate files this often.
    pub reload_every: Option<Duration>,
    /// Keep serving (unready) this long after shutdown begins.
    pub drain_delay: Duration,
    /// The server's bounds (the production ones by default).
    pub limits: Limits,
    /// The policy (the built-in one by default).
    pub policy: Option<Policy>,
    /// Record governed reviews into this sink (`serve --record`).
    pub record_into: Option<Box<dyn RecordSink>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let names = certs::default_names(certs::DEFAULT_SERVICE, certs::DEFAULT_NAMESPACE);
        let generated = certs::generate(&names).expect("generate certificates");
        let dir = tempfile::tempdir().expect("temp dir");
        if options.kubelet_volume {
            publish_like_kubelet(dir.path(), &generated.cert_pem, &generated.key_pem);
        } else {
            certs::write(dir.path(), &generated).expect("write certificates");
        }
        let client_ca = options.client_ca.map(|pem| {
            let path = dir.path().join("client-ca.crt");
            std::fs::write(&path, pem).expect("write client CA");
            path
        });
        let settings = TlsSettings {
            cert: dir.path().join(certs::CERT_FILE),
            key: dir.path().join(certs::KEY_FILE),
            client_ca,
            client_name: options.client_name,
            min_version: options.min_version,
        };
        let tls = Arc::new(ReloadingConfig::load(settings).expect("load TLS"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new());
        let policy = options.policy.unwrap_or_default();
        let mut state = AppState::new(Arc::new(policy), health.clone(), metrics.clone())
            .with_limits(options.limits);
        if let Some(sink) = options.record_into {
            let recorder = Recorder::start(sink, record::DEFAULT_MAX_FILE_BYTES, metrics.clone())
                .expect("start the recorder");
            state = state.with_recorder(Arc::new(recorder));
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let (stop_poll, poll_stopped) = oneshot::channel::<()>();
        if let Some(every) = options.reload_every {
            let (observer, watched) = (metrics.clone(), tls.clone());
            tokio::spawn(pytorchjob_guard::reload::poll(
                tls.clone(),
                every,
                move |reload| {
                    let success = matches!(reload, Reload::Reloaded);
                    observer.observe_certificate(success, watched.not_after())
                },
                async move {
                    let _ = poll_stopped.await;
                },
            ));
        }
        let handle = tokio::spawn(server::serve(
            listener,
            tls.clone(),
            state,
            async move {
                let _ = stopped.await;
                drop(stop_poll);
            },
            options.drain_delay,
        ));
        Self {
            addr,
            certs: generated,
            dir,
            tls,
            health,
            metrics,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join(certs::CERT_FILE)
    }

    /// A client config trusting exactly the server's CA (the webhook's `caBundle`).
    pub fn client_config(&self, alpn: &[&[u8]]) -> ClientConfig {
        client_config(&self.certs.ca_pem, alpn, None)
    }

    /// Open a verified TLS connection offering `alpn`.
    pub async fn tls_connect(&self, config: ClientConfig) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = tokio::time::timeout(STEP, TcpStream::connect(self.addr))
            .await
            .expect("connect in time")?;
        let name = ServerName::try_from(SERVICE_NAME).unwrap();
        tokio::time::timeout(
            STEP,
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .expect("handshake in time")
    }

    /// An HTTP/1.1 connection, as the API server opens to webhooks.
    pub async fn http1(&self) -> http1::SendRequest<Full<Bytes>> {
        let stream = self
            .tls_connect(self.client_config(&[b"http/1.1"]))
            .await
            .expect("TLS");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.expect("h1");
        tokio::spawn(connection);
        sender
    }

    /// An HTTP/2 connection (ALPN h2).
    pub async fn http2(&self) -> http2::SendRequest<Full<Bytes>> {
        let stream = self
            .tls_connect(self.client_config(&[b"h2", b"http/1.1"]))
            .await
            .expect("TLS");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
        tokio::spawn(connection);
        sender
    }

    /// Begin shutdown and wait until `serve` returns.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
    }

    /// Signal shutdown without waiting; returns the serve task.
    pub fn begin_stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().expect("running")
    }
}

/// A client config trusting `ca_pem`, offering `alpn`, optionally presenting a client
/// certificate (`(chain PEM, key PEM)`).
pub fn client_config(ca_pem: &str, alpn: &[&[u8]], identity: Option<(&str, &str)>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in tls::parse_certificates("ca".as_ref(), ca_pem.as_bytes()).unwrap() {
        roots.add(cert).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            use rustls::pki_types::PrivateKeyDer;
            use rustls::pki_types::pem::PemObject;
            let chain = tls::parse_certificates("client".as_ref(), chain.as_bytes()).unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }
}

/// A POST request with a body and content type.
pub fn post(
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::post(path).header("host", SERVICE_NAME);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    builder.body(Full::new(body.into())).unwrap()
}

/// A request with a method and no body.
pub fn bare(method: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", SERVICE_NAME)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub async fn read(response: hyper::Response<hyper::body::Incoming>) -> Answer {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = tokio::time::timeout(STEP, response.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Answer {
        status,
        content_type,
        body,
    }
}

/// Wait (bounded) for a response and read it whole.
pub async fn answer_of(
    sent: impl std::future::Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
) -> Answer {
    let response = tokio::time::timeout(STEP, sent)
        .await
        .expect("answer in time")
        .expect("response");
    read(response).await
}

/// Send over HTTP/1.1 and read the answer.
pub async fn send1(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Answer {
    answer_of(sender.send_request(request)).await
}

/// Send over HTTP/2 and read the answer.
pub async fn send2(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Answer {
    answer_of(sender.send_request(request)).await
}

/// A PyTorchJob UPDATE review as the API server sends it; `edit` changes the new object.
pub fn pytorchjob_update(
    uid: &str,
    api_version: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Vec<u8> {
    let old = serde_json::json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": "pytorch-simple", "namespace": "kubeflow", "uid": "0b8e7f0c-1d2e-4f3a-9b8c-7d6e5f4a3b2c",
            "resourceVersion": "4242", "generation": 1, "creationTimestamp": "2025-01-21T10:00:00Z",
            "labels": {"app": "mnist"}
        },
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [
                    {"name": "pytorch", "image": "docker.io/kubeflowkatib/pytorch-mnist:v1beta1-45c5727",
                     "command": ["python3", "/opt/pytorch-mnist/mnist.py", "--epochs=1"]}]}}},
                "Worker": {"replicas": 1, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [
                    {"name": "pytorch", "image": "docker.io/kubeflowkatib/pytorch-mnist:v1beta1-45c5727",
                     "command": ["python3", "/opt/pytorch-mnist/mnist.py", "--epochs=1"]}]}}}
            }
        }
    });
    let mut new = old.clone();
    new["metadata"]["resourceVersion"] = "4243".into();
    edit(&mut new);
    let review = serde_json::json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "kubeflow.org", "version": "v1", "kind": "PyTorchJob"},
            "resource": {"group": "kubeflow.org", "version": "v1", "resource": "pytorchjobs"},
            "requestKind": {"group": "kubeflow.org", "version": "v1", "kind": "PyTorchJob"},
            "requestResource": {"group": "kubeflow.org", "version": "v1", "resource": "pytorchjobs"},
            "name": "pytorch-simple",
            "namespace": "kubeflow",
            "operation": "UPDATE",
            "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": false,
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-patch"}
        }
    });
    serde_json::to_vec(&review).unwrap()
}

/// Publish `tls.crt` and `tls.key` into `dir` the way the kubelet updates a Secret volume: a new
/// timestamped directory, a `..data_tmp` symlink to it renamed over `..data` (atomic), stable
/// `tls.crt -> ..data/tls.crt` links, and the old directory removed.
#[cfg(unix)]
pub fn publish_like_kubelet(dir: &std::path::Path, cert_pem: &str, key_pem: &str) {
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static VERSION: AtomicUsize = AtomicUsize::new(0);
    let version = format!(
        "..2026_11_27_00_00_00.{:09}",
        VERSION.fetch_add(1, Ordering::SeqCst)
    );
    let data = dir.join(&version);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(data.join("tls.key"), key_pem).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    symlink(&version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// A review whose body is still arriving: the server has received its headers and part of its
/// body (it is in flight) until [`SlowReview::finish`] sends the rest.
pub struct SlowReview {
    tx: http_body_util::channel::Sender<Bytes>,
    rest: Vec<u8>,
    response: JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>,
}

impl TestServer {
    /// Start a review for `uid` over a new HTTP/1.1 connection and send half its body; returns
    /// once the server counts it in flight.
    pub async fn start_slow_review(&self, uid: &str) -> SlowReview {
        let stream = self
            .tls_connect(self.client_config(&[b"http/1.1"]))
            .await
            .unwrap();
        let (mut sender, connection) =
            http1::handshake::<_, http_body_util::channel::Channel<Bytes>>(TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let body = pytorchjob_update(uid, "admission.k8s.io/v1", |_| {});
        let (mut tx, channel) = http_body_util::channel::Channel::<Bytes>::new(4);
        let request = Request::post("/validate")
            .header("host", SERVICE_NAME)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(channel)
            .unwrap();
        let (first, rest) = body.split_at(body.len() / 2);
        tx.send_data(Bytes::copy_from_slice(first)).await.unwrap();
        let response = tokio::spawn(async move { sender.send_request(request).await });
        let health = self.health.clone();
        let received = async move {
            while health.in_flight() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(STEP, received)
            .await
            .expect("the server receives the request");
        SlowReview {
            tx,
            rest: rest.to_vec(),
            response,
        }
    }
}

impl SlowReview {
    /// Wait for the answer without sending the rest of the body (the client stalls).
    pub async fn answer_without_finishing(self) -> Answer {
        let _still_open = self.tx;
        let response = self.response.await.unwrap().unwrap();
        read(response).await
    }

    /// Send the rest of the body and read the answer.
    pub async fn finish(mut self) -> Answer {
        self.tx.send_data(Bytes::from(self.rest)).await.unwrap();
        drop(self.tx);
        let response = tokio::time::timeout(STEP, self.response)
            .await
            .expect("answer in time")
            .unwrap()
            .unwrap();
        read(response).await
    }
}

/// A free loopback port (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed when the test ends, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
