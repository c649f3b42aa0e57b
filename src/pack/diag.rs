//! Diagnostics: what went wrong (or looks wrong) while reading a pack, and where.
//!
//! Every problem names the file, the line and column where known, the field (a dotted path such
//! as `parameters.cmd.type`), and the reason. Severity decides what happens to the item: an
//! `Error` skips it, a `Warning` loads it. This module only describes and prints problems; it
//! never decides to skip anything.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::yaml::{Doc, Pos};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `path:line:col: error: field: reason`, the shape compilers and editors understand.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Collects diagnostics for one file, resolving field paths to positions through its `Doc`.
pub struct FileDiags<'a> {
    pub file: &'a Path,
    pub doc: Option<&'a Doc>,
    pub out: &'a mut Vec<Diagnostic>,
}

impl FileDiags<'_> {
    /// Report at `field`, a dotted path (`parameters.cmd.type`) into the document.
    pub fn at(&mut self, severity: Severity, field: &str, message: impl Into<String>) {
        let pos = self.doc.and_then(|d| d.pos(&pointer_of(field)));
        self.push(severity, (!field.is_empty()).then(|| field.to_string()), pos, message.into());
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.at(Severity::Error, field, message);
    }

    pub fn warn(&mut self, field: &str, message: impl Into<String>) {
        self.at(Severity::Warning, field, message);
    }

    pub fn push(&mut self, severity: Severity, field: Option<String>, pos: Option<Pos>, message: String) {
        self.out.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.col),
            field,
            message,
        });
    }
}

/// `parameters.cmd.type` → `/parameters/cmd/type`. Segments that are themselves dotted keys
/// (`st2kv` names, refs) are written `parameters["a.b"]`.
fn pointer_of(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("[\"") {
            let end = r.find("\"]").unwrap_or(r.len());
            out.push('/');
            out.push_str(&super::yaml::escape_pointer(&r[..end]));
            rest = r.get(end + 2..).unwrap_or("");
            rest = rest.strip_prefix('.').unwrap_or(rest);
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        out.push('/');
        out.push_str(&super::yaml::escape_pointer(&rest[..end]));
        rest = &rest[end..];
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    out
}

/// Join a parent field path and a key, quoting keys that contain dots.
pub fn join(parent: &str, key: &str) -> String {
    let seg = if key.contains('.') || key.contains('[') { format!("[\"{key}\"]") } else { key.to_string() };
    if parent.is_empty() {
        seg
    } else if seg.starts_with('[') {
        format!("{parent}{seg}")
    } else {
        format!("{parent}.{seg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers() {
        assert_eq!(pointer_of("parameters.cmd.type"), "/parameters/cmd/type");
        assert_eq!(pointer_of("chain.0.name"), "/chain/0/name");
        assert_eq!(pointer_of(&join("criteria", "trigger.body.x")), "/criteria/trigger.body.x");
        assert_eq!(join("", "a"), "a");
    }
}
