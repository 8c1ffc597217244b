//! Liveness and readiness.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use serde_json::json;

use crate::envelope::respond;
use crate::error::ApiError;

/// Answers whether the service can do its work now (its database reachable).
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// `GET /healthz`: the process is up and serving. Never touches the database.
pub(crate) async fn healthz() -> HttpResponse {
    respond(StatusCode::OK, json!({"status": "ok"}))
}

/// `GET /readyz`: 200 while the database answers, 503 while it does not.
pub(crate) async fn readyz(check: web::Data<ReadinessCheck>) -> Result<HttpResponse, ApiError> {
    if (check.get_ref())().await {
        Ok(respond(StatusCode::OK, json!({"status": "ready"})))
    } else {
        Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "the database is not reachable"))
    }
}
