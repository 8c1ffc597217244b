//! `GET /v1/account`.

use account_domain::AccountService;
use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::HttpResponse;

use crate::auth::Caller;
use crate::dto::AccountDto;
use crate::envelope::respond;
use crate::error::ApiError;

pub(crate) async fn get_account(
    Caller(caller): Caller,
    service: Data<AccountService>,
) -> Result<HttpResponse, ApiError> {
    let org = service.get_account(&caller).await?;
    Ok(respond(StatusCode::OK, AccountDto::from(org)))
}
