//! The policy's rollout mode: what happens to an update the rule would deny, and which mode a
//! review is judged in.
//!
//! A new or tightened policy is rolled out `audit` first (see what it would deny), then `warn`
//! (tell the people sending those updates), then `enforce`. Every mode judges the same way; only
//! what is done with a would-be denial differs. Written in the policy file as `mode:` and on the
//! command line as `--mode` ([`clap::ValueEnum`]).
//!
//! The policy owns the floor ([`Rollout`]): a namespace's mode is its first matching
//! `modeOverrides` entry, else `mode`. The namespace label [`MODE_LABEL`] selects a webhook path
//! (`/validate/<mode>`), and so asks for a mode; [`Rollout::resolve`] lets it raise the
//! namespace's mode, and lower it only to the modes `namespaceLabel.mayLowerTo` lists. A refused
//! lowering is judged in the namespace's mode and reported ([`EffectiveMode::refused_lowering`]).
//! Whoever can patch a Namespace can set the label, so by default it can only raise.
//!
//! Pure: names in, modes out.

use std::fmt;
use std::str::FromStr;

/// What is done with an update the policy would deny.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny it.
    #[default]
    Enforce,
    /// Allow it, with a warning kubectl shows naming the fields `enforce` would deny, and record
    /// the would-be denial in the audit annotations.
    Warn,
    /// Allow it and record the would-be denial in the audit annotations, without a warning.
    Audit,
}

impl Mode {
    /// Every mode, in rollout order from strictest.
    pub const ALL: [Mode; 3] = [Mode::Enforce, Mode::Warn, Mode::Audit];

    /// The name the policy file and the command line use: `enforce`, `warn` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }

    /// Whether this mode does more with a would-be denial than `other`: `enforce` > `warn` >
    /// `audit`.
    pub fn is_stricter_than(self, other: Mode) -> bool {
        self.strictness() > other.strictness()
    }

    fn strictness(self) -> u8 {
        match self {
            Mode::Enforce => 2,
            Mode::Warn => 1,
            Mode::Audit => 0,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Mode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {input:?}: expected one of enforce, warn, audit")]
pub struct ParseModeError {
    /// The text that was parsed.
    pub input: String,
}

impl FromStr for Mode {
    type Err = ParseModeError;

    /// Exactly `enforce`, `warn` or `audit` (lowercase, like the policy file).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == input)
            .ok_or_else(|| ParseModeError {
                input: input.to_owned(),
            })
    }
}

/// The Namespace label whose value selects a webhook entry, and so the path
/// `/validate/<mode>` a namespace's reviews are sent to (see
/// `manifests/base/validatingwebhookconfiguration.yaml`).
pub const MODE_LABEL: &str = "pytorchjob-guard.kubeflow.org/mode";

/// The longest namespace name: namespaces are DNS labels (RFC 1123), at most 63 characters.
pub const MAX_NAMESPACE_CHARS: usize = 63;

/// A namespace name or glob in `modeOverrides`: lowercase letters, digits and `-` as in a
/// namespace name, plus `*` (any run of characters, also none) and `?` (one character), as
/// Kyverno's namespace wildcards. A glob that could match no namespace is refused: it is a typo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePattern(String);

/// Why a text is not a [`NamespacePattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid namespace name or glob {input:?}: {reason}")]
pub struct ParseNamespacePatternError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for NamespacePattern {
    type Err = ParseNamespacePatternError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| {
            Err(ParseNamespacePatternError {
                input: input.to_owned(),
                reason,
            })
        };
        if input.is_empty() {
            return error("empty");
        }
        if let Some(bad) = input
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '*' | '?'))
        {
            return match bad {
                'A'..='Z' => error("namespace names are lowercase"),
                '[' | ']' | '{' | '}' | '!' | '\\' => error("only `*` and `?` are wildcards"),
                _ => error("a namespace name has only a-z, 0-9 and `-` (and a glob `*` and `?`)"),
            };
        }
        if input.chars().filter(|c| *c != '*').count() > MAX_NAMESPACE_CHARS {
            return error("longer than a namespace name can be (63 characters)");
        }
        Ok(Self(input.to_owned()))
    }
}

impl fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl NamespacePattern {
    /// The namespace this names, when it is a name and not a glob.
    pub fn name(&self) -> Option<&str> {
        (!self.0.contains(['*', '?'])).then_some(self.0.as_str())
    }

    /// Whether `namespace` is this name, or matches this glob.
    pub fn matches(&self, namespace: &str) -> bool {
        glob_matches(self.0.as_bytes(), namespace.as_bytes())
    }
}

/// `*` and `?` matching over bytes (both sides are ASCII once parsed; a namespace that is not
/// matches only where the glob's wildcards reach), iterative with one backtrack point, so it is
/// linear in practice and never recursive.
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(b'?') => (g, t) = (g + 1, t + 1),
            Some(c) if *c == text[t] => (g, t) = (g + 1, t + 1),
            _ => match star {
                Some((star_g, star_t)) => {
                    star = Some((star_g, star_t + 1));
                    (g, t) = (star_g + 1, star_t + 1);
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|c| *c == b'*')
}

/// One `modeOverrides` entry: the mode of the namespaces it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeOverride {
    /// Their mode.
    pub mode: Mode,
    /// Names or globs (at least one).
    pub namespaces: Vec<NamespacePattern>,
}

/// Who decides a review's mode: the policy's `mode`, its `modeOverrides` (first match wins) and
/// the weaker modes the namespace label may select (`namespaceLabel.mayLowerTo`, none by
/// default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The mode of every namespace no override names.
    pub mode: Mode,
    /// Per-namespace modes, in the policy file's order.
    pub overrides: Vec<ModeOverride>,
    /// The weaker modes the namespace label may select.
    pub may_lower_to: Vec<Mode>,
}

impl Rollout {
    /// The policy's mode for `namespace`: its first matching override, else [`Rollout::mode`].
    /// A cluster-scoped object (no namespace) gets [`Rollout::mode`].
    pub fn namespace_mode(&self, namespace: Option<&str>) -> Mode {
        namespace
            .and_then(|namespace| {
                self.overrides
                    .iter()
                    .find(|o| o.namespaces.iter().any(|p| p.matches(namespace)))
            })
            .map_or(self.mode, |o| o.mode)
    }

    /// The mode a review about an object in `namespace` is judged in, when the namespace label
    /// asked for `label` (the path `/validate/<label>`, or `--mode`; `None`: the plain
    /// `/validate`). The label's mode applies when it is stricter than the namespace's, and when
    /// it is weaker only if [`Rollout::may_lower_to`] lists it; otherwise the namespace's mode
    /// is kept and the refusal is part of the answer.
    pub fn resolve(&self, namespace: Option<&str>, label: Option<Mode>) -> EffectiveMode {
        let namespace_mode = self.namespace_mode(namespace);
        let (mode, refused) = match label {
            None => (namespace_mode, false),
            Some(label) if !namespace_mode.is_stricter_than(label) => (label, false),
            Some(label) if self.may_lower_to.contains(&label) => (label, false),
            Some(_) => (namespace_mode, true),
        };
        EffectiveMode {
            mode,
            namespace_mode,
            label,
            refused,
        }
    }
}

/// The mode a review is judged in, and how it was chosen ([`Rollout::resolve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveMode {
    mode: Mode,
    namespace_mode: Mode,
    label: Option<Mode>,
    refused: bool,
}

/// A namespace label that asked for a weaker mode than the policy allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedLowering {
    /// The mode the label asked for.
    pub requested: Mode,
    /// The mode the policy kept: the namespace's, which the review is judged in.
    pub kept: Mode,
}

impl EffectiveMode {
    /// A review judged in `mode` without a label and without overrides (the policy's own mode).
    pub fn of(mode: Mode) -> Self {
        Rollout {
            mode,
            ..Rollout::default()
        }
        .resolve(None, None)
    }

    /// The mode the review is judged in.
    pub fn mode(self) -> Mode {
        self.mode
    }

    /// The policy's mode for the namespace (its override, else the policy's `mode`).
    pub fn namespace_mode(self) -> Mode {
        self.namespace_mode
    }

    /// The mode the namespace label asked for, `None` on the plain `/validate` path.
    pub fn label(self) -> Option<Mode> {
        self.label
    }

    /// The label asked for a weaker mode the policy does not let it select.
    pub fn refused_lowering(self) -> Option<RefusedLowering> {
        match (self.refused, self.label) {
            (true, Some(requested)) => Some(RefusedLowering {
                requested,
                kept: self.mode,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for EffectiveMode {
    /// `enforce`, or `enforce (label audit refused)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode.as_str())?;
        match self.refused_lowering() {
            Some(refused) => write!(f, " (label {} refused)", refused.requested),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_mode_parses_from_its_name_and_nothing_else_does() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }
        for bad in ["", "block", "Enforce", "WARN", " audit"] {
            let error = bad.parse::<Mode>().expect_err(bad);
            assert_eq!(error.input, bad);
            assert!(
                error.to_string().contains("enforce, warn, audit"),
                "{error}"
            );
        }
    }

    #[test]
    fn enforce_is_the_default() {
        assert_eq!(Mode::default(), Mode::Enforce);
    }

    #[test]
    fn serde_and_clap_use_the_same_names() {
        for mode in Mode::ALL {
            let read: Mode = serde_json::from_value(mode.as_str().into()).expect("a mode");
            assert_eq!(read, mode);
            let value = mode.to_possible_value().expect("not hidden");
            assert_eq!(value.get_name(), mode.as_str());
        }
        assert!(serde_json::from_value::<Mode>("Warn".into()).is_err());
    }

    #[test]
    fn strictness_orders_enforce_warn_audit() {
        assert!(Mode::Enforce.is_stricter_than(Mode::Warn));
        assert!(Mode::Warn.is_stricter_than(Mode::Audit));
        assert!(Mode::Enforce.is_stricter_than(Mode::Audit));
        for mode in Mode::ALL {
            assert!(!mode.is_stricter_than(mode));
        }
        assert!(!Mode::Audit.is_stricter_than(Mode::Enforce));
    }

    fn pattern(text: &str) -> NamespacePattern {
        text.parse().expect(text)
    }

    #[test]
    fn namespace_globs_match_names_and_wildcards() {
        let cases = [
            ("team-a", "team-a", true),
            ("team-a", "team-ab", false),
            ("team-a", "team", false),
            ("exp-*", "exp-", true),
            ("exp-*", "exp-42", true),
            ("exp-*", "exp", false),
            ("exp-*", "my-exp-1", false),
            ("*-dev", "a-dev", true),
            ("*-dev", "a-dev-b", false),
            ("*", "anything", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "abcbc", true),
            ("a*b*c", "acb", false),
            ("team-?", "team-1", true),
            ("team-?", "team-", false),
            ("team-?", "team-12", false),
            ("**", "", true),
            ("a", "A", false),
        ];
        for (glob, namespace, expected) in cases {
            assert_eq!(
                pattern(glob).matches(namespace),
                expected,
                "{glob} ~ {namespace}"
            );
        }
    }

    #[test]
    fn malformed_namespace_globs_are_refused_with_a_reason() {
        for (bad, reason) in [
            ("", "empty"),
            ("Team-a", "lowercase"),
            ("team_a", "a-z, 0-9"),
            ("team a", "a-z, 0-9"),
            ("team/a", "a-z, 0-9"),
            ("exp-[0-9]", "only `*` and `?`"),
            ("{a,b}", "only `*` and `?`"),
            (&"a".repeat(64), "63 characters"),
        ] {
            let error = bad.parse::<NamespacePattern>().expect_err(bad);
            assert_eq!(error.input, bad);
            assert!(error.to_string().contains(reason), "{error}");
        }
        assert!(
            format!("{}*", "a".repeat(63))
                .parse::<NamespacePattern>()
                .is_ok()
        );
    }

    #[test]
    fn the_namespace_mode_is_the_first_matching_override() {
        let rollout = Rollout {
            mode: Mode::Enforce,
            overrides: vec![
                ModeOverride {
                    mode: Mode::Audit,
                    namespaces: vec![pattern("team-sandbox"), pattern("exp-*")],
                },
                ModeOverride {
                    mode: Mode::Warn,
                    namespaces: vec![pattern("exp-1"), pattern("team-*")],
                },
            ],
            may_lower_to: Vec::new(),
        };
        let of = |namespace| rollout.namespace_mode(namespace);
        assert_eq!(of(Some("team-sandbox")), Mode::Audit);
        assert_eq!(of(Some("exp-1")), Mode::Audit, "first match wins");
        assert_eq!(of(Some("team-b")), Mode::Warn);
        assert_eq!(of(Some("prod")), Mode::Enforce);
        assert_eq!(of(None), Mode::Enforce, "cluster-scoped: the policy's mode");
    }

    /// Every namespace mode × label × mayLowerTo: the label raises always, lowers only to a
    /// listed mode, and a refused lowering keeps the namespace's mode.
    #[test]
    fn a_label_raises_always_and_lowers_only_where_allowed() {
        use Mode::{Audit, Enforce, Warn};
        // (namespace mode, may lower to, label) → (effective, refused)
        type Row = (Mode, &'static [Mode], Option<Mode>, Mode, bool);
        let table: &[Row] = &[
            (Enforce, &[], None, Enforce, false),
            (Enforce, &[], Some(Enforce), Enforce, false),
            (Enforce, &[], Some(Warn), Enforce, true),
            (Enforce, &[], Some(Audit), Enforce, true),
            (Enforce, &[Warn], Some(Warn), Warn, false),
            (Enforce, &[Warn], Some(Audit), Enforce, true),
            (Enforce, &[Warn, Audit], Some(Audit), Audit, false),
            (Warn, &[], None, Warn, false),
            (Warn, &[], Some(Enforce), Enforce, false),
            (Warn, &[], Some(Warn), Warn, false),
            (Warn, &[], Some(Audit), Warn, true),
            (Warn, &[Audit], Some(Audit), Audit, false),
            (Audit, &[], None, Audit, false),
            (Audit, &[], Some(Enforce), Enforce, false),
            (Audit, &[], Some(Warn), Warn, false),
            (Audit, &[], Some(Audit), Audit, false),
        ];
        for &(namespace_mode, may_lower_to, label, effective, refused) in table {
            let rollout = Rollout {
                mode: namespace_mode,
                overrides: Vec::new(),
                may_lower_to: may_lower_to.to_vec(),
            };
            let what = format!("{namespace_mode} {may_lower_to:?} {label:?}");
            let resolved = rollout.resolve(Some("team-a"), label);
            assert_eq!(resolved.mode(), effective, "{what}");
            assert_eq!(resolved.namespace_mode(), namespace_mode, "{what}");
            assert_eq!(resolved.label(), label, "{what}");
            let expected = refused.then(|| RefusedLowering {
                requested: label.unwrap(),
                kept: namespace_mode,
            });
            assert_eq!(resolved.refused_lowering(), expected, "{what}");
        }
        let refused = Rollout::default().resolve(Some("a"), Some(Audit));
        assert_eq!(refused.to_string(), "enforce (label audit refused)");
        assert_eq!(EffectiveMode::of(Warn).to_string(), "warn");
    }
}
