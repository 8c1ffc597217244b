//! Mocked ports and sample values for the services' unit tests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub(crate) use time::macros::datetime;
use time::OffsetDateTime;

pub(crate) use crate::model::*;
pub(crate) use crate::ports::*;
use crate::service::{AccountService, Principal};

pub(crate) const NOW: OffsetDateTime = datetime!(2024-01-15 10:00 UTC);

pub(crate) struct Ports {
    pub accounts: MockAccountRepository,
    pub keys: MockKeyRepository,
}

impl Ports {
    pub fn new() -> Self {
        Self { accounts: MockAccountRepository::new(), keys: MockKeyRepository::new() }
    }

    /// The service over these repositories, a clock stopped at [`NOW`] and a generator of
    /// distinct ids.
    pub fn service(self) -> Arc<AccountService> {
        Arc::new(self.build())
    }

    /// The service, set up further by `setup`.
    pub fn service_with(self, setup: impl FnOnce(AccountService) -> AccountService) -> Arc<AccountService> {
        Arc::new(setup(self.build()))
    }

    /// The service with a credential cache fed by `feed`, trusted for one second after a sync.
    pub fn service_with_cache(self, cache: MockCredentialCache, feed: MockChangeFeed) -> Arc<AccountService> {
        self.service_with(|s| s.with_cache(Arc::new(cache), Arc::new(feed), std::time::Duration::from_secs(1)))
    }

    /// As [`Self::service_with_cache`], over `keys` instead of the mock key repository: for
    /// a store that behaves in ways a mock's synchronous answer cannot (a read that waits).
    pub fn service_over(
        self,
        keys: Arc<dyn KeyRepository>,
        cache: MockCredentialCache,
        feed: MockChangeFeed,
    ) -> Arc<AccountService> {
        let service = Self::build_over(self.accounts, keys);
        Arc::new(service.with_cache(Arc::new(cache), Arc::new(feed), std::time::Duration::from_secs(1)))
    }

    /// The service, its clock reading `now` whenever asked (the test moves it).
    pub fn service_at(self, now: Arc<std::sync::Mutex<OffsetDateTime>>) -> Arc<AccountService> {
        let mut clock = MockClock::new();
        clock.expect_now().returning(move || *now.lock().expect("the test's clock"));
        Arc::new(Self::build_with(self.accounts, Arc::new(self.keys), clock))
    }

    fn build(self) -> AccountService {
        Self::build_over(self.accounts, Arc::new(self.keys))
    }

    fn build_over(accounts: MockAccountRepository, keys: Arc<dyn KeyRepository>) -> AccountService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        Self::build_with(accounts, keys, clock)
    }

    fn build_with(accounts: MockAccountRepository, keys: Arc<dyn KeyRepository>, clock: MockClock) -> AccountService {
        let mut generator = MockGenerator::new();
        let counter = Arc::new(AtomicU32::new(0));
        let c = counter.clone();
        generator
            .expect_organization_id()
            .returning(move || OrgId::new(&format!("org_{}", c.fetch_add(1, Ordering::Relaxed))).expect("valid"));
        generator
            .expect_key_id()
            .returning(move || KeyId::new(&format!("key_{}", counter.fetch_add(1, Ordering::Relaxed))).expect("valid"));
        generator.expect_key_secret().returning(secret_body);
        generator.expect_usage_writer().return_const("wrt_test".to_owned());
        AccountService::new(Arc::new(accounts), keys, Arc::new(clock), Arc::new(generator))
    }
}

pub(crate) fn secret_body() -> SecretBody {
    SecretBody::new("a1b2c3D4E5F6g7h8i9j0KLMNOPQRSTUV".to_owned()).expect("valid")
}

pub(crate) fn plan(id: &str) -> Plan {
    Plan {
        id: PlanId::new(id).expect("valid"),
        name: id.to_uppercase(),
        base_price_cents: 0,
        included_requests_per_month: 10_000,
        over_limit: crate::model::OverLimit::Block,
    }
}

pub(crate) fn organization(id: &str) -> Organization {
    Organization {
        id: OrgId::new(id).expect("valid"),
        name: OrgName::new("My Company").expect("valid"),
        email: EmailAddress::new("admin@mycompany.com").expect("valid"),
        plan: plan("free"),
        is_active: true,
        created_at: NOW,
        closed_at: None,
    }
}

pub(crate) fn organization_from(new: &NewOrganization) -> Organization {
    Organization {
        id: new.id.clone(),
        name: new.name.clone(),
        email: new.email.clone(),
        plan: plan(new.plan_id.as_str()),
        is_active: true,
        created_at: new.created_at,
        closed_at: None,
    }
}

pub(crate) fn principal(scopes: &[&str], environment: Environment) -> Principal {
    let mut key = api_key("key_caller", "org_caller");
    key.scopes = Scopes::parse(scopes).expect("valid");
    key.environment = environment;
    Principal::new(Arc::new(KeyCredential::new(key, Arc::new(organization("org_caller")))), None)
}

pub(crate) fn api_key(id: &str, org: &str) -> ApiKey {
    ApiKey {
        id: KeyId::new(id).expect("valid"),
        org_id: OrgId::new(org).expect("valid"),
        name: KeyName::default_name(),
        prefix: KeyPrefix::new("mem_live_a1b2c3...").expect("valid"),
        environment: Environment::Live,
        scopes: Scopes::all(),
        created_at: NOW - time::Duration::days(1),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        allowed_ips: None,
    }
}

pub(crate) fn credential() -> KeyCredential {
    KeyCredential::new(api_key("key_abc", "org_abc"), Arc::new(organization("org_abc")))
}

/// `value.with(|v| ...)`: a modified copy, for table-driven tests.
pub(crate) trait With: Sized {
    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }
}

impl<T> With for T {}

/// What a store finds inside a key's write: the calling key (its organization active), as it
/// now is, and the key acted on.
pub(crate) fn found<'a>(actor: &'a ApiKey, target: Option<&'a ApiKey>) -> FoundInWrite<'a> {
    FoundInWrite { actor: Some((actor, true)), target, organization_closed: false }
}

/// What a store finds inside an operator's write: no calling key.
pub(crate) fn found_for_operator() -> FoundInWrite<'static> {
    FoundInWrite { actor: None, target: None, organization_closed: false }
}

/// A store's insert that finds the caller's key as `actor` and stores what the decision makes.
pub(crate) fn insert_as(
    actor: ApiKey,
) -> impl FnMut(&OrgId, &Actor, KeyWriteDecision<NewApiKey>, u32, &AuditRecord) -> Result<ApiKey, KeyOpError> {
    move |_, _, decide, _, _| decide(found(&actor, None)).map(NewApiKey::into_stored)
}

/// The caller authenticated with exactly this credential.
pub(crate) fn principal_of(credential: KeyCredential) -> Principal {
    Principal::new(Arc::new(credential), None)
}
