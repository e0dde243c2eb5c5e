//! Development certificates: a throwaway CA and a serving certificate signed by it (rcgen).
//!
//! Used by `pytorchjob-guard certs` and by `serve` when no certificate exists at the default
//! paths, so `cargo run` serves real, verifiable HTTPS out of the box. The CA's private key is
//! never written: a dev CA signs exactly one serving certificate and is then thrown away.
//! In a cluster, certificates come from cert-manager or from `certs` output stored in a Secret.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The Service name the manifests deploy, which the API server dials.
pub const DEFAULT_SERVICE: &str = "pytorchjob-guard";
/// The namespace the manifests deploy into.
pub const DEFAULT_NAMESPACE: &str = "pytorchjob-guard";
/// How long generated certificates are valid. A year, like Kyverno's self-signed CA; `certs`
/// is re-run (or cert-manager renews) well before.
pub const VALIDITY_DAYS: i64 = 365;

/// File names inside a certificate directory, as a `kubernetes.io/tls` Secret mounts them.
pub const CA_FILE: &str = "ca.crt";
/// The serving certificate (leaf first, then the CA).
pub const CERT_FILE: &str = "tls.crt";
/// The serving certificate's private key (PKCS#8 PEM).
pub const KEY_FILE: &str = "tls.key";

/// The `kustomize` patch `certs` writes beside the certificates: the webhook's `caBundle`.
pub const CA_BUNDLE_PATCH_FILE: &str = "ca-bundle.yaml";
/// The ValidatingWebhookConfiguration the manifests deploy.
pub const WEBHOOK_CONFIGURATION: &str = "pytorchjob-guard";
/// The webhook's name inside it (what kubectl prints in denials).
pub const WEBHOOK_NAME: &str = "pytorchjob-guard.kubeflow.org";

/// A failure to generate or write certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters (for example an invalid DNS name).
    #[error("cannot generate certificates")]
    Generate(#[from] rcgen::Error),
    /// The files could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        cause: io::Error,
    },
}

/// A CA and a serving certificate and key signed by it, as PEM.
#[derive(Clone)]
pub struct DevCertificates {
    /// The CA certificate: what the webhook configuration's `caBundle` holds.
    pub ca_pem: String,
    /// The serving certificate chain (leaf, then CA).
    pub cert_pem: String,
    /// The serving private key.
    pub key_pem: String,
}

impl std::fmt::Debug for DevCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCertificates").finish_non_exhaustive()
    }
}

/// The names the API server and local clients use to reach the webhook: the in-cluster Service
/// names (`<svc>.<ns>.svc` is what the API server verifies) and loopback.
pub fn default_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ]
}

/// Generate a CA and a serving certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String]) -> Result<DevCertificates, CertError> {
    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);
    let not_after = now + Duration::days(VALIDITY_DAYS);

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pytorchjob-guard dev CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(names.to_vec())?;
    let common_name = names.first().map_or("pytorchjob-guard", String::as_str);
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.not_before = not_before;
    leaf_params.not_after = not_after;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    Ok(DevCertificates {
        ca_pem: ca_cert.pem(),
        cert_pem: format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// Where [`write()`] put the files.
#[derive(Clone, Debug)]
pub struct WrittenCertificates {
    /// `DIR/ca.crt`.
    pub ca: PathBuf,
    /// `DIR/tls.crt`.
    pub cert: PathBuf,
    /// `DIR/tls.key`.
    pub key: PathBuf,
}

/// Write `ca.crt`, `tls.crt` and `tls.key` into `dir` (created if needed; the key readable by
/// its owner only).
pub fn write(dir: &Path, certs: &DevCertificates) -> Result<WrittenCertificates, CertError> {
    write_files(
        &dir.join(CA_FILE),
        &dir.join(CERT_FILE),
        &dir.join(KEY_FILE),
        certs,
    )
}

/// A failure to write `path`.
fn writing(path: &Path) -> impl FnOnce(io::Error) -> CertError {
    let path = path.to_owned();
    move |cause| CertError::Write { path, cause }
}

/// Write the CA, the serving certificate and the key to the given paths.
pub fn write_files(
    ca: &Path,
    cert: &Path,
    key: &Path,
    certs: &DevCertificates,
) -> Result<WrittenCertificates, CertError> {
    for path in [ca, cert, key] {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(writing(parent))?;
        }
    }
    fs::write(ca, &certs.ca_pem).map_err(writing(ca))?;
    fs::write(cert, &certs.cert_pem).map_err(writing(cert))?;
    write_private(key, &certs.key_pem).map_err(writing(key))?;
    Ok(WrittenCertificates {
        ca: ca.to_owned(),
        cert: cert.to_owned(),
        key: key.to_owned(),
    })
}

/// A strategic-merge patch setting the webhook's `caBundle` to `ca_pem` (kustomize merges
/// `webhooks` by name). `caBundle` stays the last line: the README's renewal step edits it.
pub fn ca_bundle_patch(ca_pem: &str) -> String {
    let encoded = serde_json::to_value(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "# Generated by `pytorchjob-guard certs` with ca.crt, tls.crt and tls.key: the webhook's\n\
         # caBundle is the CA that signed tls.crt. Regenerate, do not edit.\n\
         apiVersion: admissionregistration.k8s.io/v1\n\
         kind: ValidatingWebhookConfiguration\n\
         metadata:\n  name: {WEBHOOK_CONFIGURATION}\n\
         webhooks:\n  - name: {WEBHOOK_NAME}\n    clientConfig:\n      caBundle: {encoded}\n"
    )
}

/// Write the certificates and the `caBundle` patch into `dir`: the inputs of the
/// `self-managed` kustomize overlay (its `secretGenerator` reads the three PEM files).
pub fn write_with_kustomize_inputs(
    dir: &Path,
    certs: &DevCertificates,
) -> Result<WrittenCertificates, CertError> {
    let written = write(dir, certs)?;
    let patch = dir.join(CA_BUNDLE_PATCH_FILE);
    fs::write(&patch, ca_bundle_patch(&certs.ca_pem)).map_err(writing(&patch))?;
    Ok(written)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_failure_names_the_file_and_leaves_the_cause_to_the_source() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").expect("a file");
        let certs = generate(&["localhost".to_owned()]).expect("certificates");
        // A directory cannot be created under a file.
        let error = write(&blocker.join("sub"), &certs).expect_err("not writable");
        let CertError::Write { path, cause } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(path, &blocker.join("sub"));
        assert_eq!(
            error.to_string(),
            format!("cannot write {}", path.display())
        );
        let source = std::error::Error::source(&error).expect("the I/O error is the source");
        assert_eq!(source.to_string(), cause.to_string());
    }
}
