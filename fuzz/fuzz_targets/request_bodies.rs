//! Any bytes as a signup or key-creation body: decoding never panics, and answers either a
//! valid domain request or a 4xx.
#![no_main]

use account_http::decode::{create_key_request, signup_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for outcome in [signup_request(data).err(), create_key_request(data).err()].into_iter().flatten() {
        let status = actix_web_status(&outcome);
        assert!((400..500).contains(&status), "{status}");
    }
});

fn actix_web_status(error: &account_http::ApiError) -> u16 {
    error.status().as_u16()
}
