//! Errors, each naming where in the request it belongs.
//!
//! The HTTP API answers `{"error": "...", "field": "..."}`, so every problem carries the field
//! it is about as a path into the request JSON (`from.email`, `headers.X-Code`,
//! `recipients[3].email`): a campaign tool can point its user at the exact value.

use std::fmt;

/// One problem with one value of a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the value in the request, e.g. `attachments[0].data`; empty for the request as
    /// a whole (a JSON syntax error).
    pub field: String,
    /// What is wrong, and where possible what is expected instead.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every problem found in a request: validation reports them all at once, so a client fixes
/// its request in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RequestErrors(pub Vec<FieldError>);

impl fmt::Display for RequestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl RequestErrors {
    /// The first error's field, for the API's single `field` member.
    pub fn first_field(&self) -> &str {
        self.0.first().map_or("", |e| e.field.as_str())
    }

    /// Whether `field` has an error (for tests and callers that branch).
    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}
