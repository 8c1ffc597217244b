//! Every string the validators accept is stored and read back unchanged, on SQLite (and
//! on PostgreSQL when `TEST_POSTGRES_URL` is set).

use std::sync::atomic::{AtomicU64, Ordering};

use account_domain::*;
use account_infra::testing::{Backend, TestDatabase};
use account_infra::{Database, OsRandomGenerator, PoolOptions, SqlAccountRepository, SqlKeyRepository};
use proptest::prelude::*;
use time::OffsetDateTime;

struct Store {
    runtime: tokio::runtime::Runtime,
    accounts: SqlAccountRepository,
    keys: SqlKeyRepository,
    _db: TestDatabase,
    counter: AtomicU64,
}

impl Store {
    fn new(backend: Backend) -> Option<Self> {
        let db = TestDatabase::new(backend)?;
        let database = Database::new(db.target().clone(), &PoolOptions::for_machine());
        database.migrate().expect("migrated");
        Some(Self {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
            accounts: SqlAccountRepository::new(database.clone()),
            keys: SqlKeyRepository::new(database),
            _db: db,
            counter: AtomicU64::new(0),
        })
    }

    /// Stores an organization and its key with these validated values and reads them back.
    fn round_trip(&self, name: &OrgName, email: &EmailAddress, key_name: &KeyName) -> (Organization, ApiKey) {
        // Emails must be unique: make this one so without changing the accepted form.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let unique = EmailAddress::new(&format!("u{n}.{}", email.as_str())).expect("still valid");
        let now = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).expect("valid");
        let org = NewOrganization {
            id: OsRandomGenerator.organization_id(),
            name: name.clone(),
            email: unique.clone(),
            plan_id: PlanId::free(),
            created_at: now,
        };
        let plaintext = PlaintextKey::assemble(Environment::Live, &OsRandomGenerator.key_secret());
        let key = NewApiKey {
            id: OsRandomGenerator.key_id(),
            org_id: org.id.clone(),
            name: key_name.clone(),
            hash: plaintext.hash(),
            prefix: plaintext.display_prefix(),
            environment: Environment::Live,
            scopes: Scopes::all(),
            created_at: now,
            expires_at: None,
            allowed_ips: None,
        };
        self.runtime.block_on(async {
            let audit = AuditRecord {
                org_id: org.id.clone(),
                action: AuditAction::Signup,
                target_id: None,
                actor_key_id: None,
                meta: RequestMeta::default(),
                at: now,
                details: account_domain::AuditDetails::none(),
            };
            self.accounts.create_organization(&org, &key, &audit).await.expect("stored");
            let stored = self.accounts.find_organization(&org.id).await.expect("read").expect("found");
            assert_eq!(stored.email, unique);
            let keys = self.keys.list_keys(&org.id).await.expect("listed");
            (stored, keys.into_iter().next().expect("one key"))
        })
    }
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, with markup, quotes and SQL-looking pieces mixed in.
    prop_oneof![
        "\\PC{1,200}",
        ".{1,200}",
        "[<>'\"%;\\\\ -]{1,40}",
        Just("'); DROP TABLE organizations; --".to_owned()),
        Just("<script>alert(1)</script>".to_owned()),
    ]
}

fn email() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-zA-Z0-9_-]{1,10}){0,2}@[a-zA-Z0-9]{1,20}\\.[a-zA-Z]{2,6}"
}

fn check(store: &Store, name: String, key_name: String, email: String) -> Result<(), TestCaseError> {
    let (Ok(name), Ok(key_name), Ok(email)) = (OrgName::new(&name), KeyName::new(&key_name), EmailAddress::new(&email))
    else {
        return Ok(()); // refused by a validator: nothing to store
    };
    let (org, key) = store.round_trip(&name, &email, &key_name);
    prop_assert_eq!(org.name, name);
    prop_assert_eq!(key.name, key_name);
    Ok(())
}

#[test]
fn accepted_strings_round_trip_through_sqlite() {
    let store = Store::new(Backend::Sqlite).expect("sqlite");
    proptest!(ProptestConfig::with_cases(200), |(name in text(), key_name in text(), email in email())| {
        check(&store, name, key_name, email)?;
    });
}

#[test]
fn accepted_strings_round_trip_through_postgres() {
    let Some(store) = Store::new(Backend::Postgres) else { return };
    proptest!(ProptestConfig::with_cases(200), |(name in text(), key_name in text(), email in email())| {
        check(&store, name, key_name, email)?;
    });
}
