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
    match key.as_bytes() {
        [first, rest @ ..] => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        [] => false,
    }
}

impl FieldPath {
    /// Append the path's text (what `Display` writes) to `out`: keys that are identifiers after
    /// dots, other keys as `["JSON string"]`, indices as `[n]`, the root as `<root>`. Written
    /// straight into the string: paths are written several times per denial (message, causes,
    /// audit annotations, log).
    pub fn write_to(&self, out: &mut String) {
        if self.segments.is_empty() {
            out.push_str("<root>");
            return;
        }
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Key(key) if is_plain_identifier(key) => {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Key(key) => {
                    // JSON string syntax: quotes and backslashes escaped, the same rules parse() reads.
                    out.push('[');
                    let _ = crate::json::write_string(out, key);
                    out.push(']');
                }
                Segment::Index(index) => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "[{index}]");
                }
            }
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(64);
        self.write_to(&mut text);
        f.write_str(&text)
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

/// One step of a [`FieldPattern`]: an exact segment, or `*` for any one key or index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PatternSegment {
    /// Exactly this key or index.
    Exact(Segment),
    /// Any one key or index (`*`).
    Any,
}

/// Parse path text; `*` segments are accepted only when `wildcards` is set.
fn parse_segments(input: &str, wildcards: bool) -> Result<Vec<PatternSegment>, ParsePathError> {
    let fail = |offset, problem| ParsePathError {
        input: input.to_owned(),
        offset,
        problem,
    };
    // A key after `.` (or at the start): an identifier, or `*` in a pattern.
    let key = |text: &str, offset: usize| -> Result<PatternSegment, ParsePathError> {
        if text == "*" && wildcards {
            Ok(PatternSegment::Any)
        } else if is_plain_identifier(text) {
            Ok(PatternSegment::Exact(Segment::Key(text.to_owned())))
        } else if text == "*" {
            Err(fail(offset, "`*` is only allowed in patterns"))
        } else {
            Err(fail(offset, "expected an identifier"))
        }
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
                    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<String>();
                    let quoted = match stream.next() {
                        Some(Ok(quoted)) => quoted,
                        _ => return Err(fail(pos + 1, "unterminated or invalid quoted key")),
                    };
                    let end = pos + 1 + stream.byte_offset();
                    if bytes.get(end) != Some(&b']') {
                        return Err(fail(end, "expected `]` after quoted key"));
                    }
                    segments.push(PatternSegment::Exact(Segment::Key(quoted)));
                    pos = end + 1;
                } else {
                    let close = rest
                        .find(']')
                        .ok_or_else(|| fail(pos, "unterminated `[`"))?;
                    let inner = &rest[..close];
                    if inner == "*" && wildcards {
                        segments.push(PatternSegment::Any);
                    } else if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(fail(pos + 1, "expected a list index or a quoted key"));
                    } else {
                        let index = inner
                            .parse()
                            .map_err(|_| fail(pos + 1, "list index out of range"))?;
                        segments.push(PatternSegment::Exact(Segment::Index(index)));
                    }
                    pos += close + 2;
                }
            }
            b'.' if !segments.is_empty() => {
                pos += 1;
                let len = input[pos..].find(['.', '[']).unwrap_or(input.len() - pos);
                segments.push(key(&input[pos..pos + len], pos)?);
                pos += len;
            }
            _ if segments.is_empty() => {
                let len = input.find(['.', '[']).unwrap_or(input.len());
                segments.push(key(&input[..len], 0)?);
                pos = len;
            }
            _ => return Err(fail(pos, "expected `.` or `[`")),
        }
    }
    Ok(segments)
}

impl FromStr for FieldPath {
    type Err = ParsePathError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let segments = parse_segments(input, false)?
            .into_iter()
            .filter_map(|segment| match segment {
                PatternSegment::Exact(segment) => Some(segment),
                PatternSegment::Any => None,
            })
            .collect();
        Ok(FieldPath { segments })
    }
}

/// A path with `*` wildcards, each standing for exactly one key or index:
/// `spec.pytorchReplicaSpecs.*.template.metadata.labels`. Written and parsed like
/// [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldPattern {
    segments: Vec<PatternSegment>,
}

impl FieldPattern {
    /// Whether `path` equals this pattern or lies inside a field it matches.
    pub fn covers(&self, path: &FieldPath) -> bool {
        path.segments.len() >= self.segments.len() && self.matches_prefix_of(path)
    }

    /// Whether `path` is exactly a field this pattern matches.
    pub fn matches(&self, path: &FieldPath) -> bool {
        path.segments.len() == self.segments.len() && self.matches_prefix_of(path)
    }

    fn matches_prefix_of(&self, path: &FieldPath) -> bool {
        // From the last segment back: patterns mostly share their first segments (`metadata.…`)
        // and differ in the last, which then settles it first.
        self.segments
            .iter()
            .zip(&path.segments)
            .rev()
            .all(|(pattern, segment)| match pattern {
                PatternSegment::Any => true,
                PatternSegment::Exact(exact) => exact == segment,
            })
    }

    /// The pattern's segments.
    pub fn segments(&self) -> &[PatternSegment] {
        &self.segments
    }
}

impl From<FieldPath> for FieldPattern {
    fn from(path: FieldPath) -> Self {
        Self {
            segments: path
                .segments
                .into_iter()
                .map(PatternSegment::Exact)
                .collect(),
        }
    }
}

impl FromStr for FieldPattern {
    type Err = ParsePathError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            segments: parse_segments(input, true)?,
        })
    }
}

impl fmt::Display for FieldPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                PatternSegment::Any if i == 0 => f.write_str("*")?,
                PatternSegment::Any => f.write_str(".*")?,
                PatternSegment::Exact(exact) => {
                    let one = FieldPath {
                        segments: vec![exact.clone()],
                    };
                    let text = one.to_string();
                    if i > 0 && matches!(exact, Segment::Key(k) if is_plain_identifier(k)) {
                        f.write_str(".")?;
                    }
                    f.write_str(&text)?;
                }
            }
        }
        Ok(())
    }
}

impl serde::Serialize for FieldPattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FieldPattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
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
    fn patterns_match_one_segment_per_star() {
        let pattern: FieldPattern = "spec.pytorchReplicaSpecs.*.template.metadata.labels"
            .parse()
            .unwrap();
        assert_eq!(
            pattern.to_string(),
            "spec.pytorchReplicaSpecs.*.template.metadata.labels"
        );
        assert!(pattern.covers(&p(
            "spec.pytorchReplicaSpecs.Worker.template.metadata.labels"
        )));
        assert!(pattern.covers(&p(
            r#"spec.pytorchReplicaSpecs.Master.template.metadata.labels["kueue.x-k8s.io/x"]"#
        )));
        assert!(!pattern.covers(&p("spec.pytorchReplicaSpecs.Worker.template.metadata")));
        assert!(!pattern.covers(&p("spec.pytorchReplicaSpecs.template.metadata.labels.x")));
        assert!(pattern.matches(&p(
            "spec.pytorchReplicaSpecs.Worker.template.metadata.labels"
        )));
        assert!(!pattern.matches(&p(
            "spec.pytorchReplicaSpecs.Worker.template.metadata.labels.a"
        )));
        let list: FieldPattern = r#"*.containers[*]["a.b"]"#.parse().unwrap();
        assert_eq!(list.to_string(), r#"*.containers.*["a.b"]"#);
        assert!(list.covers(&p(r#"x.containers[3]["a.b"].c"#)));
        assert!(
            "spec.*".parse::<FieldPath>().is_err(),
            "no wildcards in paths"
        );
        assert!("spec.**".parse::<FieldPattern>().is_err());
        assert!("spec.a*".parse::<FieldPattern>().is_err());
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
