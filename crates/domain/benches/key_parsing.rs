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
    // The byte-level check against what it replaced: a UTF-8 pass over the header, then the
    // plain parse and hash.
    c.bench_function("header bytes: UTF-8 pass, then parse and hash (without the byte-level check)", |b| {
        b.iter(|| {
            std::str::from_utf8(black_box(key.as_bytes()))
                .ok()
                .and_then(|text| PlaintextKey::parse(text).ok())
                .map(|k| k.hash())
        })
    });
    // The last-use map is keyed by key id on every authenticated request: foldhash against
    // the standard library's SipHash, for one id.
    let id = "key_0192f4a1b2c3d4e5f60718293a4b5c6d";
    c.bench_function("hash a key id with foldhash (the last-use map)", |b| {
        let state = foldhash::fast::RandomState::default();
        b.iter(|| std::hash::BuildHasher::hash_one(&state, black_box(id)))
    });
    c.bench_function("hash a key id with SipHash (the standard map)", |b| {
        let state = std::collections::hash_map::RandomState::new();
        b.iter(|| std::hash::BuildHasher::hash_one(&state, black_box(id)))
    });
}

criterion_group!(benches, key_parsing);
criterion_main!(benches);
