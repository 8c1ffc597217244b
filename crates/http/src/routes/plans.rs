//! `GET /v1/plans`.

use account_domain::AccountService;
use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::HttpResponse;

use super::shared_responses::Unavailable;
use crate::dto::PlanDto;
use crate::envelope::{respond, Envelope};
use crate::error::ApiError;

/// The plan catalogue, cheapest first. No authentication.
#[utoipa::path(get, path = "/v1/plans", tag = "accounts", security(()), responses(
    (status = 200, description = "The plans", body = Envelope<Vec<PlanDto>>),
    Unavailable,
))]
pub(crate) async fn list_plans(service: Data<AccountService>) -> Result<HttpResponse, ApiError> {
    let plans = service.list_plans().await.map_err(|e| ApiError::internal(&e))?;
    Ok(respond(StatusCode::OK, plans.iter().map(PlanDto::from).collect::<Vec<_>>()))
}
