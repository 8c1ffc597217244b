//! Verification of keys for other services: the same rules and cache as the server's own
//! authentication, then the organization's quota, answered as a verdict rather than an
//! error.

use super::{AccountService, AuthenticateError, Principal};
use crate::model::{Scopes, UseOutcome, VerificationCode};
use crate::ports::ActorRefused;
use crate::runtime::Admission;

/// A verdict, with the key's identity when the key was valid (and lacked only scopes, or
/// its organization's quota).
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
    /// `required` scopes when given; a key that passes all that is judged by its
    /// organization's quota (`quota_exceeded` past it).
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
                    _ => match self.quota_admission(&principal) {
                        (day, Admission::Unknown) => self.quota_verdict_after_reading(&principal, day).await?,
                        (_, known) => self.quota_code(&principal, known),
                    },
                };
                Ok(Verification { code, principal: Some(principal) })
            }
            Err(AuthenticateError::Malformed(_) | AuthenticateError::UnknownKey) => verdict(VerificationCode::NotFound),
            Err(AuthenticateError::Refused(refused)) => verdict(refused.into()),
            Err(AuthenticateError::OrganizationInactive(_)) => verdict(ActorRefused::OrganizationInactive.into()),
            Err(AuthenticateError::Store(e)) => Err(e),
        }
    }

    /// The verdict when the quota's counts for `day` were not known here: read, then judged.
    async fn quota_verdict_after_reading(
        &self,
        principal: &Principal,
        day: time::Date,
    ) -> crate::ports::StoreResult<VerificationCode> {
        let admission = self.admit_after_reading(principal, day).await?;
        Ok(self.quota_code(principal, admission))
    }

    /// The day `principal` was counted on (always counted, as valid, on the day of its
    /// authentication), and what the quota says of one more valid verification.
    #[inline]
    fn quota_admission(&self, principal: &Principal) -> (time::Date, Admission) {
        let day = principal.counted_use().map_or_else(|| self.clock.now().date(), |(day, _)| day);
        (day, self.admit_to_quota(principal, day))
    }

    /// The verdict for what the quota said: a refusal counts as `quota_exceeded`.
    #[inline]
    fn quota_code(&self, principal: &Principal, admission: Admission) -> VerificationCode {
        if admission == Admission::Refused {
            self.count_quota_refusal(principal);
            return VerificationCode::QuotaExceeded;
        }
        VerificationCode::Valid
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
            // Nothing used yet of the plan's quota.
            ports.accounts.expect_plan_changes().returning(|_| Ok(vec![]));
            ports.keys.expect_valid_uses_since().returning(|_, _| Ok(vec![]));
            let verdict = ports.service().verify_key(&key, required, None).await.expect("verified");
            assert_eq!(verdict.code, expected);
        }
        let verdict = Ports::new().service().verify_key("garbage", None, None).await.expect("verified");
        assert_eq!(verdict.code, VerificationCode::NotFound);
    }
}
