//! The real binary, as a user or a script runs it: `review`, `check` and `certs`, their output
//! and their exit codes (0 allowed / done, 1 denied, 2 error).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use pytorchjob_guard::cli::Cli;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const BIN: &str = env!("CARGO_BIN_EXE_pytorchjob-guard");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(relative: &str) -> PathBuf {
    fixtures().join(relative)
}

fn read(relative: &str) -> Vec<u8> {
    std::fs::read(fixture(relative)).unwrap()
}

/// Run the binary with `args` and `stdin`, without inheriting the `PYTORCHJOB_GUARD_*`
/// configuration of the environment running the tests.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_with_env(args, stdin, &[])
}

/// [`run`], with these environment variables set.
fn run_with_env(args: &[&str], stdin: &[u8], env: &[(&str, &OsStr)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PYTORCHJOB_GUARD_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Every PyTorchJob review with its golden response.
fn pytorchjob_reviews() -> Vec<(PathBuf, PathBuf)> {
    let dir = fixture("pytorchjob");
    let mut pairs: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let stem = name.strip_suffix(".review.json")?;
            Some((path.clone(), dir.join(format!("{stem}.response.json"))))
        })
        .collect();
    pairs.sort();
    assert!(pairs.len() >= 15, "PyTorchJob fixtures missing: {pairs:?}");
    pairs
}

#[test]
fn review_of_a_file_prints_the_golden_response() {
    let mut pairs = pytorchjob_reviews();
    pairs.push((
        fixture("reviews/kubewarden-policy-server_pod_with_privileged_containers.review.json"),
        fixture("reviews/kubewarden-policy-server_pod_with_privileged_containers.response.json"),
    ));
    for (review, golden) in pairs {
        let out = run(&["review", review.to_str().unwrap()], b"");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            review.display(),
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            text(&std::fs::read(&golden).unwrap()),
            "{}",
            review.display()
        );
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn review_of_stdin_prints_the_golden_response() {
    let review = read("pytorchjob/worker-replicas.review.json");
    let golden = text(&read("pytorchjob/worker-replicas.response.json"));
    // `-` names stdin; it is also the default.
    for args in [&["review", "-"][..], &["review"][..]] {
        let out = run(args, &review);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), golden, "{args:?}");
    }
    // A denial is still a successful review: exit 0, the verdict is in the document.
    assert!(golden.contains(r#""allowed":false"#));
}

#[test]
fn review_of_unreadable_input_exits_2_with_a_message() {
    let bare_request = read("reviews/kubewarden-policies_echo_update_accept.request.json");
    let cases: [(&str, &[u8], &str); 6] = [
        ("garbage", b"this is not json", "not an AdmissionReview"),
        ("empty", b"", "not an AdmissionReview"),
        (
            "another kind",
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#,
            "unsupported review type",
        ),
        // A bare `request` object: its `kind` is a GroupVersionKind map, not a string.
        ("a bare request", &bare_request, "not an AdmissionReview"),
        (
            "a review without request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "has no request",
        ),
        ("a JSON list", b"[1, 2, 3]", "not an AdmissionReview"),
    ];
    for (what, input, expected) in cases {
        let out = run(&["review", "-"], input);
        assert_eq!(out.status.code(), Some(2), "{what}");
        assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("pytorchjob-guard: ") && stderr.contains(expected),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn review_of_a_missing_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let out = run(&["review", missing.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
}

/// A real example job (YAML) and an edited copy, written to a temporary directory.
fn old_and_new(
    example: &str,
    edit: impl Fn(&str) -> String,
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let original = text(&read(&format!("pytorchjob/source/{example}")));
    let edited = edit(&original);
    assert_ne!(original, edited, "the edit changed nothing");
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yaml");
    std::fs::write(&old, original).unwrap();
    std::fs::write(&new, edited).unwrap();
    (dir, old, new)
}

fn check(old: &Path, new: &Path) -> Output {
    run(
        &[
            "check",
            "--old",
            old.to_str().unwrap(),
            "--new",
            new.to_str().unwrap(),
        ],
        b"",
    )
}

#[test]
fn check_allows_a_label_change_with_exit_0() {
    let (_dir, old, new) = old_and_new("training-operator-v1.9.0_simple.yaml", |yaml| {
        yaml.replacen(
            "  namespace: kubeflow\n",
            "  namespace: kubeflow\n  labels:\n    team: ml\n",
            1,
        )
    });
    let out = check(&old, &new);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "allowed: only updatable fields changed\n  metadata.labels.team\n"
    );
}

#[test]
fn check_of_identical_objects_allows_with_exit_0() {
    let example = fixture("pytorchjob/source/training-operator-v1.9.0_simple.yaml");
    let out = check(&example, &example);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "allowed: nothing that is compared changed\n"
    );
}

#[test]
fn check_denies_a_replica_change_with_exit_1_and_lists_the_paths() {
    let (_dir, old, new) = old_and_new("training-operator-v1.9.0_elastic_imagenet.yaml", |yaml| {
        yaml.replacen("replicas: 2", "replicas: 3", 1)
            .replacen("--epochs=1", "--epochs=5", 1)
    });
    let out = check(&old, &new);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let verdict = lines.next().unwrap();
    // The namespace is absent from the example, so the object is named without one.
    assert!(
        verdict.starts_with(
            "denied: PyTorchJob elastic-example-imagenet: these fields cannot be updated: "
        ),
        "{stdout}"
    );
    assert_eq!(
        lines.collect::<Vec<_>>(),
        [
            "  spec.pytorchReplicaSpecs.Worker.replicas",
            "  spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].command[5]",
        ]
    );
}

#[test]
fn check_reads_json_as_well_as_yaml() {
    // The API page's example object (JSON) against itself with a new container image (YAML).
    let dir = tempfile::tempdir().unwrap();
    let old = fixture("pytorchjob/source/example-response.pytorchjob.json");
    let object: serde_json::Value = serde_json::from_slice(&std::fs::read(&old).unwrap()).unwrap();
    let mut edited = object.clone();
    edited["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["image"] =
        "pytorch-cpu:v2".into();
    let new = dir.path().join("new.yaml");
    std::fs::write(&new, serde_yaml_ng::to_string(&edited).unwrap()).unwrap();
    let out = check(&old, &new);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .ends_with("\n  spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].image\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let example = fixture("pytorchjob/source/training-operator-v1.9.0_simple.yaml");
    let missing = dir.path().join("missing.yaml");
    let list = dir.path().join("list.yaml");
    std::fs::write(&list, "- a\n- b\n").unwrap();
    let scalar = dir.path().join("scalar.json");
    std::fs::write(&scalar, "42\n").unwrap();
    let untyped = dir.path().join("untyped.yaml");
    std::fs::write(&untyped, "metadata:\n  name: x\n").unwrap();
    let cases = [
        (&missing, &example, "cannot read"),
        (&example, &missing, "cannot read"),
        (&example, &list, "does not hold an object"),
        (&scalar, &example, "does not hold an object"),
        (&example, &untyped, "has no apiVersion and kind"),
    ];
    for (old, new, expected) in cases {
        let out = check(old, new);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{} -> {}: {stderr}",
            old.display(),
            new.display()
        );
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        assert!(
            stderr.starts_with("pytorchjob-guard: ") && stderr.contains(expected),
            "{stderr}"
        );
    }
}

#[test]
fn certs_writes_a_ca_a_certificate_chain_and_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let out = run(
        &[
            "certs",
            "--out",
            out_dir.to_str().unwrap(),
            "--dns",
            "extra.example",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("wrote "), "{stdout}");
    assert!(stdout.contains("extra.example"), "{stdout}");
    assert!(
        stdout.contains("pytorchjob-guard.pytorchjob-guard.svc"),
        "{stdout}"
    );

    let ca_pem = std::fs::read(out_dir.join("ca.crt")).unwrap();
    let cert_pem = std::fs::read(out_dir.join("tls.crt")).unwrap();
    let key_pem = std::fs::read(out_dir.join("tls.key")).unwrap();
    assert!(cert_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert!(key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));

    let ca: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&ca_pem)
        .collect::<Result<_, _>>()
        .unwrap();
    let chain: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ca.len(), 1);
    assert_eq!(chain.len(), 2, "leaf, then the CA");
    assert_eq!(chain[1], ca[0]);
    // The extra name is a subjectAltName of the leaf (an IA5String inside its DER), not the CA's.
    let contains = |der: &[u8], needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&chain[0], b"extra.example"));
    assert!(!contains(&ca[0], b"extra.example"));
    PrivateKeyDer::from_pem_slice(&key_pem).unwrap();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "tls.key mode {mode:o}");
    }
}

#[test]
fn certs_without_out_exits_2() {
    let out = run(&["certs"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--out"), "{}", text(&out.stderr));
}

/// The positional arguments: the only ones without an environment variable.
const POSITIONAL: &[(&str, &str)] = &[("replay", "dir"), ("review", "file")];

/// Every flag of every command, derived from the parser itself: `(command, flag, env var)`,
/// `command` being `serve` for the flags accepted without a subcommand.
fn every_flag() -> Vec<(String, String, Option<String>)> {
    let cli = Cli::command();
    let commands = std::iter::once(("serve".to_owned(), &cli))
        .chain(cli.get_subcommands().map(|c| (c.get_name().to_owned(), c)));
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    for (name, command) in commands {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_positional() {
                assert!(
                    arg.get_env().is_none(),
                    "{name} {id}: a positional with an env"
                );
                positional.push((name.clone(), id.to_owned()));
                continue;
            }
            let long = arg
                .get_long()
                .unwrap_or_else(|| panic!("{name} {id}: no long flag"));
            let env = arg.get_env().map(|env| env.to_string_lossy().into_owned());
            flags.push((name.clone(), long.to_owned(), env));
        }
    }
    let expected: Vec<(String, String)> = POSITIONAL
        .iter()
        .map(|(c, a)| ((*c).to_owned(), (*a).to_owned()))
        .collect();
    positional.sort();
    assert_eq!(positional, expected, "the positional arguments changed");
    flags
}

/// `--record-max-files` is `RECORD_MAX_FILES`.
fn screaming_snake(flag: &str) -> String {
    flag.to_ascii_uppercase().replace('-', "_")
}

#[test]
fn every_flag_of_every_command_has_its_environment_variable_in_help() {
    let flags = every_flag();
    for command in ["serve", "review", "check", "replay", "certs"] {
        assert!(
            flags.iter().any(|(c, _, _)| c == command),
            "{command} has no flags: the derivation is broken"
        );
    }
    let mut flag_of_variable: BTreeMap<String, String> = BTreeMap::new();
    let mut help_of = BTreeMap::new();
    for (command, flag, env) in &flags {
        let env = env
            .as_deref()
            .unwrap_or_else(|| panic!("{command} --{flag} has no environment variable"));
        // serve's flags (and a flag shared with them, `--policy`) are PYTORCHJOB_GUARD_<FLAG>;
        // a subcommand's own are PYTORCHJOB_GUARD_<COMMAND>_<FLAG>.
        let plain = format!("PYTORCHJOB_GUARD_{}", screaming_snake(flag));
        let prefixed = format!(
            "PYTORCHJOB_GUARD_{}_{}",
            screaming_snake(command),
            screaming_snake(flag)
        );
        assert!(
            env == plain || (command != "serve" && env == prefixed),
            "{command} --{flag}: {env} is neither {plain} nor {prefixed}"
        );
        // One variable means one flag, whichever command reads it.
        let previous = flag_of_variable.insert(env.to_owned(), flag.clone());
        assert!(
            previous.as_ref().is_none_or(|previous| previous == flag),
            "{env} is both --{} and --{flag}",
            previous.unwrap_or_default()
        );
        // `--help` names it, as an operator reads it.
        let help = help_of.entry(command.clone()).or_insert_with(|| {
            let out = run(&[command.as_str(), "--help"], b"");
            assert_eq!(out.status.code(), Some(0), "{command} --help");
            // Help is wrapped to the terminal: compare with single spaces.
            let help = text(&out.stdout);
            help.split_whitespace().collect::<Vec<_>>().join(" ")
        });
        assert!(
            help.contains(&format!("[env: {env}=")),
            "{command} --help lacks {env}:\n{help}"
        );
    }
}

#[test]
fn environment_variables_are_honoured() {
    let flags = every_flag();
    let known = |variable: &'static str| -> &'static str {
        assert!(
            flags
                .iter()
                .any(|(_, _, env)| env.as_deref() == Some(variable)),
            "{variable} is not a flag's variable"
        );
        variable
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).into_os_string();
    let value = OsStr::new;

    // serve: the certificate paths the environment names are the ones used.
    let (cert, key) = (path("from-env.crt"), path("from-env.key"));
    let out = run_with_env(
        &[],
        b"",
        &[
            (known("PYTORCHJOB_GUARD_TLS_CERT"), &cert),
            (known("PYTORCHJOB_GUARD_TLS_KEY"), &key),
            (known("PYTORCHJOB_GUARD_LISTEN"), value("127.0.0.1:0")),
            (
                known("PYTORCHJOB_GUARD_METRICS_LISTEN"),
                value("127.0.0.1:0"),
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("from-env.crt"),
        "{}",
        text(&out.stderr)
    );

    // serve: a value from the environment is parsed like the flag's, and refused like it.
    for (variable, bad) in [
        ("PYTORCHJOB_GUARD_LISTEN", "not-an-address"),
        ("PYTORCHJOB_GUARD_RECORD_MAX_FILES", "many-files"),
        ("PYTORCHJOB_GUARD_POLICY_RELOAD_INTERVAL", "soon-ish"),
    ] {
        let out = run_with_env(&["serve"], b"", &[(known(variable), value(bad))]);
        assert_eq!(out.status.code(), Some(2), "{variable}");
        assert!(
            text(&out.stderr).contains(bad),
            "{variable}: {}",
            text(&out.stderr)
        );
    }

    // review: the policy file the environment names is the one read.
    let policy = path("from-env-policy.yaml");
    let out = run_with_env(
        &[
            "review",
            fixture("pytorchjob/worker-replicas.review.json")
                .to_str()
                .unwrap(),
        ],
        b"",
        &[(known("PYTORCHJOB_GUARD_POLICY"), &policy)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("from-env-policy.yaml"),
        "{}",
        text(&out.stderr)
    );

    // check: both objects from the environment, no flags.
    let example =
        fixture("pytorchjob/source/training-operator-v1.9.0_simple.yaml").into_os_string();
    let out = run_with_env(
        &["check"],
        b"",
        &[
            (known("PYTORCHJOB_GUARD_CHECK_OLD"), &example),
            (known("PYTORCHJOB_GUARD_CHECK_NEW"), &example),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "allowed: nothing that is compared changed\n"
    );

    // certs: the directory and the extra names from the environment.
    let out_dir = dir.path().join("env-certs");
    let out = run_with_env(
        &["certs"],
        b"",
        &[
            (known("PYTORCHJOB_GUARD_CERTS_OUT"), out_dir.as_os_str()),
            (
                known("PYTORCHJOB_GUARD_CERTS_DNS"),
                value("env.example,other.example"),
            ),
            (known("PYTORCHJOB_GUARD_CERTS_NAMESPACE"), value("envns")),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in ["env.example", "other.example", "pytorchjob-guard.envns.svc"] {
        assert!(stdout.contains(name), "{name}: {stdout}");
    }
    assert!(out_dir.join("tls.crt").exists());
}

/// `policies/default.yaml` with `extra` keys appended, written into `dir`.
fn policy_file(dir: &Path, extra: &str) -> PathBuf {
    let text = text(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.yaml"))
            .unwrap(),
    );
    let path = dir.join("policy.yaml");
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    path
}

/// `check` with `args` before `--old OLD --new NEW`.
fn check_with(args: &[&str], old: &Path, new: &Path) -> Output {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.extend([
        "--old",
        old.to_str().unwrap(),
        "--new",
        new.to_str().unwrap(),
    ]);
    run(&all, b"")
}

const REFUSED_AUDIT: &str = "warning: pytorchjob-guard: the namespace label pytorchjob-guard.kubeflow.org/mode asked for audit mode; the policy kept enforce mode (namespaceLabel.mayLowerTo does not list audit)";

/// `check --mode` stands for the namespace label: under an enforcing policy, `--mode audit` or
/// `--mode warn` cannot lower the mode (denied, exit 1, with the warning the server sends);
/// listed in `mayLowerTo`, it can.
#[test]
fn check_mode_cannot_lower_below_the_policy_s_floor() {
    let (dir, old, new) = old_and_new("training-operator-v1.9.0_simple.yaml", |yaml| {
        yaml.replacen("replicas: 1", "replicas: 3", 1)
    });
    for mode in ["audit", "warn"] {
        let out = check_with(&["--mode", mode], &old, &new);
        assert_eq!(
            out.status.code(),
            Some(1),
            "--mode {mode}: {}",
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        let mut lines = stdout.lines();
        assert_eq!(
            lines.next().unwrap(),
            REFUSED_AUDIT.replace("audit", mode),
            "{stdout}"
        );
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("denied: PyTorchJob kubeflow/pytorch-simple: "),
            "{stdout}"
        );
    }
    let enforce = check_with(&["--mode", "enforce"], &old, &new);
    assert_eq!(enforce.status.code(), Some(1));
    assert!(
        text(&enforce.stdout).starts_with("denied: "),
        "no warning for the same mode"
    );
    let policy = policy_file(dir.path(), "namespaceLabel:\n  mayLowerTo: [warn]\n");
    let policy = policy.to_str().unwrap();
    let warn = check_with(&["--policy", policy, "--mode", "warn"], &old, &new);
    assert_eq!(warn.status.code(), Some(0), "{}", text(&warn.stdout));
    assert!(text(&warn.stdout).starts_with("allowed in warn mode; enforce would deny: "));
    let audit = check_with(&["--policy", policy, "--mode", "audit"], &old, &new);
    assert_eq!(audit.status.code(), Some(1), "audit is not listed");
    assert!(text(&audit.stdout).starts_with(REFUSED_AUDIT));
}

/// The namespace comes from the object: an override for `kubeflow` sets its mode, which
/// `--mode` can raise but not lower; another namespace keeps the policy's mode.
#[test]
fn check_takes_the_namespace_mode_from_the_object() {
    let (dir, old, new) = old_and_new("training-operator-v1.9.0_simple.yaml", |yaml| {
        yaml.replacen("replicas: 1", "replicas: 3", 1)
    });
    let policy = policy_file(
        dir.path(),
        "mode: warn\nmodeOverrides:\n  - mode: audit\n    namespaces: [\"kube*\"]\n",
    );
    let policy = policy.to_str().unwrap();
    let plain = check_with(&["--policy", policy], &old, &new);
    assert_eq!(plain.status.code(), Some(0));
    assert!(
        text(&plain.stdout).starts_with("allowed in audit mode; "),
        "{}",
        text(&plain.stdout)
    );
    let raised = check_with(&["--policy", policy, "--mode", "warn"], &old, &new);
    assert!(
        text(&raised.stdout).starts_with("allowed in warn mode; "),
        "{}",
        text(&raised.stdout)
    );
    let enforced = check_with(&["--policy", policy, "--mode", "enforce"], &old, &new);
    assert_eq!(enforced.status.code(), Some(1));
    // Elsewhere, the policy's own mode, which an audit label cannot lower.
    let moved = |path: &Path| {
        let yaml = text(&std::fs::read(path).unwrap()).replacen(
            "namespace: kubeflow",
            "namespace: team-a",
            1,
        );
        let moved = path.with_extension("team-a.yaml");
        std::fs::write(&moved, yaml).unwrap();
        moved
    };
    let (old, new) = (moved(&old), moved(&new));
    let elsewhere = check_with(&["--policy", policy, "--mode", "audit"], &old, &new);
    assert_eq!(elsewhere.status.code(), Some(0));
    let stdout = text(&elsewhere.stdout);
    assert!(
        stdout.starts_with(&format!(
            "{}\nallowed in warn mode; ",
            REFUSED_AUDIT.replace("kept enforce", "kept warn")
        )),
        "{stdout}"
    );
}

/// `review --mode` answers as `/validate/<mode>` does, floor included; the namespace is the
/// review's.
#[test]
fn review_mode_answers_as_the_labelled_route_does() {
    let out = run(
        &[
            "review",
            "--mode",
            "audit",
            fixture("pytorchjob/worker-replicas.review.json")
                .to_str()
                .unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        response["response"]["allowed"], false,
        "enforced: the label cannot lower"
    );
    assert_eq!(
        response["response"]["auditAnnotations"]["mode-lowering-refused"],
        "requested audit, kept enforce"
    );
    assert_eq!(
        response["response"]["warnings"][0],
        REFUSED_AUDIT.strip_prefix("warning: ").unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        dir.path(),
        "modeOverrides:\n  - mode: audit\n    namespaces: [default]\n",
    );
    let out = run(
        &[
            "review",
            "--policy",
            policy.to_str().unwrap(),
            fixture("pytorchjob/worker-replicas.review.json")
                .to_str()
                .unwrap(),
        ],
        b"",
    );
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        response["response"]["allowed"], true,
        "the review's namespace is audited"
    );
    assert_eq!(response["response"]["auditAnnotations"]["mode"], "audit");
}

/// `replay --mode` replays as if the namespaces' label asked for that mode, and shows the mode
/// each changed decision is judged in, with a refused lowering.
#[test]
fn replay_shows_the_effective_mode() {
    use pytorchjob_guard::policy::{Mode, Policy};
    use pytorchjob_guard::record::{RecordDir, RecordSink};
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records");
    let mut sink = RecordDir::new(&records, 10, true).unwrap();
    let body = read("pytorchjob/worker-replicas.review.json");
    let warned =
        pytorchjob_guard::admission::review(&Policy::default().with_mode(Mode::Warn), &body)
            .unwrap();
    sink.write(&body, &warned.body).unwrap();
    let out = run(
        &["replay", "--mode", "audit", records.to_str().unwrap()],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.starts_with(
            "| record | object | recorded | now | mode | newly denied | no longer denied |\n"
        ),
        "{table}"
    );
    assert!(
        table.contains("| PyTorchJob default/elastic-example-imagenet | would-deny | denied | enforce (label audit refused) |"),
        "{table}"
    );
    let policy = policy_file(dir.path(), "namespaceLabel:\n  mayLowerTo: [warn, audit]\n");
    let out = run(
        &[
            "replay",
            "--mode",
            "audit",
            "--policy",
            policy.to_str().unwrap(),
            records.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "would-deny then and now: {}",
        text(&out.stdout)
    );
}
