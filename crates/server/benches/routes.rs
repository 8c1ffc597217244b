//! The server's own cost per request, without sockets or a load generator: the real App
//! (routes, middleware, extractors, a SQLite database, the credential cache) called in
//! process, `GET /v1/account` with a cached key against `GET /healthz`. The load script
//! measures the same pair over TCP, where the kernel and the VM's noise add to both.

use std::hint::black_box;
use std::time::Instant;

use account_http::LimitSettings;
use account_infra::testing::{built_with_a_key, TestDatabase};
use account_server::startup::AppWiring;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{rt::System, test, App};
use criterion::{criterion_group, criterion_main, Criterion};

fn routes(c: &mut Criterion) {
    let test_db = TestDatabase::sqlite();
    let system = System::new();
    let (app, key) = system.block_on(async {
        let (assembly, key) = built_with_a_key(&test_db, true).await;
        let warm = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let wiring = AppWiring::new(&assembly, LimitSettings::default(), None, warm);
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
