//! The server's own cost per request, without sockets or a load generator: the real App
//! (routes, middleware, extractors, a SQLite database, the credential cache) called in
//! process, `GET /v1/account` with a cached key against `GET /healthz`. The load script
//! measures the same pair over TCP, where the kernel and the VM's noise add to both.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use account_domain::{AccountService, EmailAddress, OrgName, RequestMeta, SignupRequest};
use account_http::LimitSettings;
use account_infra::testing::TestDatabase;
use account_infra::{
    Database, InMemoryCredentialCache, OsRandomGenerator, PoolOptions, SqlAccountRepository, SqlChangeFeed,
    SqlKeyRepository, SystemClock,
};
use account_server::startup::AppWiring;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{rt::System, test, App};
use criterion::{criterion_group, criterion_main, Criterion};

fn routes(c: &mut Criterion) {
    let test_db = TestDatabase::sqlite();
    let system = System::new();
    let (app, key) = system.block_on(async {
        let db = Database::new(test_db.target().clone(), &PoolOptions::for_machine());
        db.migrate().expect("migrated");
        let feed = Arc::new(SqlChangeFeed::start(db.clone()).await.expect("feed"));
        let service = AccountService::new(
            Arc::new(SqlAccountRepository::new(db.clone())),
            Arc::new(SqlKeyRepository::new(db.clone())),
            Arc::new(SystemClock),
            Arc::new(OsRandomGenerator),
        )
        // A long staleness bound: the benchmark measures the hit, not the syncer.
        .with_cache(Arc::new(InMemoryCredentialCache::new(10_000)), feed, Duration::from_secs(3600));
        let service = Arc::new(service);
        service.sync_changes().await.expect("synced");
        let request = SignupRequest::new(
            OrgName::new("Bench").expect("valid"),
            EmailAddress::new("bench@acme.test").expect("valid"),
            None,
        );
        let signup = service.signup(request, &RequestMeta::default()).await.expect("signed up");
        let key = signup.key.plaintext.expose().to_owned();
        let wiring = AppWiring::new(service, db, LimitSettings::default(), None);
        let app = test::init_service(App::new().configure(|cfg| wiring.configure(cfg))).await;
        (app, key)
    });

    let mut group = c.benchmark_group("in-process request");
    group.bench_function("GET /healthz", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let res = test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
                    black_box(test::read_body(res).await);
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("GET /v1/account (cached key)", |b| {
        let bearer = format!("Bearer {key}");
        b.iter_custom(|iters| {
            system.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let req = test::TestRequest::get()
                        .uri("/v1/account")
                        .insert_header((AUTHORIZATION, bearer.as_str()))
                        .to_request();
                    let res = test::call_service(&app, req).await;
                    assert!(res.status().is_success());
                    black_box(test::read_body(res).await);
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, routes);
criterion_main!(benches);
