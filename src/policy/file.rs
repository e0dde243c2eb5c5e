//! The policy file (`--policy PATH`, YAML or JSON): the rule as cluster configuration.
//!
//! ```yaml
//! apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1
//! kind: Policy
//! mode: enforce                # optional: enforce (the default), warn or audit
//! kinds:                       # at least one; policies/training-operator.yaml lists every kind
//!   - group: kubeflow.org
//!     kind: PyTorchJob
//!     scaleReplicasPath: spec.pytorchReplicaSpecs.Worker.replicas   # judge pytorchjobs/scale
//! updatable:                   # `*` stands for one key or index
//!   - metadata.labels
//! notCompared: [status]        # optional: the built-in list when absent
//! defaults:                    # optional: the built-in list when absent
//!   - {path: spec.runPolicy.suspend, value: false}
//! emptyIsAbsent: [spec.runPolicy]   # optional: the built-in list when absent
//! exemptions:
//!   - name: kueue
//!     serviceAccounts: ["kueue-system:kueue-controller-manager"]
//!     paths: [spec.runPolicy.suspend]   # optional: any field when absent
//! modeOverrides:               # optional: per namespace; first match wins
//!   - mode: audit
//!     namespaces: [team-sandbox, "exp-*"]   # names or globs (`*`, `?`)
//! namespaceLabel:              # optional
//!   mayLowerTo: [warn]         # weaker modes the namespace label may select; default: none
//! ```
//!
//! `mode` is the rollout mode ([`Mode`]): `enforce` denies an update the rule forbids; `warn`
//! allows it with a warning kubectl shows naming the fields `enforce` would deny, and records
//! the would-be denial in the audit annotations; `audit` records it without the warning.
//! `modeOverrides` and `namespaceLabel` decide which mode a namespace gets and how far its label
//! may move it ([`Rollout`]).
//!
//! Parsing is strict: unknown keys, malformed paths, empty lists where something is required,
//! identities in the wrong form, an unknown mode, a malformed namespace glob or `enforce` in
//! `mayLowerTo` are errors ([`PolicyFileError`]) that name the line, so a server never runs a
//! policy it misread. The document is read with paths,
//! names and identities as plain strings and checked afterwards, each found in the text by its
//! own value, so an error names the line of the bad item rather than where its list starts.
//! Pure: text in, [`Policy`] out.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use super::mode::{ParseModeError, ParseNamespacePatternError};
use super::{
    DEFAULT_EMPTY_IS_ABSENT, DEFAULT_NOT_COMPARED, DEFAULT_SCHEMA_DEFAULTS, Exemption, FieldPath,
    FieldPattern, GovernedKind, Mode, ModeOverride, NamespacePattern, ParsePathError, Policy,
    Rollout,
};

/// The `apiVersion` a policy file declares.
pub const API_VERSION: &str = "pytorchjob-guard.kubeflow.org/v1alpha1";
/// The `kind` a policy file declares.
pub const KIND: &str = "Policy";

/// Where something is in the policy text (1-based), as far as it could be found.
///
/// Displays as ` at line L column C`, ` at line L` or nothing, to follow what it locates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Location {
    /// Not found in the text (a value written with escapes, say).
    #[default]
    Unknown,
    /// The line of a top-level key.
    Line(usize),
    /// The line and column (in characters) where a value starts.
    LineColumn(usize, usize),
}

impl Location {
    /// The line, when known.
    pub fn line(self) -> Option<usize> {
        match self {
            Location::Unknown => None,
            Location::Line(line) | Location::LineColumn(line, _) => Some(line),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Unknown => Ok(()),
            Location::Line(line) => write!(f, " at line {line}"),
            Location::LineColumn(line, column) => write!(f, " at line {line} column {column}"),
        }
    }
}

/// A policy file that cannot be used: what is wrong, and where.
///
/// Items are named by their place in the document (`exemptions[0].serviceAccounts[1]`); a
/// cause (the YAML parser's error, a path's) is the [`std::error::Error::source`], so
/// `{:#}` of an `anyhow::Error` shows it after the item.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// Not YAML, or not shaped like a policy (unknown or missing keys, wrong types); the
    /// parser's error names the line where it knows it.
    #[error("malformed policy document")]
    Syntax {
        /// Where the parser stopped, when it knows.
        line: Option<usize>,
        /// The parser's error.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// The document is not a policy of this version.
    #[error(
        "expected apiVersion {API_VERSION:?} and kind {KIND:?}, found {api_version:?} and {kind:?}{at}"
    )]
    WrongType {
        /// The `apiVersion` found.
        api_version: String,
        /// The `kind` found.
        kind: String,
        /// Where the wrong one is.
        at: Location,
    },
    /// `mode` is not a mode.
    #[error("mode{at}")]
    Mode {
        /// Where its value is.
        at: Location,
        /// What is wrong with it.
        #[source]
        source: ParseModeError,
    },
    /// A mode in `modeOverrides` or `namespaceLabel.mayLowerTo` is not a mode.
    #[error("{item}{at}")]
    ModeItem {
        /// Which item (`modeOverrides[0].mode`).
        item: String,
        /// Where it is.
        at: Location,
        /// What is wrong with it.
        #[source]
        source: ParseModeError,
    },
    /// `namespaceLabel.mayLowerTo` lists `enforce`, which is never a lowering.
    #[error("{item}: enforce is the strictest mode, a label never lowers to it{at}")]
    NotALowering {
        /// Which item (`namespaceLabel.mayLowerTo[0]`).
        item: String,
        /// Where it is.
        at: Location,
    },
    /// A namespace in `modeOverrides` is neither a namespace name nor a glob of one.
    #[error("{item}{at}")]
    Namespace {
        /// Which item (`modeOverrides[0].namespaces[1]`).
        item: String,
        /// Where it is.
        at: Location,
        /// What is wrong with it.
        #[source]
        source: ParseNamespacePatternError,
    },
    /// `kinds` is empty: a policy that governs nothing is a mistake.
    #[error("kinds: the list must not be empty: name at least one kind to govern{at}")]
    NoKinds {
        /// Where `kinds` is.
        at: Location,
    },
    /// A kind is listed twice.
    #[error("kinds: {group}/{kind} is listed twice{at}")]
    DuplicateKind {
        /// Its group.
        group: String,
        /// The kind.
        kind: String,
        /// Where the second entry names it.
        at: Location,
    },
    /// A name, kind, group, user or group is empty.
    #[error("{item}: an empty name{at}")]
    EmptyName {
        /// Which item (`kinds[0].kind`).
        item: String,
        /// Where it is.
        at: Location,
    },
    /// A list that must hold something is empty.
    #[error("{item}: the list must not be empty{at}")]
    EmptyList {
        /// Which list (`exemptions[0].paths`).
        item: String,
        /// Where it is.
        at: Location,
    },
    /// A field path or pattern does not parse.
    #[error("{item}{at}")]
    Path {
        /// Which item (`updatable[2]`).
        item: String,
        /// Where it is.
        at: Location,
        /// What is wrong with it.
        #[source]
        source: ParsePathError,
    },
    /// A service account is not written `namespace:name`.
    #[error("{item}: service account {account:?} is not written `namespace:name`{at}")]
    ServiceAccount {
        /// Which item (`exemptions[0].serviceAccounts[1]`).
        item: String,
        /// What was written.
        account: String,
        /// Where it is.
        at: Location,
    },
    /// An exemption exempts nobody.
    #[error("exemption {name:?} names no users, groups or serviceAccounts{at}")]
    NoIdentities {
        /// The exemption's name.
        name: String,
        /// Where its name is.
        at: Location,
    },
    /// Two exemptions have the same name (messages and annotations could not tell them apart).
    #[error("exemptions: the name {name:?} is used twice{at}")]
    DuplicateExemption {
        /// The name.
        name: String,
        /// Where the second exemption has it.
        at: Location,
    },
}

type Result<T, E = PolicyFileError> = std::result::Result<T, E>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyDocument {
    api_version: String,
    kind: String,
    mode: Option<String>,
    kinds: Vec<KindEntry>,
    updatable: Vec<String>,
    not_compared: Option<Vec<String>>,
    defaults: Option<Vec<DefaultEntry>>,
    empty_is_absent: Option<Vec<String>>,
    #[serde(default)]
    exemptions: Vec<ExemptionEntry>,
    #[serde(default)]
    mode_overrides: Vec<OverrideEntry>,
    namespace_label: Option<NamespaceLabelEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideEntry {
    mode: String,
    namespaces: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceLabelEntry {
    #[serde(default)]
    may_lower_to: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KindEntry {
    group: String,
    kind: String,
    resource: Option<String>,
    scale_replicas_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultEntry {
    path: String,
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExemptionEntry {
    name: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    service_accounts: Vec<String>,
    paths: Option<Vec<String>>,
}

/// The policy text, searched for the values parsed from it.
struct Text<'a>(&'a str);

/// Where the next item of a list is looked for in the [`Text`]: from `from` on, or, for the
/// fields of one entry (written in any order), from the entry's `origin`.
#[derive(Clone, Copy)]
struct Cursor {
    origin: usize,
    from: usize,
    furthest: usize,
}

impl Cursor {
    fn at(offset: usize) -> Self {
        Self {
            origin: offset,
            from: offset,
            furthest: offset,
        }
    }

    /// A cursor for the next entry of this list: past everything found so far.
    fn entry(&mut self) -> Self {
        self.from = self.furthest;
        Self::at(self.furthest)
    }

    /// A cursor inside the current entry, from `from` on.
    fn inner(&self, from: usize) -> Self {
        Self {
            origin: from,
            from,
            furthest: self.furthest,
        }
    }

    /// Take note of what a cursor inside the current entry found.
    fn reach(&mut self, inner: Cursor) {
        self.furthest = self.furthest.max(inner.furthest);
    }
}

/// Characters that may come right before a value: it starts a plain or quoted scalar.
fn opens(c: char) -> bool {
    c.is_whitespace() || matches!(c, '[' | '{' | ',' | '"' | '\'')
}

/// Characters that may come right after a value: it ends a plain or quoted scalar.
fn closes(c: char) -> bool {
    c.is_whitespace() || matches!(c, ']' | '}' | ',' | '"' | '\'' | '#')
}

impl Text<'_> {
    /// The top-level `key` (a YAML line `key:`, or JSON `"key"`): its line, and a cursor there.
    fn section(&self, key: &str) -> (Location, Cursor) {
        let (yaml, json) = (format!("{key}:"), format!("\"{key}\""));
        let mut offset = 0;
        for (index, line) in self.0.split_inclusive('\n').enumerate() {
            if let Some(at) = line.find(&json).or(line.starts_with(&yaml).then_some(0)) {
                return (Location::Line(index + 1), Cursor::at(offset + at));
            }
            offset += line.len();
        }
        (Location::Unknown, Cursor::at(0))
    }

    /// The line and column of a byte offset.
    fn location(&self, offset: usize) -> Location {
        let before = &self.0[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location::LineColumn(
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1,
        )
    }

    /// Whether `offset` is inside a comment (after a `#` that starts the line or follows a
    /// space).
    fn in_comment(&self, offset: usize) -> bool {
        let before = &self.0[..offset];
        let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
        line.trim_start().starts_with('#') || line.contains(" #")
    }

    /// The first `needle` at or after `from`, outside comments, with a character `before` may
    /// accept (or the start) before it and one `after` accepts (or the end) after it.
    fn find(
        &self,
        from: usize,
        needle: &str,
        before: impl Fn(char) -> bool,
        after: impl Fn(char) -> bool,
    ) -> Option<(usize, usize)> {
        let mut start = from;
        while let Some(found) = self.0.get(start..)?.find(needle) {
            let (at, end) = (start + found, start + found + needle.len());
            if self.0[..at].chars().next_back().is_none_or(&before)
                && self.0[end..].chars().next().is_none_or(&after)
                && !self.in_comment(at)
            {
                return Some((at, end));
            }
            start = end;
        }
        None
    }

    /// Where `value` is written at or after `from`: plain or quoted, or, when blank, quoted.
    fn find_value(&self, from: usize, value: &str) -> Option<(usize, usize)> {
        if value.trim().is_empty() {
            let after_key = |c: char| opens(c) || c == ':';
            [format!("\"{value}\""), format!("'{value}'")]
                .iter()
                .find_map(|quoted| self.find(from, quoted, after_key, closes))
        } else {
            self.find(from, value, opens, closes)
        }
    }

    /// The next item of a list: where it is, moving the cursor past it.
    fn next(&self, cursor: &mut Cursor, value: &str) -> Location {
        match self.find_value(cursor.from, value) {
            Some((at, end)) => {
                cursor.from = end;
                cursor.furthest = cursor.furthest.max(end);
                self.location(at)
            }
            None => Location::Unknown,
        }
    }

    /// Where the key `key` of the entry the cursor is in is written (`key:`, or JSON `"key"`),
    /// looked for from the entry's start.
    fn key(&self, cursor: &Cursor, key: &str) -> Option<(usize, usize)> {
        self.find(cursor.origin, key, opens, |c| c == ':' || c == '"')
    }

    /// A cursor for what follows the key `key` of the entry `cursor` is in.
    fn after_key(&self, cursor: &Cursor, key: &str) -> Cursor {
        cursor.inner(self.key(cursor, key).map_or(cursor.origin, |(_, end)| end))
    }

    /// The value of the field `key` of the entry the cursor is in: where it is.
    fn field(&self, cursor: &mut Cursor, key: &str, value: &str) -> Location {
        let mut inner = self.after_key(cursor, key);
        let at = self.next(&mut inner, value);
        cursor.reach(inner);
        at
    }
}

/// A name that must not be blank.
fn name(item: String, value: String, at: Location) -> Result<String> {
    if value.trim().is_empty() {
        Err(PolicyFileError::EmptyName { item, at })
    } else {
        Ok(value)
    }
}

/// A field path or pattern.
fn path<T: FromStr<Err = ParsePathError>>(item: String, value: &str, at: Location) -> Result<T> {
    value
        .parse()
        .map_err(|source| PolicyFileError::Path { item, at, source })
}

/// A service account written `namespace:name`.
fn service_account(item: String, account: String, at: Location) -> Result<String> {
    match account.split_once(':') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains(':') =>
        {
            Ok(account)
        }
        _ => Err(PolicyFileError::ServiceAccount { item, account, at }),
    }
}

/// Each item of the list `list` checked by `check`, named `list[i]` and found from `cursor`.
fn each<T>(
    text: &Text<'_>,
    cursor: &mut Cursor,
    list: &str,
    values: Vec<String>,
    check: impl Fn(String, String, Location) -> Result<T>,
) -> Result<Vec<T>> {
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let at = text.next(cursor, &value);
            check(format!("{list}[{index}]"), value, at)
        })
        .collect()
}

/// The list `key` of the entry `fields` is in (named `entry`), read after its key.
fn inner_list<T>(
    text: &Text<'_>,
    fields: &mut Cursor,
    (entry, key): (&str, &str),
    values: Vec<String>,
    check: impl Fn(String, String, Location) -> Result<T>,
) -> Result<Vec<T>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let mut items = text.after_key(fields, key);
    let checked = each(text, &mut items, &format!("{entry}.{key}"), values, check);
    fields.reach(items);
    checked
}

/// The top-level list of patterns `key`.
fn patterns(text: &Text<'_>, key: &str, values: Vec<String>) -> Result<Vec<FieldPattern>> {
    let mut cursor = text.section(key).1;
    each(text, &mut cursor, key, values, |item, value, at| {
        path(item, &value, at)
    })
}

fn builtin_patterns(paths: &[&str]) -> Vec<FieldPattern> {
    paths
        .iter()
        .map(|p| p.parse().expect("built-in paths are valid"))
        .collect()
}

fn kinds(text: &Text<'_>, entries: Vec<KindEntry>) -> Result<Vec<GovernedKind>> {
    let (at, mut list) = text.section("kinds");
    if entries.is_empty() {
        return Err(PolicyFileError::NoKinds { at });
    }
    let mut kinds: Vec<GovernedKind> = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let mut fields = list.entry();
        let item = |field: &str| format!("kinds[{index}].{field}");
        let group_at = text.field(&mut fields, "group", &entry.group);
        let group = name(item("group"), entry.group, group_at)?;
        let kind_at = text.field(&mut fields, "kind", &entry.kind);
        let kind_name = name(item("kind"), entry.kind, kind_at)?;
        let mut kind = GovernedKind::new(&group, &kind_name);
        if let Some(resource) = entry.resource {
            let at = text.field(&mut fields, "resource", &resource);
            kind.resource = name(item("resource"), resource, at)?;
        }
        if let Some(scale) = entry.scale_replicas_path {
            let at = text.field(&mut fields, "scaleReplicasPath", &scale);
            kind.scale_replicas = Some(path::<FieldPath>(item("scaleReplicasPath"), &scale, at)?);
        }
        list.reach(fields);
        if kinds
            .iter()
            .any(|k| k.group == group && k.kind == kind_name)
        {
            return Err(PolicyFileError::DuplicateKind {
                group,
                kind: kind_name,
                at: kind_at,
            });
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

fn defaults(text: &Text<'_>, entries: Vec<DefaultEntry>) -> Result<Vec<(FieldPattern, Value)>> {
    let mut list = text.section("defaults").1;
    entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let at = text.next(&mut list, &entry.path);
            Ok((
                path(format!("defaults[{index}].path"), &entry.path, at)?,
                entry.value,
            ))
        })
        .collect()
}

fn exemptions(text: &Text<'_>, entries: Vec<ExemptionEntry>) -> Result<Vec<Exemption>> {
    let mut list = text.section("exemptions").1;
    let mut exemptions: Vec<Exemption> = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let mut fields = list.entry();
        let entry_name = format!("exemptions[{index}]");
        let item = |field: &str| format!("{entry_name}.{field}");
        let name_at = text.field(&mut fields, "name", &entry.name);
        let exemption_name = name(item("name"), entry.name, name_at)?;
        let users = inner_list(text, &mut fields, (&entry_name, "users"), entry.users, name)?;
        let groups = inner_list(
            text,
            &mut fields,
            (&entry_name, "groups"),
            entry.groups,
            name,
        )?;
        let service_accounts = inner_list(
            text,
            &mut fields,
            (&entry_name, "serviceAccounts"),
            entry.service_accounts,
            service_account,
        )?;
        let paths = match entry.paths {
            Some(values) if values.is_empty() => {
                return Err(PolicyFileError::EmptyList {
                    item: item("paths"),
                    at: text
                        .key(&fields, "paths")
                        .map_or(Location::Unknown, |(at, _)| text.location(at)),
                });
            }
            Some(values) => Some(inner_list(
                text,
                &mut fields,
                (&entry_name, "paths"),
                values,
                |item, value, at| path(item, &value, at),
            )?),
            None => None,
        };
        list.reach(fields);
        if users.is_empty() && groups.is_empty() && service_accounts.is_empty() {
            return Err(PolicyFileError::NoIdentities {
                name: exemption_name,
                at: name_at,
            });
        }
        if exemptions.iter().any(|e| e.name == exemption_name) {
            return Err(PolicyFileError::DuplicateExemption {
                name: exemption_name,
                at: name_at,
            });
        }
        exemptions.push(Exemption {
            name: exemption_name,
            users,
            groups,
            service_accounts,
            paths,
        });
    }
    Ok(exemptions)
}

/// A mode named in a list item.
fn mode_item(item: String, value: String, at: Location) -> Result<Mode> {
    value
        .parse()
        .map_err(|source| PolicyFileError::ModeItem { item, at, source })
}

/// `modeOverrides`: each entry's mode and its (non-empty) namespace names or globs.
fn mode_overrides(text: &Text<'_>, entries: Vec<OverrideEntry>) -> Result<Vec<ModeOverride>> {
    let mut list = text.section("modeOverrides").1;
    let mut overrides = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let mut fields = list.entry();
        let entry_name = format!("modeOverrides[{index}]");
        let mode_at = text.field(&mut fields, "mode", &entry.mode);
        let mode = mode_item(format!("{entry_name}.mode"), entry.mode, mode_at)?;
        if entry.namespaces.is_empty() {
            return Err(PolicyFileError::EmptyList {
                item: format!("{entry_name}.namespaces"),
                at: text
                    .key(&fields, "namespaces")
                    .map_or(Location::Unknown, |(at, _)| text.location(at)),
            });
        }
        let namespaces = inner_list(
            text,
            &mut fields,
            (&entry_name, "namespaces"),
            entry.namespaces,
            |item, value, at| {
                value
                    .parse::<NamespacePattern>()
                    .map_err(|source| PolicyFileError::Namespace { item, at, source })
            },
        )?;
        list.reach(fields);
        overrides.push(ModeOverride { mode, namespaces });
    }
    Ok(overrides)
}

/// `namespaceLabel.mayLowerTo`: weaker modes only (`warn`, `audit`).
fn may_lower_to(text: &Text<'_>, label: Option<NamespaceLabelEntry>) -> Result<Vec<Mode>> {
    let Some(label) = label else {
        return Ok(Vec::new());
    };
    let mut section = text.section("namespaceLabel").1;
    inner_list(
        text,
        &mut section,
        ("namespaceLabel", "mayLowerTo"),
        label.may_lower_to,
        |item, value, at| match mode_item(item.clone(), value, at)? {
            Mode::Enforce => Err(PolicyFileError::NotALowering { item, at }),
            mode => Ok(mode),
        },
    )
}

/// Parse a policy file (YAML, or JSON, which is YAML too).
pub fn parse(text: &str) -> Result<Policy> {
    let document: PolicyDocument =
        serde_yaml_ng::from_str(text).map_err(|source| PolicyFileError::Syntax {
            line: source.location().map(|location| location.line()),
            source,
        })?;
    let text = Text(text);
    if document.api_version != API_VERSION || document.kind != KIND {
        let wrong = if document.api_version != API_VERSION {
            "apiVersion"
        } else {
            "kind"
        };
        return Err(PolicyFileError::WrongType {
            api_version: document.api_version,
            kind: document.kind,
            at: text.section(wrong).0,
        });
    }
    let mode = match document.mode {
        Some(value) => value.parse().map_err(|source| PolicyFileError::Mode {
            at: text.next(&mut text.section("mode").1, &value),
            source,
        })?,
        None => Mode::default(),
    };
    let kinds = kinds(&text, document.kinds)?;
    let updatable = patterns(&text, "updatable", document.updatable)?;
    let not_compared = match document.not_compared {
        Some(values) => patterns(&text, "notCompared", values)?,
        None => builtin_patterns(DEFAULT_NOT_COMPARED),
    };
    let defaults = match document.defaults {
        Some(entries) => defaults(&text, entries)?,
        None => DEFAULT_SCHEMA_DEFAULTS
            .iter()
            .map(|(path, value)| {
                (
                    path.parse().expect("built-in paths are valid"),
                    Value::Bool(*value),
                )
            })
            .collect(),
    };
    let empty_is_absent = match document.empty_is_absent {
        Some(values) => patterns(&text, "emptyIsAbsent", values)?,
        None => builtin_patterns(DEFAULT_EMPTY_IS_ABSENT),
    };
    let exemptions = exemptions(&text, document.exemptions)?;
    let rollout = Rollout {
        mode,
        overrides: mode_overrides(&text, document.mode_overrides)?,
        may_lower_to: may_lower_to(&text, document.namespace_label)?,
    };
    Ok(
        Policy::new(kinds, updatable, not_compared, defaults, exemptions)
            .with_empty_is_absent(empty_is_absent)
            .with_rollout(rollout),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1
kind: Policy
kinds:
  - group: kubeflow.org
    kind: PyTorchJob
updatable:
  - metadata.labels
";

    /// The error with its causes, as the command line prints it.
    fn error_of(text: &str) -> String {
        format!(
            "{:#}",
            anyhow::Error::new(parse(text).expect_err("must be rejected"))
        )
    }

    #[test]
    fn a_minimal_policy_takes_builtin_not_compared_and_defaults() {
        let policy = parse(MINIMAL).unwrap();
        assert!(policy.governed_kind("kubeflow.org", "PyTorchJob").is_some());
        assert_eq!(policy.kinds()[0].resource, "pytorchjobs");
        assert_eq!(policy.not_compared().len(), DEFAULT_NOT_COMPARED.len());
        assert_eq!(policy.defaults().len(), DEFAULT_SCHEMA_DEFAULTS.len());
        assert_eq!(
            policy.empty_is_absent().len(),
            DEFAULT_EMPTY_IS_ABSENT.len()
        );
        assert_eq!(
            policy.updatable_summary(),
            "only metadata.labels may change"
        );
    }

    #[test]
    fn json_is_accepted() {
        let json = r#"{"apiVersion": "pytorchjob-guard.kubeflow.org/v1alpha1", "kind": "Policy",
            "kinds": [{"group": "kubeflow.org", "kind": "TFJob"}], "updatable": ["metadata.labels"]}"#;
        assert!(
            parse(json)
                .unwrap()
                .governed_kind("kubeflow.org", "TFJob")
                .is_some()
        );
    }

    #[test]
    fn every_error_names_what_and_where() {
        let cases: &[(&str, &str)] = &[
            (
                &MINIMAL.replace("updatable:", "updateable:"),
                "unknown field `updateable`",
            ),
            (
                &MINIMAL.replace(
                    "    kind: PyTorchJob\n",
                    "    kind: PyTorchJob\n    scale: x\n",
                ),
                "unknown field `scale`",
            ),
            (
                &MINIMAL.replace("  - metadata.labels", "  - metadata..labels"),
                "invalid field path",
            ),
            (
                &MINIMAL.replace("  - metadata.labels", "  - spec.a-b"),
                "expected an identifier",
            ),
            (
                &format!("{MINIMAL}emptyIsAbsent:\n  - spec.runPolicy\n  - spec..template\n"),
                "emptyIsAbsent[1] at line 10 column 5: invalid field path",
            ),
            (
                "apiVersion: pytorchjob-guard.kubeflow.org/v1alpha1\nkind: Policy\nkinds: []\nupdatable: []\n",
                "the list must not be empty",
            ),
            (
                &MINIMAL.replace("kind: PyTorchJob", "kind: \"\""),
                "an empty name",
            ),
            (
                &format!("{MINIMAL}exemptions:\n  - name: kueue\n"),
                "names no users, groups or serviceAccounts",
            ),
            (
                &format!(
                    "{MINIMAL}exemptions:\n  - name: kueue\n    serviceAccounts: [kueue-controller-manager]\n"
                ),
                "is not written `namespace:name`",
            ),
            (
                &format!("{MINIMAL}exemptions:\n  - name: kueue\n    users: [a]\n    paths: []\n"),
                "the list must not be empty",
            ),
            (
                &MINIMAL.replace("kind: Policy", "kind: Polcy"),
                "expected apiVersion",
            ),
            (
                &MINIMAL.replace("updatable:\n  - metadata.labels\n", ""),
                "missing field `updatable`",
            ),
            ("kinds: [", "did not find expected node content at line 2"),
        ];
        for (text, expected) in cases {
            let error = error_of(text);
            assert!(
                error.contains(expected),
                "{error:?} lacks {expected:?} for:\n{text}"
            );
            if !expected.starts_with("missing field") {
                assert!(
                    error.contains("line "),
                    "{error:?} names no line for:\n{text}"
                );
            }
        }
        let twice = MINIMAL.replace(
            "kinds:\n",
            "kinds:\n  - group: kubeflow.org\n    kind: PyTorchJob\n",
        );
        assert!(error_of(&twice).contains("listed twice"));
    }

    #[test]
    fn errors_name_the_offending_line() {
        let error = error_of(&MINIMAL.replace("  - metadata.labels", "  - metadata..labels"));
        assert!(error.contains("line 7 column 5"), "{error}");
        // Not the line where the list starts: the line of the bad item.
        let third = MINIMAL.replace(
            "  - metadata.labels\n",
            "  - metadata.labels\n  - metadata.annotations\n  - spec.a-b\n",
        );
        assert!(
            error_of(&third).contains("line 9 column 5"),
            "{}",
            error_of(&third)
        );
        let account = format!(
            "{MINIMAL}exemptions:\n  - name: kueue\n    serviceAccounts:\n      - a:b\n      - nocolon\n"
        );
        assert!(
            error_of(&account).contains("line 12 column 9"),
            "{}",
            error_of(&account)
        );
    }

    #[test]
    fn the_mode_is_read_strictly_and_enforce_by_default() {
        assert_eq!(parse(MINIMAL).unwrap().mode(), Mode::Enforce);
        for mode in Mode::ALL {
            let text = MINIMAL.replace("kinds:\n", &format!("mode: {mode}\nkinds:\n"));
            assert_eq!(parse(&text).unwrap().mode(), mode, "{text}");
        }
        let json = r#"{"apiVersion": "pytorchjob-guard.kubeflow.org/v1alpha1", "kind": "Policy",
            "mode": "audit", "kinds": [{"group": "kubeflow.org", "kind": "TFJob"}], "updatable": []}"#;
        assert_eq!(parse(json).unwrap().mode(), Mode::Audit);
        let block = MINIMAL.replace("kinds:\n", "mode: block\nkinds:\n");
        let error = parse(&block).expect_err("an unknown mode");
        assert!(
            matches!(&error, PolicyFileError::Mode { at: Location::LineColumn(3, 7), source } if source.input == "block"),
            "{error:?}"
        );
        assert_eq!(
            error_of(&block),
            "mode at line 3 column 7: unknown mode \"block\": expected one of enforce, warn, audit"
        );
        // Names are lowercase, as on the command line.
        assert!(parse(&MINIMAL.replace("kinds:\n", "mode: Warn\nkinds:\n")).is_err());
    }

    #[test]
    fn a_message_leaves_its_cause_to_the_source() {
        let error =
            parse(&MINIMAL.replace("  - metadata.labels", "  - spec.a-b")).expect_err("a bad path");
        let cause = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<ParsePathError>())
            .expect("the path error is the source");
        assert_eq!(cause.input, "spec.a-b");
        assert_eq!(error.to_string(), "updatable[0] at line 7 column 5");
        let syntax = parse("kinds: [").expect_err("not YAML");
        assert!(matches!(
            syntax,
            PolicyFileError::Syntax { line: Some(2), .. }
        ));
        assert_eq!(syntax.to_string(), "malformed policy document");
    }

    #[test]
    fn repeated_entries_are_located_at_the_repeat() {
        let twice = MINIMAL.replace(
            "updatable:",
            "  - group: kubeflow.org\n    kind: PyTorchJob\nupdatable:",
        );
        assert_eq!(
            error_of(&twice),
            "kinds: kubeflow.org/PyTorchJob is listed twice at line 7 column 11"
        );
        let names = format!(
            "{MINIMAL}exemptions:\n  - name: kueue\n    users: [a]\n  - name: kueue\n    groups: [b]\n"
        );
        assert_eq!(
            error_of(&names),
            "exemptions: the name \"kueue\" is used twice at line 11 column 11"
        );
    }

    #[test]
    fn an_item_is_found_by_its_own_value_not_by_others_like_it() {
        // The same text earlier in a comment, in another field and in a longer value.
        let account = format!(
            "{MINIMAL}# nocolon is wrong\nexemptions:\n  - name: nocolon\n    users: [x-nocolon]\n    serviceAccounts: [\"a:nocolon\", nocolon]\n"
        );
        assert!(
            error_of(&account).ends_with("is not written `namespace:name` at line 12 column 36"),
            "{}",
            error_of(&account)
        );
        // Flow lists and JSON: the column of the item on its line.
        let flow = MINIMAL.replace(
            "updatable:\n  - metadata.labels\n",
            "updatable: [metadata.labels, spec.a-b]\n",
        );
        assert!(error_of(&flow).starts_with("updatable[1] at line 6 column 30: "));
        let json = r#"{"apiVersion": "pytorchjob-guard.kubeflow.org/v1alpha1", "kind": "Policy",
 "kinds": [{"group": "kubeflow.org", "kind": "TFJob", "scaleReplicasPath": "spec..x"}], "updatable": []}"#;
        assert!(
            error_of(json).starts_with("kinds[0].scaleReplicasPath at line 2 column 77: "),
            "{}",
            error_of(json)
        );
        // A value the text spells differently (escaped) still names its item.
        let escaped = MINIMAL.replace("  - metadata.labels", "  - \"spec.\\x61-b\"");
        assert!(
            error_of(&escaped).starts_with("updatable[0]: invalid field path \"spec.a-b\""),
            "{}",
            error_of(&escaped)
        );
    }

    #[test]
    fn mode_overrides_and_may_lower_to_are_read_in_order() {
        let text = format!(
            "{MINIMAL}mode: warn\nmodeOverrides:\n  - mode: audit\n    namespaces: [team-sandbox, \"exp-*\"]\n  - namespaces:\n      - prod-?\n    mode: enforce\nnamespaceLabel:\n  mayLowerTo: [audit]\n"
        );
        let policy = parse(&text).unwrap();
        let rollout = policy.rollout();
        assert_eq!(rollout.mode, Mode::Warn);
        assert_eq!(rollout.overrides.len(), 2);
        assert_eq!(rollout.overrides[0].mode, Mode::Audit);
        let names: Vec<String> = rollout.overrides[0]
            .namespaces
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["team-sandbox", "exp-*"]);
        assert_eq!(rollout.overrides[1].mode, Mode::Enforce);
        assert_eq!(rollout.may_lower_to, [Mode::Audit]);
        assert_eq!(rollout.namespace_mode(Some("exp-3")), Mode::Audit);
        assert_eq!(rollout.namespace_mode(Some("prod-1")), Mode::Enforce);
        assert_eq!(rollout.namespace_mode(Some("team-a")), Mode::Warn);
        // Absent: no overrides, and the label may only raise.
        let plain = parse(MINIMAL).unwrap();
        assert!(plain.rollout().overrides.is_empty());
        assert!(plain.rollout().may_lower_to.is_empty());
        let json = r#"{"apiVersion": "pytorchjob-guard.kubeflow.org/v1alpha1", "kind": "Policy",
            "kinds": [{"group": "kubeflow.org", "kind": "TFJob"}], "updatable": [],
            "modeOverrides": [{"mode": "warn", "namespaces": ["a"]}], "namespaceLabel": {"mayLowerTo": ["warn", "audit"]}}"#;
        let json = parse(json).unwrap();
        assert_eq!(json.rollout().overrides[0].mode, Mode::Warn);
        assert_eq!(json.rollout().may_lower_to, [Mode::Warn, Mode::Audit]);
    }

    /// Each mistake in the new keys is an error naming the item and its line.
    #[test]
    fn mode_override_and_label_errors_name_the_item_and_line() {
        let overrides = |entries: &str| format!("{MINIMAL}modeOverrides:\n{entries}");
        let cases: &[(String, &str)] = &[
            (
                overrides("  - mode: block\n    namespaces: [a]\n"),
                "modeOverrides[0].mode at line 9 column 11: unknown mode \"block\": expected one of enforce, warn, audit",
            ),
            (
                overrides(
                    "  - mode: audit\n    namespaces: [a]\n  - mode: audit\n    namespaces: []\n",
                ),
                "modeOverrides[1].namespaces: the list must not be empty at line 12 column 5",
            ),
            (
                overrides("  - mode: audit\n    namespaces:\n      - team-a\n      - Team-B\n"),
                "modeOverrides[0].namespaces[1] at line 12 column 9: invalid namespace name or glob \"Team-B\": namespace names are lowercase",
            ),
            (
                overrides("  - mode: audit\n    namespaces: [\"exp-[0-9]\"]\n"),
                "modeOverrides[0].namespaces[0] at line 10 column 19: invalid namespace name or glob \"exp-[0-9]\": only `*` and `?` are wildcards",
            ),
            (
                format!("{MINIMAL}namespaceLabel:\n  mayLowerTo: [warn, off]\n"),
                "namespaceLabel.mayLowerTo[1] at line 9 column 22: unknown mode \"off\": expected one of enforce, warn, audit",
            ),
            (
                format!("{MINIMAL}namespaceLabel:\n  mayLowerTo:\n    - enforce\n"),
                "namespaceLabel.mayLowerTo[0]: enforce is the strictest mode, a label never lowers to it at line 10 column 7",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&error_of(text), expected, "for:\n{text}");
        }
        // Unknown keys, and a missing list, are the parser's errors, with their line.
        for (text, expected) in [
            (
                overrides("  - mode: audit\n    namespace: [a]\n"),
                "unknown field `namespace`",
            ),
            (
                format!("{MINIMAL}namespaceLabel:\n  mayRaiseTo: [warn]\n"),
                "unknown field `mayRaiseTo`",
            ),
            (
                format!("{MINIMAL}modeOverride:\n  - mode: audit\n"),
                "unknown field `modeOverride`",
            ),
        ] {
            let error = error_of(&text);
            assert!(error.contains(expected), "{error}");
            assert!(error.contains("line "), "{error} names no line");
        }
        assert!(error_of(&overrides("  - mode: audit\n")).contains("missing field `namespaces`"));
    }
}
