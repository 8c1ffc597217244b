//! Verification of keys for other services: the same rules and cache as the server's own
//! authentication, answered as a verdict rather than an error.

use super::{AccountService, AuthenticateError, Principal};
use crate::model::{Scopes, UseOutcome, VerificationCode};
use crate::ports::ActorRefused;

/// A verdict, with the key's identity when the key was valid (and lacked only scopes).
#[derive(Debug, Clone)]
pub struct Verification {
    pub code: VerificationCode,
    pub principal: Option<Principal>,
}

impl Verification {
    pub fn is_valid(&self) -> bool {
        self.code == VerificationCode::Valid
    }
}

impl AccountService {
    /// Verifies `presented`, as presented from `client_ip` (`None`: unknown), requiring
    /// `required` scopes when given.
    pub async fn verify_key(
        self: &std::sync::Arc<Self>,
        presented: &str,
        required: Option<&Scopes>,
        client_ip: Option<std::net::IpAddr>,
    ) -> crate::ports::StoreResult<Verification> {
        let verdict = |code| Ok(Verification { code, principal: None });
        match self.authenticate_counting(presented.as_bytes(), client_ip, UseOutcome::VALID).await {
            Ok(principal) => {
                // The one scope check, which counts a refusal as `insufficient_scope`.
                let lacking = required.and_then(|r| r.first_not_in(principal.scopes()));
                let code = match lacking.map(|scope| self.authorize(&principal, scope)) {
                    Some(Err(_)) => VerificationCode::InsufficientScope,
                    _ => VerificationCode::Valid,
                };
                Ok(Verification { code, principal: Some(principal) })
            }
            Err(AuthenticateError::Malformed(_) | AuthenticateError::UnknownKey) => verdict(VerificationCode::NotFound),
            Err(AuthenticateError::Refused(refused)) => verdict(refused.into()),
            Err(AuthenticateError::OrganizationInactive(_)) => verdict(ActorRefused::OrganizationInactive.into()),
            Err(AuthenticateError::Store(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::PlaintextKey;
    use crate::service::test_support::*;

    #[tokio::test]
    async fn verdicts_follow_the_authentication_rules() {
        let key = PlaintextKey::assemble(Environment::Live, &secret_body()).expose().to_owned();
        let write = Scopes::parse(&["write"]).expect("valid");
        for (cred, required, expected) in [
            (Some(credential()), None, VerificationCode::Valid),
            (
                Some(credential().with(|c| c.key.scopes = Scopes::parse(&["read"]).expect("valid"))),
                Some(&write),
                VerificationCode::InsufficientScope,
            ),
            (None, None, VerificationCode::NotFound),
            (Some(credential().with(|c| c.key.revoked_at = Some(NOW))), None, VerificationCode::Revoked),
            (Some(credential().with(|c| c.key.expires_at = Some(NOW))), None, VerificationCode::Expired),
            (
                Some(credential().with(|c| std::sync::Arc::make_mut(&mut c.organization).is_active = false)),
                None,
                VerificationCode::OrgInactive,
            ),
        ] {
            let mut ports = Ports::new();
            ports.keys.expect_find_credential().returning(move |_| Ok(cred.clone()));
            let verdict = ports.service().verify_key(&key, required, None).await.expect("verified");
            assert_eq!(verdict.code, expected);
        }
        let verdict = Ports::new().service().verify_key("garbage", None, None).await.expect("verified");
        assert_eq!(verdict.code, VerificationCode::NotFound);
    }
}
