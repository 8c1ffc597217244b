//! `POST /v1/internal/verify-key`: other services check keys with the same rules and cache
//! as this API's own authentication. The route always exists; until `INTERNAL_SERVICE_TOKEN`
//! is set no token is admitted, so every request is refused as one with a wrong token.

use account_domain::{AccountService, Scopes, Verification};
use actix_web::http::header::AUTHORIZATION;
use actix_web::web::{Data, Payload};
use actix_web::{post, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api_keys::{scope_words, scopes_error, EnvironmentName, ScopeName};
use super::shared_responses::{BodyErrors, Unavailable};
use crate::auth::failed_authentication;
use crate::body::{read_body, required_json};
use crate::envelope::{envelope_schemas, ok};
use crate::error::{ApiError, ErrorBody, ErrorCode};

/// The token other services present; only its hash is kept, and comparing hashes
/// (`blake3::Hash`'s equality) takes constant time.
#[derive(Clone)]
pub struct InternalToken(blake3::Hash);

impl InternalToken {
    pub fn new(token: &str) -> Self {
        Self(blake3::hash(token.as_bytes()))
    }

    fn admits(&self, presented: &[u8]) -> bool {
        blake3::hash(presented) == self.0
    }
}

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken([REDACTED])")
    }
}

/// An IPv4 or IPv6 address, or null.
fn client_ip_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let address =
        |format| ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(format)));
    AnyOfBuilder::new()
        .item(address(KnownFormat::Ipv4))
        .item(address(KnownFormat::Ipv6))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "The address the client presented the key from. Without it, a key limited to some addresses is \
             refused (`ip_not_allowed`): the check cannot be skipped by omitting it.",
        ))
        .examples([serde_json::json!("203.0.113.7")])
        .build()
        .into()
}

/// `POST /v1/internal/verify-key`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VerifyKeyRequest)]
pub(crate) struct VerifyKeyBody {
    /// The key a client presented.
    key: String,
    /// The address the client presented the key from. Without it, a key limited to some
    /// addresses is refused (`ip_not_allowed`): the check cannot be skipped by omitting it.
    #[serde(default)]
    #[schema(schema_with = client_ip_schema)]
    client_ip: Option<String>,
    /// Scopes the key must hold.
    #[serde(default)]
    #[schema(schema_with = crate::routes::api_keys::optional_scope_list)]
    scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for VerifyKeyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key; nor the scopes, whose words are whatever was sent.
        f.debug_struct("VerifyKeyBody").field("key", &"[REDACTED]").finish_non_exhaustive()
    }
}

/// The verdict on a key, with the same rules as the API's own authentication.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Verification)]
pub(crate) struct VerificationDto {
    valid: bool,
    /// valid, not_found, revoked, expired, ip_not_allowed, insufficient_scope, org_inactive
    /// or quota_exceeded (the organization's plan period is used up, or its test keys' cap).
    #[schema(example = "valid")]
    code: &'static str,
    org_id: Option<String>,
    key_id: Option<String>,
    /// The key's environment (with `valid`, `insufficient_scope` and `quota_exceeded`): treat
    /// a `test` key as a sandbox, never as production traffic.
    #[schema(value_type = Option<EnvironmentName>)]
    environment: Option<&'static str>,
    #[schema(value_type = Option<Vec<ScopeName>>)]
    scopes: Option<Vec<&'static str>>,
    plan_id: Option<String>,
}

impl From<&Verification> for VerificationDto {
    fn from(v: &Verification) -> Self {
        let p = v.principal.as_ref();
        Self {
            valid: v.is_valid(),
            code: v.code.as_str(),
            org_id: p.map(|p| p.org_id().to_string()),
            key_id: p.map(|p| p.key_id().to_string()),
            environment: p.map(|p| p.environment().as_str()),
            scopes: p.map(|p| scope_words(p.scopes())),
            plan_id: p.map(|p| p.organization().plan.id.to_string()),
        }
    }
}

envelope_schemas! {
    /// A verdict on a key.
    VerificationResponse => VerificationDto;
}

/// Verifies a key for another service. Authenticated by the internal service token; while
/// the service has none (`INTERNAL_SERVICE_TOKEN` unset), every request is refused with 401.
#[utoipa::path(tag = "internal", operation_id = "verify_api_key", security(("service_token" = [])),
    request_body = VerifyKeyBody,
    responses(
    (status = 200, description = "The verdict (`valid` false says why in `code`)", body = VerificationResponse),
    (status = 400, description = "Invalid body", body = ErrorBody),
    (status = 401, description = "Missing or wrong service token; every token is wrong while verification is off (INTERNAL_SERVICE_TOKEN unset)", body = ErrorBody),
    (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    BodyErrors, Unavailable,
))]
#[post("/v1/internal/verify-key")]
pub(crate) async fn verify_key(
    service: Data<AccountService>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let token = req.app_data::<Data<InternalToken>>();
    let presented = req.headers().get(AUTHORIZATION).and_then(crate::auth::bearer);
    if !presented.is_some_and(|t| token.is_some_and(|token| token.admits(t))) {
        let refused =
            ApiError::new(ErrorCode::InvalidServiceToken, "send the internal service token as a Bearer token");
        return Err(failed_authentication(&req, refused));
    }
    let body = read_body(&req, payload).await?;
    let request = required_json::<VerifyKeyBody>(&req, &body)?;
    let required = request.scopes.as_deref().map(|s| Scopes::parse(s).map_err(scopes_error)).transpose()?;
    let client_ip = request
        .client_ip
        .as_deref()
        .map(|ip| {
            ip.trim()
                .parse::<std::net::IpAddr>()
                .map_err(|_| ApiError::validation("client_ip", "must be an IPv4 or IPv6 address"))
        })
        .transpose()?;
    let verdict = service.into_inner().verify_key(&request.key, required.as_ref(), client_ip).await?;
    Ok(ok(VerificationDto::from(&verdict)))
}
