//! TLS: PEM files to a rustls `ServerConfig`, and a config that reloads when the files change.
//!
//! ring is the only crypto provider compiled in ([`crypto_provider`]); every config is built
//! with it explicitly, so no process-wide default has to be installed. ALPN offers `h2` and
//! `http/1.1` — the API server always speaks HTTP/1.1 to webhooks, other clients may use h2.
//!
//! [`ReloadingConfig`] follows controller-runtime's certwatcher: poll the files (Kubernetes
//! updates a mounted Secret by swapping a `..data` symlink, which defeats naive file watches),
//! build a new config when their bytes change, and keep the last good one when the new files do
//! not parse or do not match. New handshakes take the current config; open connections keep
//! theirs. Touches the filesystem only through the paths it is given.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::reload::{Reloading, Source};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

/// The lowest TLS version the server accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MinTlsVersion {
    /// TLS 1.2 and 1.3 (what every supported API server speaks).
    #[default]
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
}

/// Where the server's certificate material lives and how strict the handshake is.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: accept only client certificates whose subject common name or a DNS
    /// subject alternative name is this (Gatekeeper's `--client-cn-name kube-apiserver`).
    pub client_name: Option<String>,
    /// The lowest protocol version accepted.
    pub min_version: MinTlsVersion,
}

/// Why certificate material could not be turned into a server config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        cause: io::Error,
    },
    /// A PEM file held no usable item of the expected type.
    #[error("unusable PEM file {path}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        problem: PemProblem,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key {key} does not match the certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls rejected the material.
    #[error("invalid TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle could not be used.
    #[error("invalid client CA {path}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        problem: ClientCaProblem,
    },
}

/// What is wrong with a PEM file ([`TlsError::Pem`]).
#[derive(Debug, thiserror::Error)]
pub enum PemProblem {
    /// A block of the certificate chain does not parse.
    #[error("not a PEM certificate chain")]
    Certificates(#[source] pem::Error),
    /// The file holds no certificate at all.
    #[error("no CERTIFICATE block found")]
    NoCertificate,
    /// The file holds no private key that parses.
    #[error("no usable private key")]
    PrivateKey(#[source] pem::Error),
}

/// What is wrong with a client CA bundle ([`TlsError::ClientCa`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientCaProblem {
    /// A certificate in it cannot be a trust anchor.
    #[error("a certificate cannot be a trust anchor")]
    Anchor(#[source] rustls::Error),
    /// No client certificate verifier can be built from it.
    #[error("cannot verify client certificates with it")]
    Verifier(#[source] VerifierBuilderError),
}

/// The one crypto provider: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN protocols offered, in preference order. `http/1.1` is always offered: the API server
/// speaks only HTTP/1.1 to webhooks.
pub const ALPN_PROTOCOLS: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The bytes a config was built from: when they change, the config is rebuilt.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|cause| TlsError::Read {
        path: path.to_owned(),
        cause,
    })
}

impl Material {
    fn read(settings: &TlsSettings) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&settings.cert)?,
            key: read(&settings.key)?,
            client_ca: settings.client_ca.as_deref().map(read).transpose()?,
        })
    }
}

/// Parse every certificate in a PEM document.
pub fn parse_certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |problem| TlsError::Pem {
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(PemProblem::Certificates(e)))?;
    if certs.is_empty() {
        return Err(pem_error(PemProblem::NoCertificate));
    }
    Ok(certs)
}

fn build(settings: &TlsSettings, material: &Material) -> Result<ServerConfig, TlsError> {
    let provider = crypto_provider();
    let chain = parse_certificates(&settings.cert, &material.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&material.key).map_err(|e| TlsError::Pem {
        path: settings.key.clone(),
        problem: PemProblem::PrivateKey(e),
    })?;
    let signing_key = provider.key_provider.load_private_key(key)?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    if certified.keys_match().is_err() {
        return Err(TlsError::KeyMismatch {
            cert: settings.cert.clone(),
            key: settings.key.clone(),
        });
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        MinTlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let builder = match (&settings.client_ca, &material.client_ca) {
        (Some(path), Some(pem)) => {
            let client_ca_error = |problem| TlsError::ClientCa {
                path: path.clone(),
                problem,
            };
            let mut roots = RootCertStore::empty();
            for ca in parse_certificates(path, pem)? {
                roots
                    .add(ca)
                    .map_err(|e| client_ca_error(ClientCaProblem::Anchor(e)))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| client_ca_error(ClientCaProblem::Verifier(e)))?;
            match &settings.client_name {
                Some(name) => builder.with_client_cert_verifier(Arc::new(NamedClientVerifier {
                    inner: verifier,
                    name: name.clone(),
                })),
                None => builder.with_client_cert_verifier(verifier),
            }
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Verifies client certificates with the CA, then accepts only one name.
#[derive(Debug)]
struct NamedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    name: String,
}

impl ClientCertVerifier for NamedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if certificate_names(end_entity).contains(&self.name) {
            Ok(verified)
        } else {
            tracing::debug!(expected = %self.name, "client certificate has another name");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The subject common names and DNS subject alternative names of a certificate.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// When a certificate stops being valid, in Unix seconds (None if it cannot be parsed).
pub fn certificate_not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// Load the settings' files once into a server config.
pub fn load(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    build(settings, &Material::read(settings)?)
}

impl Source for TlsSettings {
    type Material = Material;
    type Value = ServerConfig;
    type Error = TlsError;

    fn read(&self) -> Result<Material, TlsError> {
        Material::read(self)
    }

    fn build(&self, material: &Material) -> Result<ServerConfig, TlsError> {
        build(self, material)
    }

    fn what(&self) -> &'static str {
        "serving certificate"
    }
}

/// The serving certificate's expiry (Unix seconds), from the leaf of a PEM chain.
fn leaf_not_after(settings: &TlsSettings, material: &Material) -> Option<i64> {
    let chain = parse_certificates(&settings.cert, &material.cert).ok()?;
    certificate_not_after(chain.first()?)
}

/// A server config rebuilt from its files whenever they change, keeping the last good one.
/// New handshakes take [`Reloading::current`]; open connections keep theirs.
pub type ReloadingConfig = Reloading<TlsSettings>;

/// What a reload attempt did.
pub type Reload = crate::reload::Reload<TlsError>;

impl Reloading<TlsSettings> {
    /// When the certificate being served expires (Unix seconds).
    pub fn not_after(&self) -> Option<i64> {
        self.with_material(|material| leaf_not_after(self.source(), material))
    }

    /// The settings the config is loaded from.
    pub fn settings(&self) -> &TlsSettings {
        self.source()
    }
}
