//! Liveness and readiness.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::envelope::{envelope_schemas, ok};
use crate::error::{ApiError, ErrorBody, ErrorCode};

/// Answers whether the service can do its work now, or why not (said in the 503's message).
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>> + Send + Sync>;

/// The process's state.
#[derive(Serialize, ToSchema)]
pub(crate) struct Status {
    #[schema(example = "ok")]
    status: &'static str,
}

envelope_schemas! {
    /// The process's state.
    StatusResponse => Status;
}

/// The process is up and serving. Never touches the database.
#[utoipa::path(tag = "operations", operation_id = "check_liveness",
    responses((status = 200, description = "Alive", body = StatusResponse)))]
#[get("/healthz")]
pub(crate) async fn healthz() -> HttpResponse {
    ok(Status { status: "ok" })
}

/// 200 once the warm start has loaded the recently used keys and while the database
/// answers; 503 before and while it does not.
#[utoipa::path(tag = "operations", operation_id = "check_readiness", responses(
    (status = 200, description = "Ready", body = StatusResponse),
    (status = 503, description = "Still loading the recently used keys, or the database is not reachable", body = ErrorBody),
))]
#[get("/readyz")]
pub(crate) async fn readyz(check: web::Data<ReadinessCheck>) -> Result<HttpResponse, ApiError> {
    match (check.get_ref())().await {
        Ok(()) => Ok(ok(Status { status: "ready" })),
        Err(reason) => Err(ApiError::new(ErrorCode::ServiceUnavailable, reason)),
    }
}
