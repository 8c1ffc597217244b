//! The HTTP adapter's speed device against what it replaces, so that it stays only while it
//! earns its place (the figures are in docs/performance.md): the per-worker memo of the
//! `GET /v1/account` body against serializing it per request. (A hand-written RFC 3339
//! formatter measured here lost to the `time` crate's, 56 against 25 ns, and went.)

use std::hint::black_box;

use account_domain::{EmailAddress, OrgId, OrgName, Organization, Plan, PlanId};
use account_http::speed_devices;
use criterion::{criterion_group, criterion_main, Criterion};
use time::macros::datetime;

fn speed_devices(c: &mut Criterion) {
    let org = Organization {
        id: OrgId::new("org_01a21a32a78e71c8800beb5d0981899c").expect("valid"),
        name: OrgName::new("My Company").expect("valid"),
        email: EmailAddress::new("admin@mycompany.com").expect("valid"),
        plan: Plan {
            id: PlanId::new("starter").expect("valid"),
            name: "Starter".into(),
            base_price_cents: 4900,
            included_requests_per_month: 1_000_000,
            over_limit: account_domain::OverLimit::Block,
        },
        is_active: true,
        created_at: datetime!(2026-11-27 00:35:01 UTC),
        closed_at: None,
    };
    c.bench_function("GET /v1/account body, memoized (what the route does)", |b| {
        b.iter(|| speed_devices::account_body_memoized(black_box(&org)))
    });
    c.bench_function("GET /v1/account body, serialized per request", |b| {
        b.iter(|| speed_devices::account_body_serialized(black_box(&org)))
    });
}

criterion_group!(benches, speed_devices);
criterion_main!(benches);
