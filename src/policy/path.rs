//! [`FieldPath`]: the name of one field inside a Kubernetes object, as users read it.
//!
//! A path is a list of [`Segment`]s: object keys and list indices. It is written the way `kubectl
//! explain` and API error messages write fields — `spec.pytorchReplicaSpecs.Worker.replicas`,
//! `spec.containers[0].image` — with keys that are not plain identifiers quoted so the text stays
//! unambiguous: `metadata.labels["app.kubernetes.io/name"]`. Parsing ([`FromStr`]) accepts exactly
//! what [`Display`](fmt::Display) writes, so a path survives a round trip through text (policy
//! files, logs, golden files).
//!
//! Pure data: no I/O, no dependency beyond `serde_json` for quoting.

use std::fmt;
use std::str::FromStr;

/// One step into a JSON value: an object key or a list index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A key of a JSON object.
    Key(String),
    /// A position in a JSON array.
    Index(usize),
}

/// The path of a field inside an object, from its root. Orders segment by segment (keys
/// lexicographically, indices numerically), so sorted paths read in document order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    segments: Vec<Segment>,
}

impl FieldPath {
    /// The empty path: the object itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// The segments from the root down.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether this is the root path.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// This path extended by an object key.
    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.push_key(key);
        path
    }

    /// This path extended by a list index.
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.push_index(index);
        path
    }

    /// Append an object key in place.
    pub fn push_key(&mut self, key: &str) {
        self.segments.push(Segment::Key(key.to_owned()));
    }

    /// Append a list index in place.
    pub fn push_index(&mut self, index: usize) {
        self.segments.push(Segment::Index(index));
    }

    /// Remove the last segment in place.
    pub fn pop(&mut self) -> Option<Segment> {
        self.segments.pop()
    }

    /// Whether `self` equals `prefix` or lies inside it (`spec.runPolicy.backoffLimit` is under
    /// `spec.runPolicy`; `spec.runPolicyX` is not).
    pub fn is_under(&self, prefix: &FieldPath) -> bool {
        self.segments.starts_with(&prefix.segments)
    }

    /// The first `n` segments (all of them when the path is shorter).
    pub fn truncated(&self, n: usize) -> FieldPath {
        FieldPath {
            segments: self.segments[..n.min(self.segments.len())].to_vec(),
        }
    }
}

impl From<Vec<Segment>> for FieldPath {
    fn from(segments: Vec<Segment>) -> Self {
        Self { segments }
    }
}

/// A key that can be written after a dot without quoting: an ASCII identifier.
fn is_plain_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("<root>");
        }
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Key(key) if is_plain_identifier(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                Segment::Key(key) => {
                    // JSON string syntax: quotes and backslashes escaped, the same rules parse() reads.
                    let quoted = serde_json::to_string(key).map_err(|_| fmt::Error)?;
                    write!(f, "[{quoted}]")?;
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Why a string is not a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field path {input:?} at byte {offset}: {problem}")]
pub struct ParsePathError {
    /// The text that was parsed.
    pub input: String,
    /// Where in it the problem starts.
    pub offset: usize,
    /// What is wrong there.
    pub problem: &'static str,
}

impl FromStr for FieldPath {
    type Err = ParsePathError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |offset, problem| ParsePathError {
            input: input.to_owned(),
            offset,
            problem,
        };
        let bytes = input.as_bytes();
        let mut segments = Vec::new();
        let mut pos = 0;
        if input.is_empty() {
            return Err(fail(0, "empty path"));
        }
        while pos < bytes.len() {
            match bytes[pos] {
                b'[' => {
                    let rest = &input[pos + 1..];
                    if rest.starts_with('"') {
                        // A quoted key: a JSON string, then `]`.
                        let mut stream =
                            serde_json::Deserializer::from_str(rest).into_iter::<String>();
                        let key = match stream.next() {
                            Some(Ok(key)) => key,
                            _ => return Err(fail(pos + 1, "unterminated or invalid quoted key")),
                        };
                        let end = pos + 1 + stream.byte_offset();
                        if bytes.get(end) != Some(&b']') {
                            return Err(fail(end, "expected `]` after quoted key"));
                        }
                        segments.push(Segment::Key(key));
                        pos = end + 1;
                    } else {
                        let close = rest
                            .find(']')
                            .ok_or_else(|| fail(pos, "unterminated `[`"))?;
                        let digits = &rest[..close];
                        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(fail(pos + 1, "expected a list index or a quoted key"));
                        }
                        let index = digits
                            .parse()
                            .map_err(|_| fail(pos + 1, "list index out of range"))?;
                        segments.push(Segment::Index(index));
                        pos += close + 2;
                    }
                }
                b'.' if !segments.is_empty() => {
                    pos += 1;
                    let len = input[pos..].find(['.', '[']).unwrap_or(input.len() - pos);
                    let key = &input[pos..pos + len];
                    if !is_plain_identifier(key) {
                        return Err(fail(pos, "expected an identifier after `.`"));
                    }
                    segments.push(Segment::Key(key.to_owned()));
                    pos += len;
                }
                _ if segments.is_empty() => {
                    let len = input.find(['.', '[']).unwrap_or(input.len());
                    let key = &input[..len];
                    if !is_plain_identifier(key) {
                        return Err(fail(0, "expected an identifier"));
                    }
                    segments.push(Segment::Key(key.to_owned()));
                    pos = len;
                }
                _ => return Err(fail(pos, "expected `.` or `[`")),
            }
        }
        Ok(FieldPath { segments })
    }
}

impl serde::Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FieldPath {
        s.parse().expect("valid path")
    }

    #[test]
    fn displays_keys_indices_and_quoted_keys() {
        let path = FieldPath::root()
            .key("spec")
            .key("containers")
            .index(0)
            .key("image");
        assert_eq!(path.to_string(), "spec.containers[0].image");
        let label = FieldPath::root()
            .key("metadata")
            .key("labels")
            .key("app.kubernetes.io/name");
        assert_eq!(
            label.to_string(),
            r#"metadata.labels["app.kubernetes.io/name"]"#
        );
        let odd = FieldPath::root().key("a").key("say \"hi\"\\").key("b-c");
        assert_eq!(odd.to_string(), r#"a["say \"hi\"\\"]["b-c"]"#);
        assert_eq!(FieldPath::root().key("0abc").to_string(), r#"["0abc"]"#);
    }

    #[test]
    fn parses_what_it_displays() {
        for text in [
            "spec",
            "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].image",
            r#"metadata.labels["app.kubernetes.io/name"]"#,
            r#"a["say \"hi\"\\"]["b-c"].d[12][3]"#,
            r#"["0abc"].x"#,
        ] {
            assert_eq!(p(text).to_string(), text, "round trip of {text}");
        }
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "",
            ".spec",
            "spec.",
            "spec..a",
            "spec[",
            "spec[]",
            "spec[x]",
            "spec[-1]",
            "spec[\"a\"",
            "spec[\"a]",
            "spec.a-b",
            "spec a",
            "spec]",
            "spec[0]x",
        ] {
            assert!(bad.parse::<FieldPath>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn under_means_segment_prefix() {
        assert!(p("spec.runPolicy.backoffLimit").is_under(&p("spec.runPolicy")));
        assert!(p("spec.runPolicy").is_under(&p("spec.runPolicy")));
        assert!(!p("spec.runPolicyX").is_under(&p("spec.runPolicy")));
        assert!(!p("spec").is_under(&p("spec.runPolicy")));
    }

    #[test]
    fn orders_indices_numerically() {
        let mut paths = [p("a[10]"), p("a[2]"), p("a.b"), p("a[1].c")];
        paths.sort();
        let shown: Vec<String> = paths.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a.b", "a[1].c", "a[2]", "a[10]"]);
    }
}
