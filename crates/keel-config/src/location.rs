//! Turning the byte offsets the TOML parser gives us into what a person
//! needs: a line, a column and the dotted key.
//!
//! The `toml` crate reports positions as byte ranges into the input. Our own
//! validation knows which key it is checking, but errors raised inside serde
//! (unknown keys, wrong value types) only come with a span, so [`KeyIndex`]
//! maps a span back to the key path by walking the parsed document once.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use crate::error::ConfigError;

/// Maps byte offsets to 1-based line and column numbers.
pub(crate) struct SourceMap<'a> {
    text: &'a str,
    /// Byte offset at which each line starts; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, line_starts }
    }

    /// 1-based (line, column) of a byte offset. The column counts
    /// characters so it matches an editor's; offsets past the end are
    /// clamped to the end of the text.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // `partition_point` finds the first line starting after `offset`;
        // the line containing it is the one before. Line 0 starts at 0, so
        // the result is always at least 1.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = match self.text.get(start..offset) {
            Some(prefix) => prefix.chars().count(),
            // Not on a char boundary (the parser never does this, but the
            // fallback keeps us from panicking): count bytes instead.
            None => offset - start,
        };
        (line, column + 1)
    }
}

/// One key in the document with where its name and its value are.
struct KeyEntry {
    path: String,
    key: Range<usize>,
    value: Range<usize>,
}

/// Every key path in a parsed document with its spans, used to name the key
/// behind an error that only has a span.
pub(crate) struct KeyIndex {
    entries: Vec<KeyEntry>,
}

impl KeyIndex {
    pub(crate) fn new(root: &DeTable<'_>) -> Self {
        let mut entries = Vec::new();
        index_table(root, "", &mut entries);
        Self { entries }
    }

    /// The dotted path of the key an error span points at.
    ///
    /// A span starting exactly at a key's name is that key (this is how
    /// serde reports unknown fields); otherwise it is the innermost value
    /// containing the span (type errors point at the value).
    pub(crate) fn key_at(&self, span: &Range<usize>) -> Option<&str> {
        if let Some(entry) = self.entries.iter().find(|e| e.key.start == span.start) {
            return Some(&entry.path);
        }
        // Reversed so that, among equal spans (an `[[route]]` header is the
        // span of both the `route` array and its element), the deeper entry
        // wins.
        self.entries
            .iter()
            .rev()
            .filter(|e| {
                e.value.start <= span.start && span.start < e.value.end.max(e.value.start + 1)
            })
            .min_by_key(|e| e.value.len())
            .map(|e| e.path.as_str())
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn index_table(table: &DeTable<'_>, prefix: &str, out: &mut Vec<KeyEntry>) {
    for (key, value) in table {
        let path = join(prefix, key.get_ref());
        out.push(KeyEntry {
            path: path.clone(),
            key: key.span(),
            value: value.span(),
        });
        index_value(value.get_ref(), &path, out);
    }
}

fn index_value(value: &DeValue<'_>, path: &str, out: &mut Vec<KeyEntry>) {
    match value {
        DeValue::Table(table) => index_table(table, path, out),
        DeValue::Array(array) => {
            for (i, element) in array.iter().enumerate() {
                let element_path = format!("{path}[{i}]");
                out.push(KeyEntry {
                    path: element_path.clone(),
                    // Elements have no name of their own; using the value
                    // span keeps `key_at` from matching them by name.
                    key: usize::MAX..usize::MAX,
                    value: element.span(),
                });
                index_value(element.get_ref(), &element_path, out);
            }
        }
        _ => {}
    }
}

/// Collects errors for one file, attaching file name and position.
pub(crate) struct Reporter<'a> {
    file: &'a str,
    map: SourceMap<'a>,
    errors: Vec<ConfigError>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Self {
            file,
            map: SourceMap::new(text),
            errors: Vec::new(),
        }
    }

    /// Records an error about `key` at the start of `span`.
    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = self.map.position(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    /// The 1-based line of a byte offset, for messages that refer to
    /// another place in the file.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.map.position(offset).0
    }

    /// The collected errors in file order (sections are checked in whatever
    /// order the parser hands them over, which is not the file's).
    pub(crate) fn finish(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let map = SourceMap::new("ab\nçé = 1\n");
        assert_eq!(map.position(0), (1, 1));
        assert_eq!(map.position(1), (1, 2));
        assert_eq!(map.position(2), (1, 3)); // the newline itself
        assert_eq!(map.position(3), (2, 1));
        // "çé" is 4 bytes but 2 characters.
        assert_eq!(map.position(7), (2, 3));
        // Past the end clamps to the end.
        assert_eq!(map.position(999), (3, 1));
    }

    #[test]
    fn key_index_names_keys_values_and_elements() {
        let text = "[smtp]\nlisten = [\"a\", \"b\"]\n[[route]]\ndomain = \"x\"\n";
        let doc = DeTable::parse(text).expect("valid TOML");
        let index = KeyIndex::new(doc.get_ref());
        let at = |needle: &str| {
            let start = text.find(needle).expect("needle in text");
            index
                .key_at(&(start..start + needle.len()))
                .map(str::to_owned)
        };
        assert_eq!(at("listen").as_deref(), Some("smtp.listen"));
        assert_eq!(at("\"b\"").as_deref(), Some("smtp.listen[1]"));
        assert_eq!(at("\"x\"").as_deref(), Some("route[0].domain"));
        assert_eq!(at("[[route]]").as_deref(), Some("route[0]"));
    }
}
