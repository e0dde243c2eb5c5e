//! The policy's rollout mode: what happens to an update the rule would deny.
//!
//! A new or tightened policy is rolled out `audit` first (see what it would deny), then `warn`
//! (tell the people sending those updates), then `enforce`. Every mode judges the same way; only
//! what is done with a would-be denial differs. Written in the policy file as `mode:` and on the
//! command line as `--mode` ([`clap::ValueEnum`]).

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
}
