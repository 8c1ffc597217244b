//! `GET /v1/account/usage`: how the organization's keys were used, by day and by key.

use account_domain::{day_text, DailyUsage, KeyUsage, UsageDays, UsageError, UsageReport, UsageTotals};
use actix_web::web::Query;
use actix_web::{get, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use super::shared_responses::{AuthErrors, Unavailable};
use crate::auth::Caller;
use crate::envelope::{envelope_schemas, ok};
use crate::error::{ApiError, ErrorBody};

/// Verifications that passed every check, those refused, and the requests to the account
/// API's own routes (counted, never billed).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = UsageTotals)]
pub(crate) struct TotalsDto {
    #[schema(minimum = 0)]
    valid: i64,
    #[schema(minimum = 0)]
    refused: i64,
    #[schema(minimum = 0)]
    account_api: i64,
}

impl From<UsageTotals> for TotalsDto {
    fn from(t: UsageTotals) -> Self {
        Self { valid: t.valid, refused: t.refused, account_api: t.account_api }
    }
}

/// One UTC day.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DailyUsage)]
pub(crate) struct DailyDto {
    #[schema(format = Date, example = "2026-11-29")]
    date: String,
    #[serde(flatten)]
    totals: TotalsDto,
}

impl From<&DailyUsage> for DailyDto {
    fn from(d: &DailyUsage) -> Self {
        Self { date: day_text(d.date), totals: d.totals.into() }
    }
}

/// One key's verifications over the range.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KeyUsage)]
pub(crate) struct KeyUsageDto {
    #[schema(pattern = "^key_[0-9A-Za-z]+$")]
    key_id: String,
    name: String,
    #[serde(flatten)]
    totals: TotalsDto,
    /// The refusals by verdict (revoked, expired, insufficient_scope, org_inactive,
    /// ip_not_allowed, quota_exceeded); reasons without any are left out.
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    refused_by_reason: Vec<(&'static str, i64)>,
}

fn as_map<S: Serializer>(pairs: &[(&'static str, i64)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (*k, *v)))
}

impl From<&KeyUsage> for KeyUsageDto {
    fn from(k: &KeyUsage) -> Self {
        Self {
            key_id: k.key_id.to_string(),
            name: k.name.clone(),
            totals: k.totals.into(),
            refused_by_reason: k.refused_by_reason.iter().map(|(code, n)| (code.as_str(), *n)).collect(),
        }
    }
}

/// The current plan period (UTC days) against what it includes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MonthToDate {
    /// The later of the month's first day and the day the current plan began.
    #[schema(format = Date, example = "2026-11-01")]
    period_start: String,
    /// Valid verifications of live keys in the period (test keys are not billed).
    #[schema(minimum = 0)]
    valid: i64,
    /// The plan's requests a month, prorated by the period's days (rounded down).
    #[schema(minimum = 0)]
    included: i64,
    /// `block` or `bill`: what the plan does past `included`.
    #[schema(pattern = "^(block|bill)$")]
    over_limit: &'static str,
    /// The period is used up on a `block` plan: verification answers `quota_exceeded`.
    blocked: bool,
}

impl From<&account_domain::MonthToDate> for MonthToDate {
    fn from(m: &account_domain::MonthToDate) -> Self {
        Self {
            period_start: day_text(m.period_start),
            valid: m.valid,
            included: m.included,
            over_limit: m.over_limit.as_str(),
            blocked: m.blocked,
        }
    }
}

/// The organization's usage over `days` days ending today (UTC).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Usage)]
pub(crate) struct UsageDto {
    #[schema(format = Date, example = "2026-10-31")]
    from: String,
    /// Today, UTC.
    #[schema(format = Date, example = "2026-11-29")]
    to: String,
    total: TotalsDto,
    /// One entry per day of the range, oldest first, days without use included.
    daily: Vec<DailyDto>,
    /// Every key used in the range, busiest first.
    keys: Vec<KeyUsageDto>,
    month_to_date: MonthToDate,
}

impl From<&UsageReport> for UsageDto {
    fn from(r: &UsageReport) -> Self {
        Self {
            from: day_text(r.from),
            to: day_text(r.to),
            total: r.total.into(),
            daily: r.daily.iter().map(DailyDto::from).collect(),
            keys: r.keys.iter().map(KeyUsageDto::from).collect(),
            month_to_date: MonthToDate::from(&r.month_to_date),
        }
    }
}

envelope_schemas! {
    /// The organization's usage.
    UsageResponse => UsageDto;
}

/// `GET /v1/account/usage` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// Days ending today, 1 to 90 (default 30).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 90)]
    days: Option<String>,
}

impl UsageQuery {
    fn days(&self) -> Result<UsageDays, ApiError> {
        let Some(raw) = &self.days else { return Ok(UsageDays::DEFAULT) };
        let invalid = |e: account_domain::InvalidUsageDays| ApiError::validation("days", e);
        if raw.is_empty() || raw.len() > 3 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(account_domain::InvalidUsageDays));
        }
        UsageDays::new(raw.parse().unwrap_or(0)).map_err(invalid)
    }
}

impl From<UsageError> for ApiError {
    fn from(e: UsageError) -> Self {
        match e {
            UsageError::InsufficientScope(e) => e.into(),
            UsageError::Store(cause) => cause.into(),
        }
    }
}

/// How the organization's keys were used: verifications that passed, and those refused by
/// reason, per UTC day and per key, counted by every instance (uses this instance has not
/// written yet included). Needs the `read` scope.
#[utoipa::path(tag = "accounts", operation_id = "get_usage", security(("bearer" = [])),
    params(UsageQuery),
    responses(
    (status = 200, description = "The usage", body = UsageResponse),
    (status = 400, description = "Invalid days", body = ErrorBody),
    AuthErrors, Unavailable,
))]
#[get("/v1/account/usage")]
pub(crate) async fn usage(
    Caller { principal: caller, service }: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Parsed after the key is judged: the documented order (key, then query string).
    let query = Query::<UsageQuery>::from_query(req.query_string()).map_err(|e| crate::body::query_error(&e))?;
    let report = service.usage(&caller, query.days()?).await?;
    Ok(ok(UsageDto::from(&report)))
}
