//! Any text presented as a key: parsing never panics, and whatever parses is a key whose
//! checksum holds and which parses again the same.
#![no_main]

use account_domain::PlaintextKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = PlaintextKey::parse(text) {
        assert_eq!(key.expose(), text);
        let again = PlaintextKey::parse(key.expose()).expect("a parsed key parses again");
        assert_eq!(again.hash(), key.hash());
        let _ = key.display_prefix();
    }
});
