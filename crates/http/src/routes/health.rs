//! Liveness and readiness.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::envelope::{respond, Envelope};
use crate::error::{ApiError, ErrorBody};

/// Answers whether the service can do its work now (its database reachable).
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// The process's state.
#[derive(Serialize, ToSchema)]
pub(crate) struct Status {
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is up and serving. Never touches the database.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Envelope<Status>)))]
pub(crate) async fn healthz() -> HttpResponse {
    respond(StatusCode::OK, Status { status: "ok" })
}

/// 200 while the database answers, 503 while it does not.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = Envelope<Status>),
    (status = 503, description = "The database is not reachable", body = ErrorBody),
))]
pub(crate) async fn readyz(check: web::Data<ReadinessCheck>) -> Result<HttpResponse, ApiError> {
    if (check.get_ref())().await {
        Ok(respond(StatusCode::OK, Status { status: "ready" }))
    } else {
        Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "the database is not reachable"))
    }
}
