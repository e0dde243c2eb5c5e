//! `guard-bench`: the helpers of `bench/load.sh`.
//!
//! - `guard-bench baseline --listen ADDR --tls-cert FILE --tls-key FILE` serves a constant
//!   AdmissionReview on every request after reading the whole body, over the webhook's own
//!   stack — tokio's multi-threaded runtime, hyper-util's auto connection (HTTP/1.1 and HTTP/2
//!   with the webhook's settings), tokio-rustls with ring, ALPN `h2`, `http/1.1`. It is the
//!   floor: what TLS + HTTP alone cost, with no decoding and no decision.
//! - `guard-bench reviews --out DIR` writes the benchmark reviews (the same bytes as
//!   `cargo bench --bench decision` uses) as `DIR/NAME.json` and prints `NAME SIZE` lines.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[path = "../../benches/support/reviews.rs"]
mod reviews;

/// What the baseline answers: an allowed response review, like the webhook's for an allowed
/// update (same size within a few bytes).
const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"b1d303e9-54fe-408f-88f3-415c5087c92e","allowed":true}}"#;

const USAGE: &str = "usage: guard-bench baseline --listen ADDR --tls-cert FILE --tls-key FILE\n       guard-bench reviews --out DIR";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("baseline") => {
            let listen: SocketAddr = flag(&args, "--listen")?
                .parse()
                .context("--listen takes HOST:PORT")?;
            let cert = PathBuf::from(flag(&args, "--tls-cert")?);
            let key = PathBuf::from(flag(&args, "--tls-key")?);
            let config = tls_config(&cert, &key)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?
                .block_on(serve(listen, config))
        }
        Some("reviews") => {
            let out = PathBuf::from(flag(&args, "--out")?);
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for (name, bytes) in reviews::all() {
                let path = out.join(format!("{name}.json"));
                std::fs::write(&path, &bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{name} {}", bytes.len());
            }
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

/// The value after `name` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> anyhow::Result<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .with_context(|| format!("missing {name}\n{USAGE}"))
}

/// As the webhook's `tls::load` builds it: ring, TLS 1.2 and 1.3, no client auth, ALPN h2 then
/// http/1.1.
fn tls_config(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad PEM in {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn serve(listen: SocketAddr, config: Arc<ServerConfig>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // The webhook's connection settings (src/server/listener.rs, with src/server.rs's Limits:
    // HEADER_READ_TIMEOUT, MAX_H2_STREAMS).
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let acceptor = TlsAcceptor::from(config);
    eprintln!("baseline serving on https://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(answer);
            let _ = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned()
                .await;
        });
    }
}

/// Read the whole body, answer the constant review.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let read = request
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes().len());
    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER)));
    if read.is_err() {
        *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
