//! The domain's `authenticate` on a cache hit, wired as the server wires it (real SQLite
//! repositories, in-memory cache, SQL change feed): the hot path of every request.

use std::hint::black_box;

use account_infra::testing::{cached_service_with_a_key, TestDatabase};
use account_infra::{Database, PoolOptions};
use criterion::{criterion_group, criterion_main, Criterion};

fn authenticate(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let test_db = TestDatabase::sqlite();
    let (service, key) = runtime.block_on(async {
        let db = Database::new(test_db.target().clone(), &PoolOptions::for_machine());
        cached_service_with_a_key(&db).await
    });

    c.bench_function("authenticate (cache hit)", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(service.authenticate(black_box(key.as_bytes()), None).await.is_ok()) })
    });
    c.bench_function("authenticate, taken at once (cache hit, not polled: the HTTP extractor's path)", |b| {
        b.iter(|| match service.authenticate(black_box(key.as_bytes()), None).now_or_later() {
            Ok(outcome) => black_box(outcome.is_ok()),
            Err(_) => panic!("the key is cached"),
        })
    });
    c.bench_function("authenticate + get_account (cache hit)", |b| {
        b.to_async(&runtime).iter(|| async {
            let caller = service.authenticate(black_box(key.as_bytes()), None).await.expect("valid");
            black_box(service.get_account(&caller).await.is_ok())
        })
    });
}

criterion_group!(benches, authenticate);
criterion_main!(benches);
