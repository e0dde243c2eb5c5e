//! Configuration that follows its files: the polling loop, and the policy store.
//!
//! Kubernetes updates a mounted Secret or ConfigMap by swapping a `..data` symlink, which
//! defeats naive file watches, so [`poll`] re-reads on an interval (like controller-runtime's
//! certwatcher) and asks the [`Source`] to rebuild only when the bytes changed. A rejected
//! file never replaces the last good value: the server keeps running on what it had, logs the
//! problem once, and counts it. [`PolicyStore`] is the policy file behind `--policy`; the TLS
//! material is [`crate::tls::ReloadingConfig`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::policy::Policy;
use crate::policy::file::{self, PolicyFileError};

/// What a reload attempt did.
#[derive(Debug)]
pub enum Reload<E> {
    /// The files are unchanged.
    Unchanged,
    /// New files were loaded and are in use.
    Reloaded,
    /// The files changed but are unusable; the last good value stays in use.
    Rejected(E),
}

/// Something rebuilt from files: how to read its raw material and build the value from it.
pub trait Source: Send + Sync + 'static {
    /// What is read (file bytes); a rebuild happens only when it changes.
    type Material: PartialEq + Send;
    /// What is built from it and served.
    type Value: Send + Sync;
    /// Why reading or building failed; its causes are its [`std::error::Error::source`]
    /// chain, logged with it ([`Causes`]).
    type Error: std::error::Error + Send + 'static;

    /// Read the material.
    fn read(&self) -> Result<Self::Material, Self::Error>;
    /// Build the value from material.
    fn build(&self, material: &Self::Material) -> Result<Self::Value, Self::Error>;
    /// What this is, for logs: `serving certificate`, `policy`.
    fn what(&self) -> &'static str;
}

/// A value built from a [`Source`], rebuilt when its material changes, keeping the last good.
#[derive(Debug)]
pub struct Reloading<S: Source> {
    source: S,
    current: RwLock<Arc<S::Value>>,
    loaded: Mutex<S::Material>,
}

impl<S: Source> Reloading<S> {
    /// Read and build once; fails (so the server refuses to start) when that fails.
    pub fn load(source: S) -> Result<Self, S::Error> {
        let material = source.read()?;
        let value = source.build(&material)?;
        Ok(Self {
            source,
            current: RwLock::new(Arc::new(value)),
            loaded: Mutex::new(material),
        })
    }

    /// The value in use.
    pub fn current(&self) -> Arc<S::Value> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Where the value comes from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Look at the material the value in use was built from.
    pub fn with_material<R>(&self, look: impl FnOnce(&S::Material) -> R) -> R {
        match self.loaded.lock() {
            Ok(guard) => look(&guard),
            Err(poisoned) => look(&poisoned.into_inner()),
        }
    }

    /// Re-read the material; rebuild and swap the value if it changed and is good.
    pub fn reload(&self) -> Reload<S::Error> {
        let material = match self.source.read() {
            Ok(material) => material,
            Err(error) => return Reload::Rejected(error),
        };
        let mut loaded = match self.loaded.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *loaded == material {
            return Reload::Unchanged;
        }
        match self.source.build(&material) {
            Ok(value) => {
                let value = Arc::new(value);
                match self.current.write() {
                    Ok(mut guard) => *guard = value,
                    Err(poisoned) => *poisoned.into_inner() = value,
                }
                *loaded = material;
                Reload::Reloaded
            }
            Err(error) => Reload::Rejected(error),
        }
    }
}

/// Poll `target` every `interval` until `shutdown`, logging each change (a rejection once per
/// distinct error) and passing every attempt that found changed files to `observe`.
pub async fn poll<S: Source>(
    target: Arc<Reloading<S>>,
    interval: Duration,
    observe: impl Fn(&Reload<S::Error>) + Send,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    tokio::pin!(shutdown);
    let mut last_rejection = String::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let this = target.clone();
        let outcome = match tokio::task::spawn_blocking(move || this.reload()).await {
            Ok(outcome) => outcome,
            Err(join_error) => {
                tracing::error!(%join_error, what = target.source.what(), "reload task failed");
                continue;
            }
        };
        match &outcome {
            Reload::Unchanged => continue,
            Reload::Reloaded => {
                last_rejection.clear();
                tracing::info!(what = target.source.what(), "reloaded from changed files");
            }
            Reload::Rejected(error) => {
                let text = Causes(error).to_string();
                if text != last_rejection {
                    tracing::warn!(error = %text, what = target.source.what(), "changed files rejected; keeping the last good one");
                    last_rejection = text;
                }
            }
        }
        observe(&outcome);
    }
}

/// An error and its causes joined by `: `, the way `{:#}` of an `anyhow::Error` prints it:
/// what a log line needs, since an error's own message leaves its cause to the source.
#[derive(Debug)]
pub struct Causes<'a, E: ?Sized>(pub &'a E);

impl<E: std::error::Error + ?Sized> std::fmt::Display for Causes<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("cannot read the policy {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        cause: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("invalid policy {path}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        #[source]
        cause: PolicyFileError,
    },
}

/// Where the policy comes from: built in, or a file reloaded when it changes.
#[derive(Debug)]
pub enum PolicySource {
    /// A fixed policy (the built-in one, or one built in code).
    Fixed(Policy),
    /// A policy file (`--policy`).
    File(PathBuf),
}

impl Source for PolicySource {
    type Material = Vec<u8>;
    type Value = Policy;
    type Error = PolicyLoadError;

    fn read(&self) -> Result<Vec<u8>, PolicyLoadError> {
        match self {
            PolicySource::Fixed(_) => Ok(Vec::new()),
            PolicySource::File(path) => {
                std::fs::read(path).map_err(|cause| PolicyLoadError::Read {
                    path: path.clone(),
                    cause,
                })
            }
        }
    }

    fn build(&self, bytes: &Vec<u8>) -> Result<Policy, PolicyLoadError> {
        match self {
            PolicySource::Fixed(policy) => Ok(policy.clone()),
            PolicySource::File(path) => {
                file::parse(&String::from_utf8_lossy(bytes)).map_err(|cause| {
                    PolicyLoadError::Invalid {
                        path: path.clone(),
                        cause,
                    }
                })
            }
        }
    }

    fn what(&self) -> &'static str {
        "policy"
    }
}

/// The policy in force.
pub type PolicyStore = Reloading<PolicySource>;

impl PolicyStore {
    /// A store that always holds `policy`.
    pub fn fixed(policy: Policy) -> Self {
        Self {
            source: PolicySource::Fixed(policy.clone()),
            current: RwLock::new(Arc::new(policy)),
            loaded: Mutex::new(Vec::new()),
        }
    }

    /// Load a policy file; fails when it is unusable.
    pub fn from_file(path: &Path) -> Result<Self, PolicyLoadError> {
        Self::load(PolicySource::File(path.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_policy_names_the_file_and_its_causes_follow_once() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "kinds: [").expect("a file");
        let error = PolicyStore::from_file(&path).expect_err("not YAML");
        assert!(matches!(
            &error,
            PolicyLoadError::Invalid {
                cause: PolicyFileError::Syntax { .. },
                ..
            }
        ));
        assert_eq!(
            error.to_string(),
            format!("invalid policy {}", path.display())
        );
        let text = Causes(&error).to_string();
        assert!(
            text.starts_with(&format!(
                "invalid policy {}: malformed policy document: did not find expected node content at line 2",
                path.display()
            )),
            "{text}"
        );
        assert_eq!(text.matches("did not find").count(), 1, "{text}");
    }

    #[test]
    fn an_unreadable_policy_leaves_the_io_error_to_the_source() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("missing.yaml");
        let error = PolicyStore::from_file(&path).expect_err("no such file");
        let PolicyLoadError::Read { cause, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(
            Causes(&error).to_string(),
            format!("cannot read the policy {}: {cause}", path.display())
        );
    }
}
