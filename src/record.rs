//! Record governed reviews (`serve --record DIR`) and replay them under another policy
//! (`pytorchjob-guard replay DIR --policy NEW`), so a policy change is tested against a
//! cluster's real traffic before it ships.
//!
//! A record is one JSON file, `{"recordedAtUnixMillis", "redacted", "review", "response"}`,
//! named so that names sort chronologically. Recording never holds up a review and never grows
//! without bound: [`Recorder::submit`] checks the size bound and enqueues without waiting, into
//! a queue bounded in records ([`QUEUE_RECORDS`]) and bytes ([`QUEUE_BYTES`]); one writer
//! thread drains it into a [`RecordSink`] ([`RecordDir`] in production, which keeps at most
//! `max_files`). What cannot be recorded — too large, queue full, write failed — is counted in
//! `pytorchjob_guard_record_drops_total{reason}`. Unless asked otherwise, values that may be
//! secret are redacted before anything touches the disk: `env[].value`, values under keys that
//! name secrets (password, token, …), PEM private keys, JWTs, and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation (a copy of the whole object).
//! Redaction keeps equality within a review — equal values get equal placeholders from a
//! per-review random key — so a replayed diff sees the same changes.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::admission::{self, Verdict};
use crate::metrics::{Metrics, RecordDropReason};
use crate::policy::{EffectiveMode, Mode, Policy};

/// Default bound on the number of record files kept.
pub const DEFAULT_MAX_FILES: usize = 1000;
/// Default bound on one review's size to be recorded (larger ones are skipped).
pub const DEFAULT_MAX_FILE_BYTES: usize = 1024 * 1024;
/// Records waiting for the writer at most; past it, new ones are dropped (and counted).
pub const QUEUE_RECORDS: usize = 64;
/// Bytes (reviews and responses) waiting for the writer at most: the memory recording may hold.
pub const QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Keys whose scalar values are redacted (matched case-insensitively, as substrings).
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "credential",
    "privatekey",
    "private_key",
    "private-key",
];

/// Annotations that copy the whole object (and so its secrets).
const OBJECT_COPY_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

/// One record file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// When the review was answered.
    pub recorded_at_unix_millis: u64,
    /// Whether secret-looking values were replaced by placeholders.
    pub redacted: bool,
    /// The AdmissionReview the API server sent.
    pub review: Value,
    /// The AdmissionReview the webhook answered.
    pub response: Value,
}

/// Where the writer puts records.
pub trait RecordSink: Send + 'static {
    /// Write one answered review: the review as the API server sent it, and the response.
    fn write(&mut self, review: &[u8], response: &[u8]) -> io::Result<()>;
}

impl<S: RecordSink + ?Sized> RecordSink for Box<S> {
    fn write(&mut self, review: &[u8], response: &[u8]) -> io::Result<()> {
        (**self).write(review, response)
    }
}

/// Writes records as files into a directory, keeping at most `max_files`.
#[derive(Debug)]
pub struct RecordDir {
    dir: PathBuf,
    max_files: usize,
    redact: bool,
    sequence: u64,
    files: VecDeque<PathBuf>,
}

impl RecordDir {
    /// Records into `dir` (created if needed); existing record files count toward the bound.
    pub fn new(dir: &Path, max_files: usize, redact: bool) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            max_files: max_files.max(1),
            redact,
            sequence: 0,
            files: record_files(dir)?.into(),
        })
    }
}

impl RecordSink for RecordDir {
    fn write(&mut self, review: &[u8], response: &[u8]) -> io::Result<()> {
        let mut review: Value = serde_json::from_slice(review)?;
        let response: Value = serde_json::from_slice(response)?;
        if self.redact {
            redact(&mut review);
        }
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let record = Record {
            recorded_at_unix_millis: millis,
            redacted: self.redact,
            review,
            response,
        };
        let path = loop {
            self.sequence += 1;
            let name = format!("{millis:013}-{:06}.review.json", self.sequence);
            let path = self.dir.join(name);
            if !path.exists() {
                break path;
            }
        };
        std::fs::write(&path, serde_json::to_vec(&record)?)?;
        self.files.push_back(path);
        while self.files.len() > self.max_files {
            if let Some(oldest) = self.files.pop_front() {
                let _ = std::fs::remove_file(oldest);
            }
        }
        Ok(())
    }
}

/// What the writer thread is asked to do, in order.
enum Job {
    /// Write one answered review.
    Write(Pending),
    /// Say so once everything queued before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// One review waiting to be written.
struct Pending {
    review: Bytes,
    response: Vec<u8>,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.review.len() + self.response.len()
    }
}

/// Hands answered reviews to one writer thread through a bounded queue: never blocks a review,
/// never holds more than [`QUEUE_RECORDS`] records or [`QUEUE_BYTES`] bytes.
#[derive(Debug)]
pub struct Recorder {
    queue: mpsc::Sender<Job>,
    queued_bytes: Arc<AtomicUsize>,
    max_file_bytes: usize,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Write(pending) => f
                .debug_struct("Write")
                .field("bytes", &pending.bytes())
                .finish(),
            Job::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Recorder {
    /// Start the writer thread over `sink`. Reviews larger than `max_file_bytes` are not
    /// recorded. The thread ends once every `Recorder` is dropped and the queue is written.
    pub fn start(
        sink: impl RecordSink,
        max_file_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let (queue, jobs) = mpsc::channel(QUEUE_RECORDS);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let (writer_bytes, writer_metrics) = (queued_bytes.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("recorder".to_owned())
            .spawn(move || write_all(sink, jobs, &writer_bytes, &writer_metrics))?;
        Ok(Self {
            queue,
            queued_bytes,
            max_file_bytes,
            metrics,
        })
    }

    /// Queue one answered review for writing, without waiting: dropped (and counted) when it
    /// is over the size bound or the queue is full.
    pub fn submit(&self, review: Bytes, response: Vec<u8>) {
        if review.len() > self.max_file_bytes {
            self.metrics.record_dropped(RecordDropReason::too_large);
            return;
        }
        let pending = Pending { review, response };
        let size = pending.bytes();
        let reserved =
            self.queued_bytes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |queued| {
                    (queued + size <= QUEUE_BYTES).then_some(queued + size)
                });
        if reserved.is_err() {
            self.metrics.record_dropped(RecordDropReason::queue_full);
            return;
        }
        if self.queue.try_send(Job::Write(pending)).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::SeqCst);
            self.metrics.record_dropped(RecordDropReason::queue_full);
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::SeqCst)
    }

    /// Completes once every review queued before the call is written (or failed): for a clean
    /// shutdown, which bounds how long it waits.
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.queue.send(Job::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// The writer thread: write every queued job, until the queue closes.
fn write_all(
    mut sink: impl RecordSink,
    mut jobs: mpsc::Receiver<Job>,
    queued_bytes: &AtomicUsize,
    metrics: &Metrics,
) {
    while let Some(job) = jobs.blocking_recv() {
        let pending = match job {
            Job::Write(pending) => pending,
            Job::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        if let Err(error) = sink.write(&pending.review, &pending.response) {
            metrics.record_dropped(RecordDropReason::write_failed);
            tracing::warn!(%error, "cannot record the review");
        }
        queued_bytes.fetch_sub(pending.bytes(), Ordering::SeqCst);
    }
}

/// The record files in `dir` (`*.review.json`), in name (= time) order.
pub fn record_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".review.json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Replace secret-looking values in a review (both objects) by placeholders that are equal
/// exactly when the values are equal.
pub fn redact(review: &mut Value) {
    let key = RandomState::new();
    redact_value(review, None, false, &key);
}

fn placeholder(value: &Value, key: &RandomState) -> Value {
    Value::String(format!(
        "<redacted:{:016x}>",
        key.hash_one(value.to_string())
    ))
}

fn is_secret_key(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| lower.contains(part))
}

fn looks_secret(text: &str) -> bool {
    let pem_key = text.contains("-----BEGIN") && text.contains("PRIVATE KEY");
    let jwt = text.starts_with("eyJ") && text.matches('.').count() == 2 && text.len() > 32;
    pem_key || jwt
}

/// `parent_key`: the key this value sits under; `in_env`: the value is an `env` list item.
fn redact_value(value: &mut Value, parent_key: Option<&str>, in_env: bool, key: &RandomState) {
    match value {
        Value::Object(map) => {
            for (name, child) in map.iter_mut() {
                let env_value = in_env && name == "value";
                let copy_annotation = parent_key == Some("annotations")
                    && OBJECT_COPY_ANNOTATIONS.contains(&name.as_str());
                if (env_value || copy_annotation || is_secret_key(name))
                    && !child.is_object()
                    && !child.is_array()
                {
                    if !child.is_null() {
                        *child = placeholder(child, key);
                    }
                } else {
                    redact_value(child, Some(name), false, key);
                }
            }
        }
        Value::Array(items) => {
            let env = parent_key == Some("env");
            for item in items {
                redact_value(item, parent_key, env, key);
            }
        }
        Value::String(text) if looks_secret(text) => *value = placeholder(value, key),
        _ => {}
    }
}

/// How a recorded decision compares with the decision under another policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRow {
    /// The record file's name.
    pub record: String,
    /// `PyTorchJob ns/name` (or the request kind for other objects).
    pub object: String,
    /// `allowed`, `denied` or `would-deny`, as recorded.
    pub before: &'static str,
    /// `allowed`, `denied` or `would-deny`, now.
    pub after: &'static str,
    /// The mode it is judged in now, and whether the label's lowering was refused.
    pub mode: EffectiveMode,
    /// Paths denied now that were not.
    pub newly_denied: Vec<String>,
    /// Paths denied then that are not now.
    pub no_longer_denied: Vec<String>,
}

impl ReplayRow {
    /// Whether the decision changed (verdict or denied paths).
    pub fn changed(&self) -> bool {
        self.before != self.after
            || !self.newly_denied.is_empty()
            || !self.no_longer_denied.is_empty()
    }
}

/// Why records could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The directory or a file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// What.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is not a record.
    #[error("{path} is not a pytorchjob-guard record")]
    NotARecord {
        /// What.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A record's review is not one the webhook can answer.
    #[error("{path} holds a review that cannot be answered")]
    Unanswerable {
        /// What.
        path: PathBuf,
        /// Why.
        #[source]
        source: admission::ReviewError,
    },
}

/// The recorded answer: allowed or denied, and the fields its causes name.
#[derive(Deserialize)]
struct RecordedResponse {
    response: RecordedAnswer,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordedAnswer {
    allowed: bool,
    #[serde(default)]
    status: RecordedStatus,
    #[serde(default)]
    audit_annotations: std::collections::BTreeMap<String, String>,
}

impl RecordedAnswer {
    /// The recorded verdict: a `warn` or `audit` answer says `would-deny` in its annotations.
    fn verdict(&self) -> Verdict {
        let annotated = self.audit_annotations.get("verdict").map(String::as_str);
        match (self.allowed, annotated) {
            (false, _) => Verdict::Denied,
            (true, Some("would-deny")) => Verdict::WouldDeny,
            (true, _) => Verdict::Allowed,
        }
    }

    /// The fields the rule denied: the causes of a denial, or the `denied-fields` annotation
    /// of a would-be denial.
    fn denied(self) -> Vec<String> {
        if !self.allowed {
            return self
                .status
                .details
                .causes
                .into_iter()
                .map(|c| c.field)
                .collect();
        }
        let listed = self.audit_annotations.get("denied-fields");
        listed
            .map(|list| {
                list.split(", ")
                    .filter(|p| !(p.starts_with("and ") && p.ends_with(" more")))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Default, Deserialize)]
struct RecordedStatus {
    #[serde(default)]
    details: RecordedDetails,
}

#[derive(Default, Deserialize)]
struct RecordedDetails {
    #[serde(default)]
    causes: Vec<RecordedCause>,
}

#[derive(Deserialize)]
struct RecordedCause {
    #[serde(default)]
    field: String,
}

/// Re-decide every record in `dir` under `policy`, one row per record, in time order, each as
/// if its namespace label asked for `label` (`None`: as `/validate`, the policy's mode for the
/// namespace).
pub fn replay(
    dir: &Path,
    policy: &Policy,
    label: Option<Mode>,
) -> Result<Vec<ReplayRow>, ReplayError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ReplayError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let files = record_files(dir).map_err(|source| ReplayError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut rows = Vec::with_capacity(files.len());
    for path in files {
        let bytes = read(&path)?;
        let not_a_record = |source| ReplayError::NotARecord {
            path: path.clone(),
            source,
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(not_a_record)?;
        let then: RecordedResponse =
            serde_json::from_value(record.response).map_err(not_a_record)?;
        let review = serde_json::to_vec(&record.review).map_err(not_a_record)?;
        let now = admission::review_with_label(policy, label, &review)
            .map_err(|source| ReplayError::Unanswerable {
                path: path.clone(),
                source,
            })?
            .decision;
        let before = then.response.verdict().as_str();
        let then_denied = then.response.denied();
        let now_denied: Vec<String> = now
            .outcome
            .forbidden()
            .iter()
            .map(ToString::to_string)
            .collect();
        rows.push(ReplayRow {
            record: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            object: now.summary.subject().to_string(),
            before,
            after: now.verdict().as_str(),
            mode: now.effective_mode,
            newly_denied: now_denied
                .iter()
                .filter(|p| !then_denied.contains(p))
                .cloned()
                .collect(),
            no_longer_denied: then_denied
                .iter()
                .filter(|p| !now_denied.contains(p))
                .cloned()
                .collect(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redaction_hides_secrets_and_keeps_equality() {
        let mut review = json!({"request": {
            "object": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{\"env\":\"x\"}}",
                "team": "ml"}},
              "spec": {"containers": [{"name": "c", "image": "busybox",
                "env": [{"name": "A", "value": "same"}, {"name": "B", "value": "new"},
                        {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                "args": ["--db-password", "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----"]}],
                "apiToken": "t0k3n"}},
            "oldObject": {"spec": {"containers": [{"env": [{"name": "A", "value": "same"}, {"name": "B", "value": "old"}]}]}}
        }});
        redact(&mut review);
        let text = review.to_string();
        for secret in [
            "same",
            "\"new\"",
            "\"old\"",
            "t0k3n",
            "BEGIN RSA",
            "{\\\"spec",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let env = |side: &str, i: usize| {
            review["request"][side]["spec"]["containers"][0]["env"][i]["value"].clone()
        };
        assert_eq!(
            env("object", 0),
            env("oldObject", 0),
            "equal values stay equal"
        );
        assert_ne!(
            env("object", 1),
            env("oldObject", 1),
            "different values stay different"
        );
        let new = &review["request"]["object"];
        assert_eq!(
            new["metadata"]["annotations"]["team"], "ml",
            "ordinary values are kept"
        );
        assert_eq!(new["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(new["spec"]["containers"][0]["args"][0], "--db-password");
        assert_eq!(
            new["spec"]["containers"][0]["env"][2]["valueFrom"]["secretKeyRef"]["key"],
            "k"
        );
    }

    /// A sink that blocks every write until the test lets it go: a stalled disk.
    struct Stalled {
        release: std::sync::mpsc::Receiver<()>,
        written: std::sync::mpsc::Sender<()>,
    }

    impl RecordSink for Stalled {
        fn write(&mut self, _: &[u8], _: &[u8]) -> io::Result<()> {
            self.release
                .recv()
                .map_err(|_| io::Error::other("the test ended"))?;
            let _ = self.written.send(());
            Ok(())
        }
    }

    fn drops(metrics: &Metrics, reason: &str) -> u64 {
        let line = format!("pytorchjob_guard_record_drops_total{{reason=\"{reason}\"}} ");
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()).map(|n| n.parse().unwrap()))
            .unwrap_or(0)
    }

    #[test]
    fn a_stalled_writer_bounds_the_queue_and_counts_what_it_drops() {
        let (release, stalled) = std::sync::mpsc::channel();
        let (written, writes) = std::sync::mpsc::channel();
        let metrics = Arc::new(Metrics::new());
        let sink = Stalled {
            release: stalled,
            written,
        };
        let recorder = Recorder::start(sink, 1024 * 1024, metrics.clone()).unwrap();
        let review = Bytes::from(vec![b' '; 512 * 1024]);
        let submitted = 200;
        for _ in 0..submitted {
            recorder.submit(review.clone(), vec![b'{'; 1024]);
            assert!(
                recorder.queued_bytes() <= QUEUE_BYTES,
                "memory stays bounded"
            );
        }
        let dropped = drops(&metrics, "queue_full");
        // At most the queue's byte budget is held (plus the one job the writer is stuck on).
        let held = submitted - dropped as usize;
        assert!(held <= QUEUE_BYTES / (512 * 1024) + 1, "{held} held");
        assert!(dropped > 0, "the drop counter moves");
        // Too large is its own reason, checked before anything is queued.
        let before = recorder.queued_bytes();
        recorder.submit(Bytes::from(vec![b' '; 2 * 1024 * 1024]), Vec::new());
        assert_eq!(drops(&metrics, "too_large"), 1);
        assert_eq!(recorder.queued_bytes(), before);
        // Released, the writer drains everything it holds, and the queue empties.
        for _ in 0..held {
            release.send(()).unwrap();
        }
        drop(recorder);
        for n in 0..held {
            let wrote = writes.recv_timeout(std::time::Duration::from_secs(10));
            assert!(wrote.is_ok(), "record {n} of {held} written");
        }
        drop(release);
        assert!(
            writes
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_err(),
            "nothing more: the writer ends with the queue"
        );
    }

    /// A clean shutdown waits for what is queued: `flush` completes only once every review
    /// queued before it is written.
    #[tokio::test(start_paused = true)]
    async fn flush_waits_until_what_was_queued_is_written() {
        let (release, stalled) = std::sync::mpsc::channel();
        let (written, writes) = std::sync::mpsc::channel();
        let sink = Stalled {
            release: stalled,
            written,
        };
        let recorder = Recorder::start(sink, 1024, Arc::new(Metrics::new())).unwrap();
        for _ in 0..3 {
            recorder.submit(Bytes::from_static(b"{}"), b"{}".to_vec());
        }
        let stalled = tokio::time::timeout(std::time::Duration::from_secs(60), recorder.flush());
        assert!(stalled.await.is_err(), "nothing is written yet");
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        recorder.flush().await;
        assert_eq!(
            writes.try_iter().count(),
            3,
            "all three written before flush returned"
        );
    }

    #[test]
    fn placeholders_differ_between_reviews() {
        let mut a = json!({"env": [{"value": "x"}]});
        let mut b = a.clone();
        redact(&mut a);
        redact(&mut b);
        assert_ne!(
            a, b,
            "a per-review key: placeholders cannot be linked across records"
        );
    }
}
