//! Properties of the key format, over many generated keys.

use account_domain::{Environment, MalformedKey, PlaintextKey, SecretBody};
use proptest::prelude::*;

fn environment() -> impl Strategy<Value = Environment> {
    prop_oneof![Just(Environment::Live), Just(Environment::Test)]
}

fn secret() -> impl Strategy<Value = SecretBody> {
    "[0-9A-Za-z]{32}".prop_map(|s| SecretBody::new(s).expect("32 base62 characters"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_keys_parse_back_to_the_same_key(env in environment(), body in secret()) {
        let key = PlaintextKey::assemble(env, &body);
        let parsed = PlaintextKey::parse(key.expose()).expect("a generated key parses");
        prop_assert_eq!(parsed.environment(), env);
        prop_assert_eq!(parsed.expose(), key.expose());
        prop_assert_eq!(parsed.hash(), key.hash());
        prop_assert!(key.expose().starts_with(key.display_prefix().as_str().trim_end_matches("...")));
    }

    #[test]
    fn any_single_character_change_is_caught(
        env in environment(),
        body in secret(),
        position in any::<prop::sample::Index>(),
        replacement in prop::char::any(),
    ) {
        let key = PlaintextKey::assemble(env, &body).expose().to_owned();
        let i = position.index(key.len());
        let original = key.as_bytes()[i] as char;
        prop_assume!(replacement != original);
        let mut changed: Vec<char> = key.chars().collect();
        changed[i] = replacement;
        let changed: String = changed.into_iter().collect();
        prop_assert!(PlaintextKey::parse(&changed).is_err(), "{changed} was accepted");
    }

    #[test]
    fn arbitrary_text_never_panics_and_is_almost_never_a_key(text in ".{0,80}") {
        if let Ok(key) = PlaintextKey::parse(&text) {
            prop_assert_eq!(key.expose(), text.as_str());
        }
    }

    #[test]
    fn a_wrong_checksum_is_reported_as_such(env in environment(), body in secret(), sum in "[0-9A-Za-z]{6}") {
        let key = PlaintextKey::assemble(env, &body).expose().to_owned();
        let forged = format!("{}{}", &key[..key.len() - 6], sum);
        prop_assume!(forged != key);
        prop_assert_eq!(PlaintextKey::parse(&forged).err(), Some(MalformedKey::Checksum));
    }
}
