//! Spec errors: every one names the file, line and column, and the path of the value
//! (`nodes.scan.input`) it is about.

use std::fmt;
use std::path::PathBuf;

use crate::spec::locate::{Pos, SourceMap, SpecPath};

/// One problem in a spec file.
#[derive(Debug, Clone)]
pub struct SpecError {
    pub file: PathBuf,
    pub pos: Option<Pos>,
    /// What the error is about, e.g. `nodes.scan.input`; empty for file-level errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// All problems found in a spec; validation collects them rather than stopping at the first.
#[derive(Debug, Clone, Default)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Collects errors for one file, placing each with the file's [`SourceMap`].
pub struct ErrorSink<'a> {
    pub file: PathBuf,
    pub map: &'a SourceMap,
    /// The file's text, to place errors inside a value (a line of a jq program).
    pub text: &'a str,
    pub errors: Vec<SpecError>,
}

impl<'a> ErrorSink<'a> {
    pub fn new(file: PathBuf, map: &'a SourceMap, text: &'a str) -> Self {
        Self { file, map, text, errors: Vec::new() }
    }
    /// An error at a place inside the string `value` of `path` (0-based line and column
    /// in the value: a jq program's syntax error), or at the value's key when the value's
    /// text cannot be found in the file (a value that came from a variable).
    pub fn push_within(&mut self, path: &SpecPath, value: &str, within: (usize, usize), message: impl Into<String>) {
        let key = self.map.locate(path).unwrap_or(Pos { line: 1, column: 1 });
        let pos = crate::spec::locate::within_value(self.text, key, value, within).unwrap_or(key);
        self.push_at(pos, path, message);
    }
    pub fn push(&mut self, path: &SpecPath, message: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.clone(),
            // Every error in a parsed spec has a place: the value's, its nearest ancestor's,
            // or the document's start.
            pos: Some(self.map.locate(path).unwrap_or(Pos { line: 1, column: 1 })),
            path: if path.is_root() { String::new() } else { path.to_string() },
            message: message.into(),
        });
    }
    /// An error at a given place (the second of two duplicate keys).
    pub fn push_at(&mut self, pos: Pos, path: &SpecPath, message: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.clone(),
            pos: Some(pos),
            path: if path.is_root() { String::new() } else { path.to_string() },
            message: message.into(),
        });
    }
    /// Drops the errors after the first `first` that are about a value one of those is
    /// already about (or a value inside it): one mistake, one error. An unset variable
    /// leaves `${X}` in place, and the node reading it would add "`${X}` is not a scanner
    /// address".
    pub fn drop_consequences(&mut self, first: usize) {
        let causes: Vec<String> = self.errors.iter().take(first).map(|e| e.path.clone()).collect();
        let mut i = 0;
        self.errors.retain(|e| {
            i += 1;
            i <= first
                || !causes.iter().any(|c| !c.is_empty() && (e.path == *c || e.path.starts_with(&format!("{c}."))))
        });
    }
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
    pub fn into_result(self) -> Result<(), SpecErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors(self.errors))
        }
    }
}
