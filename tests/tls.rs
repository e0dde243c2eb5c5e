//! Certificates that rotate without an outage, mutual TLS, and protocol versions — over real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use hyper::StatusCode;
use pytorchjob_guard::certs;
use pytorchjob_guard::reload::Causes;
use pytorchjob_guard::tls::{
    MinTlsVersion, PemProblem, Reload, ReloadingConfig, TlsError, TlsSettings,
};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use support::*;

fn fresh_certificates() -> certs::DevCertificates {
    certs::generate(&certs::default_names(
        certs::DEFAULT_SERVICE,
        certs::DEFAULT_NAMESPACE,
    ))
    .unwrap()
}

async fn healthz_over_new_connection(
    server: &TestServer,
    ca_pem: &str,
) -> Result<StatusCode, String> {
    let stream = server
        .tls_connect(client_config(ca_pem, &[b"http/1.1"], None))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(send1(&mut sender, bare("GET", "/healthz")).await.status)
}

#[tokio::test]
async fn a_kubelet_style_rotation_reaches_new_handshakes_and_spares_open_connections() {
    let server = TestServer::start_with(Options {
        kubelet_volume: true,
        reload_every: Some(Duration::from_millis(20)),
        ..Options::default()
    })
    .await;
    let old_ca = server.certs.ca_pem.clone();
    let mut open = server.http1().await;
    assert_eq!(
        send1(&mut open, bare("GET", "/healthz")).await.status,
        StatusCode::OK
    );

    let rotated = fresh_certificates();
    publish_like_kubelet(server.dir.path(), &rotated.cert_pem, &rotated.key_pem);

    // The poller picks the new files up: wait for a handshake that trusts only the new CA.
    let picked_up = async {
        loop {
            if healthz_over_new_connection(&server, &rotated.ca_pem).await == Ok(StatusCode::OK) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(STEP, picked_up)
        .await
        .expect("the rotated certificate is served");
    let with_old_ca = healthz_over_new_connection(&server, &old_ca).await;
    assert!(
        with_old_ca.is_err(),
        "new handshakes no longer present the old certificate"
    );

    // The connection opened before the rotation keeps working.
    let review = post(
        "/validate",
        Some("application/json"),
        pytorchjob_update("uid-open", "admission.k8s.io/v1", |_| {}),
    );
    let answer = send1(&mut open, review).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["response"]["uid"], "uid-open");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn broken_or_mismatched_new_files_keep_the_last_good_certificate() {
    let server = TestServer::start_with(Options {
        kubelet_volume: true,
        ..Options::default()
    })
    .await;
    let ca = server.certs.ca_pem.clone();

    publish_like_kubelet(server.dir.path(), "not a certificate", "not a key");
    assert!(matches!(
        server.tls.reload(),
        Reload::Rejected(TlsError::Pem { .. })
    ));
    assert_eq!(
        healthz_over_new_connection(&server, &ca).await,
        Ok(StatusCode::OK)
    );

    let other = fresh_certificates();
    publish_like_kubelet(server.dir.path(), &other.cert_pem, &server.certs.key_pem);
    assert!(matches!(
        server.tls.reload(),
        Reload::Rejected(TlsError::KeyMismatch { .. })
    ));
    assert_eq!(
        healthz_over_new_connection(&server, &ca).await,
        Ok(StatusCode::OK)
    );

    // Good files again: accepted, and reported once.
    publish_like_kubelet(server.dir.path(), &other.cert_pem, &other.key_pem);
    assert!(matches!(server.tls.reload(), Reload::Reloaded));
    assert!(matches!(server.tls.reload(), Reload::Unchanged));
    assert_eq!(
        healthz_over_new_connection(&server, &other.ca_pem).await,
        Ok(StatusCode::OK)
    );
    server.stop().await.unwrap();
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = fresh_certificates();
    let b = fresh_certificates();
    std::fs::write(dir.path().join("tls.crt"), &a.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &b.key_pem).unwrap();
    let error =
        ReloadingConfig::load(settings_in(dir.path())).expect_err("mismatch must be refused");
    assert!(
        error.to_string().contains("does not match the certificate"),
        "{error}"
    );
}

/// `tls.crt` and `tls.key` in `dir`, TLS 1.2 and up, no client CA.
fn settings_in(dir: &std::path::Path) -> TlsSettings {
    TlsSettings {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: None,
        client_name: None,
        min_version: MinTlsVersion::Tls12,
    }
}

#[test]
fn unusable_files_are_named_and_their_causes_follow_once() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_in(dir.path());
    let refused = || ReloadingConfig::load(settings.clone()).expect_err("unusable files");

    let missing = refused();
    assert!(matches!(&missing, TlsError::Read { path, .. } if path == &settings.cert));
    let read = format!("cannot read {}", settings.cert.display());
    assert_eq!(missing.to_string(), read);
    assert!(
        Causes(&missing)
            .to_string()
            .starts_with(&format!("{read}: "))
    );

    let good = fresh_certificates();
    std::fs::write(&settings.cert, "not a certificate").unwrap();
    std::fs::write(&settings.key, &good.key_pem).unwrap();
    let no_certificate = refused();
    assert!(matches!(
        &no_certificate,
        TlsError::Pem { path, problem: PemProblem::NoCertificate } if path == &settings.cert
    ));
    assert_eq!(
        Causes(&no_certificate).to_string(),
        format!(
            "unusable PEM file {}: no CERTIFICATE block found",
            settings.cert.display()
        )
    );

    std::fs::write(&settings.cert, &good.cert_pem).unwrap();
    std::fs::write(&settings.key, "not a key").unwrap();
    let no_key = refused();
    assert!(matches!(
        &no_key,
        TlsError::Pem { path, problem: PemProblem::PrivateKey(_) } if path == &settings.key
    ));
    let text = Causes(&no_key).to_string();
    let expected = format!(
        "unusable PEM file {}: no usable private key: ",
        settings.key.display()
    );
    assert!(text.starts_with(&expected), "{text}");
    assert_eq!(text.matches("no usable private key").count(), 1, "{text}");
}

/// A client CA and client certificates signed by it (EKU clientAuth), like the API server's.
struct ClientPki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl ClientPki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "test client CA");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        Self {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// `(chain PEM, key PEM)` of a client certificate for `name` (CN and DNS SAN).
    fn client(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Handshake and one request with an optional client identity; Err when refused.
async fn call_with_identity(
    server: &TestServer,
    identity: Option<(&str, &str)>,
) -> Result<StatusCode, String> {
    let config = client_config(&server.certs.ca_pem, &[b"http/1.1"], identity);
    let stream = server
        .tls_connect(config)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    // In TLS 1.3 the server's verdict on the client certificate arrives after the client's
    // handshake completes, so a refusal shows up on the first request.
    let response = tokio::time::timeout(STEP, sender.send_request(bare("GET", "/healthz")))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(response.status())
}

/// Call the server presenting a certificate for `name` signed by `pki`.
async fn call_as(server: &TestServer, pki: &ClientPki, name: &str) -> Result<StatusCode, String> {
    let (chain, key) = pki.client(name);
    call_with_identity(server, Some((&chain, &key))).await
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = ClientPki::new();
    let server = TestServer::start_with(Options {
        client_ca: Some(pki.ca_pem.clone()),
        ..Options::default()
    })
    .await;
    assert!(
        call_with_identity(&server, None).await.is_err(),
        "no client certificate → refused"
    );
    assert_eq!(
        call_as(&server, &pki, "kube-apiserver").await,
        Ok(StatusCode::OK)
    );
    let stranger = ClientPki::new();
    assert!(
        call_as(&server, &stranger, "kube-apiserver").await.is_err(),
        "another CA → refused"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn client_name_accepts_only_that_name() {
    let pki = ClientPki::new();
    let server = TestServer::start_with(Options {
        client_ca: Some(pki.ca_pem.clone()),
        client_name: Some("kube-apiserver".to_owned()),
        ..Options::default()
    })
    .await;
    assert_eq!(
        call_as(&server, &pki, "kube-apiserver").await,
        Ok(StatusCode::OK)
    );
    assert!(
        call_as(&server, &pki, "system:anonymous-ish")
            .await
            .is_err(),
        "wrong name → refused"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tls_versions_follow_the_minimum() {
    let tls12_only = |ca: &str| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in pytorchjob_guard::tls::parse_certificates("ca".as_ref(), ca.as_bytes()).unwrap()
        {
            roots.add(cert).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(pytorchjob_guard::tls::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    };
    let default = TestServer::start().await;
    let stream = default
        .tls_connect(tls12_only(&default.certs.ca_pem))
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    default.stop().await.unwrap();

    let strict = TestServer::start_with(Options {
        min_version: MinTlsVersion::Tls13,
        ..Options::default()
    })
    .await;
    assert!(
        strict
            .tls_connect(tls12_only(&strict.certs.ca_pem))
            .await
            .is_err(),
        "TLS 1.2 refused"
    );
    let stream = strict
        .tls_connect(strict.client_config(&[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    strict.stop().await.unwrap();
}

#[tokio::test]
async fn plain_http_on_the_webhook_port_gets_nothing_usable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(
        b"POST /validate HTTP/1.1\r\nHost: pytorchjob-guard\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    // The server answers a non-TLS first byte with at most a TLS alert, then closes.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(STEP, tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is closed, not left hanging");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "no HTTP answer in plaintext: {answer:?}"
    );
    if let Some(&content_type) = answer.first() {
        assert_eq!(content_type, 0x15, "only a TLS alert record: {answer:?}");
    }
    // And the port still serves TLS.
    assert_eq!(
        healthz_over_new_connection(&server, &server.certs.ca_pem.clone()).await,
        Ok(StatusCode::OK)
    );
    server.stop().await.unwrap();
}
