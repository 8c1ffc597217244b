//! Request bodies: JSON only, at most 64 KiB, no unknown fields, and errors that say what
//! was wrong and where.

use std::time::Duration;

use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
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
        Ok(Ok(Err(_))) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "the request body could not be read"))
        }
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
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| decode_error(&e))?;
    de.end().map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

/// Decodes a JSON body that must be present.
pub(crate) fn required_json<T: DeserializeOwned>(req: &HttpRequest, body: &Bytes) -> Result<T, ApiError> {
    optional_json(req, body)?
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "a JSON object body is required"))
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
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not valid JSON: {inner}"));
    }
    let message = inner.to_string();
    // serde names an unknown or missing field in backticks; the path then points at its parent.
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field.to_owned());
    let path = e.path().to_string();
    let field = named.or_else(|| (path != ".").then_some(path));
    let error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", describe(&message, field.as_deref()));
    match field {
        Some(field) => error.with_field(field),
        None => error,
    }
}

fn describe(message: &str, field: Option<&str>) -> String {
    // Drop serde's "at line 1 column 7": the field says where.
    let message = message.split(" at line ").next().unwrap_or(message);
    match field {
        Some(field) if !message.starts_with("unknown field") && !message.starts_with("missing field") => {
            format!("`{field}`: {message}")
        }
        _ => message.to_owned(),
    }
}
