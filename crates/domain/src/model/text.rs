//! Shared validation of human-entered names.

use thiserror::Error;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// Trims `raw` and checks it is 1 to `max` characters without control characters
/// (PostgreSQL cannot store NUL, and no name needs a control character).
pub(crate) fn validated_name(raw: &str, max: usize) -> Result<String, TextError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(TextError::Empty);
    }
    if trimmed.chars().count() > max {
        return Err(TextError::TooLong { max });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter);
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validated_name("  Acme  ", 200).as_deref(), Ok("Acme"));
        assert_eq!(validated_name("   ", 200), Err(TextError::Empty));
        assert_eq!(validated_name(&"é".repeat(200), 200).map(|s| s.chars().count()), Ok(200));
        assert_eq!(validated_name(&"a".repeat(201), 200), Err(TextError::TooLong { max: 200 }));
        assert_eq!(validated_name("a\0b", 200), Err(TextError::ControlCharacter));
    }

    #[test]
    fn markup_and_sql_are_kept_verbatim() {
        let raw = "<script>alert(1)</script>'; DROP TABLE organizations; --";
        assert_eq!(validated_name(raw, 200).as_deref(), Ok(raw));
    }
}
