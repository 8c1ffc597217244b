//! The real clock and the real source of identifiers and secrets.

use account_domain::{Clock, Generator, KeyId, OrgId, SecretBody, SECRET_LEN};
use rand::rngs::OsRng;
use rand::{Rng as _, TryRngCore as _};
use time::OffsetDateTime;

/// The system's wall clock, in UTC.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Time-ordered UUIDv7 identifiers, and secrets straight from the operating system's CSPRNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandomGenerator;

impl Generator for OsRandomGenerator {
    fn organization_id(&self) -> OrgId {
        prefixed_id(OrgId::PREFIX, OrgId::new)
    }

    fn key_id(&self) -> KeyId {
        prefixed_id(KeyId::PREFIX, KeyId::new)
    }

    fn webhook_id(&self) -> account_domain::WebhookId {
        prefixed_id(account_domain::WebhookId::PREFIX, account_domain::WebhookId::new)
    }

    fn key_secret(&self) -> SecretBody {
        let alphabet = SecretBody::alphabet();
        let mut rng = OsRng.unwrap_err();
        let secret: String =
            (0..SECRET_LEN).map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())])).collect();
        SecretBody::new(secret).unwrap_or_else(|_| unreachable!("drawn from the base62 alphabet"))
    }

    fn usage_writer(&self) -> String {
        format!("wrt_{}", uuid::Uuid::now_v7().simple())
    }
}

fn prefixed_id<T, E: std::fmt::Debug>(prefix: &str, parse: fn(&str) -> Result<T, E>) -> T {
    let id = format!("{prefix}{}", uuid::Uuid::now_v7().simple());
    parse(&id).unwrap_or_else(|e| unreachable!("a UUID in hex is a valid id body: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn secrets_are_distinct_and_ids_carry_their_prefix() {
        let generator = OsRandomGenerator;
        let secrets: HashSet<String> = (0..1000)
            .map(|_| {
                account_domain::PlaintextKey::assemble(account_domain::Environment::Live, &generator.key_secret())
                    .expose()
                    .to_owned()
            })
            .collect();
        assert_eq!(secrets.len(), 1000);
        assert!(generator.organization_id().as_str().starts_with("org_"));
        assert!(generator.key_id().as_str().starts_with("key_"));
    }
}
