//! The domain's `authenticate` wired as the server wires it (real SQLite repositories,
//! in-memory cache, SQL change feed): on a cache hit, the hot path of every request; with
//! the cache off, the miss path (a store read), whole and in its parts.

use std::hint::black_box;

use account_domain::{KeyRepository, PlaintextKey};
use account_infra::testing::{built_with_a_key, TestDatabase};
use account_infra::SqlKeyRepository;
use criterion::{criterion_group, criterion_main, Criterion};

fn authenticate(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let test_db = TestDatabase::sqlite();
    let (assembly, key) = runtime.block_on(built_with_a_key(&test_db, true));
    let service = assembly.service();

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

/// The miss path on SQLite, on a one-thread runtime as an actix worker runs: authenticate
/// with no cache (what `CACHE_MAX_KEYS=0` serves), and the repository's read alone.
fn miss_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let test_db = TestDatabase::sqlite();
    let (assembly, key) = runtime.block_on(built_with_a_key(&test_db, false));
    let service = assembly.service();
    let hash = PlaintextKey::hash_presented(key.as_bytes()).expect("valid");
    let keys = SqlKeyRepository::new(assembly.database().clone());

    c.bench_function("authenticate (cache off: a SQLite read)", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(service.authenticate(black_box(key.as_bytes()), None).await.is_ok()) })
    });
    c.bench_function("find_credential (SQLite, repository alone)", |b| {
        b.to_async(&runtime).iter(|| async { black_box(keys.find_credential(black_box(&hash)).await.is_ok()) })
    });
}

criterion_group!(benches, authenticate, miss_path);
criterion_main!(benches);
