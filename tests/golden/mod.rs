//! Golden files shared by the suites that compare responses byte for byte (`review.rs`,
//! `kinds.rs`, `modes.rs`): compare, or with `PYTORCHJOB_GUARD_BLESS=1` rewrite instead. The
//! fact checks of each suite run either way, so a blessed golden that contradicts a case still
//! fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// Set to `1` to rewrite the golden files instead of comparing them.
pub const BLESS: &str = "PYTORCHJOB_GUARD_BLESS";

/// Whether this run rewrites the goldens.
pub fn blessing() -> bool {
    std::env::var(BLESS).is_ok_and(|v| v == "1")
}

/// Goldens checked so far, and those that differ; [`Goldens::finish`] fails on any.
#[derive(Default)]
pub struct Goldens {
    mismatches: Vec<String>,
}

impl Goldens {
    /// Compare `actual` with the golden at `path` (named `what` in failures), or write it when
    /// blessing.
    pub fn check(&mut self, what: &str, path: &Path, actual: &[u8]) {
        if blessing() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, actual).unwrap();
            return;
        }
        match std::fs::read(path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => self.mismatches.push(format!(
                "{what}:\n  golden {}\n  actual {}",
                String::from_utf8_lossy(&expected).trim_end(),
                String::from_utf8_lossy(actual).trim_end()
            )),
            Err(e) => self.mismatches.push(format!("{}: {e}", path.display())),
        }
    }

    /// Fail when any golden differed.
    pub fn finish(self) {
        assert!(
            self.mismatches.is_empty(),
            "responses differ from the goldens (rerun with {BLESS}=1 if the change is intended):\n{}",
            self.mismatches.join("\n")
        );
    }
}
