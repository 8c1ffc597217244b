//! `GET /v1/plans`: the plan catalogue.

use account_domain::{AccountService, Plan};
use actix_web::web::Data;
use actix_web::{get, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::shared_responses::Unavailable;
use crate::envelope::{envelope_schemas, ok};
use crate::error::ApiError;

/// A plan of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Plan)]
pub(crate) struct PlanDto<'a> {
    #[schema(example = "starter")]
    id: &'a str,
    #[schema(example = "Starter")]
    name: &'a str,
    /// The monthly base price, in US cents.
    #[schema(example = 4900, minimum = 0)]
    base_price_cents: i64,
    /// Valid verifications of live keys a month that the base price covers.
    #[schema(example = 1_000_000, minimum = 0)]
    included_requests_per_month: i64,
    /// What happens once a period's valid verifications reach what it includes: `block`
    /// (verification answers `quota_exceeded`) or `bill` (the rest is billed).
    #[schema(example = "bill", pattern = "^(block|bill)$")]
    over_limit: &'static str,
}

impl<'a> From<&'a Plan> for PlanDto<'a> {
    fn from(plan: &'a Plan) -> Self {
        Self {
            id: plan.id.as_str(),
            name: &plan.name,
            base_price_cents: plan.base_price_cents,
            included_requests_per_month: plan.included_requests_per_month,
            over_limit: plan.over_limit.as_str(),
        }
    }
}

envelope_schemas! {
    /// The plan catalogue, cheapest first.
    PlanList => Vec<PlanDto<'static>>;
}

/// The plan catalogue, cheapest first. No authentication.
#[utoipa::path(tag = "accounts", operation_id = "list_plans", security(()), responses(
    (status = 200, description = "The plans", body = PlanList),
    Unavailable,
))]
#[get("/v1/plans")]
pub(crate) async fn list_plans(service: Data<AccountService>) -> Result<HttpResponse, ApiError> {
    let plans = service.list_plans().await?;
    Ok(ok(plans.iter().map(PlanDto::from).collect::<Vec<_>>()))
}
