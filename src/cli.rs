//! The command line: `serve` (the default), `review`, `check`, `replay`, `certs` and `vap`.
//!
//! Every flag is also an environment variable (`PYTORCHJOB_GUARD_…`, shown in `--help`), the
//! way a Deployment configures it. Each command returns its exit code ([`EXIT_OK`],
//! [`EXIT_DENIED`], [`EXIT_ERROR`]): `review` 0 when a response was produced and 2 on unreadable
//! input; `check` 0 allowed, 1 denied, 2 error; `replay` 0 when no recorded decision would
//! change, 1 when some would, 2 error; `serve` and `certs` 0 on success and 2 on bad
//! configuration. `review`, `check` and `replay` go through [`admission::review_with_label`], the
//! same function `/validate` and `/validate/<mode>` call, so none of them can disagree with the
//! server: their `--mode` is the mode the namespace label asks for (the path it selects), under
//! the same floor.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::admission::{self, Reason, Verdict};
use crate::certs;
use crate::metrics::Metrics;
use crate::policy::{Mode, Policy};
use crate::record::{self, RecordDir, Recorder};
use crate::reload::{self, PolicyStore, Reload};
use crate::server::{self, AppState, Health};
use crate::telemetry::{self, LogFormat};
use crate::tls::{MinTlsVersion, ReloadingConfig, TlsSettings};

/// Exit code: success, or the update is allowed.
pub const EXIT_OK: u8 = 0;
/// Exit code: `check` found a forbidden change.
pub const EXIT_DENIED: u8 = 1;
/// Exit code: unreadable input or bad configuration.
pub const EXIT_ERROR: u8 = 2;

/// Default serving certificate path.
pub const DEFAULT_TLS_CERT: &str = "certs/tls.crt";
/// Default serving key path.
pub const DEFAULT_TLS_KEY: &str = "certs/tls.key";

/// pytorchjob-guard: a validating admission webhook that freezes a PyTorchJob after creation,
/// except metadata.labels, metadata.annotations, spec.activeDeadlineSeconds,
/// spec.ttlSecondsAfterFinished and spec.cleanPodPolicy (and their spec.runPolicy equivalents).
#[derive(Debug, Parser)]
#[command(
    name = "pytorchjob-guard",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s flags, accepted without the subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the webhook over HTTPS (the default command).
    Serve(Box<ServeArgs>),
    /// Answer one AdmissionReview from FILE (or `-`, stdin) on stdout, byte for byte what
    /// `/validate` returns.
    Review(ReviewArgs),
    /// Judge an update from OLD to NEW (YAML or JSON objects) and print the verdict.
    Check(CheckArgs),
    /// Re-decide every review recorded by `serve --record` under a (new) policy and list the
    /// decisions that would change; exit 0 when none does, 1 otherwise.
    Replay(ReplayArgs),
    /// Print the policy as a ValidatingAdmissionPolicy and its bindings (YAML): the same rule
    /// enforced by the API server's CEL, without the webhook.
    Vap(VapArgs),
    /// Write a CA, a serving certificate and key, and the webhook's caBundle patch (the inputs
    /// of manifests/overlays/self-managed).
    Certs(CertsArgs),
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve HTTPS on.
    #[arg(long, env = "PYTORCHJOB_GUARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address to serve `/metrics`, `/healthz` and `/readyz` on, in plain HTTP.
    #[arg(
        long,
        env = "PYTORCHJOB_GUARD_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// PEM certificate chain. When neither it nor the key exists at the defaults, a dev CA and
    /// serving certificate are generated there.
    #[arg(long, env = "PYTORCHJOB_GUARD_TLS_CERT", default_value = DEFAULT_TLS_CERT)]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, env = "PYTORCHJOB_GUARD_TLS_KEY", default_value = DEFAULT_TLS_KEY)]
    pub tls_key: PathBuf,
    /// PEM CA bundle: require client certificates signed by it (mutual TLS).
    #[arg(long, env = "PYTORCHJOB_GUARD_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// With --client-ca: accept only client certificates with this subject common name or DNS
    /// name (e.g. `kube-apiserver`).
    #[arg(long, env = "PYTORCHJOB_GUARD_CLIENT_NAME", requires = "client_ca")]
    pub client_name: Option<String>,
    /// Lowest TLS version accepted.
    #[arg(
        long,
        env = "PYTORCHJOB_GUARD_TLS_MIN_VERSION",
        value_enum,
        default_value = "1.2"
    )]
    pub tls_min_version: MinTlsVersion,
    /// Policy file (YAML or JSON); the built-in rule when absent. Reloaded when it changes.
    #[arg(long, env = "PYTORCHJOB_GUARD_POLICY")]
    pub policy: Option<PathBuf>,
    /// How often the policy file is checked for changes.
    #[arg(long, env = "PYTORCHJOB_GUARD_POLICY_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub policy_reload_interval: Duration,
    /// Record every governed review and its answer as a JSON file in this directory (off by
    /// default), for `replay`.
    #[arg(long, env = "PYTORCHJOB_GUARD_RECORD")]
    pub record: Option<PathBuf>,
    /// Keep at most this many record files (the oldest go first).
    #[arg(long, env = "PYTORCHJOB_GUARD_RECORD_MAX_FILES", default_value_t = record::DEFAULT_MAX_FILES)]
    pub record_max_files: usize,
    /// Skip reviews larger than this many bytes when recording.
    #[arg(long, env = "PYTORCHJOB_GUARD_RECORD_MAX_FILE_BYTES", default_value_t = record::DEFAULT_MAX_FILE_BYTES)]
    pub record_max_file_bytes: usize,
    /// Record env values and other secret-looking values as they are (redacted by default).
    #[arg(long, env = "PYTORCHJOB_GUARD_RECORD_UNREDACTED", requires = "record")]
    pub record_unredacted: bool,
    /// How often the certificate files are checked for changes (e.g. `10s`, `500ms`).
    #[arg(long, env = "PYTORCHJOB_GUARD_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// After SIGTERM, how long to keep serving while /readyz reports unready, so endpoints
    /// are updated before the listener closes.
    #[arg(long, env = "PYTORCHJOB_GUARD_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Bytes of request bodies held at once, over every connection and HTTP/2 stream; a
    /// request that does not fit gets 503 with `Retry-After`. Size it with the memory limit
    /// (see `server::PEAK_MEMORY_PER_BODY_BYTE`); at least 8 MiB, so the largest body
    /// (`server::MAX_BODY_BYTES`) fits. A number of bytes, or with `Ki`, `Mi` or `Gi` as in
    /// Kubernetes quantities (`8Mi`).
    #[arg(long, env = "PYTORCHJOB_GUARD_MAX_IN_FLIGHT_BYTES", default_value_t = server::MAX_IN_FLIGHT_BYTES, value_parser = parse_in_flight_bytes)]
    pub max_in_flight_bytes: usize,
    /// Log format.
    #[arg(
        long,
        env = "PYTORCHJOB_GUARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `pytorchjob_guard=debug`); RUST_LOG wins when set.
    #[arg(long, env = "PYTORCHJOB_GUARD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// A policy file and a mode for the offline commands.
#[derive(Debug, Args)]
pub struct PolicyArg {
    /// The policy.
    #[command(flatten)]
    pub file: PolicyFile,
    /// The mode the namespace label asks for, as the path `/validate/<mode>` it selects: it
    /// applies when stricter than the policy's mode for the object's namespace, and when weaker
    /// only if the policy's `namespaceLabel.mayLowerTo` lists it. E.g. `--mode enforce` to see
    /// what enforce would deny. Absent: the policy's mode for the namespace (`/validate`).
    #[arg(long, env = "PYTORCHJOB_GUARD_MODE", value_enum)]
    pub mode: Option<Mode>,
}

impl PolicyArg {
    fn load(&self) -> anyhow::Result<Policy> {
        self.file.load()
    }
}

/// The `--policy` flag alone.
#[derive(Debug, Args)]
pub struct PolicyFile {
    /// Policy file (YAML or JSON); the built-in rule when absent.
    #[arg(long, env = "PYTORCHJOB_GUARD_POLICY")]
    pub policy: Option<PathBuf>,
}

impl PolicyFile {
    fn load(&self) -> anyhow::Result<Policy> {
        Ok(match &self.policy {
            Some(path) => PolicyStore::from_file(path)?.current().as_ref().clone(),
            None => Policy::default(),
        })
    }
}

/// Flags of `vap`: the policy alone, since its bindings cover every namespace and label value
/// (no `--mode`).
#[derive(Debug, Args)]
pub struct VapArgs {
    /// The policy to compile.
    #[command(flatten)]
    pub policy: PolicyFile,
}

/// Flags of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The directory `serve --record` wrote.
    pub dir: PathBuf,
    /// The policy to replay under.
    #[command(flatten)]
    pub policy: PolicyArg,
}

/// Flags of `review`.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// The policy to decide under.
    #[command(flatten)]
    pub policy: PolicyArg,
    /// The AdmissionReview JSON file; `-` or nothing reads stdin.
    #[arg(default_value = "-")]
    pub file: PathBuf,
}

/// Flags of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy to decide under.
    #[command(flatten)]
    pub policy: PolicyArg,
    /// The object before the update (YAML or JSON).
    #[arg(long, env = "PYTORCHJOB_GUARD_CHECK_OLD")]
    pub old: PathBuf,
    /// The object after the update (YAML or JSON).
    #[arg(long, env = "PYTORCHJOB_GUARD_CHECK_NEW")]
    pub new: PathBuf,
}

/// Flags of `certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, env = "PYTORCHJOB_GUARD_CERTS_OUT")]
    pub out: PathBuf,
    /// Extra DNS names or IP addresses for the serving certificate.
    #[arg(
        long = "dns",
        env = "PYTORCHJOB_GUARD_CERTS_DNS",
        value_delimiter = ','
    )]
    pub dns: Vec<String>,
    /// Namespace of the webhook Service (for the `<service>.<namespace>.svc` names).
    #[arg(long, env = "PYTORCHJOB_GUARD_CERTS_NAMESPACE", default_value = certs::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Name of the webhook Service.
    #[arg(long, env = "PYTORCHJOB_GUARD_CERTS_SERVICE", default_value = certs::DEFAULT_SERVICE)]
    pub service: String,
}

/// Parse `10s`, `500ms`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("invalid duration unit in {text:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// A byte count for `--max-in-flight-bytes`: `8388608`, `8Mi`, `16384Ki`, `1Gi`; large enough
/// that the largest body accepted ([`server::MAX_BODY_BYTES`]) fits in the share large bodies
/// may use (all but 1/[`server::SMALL_SHARE`]).
fn parse_in_flight_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = [("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .into_iter()
        .find_map(|(suffix, unit)| Some((text.strip_suffix(suffix)?, unit)))
        .unwrap_or((text, 1));
    let bytes = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("invalid byte count {text:?}: expected e.g. 24Mi or 25165824"))?;
    if bytes - bytes / server::SMALL_SHARE < server::MAX_BODY_BYTES {
        return Err(format!(
            "{text} is too small: the largest request body ({} bytes) must fit in all but 1/{} of it, which small bodies keep",
            server::MAX_BODY_BYTES,
            server::SMALL_SHARE
        ));
    }
    Ok(bytes)
}

/// Run the parsed command line; the process exits with the returned code.
pub fn run(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Review(args)) => review(&args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Certs(args)) => write_certs(&args),
        Some(Command::Replay(args)) => replay(&args),
        Some(Command::Vap(args)) => vap(&args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("pytorchjob-guard: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let logging = telemetry::init(args.log_format, &args.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_async(args, &logging))?;
    Ok(EXIT_OK)
}

/// Generate dev certificates at the default paths when neither file exists there.
fn ensure_dev_certificates(args: &ServeArgs) -> anyhow::Result<()> {
    let at_defaults =
        args.tls_cert == Path::new(DEFAULT_TLS_CERT) && args.tls_key == Path::new(DEFAULT_TLS_KEY);
    if !at_defaults || args.tls_cert.exists() || args.tls_key.exists() {
        return Ok(());
    }
    let names = certs::default_names(certs::DEFAULT_SERVICE, certs::DEFAULT_NAMESPACE);
    let generated = certs::generate(&names)?;
    let ca = args.tls_cert.with_file_name(certs::CA_FILE);
    let written = certs::write_files(&ca, &args.tls_cert, &args.tls_key, &generated)?;
    tracing::info!(
        ca = %written.ca.display(),
        cert = %written.cert.display(),
        names = ?names,
        "generated a development CA and serving certificate; trust the CA to call the webhook (curl --cacert {})",
        written.ca.display()
    );
    Ok(())
}

async fn serve_async(args: ServeArgs, logging: &telemetry::Logging) -> anyhow::Result<()> {
    // The policy first: a server must not start on a policy it misread.
    let policy_store = Arc::new(match &args.policy {
        Some(path) => PolicyStore::from_file(path)?,
        None => PolicyStore::fixed(Policy::default()),
    });
    ensure_dev_certificates(&args)?;
    let settings = TlsSettings {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        client_ca: args.client_ca.clone(),
        client_name: args.client_name.clone(),
        min_version: args.tls_min_version,
    };
    let tls =
        Arc::new(ReloadingConfig::load(settings).context("cannot load the serving certificate")?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", args.metrics_listen))?;
    let metrics = Arc::new(Metrics::new());
    metrics.count_log_drops_from(logging.dropped_counter());
    if let Some(not_after) = tls.not_after() {
        metrics.set_certificate_expiry(not_after);
    }
    let recorder = match &args.record {
        Some(dir) => {
            let sink = RecordDir::new(dir, args.record_max_files, !args.record_unredacted)
                .with_context(|| format!("cannot record into {}", dir.display()))?;
            let recorder = Recorder::start(sink, args.record_max_file_bytes, metrics.clone())
                .context("cannot start the record writer")?;
            Some(Arc::new(recorder))
        }
        None => None,
    };
    let mut state = AppState::with_policy_store(
        policy_store.clone(),
        Arc::new(Health::default()),
        metrics.clone(),
    );
    if let Some(recorder) = recorder.clone() {
        state = state.with_recorder(recorder);
    }
    state = state.with_limits(server::Limits {
        max_in_flight_bytes: args.max_in_flight_bytes,
        ..server::Limits::default()
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    let (observer, watched) = (metrics.clone(), tls.clone());
    tokio::spawn(reload::poll(
        tls.clone(),
        args.cert_reload_interval,
        move |outcome| {
            let success = matches!(outcome, Reload::Reloaded);
            observer.observe_certificate(success, watched.not_after());
        },
        stopped(),
    ));
    if args.policy.is_some() {
        let observer = metrics.clone();
        tokio::spawn(reload::poll(
            policy_store.clone(),
            args.policy_reload_interval,
            move |outcome| observer.observe_policy(matches!(outcome, Reload::Reloaded)),
            stopped(),
        ));
    }
    let metrics_server = tokio::spawn(server::serve_metrics(
        metrics_listener,
        state.clone(),
        stopped(),
    ));
    tracing::info!(
        listen = %listener.local_addr()?,
        metrics = %args.metrics_listen,
        cert = %args.tls_cert.display(),
        mutual_tls = args.client_ca.is_some(),
        "serving the webhook on https://{}/validate",
        listener.local_addr()?
    );
    server::serve(
        listener,
        tls,
        state,
        server::shutdown_signal(),
        args.shutdown_delay,
    )
    .await?;
    // Records still queued are written before the process exits, within the drain bound.
    if let Some(recorder) = &recorder
        && tokio::time::timeout(server::DRAIN_TIMEOUT, recorder.flush())
            .await
            .is_err()
    {
        tracing::warn!(
            "queued records were not written within {:?}",
            server::DRAIN_TIMEOUT
        );
    }
    drop(stop_tx);
    match metrics_server.await {
        Ok(result) => result.context("metrics listener failed")?,
        Err(join_error) => tracing::error!(%join_error, "metrics listener task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
        Ok(bytes)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

fn review(args: &ReviewArgs) -> anyhow::Result<u8> {
    let body = read_input(&args.file)?;
    let reviewed = admission::review_with_label(&args.policy.load()?, args.policy.mode, &body)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&reviewed.body)?;
    stdout.write_all(b"\n")?;
    Ok(EXIT_OK)
}

fn vap(args: &VapArgs) -> anyhow::Result<u8> {
    let policy = args.policy.load()?;
    let generated = crate::vap::generate(&policy).context("cannot express the policy in CEL")?;
    let text = crate::vap::to_yaml(&generated)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(EXIT_OK)
}

/// Read a Kubernetes object from YAML or JSON.
fn read_object(path: &Path) -> anyhow::Result<Value> {
    let bytes = read_input(path)?;
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(_) => serde_yaml_ng::from_slice(&bytes)
            .with_context(|| format!("{} is neither JSON nor YAML", path.display()))?,
    };
    if !value.is_object() {
        bail!("{} does not hold an object", path.display());
    }
    Ok(value)
}

fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let old = read_object(&args.old)?;
    let new = read_object(&args.new)?;
    let field = |name: &str| {
        new.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if kind.is_empty() || api_version.is_empty() {
        bail!("{} has no apiVersion and kind", args.new.display());
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let metadata = |key: &str| {
        new.pointer(&format!("/metadata/{key}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    // The review the API server would send for this update, through the same path as /validate.
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "pytorchjob-guard-check",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": metadata("name"),
            "namespace": metadata("namespace"),
            "operation": "UPDATE",
            "userInfo": {"username": "pytorchjob-guard-check"},
            "object": new,
            "oldObject": old,
        }
    });
    let policy = args.policy.load()?;
    let review = serde_json::to_vec(&review)?;
    let decision = admission::review_with_label(&policy, args.policy.mode, &review)?.decision;
    let outcome = &decision.outcome;
    let mut out = std::io::stdout().lock();
    let message = || admission::response::message(&decision, &policy);
    if let Some(refused) = decision.refused_lowering() {
        writeln!(
            out,
            "warning: {}",
            admission::response::refused_lowering_warning(refused)
        )?;
    }
    match decision.verdict() {
        Verdict::Denied => {
            writeln!(out, "denied: {}", message())?;
            for path in outcome.forbidden() {
                writeln!(out, "  {path}")?;
            }
            Ok(EXIT_DENIED)
        }
        Verdict::WouldDeny => {
            let mode = decision.mode();
            writeln!(
                out,
                "allowed in {mode} mode; enforce would deny: {}",
                message()
            )?;
            for path in outcome.forbidden() {
                writeln!(out, "  {path}")?;
            }
            Ok(EXIT_OK)
        }
        Verdict::Allowed => {
            let why = match decision.reason() {
                Reason::NotGoverned => format!("{kind} is not governed by the policy"),
                Reason::BeingDeleted => "the object is being deleted".to_owned(),
                _ if outcome.changed().is_empty() => "nothing that is compared changed".to_owned(),
                _ => "only updatable fields changed".to_owned(),
            };
            writeln!(out, "allowed: {why}")?;
            for path in outcome.changed() {
                writeln!(out, "  {path}")?;
            }
            Ok(EXIT_OK)
        }
    }
}

fn write_certs(args: &CertsArgs) -> anyhow::Result<u8> {
    let mut names = certs::default_names(&args.service, &args.namespace);
    for name in &args.dns {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let generated = certs::generate(&names)?;
    let written = certs::write_with_kustomize_inputs(&args.out, &generated)?;
    println!(
        "wrote {}, {}, {} and {} for {}",
        written.ca.display(),
        written.cert.display(),
        written.key.display(),
        args.out.join(certs::CA_BUNDLE_PATCH_FILE).display(),
        names.join(", ")
    );
    Ok(EXIT_OK)
}

fn replay(args: &ReplayArgs) -> anyhow::Result<u8> {
    let policy = args.policy.load()?;
    let rows = record::replay(&args.dir, &policy, args.policy.mode)?;
    let changed: Vec<&record::ReplayRow> = rows.iter().filter(|r| r.changed()).collect();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| record | object | recorded | now | mode | newly denied | no longer denied |"
    )?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |")?;
    for row in &changed {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.record,
            row.object,
            row.before,
            row.after,
            row.mode,
            row.newly_denied.join(", "),
            row.no_longer_denied.join(", ")
        )?;
    }
    writeln!(
        out,
        "\n{} of {} recorded decisions would change",
        changed.len(),
        rows.len()
    )?;
    Ok(if changed.is_empty() {
        EXIT_OK
    } else {
        EXIT_DENIED
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn in_flight_bytes_parse_with_binary_suffixes_and_fit_the_largest_body() {
        assert_eq!(parse_in_flight_bytes("24Mi"), Ok(24 << 20));
        assert_eq!(parse_in_flight_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_in_flight_bytes("16384Ki"), Ok(16 << 20));
        assert_eq!(parse_in_flight_bytes("8388608"), Ok(8 << 20));
        // 7 MiB is the largest body, but 1/8 of the budget is kept for small ones.
        let seven = server::MAX_BODY_BYTES.to_string();
        assert!(
            parse_in_flight_bytes(&seven)
                .unwrap_err()
                .contains("largest request body")
        );
        assert!(parse_in_flight_bytes("1Mi").is_err());
        for bad in [
            "24MB",
            "24 Mi",
            "-1",
            "Mi",
            "99999999999999999999Gi",
            "1.5Mi",
        ] {
            assert!(parse_in_flight_bytes(bad).is_err(), "{bad}");
        }
        let default = Cli::try_parse_from(["pytorchjob-guard"]).unwrap();
        assert_eq!(
            default.serve.max_in_flight_bytes,
            server::MAX_IN_FLIGHT_BYTES
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
