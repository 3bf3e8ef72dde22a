//! Where a key of the user's `pico.toml` is written: its line and column, for the errors that
//! name it.
//!
//! The configuration is merged over the embedded defaults as plain tables, which keep no
//! positions; the user's document is parsed a second time here with `toml_edit`, which keeps
//! them, so that an error found on the merged table points at the line the user wrote. A key the
//! user did not write (a required one missing) is placed at the nearest table they did write:
//! its section's header.

use std::fmt;

/// One step of a key's path: a key of a table, or an element of an array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A dotted path such as `worker.hub.addr` or `worker.hidden_from_tenants[1]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn of(keys: &[&str]) -> KeyPath {
        KeyPath(keys.iter().map(|k| Seg::Key((*k).to_string())).collect())
    }

    pub fn join(&self, seg: Seg) -> KeyPath {
        let mut path = self.clone();
        path.0.push(seg);
        path
    }

    pub fn join_all(&self, tail: &KeyPath) -> KeyPath {
        let mut path = self.clone();
        path.0.extend(tail.0.iter().cloned());
        path
    }

    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A line and column, both from 1 (the column in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

impl Position {
    pub const START: Position = Position { line: 1, col: 1 };

    /// The position of byte `offset` of `text`.
    pub fn at(text: &str, offset: usize) -> Position {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
        }
    }
}

/// A parser's message on one line (`toml_edit` puts what it expected on a second).
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The user's document with the positions of its keys.
pub struct Located {
    doc: toml_edit::ImDocument<String>,
}

/// A document that is not TOML: where, and what the parser says.
#[derive(Debug)]
pub struct SyntaxError {
    pub at: Position,
    pub message: String,
}

impl Located {
    pub fn parse(text: &str) -> Result<Located, SyntaxError> {
        match toml_edit::ImDocument::parse(text.to_string()) {
            Ok(doc) => Ok(Located { doc }),
            Err(e) => Err(SyntaxError {
                at: e
                    .span()
                    .map_or(Position::START, |s| Position::at(text, s.start)),
                message: one_line(e.message()),
            }),
        }
    }

    /// Where `path` is written; for a key the user did not write, the nearest enclosing table
    /// or key they did write (a missing key: its section's header); the start of the file if
    /// none.
    pub fn position(&self, path: &KeyPath) -> Position {
        self.walk(path).map_or(Position::START, |offset| {
            Position::at(self.doc.raw(), offset)
        })
    }

    /// The offset of the deepest step of `path` the user wrote.
    fn walk(&self, path: &KeyPath) -> Option<usize> {
        let mut item = self.doc.as_item();
        let mut best = None;
        for seg in &path.0 {
            match seg {
                Seg::Key(k) => {
                    let Some((key, child)) = item.as_table_like().and_then(|t| t.get_key_value(k))
                    else {
                        return best;
                    };
                    // A section's header (`[cold]`) from its bracket, any other key from its
                    // name.
                    let span = match child {
                        toml_edit::Item::Table(t) => t.span().or_else(|| key.span()),
                        _ => key.span().or_else(|| child.span()),
                    };
                    best = span.map(|s| s.start).or(best);
                    item = child;
                }
                Seg::Index(n) => {
                    // An element of an array is a leaf: no key of pico.toml is deeper.
                    let span = match item {
                        toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                            a.get(*n).and_then(|v| v.span())
                        }
                        toml_edit::Item::ArrayOfTables(a) => a.get(*n).and_then(|t| t.span()),
                        _ => None,
                    };
                    return span.map(|s| s.start).or(best);
                }
            }
        }
        best
    }
}
