//! The caller's organization's webhook endpoints: list and register (the
//! `/v1/account/webhooks` scope); read, change, delete one and rotate its signing secret (its
//! `/{webhook_id}` scope).

use account_domain::{
    webhook_attempt_id, WebhookAttempt, WebhookAttemptPage, WebhookChanges, WebhookEndpoint, WebhookError,
    WebhookEvents, WebhookRequest, WebhookUrl, WebhookWithSecret,
};
use actix_web::web::{Path, Payload, Query};
use actix_web::{delete, get, patch, post, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::count_write;
use super::shared_responses::{AuthErrors, BodyErrors, WriteAuthErrors};
use crate::auth::Caller;
use crate::body::{read_body, required_json};
use crate::client_ip::request_meta;
use crate::envelope::{created, envelope_schemas, ok};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::timestamp::rfc3339;

/// The `{webhook_id}` of the routes of one endpoint.
#[derive(utoipa::IntoParams)]
#[into_params(names("webhook_id"), parameter_in = Path)]
#[allow(dead_code)] // a schema only: the handlers take the id as a plain string
struct WebhookIdPath(#[param(example = "wh_01a21a6d57c975bb954804f970546679")] String);

/// The event types an endpoint may subscribe to.
#[derive(ToSchema)]
#[schema(as = WebhookEventType)]
#[allow(dead_code)] // a schema only
enum EventTypeName {
    #[schema(rename = "key.created")]
    KeyCreated,
    #[schema(rename = "key.renamed")]
    KeyRenamed,
    #[schema(rename = "key.allowlist_changed")]
    KeyAllowlistChanged,
    #[schema(rename = "key.rolled")]
    KeyRolled,
    #[schema(rename = "key.revoked")]
    KeyRevoked,
    #[schema(rename = "key.expiring")]
    KeyExpiring,
    #[schema(rename = "key.expired")]
    KeyExpired,
    #[schema(rename = "usage.threshold")]
    UsageThreshold,
    #[schema(rename = "account.updated")]
    AccountUpdated,
    #[schema(rename = "account.plan_changed")]
    AccountPlanChanged,
    #[schema(rename = "account.closed")]
    AccountClosed,
    #[schema(rename = "organization.deactivated")]
    OrganizationDeactivated,
    #[schema(rename = "organization.activated")]
    OrganizationActivated,
}

/// An endpoint (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub(crate) struct WebhookDto {
    #[schema(pattern = "^wh_[0-9A-Za-z]+$", example = "wh_01a21a6d57c975bb954804f970546679")]
    id: String,
    #[schema(example = "https://hooks.mycompany.com/account-api")]
    url: String,
    description: Option<String>,
    #[schema(value_type = Vec<EventTypeName>, example = json!(["key.revoked", "key.expiring"]))]
    events: Vec<&'static str>,
    /// False when its owner disabled it, or the service did (`disabled_reason` says why).
    enabled: bool,
    /// Why the service disabled it; null when enabled or disabled by its owner.
    disabled_reason: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Until when the previous secret (before the last rotation) still signs beside the
    /// current one; null when only one signs.
    #[schema(format = DateTime)]
    previous_secret_expires_at: Option<String>,
}

impl From<&WebhookEndpoint> for WebhookDto {
    fn from(e: &WebhookEndpoint) -> Self {
        Self {
            id: e.id.to_string(),
            url: e.url.as_str().to_owned(),
            description: e.description.clone(),
            events: e.events.types().iter().map(|t| t.as_str()).collect(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            previous_secret_expires_at: e.previous_secret_until.map(rfc3339),
        }
    }
}

/// An endpoint with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookEndpointWithSecret)]
pub(crate) struct WebhookWithSecretDto<'a> {
    #[serde(flatten)]
    endpoint: WebhookDto,
    /// The signing secret (Standard Webhooks): shown this once, never again.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$", example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: &'a str,
}

impl<'a> From<&'a WebhookWithSecret> for WebhookWithSecretDto<'a> {
    fn from(w: &'a WebhookWithSecret) -> Self {
        Self { endpoint: WebhookDto::from(&w.endpoint), secret: w.secret.expose() }
    }
}

/// One attempt to deliver an event.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookAttempt)]
pub(crate) struct AttemptDto {
    #[schema(pattern = "^att_[0-9]+$", example = "att_42")]
    id: String,
    /// The event's id, the `webhook-id` header.
    #[schema(example = "msg_019ae0d7a1b27c1e9b4f5d8e3c2a1b00")]
    event_id: String,
    #[schema(example = "key.revoked")]
    event_type: String,
    /// 1 for the event's first attempt.
    attempt: u32,
    #[schema(format = DateTime)]
    attempted_at: String,
    /// The receiver's status; null when it did not answer.
    status_code: Option<u16>,
    /// Why there is no status (`timeout`, a connection error, a target not allowed); null otherwise.
    error: Option<String>,
    duration_ms: u64,
}

impl From<&WebhookAttempt> for AttemptDto {
    fn from(a: &WebhookAttempt) -> Self {
        Self {
            id: webhook_attempt_id(a.id),
            event_id: a.message_id.clone(),
            event_type: a.event_type.clone(),
            attempt: a.attempt,
            attempted_at: rfc3339(a.at),
            status_code: a.status_code,
            error: a.error.clone(),
            duration_ms: a.duration_ms,
        }
    }
}

/// A page of attempts, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookDeliveriesPage)]
pub(crate) struct AttemptPageDto {
    attempts: Vec<AttemptDto>,
    /// Older attempts exist: ask again with `before` = the last attempt's id.
    has_more: bool,
}

impl From<&WebhookAttemptPage> for AttemptPageDto {
    fn from(page: &WebhookAttemptPage) -> Self {
        Self { attempts: page.attempts.iter().map(AttemptDto::from).collect(), has_more: page.has_more }
    }
}

/// The event a test sent.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookTestEvent)]
pub(crate) struct TestEventDto {
    /// Its id, the `webhook-id` header it arrives with.
    #[schema(example = "msg_019ae0d7a1b27c1e9b4f5d8e3c2a1b00")]
    event_id: String,
}

/// `GET /v1/account/webhooks/{webhook_id}/deliveries` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only attempts older than this one (from the previous page).
    #[param(pattern = "^att_[0-9]+$", example = "att_42")]
    before: Option<String>,
}

envelope_schemas! {
    /// A page of an endpoint's delivery attempts.
    WebhookDeliveriesResponse => AttemptPageDto;
    /// The test event sent.
    WebhookTestResponse => TestEventDto;
    /// The organization's webhook endpoints, oldest first.
    WebhookList => Vec<WebhookDto>;
    /// One endpoint.
    WebhookResponse => WebhookDto;
    /// An endpoint with its new signing secret, shown this once.
    WebhookWithSecretResponse => WebhookWithSecretDto<'static>;
}

/// `POST /v1/account/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateWebhookRequest)]
pub(crate) struct CreateWebhookBody {
    /// `http` or `https`, with a host, without credentials, at most 2,048 characters; its
    /// target must be a public address.
    #[schema(example = "https://hooks.mycompany.com/account-api")]
    url: String,
    /// The event types to send (at least one).
    #[schema(value_type = Vec<EventTypeName>, min_items = 1, example = json!(["key.revoked"]))]
    events: Vec<String>,
    /// At most 256 characters.
    #[serde(default, deserialize_with = "crate::body::not_null")]
    #[schema(value_type = String, example = "production alerts")]
    description: Option<String>,
}

/// `PATCH /v1/account/webhooks/{webhook_id}`: at least one field; an omitted one is unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateWebhookRequest, min_properties = 1)]
pub(crate) struct UpdateWebhookBody {
    #[serde(default, deserialize_with = "crate::body::not_null")]
    #[schema(value_type = String)]
    url: Option<String>,
    #[serde(default, deserialize_with = "crate::body::not_null")]
    #[schema(value_type = Vec<EventTypeName>, min_items = 1)]
    events: Option<Vec<String>>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "crate::body::present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// False stops deliveries; true resumes them (and clears `disabled_reason`).
    #[serde(default, deserialize_with = "crate::body::not_null")]
    #[schema(value_type = bool)]
    enabled: Option<bool>,
}

const MAX_DESCRIPTION_CHARS: usize = 256;

fn url(raw: &str) -> Result<WebhookUrl, ApiError> {
    WebhookUrl::new(raw).map_err(|e| ApiError::new(ErrorCode::ValidationError, e.to_string()).with_field("url"))
}

fn events(raw: &[String]) -> Result<WebhookEvents, ApiError> {
    WebhookEvents::new(raw.iter().map(String::as_str))
        .map_err(|e| ApiError::new(ErrorCode::ValidationError, e.to_string()).with_field("events"))
}

fn description(raw: String) -> Result<String, ApiError> {
    if raw.chars().count() > MAX_DESCRIPTION_CHARS || raw.chars().any(char::is_control) {
        return Err(ApiError::validation("description", "must be at most 256 characters, without control characters"));
    }
    Ok(raw)
}

impl CreateWebhookBody {
    fn into_domain(self) -> Result<WebhookRequest, ApiError> {
        Ok(WebhookRequest {
            url: url(&self.url)?,
            events: events(&self.events)?,
            description: self.description.map(description).transpose()?,
        })
    }
}

impl UpdateWebhookBody {
    fn into_domain(self) -> Result<WebhookChanges, ApiError> {
        Ok(WebhookChanges {
            url: self.url.as_deref().map(url).transpose()?,
            events: self.events.as_deref().map(events).transpose()?,
            description: self.description.map(|d| d.map(description).transpose()).transpose()?,
            enabled: self.enabled,
        })
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        let message = e.to_string();
        match e {
            WebhookError::NotConfigured => Self::new(ErrorCode::WebhooksNotConfigured, message),
            WebhookError::InsufficientScope(e) => e.into(),
            WebhookError::TestKey => Self::new(ErrorCode::EnvironmentEscalation, message),
            WebhookError::NotFound => Self::new(ErrorCode::WebhookNotFound, message),
            WebhookError::LimitReached(_) => Self::new(ErrorCode::WebhookLimitReached, message),
            WebhookError::Url(_) => Self::new(ErrorCode::ValidationError, message).with_field("url"),
            WebhookError::EmptyChange => Self::new(ErrorCode::ValidationError, message),
            WebhookError::InvalidLimit => Self::validation("limit", "must be a whole number from 1 to 100"),
            WebhookError::InvalidCursor => Self::validation("before", "must be an attempt id such as att_42"),
            WebhookError::Refused(refused) => refused.into(),
            WebhookError::Store(cause) => cause.into(),
        }
    }
}

/// What every webhook route may also answer.
struct WebhookErrors;

impl utoipa::IntoResponses for WebhookErrors {
    fn responses() -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        let content = utoipa::openapi::ContentBuilder::new()
            .schema(Some(utoipa::openapi::Ref::from_schema_name("Error")))
            .build();
        let response = utoipa::openapi::ResponseBuilder::new()
            .description("The database is unavailable (retry), or webhooks are not configured on this deployment")
            .content("application/json", content)
            .build();
        [("503".to_owned(), response.into())].into_iter().collect()
    }
}

/// Every webhook endpoint of the caller's organization, oldest first. Needs a live key with
/// the `read` scope.
#[utoipa::path(tag = "webhooks", operation_id = "list_webhooks", security(("bearer" = [])), responses(
    (status = 200, description = "The endpoints", body = WebhookList),
    AuthErrors, WebhookErrors,
))]
#[get("")]
pub(crate) async fn list_webhooks(Caller { principal: caller, service }: Caller) -> Result<HttpResponse, ApiError> {
    let endpoints = service.list_webhooks(&caller).await?;
    Ok(ok(endpoints.iter().map(WebhookDto::from).collect::<Vec<_>>()))
}

/// Registers a webhook endpoint: at most 10 per organization. Answers it with its signing
/// secret (`whsec_…`), shown this once. Needs a live key with the `write` scope; audited
/// (`webhook.created`).
#[utoipa::path(tag = "webhooks", operation_id = "create_webhook", security(("bearer" = [])),
    request_body = CreateWebhookBody,
    responses(
    (status = 201, description = "The endpoint and its secret, shown this once", body = WebhookWithSecretResponse),
    (status = 400, description = "Invalid body, a URL that is not allowed, or an unknown event type", body = ErrorBody),
    (status = 409, description = "The organization has 10 endpoints already", body = ErrorBody),
    BodyErrors, WriteAuthErrors, WebhookErrors,
))]
#[post("")]
pub(crate) async fn create_webhook(
    Caller { principal: caller, service }: Caller,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    let body = read_body(&req, payload).await?;
    let request = required_json::<CreateWebhookBody>(&req, &body)?.into_domain()?;
    let new = service.create_webhook(&caller, request, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), webhook_id = %new.endpoint.id, by_key = %caller.key_id(), "webhook created");
    Ok(created(WebhookWithSecretDto::from(&new)))
}

/// One webhook endpoint of the caller's organization. Needs a live key with the `read` scope.
#[utoipa::path(tag = "webhooks", operation_id = "get_webhook", security(("bearer" = [])),
    params(WebhookIdPath),
    responses(
    (status = 200, description = "The endpoint", body = WebhookResponse),
    (status = 404, description = "No such endpoint in this organization", body = ErrorBody),
    AuthErrors, WebhookErrors,
))]
#[get("")]
pub(crate) async fn get_webhook(
    Caller { principal: caller, service }: Caller,
    webhook_id: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = service.get_webhook(&caller, &webhook_id).await?;
    Ok(ok(WebhookDto::from(&endpoint)))
}

/// Changes a webhook endpoint: its URL (checked as at registration), events, description,
/// or whether it is enabled. Needs a live key with the `write` scope; audited
/// (`webhook.updated`, naming the fields set).
#[utoipa::path(tag = "webhooks", operation_id = "update_webhook", security(("bearer" = [])),
    params(WebhookIdPath),
    request_body = UpdateWebhookBody,
    responses(
    (status = 200, description = "The endpoint as changed", body = WebhookResponse),
    (status = 400, description = "Invalid body, a URL that is not allowed, or an unknown event type", body = ErrorBody),
    (status = 404, description = "No such endpoint in this organization", body = ErrorBody),
    BodyErrors, WriteAuthErrors, WebhookErrors,
))]
#[patch("")]
pub(crate) async fn update_webhook(
    Caller { principal: caller, service }: Caller,
    webhook_id: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    let body = read_body(&req, payload).await?;
    let changes = required_json::<UpdateWebhookBody>(&req, &body)?.into_domain()?;
    let endpoint = service.update_webhook(&caller, &webhook_id, changes, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), webhook_id = %endpoint.id, by_key = %caller.key_id(), "webhook changed");
    Ok(ok(WebhookDto::from(&endpoint)))
}

/// Deletes a webhook endpoint, its secret and its deliveries. Needs a live key with the
/// `write` scope; audited (`webhook.deleted`). Answers 204.
#[utoipa::path(tag = "webhooks", operation_id = "delete_webhook", security(("bearer" = [])),
    params(WebhookIdPath),
    responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "No such endpoint in this organization", body = ErrorBody),
    WriteAuthErrors, WebhookErrors,
))]
#[delete("")]
pub(crate) async fn delete_webhook(
    Caller { principal: caller, service }: Caller,
    webhook_id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    service.delete_webhook(&caller, &webhook_id, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), webhook_id = %webhook_id.as_str(), by_key = %caller.key_id(), "webhook deleted");
    Ok(HttpResponse::NoContent().finish())
}

/// Gives a webhook endpoint a new signing secret, shown this once; the previous one keeps
/// signing beside it for 24 hours (both signatures in `webhook-signature`). Needs a live key
/// with the `write` scope; audited (`webhook.secret_rotated`).
#[utoipa::path(tag = "webhooks", operation_id = "rotate_webhook_secret", security(("bearer" = [])),
    params(WebhookIdPath),
    responses(
    (status = 200, description = "The endpoint and its new secret, shown this once", body = WebhookWithSecretResponse),
    (status = 404, description = "No such endpoint in this organization", body = ErrorBody),
    WriteAuthErrors, WebhookErrors,
))]
#[post("/rotate-secret")]
pub(crate) async fn rotate_webhook_secret(
    Caller { principal: caller, service }: Caller,
    webhook_id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    let rotated = service.rotate_webhook_secret(&caller, &webhook_id, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), webhook_id = %rotated.endpoint.id, by_key = %caller.key_id(), "webhook secret rotated");
    Ok(ok(WebhookWithSecretDto::from(&rotated)))
}

/// Sends a `webhook.test` event (`data`: `webhook_id`) to the endpoint, whatever it
/// subscribes to and even disabled: delivered, signed and retried as every event. Needs a
/// live key with the `write` scope. Answers 202 with the event's id.
#[utoipa::path(tag = "webhooks", operation_id = "test_webhook", security(("bearer" = [])),
    params(WebhookIdPath),
    responses(
    (status = 202, description = "The test event, to be delivered", body = WebhookTestResponse),
    (status = 404, description = "No such endpoint in this organization", body = ErrorBody),
    WriteAuthErrors, WebhookErrors,
))]
#[post("/test")]
pub(crate) async fn test_webhook(
    Caller { principal: caller, service }: Caller,
    webhook_id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    let event_id = service.test_webhook(&caller, &webhook_id, &request_meta(&req)).await?;
    Ok(crate::envelope::accepted(TestEventDto { event_id }))
}

/// The endpoint's delivery attempts, newest first, a page at a time: each with its event's
/// id and type, attempt number, time, status code or error, and duration. Needs a live key
/// with the `read` scope.
#[utoipa::path(tag = "webhooks", operation_id = "list_webhook_deliveries", security(("bearer" = [])),
    params(WebhookIdPath, DeliveriesQuery),
    responses(
    (status = 200, description = "A page of attempts", body = WebhookDeliveriesResponse),
    (status = 400, description = "Invalid limit or cursor", body = ErrorBody),
    (status = 404, description = "No such endpoint in this organization", body = ErrorBody),
    AuthErrors, WebhookErrors,
))]
#[get("/deliveries")]
pub(crate) async fn list_webhook_deliveries(
    Caller { principal: caller, service }: Caller,
    webhook_id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::<DeliveriesQuery>::from_query(req.query_string()).map_err(|e| crate::body::query_error(&e))?;
    let page = service.webhook_attempts(&caller, &webhook_id, query.before.as_deref(), query.limit).await?;
    Ok(ok(AttemptPageDto::from(&page)))
}
