//! The API key as a secret: its format `mem_<environment>_<secret><checksum>`, its
//! checksum, and the hash that is all the database ever sees.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

use super::Environment;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of the random part of a key, in base62 characters (32 × log2(62) ≈ 190.5 bits).
pub const SECRET_LEN: usize = 32;
/// Length of the base62 CRC32 checksum that ends a key (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// Every key starts with this, then the environment and `_`.
pub const KEY_PREFIX: &str = "mem_";

/// Longer than any key (`mem_live_` + secret + checksum is 47 bytes): longer input is not
/// even hashed.
const MAX_PRESENTED_LEN: usize = 64;
/// How many characters of the secret the displayed prefix reveals.
const SHOWN_SECRET_CHARS: usize = 6;

/// Why a presented text is not an API key: caught before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MalformedKey {
    #[error("the key does not have the form mem_<live|test>_<secret>")]
    Format,
    #[error("the key's checksum does not match: it was mistyped or invented")]
    Checksum,
}

/// The random part of a new key: exactly [`SECRET_LEN`] base62 characters.
pub struct SecretBody(SecretString);

impl SecretBody {
    /// Accepts exactly [`SECRET_LEN`] base62 characters (from the generator port).
    pub fn new(raw: String) -> Result<Self, MalformedKey> {
        if raw.len() == SECRET_LEN && raw.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(SecretString::from(raw)))
        } else {
            Err(MalformedKey::Format)
        }
    }

    /// The alphabet a generator must draw from, uniformly.
    pub fn alphabet() -> &'static [u8; 62] {
        BASE62
    }
}

impl fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBody([REDACTED])")
    }
}

/// A full API key in clear. It exists only between creation and the response, or while
/// a presented key is checked; its memory is zeroed on drop and it never prints.
pub struct PlaintextKey {
    secret: SecretString,
    environment: Environment,
}

impl PlaintextKey {
    /// Builds the full key from a fresh secret: `mem_<env>_<secret><checksum>`.
    pub fn assemble(environment: Environment, body: &SecretBody) -> Self {
        let mut key = String::with_capacity(KEY_PREFIX.len() + 5 + SECRET_LEN + CHECKSUM_LEN);
        key.push_str(KEY_PREFIX);
        key.push_str(environment.as_str());
        key.push('_');
        key.push_str(body.0.expose_secret());
        let checksum = checksum(&key);
        key.extend(checksum.iter().map(|&b| char::from(b)));
        Self { secret: SecretString::from(key), environment }
    }

    /// Checks a presented key's form and checksum without any lookup.
    pub fn parse(presented: &str) -> Result<Self, MalformedKey> {
        let environment = check(presented.as_bytes())?;
        Ok(Self { secret: SecretString::from(presented.to_owned()), environment })
    }

    /// Checks a presented key and hashes it without copying it anywhere: what
    /// authentication needs, on every request. Takes bytes, as they come off the wire: the
    /// check itself rejects anything outside the key's ASCII alphabet.
    pub fn hash_presented(presented: &[u8]) -> Result<KeyHash, MalformedKey> {
        check(presented)?;
        Ok(KeyHash(*blake3::hash(presented).as_bytes()))
    }

    /// The hash a presented key is stored under, its form not checked: for a lookup in
    /// memory only, which holds only hashes of stored keys (issued well formed) and of keys
    /// that passed [`Self::check_presented`]. `None` for input too long to be a key (never
    /// hashed).
    pub fn hash_unchecked(presented: &[u8]) -> Option<KeyHash> {
        (presented.len() <= MAX_PRESENTED_LEN).then(|| KeyHash(*blake3::hash(presented).as_bytes()))
    }

    /// The form and checksum of a presented key, as [`Self::hash_presented`] checks them.
    pub fn check_presented(presented: &[u8]) -> Result<(), MalformedKey> {
        check(presented).map(|_| ())
    }

    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The only way to read the key in clear: to hand it to its owner once.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// The blake3 hash under which the key is stored and looked up.
    pub fn hash(&self) -> KeyHash {
        KeyHash(*blake3::hash(self.expose().as_bytes()).as_bytes())
    }

    /// What may be shown later: `mem_live_` plus six characters of the secret plus `...`.
    pub fn display_prefix(&self) -> KeyPrefix {
        let head_len = KEY_PREFIX.len() + self.environment.as_str().len() + 1 + SHOWN_SECRET_CHARS;
        let mut prefix = [b'.'; KeyPrefix::LEN];
        prefix[..head_len].copy_from_slice(&self.expose().as_bytes()[..head_len]);
        KeyPrefix(prefix)
    }
}

impl fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlaintextKey(mem_{}_[REDACTED])", self.environment.as_str())
    }
}

/// The form and checksum of a presented key; its environment when both hold. Works on bytes
/// and compares the checksum as a number: this runs on every request.
fn check(presented: &[u8]) -> Result<Environment, MalformedKey> {
    let rest = presented.strip_prefix(KEY_PREFIX.as_bytes()).ok_or(MalformedKey::Format)?;
    let word_len = rest.iter().position(|&b| b == b'_').ok_or(MalformedKey::Format)?;
    let (word, tail) = (&rest[..word_len], &rest[word_len + 1..]);
    let environment =
        std::str::from_utf8(word).ok().and_then(|w| Environment::new(w).ok()).ok_or(MalformedKey::Format)?;
    if tail.len() != SECRET_LEN + CHECKSUM_LEN || !tail.iter().all(u8::is_ascii_alphanumeric) {
        return Err(MalformedKey::Format);
    }
    // Six base62 digits name each number below 62^6 exactly once, and a CRC32 is below
    // that: comparing numbers is comparing the digits `checksum` would write.
    let (signed, sum) = presented.split_at(presented.len() - CHECKSUM_LEN);
    let digits = sum.iter().fold(0_u64, |value, &b| value * 62 + u64::from(base62_digit(b)));
    if digits != u64::from(crc32fast::hash(signed)) {
        return Err(MalformedKey::Checksum);
    }
    Ok(environment)
}

/// The value of a base62 digit (`0-9A-Za-z`, in [`BASE62`]'s order); `b` is alphanumeric.
fn base62_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'A'..=b'Z' => b - b'A' + 10,
        _ => b - b'a' + 36,
    }
}

/// CRC32 of `signed`, as six base62 digits (most significant first, zero-padded).
fn checksum(signed: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = u64::from(crc32fast::hash(signed.as_bytes()));
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits
}

/// The blake3 hash of a key: what is stored, never the key itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Reads the 64-character lowercase hex form the database holds.
    pub fn from_hex(hex: &str) -> Result<Self, MalformedKey> {
        blake3::Hash::from_hex(hex).map(|h| Self(*h.as_bytes())).map_err(|_| MalformedKey::Format)
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The hash's bytes: uniformly spread, so that they can also spread other things.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not the key, but it still identifies one: print only a few characters.
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

/// The displayable start of a key, such as `mem_live_a1b2c3...`: ASCII, held in place
/// (no allocation in each cached key).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPrefix([u8; KeyPrefix::LEN]);

impl KeyPrefix {
    /// `mem_`, a four-letter environment, `_`, the shown characters and `...`.
    const LEN: usize = KEY_PREFIX.len() + 4 + 1 + SHOWN_SECRET_CHARS + 3;

    /// Accepts what [`PlaintextKey::display_prefix`] produces.
    pub fn new(raw: &str) -> Result<Self, MalformedKey> {
        let body = raw
            .strip_prefix(KEY_PREFIX)
            .and_then(|r| r.strip_suffix("..."))
            .and_then(|r| r.split_once('_'))
            .ok_or(MalformedKey::Format)?;
        let ok = Environment::new(body.0).is_ok()
            && body.1.len() == SHOWN_SECRET_CHARS
            && body.1.bytes().all(|b| b.is_ascii_alphanumeric());
        match raw.as_bytes().try_into() {
            Ok(bytes) if ok => Ok(Self(bytes)),
            _ => Err(MalformedKey::Format),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked by `new`, copied from a key by `display_prefix`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyPrefix").field(&self.as_str()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> SecretBody {
        SecretBody::new("a1b2c3D4E5F6g7h8i9j0KLMNOPQRSTUV".to_owned()).expect("32 base62 chars")
    }

    #[test]
    fn an_assembled_key_parses_back_with_its_environment() {
        let key = PlaintextKey::assemble(Environment::Test, &body());
        assert!(key.expose().starts_with("mem_test_a1b2c3D4"));
        assert_eq!(key.expose().len(), "mem_test_".len() + SECRET_LEN + CHECKSUM_LEN);
        let parsed = PlaintextKey::parse(key.expose()).expect("valid key");
        assert_eq!(parsed.environment(), Environment::Test);
        assert_eq!(parsed.hash(), key.hash());
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let key = PlaintextKey::assemble(Environment::Live, &body());
        let text = key.expose().to_owned();
        for i in 0..text.len() {
            for &c in BASE62.iter().chain(b"_-") {
                let mut bytes = text.clone().into_bytes();
                if bytes[i] == c {
                    continue;
                }
                bytes[i] = c;
                let changed = String::from_utf8(bytes).expect("ascii");
                assert!(PlaintextKey::parse(&changed).is_err(), "{i} {}", char::from(c));
            }
        }
    }

    #[test]
    fn keys_of_the_wrong_shape_are_malformed() {
        let good = PlaintextKey::assemble(Environment::Live, &body()).expose().to_owned();
        for bad in
            ["", "mem_", "mem_live_", "sk_live_abc", &good[1..], &format!("{good}x"), &good.replace("live", "prod")]
        {
            assert_eq!(PlaintextKey::parse(bad).err(), Some(MalformedKey::Format), "{bad}");
        }
        let mut tampered = good.clone();
        tampered.replace_range(10..11, if &good[10..11] == "x" { "y" } else { "x" });
        assert_eq!(PlaintextKey::parse(&tampered).err(), Some(MalformedKey::Checksum));
    }

    #[test]
    fn the_shown_prefix_reveals_six_characters_of_the_secret() {
        let key = PlaintextKey::assemble(Environment::Live, &body());
        assert_eq!(key.display_prefix().as_str(), "mem_live_a1b2c3...");
        assert!(KeyPrefix::new("mem_live_a1b2c3...").is_ok());
        assert!(KeyPrefix::new("mem_live_a1b2c3").is_err());
    }

    #[test]
    fn nothing_secret_is_printed_by_debug() {
        let key = PlaintextKey::assemble(Environment::Live, &body());
        let printed = format!("{key:?} {:?} {:?}", body(), key.hash());
        assert!(!printed.contains("a1b2c3D4E5F6"), "{printed}");
        assert!(!printed.contains(&key.hash().to_hex()), "{printed}");
    }

    #[test]
    fn hashing_a_presented_key_agrees_with_parsing_it() {
        let key = PlaintextKey::assemble(Environment::Live, &body());
        assert_eq!(PlaintextKey::hash_presented(key.expose().as_bytes()), Ok(key.hash()));
        assert_eq!(PlaintextKey::hash_presented(b"mem_live_x"), Err(MalformedKey::Format));
    }

    /// The form the check enforces, written plainly: what the one-pass check must agree with.
    fn reference_check(presented: &[u8]) -> Result<Environment, MalformedKey> {
        let text = std::str::from_utf8(presented).map_err(|_| MalformedKey::Format)?;
        let rest = text.strip_prefix(KEY_PREFIX).ok_or(MalformedKey::Format)?;
        let (env, tail) = rest.split_once('_').ok_or(MalformedKey::Format)?;
        let environment = Environment::new(env).map_err(|_| MalformedKey::Format)?;
        if tail.len() != SECRET_LEN + CHECKSUM_LEN || !tail.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedKey::Format);
        }
        let (signed, sum) = text.split_at(text.len() - CHECKSUM_LEN);
        if checksum(signed) != sum.as_bytes() {
            return Err(MalformedKey::Checksum);
        }
        Ok(environment)
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_check_agrees_with_the_plain_rules(
            env in proptest::prop_oneof![3 => "live", 3 => "test", 1 => "prod", 1 => "", 1 => "li_ve"],
            secret in proptest::prop_oneof![3 => "[0-9A-Za-z]{32}", 1 => "[0-9A-Za-z_\\-é]{30,34}"],
            sum in "[0-9A-Za-z]{5,7}",
            keep_checksum: bool,
        ) {
            let signed = format!("{KEY_PREFIX}{env}_{secret}");
            let presented = if keep_checksum {
                let digits = checksum(&signed);
                format!("{signed}{}", std::str::from_utf8(&digits).expect("ascii"))
            } else {
                format!("{signed}{sum}")
            };
            proptest::prop_assert_eq!(check(presented.as_bytes()), reference_check(presented.as_bytes()));
        }

        #[test]
        fn any_bytes_are_checked_as_the_plain_rules_would(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..60)) {
            proptest::prop_assert_eq!(check(&bytes), reference_check(&bytes));
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_malformed() {
        let key = PlaintextKey::assemble(Environment::Live, &body()).expose().as_bytes().to_vec();
        let mut bad = key.clone();
        bad[12] = 0xff;
        assert_eq!(PlaintextKey::hash_presented(&bad), Err(MalformedKey::Format));
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let hash = PlaintextKey::assemble(Environment::Live, &body()).hash();
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Ok(hash));
        assert!(KeyHash::from_hex("zz").is_err());
    }

    #[test]
    fn secrets_must_be_32_base62_characters() {
        assert!(SecretBody::new("short".to_owned()).is_err());
        assert!(SecretBody::new("_".repeat(SECRET_LEN)).is_err());
    }
}
