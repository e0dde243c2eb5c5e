//! Rollout modes as users meet them: `enforce` denies; `warn` allows with a kubectl warning and
//! records the would-be denial; `audit` records it without a warning. Each mode through the
//! decision path, as golden responses, over real TLS on each `/validate/<mode>` path, in the
//! metrics, and through the command line.
//!
//! Which namespace gets which path is the API server's choice, made by the webhook entries'
//! `namespaceSelector`s; `tests/manifests.rs` proves on the rendered manifests that every
//! namespace is matched by exactly one entry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod golden;
mod support;

use std::path::{Path, PathBuf};

use golden::Goldens;
use hyper::StatusCode;
use pytorchjob_guard::admission::{self, Reason, Verdict};
use pytorchjob_guard::metrics::Metrics;
use pytorchjob_guard::policy::{Mode, Policy, Rollout};
use serde_json::Value;
use support::{Options, TestServer, post, pytorchjob_update, send1};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The Worker replicas change of the elastic example (denied in enforce).
const WORKER_REPLICAS: &str = "pytorchjob/worker-replicas.review.json";

/// The whole replica spec replaced: dozens of forbidden paths.
const MANY_PATHS: &str = "pytorchjob/many-paths.review.json";

/// A label change (allowed in every mode).
const LABEL: &str = "pytorchjob/label-api-page.review.json";

/// `oldObject` is not an object: undecidable.
fn undecidable_review() -> Vec<u8> {
    let mut review = json(&fixture(WORKER_REPLICAS));
    review["request"]["oldObject"] = Value::Array(vec![1.into()]);
    serde_json::to_vec(&review).unwrap()
}

/// The built-in rule with its mode set to `mode`, on the plain `/validate` path.
fn review_in(mode: Mode, body: &[u8]) -> admission::Reviewed {
    admission::review(&Policy::default().with_mode(mode), body).unwrap()
}

/// The built-in rule, enforced, whose namespace label may also lower to warn and audit: every
/// `/validate/<mode>` path decides in its own mode (the behaviour before the floor existed).
fn lowerable() -> Policy {
    Policy::default().with_rollout(Rollout {
        mode: Mode::Enforce,
        overrides: Vec::new(),
        may_lower_to: vec![Mode::Warn, Mode::Audit],
    })
}

/// [`lowerable`] as a policy file, for the command line.
fn lowerable_file(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.yaml"),
    )
    .unwrap();
    let path = dir.join("lowerable.yaml");
    std::fs::write(
        &path,
        format!("{text}namespaceLabel:\n  mayLowerTo: [warn, audit]\n"),
    )
    .unwrap();
    path
}

fn warnings(response: &Value) -> Vec<String> {
    response["response"]["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The decision table: each kind of outcome in each mode — the verdict, whether the response
/// allows, the audit verdict, and whether a warning is sent.
#[test]
fn each_outcome_in_each_mode() {
    struct Row {
        what: &'static str,
        body: Vec<u8>,
        reason: Reason,
        /// The verdict in enforce, warn and audit.
        verdicts: [Verdict; 3],
    }
    use Verdict::{Allowed, Denied, WouldDeny};
    let rows = [
        Row {
            what: "a label change",
            body: fixture(LABEL),
            reason: Reason::Evaluated,
            verdicts: [Allowed, Allowed, Allowed],
        },
        Row {
            what: "a frozen change",
            body: fixture(WORKER_REPLICAS),
            reason: Reason::Evaluated,
            verdicts: [Denied, WouldDeny, WouldDeny],
        },
        Row {
            what: "a scale change",
            body: fixture("pytorchjob/scale-subresource.review.json"),
            reason: Reason::Scale,
            verdicts: [Denied, WouldDeny, WouldDeny],
        },
        Row {
            what: "an undecidable review",
            body: undecidable_review(),
            reason: Reason::Undecidable,
            verdicts: [Denied, WouldDeny, WouldDeny],
        },
        Row {
            what: "another kind",
            body: fixture(
                "reviews/kubewarden-policy-server_pod_with_privileged_containers.review.json",
            ),
            reason: Reason::NotGoverned,
            verdicts: [Allowed, Allowed, Allowed],
        },
        Row {
            what: "a create",
            body: fixture("pytorchjob/create.review.json"),
            reason: Reason::NotAnUpdate,
            verdicts: [Allowed, Allowed, Allowed],
        },
    ];
    for row in rows {
        for (mode, verdict) in Mode::ALL.into_iter().zip(row.verdicts) {
            let what = format!("{} in {mode}", row.what);
            let reviewed = review_in(mode, &row.body);
            let decision = &reviewed.decision;
            assert_eq!(decision.mode(), mode, "{what}");
            assert_eq!(decision.verdict(), verdict, "{what}");
            assert_eq!(
                decision.reason(),
                row.reason,
                "{what}: the rule judges alike in every mode"
            );
            let response = json(&reviewed.body);
            assert_eq!(response["response"]["allowed"], verdict.allows(), "{what}");
            let annotations = &response["response"]["auditAnnotations"];
            if row.reason == Reason::NotGoverned {
                assert!(annotations.is_null(), "{what}");
            } else {
                assert_eq!(annotations["verdict"], verdict.as_str(), "{what}");
                let expected_mode = (mode != Mode::Enforce).then_some(mode.as_str());
                assert_eq!(annotations["mode"].as_str(), expected_mode, "{what}");
            }
            let warned = warnings(&response)
                .iter()
                .any(|w| w.contains("enforce would deny"));
            assert_eq!(warned, mode == Mode::Warn && verdict == WouldDeny, "{what}");
            if verdict == WouldDeny {
                assert!(
                    response["response"]["status"].get("code").is_none(),
                    "{what}"
                );
            }
        }
    }
}

/// Exemptions work in every mode: Kueue's admission patch is allowed under the Kueue preset
/// (with the exemption's warning, not as a would-be denial), and denied or would-deny without it.
/// A dry run gets its mode's decision.
#[test]
fn exemptions_and_dry_runs_are_judged_alike_in_every_mode() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/kueue.yaml"))
            .unwrap();
    let kueue = pytorchjob_guard::policy::file::parse(&text).unwrap();
    let body = fixture("pytorchjob/kueue-suspend.review.json");
    for mode in Mode::ALL {
        let reviewed = admission::review(&kueue.clone().with_mode(mode), &body).unwrap();
        assert_eq!(reviewed.decision.verdict(), Verdict::Allowed, "{mode}");
        let response = json(&reviewed.body);
        assert_eq!(
            response["response"]["auditAnnotations"]["exemptions"], "kueue",
            "{mode}"
        );
        assert_eq!(
            warnings(&response),
            [
                "pytorchjob-guard: exemption kueue allowed frozen fields to change: spec.runPolicy.suspend"
            ],
            "{mode}"
        );
        let without = review_in(mode, &body).decision.verdict();
        let expected = if mode == Mode::Enforce {
            Verdict::Denied
        } else {
            Verdict::WouldDeny
        };
        assert_eq!(
            without, expected,
            "{mode}: the same patch without the preset"
        );
        let dry = review_in(mode, &fixture("pytorchjob/dry-run-denied.review.json"));
        assert!(dry.decision.summary.dry_run);
        assert_eq!(dry.decision.verdict(), expected, "{mode}: a dry run");
    }
}

/// Golden responses for a would-be denial in each mode; enforce is the existing golden.
#[test]
fn a_would_deny_in_each_mode_is_answered_byte_for_byte() {
    let body = fixture(WORKER_REPLICAS);
    let enforce = review_in(Mode::Enforce, &body);
    let mut golden = fixture("pytorchjob/worker-replicas.response.json");
    assert_eq!(golden.pop(), Some(b'\n'));
    assert_eq!(
        enforce.body, golden,
        "enforce answers as before modes existed"
    );
    let mut goldens = Goldens::default();
    for mode in [Mode::Warn, Mode::Audit] {
        // As `pytorchjob-guard review` prints it, like every golden: the body and a newline.
        let printed = [review_in(mode, &body).body.as_slice(), b"\n"].concat();
        let path = fixtures().join(format!("modes/worker-replicas.{mode}.response.json"));
        goldens.check(mode.as_str(), &path, &printed);
    }
    goldens.finish();
}

/// The text kubectl prints as `Warning: …`, exactly; long lists are cut to four paths and a
/// count, and no warning exceeds what the API server keeps.
#[test]
fn the_warning_users_see_is_short_and_exact() {
    let one = json(&review_in(Mode::Warn, &fixture(WORKER_REPLICAS)).body);
    assert_eq!(
        warnings(&one),
        [
            "pytorchjob-guard warn mode: enforce would deny this update: this field cannot be updated: spec.pytorchReplicaSpecs.Worker.replicas"
        ]
    );
    let annotations = &one["response"]["auditAnnotations"];
    assert_eq!(annotations["verdict"], "would-deny");
    assert_eq!(
        annotations["denied-fields"],
        "spec.pytorchReplicaSpecs.Worker.replicas"
    );

    let reviewed = review_in(Mode::Warn, &fixture(MANY_PATHS));
    let forbidden = reviewed.decision.outcome.forbidden().len();
    assert!(forbidden > 4, "{forbidden}");
    let many = warnings(&json(&reviewed.body));
    assert_eq!(many.len(), 1, "{many:?}");
    let listed: Vec<String> = reviewed.decision.outcome.forbidden()[..4]
        .iter()
        .map(ToString::to_string)
        .collect();
    let expected = format!(
        "pytorchjob-guard warn mode: enforce would deny this update: these fields cannot be updated: {}, and {} more",
        listed.join(", "),
        forbidden - 4
    );
    let cut: String = expected.chars().take(255).collect();
    let expected = if expected.chars().count() > 256 {
        format!("{cut}…")
    } else {
        expected
    };
    assert_eq!(many[0], expected);
    assert!(many[0].chars().count() <= 256);

    let undecidable = json(&review_in(Mode::Warn, &undecidable_review()).body);
    assert_eq!(
        warnings(&undecidable),
        [
            "pytorchjob-guard warn mode: enforce would deny this update: the admission request cannot be read: oldObject: invalid type: sequence, expected a JSON object"
        ]
    );
    assert!(
        warnings(&json(&review_in(Mode::Audit, &fixture(MANY_PATHS)).body)).is_empty(),
        "audit shows no warning"
    );
}

fn count(metrics: &Metrics, verdict: &str) -> u64 {
    let prefix = "pytorchjob_guard_reviews_total{";
    metrics
        .encode()
        .lines()
        .filter(|line| line.starts_with(prefix) && line.contains(&format!("verdict=\"{verdict}\"")))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Over real TLS, under a policy whose label may lower to warn and audit: `/validate` decides in
/// the policy's mode and each `/validate/<mode>` in its own. The namespace labelled `warn`
/// (whose webhook entry calls `/validate/warn`) gets its update through with a warning, while
/// its unlabelled neighbour (whose entry calls `/validate`) is denied the same change.
#[tokio::test]
async fn each_path_decides_in_its_mode_where_the_policy_lets_the_label_lower() {
    let server = TestServer::start_with(Options {
        policy: Some(lowerable()),
        ..Options::default()
    })
    .await;
    let mut h1 = server.http1().await;
    let frozen = |uid: &str, namespace: &str| {
        let mut review = json(&pytorchjob_update(uid, "admission.k8s.io/v1", |job| {
            job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 3.into();
        }));
        review["request"]["namespace"] = namespace.into();
        serde_json::to_vec(&review).unwrap()
    };
    let ask = |path: &str, body: Vec<u8>| post(path, Some("application/json"), body);
    let neighbour = send1(&mut h1, ask("/validate", frozen("b", "team-b"))).await;
    assert_eq!(neighbour.status, StatusCode::OK);
    assert_eq!(
        neighbour.json()["response"]["allowed"],
        false,
        "team-b is enforced"
    );
    let warned = send1(&mut h1, ask("/validate/warn", frozen("a", "team-a")))
        .await
        .json();
    assert_eq!(warned["response"]["allowed"], true, "team-a is in warn");
    assert_eq!(
        warnings(&warned),
        [
            "pytorchjob-guard warn mode: enforce would deny this update: this field cannot be updated: spec.pytorchReplicaSpecs.Worker.replicas"
        ]
    );
    let audited = send1(&mut h1, ask("/validate/audit", frozen("c", "team-c")))
        .await
        .json();
    assert_eq!(audited["response"]["allowed"], true);
    assert!(warnings(&audited).is_empty());
    assert_eq!(
        audited["response"]["auditAnnotations"]["verdict"],
        "would-deny"
    );
    let enforced = send1(&mut h1, ask("/validate/enforce", frozen("d", "team-d")))
        .await
        .json();
    assert_eq!(enforced["response"]["allowed"], false);
    assert_eq!(count(&server.metrics, "would_deny"), 2);
    assert_eq!(count(&server.metrics, "denied"), 2);
    // Undecidable in a reporting mode: allowed, but counted as an error, not as allowed.
    let mut broken = json(&frozen("e", "team-a"));
    broken["request"]["oldObject"] = "x".into();
    let answer = send1(
        &mut h1,
        ask("/validate/audit", serde_json::to_vec(&broken).unwrap()),
    )
    .await;
    assert_eq!(answer.json()["response"]["allowed"], true);
    assert_eq!(count(&server.metrics, "error"), 1);
    assert_eq!(count(&server.metrics, "allowed"), 0);
    server.stop().await.unwrap();
}

/// A policy in `warn` makes `/validate` warn; `/validate/enforce` still denies.
#[tokio::test]
async fn the_policy_mode_is_the_default_path_s_mode() {
    let policy = Policy::default().with_mode(Mode::Warn);
    let server = TestServer::start_with(Options {
        policy: Some(policy),
        ..Options::default()
    })
    .await;
    let mut h1 = server.http1().await;
    let body = fixture(WORKER_REPLICAS);
    let default = send1(
        &mut h1,
        post("/validate", Some("application/json"), body.clone()),
    )
    .await;
    assert_eq!(default.json()["response"]["allowed"], true);
    assert_eq!(warnings(&default.json()).len(), 1);
    let enforce = send1(
        &mut h1,
        post("/validate/enforce", Some("application/json"), body),
    )
    .await;
    assert_eq!(enforce.json()["response"]["allowed"], false);
    server.stop().await.unwrap();
}

const BIN: &str = env!("CARGO_BIN_EXE_pytorchjob-guard");

/// `check --mode` and `review --mode`: a team asks what enforce would deny, or what a mode
/// would answer, without a cluster (under a policy that lets the label lower the mode; the
/// floor itself is tested in tests/cli.rs).
#[test]
fn the_offline_commands_take_a_mode() {
    let dir = tempfile::tempdir().unwrap();
    let policy = lowerable_file(dir.path());
    let review = json(&fixture(WORKER_REPLICAS));
    let (old, new) = (dir.path().join("old.json"), dir.path().join("new.json"));
    std::fs::write(&old, review["request"]["oldObject"].to_string()).unwrap();
    std::fs::write(&new, review["request"]["object"].to_string()).unwrap();
    let check = |mode: &str| {
        std::process::Command::new(BIN)
            .args(["check", "--mode", mode, "--policy"])
            .arg(&policy)
            .arg("--old")
            .arg(&old)
            .arg("--new")
            .arg(&new)
            .output()
            .unwrap()
    };
    let warn = check("warn");
    assert_eq!(warn.status.code(), Some(0), "warn allows");
    let text = String::from_utf8(warn.stdout).unwrap();
    assert!(
        text.starts_with("allowed in warn mode; enforce would deny: PyTorchJob default/elastic-example-imagenet: this field cannot be updated: spec.pytorchReplicaSpecs.Worker.replicas;"),
        "{text}"
    );
    assert!(
        text.contains("\n  spec.pytorchReplicaSpecs.Worker.replicas\n"),
        "{text}"
    );
    assert_eq!(check("enforce").status.code(), Some(1), "enforce denies");

    let output = std::process::Command::new(BIN)
        .args(["review", "--mode", "audit", "--policy"])
        .arg(&policy)
        .arg(fixtures().join(WORKER_REPLICAS))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        output.stdout,
        fixture("modes/worker-replicas.audit.response.json")
    );
}

/// `replay --mode enforce` over a recording made in warn: the would-be denials are what would
/// change.
#[test]
fn replay_under_enforce_shows_what_a_warn_recording_would_have_denied() {
    use pytorchjob_guard::record::{self, RecordDir, RecordSink};
    let dir = tempfile::tempdir().unwrap();
    let mut recorder = RecordDir::new(dir.path(), 10, true).unwrap();
    for name in [WORKER_REPLICAS, LABEL] {
        let body = fixture(name);
        recorder
            .write(&body, &review_in(Mode::Warn, &body).body)
            .unwrap();
    }
    let policy = Policy::default();
    let same = record::replay(dir.path(), &policy.clone().with_mode(Mode::Warn), None).unwrap();
    assert!(same.iter().all(|row| !row.changed()), "{same:?}");
    let rows = record::replay(dir.path(), &policy, None).unwrap();
    let changed: Vec<_> = rows.iter().filter(|row| row.changed()).collect();
    assert_eq!(changed.len(), 1, "{rows:?}");
    assert_eq!(
        (changed[0].before, changed[0].after),
        ("would-deny", "denied")
    );
    assert!(
        changed[0].newly_denied.is_empty(),
        "the same fields, now enforced"
    );

    let output = std::process::Command::new(BIN)
        .args(["replay", "--mode", "enforce"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains("| PyTorchJob default/elastic-example-imagenet | would-deny | denied |"),
        "{table}"
    );
}

/// A policy written as a cluster would: `policies/default.yaml` with `extra` keys appended.
fn default_policy_with(extra: &str) -> Policy {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.yaml"),
    )
    .unwrap();
    pytorchjob_guard::policy::file::parse(&format!("{text}{extra}")).unwrap()
}

/// The warning a refused lowering carries, as kubectl prints it after `Warning: `.
fn refused_warning(requested: &str, kept: &str) -> String {
    format!(
        "pytorchjob-guard: the namespace label pytorchjob-guard.kubeflow.org/mode asked for {requested} mode; the policy kept {kept} mode (namespaceLabel.mayLowerTo does not list {requested})"
    )
}

/// The value of `pytorchjob_guard_mode_lowering_refused_total{requested,kept}` (0 when absent).
fn refused_count(metrics: &Metrics, requested: &str, kept: &str) -> u64 {
    let series = format!(
        "pytorchjob_guard_mode_lowering_refused_total{{requested=\"{requested}\",kept=\"{kept}\"}} "
    );
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |n| n.parse().unwrap())
}

/// The decision table of the floor, over real TLS on every route: policy mode × override ×
/// label → effective mode and verdict of a frozen change (Worker replicas). A label raises the
/// namespace's mode always and lowers it only to a mode `mayLowerTo` lists; a refused lowering is
/// judged in the namespace's mode, with a warning naming both modes, the
/// `mode-lowering-refused` audit annotation and the counter.
#[tokio::test]
async fn the_policy_keeps_the_floor_on_every_route() {
    use Mode::{Audit, Enforce, Warn};
    let policies = [
        ("enforce", default_policy_with("")),
        (
            "enforce, sandbox and exp-* audit, may lower to warn",
            default_policy_with(
                "modeOverrides:\n  - mode: audit\n    namespaces: [team-sandbox, \"exp-*\"]\nnamespaceLabel:\n  mayLowerTo: [warn]\n",
            ),
        ),
        ("audit", default_policy_with("mode: audit\n")),
        (
            "warn, prod-* enforce, prod-x and lab audit",
            default_policy_with(
                "mode: warn\nmodeOverrides:\n  - mode: enforce\n    namespaces: [\"prod-*\"]\n  - mode: audit\n    namespaces: [prod-x, lab]\n",
            ),
        ),
    ];
    // (policy, namespace, label = route) → (effective mode, the label's mode refused)
    type Row = (usize, &'static str, Option<Mode>, Mode, bool);
    let table: &[Row] = &[
        (0, "team-a", None, Enforce, false),
        (0, "team-a", Some(Enforce), Enforce, false),
        (0, "team-a", Some(Warn), Enforce, true),
        (0, "team-a", Some(Audit), Enforce, true),
        (1, "team-a", None, Enforce, false),
        (1, "team-a", Some(Enforce), Enforce, false),
        (1, "team-a", Some(Warn), Warn, false),
        (1, "team-a", Some(Audit), Enforce, true),
        (1, "team-sandbox", None, Audit, false),
        (1, "team-sandbox", Some(Enforce), Enforce, false),
        (1, "team-sandbox", Some(Warn), Warn, false),
        (1, "team-sandbox", Some(Audit), Audit, false),
        (1, "exp-42", None, Audit, false),
        (1, "exp-42", Some(Warn), Warn, false),
        (2, "team-a", None, Audit, false),
        (2, "team-a", Some(Enforce), Enforce, false),
        (2, "team-a", Some(Warn), Warn, false),
        (2, "team-a", Some(Audit), Audit, false),
        (3, "team-a", None, Warn, false),
        (3, "team-a", Some(Enforce), Enforce, false),
        (3, "team-a", Some(Warn), Warn, false),
        (3, "team-a", Some(Audit), Warn, true),
        // The first matching override wins: prod-x is enforced, not audited.
        (3, "prod-x", None, Enforce, false),
        (3, "prod-x", Some(Enforce), Enforce, false),
        (3, "prod-x", Some(Warn), Enforce, true),
        (3, "prod-x", Some(Audit), Enforce, true),
        (3, "lab", None, Audit, false),
        (3, "lab", Some(Warn), Warn, false),
        (3, "lab", Some(Audit), Audit, false),
    ];
    let frozen = |uid: &str, namespace: &str| {
        let mut review = json(&pytorchjob_update(uid, "admission.k8s.io/v1", |job| {
            job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 3.into();
        }));
        review["request"]["namespace"] = namespace.into();
        serde_json::to_vec(&review).unwrap()
    };
    for (index, (name, policy)) in policies.into_iter().enumerate() {
        let server = TestServer::start_with(Options {
            policy: Some(policy),
            ..Options::default()
        })
        .await;
        let mut h1 = server.http1().await;
        let mut refusals = std::collections::HashMap::<(Mode, Mode), u64>::new();
        let rows = table.iter().filter(|row| row.0 == index);
        for (n, &(_, namespace, label, effective, refused)) in rows.enumerate() {
            let route = label.map_or("/validate".to_owned(), |m| format!("/validate/{m}"));
            let what = format!("policy {name}, namespace {namespace}, {route}");
            let body = frozen(&format!("{index}-{n}"), namespace);
            let answer = send1(&mut h1, post(&route, Some("application/json"), body)).await;
            assert_eq!(answer.status, StatusCode::OK, "{what}");
            let response = answer.json();
            let verdict = if effective == Enforce {
                Verdict::Denied
            } else {
                Verdict::WouldDeny
            };
            assert_eq!(response["response"]["allowed"], verdict.allows(), "{what}");
            let annotations = &response["response"]["auditAnnotations"];
            assert_eq!(annotations["verdict"], verdict.as_str(), "{what}");
            let mode_annotation = (effective != Enforce).then_some(effective.as_str());
            assert_eq!(annotations["mode"].as_str(), mode_annotation, "{what}");
            let mut expected_warnings = Vec::new();
            if refused {
                let requested = label.unwrap();
                *refusals.entry((requested, effective)).or_default() += 1;
                assert_eq!(
                    annotations["mode-lowering-refused"],
                    format!("requested {requested}, kept {effective}"),
                    "{what}"
                );
                expected_warnings.push(refused_warning(requested.as_str(), effective.as_str()));
            } else {
                assert!(annotations.get("mode-lowering-refused").is_none(), "{what}");
            }
            if effective == Warn {
                expected_warnings.push("pytorchjob-guard warn mode: enforce would deny this update: this field cannot be updated: spec.pytorchReplicaSpecs.Worker.replicas".to_owned());
            }
            assert_eq!(warnings(&response), expected_warnings, "{what}");
        }
        for requested in Mode::ALL {
            for kept in Mode::ALL {
                let expected = refusals.get(&(requested, kept)).copied().unwrap_or(0);
                assert_eq!(
                    refused_count(&server.metrics, requested.as_str(), kept.as_str()),
                    expected,
                    "policy {name}: refusals of {requested} kept {kept}"
                );
            }
        }
        server.stop().await.unwrap();
    }
}

/// A refused lowering is reported on an allowed update too (the team learns its label is not
/// honoured before it matters), and not at all for a kind the policy does not govern.
#[tokio::test]
async fn a_refused_lowering_is_reported_on_allowed_updates_and_only_for_governed_kinds() {
    let server = TestServer::start().await;
    let mut h1 = server.http1().await;
    let label = send1(
        &mut h1,
        post("/validate/audit", Some("application/json"), fixture(LABEL)),
    )
    .await
    .json();
    assert_eq!(label["response"]["allowed"], true);
    assert_eq!(warnings(&label), [refused_warning("audit", "enforce")]);
    assert_eq!(
        label["response"]["auditAnnotations"]["mode-lowering-refused"],
        "requested audit, kept enforce"
    );
    assert_eq!(label["response"]["auditAnnotations"]["verdict"], "allowed");
    let pod =
        fixture("reviews/kubewarden-policy-server_pod_with_privileged_containers.review.json");
    let other = send1(
        &mut h1,
        post("/validate/warn", Some("application/json"), pod),
    )
    .await
    .json();
    assert_eq!(other["response"]["allowed"], true);
    assert!(warnings(&other).is_empty());
    assert!(other["response"]["auditAnnotations"].is_null());
    assert_eq!(refused_count(&server.metrics, "audit", "enforce"), 1);
    assert_eq!(refused_count(&server.metrics, "warn", "enforce"), 0);
    server.stop().await.unwrap();
}
