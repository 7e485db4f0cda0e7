//! Error types.
//!
//! A config error is only useful if the operator can jump straight to the
//! offending spot, so every [`ConfigError`] carries the file, line, column and
//! the dotted key it is about, and renders in the compiler-style
//! `file:line:column: key: message` form that editors and terminals already
//! know how to follow.

use std::fmt;

/// One problem found in a config file.
///
/// Rendered as `file:line:column: key: message`, for example
/// `keel.toml:12:20: smtp.max_message_size: invalid size "25XB": ...`.
///
/// * `line` and `column` are 1-based; the column counts characters (Unicode
///   scalar values), not bytes, so it matches what an editor shows.
/// * `line == 0` means the error is about the file as a whole (it could not
///   be read, for example); the position is then left out of the rendering.
/// * `key` is the dotted path of the key the error is about (array elements
///   are written `route[1].smarthost`); it is empty when no key applies, as
///   for most TOML syntax errors.
// Display is written by hand below: thiserror's format strings cannot leave
// out the position and key when they don't apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file name as given to [`Config::load`](crate::Config::load) or
    /// [`Config::parse`](crate::Config::parse).
    pub file: String,
    /// 1-based line, or 0 when the error concerns the whole file.
    pub line: usize,
    /// 1-based column in characters, or 0 when `line` is 0.
    pub column: usize,
    /// Dotted key path such as `smtp.listen[1]`; empty if none applies.
    pub key: String,
    /// What is wrong, and where possible what is expected instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, " {}:", self.key)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found in one config file, in file order.
///
/// Loading reports all semantic errors at once so an operator can fix a file
/// in one edit-check cycle instead of one error per restart. `Display`
/// writes one error per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// The errors, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many errors there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none (a successfully built `ConfigErrors` never is).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A single value that could not be understood, independent of where it
/// came from.
///
/// Returned by the stand-alone parsers ([`parse_size`](crate::units::parse_size),
/// [`HostPort`](crate::HostPort)'s `FromStr`, ...), which the daemon can also
/// use for command-line flags. The config loader attaches the position and
/// key to turn it into a [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: usize, key: &str) -> ConfigError {
        ConfigError {
            file: "keel.toml".into(),
            line,
            column: if line == 0 { 0 } else { 7 },
            key: key.into(),
            message: "boom".into(),
        }
    }

    #[test]
    fn renders_position_and_key() {
        assert_eq!(
            err(3, "smtp.listen").to_string(),
            "keel.toml:3:7: smtp.listen: boom"
        );
        assert_eq!(err(3, "").to_string(), "keel.toml:3:7: boom");
        assert_eq!(err(0, "").to_string(), "keel.toml: boom");
    }

    #[test]
    fn renders_one_error_per_line() {
        let errors = ConfigErrors(vec![err(1, "a"), err(2, "b")]);
        assert_eq!(
            errors.to_string(),
            "keel.toml:1:7: a: boom\nkeel.toml:2:7: b: boom"
        );
        assert_eq!(errors.len(), 2);
    }
}
