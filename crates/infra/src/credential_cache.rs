//! The in-process credential cache: bounded, concurrent, every entry with a lifetime; the
//! cached keys of one organization share one copy of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use account_domain::{ApiKey, CachedLookup, CredentialCache, KeyCredential, KeyHash, OrgId, Organization};
use quick_cache::sync::Cache;

/// quick_cache caches (S3-FIFO eviction, bounded by entry count) for found and missing keys.
/// Chosen over moka for the hit path: a read is a sharded lookup with no bookkeeping queue.
#[derive(Debug)]
pub struct InMemoryCredentialCache {
    /// Known keys, with the moment they stop being trusted.
    found: Cache<KeyHash, (Arc<KeyCredential>, Instant)>,
    /// Unknown keys, with the moment they stop being trusted as unknown.
    missing: Cache<KeyHash, Instant>,
    found_ttl: Duration,
    organizations: Mutex<SharedOrganizations>,
}

/// The one copy of each organization the found keys share, by id. Replaced or forgotten as
/// a unit: a key put with a different copy (read later) makes that the one shared from then
/// on; a change to the organization forgets it with all its keys.
#[derive(Debug, Default)]
struct SharedOrganizations {
    by_id: HashMap<OrgId, Arc<Organization>>,
    /// When `by_id` grows past this, the organizations no cached key holds any more are
    /// dropped (evicted keys do not say so): the work stays proportional to the inserts.
    prune_at: usize,
}

impl SharedOrganizations {
    const MIN_PRUNE_AT: usize = 1024;

    /// `credential`, holding the shared copy of its organization when it is equal.
    fn share(&mut self, credential: Arc<KeyCredential>) -> Arc<KeyCredential> {
        let read = &credential.organization;
        match self.by_id.get(&read.id) {
            Some(shared) if Arc::ptr_eq(shared, read) => credential,
            Some(shared) if **shared == **read => {
                let shared = shared.clone();
                let mut key: ApiKey = credential.key.clone();
                if key.org_id == shared.id {
                    key.org_id = shared.id.clone();
                }
                Arc::new(KeyCredential::new(key, shared))
            }
            _ => {
                self.by_id.insert(read.id.clone(), read.clone());
                if self.by_id.len() > self.prune_at {
                    self.by_id.retain(|_, shared| Arc::strong_count(shared) > 1);
                    self.prune_at = (self.by_id.len() * 2).max(Self::MIN_PRUNE_AT);
                }
                credential
            }
        }
    }
}

impl InMemoryCredentialCache {
    /// Unknown keys are remembered this long: long enough to shed a flood of invented keys,
    /// harmless since a new key's hash cannot have been asked for before it existed.
    pub const MISSING_TTL: Duration = Duration::from_secs(30);

    /// How long a found key is trusted unless told otherwise: the bound for a change the
    /// change feed never carries (one made by SQL by hand).
    pub const DEFAULT_FOUND_TTL: Duration = Duration::from_secs(60);

    /// Holds at most about `max_keys` found and as many missing keys. Entries leave when
    /// evicted, when the change feed says they changed, or at the end of their lifetime:
    /// `found_ttl` for a found key, [`Self::MISSING_TTL`] for an unknown one.
    pub fn new(max_keys: u64, found_ttl: Duration) -> Self {
        let capacity = usize::try_from(max_keys.max(1)).unwrap_or(usize::MAX);
        Self {
            found: Cache::new(capacity),
            missing: Cache::new(capacity),
            found_ttl,
            organizations: Mutex::new(SharedOrganizations {
                by_id: HashMap::new(),
                prune_at: SharedOrganizations::MIN_PRUNE_AT,
            }),
        }
    }
}

impl InMemoryCredentialCache {
    /// A found key's lifetime, shortened by up to a tenth according to its hash: keys loaded
    /// together (a warm start) do not all reach their end, and the store, at one moment.
    fn found_lifetime(&self, hash: &KeyHash) -> Duration {
        let [a, b, ..] = *hash.as_bytes();
        let thousandths = u32::from(u16::from_le_bytes([a, b]) % 100);
        self.found_ttl - self.found_ttl / 1000 * thousandths
    }

    fn organizations(&self) -> std::sync::MutexGuard<'_, SharedOrganizations> {
        self.organizations.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CredentialCache for InMemoryCredentialCache {
    fn get(&self, hash: &KeyHash, now: Instant) -> Option<CachedLookup> {
        if let Some((found, until)) = self.found.get(hash) {
            if now < until {
                return Some(CachedLookup::Found(found));
            }
            self.found.remove(hash);
            return None;
        }
        let until = self.missing.get(hash)?;
        if now < until {
            Some(CachedLookup::Missing)
        } else {
            self.missing.remove(hash);
            None
        }
    }

    fn put(&self, hash: KeyHash, lookup: CachedLookup) {
        match lookup {
            CachedLookup::Found(credential) => {
                let credential = self.organizations().share(credential);
                self.missing.remove(&hash);
                self.found.insert(hash, (credential, Instant::now() + self.found_lifetime(&hash)));
            }
            CachedLookup::Missing => self.missing.insert(hash, Instant::now() + Self::MISSING_TTL),
        }
    }

    fn forget(&self, hash: &KeyHash) {
        self.found.remove(hash);
        self.missing.remove(hash);
    }

    fn forget_organization(&self, org: &OrgId) {
        self.organizations().by_id.remove(org);
        self.found.retain(|_, (credential, _)| credential.organization.id != *org);
    }

    fn clear(&self) {
        self.organizations().by_id.clear();
        self.found.clear();
        self.missing.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use account_domain::*;
    use time::macros::datetime;

    fn organization(id: &str, name: &str) -> Organization {
        Organization {
            id: OrgId::new(id).expect("valid"),
            name: OrgName::new(name).expect("valid"),
            email: EmailAddress::new("a@acme.test").expect("valid"),
            plan: Plan {
                id: PlanId::free(),
                name: "Free".into(),
                base_price_cents: 0,
                included_requests_per_month: 10_000,
                over_limit: account_domain::OverLimit::Block,
            },
            is_active: true,
            created_at: datetime!(2024-01-01 0:00 UTC),
            closed_at: None,
        }
    }

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
            allowed_ips: None,
        };
        (plaintext.hash(), KeyCredential::new(key, Arc::new(organization(org, "Acme"))))
    }

    fn found(cache: &InMemoryCredentialCache, hash: &KeyHash) -> Arc<KeyCredential> {
        match cache.get(hash, Instant::now()) {
            Some(CachedLookup::Found(credential)) => credential,
            other => panic!("not found: {other:?}"),
        }
    }

    #[test]
    fn the_keys_of_one_organization_share_one_copy_of_it() {
        let cache = InMemoryCredentialCache::new(100, InMemoryCredentialCache::DEFAULT_FOUND_TTL);
        let (a, cred_a) = credential("org_a", 'a');
        let (b, cred_b) = credential("org_a", 'b');
        assert!(!Arc::ptr_eq(&cred_a.organization, &cred_b.organization), "read apart");
        cache.put(a, CachedLookup::Found(Arc::new(cred_a.clone())));
        cache.put(b, CachedLookup::Found(Arc::new(cred_b.clone())));
        let (a, b) = (found(&cache, &a), found(&cache, &b));
        assert!(Arc::ptr_eq(&a.organization, &b.organization), "one copy");
        assert_eq!((&a.key, &b.key), (&cred_a.key, &cred_b.key), "each key as it was read");
    }

    #[test]
    fn an_organization_read_again_changed_is_shared_from_then_on_and_a_forgotten_one_is_not_shared_again() {
        let cache = InMemoryCredentialCache::new(100, InMemoryCredentialCache::DEFAULT_FOUND_TTL);
        let (a, cred_a) = credential("org_a", 'a');
        cache.put(a, CachedLookup::Found(Arc::new(cred_a)));
        let renamed = || Arc::new(organization("org_a", "Acme Renamed"));
        let (b, cred_b) = credential("org_a", 'b');
        cache.put(b, CachedLookup::Found(Arc::new(KeyCredential { organization: renamed(), ..cred_b.clone() })));
        let (c, cred_c) = credential("org_a", 'c');
        cache.put(c, CachedLookup::Found(Arc::new(KeyCredential { organization: renamed(), ..cred_c })));
        assert_eq!(found(&cache, &a).organization.name.as_str(), "Acme", "an earlier key keeps its own copy");
        assert!(Arc::ptr_eq(&found(&cache, &b).organization, &found(&cache, &c).organization));
        assert_eq!(found(&cache, &c).organization.name.as_str(), "Acme Renamed");

        cache.forget_organization(&OrgId::new("org_a").expect("valid"));
        let read_after = renamed();
        cache.put(b, CachedLookup::Found(Arc::new(KeyCredential { organization: read_after.clone(), ..cred_b })));
        assert!(Arc::ptr_eq(&found(&cache, &b).organization, &read_after), "the forgotten copy is not handed out");
    }

    #[test]
    fn organizations_no_cached_key_holds_are_dropped() {
        let cache = InMemoryCredentialCache::new(10_000, InMemoryCredentialCache::DEFAULT_FOUND_TTL);
        let (_, template) = credential("org_a", 'a');
        for i in 0..3000u32 {
            let hash = KeyHash::from_hex(&format!("{i:064x}")).expect("64 hex digits");
            let org = Arc::new(organization(&format!("org_{i}"), "Acme"));
            cache.put(hash, CachedLookup::Found(Arc::new(KeyCredential { organization: org, ..template.clone() })));
            cache.forget(&hash);
        }
        let kept = cache.organizations().by_id.len();
        assert!(kept <= SharedOrganizations::MIN_PRUNE_AT + 1, "{kept}");
    }

    #[test]
    fn found_and_missing_entries_are_kept_and_forgotten() {
        let cache = InMemoryCredentialCache::new(100, InMemoryCredentialCache::DEFAULT_FOUND_TTL);
        let (hash, cred) = credential("org_a", 'a');
        let (other, _) = credential("org_a", 'b');
        cache.put(hash, CachedLookup::Found(Arc::new(cred.clone())));
        cache.put(other, CachedLookup::Missing);
        assert_eq!(cache.get(&hash, Instant::now()), Some(CachedLookup::Found(Arc::new(cred))));
        assert_eq!(cache.get(&other, Instant::now()), Some(CachedLookup::Missing));
        cache.forget(&hash);
        cache.forget(&other);
        assert_eq!(cache.get(&hash, Instant::now()), None);
        assert_eq!(cache.get(&other, Instant::now()), None);
    }

    #[test]
    fn forgetting_an_organization_drops_only_its_keys() {
        let cache = InMemoryCredentialCache::new(100, InMemoryCredentialCache::DEFAULT_FOUND_TTL);
        let (a, cred_a) = credential("org_a", 'a');
        let (b, cred_b) = credential("org_b", 'b');
        cache.put(a, CachedLookup::Found(Arc::new(cred_a)));
        cache.put(b, CachedLookup::Found(Arc::new(cred_b)));
        cache.forget_organization(&OrgId::new("org_a").expect("valid"));
        assert_eq!(cache.get(&a, Instant::now()), None);
        assert!(cache.get(&b, Instant::now()).is_some());
    }

    #[test]
    fn a_found_key_is_trusted_only_for_its_lifetime() {
        let cache = InMemoryCredentialCache::new(100, Duration::from_secs(3));
        let (hash, cred) = credential("org_a", 'a');
        cache.put(hash, CachedLookup::Found(Arc::new(cred)));
        let now = Instant::now();
        assert!(cache.get(&hash, now).is_some());
        assert!(cache.get(&hash, now + Duration::from_secs(2)).is_some());
        assert_eq!(cache.get(&hash, now + Duration::from_secs(4)), None, "past its lifetime the store is read again");
    }

    #[test]
    fn found_keys_put_together_reach_the_end_of_their_lifetimes_spread_over_a_tenth_of_it() {
        let ttl = Duration::from_secs(60);
        let cache = InMemoryCredentialCache::new(100, ttl);
        let lifetimes: std::collections::BTreeSet<Duration> =
            ('a'..='z').chain('A'..='Z').map(|c| cache.found_lifetime(&credential("org_a", c).0)).collect();
        assert!(lifetimes.len() > 20, "{lifetimes:?}");
        assert!(lifetimes.iter().all(|l| *l <= ttl && *l > ttl * 9 / 10), "{lifetimes:?}");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = InMemoryCredentialCache::new(10, InMemoryCredentialCache::DEFAULT_FOUND_TTL);
        for c in ('a'..='z').chain('A'..='Z') {
            let (hash, _) = credential("org_a", c);
            cache.put(hash, CachedLookup::Missing);
        }
        assert!(cache.missing.len() <= 10, "{}", cache.missing.len());
    }
}
