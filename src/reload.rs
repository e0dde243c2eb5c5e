//! Configuration that follows its files: the polling loop, and the policy store.
//!
//! Kubernetes updates a mounted Secret or ConfigMap by swapping a `..data` symlink, which
//! defeats naive file watches, so [`poll`] re-reads on an interval (like controller-runtime's
//! certwatcher) and asks the [`Reloadable`] to rebuild only when the bytes changed. A rejected
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
    /// Why reading or building failed.
    type Error: std::fmt::Display + Send + 'static;

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
                let text = error.to_string();
                if text != last_rejection {
                    tracing::warn!(%error, what = target.source.what(), "changed files rejected; keeping the last good one");
                    last_rejection = text;
                }
            }
        }
        observe(&outcome);
    }
}

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("cannot read the policy {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("{path}: {cause}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
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
