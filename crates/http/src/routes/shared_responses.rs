//! Error answers many routes share, described once for the OpenAPI document.

use std::collections::BTreeMap;

use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::IntoResponses;

fn error(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build();
    ResponseBuilder::new().description(description).content("application/json", content).build().into()
}

fn responses(list: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter().map(|(status, description)| ((*status).to_owned(), error(description))).collect()
}

/// What a route that reads a JSON body may also answer.
pub(crate) struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[
            ("408", "The body did not arrive in time"),
            ("413", "The body is over 64 KiB"),
            ("415", "The body is not JSON"),
        ])
    }
}

/// What a route that needs an API key may also answer.
pub(crate) struct AuthErrors;

impl IntoResponses for AuthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[
            ("401", "Missing, malformed, unknown, revoked or expired key"),
            ("403", "The organization is inactive, or the key is not allowed this operation"),
            ("429", "Too many failed authentications from this address"),
        ])
    }
}

/// What a route that writes keys (create, rename, roll) may also answer: [`AuthErrors`], and
/// 429 for the organization's write limit too.
pub(crate) struct WriteAuthErrors;

impl IntoResponses for WriteAuthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = AuthErrors::responses();
        all.extend(responses(&[(
            "429",
            "Too many failed authentications from this address, or too many writes for this organization",
        )]));
        all
    }
}

/// What a route that needs the database may also answer.
pub(crate) struct Unavailable;

impl IntoResponses for Unavailable {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[("503", "The database is unavailable; retry")])
    }
}

/// What a route about one key (`{key_id}`) may also answer.
pub(crate) struct KeyNotFound;

impl IntoResponses for KeyNotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[("404", "No such key in this organization")])
    }
}
