//! Key parsing and checksum checking: what every request pays before any lookup.

use std::hint::black_box;

use account_domain::{Environment, PlaintextKey, SecretBody};
use criterion::{criterion_group, criterion_main, Criterion};

fn key_parsing(c: &mut Criterion) {
    let body = SecretBody::new("a1b2c3D4E5F6g7h8i9j0KLMNOPQRSTUV".to_owned()).expect("valid");
    let key = PlaintextKey::assemble(Environment::Live, &body).expose().to_owned();
    let mut typo = key.clone();
    typo.replace_range(12..13, "Z");

    c.bench_function("parse a valid key", |b| b.iter(|| PlaintextKey::parse(black_box(&key))));
    c.bench_function("reject a mistyped key (checksum)", |b| b.iter(|| PlaintextKey::parse(black_box(&typo))));
    c.bench_function("reject a malformed key (format)", |b| b.iter(|| PlaintextKey::parse(black_box("mem_live_nope"))));
    c.bench_function("check and hash a presented key (what authentication does)", |b| {
        b.iter(|| PlaintextKey::hash_presented(black_box(key.as_bytes())))
    });
    c.bench_function("parse and hash a valid key", |b| {
        b.iter(|| PlaintextKey::parse(black_box(&key)).map(|k| k.hash()))
    });
}

criterion_group!(benches, key_parsing);
criterion_main!(benches);
