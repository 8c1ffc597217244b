//! Request bodies decoded into domain requests, without HTTP around them: what the
//! handlers do after the content-type check, exposed for fuzzing.

use account_domain::{CreateKeyRequest, SignupRequest};

use crate::body::decode_object;
use crate::error::ApiError;
use crate::routes::api_keys::CreateKeyBody;
use crate::routes::signup::SignupBody;

/// A `POST /v1/signup` body to a validated signup, or the 4xx it gets.
pub fn signup_request(body: &[u8]) -> Result<SignupRequest, ApiError> {
    decode_object::<SignupBody>(body)?.into_domain()
}

/// A non-empty `POST /v1/account/api-keys` body to a validated request, or the 4xx it gets.
pub fn create_key_request(body: &[u8]) -> Result<CreateKeyRequest, ApiError> {
    decode_object::<CreateKeyBody>(body)?.into_domain()
}
