//! The success envelope: `{"success": true, "data": ...}`.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::ToSchema;

/// A successful answer: `success` is always true.
#[derive(Serialize, ToSchema)]
pub(crate) struct Envelope<T> {
    success: bool,
    data: T,
}

impl<T> Envelope<T> {
    pub(crate) fn new(data: T) -> Self {
        Self { success: true, data }
    }
}

/// A JSON response carrying `data` in the envelope.
pub(crate) fn respond<T: Serialize>(status: StatusCode, data: T) -> HttpResponse {
    HttpResponse::build(status).json(Envelope::new(data))
}
