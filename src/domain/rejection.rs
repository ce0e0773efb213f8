//! Why a delivery cannot be processed: permanent, so the message goes to the
//! dead-letter queue with this reason and is never retried.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectionCode,
    /// Human-readable detail; never contains message content.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionCode {
    TooLarge,
    WrongContentType,
    NotUtf8,
    NotJson,
    NotAnObject,
    DuplicateKey,
    MissingField,
    InvalidField,
    /// None, two, or a selector the scope does not go with.
    InvalidSelector,
}

impl RejectionCode {
    pub const ALL: [Self; 9] = [
        Self::TooLarge,
        Self::WrongContentType,
        Self::NotUtf8,
        Self::NotJson,
        Self::NotAnObject,
        Self::DuplicateKey,
        Self::MissingField,
        Self::InvalidField,
        Self::InvalidSelector,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::WrongContentType => "wrong_content_type",
            Self::NotUtf8 => "not_utf8",
            Self::NotJson => "not_json",
            Self::NotAnObject => "not_an_object",
            Self::DuplicateKey => "duplicate_key",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::InvalidSelector => "invalid_selector",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl Rejection {
    pub fn new(code: RejectionCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    pub fn invalid(field: &str, what: &str) -> Self {
        Self::new(
            RejectionCode::InvalidField,
            format!("field `{field}` {what}"),
        )
    }
}
