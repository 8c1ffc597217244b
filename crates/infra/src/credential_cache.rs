//! The in-process credential cache: bounded, concurrent, with short-lived negative entries.

use std::time::Duration;

use account_domain::{CachedLookup, CredentialCache, KeyCredential, KeyHash, OrgId};
use moka::sync::Cache;

/// moka caches (TinyLFU admission, bounded by entry count) for found and missing keys.
#[derive(Debug, Clone)]
pub struct MokaCredentialCache {
    found: Cache<KeyHash, std::sync::Arc<KeyCredential>>,
    missing: Cache<KeyHash, ()>,
}

impl MokaCredentialCache {
    /// Unknown keys are remembered this long: long enough to shed a flood of invented keys,
    /// harmless since a new key's hash cannot have been asked for before it existed.
    pub const MISSING_TTL: Duration = Duration::from_secs(30);
    /// Entries are dropped after this long even if nothing changed: hygiene, not correctness
    /// (the change feed is what keeps entries true).
    pub const FOUND_TTL: Duration = Duration::from_secs(600);

    pub fn new(max_keys: u64) -> Self {
        Self {
            found: Cache::builder()
                .max_capacity(max_keys)
                .time_to_live(Self::FOUND_TTL)
                .support_invalidation_closures()
                .build(),
            missing: Cache::builder().max_capacity(max_keys).time_to_live(Self::MISSING_TTL).build(),
        }
    }
}

impl CredentialCache for MokaCredentialCache {
    fn get(&self, hash: &KeyHash) -> Option<CachedLookup> {
        if let Some(found) = self.found.get(hash) {
            return Some(CachedLookup::Found(found));
        }
        self.missing.get(hash).map(|()| CachedLookup::Missing)
    }

    fn put(&self, hash: KeyHash, lookup: CachedLookup) {
        match lookup {
            CachedLookup::Found(credential) => {
                self.missing.invalidate(&hash);
                self.found.insert(hash, credential);
            }
            CachedLookup::Missing => self.missing.insert(hash, ()),
        }
    }

    fn forget(&self, hash: &KeyHash) {
        self.found.invalidate(hash);
        self.missing.invalidate(hash);
    }

    fn forget_organization(&self, org: &OrgId) {
        let org = org.clone();
        if self.found.invalidate_entries_if(move |_, credential| credential.organization.id == org).is_err() {
            self.found.invalidate_all();
        }
    }

    fn clear(&self) {
        self.found.invalidate_all();
        self.missing.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use account_domain::*;
    use time::macros::datetime;

    fn credential(org: &str, secret: char) -> (KeyHash, KeyCredential) {
        let body = SecretBody::new(secret.to_string().repeat(SECRET_LEN)).expect("valid");
        let plaintext = PlaintextKey::assemble(Environment::Live, &body);
        let at = datetime!(2024-01-01 0:00 UTC);
        let key = ApiKey {
            id: KeyId::new(&format!("key_{secret}")).expect("valid"),
            org_id: OrgId::new(org).expect("valid"),
            name: KeyName::default_name(),
            prefix: plaintext.display_prefix(),
            environment: Environment::Live,
            scopes: Scopes::all(),
            created_at: at,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        let organization = Organization {
            id: OrgId::new(org).expect("valid"),
            name: OrgName::new("Acme").expect("valid"),
            email: EmailAddress::new("a@acme.test").expect("valid"),
            plan: Plan { id: PlanId::free(), name: "Free".into(), base_price_cents: 0 },
            is_active: true,
            created_at: at,
        };
        (plaintext.hash(), KeyCredential { key, organization })
    }

    #[test]
    fn found_and_missing_entries_are_kept_and_forgotten() {
        let cache = MokaCredentialCache::new(100);
        let (hash, cred) = credential("org_a", 'a');
        let (other, _) = credential("org_a", 'b');
        cache.put(hash, CachedLookup::Found(std::sync::Arc::new(cred.clone())));
        cache.put(other, CachedLookup::Missing);
        assert_eq!(cache.get(&hash), Some(CachedLookup::Found(std::sync::Arc::new(cred))));
        assert_eq!(cache.get(&other), Some(CachedLookup::Missing));
        cache.forget(&hash);
        cache.forget(&other);
        assert_eq!(cache.get(&hash), None);
        assert_eq!(cache.get(&other), None);
    }

    #[test]
    fn forgetting_an_organization_drops_only_its_keys() {
        let cache = MokaCredentialCache::new(100);
        let (a, cred_a) = credential("org_a", 'a');
        let (b, cred_b) = credential("org_b", 'b');
        cache.put(a, CachedLookup::Found(std::sync::Arc::new(cred_a)));
        cache.put(b, CachedLookup::Found(std::sync::Arc::new(cred_b)));
        cache.forget_organization(&OrgId::new("org_a").expect("valid"));
        assert_eq!(cache.get(&a), None);
        assert!(cache.get(&b).is_some());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = MokaCredentialCache::new(10);
        for c in ('a'..='z').chain('A'..='Z') {
            let (hash, _) = credential("org_a", c);
            cache.put(hash, CachedLookup::Missing);
        }
        cache.missing.run_pending_tasks();
        assert!(cache.missing.entry_count() <= 10, "{}", cache.missing.entry_count());
    }
}
