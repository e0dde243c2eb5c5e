//! Record governed reviews (`serve --record DIR`) and replay them under another policy
//! (`pytorchjob-guard replay DIR --policy NEW`), so a policy change is tested against a
//! cluster's real traffic before it ships.
//!
//! A record is one JSON file, `{"recordedAtUnixMillis", "redacted", "review", "response"}`,
//! named so that names sort chronologically. Recording is bounded: reviews larger than
//! `max_file_bytes` are skipped, and the oldest files go once there are `max_files`. Unless
//! asked otherwise, values that may be secret are redacted before anything touches the disk:
//! `env[].value`, values under keys that name secrets (password, token, …), PEM private keys,
//! JWTs, and the `kubectl.kubernetes.io/last-applied-configuration` annotation (a copy of the
//! whole object). Redaction keeps equality within a review — equal values get equal
//! placeholders from a per-review random key — so a replayed diff sees the same changes.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::{self, ReviewError};
use crate::policy::Policy;

/// Default bound on the number of record files kept.
pub const DEFAULT_MAX_FILES: usize = 1000;
/// Default bound on one review's size to be recorded (larger ones are skipped).
pub const DEFAULT_MAX_FILE_BYTES: usize = 1024 * 1024;

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

/// Writes records into a directory, within bounds.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    max_files: usize,
    max_file_bytes: usize,
    redact: bool,
    sequence: AtomicU64,
    files: Mutex<VecDeque<PathBuf>>,
}

impl Recorder {
    /// A recorder into `dir` (created if needed); existing record files count toward the bound.
    pub fn new(
        dir: &Path,
        max_files: usize,
        max_file_bytes: usize,
        redact: bool,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut existing = record_files(dir)?;
        existing.sort();
        Ok(Self {
            dir: dir.to_owned(),
            max_files: max_files.max(1),
            max_file_bytes,
            redact,
            sequence: AtomicU64::new(0),
            files: Mutex::new(existing.into()),
        })
    }

    /// Record one answered review. Returns the file written, or `None` when it was skipped
    /// (over the size bound, or not JSON).
    pub fn record(&self, review: &[u8], response: &[u8]) -> io::Result<Option<PathBuf>> {
        if review.len() > self.max_file_bytes {
            return Ok(None);
        }
        let (Ok(mut review), Ok(response)) = (
            serde_json::from_slice::<Value>(review),
            serde_json::from_slice::<Value>(response),
        ) else {
            return Ok(None);
        };
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
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst);
        let path = self
            .dir
            .join(format!("{millis:013}-{sequence:06}.review.json"));
        let bytes = serde_json::to_vec(&record).map_err(io::Error::other)?;
        std::fs::write(&path, bytes)?;
        let mut files = match self.files.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        files.push_back(path.clone());
        while files.len() > self.max_files {
            if let Some(oldest) = files.pop_front() {
                let _ = std::fs::remove_file(oldest);
            }
        }
        Ok(Some(path))
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
    /// `allowed` or `denied`, as recorded.
    pub before: &'static str,
    /// `allowed` or `denied`, now.
    pub after: &'static str,
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
    #[error("cannot read {path}: {cause}")]
    Read {
        /// What.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// A file is not a record.
    #[error("{path} is not a pytorchjob-guard record: {message}")]
    NotARecord {
        /// What.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

fn verdict_of(response: &Value) -> &'static str {
    if response.pointer("/response/allowed") == Some(&Value::Bool(true)) {
        "allowed"
    } else {
        "denied"
    }
}

fn denied_fields(response: &Value) -> Vec<String> {
    response
        .pointer("/response/status/details/causes")
        .and_then(Value::as_array)
        .map(|causes| {
            causes
                .iter()
                .filter_map(|c| c.get("field").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Re-decide every record in `dir` under `policy`, one row per record, in time order.
pub fn replay(dir: &Path, policy: &Policy) -> Result<Vec<ReplayRow>, ReplayError> {
    let files = record_files(dir).map_err(|cause| ReplayError::Read {
        path: dir.to_owned(),
        cause,
    })?;
    let mut rows = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(&path).map_err(|cause| ReplayError::Read {
            path: path.clone(),
            cause,
        })?;
        let not_a_record = |message: String| ReplayError::NotARecord {
            path: path.clone(),
            message,
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|e| not_a_record(e.to_string()))?;
        let review = serde_json::to_vec(&record.review).map_err(|e| not_a_record(e.to_string()))?;
        let now = admission::review(policy, &review)
            .map_err(|e: ReviewError| not_a_record(e.to_string()))?;
        let now: Value =
            serde_json::from_slice(&now.body).map_err(|e| not_a_record(e.to_string()))?;
        let (then_denied, now_denied) = (denied_fields(&record.response), denied_fields(&now));
        let request = &record.review["request"];
        let text = |pointer: &str| {
            request
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let kind = text("/kind/kind");
        let object = match text("/namespace") {
            "" => format!("{kind} {}", text("/name")),
            namespace => format!("{kind} {namespace}/{}", text("/name")),
        };
        rows.push(ReplayRow {
            record: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            object,
            before: verdict_of(&record.response),
            after: verdict_of(&now),
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
