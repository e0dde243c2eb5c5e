//! pytorchjob-guard: a validating admission webhook that freezes a Kubeflow training job
//! (PyTorchJob by default; every training-operator kind with a preset) after creation, except
//! the fields its update API lets change.
//!
//! The module map, in dependency order (each module only uses the ones above it):
//!
//! | module | what lives there | may touch |
//! | --- | --- | --- |
//! | [`json`] | JSON text at the byte level, with its bounds: strings escaped as serde_json escapes them, the body's structural index ([`json::Index`], at most [`json::MAX_DEPTH`] deep), raw member readers ([`json::RawObject`]) | nothing (pure) |
//! | [`policy`] | the decision core: [`policy::Policy`], the production raw diff ([`policy::diff`]) over the body's index, the policy file, the rollout mode, [`policy::FieldPath`] | [`json`] (pure) |
//! | [`admission`] | AdmissionReview bytes in, response review bytes out ([`admission::review`]): the one path behind every front door | nothing (pure) |
//! | [`certs`] | rcgen dev CA and serving certificate | files it is told to write |
//! | [`telemetry`] | the `tracing` subscriber | stderr |
//! | [`metrics`] | Prometheus registry (passed in, no globals), bounded label sets | nothing |
//! | [`record`] | `serve --record` (bounded, redacted) and `replay` under another policy | the record directory |
//! | [`reload`] | the polling reload loop, `Reloading<Source>` keeping the last good value, the policy store | the files it is given |
//! | [`tls`] | PEM → rustls `ServerConfig` (ring, ALPN h2 + http/1.1, client CA), reload keeping the last good | the certificate files |
//! | [`server`] | axum routes and handlers, bounded bodies, one error type → 4xx, health, [`server::Limits`]; its `listener` runs HTTP/1.1 + HTTP/2 over TLS with bounded connections, the metrics listener and graceful shutdown; its `budget` bounds the request bytes in flight | the listeners it is given |
//! | [`vap`] | the policy compiled to a `ValidatingAdmissionPolicy` and its bindings (CEL), as YAML | nothing (pure) |
//! | [`cli`] | clap commands `serve` / `review` / `check` / `replay` / `certs` / `vap` and their exit codes | all of the above |
//!
//! With the feature `oracle` (tests and the fuzz targets), `policy::oracle` is the rule written
//! again as a whole-tree walk over parsed values, sharing no code with the production diff, and
//! `admission::oracle` holds [`admission::review`] to it on whole review bodies.
#![forbid(unsafe_code)]

pub mod admission;
pub mod certs;
pub mod cli;
pub mod json;
pub mod metrics;
pub mod policy;
pub mod record;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod vap;
