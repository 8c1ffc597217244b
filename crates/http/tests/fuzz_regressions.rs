//! Inputs kept from fuzzing (`fuzz/regressions/<target>/`): each must be answered without a
//! panic, bodies with a 4xx or a valid request. A crash `just fuzz` finds is added there.

use std::path::PathBuf;

use account_domain::PlaintextKey;
use account_http::decode::{create_key_request, signup_request};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("readable");
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs in {}", dir.display());
    files
}

#[test]
fn kept_request_bodies_are_answered_with_a_4xx_or_a_valid_request() {
    for (path, bytes) in inputs("request_bodies") {
        for outcome in [signup_request(&bytes).err(), create_key_request(&bytes).err()].into_iter().flatten() {
            assert!(outcome.status().is_client_error(), "{}: {}", path.display(), outcome.status());
        }
    }
}

#[test]
fn kept_key_texts_are_rejected_without_a_panic() {
    for (path, bytes) in inputs("key_parsing") {
        let text = String::from_utf8_lossy(&bytes);
        assert!(PlaintextKey::parse(&text).is_err(), "{}", path.display());
    }
}
