//! The success envelope, `{"success": true, "data": ...}`, and its schemas for the OpenAPI
//! document, each named after what it carries.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

/// A successful answer: `success` is always true.
#[derive(Serialize)]
pub(crate) struct Envelope<T> {
    success: bool,
    data: T,
}

impl<T> Envelope<T> {
    pub(crate) fn new(data: T) -> Self {
        Self { success: true, data }
    }
}

/// 200 with `data` in the envelope.
pub(crate) fn ok<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::build(StatusCode::OK).json(Envelope::new(data))
}

/// 201 with `data` in the envelope: something was created.
pub(crate) fn created<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::build(StatusCode::CREATED).json(Envelope::new(data))
}

/// 202 with `data` in the envelope: taken, to be done.
pub(crate) fn accepted<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::build(StatusCode::ACCEPTED).json(Envelope::new(data))
}

/// Declares the schema of an envelope carrying `data` of the given type, under a name of its
/// own (the answers themselves are built with [`ok`] and [`created`]).
macro_rules! envelope_schemas {
    ($($(#[$doc:meta])* $name:ident => $data:ty;)*) => {$(
        $(#[$doc])*
        #[derive(utoipa::ToSchema)]
        #[allow(dead_code)] // a schema only
        pub(crate) struct $name {
            /// Always true.
            success: bool,
            data: $data,
        }
    )*};
}
pub(crate) use envelope_schemas;
