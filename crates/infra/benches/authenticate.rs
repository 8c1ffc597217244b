//! The domain's `authenticate` on a cache hit, wired as the server wires it (real SQLite
//! repositories, in-memory cache, SQL change feed): the hot path of every request.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use account_domain::{AccountService, CachedAuthentication, EmailAddress, OrgName, SignupRequest};
use account_infra::testing::TestDatabase;
use account_infra::{
    Database, InMemoryCredentialCache, OsRandomGenerator, PoolOptions, SqlAccountRepository, SqlChangeFeed,
    SqlKeyRepository, SystemClock,
};
use criterion::{criterion_group, criterion_main, Criterion};

fn authenticate(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let test_db = TestDatabase::sqlite();
    let (service, key) = runtime.block_on(async {
        let db = Database::new(test_db.target().clone(), &PoolOptions::for_machine());
        db.migrate().expect("migrated");
        let feed = Arc::new(SqlChangeFeed::start(db.clone()).await.expect("feed"));
        let service = AccountService::new(
            Arc::new(SqlAccountRepository::new(db.clone())),
            Arc::new(SqlKeyRepository::new(db)),
            Arc::new(SystemClock),
            Arc::new(OsRandomGenerator),
        )
        // A long staleness bound: the benchmark measures the hit, not the syncer.
        .with_cache(Arc::new(InMemoryCredentialCache::new(10_000)), feed, Duration::from_secs(3600));
        service.sync_changes().await.expect("synced");
        let signup = service
            .signup(
                SignupRequest::new(
                    OrgName::new("Bench").expect("valid"),
                    EmailAddress::new("bench@acme.test").expect("valid"),
                    None,
                ),
                &account_domain::RequestMeta::default(),
            )
            .await
            .expect("signed up");
        let key = signup.key.plaintext.expose().to_owned();
        service.authenticate(&key).await.expect("warms the cache");
        (service, key)
    });

    c.bench_function("authenticate (cache hit)", |b| {
        b.to_async(&runtime).iter(|| async { black_box(service.authenticate(black_box(&key)).await.is_ok()) })
    });
    c.bench_function("authenticate_cached (cache hit, no future: the HTTP extractor's path)", |b| {
        b.iter(|| match service.authenticate_cached(black_box(&key)) {
            CachedAuthentication::Decided(outcome) => black_box(outcome.is_ok()),
            CachedAuthentication::NeedsLookup(_) => panic!("the key is cached"),
        })
    });
    c.bench_function("authenticate + get_account (cache hit)", |b| {
        b.to_async(&runtime).iter(|| async {
            let caller = service.authenticate(black_box(&key)).await.expect("valid");
            black_box(service.get_account(&caller).await.is_ok())
        })
    });
}

criterion_group!(benches, authenticate);
criterion_main!(benches);
