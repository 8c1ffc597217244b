//! Request bodies: JSON only, at most 64 KiB, no unknown fields, and errors that say what
//! was wrong and where.

use std::time::Duration;

use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};
use crate::routes::MAX_BODY_BYTES;

/// A client gets this long to send its whole body; a slower one is answered 408.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the body: at most [`MAX_BODY_BYTES`] (413 beyond, refused at once when the
/// `Content-Length` says so) within [`BODY_TIMEOUT`] (408 beyond).
pub(crate) async fn read_body(req: &HttpRequest, payload: actix_web::web::Payload) -> Result<Bytes, ApiError> {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    match actix_web::rt::time::timeout(BODY_TIMEOUT, payload.to_bytes_limited(MAX_BODY_BYTES)).await {
        Err(_) => Err(ApiError::from_status(StatusCode::REQUEST_TIMEOUT)),
        Ok(Err(_)) => Err(ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE)),
        Ok(Ok(Err(_))) => Err(ApiError::new(ErrorCode::InvalidBody, "the request body could not be read")),
        Ok(Ok(Ok(body))) => Ok(body),
    }
}

/// Decodes a JSON body; an empty body is `None`, for endpoints whose body is optional.
pub(crate) fn optional_json<T: DeserializeOwned>(req: &HttpRequest, body: &Bytes) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if !is_json(req) {
        return Err(ApiError::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    // The document allows `null` for an optional body: the same as none.
    if body.trim_ascii() == b"null" {
        return Ok(None);
    }
    decode_object(body).map(Some)
}

/// Decodes a JSON object into `T`, naming the field at fault on failure.
pub(crate) fn decode_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde would also build a struct from an array, positionally: only objects are bodies.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "the body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| decode_error(&e))?;
    de.end().map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Decodes a JSON body that must be present.
pub(crate) fn required_json<T: DeserializeOwned>(req: &HttpRequest, body: &Bytes) -> Result<T, ApiError> {
    optional_json(req, body)?.ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "a JSON object body is required"))
}

fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn decode_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    if !inner.is_data() {
        // Syntax errors are serde_json's fixed words and a position: nothing sent is quoted.
        return ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {inner}"));
    }
    // serde_json ends a data error with its position; the field says where.
    let full = inner.to_string();
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    let message = full.strip_suffix(position.as_str()).unwrap_or(&full);
    let path = e.path().to_string();
    let path = (path != ".").then_some(path.as_str()).filter(|p| is_plain_path(p));
    let (message, field) = describe_mismatch(message, path).unwrap_or_else(|| {
        (
            path.map_or_else(
                || "the body does not have the expected shape".to_owned(),
                |p| format!("`{p}`: the value is not valid"),
            ),
            path.map(str::to_owned),
        )
    });
    let error = ApiError::new(ErrorCode::InvalidRequest, message);
    match field {
        Some(field) => error.with_field(field),
        None => error,
    }
}

/// The 400 for a query string that does not fit (unknown or repeated parameter, wrong type):
/// no `field`, and nothing sent is repeated.
pub(crate) fn query_error(e: &actix_web::error::QueryPayloadError) -> ApiError {
    let described = match e {
        actix_web::error::QueryPayloadError::Deserialize(inner) => describe_mismatch(&inner.to_string(), None),
        _ => None,
    };
    let message = match described {
        Some((message, _)) => format!("the query string is not valid: {message}"),
        None => "the query string is not valid".to_owned(),
    };
    ApiError::new(ErrorCode::InvalidRequest, message)
}

/// serde's categories of data errors whose text quotes the value sent: `invalid type: X,
/// expected Y` and the like.
const QUOTING_CATEGORIES: [(&str, &str); 4] = [
    ("invalid type: ", "invalid type"),
    ("invalid value: ", "invalid value"),
    ("invalid length ", "invalid length"),
    ("unknown variant `", "unknown variant"),
];

/// Rebuilds a serde data error as `(message, field)` from its category and what serde
/// expected, never from what was sent: serde quotes the value (`invalid type: string
/// "mem_live_…", expected a sequence`) and the name of an unknown field, and either may be a
/// key. `path` is where the error is (`None`: the whole document). `None` when the error is
/// none of serde's categories (a custom message from a type's own parser).
fn describe_mismatch(message: &str, path: Option<&str>) -> Option<(String, Option<String>)> {
    // After the *last* ", expected ": the quoted value before it may hold those words too
    // (and when serde ends otherwise, they can only be in the value).
    let expected = message
        .rsplit_once(", expected ")
        .map(|(_, expected)| expected)
        .filter(|_| !message.ends_with(", there are no fields") && !message.ends_with(", there are no variants"));
    let with_expected = |what: &str| match expected {
        Some(expected) => format!("{what}, expected {expected}"),
        None => what.to_owned(),
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // The name runs to the backtick before serde's own ending (it may hold backticks).
        let name = rest
            .rsplit_once("`, expected ")
            .map(|(name, _)| name)
            .or_else(|| rest.strip_suffix("`, there are no fields"))
            .filter(|name| is_plain_name(name));
        return Some(match name {
            Some(name) => (with_expected(&format!("unknown field `{name}`")), Some(name.to_owned())),
            None => (with_expected("unknown field"), None),
        });
    }
    for (prefix, what) in [("missing field `", "missing field"), ("duplicate field `", "duplicate field")] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // serde names these from the type's own field names, never from the input.
            let name = rest.strip_suffix('`').filter(|name| is_plain_name(name));
            return Some(match name {
                Some(name) => (format!("{what} `{name}`"), Some(name.to_owned())),
                None => (what.to_owned(), path.map(str::to_owned)),
            });
        }
    }
    let (_, what) = QUOTING_CATEGORIES.iter().find(|(prefix, _)| message.starts_with(prefix))?;
    let described = with_expected(what);
    Some(match path {
        Some(path) => (format!("`{path}`: {described}"), Some(path.to_owned())),
        None => (described, None),
    })
}

/// A field name fit to be repeated: short, letters, digits and `_` only, and not the start
/// of a key (a key sent as a field name must not come back).
fn is_plain_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.to_ascii_lowercase().starts_with("mem_")
}

/// A path such as `scopes[0]` (serde_path_to_error's): field names of the types, indices.
fn is_plain_path(path: &str) -> bool {
    path.len() <= 64
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.[]?".contains(&b))
        && !path.to_ascii_lowercase().contains("mem_")
}

/// Reads a field that may be absent, `null` or a value as `Some(None)` / `Some(Some(v))`,
/// with `#[serde(default)]` giving `None` for absent: three states, as a PATCH needs.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// Reads a field that may be absent but is never `null`: with `#[serde(default)]`, absent is
/// `None`; `null` is refused as the wrong type, as the document (which does not allow it) says.
pub(crate) fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Reads an optional whole number as JSON Schema counts one: `26` or `26.0` (a number whose
/// fraction is zero), so that every value the document calls an integer is taken.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    use serde::de::{Error as _, Unexpected};
    let Some(number) = <Option<serde_json::Number> as serde::Deserialize>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_i64() {
        return Ok(Some(n));
    }
    // Within ±2^63, where an f64 with no fraction is an exact i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f > -LIMIT && f < LIMIT => Ok(Some(f as i64)),
        _ => Err(D::Error::invalid_type(Unexpected::Other("a number with a fraction"), &"a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const KEY: &str = "mem_live_f3zTba5YDKAelKefIWS0vkyDhX0mFnT83EzqaM";

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        keys: Option<Vec<String>>,
        name: Option<String>,
        small: Option<u8>,
        pair: Option<[u8; 2]>,
        environment: Option<Environment>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Environment {
        Live,
        Test,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Required {
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Empty {}

    /// The error for `body`, after checking it repeats nothing of the key.
    fn refused<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> (String, Option<String>) {
        let e = decode_object::<T>(body.as_bytes()).expect_err(body);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{body}");
        let printed = format!("{e:?}");
        assert!(!printed.contains(&KEY[9..20]), "{body} -> {printed}");
        (e.message().to_owned(), e.field().map(str::to_owned))
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_field_and_expected_type_never_repeated() {
        let (message, field) = refused::<Body>(&format!(r#"{{"keys": "{KEY}"}}"#));
        assert_eq!(message, "`keys`: invalid type, expected a sequence");
        assert_eq!(field.as_deref(), Some("keys"));
        let (message, field) = refused::<Body>(&format!(r#"{{"keys": ["ok", {{"{KEY}": 1}}]}}"#));
        assert_eq!(message, "`keys[1]`: invalid type, expected a string");
        assert_eq!(field.as_deref(), Some("keys[1]"));
        // The words serde ends on may be in the value too: the last ones are serde's.
        let (message, _) = refused::<Body>(&format!(r#"{{"keys": "x, expected {KEY}"}}"#));
        assert_eq!(message, "`keys`: invalid type, expected a sequence");
        let (message, _) = refused::<Body>(&format!(r#"{{"name": ["{KEY}"]}}"#));
        assert_eq!(message, "`name`: invalid type, expected a string");
    }

    #[test]
    fn every_category_of_serde_error_keeps_its_category_and_drops_the_value() {
        let cases = [
            (r#"{"small": 300}"#.to_owned(), "`small`: invalid value, expected u8", Some("small")),
            (r#"{"pair": [1]}"#.to_owned(), "`pair`: invalid length, expected an array of length 2", Some("pair")),
            (
                format!(r#"{{"environment": "{KEY}"}}"#),
                "`environment`: unknown variant, expected `live` or `test`",
                Some("environment"),
            ),
            (r#"{"name": "a", "name": "b"}"#.to_owned(), "duplicate field `name`", Some("name")),
        ];
        for (body, expected, expected_field) in cases {
            let (message, field) = refused::<Body>(&body);
            assert_eq!(message, expected, "{body}");
            assert_eq!(field.as_deref(), expected_field, "{body}");
        }
        let (message, field) = refused::<Required>("{}");
        assert_eq!((message.as_str(), field.as_deref()), ("missing field `name`", Some("name")));
    }

    #[test]
    fn an_unknown_field_is_named_only_when_it_is_short_plain_and_not_a_key() {
        let (message, field) = refused::<Required>(r#"{"name": "a", "nmae": 1}"#);
        assert_eq!(message, "unknown field `nmae`, expected `name`");
        assert_eq!(field.as_deref(), Some("nmae"));
        for name in [KEY, "mem_test_short", "MEM_live_x", "a b", "naïve", "x`, expected `name", &"a".repeat(33)] {
            let (message, field) = refused::<Required>(&format!(r#"{{"{name}": 1}}"#));
            assert_eq!(message, "unknown field, expected `name`", "{name}");
            assert_eq!(field, None, "{name}");
        }
        // A type without fields: serde says so, and the words in the name are not taken.
        let (message, field) = refused::<Empty>(&format!(r#"{{"x, expected {KEY}": 1}}"#));
        assert_eq!((message.as_str(), field), ("unknown field", None));
    }

    #[test]
    fn syntax_errors_say_where_without_quoting() {
        let e = decode_object::<Body>(format!(r#"{{"keys": ["{KEY}"] "#).as_bytes()).expect_err("cut short");
        assert_eq!(e.code(), "invalid_json");
        assert!(!e.message().contains(&KEY[9..]), "{}", e.message());
    }

    #[test]
    fn query_string_errors_repeat_nothing_sent() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Query {
            limit: Option<u32>,
        }
        for query in [format!("{KEY}=1"), format!("limit={KEY}"), "limit=1&limit=2".to_owned()] {
            let e = actix_web::web::Query::<Query>::from_query(&query).expect_err(&query);
            let e = query_error(&e);
            assert_eq!(e.code(), "invalid_request");
            assert!(!format!("{e:?}").contains(&KEY[9..20]), "{query} -> {e:?}");
        }
        let e = query_error(&actix_web::web::Query::<Query>::from_query("limt=1").expect_err("unknown"));
        assert_eq!(e.message(), "the query string is not valid: unknown field `limt`, expected `limit`");
        assert_eq!(e.field(), None, "a query string error has no field");
    }

    #[test]
    fn a_whole_number_with_a_zero_fraction_is_taken_and_a_fraction_is_refused() {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "super::whole_number")]
            days: Option<i64>,
        }
        let days = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.days);
        assert_eq!(days(r#"{"days": 26}"#).ok(), Some(Some(26)));
        assert_eq!(days(r#"{"days": 26.0}"#).ok(), Some(Some(26)), "JSON Schema counts 26.0 as an integer");
        assert_eq!(days(r#"{"days": 1e2}"#).ok(), Some(Some(100)));
        assert_eq!(days(r#"{"days": null}"#).ok(), Some(None));
        assert_eq!(days("{}").ok(), Some(None));
        for bad in [r#"{"days": 26.5}"#, r#"{"days": "26"}"#, r#"{"days": 1e300}"#] {
            assert!(days(bad).is_err(), "{bad}");
        }
    }
}
