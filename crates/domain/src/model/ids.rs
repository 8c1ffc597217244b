//! Opaque, prefixed identifiers of organizations and keys.

use std::fmt;
use thiserror::Error;

/// The text is not an identifier of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not a valid {kind} id")]
pub struct InvalidId {
    pub kind: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $text:ty, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($text);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Accepts `PREFIX` followed by 1 to 64 ASCII letters or digits.
            pub fn new(raw: &str) -> Result<Self, InvalidId> {
                let body = raw.strip_prefix(Self::PREFIX).ok_or(InvalidId { kind: $kind })?;
                if body.is_empty() || body.len() > 64 || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(InvalidId { kind: $kind });
                }
                Ok(Self(raw.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// Identifies an organization: `org_...`. Shared, not copied: the cached keys of one
    /// organization hold one copy of it.
    OrgId,
    std::sync::Arc<str>,
    "org_",
    "organization"
);
prefixed_id!(
    /// Identifies an API key: `key_...`.
    KeyId,
    Box<str>,
    "key_",
    "key"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_need_their_prefix_and_a_plain_body() {
        assert!(OrgId::new("org_abc123").is_ok());
        assert!(KeyId::new("key_abc123").is_ok());
        assert!(OrgId::new("key_abc123").is_err());
        assert!(KeyId::new("key_").is_err());
        assert!(KeyId::new("key_ab-c").is_err());
        assert!(KeyId::new(&format!("key_{}", "a".repeat(65))).is_err());
    }
}
